//! The rack planner: partitions and brokers in, the fewest replica moves that balance every
//! partition over Kubernetes clusters and zones out. Pure: no I/O, no clock, deterministic
//! for a given input order.
//!
//! **The rule.** With `C` clusters (those in the brokers' racks, or fixed by the caller)
//! and the policy's `Z` zones, a partition of replication factor `RF` complies when every
//! replica is on a live broker whose rack places it in a cell, each cluster holds
//! `floor(RF/C)` or `ceil(RF/C)` replicas and each zone `floor(RF/Z)` or `ceil(RF/Z)`
//! (RF 6 over 2 x 3: exactly 3 per cluster and 2 per zone). Replicas on dead brokers, on
//! brokers nobody lists, or on brokers whose rack does not parse always move.
//!
//! **Fewest moves.** Let `N[c][z]` count a partition's replicas on live brokers of cell
//! (c, z), and `T` be a *target*: a C x Z matrix with the row and column sums above, total
//! RF and `T[c][z] <=` the live brokers of the cell. A move takes one replica out and puts
//! one in, so reaching `T` takes at least `RF - sum(min(N, T))` moves (half the L1 distance
//! between N, with the offline replicas as one more cell whose target is 0, and T), and the
//! planner reaches it exactly: it keeps `min(N, T)` replicas per cell and fills the rest
//! from live brokers of the cell not holding the partition (there are enough: `T <= live`).
//! The plan uses the target of least moves.
//!
//! **Targets.** The live brokers per cell are the same for every partition, so the valid
//! targets depend on RF alone: they are enumerated once per RF (a small transportation
//! problem: matrices with bounded row and column sums, each entry at most the cell's live
//! brokers), cell by cell with the partial row/column sums pruning, and cached. For the
//! sizes in play (clusters <= 3, zones <= 4, RF <= 8) there are at most 612 targets (RF 7
//! over 3 x 4 with every cell holding enough brokers), found in at most 3,999 search steps;
//! 2 x 3 at RF 6 has 7. Past [`ENUMERATION_STEPS`] steps an RF is reported infeasible, not
//! planned.
//!
//! **Ties.** Among targets of least moves, one keeping a replica in the leader's cell wins
//! (the leader then never moves and stays first; fewest moves comes first, so a leader is
//! moved when only a target of more moves keeps its cell, e.g. 2 x 3 at RF 6 with cluster
//! counts (0,0,2)/(1,2,1) and the leader the lone replica of the last cell), then the one whose added replicas land in
//! the least-loaded cells. Replicas taken out of an over-full cell are its most loaded
//! brokers', never the leader; destinations are the least-loaded live brokers of the cell
//! (load = replicas per broker, updated as the plan goes, so a plan spreads).
//!
//! **Order.** Partitions with replicas on dead or unknown brokers are planned first (they
//! are the ones under-replicated now), then the others, each group in input order; a move
//! budget takes whole partitions in that order.

use std::collections::HashMap;
use std::fmt::Write as _;

use kpool_policy::Policy;
use serde::Serialize;

use super::{RackPlacer, spread};

/// The bound on the search for one replication factor's targets; past it the RF is
/// reported infeasible instead of planned (the sizes in play need at most 3,999 steps).
pub const ENUMERATION_STEPS: usize = 2_000_000;

/// A broker as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInput {
    pub id: i32,
    /// `broker.rack`, in the policy's `rackFormat`; `None` when the broker has none.
    pub rack: Option<String>,
    /// Whether the broker is up (in Metadata): dead brokers hold replicas that must move,
    /// and never receive one.
    pub alive: bool,
}

/// One partition's current assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub topic: String,
    pub partition: i32,
    /// The replicas in the cluster's order (the first is the preferred leader).
    pub replicas: Vec<i32>,
    /// The current leader, when known and one of `replicas`; `None` means the first
    /// replica (as in a `--from` file). The planner keeps this broker and puts it first.
    pub leader: Option<i32>,
}

impl Assignment {
    /// The broker the planner treats as the leader: [`Assignment::leader`] when it is a
    /// replica, else the first replica.
    pub fn effective_leader(&self) -> Option<i32> {
        self.leader
            .filter(|l| self.replicas.contains(l))
            .or_else(|| self.replicas.first().copied())
    }
}

/// What the planner may do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// At most this many replica moves in the plan, whole partitions only, in plan order
    /// (offline replicas first); partitions that do not fit are left out and counted.
    pub max_moves: Option<usize>,
}

/// A reassignment of one partition: what an executor hands to AlterPartitionReassignments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionMove {
    pub topic: String,
    pub partition: i32,
    /// The replicas before, in the cluster's order.
    pub from: Vec<i32>,
    /// The replicas after; the current leader first when it stays.
    pub to: Vec<i32>,
    /// Replicas moved: brokers in `to` and not in `from` (the lower bound for this
    /// partition).
    pub moves: usize,
    /// How many of those replace replicas on dead or unknown brokers.
    pub offline: usize,
}

/// A partition the planner cannot fix with the live brokers, left as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Infeasible {
    pub topic: String,
    pub partition: i32,
    /// The replicas as they are (and stay).
    pub replicas: Vec<i32>,
    /// Why no valid placement exists, naming the zone, cluster or cell that lacks brokers.
    pub reason: String,
}

/// Counts over one plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Partitions considered (selected, not mid-reassignment).
    pub partitions_checked: usize,
    /// Partitions breaking the rule or with replicas on dead, unknown or rackless brokers.
    pub offenders: usize,
    /// Replica moves in the plan (the sum of [`PartitionMove::moves`]).
    pub moves: usize,
    /// Moves that replace replicas on dead or unknown brokers.
    pub offline_moves: usize,
    /// Offenders no valid placement exists for (left as they are, see [`Plan::infeasible`]).
    pub infeasible: usize,
    /// Offending partitions the move budget left out, and their moves.
    pub left_out: usize,
    pub left_out_moves: usize,
}

/// The planner's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// In plan order: partitions with offline replicas first.
    pub moves: Vec<PartitionMove>,
    pub infeasible: Vec<Infeasible>,
    pub summary: Summary,
}

/// Broker ids to dense slots.
#[derive(Debug, Clone)]
struct SlotIndex {
    /// `dense[id]` = slot, `u32::MAX` for none, when ids are small; else empty.
    dense: Vec<u32>,
    map: HashMap<i32, u32>,
}

const NONE: u32 = u32::MAX;
const DENSE_LIMIT: i32 = 1 << 20;

impl SlotIndex {
    fn new(ids: &[i32]) -> Self {
        let max = ids.iter().copied().max().unwrap_or(0);
        if ids.iter().all(|id| *id >= 0) && max < DENSE_LIMIT {
            let mut dense = vec![NONE; usize::try_from(max).unwrap_or(0) + 1];
            for (slot, id) in ids.iter().enumerate() {
                let i = usize::try_from(*id).unwrap_or(0);
                if dense[i] == NONE {
                    dense[i] = u32::try_from(slot).unwrap_or(NONE);
                }
            }
            Self {
                dense,
                map: HashMap::new(),
            }
        } else {
            let mut map = HashMap::with_capacity(ids.len());
            for (slot, id) in ids.iter().enumerate() {
                map.entry(*id)
                    .or_insert_with(|| u32::try_from(slot).unwrap_or(NONE));
            }
            Self {
                dense: Vec::new(),
                map,
            }
        }
    }

    fn get(&self, id: i32) -> Option<usize> {
        let s = if self.dense.is_empty() {
            *self.map.get(&id)?
        } else {
            *self.dense.get(usize::try_from(id).ok()?)?
        };
        (s != NONE).then_some(s as usize)
    }
}

/// Where a replica is, for the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spot {
    /// On a live broker of this cell (cell, broker slot).
    Cell(usize, usize),
    /// On a dead broker, or one no broker list names.
    Offline,
    /// On a live broker whose rack is missing or does not parse.
    Unplaced,
}

/// The brokers placed into (cluster, zone) cells, and the rule over them.
#[derive(Debug, Clone)]
pub struct Layout {
    zones: Vec<String>,
    clusters: Vec<String>,
    index: SlotIndex,
    ids: Vec<i32>,
    alive: Vec<bool>,
    /// Cell (`cluster * zones + zone`) per slot.
    cell: Vec<Option<usize>>,
    /// Live brokers per cell, by slot.
    cell_brokers: Vec<Vec<usize>>,
    /// Brokers (live or dead) whose rack is missing or does not parse.
    unplaced: Vec<i32>,
    /// `racks.rule: perCell`: every cell is bounded too.
    per_cell: bool,
}

impl Layout {
    /// Places `brokers` with the policy's rack format. Clusters are those the racks name
    /// (in order first seen), or exactly `clusters` when given: a Kubernetes cluster whose
    /// brokers are all gone from Metadata still counts then, so its replicas are not all
    /// planned into the other cluster. A repeated broker id keeps its first entry.
    pub fn new(policy: &Policy, brokers: &[BrokerInput], clusters: Option<&[String]>) -> Self {
        let mut placer = match clusters {
            Some(c) => RackPlacer::with_clusters(policy, c),
            None => RackPlacer::new(policy),
        };
        let ids: Vec<i32> = brokers.iter().map(|b| b.id).collect();
        let index = SlotIndex::new(&ids);
        let zones = placer.zones().to_vec();
        let mut unplaced = Vec::new();
        let cells: Vec<Option<(usize, usize)>> = brokers
            .iter()
            .enumerate()
            .map(|(slot, b)| {
                if index.get(b.id) != Some(slot) {
                    return None; // a repeated id
                }
                let placed = b.rack.as_deref().and_then(|r| placer.place(r));
                if placed.is_none() {
                    unplaced.push(b.id);
                }
                placed
            })
            .collect();
        let clusters = placer.into_clusters();
        let z = zones.len();
        let cell: Vec<Option<usize>> = cells.iter().map(|p| p.map(|(c, zi)| c * z + zi)).collect();
        let mut cell_brokers = vec![Vec::new(); clusters.len() * z];
        for (slot, k) in cell.iter().enumerate() {
            if let Some(k) = k
                && brokers[slot].alive
            {
                cell_brokers[*k].push(slot);
            }
        }
        Self {
            zones,
            clusters,
            index,
            ids,
            alive: brokers.iter().map(|b| b.alive).collect(),
            cell,
            cell_brokers,
            unplaced,
            per_cell: policy.spec().racks.rule == kpool_policy::model::RackRule::PerCell,
        }
    }

    /// The policy's zones.
    pub fn zones(&self) -> &[String] {
        &self.zones
    }

    /// The clusters replicas are balanced over.
    pub fn clusters(&self) -> &[String] {
        &self.clusters
    }

    /// Brokers whose rack is missing or does not parse with the policy's format (or names
    /// a cluster outside the fixed list): they never receive a replica.
    pub fn unplaced_brokers(&self) -> &[i32] {
        &self.unplaced
    }

    /// Live brokers of cell (cluster, zone).
    pub fn live_in_cell(&self, cluster: usize, zone: usize) -> usize {
        self.cell_brokers
            .get(cluster * self.zones.len() + zone)
            .map_or(0, Vec::len)
    }

    /// Replicas allowed per cluster and per zone at replication factor `rf`, as inclusive
    /// (min, max) ranges: `floor`/`ceil` of `rf` over the clusters and over the zones.
    pub fn bounds(&self, rf: usize) -> ((usize, usize), (usize, usize)) {
        (
            spread(rf, self.clusters.len()),
            spread(rf, self.zones.len()),
        )
    }

    /// Replicas allowed per (cluster, zone) cell: floor/ceil of `rf` over the cells with
    /// `racks.rule: perCell`, anything the dimensions allow otherwise.
    pub fn cell_bounds(&self, rf: usize) -> (usize, usize) {
        if self.per_cell {
            spread(rf, self.cells())
        } else {
            (0, rf)
        }
    }

    /// Whether `replicas` comply: distinct, all on live placed brokers, each cluster and
    /// zone within [`Layout::bounds`].
    pub fn complies(&self, replicas: &[i32]) -> bool {
        let z = self.zones.len();
        let mut rows = vec![0usize; self.clusters.len()];
        let mut cols = vec![0usize; z];
        let mut cells = vec![0usize; self.cells()];
        for (i, id) in replicas.iter().enumerate() {
            if replicas[..i].contains(id) {
                return false;
            }
            match self.spot(*id) {
                Spot::Cell(k, _) => {
                    rows[k / z] += 1;
                    cols[k % z] += 1;
                    cells[k] += 1;
                }
                Spot::Offline | Spot::Unplaced => return false,
            }
        }
        let ((rlo, rhi), (zlo, zhi)) = self.bounds(replicas.len());
        let (klo, khi) = self.cell_bounds(replicas.len());
        !replicas.is_empty()
            && rows.iter().all(|n| (rlo..=rhi).contains(n))
            && cols.iter().all(|n| (zlo..=zhi).contains(n))
            && cells.iter().all(|n| (klo..=khi).contains(n))
    }

    fn spot(&self, id: i32) -> Spot {
        let Some(slot) = self.index.get(id) else {
            return Spot::Offline;
        };
        if !self.alive[slot] {
            return Spot::Offline;
        }
        match self.cell[slot] {
            Some(k) => Spot::Cell(k, slot),
            None => Spot::Unplaced,
        }
    }

    fn cells(&self) -> usize {
        self.cell_brokers.len()
    }

    fn cell_name(&self, k: usize) -> String {
        let z = self.zones.len();
        format!("{}/{}", self.clusters[k / z], self.zones[k % z])
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The valid targets of one RF, flattened `cells` entries each, or why there are none.
#[derive(Debug, Clone)]
enum Targets {
    Some(Vec<u8>),
    None(String),
}

struct Search<'a> {
    cap: &'a [usize],
    z: usize,
    c: usize,
    rf: usize,
    rows: (usize, usize),
    cols: (usize, usize),
    cell: (usize, usize),
    row_sum: Vec<usize>,
    col_sum: Vec<usize>,
    current: Vec<u8>,
    out: Vec<u8>,
    steps: usize,
}

impl Search<'_> {
    /// Fills cell `k` onwards; false when the step bound is hit.
    fn fill(&mut self, k: usize, total: usize) -> bool {
        self.steps += 1;
        if self.steps > ENUMERATION_STEPS {
            return false;
        }
        if k == self.current.len() {
            if total == self.rf {
                self.out.extend_from_slice(&self.current);
            }
            return true;
        }
        let (ci, zi) = (k / self.z, k % self.z);
        let ub = self.cap[k]
            .min(self.cell.1)
            .min(self.rows.1 - self.row_sum[ci])
            .min(self.cols.1 - self.col_sum[zi])
            .min(self.rf - total);
        for v in self.cell.0..=ub {
            // The row ends here: its sum must be in range; so must the column's on the last row.
            if zi + 1 == self.z && self.row_sum[ci] + v < self.rows.0 {
                continue;
            }
            if ci + 1 == self.c && self.col_sum[zi] + v < self.cols.0 {
                continue;
            }
            self.current[k] = u8::try_from(v).unwrap_or(u8::MAX);
            self.row_sum[ci] += v;
            self.col_sum[zi] += v;
            let ok = self.fill(k + 1, total + v);
            self.row_sum[ci] -= v;
            self.col_sum[zi] -= v;
            if !ok {
                return false;
            }
        }
        self.current[k] = 0;
        true
    }
}

impl Layout {
    /// The valid targets of RF `rf` (see the module docs), and the search steps taken.
    fn search(&self, rf: usize) -> (Targets, usize) {
        let (c, z) = (self.clusters.len(), self.zones.len());
        if rf == 0 {
            return (Targets::None("the partition has no replicas".to_owned()), 0);
        }
        if c == 0 || z == 0 {
            return (
                Targets::None(
                    "no broker has a rack that parses with the policy's rackFormat, so there is no cell to place replicas in".to_owned(),
                ),
                0,
            );
        }
        if rf > usize::from(u8::MAX) {
            return (
                Targets::None(format!("replication factor {rf} is past the planner's 255")),
                0,
            );
        }
        let cap: Vec<usize> = self.cell_brokers.iter().map(Vec::len).collect();
        let (rows, cols) = self.bounds(rf);
        let mut search = Search {
            cap: &cap,
            z,
            c,
            rf,
            rows,
            cols,
            cell: self.cell_bounds(rf),
            row_sum: vec![0; c],
            col_sum: vec![0; z],
            current: vec![0; c * z],
            out: Vec::new(),
            steps: 0,
        };
        let complete = search.fill(0, 0);
        let steps = search.steps;
        let targets = if !complete {
            Targets::None(format!(
                "RF {rf} over {c} clusters x {z} zones has more placements than the planner searches ({ENUMERATION_STEPS} steps)"
            ))
        } else if search.out.is_empty() {
            Targets::None(self.why_no_target(rf, &cap))
        } else {
            Targets::Some(search.out)
        };
        (targets, steps)
    }

    /// (valid targets, search steps) of RF `rf`, for the bound the module docs state.
    #[cfg(test)]
    pub(super) fn target_stats(&self, rf: usize) -> (usize, usize) {
        match self.search(rf) {
            (Targets::Some(flat), steps) => (flat.len() / self.cells(), steps),
            (Targets::None(_), steps) => (0, steps),
        }
    }

    /// Names the zone, cluster or cells that lack live brokers for RF `rf`.
    fn why_no_target(&self, rf: usize, cap: &[usize]) -> String {
        let z = self.zones.len();
        let ((rlo, rhi), (zlo, zhi)) = self.bounds(rf);
        let live: usize = cap.iter().sum();
        if live < rf {
            return format!("RF {rf} needs {rf} live brokers with a rack, found {live}");
        }
        for (zi, zone) in self.zones.iter().enumerate() {
            let n: usize = (0..self.clusters.len()).map(|c| cap[c * z + zi]).sum();
            if n < zlo {
                return format!(
                    "zone {zone} has {}, the rule needs {} there (RF {rf} over {z} zones)",
                    plural(n, "live broker", "live brokers"),
                    plural(zlo, "replica", "replicas"),
                );
            }
        }
        for (ci, cluster) in self.clusters.iter().enumerate() {
            let n: usize = cap[ci * z..(ci + 1) * z].iter().sum();
            if n < rlo {
                return format!(
                    "cluster {cluster} has {}, the rule needs {} there (RF {rf} over {} clusters)",
                    plural(n, "live broker", "live brokers"),
                    plural(rlo, "replica", "replicas"),
                    self.clusters.len()
                );
            }
        }
        let (klo, khi) = self.cell_bounds(rf);
        if let Some(k) = (0..cap.len()).find(|&k| cap[k] < klo) {
            return format!(
                "cell {} has {}, racks.rule perCell needs {} there (RF {rf} over {} cells)",
                self.cell_name(k),
                plural(cap[k], "live broker", "live brokers"),
                plural(klo, "replica", "replicas"),
                cap.len()
            );
        }
        let mut cells = String::new();
        for (k, n) in cap.iter().enumerate() {
            if k > 0 {
                cells.push_str(", ");
            }
            let _ = write!(cells, "{} {n}", self.cell_name(k));
        }
        let range = |lo: usize, hi: usize| {
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            }
        };
        let per_cell = if self.per_cell {
            format!(" and {} per cell", range(klo, khi))
        } else {
            String::new()
        };
        format!(
            "no placement of RF {rf} with {} per cluster and {} per zone{per_cell} fits the live brokers per cell ({cells})",
            range(rlo, rhi),
            range(zlo, zhi)
        )
    }
}

/// Load per cell is compared as an average per broker, in fixed point.
const LOAD_SCALE: u64 = 1 << 16;

/// The planning state: the layout, broker loads as the plan changes them, cached targets.
struct Planner<'l> {
    layout: &'l Layout,
    /// Replicas per broker slot.
    load: Vec<u32>,
    /// Replicas per cell (live brokers only).
    cell_load: Vec<u64>,
    targets: HashMap<usize, Targets>,
    /// Scratch, one entry per cell.
    n: Vec<usize>,
    spots: Vec<Spot>,
}

/// What became of one offending partition.
enum Outcome {
    Move(PartitionMove),
    Infeasible(String),
    /// Needs this many moves, more than the budget left.
    LeftOut(usize),
}

impl<'l> Planner<'l> {
    fn new(layout: &'l Layout, partitions: &[Assignment]) -> Self {
        let mut load = vec![0u32; layout.ids.len()];
        let mut cell_load = vec![0u64; layout.cells()];
        for a in partitions {
            for id in &a.replicas {
                if let Spot::Cell(k, slot) = layout.spot(*id) {
                    load[slot] += 1;
                    cell_load[k] += 1;
                }
            }
        }
        Self {
            layout,
            load,
            cell_load,
            targets: HashMap::new(),
            n: vec![0; layout.cells()],
            spots: Vec::new(),
        }
    }

    /// Reads a partition into `spots` and `n`; returns (offline, unplaced, duplicate).
    fn read(&mut self, a: &Assignment) -> (usize, usize, Option<i32>) {
        self.n.iter_mut().for_each(|n| *n = 0);
        self.spots.clear();
        let (mut offline, mut unplaced, mut dup) = (0, 0, None);
        for (i, id) in a.replicas.iter().enumerate() {
            if dup.is_none() && a.replicas[..i].contains(id) {
                dup = Some(*id);
            }
            let spot = self.layout.spot(*id);
            match spot {
                Spot::Cell(k, _) => self.n[k] += 1,
                Spot::Offline => offline += 1,
                Spot::Unplaced => unplaced += 1,
            }
            self.spots.push(spot);
        }
        (offline, unplaced, dup)
    }

    /// Whether the counts just read comply with the rule (no offline or unplaced replica).
    fn counts_comply(&self, rf: usize) -> bool {
        let z = self.layout.zones.len();
        let c = self.layout.clusters.len();
        let ((rlo, rhi), (zlo, zhi)) = self.layout.bounds(rf);
        if c == 0 {
            return false;
        }
        let (klo, khi) = self.layout.cell_bounds(rf);
        (0..c).all(|ci| (rlo..=rhi).contains(&self.n[ci * z..(ci + 1) * z].iter().sum()))
            && (0..z).all(|zi| (zlo..=zhi).contains(&(0..c).map(|ci| self.n[ci * z + zi]).sum()))
            && self.n[..c * z].iter().all(|n| (klo..=khi).contains(n))
    }

    /// Plans one offending partition within `budget` moves (left out, loads untouched,
    /// when it needs more).
    fn plan_partition(&mut self, a: &Assignment, budget: Option<usize>) -> Outcome {
        let rf = a.replicas.len();
        let (offline, _, dup) = self.read(a);
        if let Some(id) = dup {
            return Outcome::Infeasible(format!("broker {id} is listed twice in the replica list"));
        }
        let layout = self.layout;
        let targets = self
            .targets
            .entry(rf)
            .or_insert_with(|| layout.search(rf).0);
        let flat = match targets {
            Targets::Some(flat) => flat,
            Targets::None(reason) => return Outcome::Infeasible(reason.clone()),
        };
        let cells = layout.cells();
        let leader = a.effective_leader();
        let leader_pos = leader.and_then(|l| a.replicas.iter().position(|r| *r == l));
        let leader_cell = leader_pos.and_then(|i| match self.spots[i] {
            Spot::Cell(k, _) => Some(k),
            _ => None,
        });
        // Least moves, then keeping the leader's cell, then the least-loaded cells.
        let mut best: Option<(usize, bool, u64, usize)> = None;
        for (t, target) in flat.chunks_exact(cells).enumerate() {
            let mut kept = 0;
            let mut added_load = 0u64;
            for (k, tk) in target.iter().enumerate() {
                let tk = usize::from(*tk);
                let n = self.n[k];
                kept += n.min(tk);
                if tk > n {
                    let live = layout.cell_brokers[k].len().max(1) as u64;
                    added_load += (tk - n) as u64 * (self.cell_load[k] * LOAD_SCALE / live);
                }
            }
            let moves = rf - kept;
            let loses_leader = leader_cell.is_some_and(|k| target[k] == 0);
            let key = (moves, loses_leader, added_load, t);
            if best.is_none_or(|b| (key.0, key.1, key.2) < (b.0, b.1, b.2)) {
                best = Some(key);
            }
        }
        let Some((moves, _, _, t)) = best else {
            return Outcome::Infeasible("no valid placement".to_owned());
        };
        if budget.is_some_and(|b| moves > b) {
            return Outcome::LeftOut(moves);
        }
        let target: Vec<usize> = flat[t * cells..(t + 1) * cells]
            .iter()
            .map(|v| usize::from(*v))
            .collect();

        // Which positions give up their replica: every offline or unplaced one, and in each
        // over-full cell its most loaded brokers' replicas, never the leader's.
        let mut remove = vec![false; rf];
        for (i, spot) in self.spots.iter().enumerate() {
            if !matches!(spot, Spot::Cell(..)) {
                remove[i] = true;
            }
        }
        let mut in_cell: Vec<(bool, u32, usize)> = Vec::with_capacity(rf);
        for (k, t) in target.iter().enumerate() {
            let excess = self.n[k].saturating_sub(*t);
            if excess == 0 {
                continue;
            }
            in_cell.clear();
            for (i, spot) in self.spots.iter().enumerate() {
                if let Spot::Cell(kk, slot) = spot
                    && *kk == k
                {
                    in_cell.push((Some(i) == leader_pos, self.load[*slot], i));
                }
            }
            // Not the leader first, then the most loaded, then the later position.
            in_cell.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(b.2.cmp(&a.2)));
            for (_, _, i) in in_cell.iter().take(excess) {
                remove[*i] = true;
            }
        }

        // Destinations: per under-full cell, its least-loaded live brokers not holding the
        // partition.
        let mut dests: Vec<usize> = Vec::with_capacity(moves);
        for (k, t) in target.iter().enumerate() {
            let need = t.saturating_sub(self.n[k]);
            for _ in 0..need {
                let pick = layout.cell_brokers[k]
                    .iter()
                    .copied()
                    .filter(|s| {
                        !dests.contains(s)
                            && !self
                                .spots
                                .iter()
                                .any(|p| matches!(p, Spot::Cell(_, x) if x == s))
                    })
                    .min_by_key(|s| (self.load[*s], layout.ids[*s]));
                match pick {
                    Some(s) => dests.push(s),
                    None => {
                        return Outcome::Infeasible(format!(
                            "cell {} has no live broker left for this partition",
                            layout.cell_name(k)
                        ));
                    }
                }
            }
        }
        let removed = remove.iter().filter(|r| **r).count();
        if removed != dests.len() || removed != moves {
            return Outcome::Infeasible(format!(
                "internal: {removed} replicas out, {} in, {moves} planned",
                dests.len()
            ));
        }

        // Apply: each removed position takes the next destination; loads follow.
        let mut to = a.replicas.clone();
        let mut next = dests.iter();
        for (i, r) in remove.iter().enumerate() {
            if !*r {
                continue;
            }
            if let Spot::Cell(k, slot) = self.spots[i] {
                self.load[slot] -= 1;
                self.cell_load[k] -= 1;
            }
            if let Some(&s) = next.next() {
                to[i] = layout.ids[s];
                self.load[s] += 1;
                if let Some(k) = layout.cell[s] {
                    self.cell_load[k] += 1;
                }
            }
        }
        // The leader first when it stays, else the first replica that stays.
        let first = match leader_pos {
            Some(i) if !remove[i] => Some(i),
            _ => remove.iter().position(|r| !*r),
        };
        if let Some(i) = first
            && i > 0
        {
            let id = to.remove(i);
            to.insert(0, id);
        }
        Outcome::Move(PartitionMove {
            topic: a.topic.clone(),
            partition: a.partition,
            from: a.replicas.clone(),
            to,
            moves,
            offline: offline.min(moves),
        })
    }
}

/// Plans the fewest moves that make every partition comply (see the module docs).
/// Partitions already complying are left out of the plan.
pub fn plan(layout: &Layout, partitions: &[Assignment], options: &PlanOptions) -> Plan {
    plan_selected(layout, partitions, |_, _| true, options)
}

/// [`plan`] for the partitions `select` picks (by index and assignment); the others are
/// left as they are but their replicas still count in the brokers' loads.
pub fn plan_selected(
    layout: &Layout,
    partitions: &[Assignment],
    select: impl Fn(usize, &Assignment) -> bool,
    options: &PlanOptions,
) -> Plan {
    let mut planner = Planner::new(layout, partitions);
    let mut summary = Summary::default();
    // Offenders, those with offline replicas first.
    let mut first = Vec::new();
    let mut then = Vec::new();
    for (i, a) in partitions.iter().enumerate() {
        if !select(i, a) {
            continue;
        }
        summary.partitions_checked += 1;
        let (offline, unplaced, dup) = planner.read(a);
        if offline > 0 {
            first.push(i);
        } else if unplaced > 0 || dup.is_some() || !planner.counts_comply(a.replicas.len()) {
            then.push(i);
        }
    }
    summary.offenders = first.len() + then.len();
    let mut out = Plan::default();
    let mut budget = options.max_moves;
    for i in first.into_iter().chain(then) {
        let a = &partitions[i];
        match planner.plan_partition(a, budget) {
            Outcome::Move(m) => {
                summary.moves += m.moves;
                summary.offline_moves += m.offline;
                if let Some(b) = budget.as_mut() {
                    *b -= m.moves;
                }
                out.moves.push(m);
            }
            Outcome::Infeasible(reason) => {
                summary.infeasible += 1;
                out.infeasible.push(Infeasible {
                    topic: a.topic.clone(),
                    partition: a.partition,
                    replicas: a.replicas.clone(),
                    reason,
                });
            }
            Outcome::LeftOut(moves) => {
                summary.left_out += 1;
                summary.left_out_moves += moves;
            }
        }
    }
    out.summary = summary;
    out
}
