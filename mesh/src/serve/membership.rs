//! Who the brokers are and where their sidecars are reached, turned into snapshots.
//!
//! Each round: the broker ids from Kafka Metadata (the agent's Kafka client; without
//! `--kafka-bootstrap`, the pinned ids), each broker's route from the policies
//! ([`crate::client::routes`], the same rules as the static bootstrap), its endpoint from a
//! pin (`--endpoint`, `--endpoints-file`) or by resolving its INTERNAL host name (the
//! control plane resolves, not Envoy: EDS carries addresses, and a pod's new IP is pushed
//! at the next round, not after a DNS TTL). A snapshot that differs from the served one is
//! published, with one audit line.
//!
//! Kafka unreachable before any answer: nothing is published (not ready), retried with
//! backoff. Unreachable later: the last broker set is kept and the snapshot reported stale
//! (metric and log), while pins and DNS still apply.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kpool_agent::backoff::Backoff;
use kpool_agent::kafka::KafkaClient;
use kpool_policy::Policy;
use serde_json::json;
use tokio::sync::{Notify, watch};

use crate::client::{self, ClientOptions, Endpoint, parse_endpoint_flag};
use crate::serve::metrics::MeshMetrics;
use crate::serve::pods::{NoPods, PodAddresses};
use crate::xds::{Member, ResourceType, Snapshot};

/// How long one host name may take to resolve.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the endpoints file is checked for a change.
pub const FILE_CHECK: Duration = Duration::from_millis(200);
/// The largest endpoints file read.
pub const MAX_ENDPOINTS_FILE: u64 = 1024 * 1024;

/// Where audit lines go (stdout in the binary, a buffer in tests).
pub type AuditSink = Arc<Mutex<dyn Write + Send>>;

/// How membership is followed.
#[derive(Debug, Clone)]
pub struct MembershipOptions {
    /// The pool policies of the Kubernetes clusters the brokers run in.
    pub policies: Vec<Policy>,
    /// The route template: StatefulSet, namespace and listener (brokers and endpoints are
    /// filled in per round).
    pub routes: ClientOptions,
    /// Where the client sidecars read their SDS files.
    pub config_dir: String,
    /// Endpoints pinned on the command line.
    pub pins: BTreeMap<i32, Endpoint>,
    /// Endpoints pinned in a file (`ID=HOST:PORT` lines), re-read when it changes; its
    /// entries override the command line's.
    pub endpoints_file: Option<PathBuf>,
    /// Between two Kafka polls (and DNS resolutions).
    pub poll_interval: Duration,
    /// Backoff of a failing Kafka poll: from `initial` doubling to `max`.
    pub backoff: (Duration, Duration),
    /// The policy `cluster` whose broker pods the Kubernetes API of this process shows:
    /// their addresses come from the pods ([`crate::serve::pods`]), the other brokers'
    /// from DNS.
    pub local_cluster: Option<String>,
}

/// Parses an endpoints file: `ID=HOST:PORT` per line; blank lines and `#` comments are
/// skipped. Errors name the line.
pub fn parse_endpoints_file(text: &str) -> Result<BTreeMap<i32, Endpoint>, String> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let (id, e) = parse_endpoint_flag(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        if out.insert(id, e).is_some() {
            return Err(format!("line {}: broker {id} is pinned twice", i + 1));
        }
    }
    Ok(out)
}

/// The membership loop's state.
pub struct Membership {
    options: MembershipOptions,
    kafka: Option<KafkaClient>,
    publish: watch::Sender<Option<Arc<Snapshot>>>,
    metrics: Arc<MeshMetrics>,
    audit: AuditSink,
    /// The broker ids of the last good Kafka answer.
    ids: Option<Vec<i32>>,
    file_pins: BTreeMap<i32, Endpoint>,
    file_text: Option<String>,
    stale: bool,
    generation: u64,
    pods: Arc<dyn PodAddresses>,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("ids", &self.ids)
            .field("stale", &self.stale)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl Membership {
    pub fn new(
        options: MembershipOptions,
        kafka: Option<KafkaClient>,
        publish: watch::Sender<Option<Arc<Snapshot>>>,
        metrics: Arc<MeshMetrics>,
        audit: AuditSink,
    ) -> Self {
        Self {
            options,
            kafka,
            publish,
            metrics,
            audit,
            ids: None,
            file_pins: BTreeMap::new(),
            file_text: None,
            stale: false,
            generation: 0,
            pods: Arc::new(NoPods),
            wake: Arc::new(Notify::new()),
        }
    }

    /// Takes the addresses of this Kubernetes cluster's broker pods from `pods`, with a
    /// round as soon as `wake` is notified (a pod's address changed).
    pub fn with_pods(mut self, pods: Arc<dyn PodAddresses>, wake: Arc<Notify>) -> Self {
        self.pods = pods;
        self.wake = wake;
        self
    }

    /// Follows membership until `stop` turns true; the publisher is dropped on return, which
    /// ends every ADS stream.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let (initial, max) = self.options.backoff;
        let mut backoff = Backoff::new(initial, max);
        loop {
            let delay = match self.round(true).await {
                Ok(()) => {
                    backoff.reset();
                    self.options.poll_interval
                }
                Err(()) => backoff.next(),
            };
            // Between polls, a change of the endpoints file is a membership change too.
            let deadline = tokio::time::Instant::now() + delay;
            loop {
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    break;
                }
                let wait = FILE_CHECK.min(deadline - now);
                let wake = self.wake.clone();
                let woken = tokio::select! {
                    stopping = kpool_agent::backoff::sleep_or_stop(wait, &mut stop) => {
                        if stopping {
                            return;
                        }
                        false
                    }
                    () = wake.notified() => true,
                };
                if self.ids.is_some() && (self.reload_file() || woken) {
                    let _ = self.round(false).await;
                }
            }
        }
    }

    /// Re-reads the endpoints file; whether its pins changed.
    fn reload_file(&mut self) -> bool {
        let Some(path) = &self.options.endpoints_file else {
            return false;
        };
        let text = match read_bounded(path) {
            Ok(t) => t,
            Err(e) => {
                if self.file_text.is_some() {
                    tracing::warn!(file = %path.display(), error = %e, "cannot read the endpoints file; keeping its last pins");
                }
                self.file_text = None;
                return false;
            }
        };
        if self.file_text.as_deref() == Some(text.as_str()) {
            return false;
        }
        self.file_text = Some(text.clone());
        match parse_endpoints_file(&text) {
            Ok(pins) if pins == self.file_pins => false,
            Ok(pins) => {
                tracing::info!(file = %path.display(), pins = pins.len(), "endpoints file changed");
                self.file_pins = pins;
                true
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "endpoints file refused; keeping its last pins");
                false
            }
        }
    }

    /// One round: poll Kafka when `poll`, then build and publish the snapshot if it
    /// changed. `Err` while no broker set is known yet (not ready).
    pub async fn round(&mut self, poll: bool) -> Result<(), ()> {
        self.reload_file();
        if self.kafka.is_none() {
            // No Kafka: the pinned brokers are the membership.
            let mut ids: BTreeSet<i32> = self.options.pins.keys().copied().collect();
            ids.extend(self.file_pins.keys().copied());
            self.ids = Some(ids.into_iter().collect());
        } else if poll {
            self.poll_kafka().await;
        }
        let Some(ids) = self.ids.clone() else {
            return Err(());
        };
        let mut pins = self.options.pins.clone();
        pins.extend(self.file_pins.clone());
        let (routes, skipped) =
            routes_for(&self.options.policies, &self.options.routes, &ids, &pins);
        for (id, reason) in &skipped {
            tracing::warn!(broker = id, reason, "broker not served");
        }
        let mut members = Vec::with_capacity(routes.len());
        for route in routes {
            let pod = if pins.contains_key(&route.broker_id) {
                None
            } else {
                self.local_pod_ip(route.broker_id)
            };
            let addresses = match pod {
                Some(ip) => vec![SocketAddr::new(ip, route.upstream_port)],
                None => resolve(&route).await,
            };
            members.push(Member { route, addresses });
        }
        let snapshot = match Snapshot::build(members, &self.options.config_dir) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "no snapshot from this membership; serving the previous one");
                return Ok(());
            }
        };
        let previous = self.publish.borrow().clone();
        if previous.as_deref() == Some(&snapshot) {
            return Ok(());
        }
        self.generation += 1;
        let snapshot = Arc::new(snapshot);
        self.audit_change(previous.as_deref(), &snapshot, &skipped);
        self.metrics
            .published(self.generation, snapshot.members().len());
        tracing::info!(
            generation = self.generation,
            brokers = snapshot.members().len(),
            versions = snapshot.versions(),
            "snapshot published"
        );
        self.publish.send_replace(Some(snapshot));
        Ok(())
    }

    /// The address of broker `id`'s pod, when its policy is this Kubernetes cluster's and
    /// the pod runs with an IP.
    fn local_pod_ip(&self, id: i32) -> Option<IpAddr> {
        let local = self.options.local_cluster.as_deref()?;
        let (namespace, pod) = broker_pod(&self.options.policies, &self.options.routes, id, local)?;
        self.pods.pod_ip(&namespace, &pod)
    }

    async fn poll_kafka(&mut self) {
        let Some(kafka) = &mut self.kafka else {
            return;
        };
        match kafka.snapshot().await {
            Ok(s) => {
                let mut ids: Vec<i32> = s.brokers.iter().map(|b| b.id).collect();
                ids.sort_unstable();
                ids.dedup();
                if self.stale {
                    tracing::info!(
                        brokers = ids.len(),
                        "Kafka answers again; membership is live"
                    );
                }
                self.stale = false;
                self.ids = Some(ids);
            }
            Err(e) => {
                self.metrics.kafka_poll_failed();
                if self.ids.is_some() {
                    if !self.stale {
                        tracing::warn!(error = %e, "Kafka unreachable; serving the last known brokers (stale)");
                    }
                    self.stale = true;
                } else {
                    tracing::warn!(error = %e, "Kafka unreachable; no broker set yet (not ready)");
                }
            }
        }
        self.metrics.set_stale(self.stale);
    }

    fn audit_change(
        &self,
        previous: Option<&Snapshot>,
        next: &Snapshot,
        skipped: &[(i32, String)],
    ) {
        let before: BTreeMap<i32, &Member> = previous
            .map(|p| p.members().iter().map(|m| (m.route.broker_id, m)).collect())
            .unwrap_or_default();
        let after: BTreeMap<i32, &Member> = next
            .members()
            .iter()
            .map(|m| (m.route.broker_id, m))
            .collect();
        let added: Vec<i32> = after
            .keys()
            .filter(|id| !before.contains_key(id))
            .copied()
            .collect();
        let removed: Vec<i32> = before
            .keys()
            .filter(|id| !after.contains_key(id))
            .copied()
            .collect();
        let moved: Vec<serde_json::Value> = after
            .iter()
            .filter_map(|(id, m)| {
                let b = before.get(id)?;
                (b.addresses != m.addresses || b.route != m.route).then(|| {
                    json!({
                        "broker": id,
                        "from": b.addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        "to": m.addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    })
                })
            })
            .collect();
        let versions: serde_json::Map<String, serde_json::Value> = ResourceType::ALL
            .iter()
            .map(|t| (t.as_str().to_owned(), json!(next.version(*t))))
            .collect();
        let line = json!({
            "time": kpool_cli::clock::now_rfc3339(),
            "component": "mesh",
            "decision": "membership-change",
            "generation": self.generation,
            "brokers": after.keys().collect::<Vec<_>>(),
            "added": added,
            "removed": removed,
            "moved": moved,
            "skipped": skipped.iter().map(|(id, r)| json!({"broker": id, "reason": r})).collect::<Vec<_>>(),
            "stale": self.stale,
            "versions": versions,
        });
        let mut out = self.audit.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
            tracing::error!(error = %e, "cannot write the audit line");
        }
    }
}

/// The route of every broker in `ids` that a policy holds; the others, with the reason.
pub fn routes_for(
    policies: &[Policy],
    template: &ClientOptions,
    ids: &[i32],
    pins: &BTreeMap<i32, Endpoint>,
) -> (Vec<client::BrokerRoute>, Vec<(i32, String)>) {
    let mut routes = Vec::new();
    let mut skipped = Vec::new();
    for &id in ids {
        let mut options = template.clone();
        options.brokers = vec![id];
        options.endpoints = pins.get(&id).map(|e| (id, e.clone())).into_iter().collect();
        match client::routes(policies, &options) {
            Ok(mut r) if r.len() == 1 => routes.append(&mut r),
            Ok(r) => skipped.push((id, format!("expected one route, found {}", r.len()))),
            Err(e) => skipped.push((id, e.to_string())),
        }
    }
    (routes, skipped)
}

/// The namespace and name of broker `id`'s pod, when the policy holding it is of
/// Kubernetes cluster `local`: pod `<statefulset>-<id - idBase>` in `--namespace` or the
/// policy's only broker namespace.
pub fn broker_pod(
    policies: &[Policy],
    template: &ClientOptions,
    id: i32,
    local: &str,
) -> Option<(String, String)> {
    let policy = policies.iter().find(|p| {
        u64::try_from(id)
            .ok()
            .zip(kpool_policy::mesh::id_range(p.spec()))
            .is_some_and(|(id, r)| r.contains(&id))
    })?;
    let spec = policy.spec();
    if spec.cluster != local {
        return None;
    }
    let ordinal = i64::from(id) - i64::from(spec.brokers.id_base);
    let namespace = match (&template.namespace, spec.brokers.namespaces.as_slice()) {
        (Some(ns), _) => ns.clone(),
        (None, [only]) => only.clone(),
        _ => return None,
    };
    Some((namespace, format!("{}-{ordinal}", template.statefulset)))
}

/// The addresses of a route's upstream: itself when an IP, else its host name resolved
/// (none when it does not resolve in time: the cluster stays, with no endpoint).
pub async fn resolve(route: &client::BrokerRoute) -> Vec<SocketAddr> {
    if let Ok(ip) = route.upstream_host.parse::<IpAddr>() {
        return vec![SocketAddr::new(ip, route.upstream_port)];
    }
    let target = (route.upstream_host.as_str(), route.upstream_port);
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(target)).await {
        Ok(Ok(addrs)) => {
            let mut v: Vec<SocketAddr> = addrs.collect();
            v.sort();
            v.dedup();
            v
        }
        Ok(Err(e)) => {
            tracing::warn!(broker = route.broker_id, host = route.upstream_host, error = %e, "broker host does not resolve; no endpoint");
            Vec::new()
        }
        Err(_) => {
            tracing::warn!(broker = route.broker_id, host = route.upstream_host, timeout = ?RESOLVE_TIMEOUT, "broker host did not resolve in time; no endpoint");
            Vec::new()
        }
    }
}

fn read_bounded(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_ENDPOINTS_FILE)
        .read_to_string(&mut text)?;
    Ok(text)
}
