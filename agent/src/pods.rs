//! Which broker a pod is, and its annotations (for the readiness override).

use std::sync::Arc;
use std::time::Instant;

use kpool_policy::{Policy, name_suffix_ordinal};

use crate::nodeview::{NodeView, Outage, WatchHealth};

/// What the agent needs to know about a broker pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub broker_id: i32,
    pub annotations: Vec<(String, String)>,
}

impl PodInfo {
    /// An annotation's value.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a pod cannot be mapped to a broker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("pod {namespace}/{pod}: {reason}")]
    NotABroker {
        namespace: String,
        pod: String,
        reason: String,
    },
}

/// Maps pods to brokers.
pub trait PodDirectory: Send + Sync + std::fmt::Debug {
    /// The broker behind pod `namespace/pod`.
    fn lookup(&self, namespace: &str, pod: &str) -> Result<PodInfo, LookupError>;

    /// How long the source of these answers has been out of contact, if it is (in a
    /// cluster: the Kubernetes API server behind the pod watch).
    fn outage(&self, _now: Instant) -> Option<Outage> {
        None
    }
}

/// No Kubernetes API: the broker id is `brokers.idBase` + the ordinal in the pod's name,
/// and there are no annotations (so no override).
#[derive(Debug)]
pub struct Standalone {
    policy: Arc<Policy>,
}

impl Standalone {
    /// A directory for `policy`.
    pub fn new(policy: Arc<Policy>) -> Self {
        Self { policy }
    }
}

impl PodDirectory for Standalone {
    fn lookup(&self, namespace: &str, pod: &str) -> Result<PodInfo, LookupError> {
        let err = |reason: String| LookupError::NotABroker {
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
            reason,
        };
        let ordinal = name_suffix_ordinal(pod).ok_or_else(|| {
            err("the name has no -N ordinal suffix (standalone mode maps pods by name)".to_owned())
        })?;
        let id = self
            .policy
            .identity(pod, namespace, ordinal)
            .map_err(|e| err(e.to_string()))?;
        Ok(PodInfo {
            broker_id: id.broker_id,
            annotations: Vec::new(),
        })
    }
}

/// In a cluster: the broker pods on this node, from the node view's pod cache
/// ([`crate::nodeview`]). Lookups read the local cache, so the probe's path never waits on
/// the API server; the last known state keeps serving while the API server is unreachable,
/// and [`PodDirectory::outage`] says for how long.
#[derive(Debug, Clone)]
pub struct KubePods {
    store: kube::runtime::reflector::Store<k8s_openapi::api::core::v1::Pod>,
    health: WatchHealth,
    policy: Arc<Policy>,
    node: String,
    owners: crate::pool::Owners,
}

impl KubePods {
    /// A directory over the node view's pod cache and watch.
    pub fn from_view(view: &NodeView, policy: Arc<Policy>) -> Self {
        Self {
            store: view.pods.clone(),
            health: view.pods_health.clone(),
            policy,
            node: view.node_name.clone(),
            owners: view.owners.clone(),
        }
    }

    /// A directory over an existing store, always in contact (tests feed it watch events
    /// directly).
    pub fn from_store(
        store: kube::runtime::reflector::Store<k8s_openapi::api::core::v1::Pod>,
        node: &str,
        policy: Arc<Policy>,
    ) -> Self {
        Self {
            store,
            health: WatchHealth::default(),
            policy,
            node: node.to_owned(),
            owners: crate::pool::Owners::default(),
        }
    }

    /// The same directory, checking controllers against `owners` (as the node view does).
    pub fn with_owners(mut self, owners: crate::pool::Owners) -> Self {
        self.owners = owners;
        self
    }
}

impl PodDirectory for KubePods {
    fn outage(&self, now: Instant) -> Option<Outage> {
        self.health.outage(now)
    }

    fn lookup(&self, namespace: &str, pod: &str) -> Result<PodInfo, LookupError> {
        let err = |reason: String| LookupError::NotABroker {
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
            reason,
        };
        let key = kube::runtime::reflector::ObjectRef::new(pod).within(namespace);
        let Some(obj) = self.store.get(&key) else {
            return Err(err(format!(
                "not among the broker pods the agent sees on node {} (not a broker, another node, or the watch has not caught up)",
                self.node
            )));
        };
        let meta = &obj.metadata;
        // The store may hold every pod of the node (the guard's watch): only brokers answer.
        let view = crate::pool::KubePod::new(&obj, &self.owners);
        self.policy
            .broker_check(&view, &view)
            .map_err(|why| err(format!("runs on node {} but is {why}", self.node)))?;
        let id = self
            .policy
            .broker_identity(&view)
            .map_err(|e| err(e.to_string()))?;
        Ok(PodInfo {
            broker_id: id.broker_id,
            annotations: meta
                .annotations
                .as_ref()
                .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
        })
    }
}
