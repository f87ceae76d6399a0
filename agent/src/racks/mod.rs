//! Rack placement of partitions over two dimensions, Kubernetes cluster x zone.
//!
//! - [`RackPlacer`]: a broker's rack → its (cluster, zone) cell, with the policy's
//!   `rackFormat`; shared with the health report so both read racks the same way.
//! - [`plan`]: the pure planner, partitions + brokers → the fewest moves that make every
//!   partition balanced over zones and clusters (`docs/DESIGN.md`, "Racks: the planner").
//! - [`input`]: where a plan's inputs come from: a `--from` JSON file or a Kafka snapshot.
//! - [`execute`]: the executor's decisions, pure: a plan and each poll's view of the
//!   cluster in, the next batch, throttle changes and the final election out.
//! - [`apply`]: the executor's I/O shell over the Kafka client, and `racks status` /
//!   `racks cancel`.
//! - [`reassignment`]: reading a plan, kafka-reassign-partitions JSON (version 1).
//! - [`json_file`]: how both files are read: strictly, errors naming the JSON path.
//! - [`cli`]: `kpool-agent racks plan|apply|status|cancel`, what they print and their exit
//!   codes.

pub mod apply;
pub mod cli;
pub mod execute;
pub mod input;
pub mod json_file;
pub mod plan;
pub mod reassignment;
#[cfg(test)]
mod tests;

use kpool_policy::Policy;

/// The rack rule's bound: replicas allowed per zone, per cluster or per cell when `rf`
/// replicas are spread over `parts` of them, as inclusive (floor, ceil) of `rf / parts`;
/// (0, 0) for no parts. The planner's targets and the health report's offenders both use
/// it, so they agree on what balanced means.
pub fn spread(rf: usize, parts: usize) -> (usize, usize) {
    if parts == 0 {
        return (0, 0);
    }
    (rf / parts, rf.div_ceil(parts))
}

/// The count furthest outside `spread(rf, counts.len())`, as (index, count, floor, ceil):
/// an over-full value first (the larger the worse), else an under-full one. With
/// `over_only`, values under the floor are not looked at (a partition with replicas on
/// unplaced brokers is short somewhere by construction; the report counts those apart).
pub fn outside(
    counts: &[usize],
    rf: usize,
    over_only: bool,
) -> Option<(usize, usize, usize, usize)> {
    let (lo, hi) = spread(rf, counts.len());
    let over = counts
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > hi)
        .max_by_key(|(_, n)| **n)
        .map(|(i, n)| (i, *n, lo, hi));
    if over.is_some() || over_only {
        return over;
    }
    counts
        .iter()
        .enumerate()
        .filter(|(_, n)| **n < lo)
        .min_by_key(|(_, n)| **n)
        .map(|(i, n)| (i, *n, lo, hi))
}

/// Parses racks into (cluster, zone) indices: zones are the policy's, in its order;
/// clusters are numbered in the order first seen (or fixed up front with
/// [`RackPlacer::with_clusters`]).
///
/// One parser for the health report and the planner, so a rack the report counts in a zone
/// is the rack the planner moves replicas into.
#[derive(Debug, Clone)]
pub struct RackPlacer<'p> {
    policy: &'p Policy,
    clusters: Vec<String>,
    /// Clusters are fixed: a rack naming another cluster is not placed.
    fixed: bool,
}

impl<'p> RackPlacer<'p> {
    /// A placer that learns clusters from the racks it is given.
    pub fn new(policy: &'p Policy) -> Self {
        Self {
            policy,
            clusters: Vec::new(),
            fixed: false,
        }
    }

    /// A placer that knows only `clusters` (a rack of any other cluster is not placed): so
    /// a Kubernetes cluster whose brokers are all down is still a cluster replicas belong in.
    pub fn with_clusters(policy: &'p Policy, clusters: &[String]) -> Self {
        Self {
            policy,
            clusters: clusters.to_vec(),
            fixed: true,
        }
    }

    /// The (cluster, zone) of `rack`, or `None` when it does not parse with the policy's
    /// rack format (or names a cluster outside a fixed list).
    pub fn place(&mut self, rack: &str) -> Option<(usize, usize)> {
        let (cluster, zone) = self.policy.parse_rack(rack)?;
        let z = self.policy.spec().zones.iter().position(|z| z == zone)?;
        let c = match self.clusters.iter().position(|c| c == cluster) {
            Some(c) => c,
            None if self.fixed => return None,
            None => {
                self.clusters.push(cluster.to_owned());
                self.clusters.len() - 1
            }
        };
        Some((c, z))
    }

    /// The policy's zones, in order.
    pub fn zones(&self) -> &[String] {
        &self.policy.spec().zones
    }

    /// The clusters known so far, in index order.
    pub fn clusters(&self) -> &[String] {
        &self.clusters
    }

    /// The clusters known, in index order.
    pub fn into_clusters(self) -> Vec<String> {
        self.clusters
    }
}
