//! Rack distribution: for each partition, replicas per zone and per Kubernetes cluster (and
//! per cell with `racks.rule: perCell`) against the rack rule, the planner's: each within
//! floor/ceil of RF over them ([`crate::racks::spread`]; RF 6 over 3 zones x 2 clusters: 2 per
//! zone, 3 per cluster). A partition with replicas on unplaced brokers is checked for
//! over-full values only (it is short somewhere by construction, and counted in
//! `unplaced_replicas`). Racks are parsed with the policy's rack format ([`RackPlacer`],
//! shared with the planner).

use kpool_policy::Policy;
use serde::Serialize;

use super::{BrokerFacts, Offenders};
use crate::racks::RackPlacer;
use crate::snapshot::Partition;

/// Rack distribution over all partitions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RackReport {
    pub zones: Vec<String>,
    /// Kubernetes clusters seen in registered brokers' racks.
    pub clusters: Vec<String>,
    pub partitions_checked: usize,
    /// Partitions with more (or fewer) replicas in one zone than the rule allows.
    pub zone_skew: Offenders,
    /// Partitions with more (or fewer) replicas in one cluster than the rule allows.
    pub cluster_skew: Offenders,
    /// `racks.rule: perCell`: partitions with more (or fewer) replicas in one cell.
    pub cell_skew: Offenders,
    /// Registered brokers whose rack is missing or does not parse with the policy's format.
    pub unknown_rack_brokers: Vec<i32>,
    /// Replicas on brokers whose rack is unknown (not registered, or unparsable).
    pub unplaced_replicas: usize,
}

pub(super) struct Evaluator {
    /// (cluster, zone) index per broker slot.
    place: Vec<Option<(usize, usize)>>,
    report: RackReport,
    zone_counts: Vec<usize>,
    cluster_counts: Vec<usize>,
    /// Per (cluster, zone) cell, with `racks.rule: perCell`; empty otherwise.
    cell_counts: Vec<usize>,
    limit: usize,
}

impl Evaluator {
    pub(super) fn new(policy: &Policy, ids: &[i32], facts: &[BrokerFacts], limit: usize) -> Self {
        let mut placer = RackPlacer::new(policy);
        let mut unknown = Vec::new();
        let place = ids
            .iter()
            .zip(facts)
            .map(|(id, f)| {
                let placed = f.rack.as_deref().and_then(|r| placer.place(r));
                if placed.is_none() && f.registered {
                    unknown.push(*id);
                }
                placed
            })
            .collect();
        let zones = placer.zones().to_vec();
        let clusters = placer.into_clusters();
        let per_cell = policy.spec().racks.rule == kpool_policy::model::RackRule::PerCell;
        Self {
            place,
            zone_counts: vec![0; zones.len()],
            cluster_counts: vec![0; clusters.len()],
            cell_counts: vec![
                0;
                if per_cell {
                    zones.len() * clusters.len()
                } else {
                    0
                }
            ],
            report: RackReport {
                zones,
                clusters,
                unknown_rack_brokers: unknown,
                ..RackReport::default()
            },
            limit,
        }
    }

    pub(super) fn partition(
        &mut self,
        p: &Partition,
        slot: impl Fn(i32) -> Option<usize>,
        name: impl Fn() -> String,
    ) {
        self.report.partitions_checked += 1;
        self.zone_counts.iter_mut().for_each(|c| *c = 0);
        self.cluster_counts.iter_mut().for_each(|c| *c = 0);
        self.cell_counts.iter_mut().for_each(|c| *c = 0);
        let z = self.zone_counts.len();
        let mut unplaced = false;
        for id in &p.replicas {
            match slot(*id).and_then(|s| self.place[s]) {
                Some((c, zi)) => {
                    self.cluster_counts[c] += 1;
                    self.zone_counts[zi] += 1;
                    if let Some(n) = self.cell_counts.get_mut(c * z + zi) {
                        *n += 1;
                    }
                }
                None => {
                    self.report.unplaced_replicas += 1;
                    unplaced = true;
                }
            }
        }
        let rf = p.replicas.len();
        let limit = self.limit;
        if let Some((i, n, lo, hi)) = crate::racks::outside(&self.zone_counts, rf, unplaced) {
            let zone = &self.report.zones[i];
            self.report
                .zone_skew
                .add(limit, || skew(&name(), n, rf, lo, hi, "zone", zone));
        }
        if let Some((i, n, lo, hi)) = crate::racks::outside(&self.cluster_counts, rf, unplaced) {
            let cluster = &self.report.clusters[i];
            self.report
                .cluster_skew
                .add(limit, || skew(&name(), n, rf, lo, hi, "cluster", cluster));
        }
        if let Some((k, n, lo, hi)) = crate::racks::outside(&self.cell_counts, rf, unplaced) {
            let cell = format!(
                "{}/{}",
                self.report.clusters[k / z],
                self.report.zones[k % z]
            );
            self.report
                .cell_skew
                .add(limit, || skew(&name(), n, rf, lo, hi, "cell", &cell));
        }
    }

    pub(super) fn finish(self) -> RackReport {
        self.report
    }
}

/// `orders-1: 3 of 6 replicas in zone eu-west-1b (the rule allows 2)`.
fn skew(name: &str, n: usize, rf: usize, lo: usize, hi: usize, what: &str, which: &str) -> String {
    let allowed = if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    };
    format!("{name}: {n} of {rf} replicas in {what} {which} (the rule allows {allowed})")
}
