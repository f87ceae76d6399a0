//! The loops that act on the node view ([`crate::nodeview`]): the guard round and the
//! overhead sampler.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::act::{Actor, EvictOutcome};
use super::decide::{self, Guard, Kind, Target};
use crate::metrics::{KindLabel, ResultLabel};
use crate::nodeview::NodeView;
use crate::overhead::{Allocatable, Sampler};
use crate::service::Agent;

/// One guard round over `pods` and `node`: finds violations, keeps the gauges current, and
/// acts on what is due (refused evictions of foreign pods escalate: see [`super::act`]).
/// Returns the audit records written.
pub async fn round(
    agent: &Agent,
    guard: &mut Guard,
    actor: &Actor,
    node: &decide::NodeFacts,
    pods: &[decide::PodFacts],
    now: Instant,
) -> Vec<kpool_cli::audit::AuditRecord> {
    let policy = agent.policy();
    let found = decide::violations(policy, node, pods);
    let m = agent.metrics();
    for kind in Kind::ALL {
        let n = found.iter().filter(|v| v.kind == kind).count();
        m.guard_violations
            .get_or_create(&KindLabel { kind: kind.code() })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    // Refusals are remembered only for pods that are still foreign violators here.
    {
        let foreign: BTreeSet<&str> = found
            .iter()
            .filter(|v| v.kind == Kind::ForeignPod)
            .filter_map(|v| match &v.target {
                Target::Pod { uid, .. } => Some(uid.as_str()),
                Target::Node { .. } | Target::Lease { .. } => None,
            })
            .collect();
        actor.retain_refusals(|uid| foreign.contains(uid));
    }
    let mut records = Vec::new();
    for d in guard.decide(policy.spec().mode, found, now) {
        let applied = actor.apply(&d, policy).await;
        m.guard_violations_total
            .get_or_create(&KindLabel {
                kind: d.violation.kind.code(),
            })
            .inc();
        if let Some(o) = &applied.eviction {
            m.guard_evictions
                .get_or_create(&ResultLabel { result: o.code() })
                .inc();
            if matches!(o, EvictOutcome::Blocked { .. } | EvictOutcome::Failed(_)) {
                tracing::warn!(violation = %d.violation.message, outcome = ?o, refusals = ?applied.refusals, "eviction did not happen");
            }
        }
        if applied.refusals.is_some() {
            m.guard_eviction_refusals.inc();
        }
        if let Some(o) = &applied.deletion {
            m.guard_deletions
                .get_or_create(&ResultLabel { result: o.code() })
                .inc();
            tracing::warn!(violation = %d.violation.message, outcome = ?o, "deletion of a foreign pod its PodDisruptionBudget shields (guard.deleteAfterRefusals)");
        }
        for record in applied.records {
            crate::audit::emit(&record);
            records.push(record);
        }
    }
    m.pool_breached
        .set(i64::try_from(actor.refusals().breached()).unwrap_or(i64::MAX));
    records
}

/// Runs guard rounds every `interval` until `shutdown` turns true.
pub async fn guard_loop(
    agent: Arc<Agent>,
    view: NodeView,
    actor: Actor,
    mut guard: Guard,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    // Acting on a half-filled cache would miss the older broker: wait for both lists.
    tokio::select! {
        _ = async { let _ = view.pods.wait_until_ready().await; let _ = view.node.wait_until_ready().await; } => {}
        _ = shutdown.changed() => return,
    }
    loop {
        match view.node() {
            Some(node) => {
                let facts = super::node_facts(&node);
                round(
                    &agent,
                    &mut guard,
                    &actor,
                    &facts,
                    &view.pod_facts(),
                    Instant::now(),
                )
                .await;
            }
            None => {
                tracing::warn!(node = %view.node_name, "node object not found; guard round skipped")
            }
        }
        if crate::backoff::sleep_or_stop(interval, &mut shutdown).await {
            return;
        }
    }
}

/// Samples overhead every `interval` until `shutdown` turns true. `context` gives the
/// broker uids and the Node's allocatable at each sample (empty and `None` standalone).
pub async fn overhead_loop<F>(
    agent: Arc<Agent>,
    mut sampler: Sampler,
    interval: Duration,
    context: F,
    mut shutdown: watch::Receiver<bool>,
) where
    F: Fn() -> (BTreeSet<String>, Option<Allocatable>) + Send,
{
    // The first sample comes soon (a second of CPU time to measure over) so a fresh agent
    // has something to show; then every `interval`.
    let mut delay = interval.min(Duration::from_secs(1));
    loop {
        if crate::backoff::sleep_or_stop(delay, &mut shutdown).await {
            return;
        }
        delay = interval;
        let (brokers, allocatable) = context();
        match sampler.sample(&brokers, allocatable) {
            Ok(o) => agent.publish_overhead(o),
            Err(e) => {
                tracing::warn!(error = %e, "overhead sample failed");
                agent.overhead_failed(e.to_string());
            }
        }
    }
}
