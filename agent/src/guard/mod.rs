//! The node guard: one broker per node, no foreign pods, a compliant node, no rack drift.
//!
//! - [`decide`]: the decisions, pure (facts in, violations and actions out);
//! - [`act`]: the Kubernetes calls (Eviction API, Events) and the audit line;
//! - [`watch`]: the guard round and the overhead sampler, looping over the node view
//!   ([`crate::nodeview`], where the watches of this node's pods and this Node and their
//!   reflector caches live).

pub mod act;
pub mod decide;
pub mod watch;

use k8s_openapi::api::core::v1::{Node, Pod};

pub use decide::{
    Action, Controller, Decision, Guard, Kind, NodeFacts, PodFacts, Target, Violation,
};

/// The facts the guard needs from a Pod object; `controller_exists` is what the agent has
/// read about its controller ([`crate::pool::Owners::known`]).
pub fn pod_facts(pod: &Pod, controller_exists: Option<bool>) -> PodFacts {
    let meta = &pod.metadata;
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    PodFacts {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        labels: meta.labels.clone().unwrap_or_default(),
        created_unix: meta
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or(0),
        annotations: meta.annotations.clone().unwrap_or_default(),
        controller: meta
            .owner_references
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|o| o.controller == Some(true))
            .map(|o| Controller {
                api_version: o.api_version.clone(),
                kind: o.kind.clone(),
                name: o.name.clone(),
                uid: o.uid.clone(),
            }),
        controller_exists,
        node_name: pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default(),
        service_account: pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        gone: meta.deletion_timestamp.is_some() || matches!(phase, Some("Succeeded" | "Failed")),
    }
}

/// The facts the guard needs from the Node object.
pub fn node_facts(node: &Node) -> NodeFacts {
    NodeFacts {
        name: node.metadata.name.clone().unwrap_or_default(),
        labels: node.metadata.labels.clone().unwrap_or_default(),
        taints: node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .map(|ts| {
                ts.iter()
                    .map(|t| {
                        (
                            t.key.clone(),
                            t.value.clone().unwrap_or_default(),
                            t.effect.clone(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}
