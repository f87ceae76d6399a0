//! The health engine: a snapshot in, partition states, broker facts, restart safety and
//! rack distribution out. Pure and allocation-light: it runs once per poll over up to
//! hundreds of thousands of partitions, and every probe answer reads its result.
//!
//! Definitions are Kafka's own (`docs/DESIGN.md`, "Kafka health"):
//! - under-replicated: `|isr| < |replicas|`, replicas a reassignment is adding not counted
//! - offline: no leader (-1), or the leader is not a live broker
//! - under min ISR: no leader, or `|isr| < min.insync.replicas`
//! - at min ISR: `|isr| == min.insync.replicas`
//! - restarting broker B is unsafe for a partition with a replica on B and more replicas
//!   than min ISR if `|isr| < min ISR`, or `|isr| == min ISR` and B is in the ISR.

mod racks;
mod verdict;

use std::collections::BTreeMap;

use kpool_policy::Policy;
use serde::Serialize;

use crate::snapshot::{Partition, Snapshot};

pub use racks::RackReport;
pub use verdict::{BrokerState, Inputs, Verdict, VerdictMode, verdict};

/// How many offenders are named per list.
pub const DEFAULT_OFFENDERS: usize = 10;

/// A count and the first few names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Offenders {
    pub count: usize,
    pub first: Vec<String>,
}

impl Offenders {
    fn add(&mut self, limit: usize, name: impl FnOnce() -> String) {
        self.count += 1;
        if self.first.len() < limit {
            self.first.push(name());
        }
    }

    /// `3 partitions under min ISR: orders-4, orders-7, payments-1` style text.
    pub fn describe(&self, what: &str) -> String {
        let mut s = format!(
            "{} partition{} {what}",
            self.count,
            if self.count == 1 { "" } else { "s" }
        );
        if !self.first.is_empty() {
            s.push_str(": ");
            s.push_str(&self.first.join(", "));
            if self.count > self.first.len() {
                s.push_str(&format!(" (and {} more)", self.count - self.first.len()));
            }
        }
        s
    }
}

/// The state of one partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionState {
    pub under_replicated: bool,
    pub offline: bool,
    pub under_min_isr: bool,
    pub at_min_isr: bool,
}

/// Classifies a partition. `is_live` says whether a broker id is registered.
pub fn partition_state(
    p: &Partition,
    min_isr: i32,
    is_live: impl Fn(i32) -> bool,
) -> PartitionState {
    let no_leader = p.leader < 0;
    let isr = i32::try_from(p.isr.len()).unwrap_or(i32::MAX);
    PartitionState {
        under_replicated: p.isr.len() < replicas_excluding_adding(p),
        offline: no_leader || !is_live(p.leader),
        under_min_isr: no_leader || isr < min_isr,
        at_min_isr: isr == min_isr,
    }
}

/// The partition's replicas other than those a reassignment is adding (Kafka's own tools
/// leave those out of under-replication: they are expected to be catching up).
fn replicas_excluding_adding(p: &Partition) -> usize {
    if p.adding_replicas.is_empty() {
        return p.replicas.len();
    }
    p.replicas
        .iter()
        .filter(|r| !p.adding_replicas.contains(r))
        .count()
}

/// Cluster-wide partition counts and offenders.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PartitionSummary {
    pub partitions: usize,
    pub under_replicated: Offenders,
    pub offline: Offenders,
    pub under_min_isr: Offenders,
    pub at_min_isr: Offenders,
}

/// What the cluster says about one broker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BrokerFacts {
    pub id: i32,
    pub registered: bool,
    pub rack: Option<String>,
    /// Replicas hosted.
    pub replicas: usize,
    /// Its replicas that are not in their partition's ISR (except replicas a reassignment
    /// is still adding: catching up is what they are expected to be doing).
    pub out_of_sync: Offenders,
    /// Partitions it leads.
    pub leaders: usize,
    /// Whether restarting it now keeps every partition at or above min ISR.
    pub restart_safe: bool,
    /// Partitions a restart would push below min ISR.
    pub restart_blockers: Offenders,
}

/// Everything evaluated from one snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Health {
    pub cluster_id: Option<String>,
    pub controller_id: Option<i32>,
    pub topics: usize,
    pub summary: PartitionSummary,
    /// Registered brokers and every broker hosting a replica, by id.
    pub brokers: BTreeMap<i32, BrokerFacts>,
    pub racks: RackReport,
}

impl Health {
    /// Facts of broker `id` (a broker nobody knows is unregistered with no replicas).
    pub fn broker(&self, id: i32) -> BrokerFacts {
        self.brokers.get(&id).cloned().unwrap_or(BrokerFacts {
            id,
            restart_safe: true,
            ..BrokerFacts::default()
        })
    }
}

/// Dense index from broker id to a slot, so the per-replica work is an array access.
struct BrokerIndex {
    ids: Vec<i32>,
    dense: Vec<u32>,
}

const NO_SLOT: u32 = u32::MAX;

impl BrokerIndex {
    fn new(snapshot: &Snapshot) -> Self {
        let mut ids: Vec<i32> = snapshot.brokers.iter().map(|b| b.id).collect();
        for t in &snapshot.topics {
            for p in &t.partitions {
                ids.extend(p.replicas.iter().copied());
                ids.push(p.leader);
            }
        }
        ids.sort_unstable();
        ids.dedup();
        ids.retain(|id| *id >= 0);
        let max = ids.last().copied().unwrap_or(0);
        // Broker ids are small in practice; fall back to binary search when they are not.
        let dense = if max < 1 << 20 {
            let mut d = vec![NO_SLOT; usize::try_from(max).unwrap_or(0) + 1];
            for (slot, id) in ids.iter().enumerate() {
                d[*id as usize] = slot as u32;
            }
            d
        } else {
            Vec::new()
        };
        Self { ids, dense }
    }

    fn slot(&self, id: i32) -> Option<usize> {
        if id < 0 {
            return None;
        }
        if self.dense.is_empty() {
            return self.ids.binary_search(&id).ok();
        }
        match self.dense.get(id as usize) {
            Some(&s) if s != NO_SLOT => Some(s as usize),
            _ => None,
        }
    }
}

/// Evaluates a snapshot against the policy, naming at most `limit` offenders per list.
pub fn evaluate(snapshot: &Snapshot, policy: &Policy, limit: usize) -> Health {
    let index = BrokerIndex::new(snapshot);
    let n = index.ids.len();
    let mut live = vec![false; n];
    let mut facts: Vec<BrokerFacts> = index
        .ids
        .iter()
        .map(|&id| BrokerFacts {
            id,
            ..BrokerFacts::default()
        })
        .collect();
    for b in &snapshot.brokers {
        if let Some(s) = index.slot(b.id) {
            live[s] = true;
            facts[s].registered = true;
            facts[s].rack = b.rack.clone();
        }
    }
    let mut rack_eval = racks::Evaluator::new(policy, &index.ids, &facts, limit);
    let mut summary = PartitionSummary::default();
    let mut in_isr = vec![false; n];

    for topic in &snapshot.topics {
        let min_isr = snapshot.min_isr(topic);
        for p in &topic.partitions {
            summary.partitions += 1;
            let name = || format!("{}-{}", topic.name, p.index);
            let state = partition_state(p, min_isr, |id| index.slot(id).is_some_and(|s| live[s]));
            if state.under_replicated {
                summary.under_replicated.add(limit, name);
            }
            if state.offline {
                summary.offline.add(limit, name);
            }
            if state.under_min_isr {
                summary.under_min_isr.add(limit, name);
            }
            if state.at_min_isr {
                summary.at_min_isr.add(limit, name);
            }
            if let Some(s) = index.slot(p.leader) {
                facts[s].leaders += 1;
            }
            for id in &p.isr {
                if let Some(s) = index.slot(*id) {
                    in_isr[s] = true;
                }
            }
            let rf = p.replicas.len();
            let isr = p.isr.len();
            let min = usize::try_from(min_isr.max(0)).unwrap_or(0);
            for id in &p.replicas {
                let Some(s) = index.slot(*id) else { continue };
                let f = &mut facts[s];
                f.replicas += 1;
                if !in_isr[s] && !p.adding_replicas.contains(id) {
                    f.out_of_sync.add(limit, name);
                }
                // Partitions with no more replicas than min ISR never block a restart.
                if rf > min && (isr < min || (isr == min && in_isr[s])) {
                    f.restart_blockers.add(limit, name);
                }
            }
            for id in &p.isr {
                if let Some(s) = index.slot(*id) {
                    in_isr[s] = false;
                }
            }
            rack_eval.partition(p, |id| index.slot(id), name);
        }
    }
    for f in &mut facts {
        f.restart_safe = f.restart_blockers.count == 0;
    }
    Health {
        cluster_id: snapshot.cluster_id.clone(),
        controller_id: snapshot.controller_id,
        topics: snapshot.topics.len(),
        summary,
        racks: rack_eval.finish(),
        brokers: facts.into_iter().map(|f| (f.id, f)).collect(),
    }
}
