//! Rack distribution: for each partition, replicas per zone and per Kubernetes cluster
//! against an even spread (no value holds more than ceil(RF / number of values): with RF 6
//! over 3 zones x 2 clusters, 2 per zone and 3 per cluster). Racks are parsed with the
//! policy's rack format ([`RackPlacer`], shared with the rack planner).

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
    /// Partitions with more replicas in one zone than an even spread allows.
    pub zone_skew: Offenders,
    /// Partitions with more replicas in one cluster than an even spread allows.
    pub cluster_skew: Offenders,
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
        Self {
            place,
            zone_counts: vec![0; zones.len()],
            cluster_counts: vec![0; clusters.len()],
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
        for id in &p.replicas {
            match slot(*id).and_then(|s| self.place[s]) {
                Some((c, z)) => {
                    self.cluster_counts[c] += 1;
                    self.zone_counts[z] += 1;
                }
                None => self.report.unplaced_replicas += 1,
            }
        }
        let rf = p.replicas.len();
        let limit = self.limit;
        if let Some((i, n, max)) = worst(&self.zone_counts, rf) {
            let zone = &self.report.zones[i];
            self.report.zone_skew.add(limit, || {
                format!(
                    "{}: {n} of {rf} replicas in zone {zone} (max {max})",
                    name()
                )
            });
        }
        if let Some((i, n, max)) = worst(&self.cluster_counts, rf) {
            let cluster = &self.report.clusters[i];
            self.report.cluster_skew.add(limit, || {
                format!(
                    "{}: {n} of {rf} replicas in cluster {cluster} (max {max})",
                    name()
                )
            });
        }
    }

    pub(super) fn finish(self) -> RackReport {
        self.report
    }
}

/// The most over-full value, if any exceeds ceil(rf / values).
fn worst(counts: &[usize], rf: usize) -> Option<(usize, usize, usize)> {
    if counts.is_empty() {
        return None;
    }
    let max = rf.div_ceil(counts.len());
    counts
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > max)
        .max_by_key(|(_, n)| **n)
        .map(|(i, n)| (i, *n, max))
}
