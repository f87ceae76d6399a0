//! The pool's rules, in one place: is this pod a broker, and may this non-broker pod use
//! the pool? The webhook's injection engine and guard, the agent's guard, its node view and
//! its pod → broker mapping all ask here, each with what it can prove.
//!
//! A pod's own fields are written by whoever creates it, so nothing a pod says about itself
//! is trusted alone:
//! - **Brokers** carry `brokers.selector`'s labels *and* live in one of
//!   `brokers.namespaces`; where ownership can be checked (the agent, against the API), the
//!   pod's controller must be a real `apps/v1` StatefulSet with that uid. A labelled pod
//!   anywhere else is foreign.
//! - **DaemonSet pods** are exempt only through a *controller* reference to an `apps/v1`
//!   DaemonSet that is real: created by the DaemonSet controller (the webhook sees the
//!   authenticated creator), or a DaemonSet the agent can read with that uid.
//! - **Mirror (static) pods** are exempt only with the kubelet's mirror annotation and a
//!   Node owner naming the node the pod runs on (created, at admission, by that node).
//! - Pods of `guard.allowNamespaces` or `guard.allowServiceAccounts` are exempt by policy.

use std::fmt;

use crate::Policy;
use crate::identity::{BrokerIdentity, IdentityError, OrdinalError, POD_INDEX_LABEL, ordinal_of};

/// The kubelet's annotation on the API object of a static pod.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// A controller (or other) owner reference, as the pod states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnerRef<'a> {
    pub api_version: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
}

/// What the pool rules read of a pod, whatever form the caller holds it in.
pub trait PoolPod {
    /// The pod's namespace (the request's, at admission).
    fn namespace(&self) -> &str;
    fn label(&self, key: &str) -> Option<&str>;
    fn annotation(&self, key: &str) -> Option<&str>;
    /// The owner reference marked `controller: true`, if any.
    fn controller(&self) -> Option<OwnerRef<'_>>;
    /// `metadata.name` (may be empty at admission, with `generateName`).
    fn name(&self) -> &str;
    /// `spec.nodeName`, once bound.
    fn node_name(&self) -> Option<&str>;
    /// `spec.serviceAccountName` (empty means `default`).
    fn service_account(&self) -> &str;
}

/// What the caller can prove beyond the pod's own fields.
pub trait Evidence {
    /// The authenticated user creating the pod, where known (an admission CREATE).
    fn creator(&self) -> Option<&str> {
        None
    }

    /// Whether `owner` (in `namespace`) exists with that uid: `Some` once checked against
    /// the API, `None` where it cannot be checked (admission, an API outage).
    fn owner_exists(&self, namespace: &str, owner: &OwnerRef<'_>) -> Option<bool> {
        let _ = (namespace, owner);
        None
    }

    /// True where owners are checked against the API: then a broker must have a
    /// StatefulSet controller at all.
    fn checks_owners(&self) -> bool {
        false
    }
}

/// Proves nothing: offline injection, and tests of the structural rules.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEvidence;

impl Evidence for NoEvidence {}

/// An admission request: the authenticated user, on CREATE.
#[derive(Debug, Clone, Copy)]
pub struct Admission<'a> {
    pub creator: Option<&'a str>,
}

impl Evidence for Admission<'_> {
    fn creator(&self) -> Option<&str> {
        self.creator
    }
}

/// Why a pod is not a broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotBroker {
    /// A selector label is missing or has another value.
    Label {
        label: String,
        want: String,
        found: Option<String>,
    },
    /// It carries the labels outside `brokers.namespaces`.
    Namespace {
        namespace: String,
        allowed: Vec<String>,
    },
    /// It carries the labels, but its controller is not a real StatefulSet.
    Owner { detail: String },
}

impl NotBroker {
    /// A stable, low-cardinality code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Label { .. } => "not-a-broker",
            Self::Namespace { .. } => "broker-labels-outside-broker-namespaces",
            Self::Owner { .. } => "broker-labels-without-statefulset",
        }
    }

    /// True when the pod claims to be a broker (carries the labels) but is not one.
    pub fn is_impostor(&self) -> bool {
        !matches!(self, Self::Label { .. })
    }
}

impl fmt::Display for NotBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Label {
                label,
                want,
                found: None,
            } => write!(
                f,
                "not a broker: no label {label}={want} (brokers.selector)"
            ),
            Self::Label {
                label,
                want,
                found: Some(v),
            } => write!(
                f,
                "not a broker: label {label}={v:?}, brokers.selector wants {want:?}"
            ),
            Self::Namespace { namespace, allowed } if namespace.is_empty() => write!(
                f,
                "not a broker: carries the brokers.selector labels but no namespace is known, and brokers live only in brokers.namespaces {allowed:?}"
            ),
            Self::Namespace { namespace, allowed } => write!(
                f,
                "not a broker: carries the brokers.selector labels in namespace {namespace:?}, but brokers live only in brokers.namespaces {allowed:?}"
            ),
            Self::Owner { detail } => write!(
                f,
                "not a broker: carries the brokers.selector labels but {detail}"
            ),
        }
    }
}

/// Why a non-broker pod may use the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exemption {
    DaemonSet { name: String },
    MirrorPod { node: String },
    AllowedNamespace(String),
    AllowedServiceAccount(String),
}

impl Exemption {
    /// A stable, low-cardinality code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::DaemonSet { .. } => "daemonset",
            Self::MirrorPod { .. } => "mirror-pod",
            Self::AllowedNamespace(_) => "allowed-namespace",
            Self::AllowedServiceAccount(_) => "allowed-service-account",
        }
    }
}

impl fmt::Display for Exemption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DaemonSet { name } => write!(f, "owned by DaemonSet {name}"),
            Self::MirrorPod { node } => write!(f, "a mirror pod of node {node}"),
            Self::AllowedNamespace(ns) => write!(f, "namespace {ns} is in guard.allowNamespaces"),
            Self::AllowedServiceAccount(sa) => {
                write!(f, "service account {sa} is in guard.allowServiceAccounts")
            }
        }
    }
}

/// The sentence that ends every refusal: who may use the pool.
pub const WHO_MAY_USE_THE_POOL: &str = "only brokers (brokers.selector in brokers.namespaces), DaemonSet pods, mirror pods and pods of guard.allowNamespaces or guard.allowServiceAccounts may use the Kafka pool";

impl Policy {
    /// Is `pod` a broker? Labels, namespace and, where `evidence` can tell, a real
    /// StatefulSet as controller.
    pub fn broker_check(
        &self,
        pod: &impl PoolPod,
        evidence: &impl Evidence,
    ) -> Result<(), NotBroker> {
        let brokers = &self.spec().brokers;
        for (label, want) in &brokers.selector {
            let found = pod.label(label);
            if found != Some(want.as_str()) {
                return Err(NotBroker::Label {
                    label: label.clone(),
                    want: want.clone(),
                    found: found.map(str::to_owned),
                });
            }
        }
        let namespace = pod.namespace();
        if !brokers.namespaces.iter().any(|n| n == namespace) {
            return Err(NotBroker::Namespace {
                namespace: namespace.to_owned(),
                allowed: brokers.namespaces.clone(),
            });
        }
        match pod.controller() {
            Some(owner)
                if owner.api_version == "apps/v1"
                    && owner.kind == "StatefulSet"
                    && evidence.owner_exists(namespace, &owner) == Some(false) =>
            {
                return Err(NotBroker::Owner {
                    detail: format!(
                        "its controller StatefulSet {namespace}/{} (uid {}) does not exist",
                        owner.name, owner.uid
                    ),
                });
            }
            Some(owner) if owner.api_version == "apps/v1" && owner.kind == "StatefulSet" => {}
            // Where ownership can be checked, a broker belongs to a StatefulSet. At
            // admission it cannot (the pod may be created by hand in a broker namespace,
            // which needs rights there already); the agent checks it on the node.
            other if evidence.checks_owners() => {
                return Err(NotBroker::Owner {
                    detail: match other {
                        None => "has no controller (brokers are StatefulSet pods)".to_owned(),
                        Some(o) => format!(
                            "its controller is {} {} {}, not an apps/v1 StatefulSet",
                            o.api_version, o.kind, o.name
                        ),
                    },
                });
            }
            _ => {}
        }
        Ok(())
    }

    /// Is `pod` a broker? (See [`Policy::broker_check`].)
    pub fn is_broker(&self, pod: &impl PoolPod, evidence: &impl Evidence) -> bool {
        self.broker_check(pod, evidence).is_ok()
    }

    /// May this non-broker `pod` use the pool, and why? `None`: it may not.
    pub fn pool_exemption(
        &self,
        pod: &impl PoolPod,
        evidence: &impl Evidence,
    ) -> Option<Exemption> {
        let guard = &self.spec().guard;
        let namespace = pod.namespace();
        if let Some(owner) = pod.controller() {
            if owner.api_version == "apps/v1"
                && owner.kind == "DaemonSet"
                && evidence
                    .creator()
                    .is_none_or(|c| c == guard.daemon_set_controller)
                && evidence.owner_exists(namespace, &owner) != Some(false)
            {
                return Some(Exemption::DaemonSet {
                    name: format!("{namespace}/{}", owner.name),
                });
            }
            if owner.api_version == "v1"
                && owner.kind == "Node"
                && pod.annotation(MIRROR_ANNOTATION).is_some()
                && pod.node_name() == Some(owner.name)
                && evidence
                    .creator()
                    .is_none_or(|c| c.strip_prefix("system:node:") == Some(owner.name))
            {
                return Some(Exemption::MirrorPod {
                    node: owner.name.to_owned(),
                });
            }
        }
        if guard.allow_namespaces.iter().any(|n| n == namespace) {
            return Some(Exemption::AllowedNamespace(namespace.to_owned()));
        }
        let sa = match pod.service_account() {
            "" => "default",
            sa => sa,
        };
        let qualified = format!("{namespace}/{sa}");
        if guard.allow_service_accounts.contains(&qualified) {
            return Some(Exemption::AllowedServiceAccount(qualified));
        }
        None
    }

    /// A broker pod's ordinal (the pod-index label, else its name's suffix), and from it
    /// its identity: broker id, zone, rack, port.
    pub fn broker_identity<'a>(
        &'a self,
        pod: &'a impl PoolPod,
    ) -> Result<BrokerIdentity<'a>, BrokerIdentityError> {
        let ordinal = ordinal_of(pod.label(POD_INDEX_LABEL), Some(pod.name()), None)
            .map_err(BrokerIdentityError::Ordinal)?;
        self.identity(pod.name(), pod.namespace(), ordinal)
            .map_err(BrokerIdentityError::Identity)
    }
}

/// Why a broker pod has no identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerIdentityError {
    #[error("{0}")]
    Ordinal(OrdinalError),
    #[error("{0}")]
    Identity(IdentityError),
}
