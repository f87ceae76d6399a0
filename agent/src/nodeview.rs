//! The agent's view of its node from the Kubernetes API: every pod with
//! `spec.nodeName=$NODE_NAME` and this Node, each in a local reflector cache kept current by
//! a watch. The probe's broker lookups and the guard both read these caches, so nothing on
//! the probe's path waits on the API server.
//!
//! While the API server is unreachable the caches keep their last state, and
//! [`WatchHealth`] says for how long the pod watch has been failing: the readiness verdict
//! goes stale once that passes the policy's staleness bound (the override annotations and
//! the pod → broker mapping it relies on may have changed meanwhile).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;

use crate::guard::decide;

/// Whether a watch is in contact with the API server.
///
/// A watch that streams no events is healthy: only errors count. After an error the watch
/// starts over with a fresh list, so contact is proven again by the list's completion
/// rather than assumed from silence.
#[derive(Debug, Clone, Default)]
pub struct WatchHealth(Arc<Mutex<HealthState>>);

#[derive(Debug, Default)]
struct HealthState {
    failing_since: Option<Instant>,
    last_error: Option<String>,
    failures: u64,
}

/// A watch that has been failing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outage {
    /// Since the first failure after the last success.
    pub duration: Duration,
    /// The last error, as the client reported it.
    pub last_error: String,
    /// Failed attempts since the last success.
    pub failures: u64,
}

impl WatchHealth {
    /// Records contact with the API server (an event, or a completed list).
    pub fn ok(&self) {
        if let Ok(mut s) = self.0.lock() {
            s.failing_since = None;
            s.last_error = None;
            s.failures = 0;
        }
    }

    /// Records a failed watch or list at `now`.
    pub fn failed(&self, now: Instant, error: String) {
        if let Ok(mut s) = self.0.lock() {
            s.failing_since.get_or_insert(now);
            s.last_error = Some(error);
            s.failures += 1;
        }
    }

    /// The current outage, if the watch is failing.
    pub fn outage(&self, now: Instant) -> Option<Outage> {
        let s = self.0.lock().ok()?;
        let since = s.failing_since?;
        Some(Outage {
            duration: now.saturating_duration_since(since),
            last_error: s.last_error.clone().unwrap_or_default(),
            failures: s.failures,
        })
    }
}

/// The pods on this node and this Node, from the local reflector caches.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub pods: Store<Pod>,
    pub node: Store<Node>,
    pub node_name: String,
    /// Contact of the pod watch (the one verdicts depend on).
    pub pods_health: WatchHealth,
    /// What the agent has read about the controllers the pods name.
    pub owners: crate::pool::Owners,
}

/// How often the controllers the node's pods name are re-checked (those due).
const OWNER_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// How long a failed watch waits before starting over: doubling from `FIRST_RETRY` up to
/// `MAX_RETRY`, back to the start after a success.
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Server-side lifetime of each watch request. kube-runtime treats a watch silent for
/// this long plus 5 s as dead and starts a new one, so a connection that vanished
/// without a reset (a black-holed network) shows as an outage within about a minute,
/// instead of the default 290 s; the cost is one watch request per minute.
const WATCH_TIMEOUT_SECS: u32 = 60;

impl NodeView {
    /// Starts both watches; the tasks run until aborted, retrying with backoff, and the
    /// caches keep their last state while the API server is unreachable.
    pub fn start(client: kube::Client, node: &str) -> (Self, Vec<tokio::task::JoinHandle<()>>) {
        let pods_api: kube::Api<Pod> = kube::Api::all(client.clone());
        let nodes_api: kube::Api<Node> = kube::Api::all(client.clone());
        let owners = crate::pool::Owners::default();
        let (pods, pod_writer) = reflector::store();
        let (nodes, node_writer) = reflector::store();
        let pods_health = WatchHealth::default();
        let pod_cfg = watcher::Config::default()
            .fields(&format!("spec.nodeName={node}"))
            .timeout(WATCH_TIMEOUT_SECS);
        let node_cfg = watcher::Config::default()
            .fields(&format!("metadata.name={node}"))
            .timeout(WATCH_TIMEOUT_SECS);
        let tasks = vec![
            tokio::spawn(follow(
                pods_api,
                pod_cfg,
                pod_writer,
                pods_health.clone(),
                "pods",
                node.to_owned(),
            )),
            tokio::spawn(follow(
                nodes_api,
                node_cfg,
                node_writer,
                WatchHealth::default(),
                "node",
                node.to_owned(),
            )),
            tokio::spawn(crate::pool::verify_loop(
                client,
                pods.clone(),
                owners.clone(),
                OWNER_CHECK_INTERVAL,
            )),
        ];
        (
            Self {
                pods,
                node: nodes,
                node_name: node.to_owned(),
                pods_health,
                owners,
            },
            tasks,
        )
    }

    /// A view over caches filled some other way (tests and benches feed them directly).
    pub fn from_stores(pods: Store<Pod>, node: Store<Node>, node_name: &str) -> Self {
        Self {
            pods,
            node,
            node_name: node_name.to_owned(),
            pods_health: WatchHealth::default(),
            owners: crate::pool::Owners::default(),
        }
    }

    /// The guard's facts about the pods.
    pub fn pod_facts(&self) -> Vec<decide::PodFacts> {
        self.pods
            .state()
            .iter()
            .map(|p| {
                let exists = crate::pool::KubePod::new(p, &self.owners).controller_exists;
                crate::guard::pod_facts(p, exists)
            })
            .collect()
    }

    /// The Node, once seen.
    pub fn node(&self) -> Option<Arc<Node>> {
        self.node.state().into_iter().next()
    }

    /// Uids of the broker pods on the node (the pool rules' brokers).
    pub fn broker_uids(&self, policy: &kpool_policy::Policy) -> BTreeSet<String> {
        self.pods
            .state()
            .iter()
            .filter(|p| {
                let pod = crate::pool::KubePod::new(p, &self.owners);
                policy.is_broker(&pod, &pod)
            })
            .filter_map(|p| p.metadata.uid.clone())
            .collect()
    }
}

/// Keeps `writer` current from a watch of `api`. Any error ends that watch: after a backoff
/// a new one lists from scratch, which both repairs the cache (objects deleted meanwhile
/// go) and proves contact again.
async fn follow<K>(
    api: kube::Api<K>,
    config: watcher::Config,
    mut writer: reflector::store::Writer<K>,
    health: WatchHealth,
    what: &'static str,
    node: String,
) where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let mut retry = crate::backoff::Backoff::new(FIRST_RETRY, MAX_RETRY);
    loop {
        let mut events = watcher(api.clone(), config.clone()).boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => {
                    if matches!(
                        event,
                        watcher::Event::InitDone
                            | watcher::Event::Apply(_)
                            | watcher::Event::Delete(_)
                    ) {
                        if health.outage(Instant::now()).is_some() {
                            tracing::info!(%node, what, "watch back in contact with the API server");
                        }
                        health.ok();
                        retry.reset();
                    }
                    writer.apply_watcher_event(&event);
                }
                Err(e) => {
                    health.failed(Instant::now(), e.to_string());
                    tracing::warn!(error = %e, %node, what, "watch error; the cache keeps its last state and the watch starts over after a backoff");
                    break;
                }
            }
        }
        let delay = retry.next();
        tracing::debug!(%node, what, retry_in_ms = delay.as_millis(), "restarting the watch");
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_runs_from_the_first_failure_until_contact() {
        let h = WatchHealth::default();
        let t0 = Instant::now();
        assert_eq!(h.outage(t0), None, "in contact until a failure");
        h.failed(t0, "connection refused".into());
        h.failed(t0 + Duration::from_secs(2), "timed out".into());
        assert_eq!(
            h.outage(t0 + Duration::from_secs(5)),
            Some(Outage {
                duration: Duration::from_secs(5),
                last_error: "timed out".into(),
                failures: 2,
            })
        );
        h.ok();
        assert_eq!(h.outage(t0 + Duration::from_secs(6)), None);
        h.failed(t0 + Duration::from_secs(7), "refused".into());
        let o = h
            .outage(t0 + Duration::from_secs(8))
            .expect("failing again");
        assert_eq!((o.duration, o.failures), (Duration::from_secs(1), 1));
    }
}
