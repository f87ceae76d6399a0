//! The guard's decisions, pure: the pods on this node + this Node + the policy in,
//! violations and the actions to take out. No I/O and no clock of its own (time is passed
//! in), so every rule is a unit test.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

use kpool_policy::Policy;
use kpool_policy::model::Mode;
use kpool_policy::pool::{Evidence, OwnerRef, PoolPod, WHO_MAY_USE_THE_POOL};

/// What the guard needs to know about one pod on the node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodFacts {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// `metadata.creationTimestamp`, unix seconds (0 when unknown).
    pub created_unix: i64,
    /// The owner reference marked `controller: true`.
    pub controller: Option<Controller>,
    /// Whether that controller exists with its uid, as the agent last read it from the API
    /// (`None`: not read yet, or unreadable; see [`crate::pool`]).
    pub controller_exists: Option<bool>,
    /// `spec.nodeName`.
    pub node_name: String,
    /// `spec.serviceAccountName` (empty means `default`).
    pub service_account: String,
    /// Being deleted, or finished (Succeeded/Failed): it no longer occupies the node.
    pub gone: bool,
}

/// A controller owner reference.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Controller {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
}

impl PoolPod for PodFacts {
    fn namespace(&self) -> &str {
        &self.namespace
    }

    fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).map(String::as_str)
    }

    fn controller(&self) -> Option<OwnerRef<'_>> {
        self.controller.as_ref().map(|c| OwnerRef {
            api_version: &c.api_version,
            kind: &c.kind,
            name: &c.name,
            uid: &c.uid,
        })
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn node_name(&self) -> Option<&str> {
        Some(self.node_name.as_str()).filter(|n| !n.is_empty())
    }

    fn service_account(&self) -> &str {
        &self.service_account
    }
}

/// The agent reads pods from the API and their controllers too.
impl Evidence for PodFacts {
    fn owner_exists(&self, _namespace: &str, _owner: &OwnerRef<'_>) -> Option<bool> {
        self.controller_exists
    }

    fn checks_owners(&self) -> bool {
        true
    }
}

impl PodFacts {
    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// What the guard needs to know about this Node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Taints as (key, value, effect).
    pub taints: Vec<(String, String, String)>,
}

/// The kinds of violation, each with its Event reason and metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A second broker on a node that already runs one (the newer pod is the violator).
    SecondBroker,
    /// A pod on a pool node that is neither a broker, nor a DaemonSet's, nor allow-listed.
    ForeignPod,
    /// The node lacks the pool label or taint while it runs brokers.
    NodeNotCompliant,
    /// A broker whose zone label differs from its node's zone.
    RackDrift,
}

impl Kind {
    /// Every kind, for metrics that must show zeros.
    pub const ALL: [Kind; 4] = [
        Kind::SecondBroker,
        Kind::ForeignPod,
        Kind::NodeNotCompliant,
        Kind::RackDrift,
    ];

    /// The Kubernetes Event reason.
    pub fn event_reason(self) -> &'static str {
        match self {
            Self::SecondBroker => "KpoolSecondBroker",
            Self::ForeignPod => "KpoolForeignPod",
            Self::NodeNotCompliant => "KpoolNodeNotCompliant",
            Self::RackDrift => "KpoolRackDrift",
        }
    }

    /// The stable code (audit `reasonCode`, metric label).
    pub fn code(self) -> &'static str {
        match self {
            Self::SecondBroker => "second-broker",
            Self::ForeignPod => "foreign-pod",
            Self::NodeNotCompliant => "node-not-compliant",
            Self::RackDrift => "rack-drift",
        }
    }

    /// Whether enforce mode evicts the pod. Node compliance and rack drift are reported
    /// only: evicting the broker would not fix the node, and a broker's zone is pinned by
    /// its volume, so moving it is an operator's call.
    pub fn evicts(self) -> bool {
        matches!(self, Self::SecondBroker | Self::ForeignPod)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// What a violation is about: a pod, or the Node itself (node compliance with no broker
/// on the node to carry the Event).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Pod {
        namespace: String,
        name: String,
        uid: String,
    },
    Node {
        name: String,
    },
    /// A Lease (racks healing records its reassignments on Lease `kpool-racks`).
    Lease {
        namespace: String,
        name: String,
    },
}

/// One violation found on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub kind: Kind,
    pub target: Target,
    /// Why, in words (Event message and audit reason).
    pub message: String,
}

/// What to do about a violation now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Evict the pod through the Eviction API (enforce mode, evicting kinds).
    Evict,
    /// Event + audit line + metric, nothing else (audit mode, or a report-only kind).
    Report,
}

/// A violation with the action due for it in this round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub violation: Violation,
    pub action: Action,
}

/// Finds every violation on the node. Pods that are gone do not count. The oldest broker
/// (creation time, then namespace/name so ties are stable) is never a violator.
pub fn violations(policy: &Policy, node: &NodeFacts, pods: &[PodFacts]) -> Vec<Violation> {
    let spec = policy.spec();
    let mut out = Vec::new();
    let live: Vec<&PodFacts> = pods.iter().filter(|p| !p.gone).collect();
    let is_broker = |p: &PodFacts| policy.is_broker(p, p);
    let mut brokers: Vec<&PodFacts> = live.iter().copied().filter(|p| is_broker(p)).collect();
    brokers.sort_by(|a, b| {
        (a.created_unix, &a.namespace, &a.name).cmp(&(b.created_unix, &b.namespace, &b.name))
    });

    // One broker per node: everyone after the oldest.
    if let Some((first, rest)) = brokers.split_first() {
        for p in rest {
            out.push(Violation {
                kind: Kind::SecondBroker,
                target: pod_target(p),
                message: format!(
                    "broker pod {} is a second broker on node {}: {} runs here since earlier; one broker per node",
                    p.key(),
                    node.name,
                    first.key()
                ),
            });
        }
    }

    // Node compliance.
    let label = &spec.pool.node_label;
    let has_label = node.labels.get(&label.key) == Some(&label.value);
    let taint = &spec.pool.taint;
    let want_value = taint.value.as_deref().unwrap_or("");
    let has_taint = node
        .taints
        .iter()
        .any(|(k, v, e)| *k == taint.key && v == want_value && e == taint.effect.as_str());
    let pool_node = has_label || has_taint;
    let mut missing = Vec::new();
    if !has_label {
        missing.push(format!("label {}={}", label.key, label.value));
    }
    if !has_taint {
        missing.push(format!("taint {taint}"));
    }
    if !missing.is_empty() {
        let message = format!(
            "node {} is not a compliant Kafka pool node: missing {}",
            node.name,
            missing.join(" and ")
        );
        if brokers.is_empty() {
            out.push(Violation {
                kind: Kind::NodeNotCompliant,
                target: Target::Node {
                    name: node.name.clone(),
                },
                message,
            });
        } else {
            for p in &brokers {
                out.push(Violation {
                    kind: Kind::NodeNotCompliant,
                    target: pod_target(p),
                    message: message.clone(),
                });
            }
        }
    }

    // Foreign pods: only on a node that is (at least partly) marked as pool, so an agent
    // accidentally scheduled elsewhere never evicts ordinary workloads.
    if pool_node {
        for p in live.iter().filter(|p| !is_broker(p)) {
            if let Some(why) = foreign(policy, p) {
                out.push(Violation {
                    kind: Kind::ForeignPod,
                    target: pod_target(p),
                    message: format!(
                        "pod {} runs on Kafka pool node {}: {why}",
                        p.key(),
                        node.name
                    ),
                });
            }
        }
    }

    // Rack drift: the broker's zone (its label, else the zone its ordinal maps to) must be
    // the node's zone.
    if let Some(node_zone) = node.labels.get(&spec.pool.zone_label) {
        for p in &brokers {
            let Some(zone) = broker_zone(policy, p) else {
                continue;
            };
            if zone != node_zone.as_str() {
                out.push(Violation {
                    kind: Kind::RackDrift,
                    target: pod_target(p),
                    message: format!(
                        "broker pod {} belongs to zone {zone} but node {} is in zone {node_zone} ({})",
                        p.key(),
                        node.name,
                        spec.pool.zone_label
                    ),
                });
            }
        }
    }
    out
}

fn pod_target(p: &PodFacts) -> Target {
    Target::Pod {
        namespace: p.namespace.clone(),
        name: p.name.clone(),
        uid: p.uid.clone(),
    }
}

/// Why a non-broker pod may not be on the pool, or `None` when it may.
fn foreign(policy: &Policy, p: &PodFacts) -> Option<String> {
    if policy.pool_exemption(p, p).is_some() {
        return None;
    }
    let claim = match policy.broker_check(p, p) {
        Err(why) if why.is_impostor() => format!("{why}; "),
        _ => String::new(),
    };
    let sa = match p.service_account.as_str() {
        "" => "default",
        sa => sa,
    };
    let owner = match &p.controller {
        Some(c) => format!("controller {} {}", c.kind, c.name),
        None => "no controller".to_owned(),
    };
    Some(format!(
        "{claim}not exempt ({owner}, service account {}/{sa}): {WHO_MAY_USE_THE_POOL}",
        p.namespace
    ))
}

fn broker_zone<'a>(policy: &'a Policy, p: &'a PodFacts) -> Option<&'a str> {
    if let Some(z) = p.labels.get(kpool_policy::keys::ZONE_LABEL) {
        return Some(z.as_str());
    }
    policy.broker_identity(p).ok().map(|id| id.zone)
}

/// Remembers when each violation was last acted on, so a violator is acted on once per
/// window (no eviction loop, no Event storm) while it persists.
#[derive(Debug)]
pub struct Guard {
    window: Duration,
    last: HashMap<(Kind, Target), Instant>,
}

/// The default backoff window.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);

impl Guard {
    /// A guard acting on each violation at most once per `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            last: HashMap::new(),
        }
    }

    /// Decides what to do at `now` about `found` (from [`violations`]). Violations acted on
    /// within the window are left out; violations no longer found are forgotten, so a
    /// violator that returns later is acted on again and memory stays bounded by the node.
    pub fn decide(&mut self, mode: Mode, found: Vec<Violation>, now: Instant) -> Vec<Decision> {
        let current: std::collections::HashSet<(Kind, Target)> =
            found.iter().map(|v| (v.kind, v.target.clone())).collect();
        self.last.retain(|k, _| current.contains(k));
        let mut out = Vec::new();
        for v in found {
            let key = (v.kind, v.target.clone());
            let due = self
                .last
                .get(&key)
                .is_none_or(|t| now.saturating_duration_since(*t) >= self.window);
            if !due {
                continue;
            }
            self.last.insert(key, now);
            let action = if mode == Mode::Enforce && v.kind.evicts() {
                Action::Evict
            } else {
                Action::Report
            };
            out.push(Decision {
                violation: v,
                action,
            });
        }
        out
    }

    /// Violations currently remembered (acted on and still present).
    pub fn tracked(&self) -> usize {
        self.last.len()
    }
}

impl Default for Guard {
    fn default() -> Self {
        Self::new(DEFAULT_WINDOW)
    }
}
