//! The injection engine: (policy, pod) → decision + JSON-patch operations.
//!
//! Pure: no I/O, no clock. Each piece ("ensure the toleration", "ensure the sidecar", ...)
//! looks at what the pod already has and emits operations only for what is missing, so
//! running the engine on its own output yields an empty patch. The pod is never
//! re-serialised: fields the engine does not know survive untouched.

mod identity;
pub mod patch;
pub mod pod;
mod probe;
mod scheduling;
mod sidecar;
mod status;

use std::fmt;
use std::sync::Arc;

use kpool_policy::{BrokerIdentity, IdentityError, OrdinalError, POD_INDEX_LABEL, Policy};
use serde_json::Value;

pub use patch::PatchOp;
pub use pod::{MAX_POD_ITEMS, PodError, PodView};
pub use status::{STATUS_ANNOTATION, Status};

/// At most this many required node selector terms get kpool's pool and zone merged in, one
/// or two operations each; a broker pod with more is denied with this number in the reason.
/// Real pods have one to a few terms; the bound keeps the patch proportionate (at most ~30 KB
/// of affinity operations) whatever a request holds.
pub const MAX_NODE_SELECTOR_TERMS: usize = 64;

/// At most this many duplicate env entries of the names kpool sets are removed from the
/// broker container, one operation each; a pod with more is denied naming this number.
pub const MAX_ENV_DUPLICATES: usize = 64;

/// The longest pod name Kubernetes accepts (a DNS subdomain). kpool renders the name into
/// the broker's env and the sidecar, so a longer one (which the API server rejects after
/// admission anyway) is denied rather than copied into the patch several times.
pub const MAX_POD_NAME_BYTES: usize = 253;

/// The longest namespace name Kubernetes accepts (a DNS label); rendered like the pod name.
pub const MAX_NAMESPACE_BYTES: usize = 63;

/// What the engine is looking at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A pod being created: everything is injected.
    Pod,
    /// A pod template (StatefulSet `spec.template`): only what does not depend on the
    /// pod's ordinal; the rest is filled in per pod at admission.
    Template,
}

/// Request context the pod itself may not carry.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Namespace of the request (the pod's own `metadata.namespace` may be empty at CREATE).
    pub namespace: Option<&'a str>,
    pub target: Target,
}

impl Context<'_> {
    /// A pod with no outside context.
    pub const POD: Context<'static> = Context {
        namespace: None,
        target: Target::Pod,
    };
    /// A template with no outside context.
    pub const TEMPLATE: Context<'static> = Context {
        namespace: None,
        target: Target::Template,
    };
}

/// The engine's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The patch makes the pod comply.
    Inject,
    /// The pod already complies; the patch is empty.
    AlreadyInjected,
    /// Not kpool's business; the patch is empty.
    Skip(SkipReason),
    /// The pod cannot be made to comply.
    Deny(DenyReason),
}

impl Decision {
    /// A stable, low-cardinality name (metrics label, audit field).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Inject => "inject",
            Self::AlreadyInjected => "already-injected",
            Self::Skip(_) => "skip",
            Self::Deny(_) => "deny",
        }
    }

    /// The reason, for skip and deny.
    pub fn reason(&self) -> Option<String> {
        match self {
            Self::Skip(r) => Some(r.to_string()),
            Self::Deny(r) => Some(r.to_string()),
            _ => None,
        }
    }
}

/// Why a pod is left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// Not a broker by the pool rules ([`kpool_policy::pool`]): a selector label missing
    /// or different, or the labels outside `brokers.namespaces`.
    NotABroker(kpool_policy::pool::NotBroker),
    /// It carries the opt-out annotation.
    OptedOut { annotation: String, value: String },
}

impl SkipReason {
    /// A stable, low-cardinality code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotABroker(why) => why.code(),
            Self::OptedOut { .. } => "opted-out",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotABroker(why) => why.fmt(f),
            Self::OptedOut { annotation, value } => {
                write!(f, "opted out by annotation {annotation}={value:?}")
            }
        }
    }
}

/// Why a broker pod cannot be made to comply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyReason {
    /// No ordinal, so no zone, rack or broker id.
    NoOrdinal(OrdinalError),
    /// The ordinal gives an impossible port or broker id.
    Identity(IdentityError),
    /// The pod has no container named `brokers.container`.
    NoBrokerContainer {
        expected: String,
        found: Vec<String>,
    },
    /// Something kpool injects already exists in the pod and was not put there by kpool.
    NameClash {
        what: &'static str,
        name: String,
        location: String,
        field: String,
    },
    /// The pod has no `spec`.
    NoSpec,
    /// More required node selector terms than kpool merges the pool and zone into.
    TooManyNodeSelectorTerms { found: usize, max: usize },
    /// More duplicates of kpool's env names in the broker container than kpool removes.
    TooManyEnvDuplicates {
        /// Where the first duplicate is (`spec.containers[0].env[3]`).
        location: String,
        /// Its name.
        name: String,
        duplicates: usize,
        max: usize,
    },
    /// A name longer than Kubernetes allows; kpool would render it into the patch.
    NameTooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
}

impl DenyReason {
    /// A stable, low-cardinality code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoOrdinal(_) => "no-ordinal",
            Self::Identity(_) => "identity-out-of-range",
            Self::NoBrokerContainer { .. } => "no-broker-container",
            Self::NameClash { .. } => "name-clash",
            Self::NoSpec => "no-spec",
            Self::TooManyNodeSelectorTerms { .. } => "too-many-node-selector-terms",
            Self::TooManyEnvDuplicates { .. } => "too-many-env-duplicates",
            Self::NameTooLong { .. } => "name-too-long",
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoOrdinal(e) => write!(f, "broker pod has {e}"),
            Self::Identity(e) => write!(f, "broker pod identity: {e}"),
            Self::NoBrokerContainer { expected, found } => write!(
                f,
                "broker pod has no container named {expected:?} (brokers.container); containers: [{}]",
                found.join(", ")
            ),
            Self::NameClash {
                what,
                name,
                location,
                field,
            } => write!(
                f,
                "{what} {name:?} already exists at {location} and was not injected by kpool; rename it or change {field}"
            ),
            Self::NoSpec => write!(f, "broker pod has no spec"),
            Self::TooManyNodeSelectorTerms { found, max } => write!(
                f,
                "broker pod has {found} required node selector terms at spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms; kpool ANDs the pool and zone into each term and accepts at most {max}: merge the terms"
            ),
            Self::TooManyEnvDuplicates {
                location,
                name,
                duplicates,
                max,
            } => write!(
                f,
                "broker container has {duplicates} duplicate entries of env names kpool sets, the first at {location} ({name:?}); kpool removes at most {max}: set each name once"
            ),
            Self::NameTooLong { what, len, max } => write!(
                f,
                "broker pod {what} is {len} bytes; Kubernetes allows at most {max} and kpool renders it into the broker's env and sidecar"
            ),
        }
    }
}

/// A part of what kpool injects, for the audit trail and stderr notes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Piece {
    Labels,
    Sidecar,
    Volumes,
    Toleration,
    NodeAffinity,
    AntiAffinity,
    Spread,
    IdentityEnv,
    ListenerEnv,
    ProbeEnv,
    ProbeMount,
    ReadinessProbe,
    ProbeInstaller,
    Status,
}

impl Piece {
    /// The name used in notes and audit lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Labels => "labels",
            Self::Sidecar => "sidecar",
            Self::Volumes => "volumes",
            Self::Toleration => "toleration",
            Self::NodeAffinity => "node-affinity",
            Self::AntiAffinity => "anti-affinity",
            Self::Spread => "topology-spread",
            Self::IdentityEnv => "identity-env",
            Self::ListenerEnv => "listener-env",
            Self::ProbeEnv => "probe-env",
            Self::ProbeMount => "probe-mount",
            Self::ReadinessProbe => "readiness-probe",
            Self::ProbeInstaller => "probe-installer",
            Self::Status => "status",
        }
    }
}

/// The engine's full answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub decision: Decision,
    /// Operations to apply, in order; empty unless the decision is `Inject`.
    pub patch: Vec<PatchOp>,
    /// Pieces the patch adds or changes.
    pub changed: Vec<Piece>,
    /// Human notes: conflicts kept, pieces deferred to admission.
    pub notes: Vec<String>,
}

impl Outcome {
    fn verdict(decision: Decision) -> Self {
        Self {
            decision,
            patch: Vec::new(),
            changed: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// The patch as RFC 6902 JSON.
    pub fn patch_json(&self) -> Vec<u8> {
        patch::to_json(&self.patch)
    }
}

/// The engine, with everything that depends only on the policy built once.
#[derive(Debug)]
pub struct Injector {
    policy: Arc<Policy>,
    fixed: probe::Fixed,
    scheduling: scheduling::Fixed,
}

impl Injector {
    /// Prepares the engine for `policy`.
    pub fn new(policy: Arc<Policy>) -> Self {
        Self {
            fixed: probe::Fixed::new(&policy),
            scheduling: scheduling::Fixed::new(&policy),
            policy,
        }
    }

    /// The policy in use.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Injects into a pod given as JSON text (the fast path: only the fields the engine
    /// needs are read).
    pub fn inject_json(&self, pod_json: &str, ctx: Context<'_>) -> Result<Outcome, PodError> {
        let view = PodView::from_json(pod_json)?;
        Ok(self.plan(&view, ctx))
    }

    /// Injects into a parsed pod.
    pub fn inject(&self, pod: &Value, ctx: Context<'_>) -> Result<Outcome, PodError> {
        let view = PodView::from_value(pod)?;
        Ok(self.plan(&view, ctx))
    }

    /// The decision for a pod view.
    pub fn plan(&self, pod: &PodView<'_>, ctx: Context<'_>) -> Outcome {
        let policy = &*self.policy;
        let spec = policy.spec();
        let meta = &pod.metadata;

        // The request's namespace (a pod being created may not carry its own).
        let namespace = ctx
            .namespace
            .filter(|n| !n.is_empty())
            .or(meta.namespace.as_deref())
            .unwrap_or_default();
        let view = pod::InNamespace { pod, namespace };
        if let Err(why) = policy.broker_check(&view, &kpool_policy::pool::NoEvidence) {
            return Outcome::verdict(Decision::Skip(SkipReason::NotABroker(why)));
        }
        let opt_out = &spec.injection.opt_out_annotation;
        if let Some(v) = meta.annotation(opt_out)
            && v.eq_ignore_ascii_case("false")
        {
            return Outcome::verdict(Decision::Skip(SkipReason::OptedOut {
                annotation: opt_out.clone(),
                value: v.to_owned(),
            }));
        }
        let Some(pod_spec) = pod.spec.as_ref() else {
            return Outcome::verdict(Decision::Deny(DenyReason::NoSpec));
        };
        let containers = pod_spec.containers.as_deref().unwrap_or_default();
        let Some(broker) = containers
            .iter()
            .position(|c| c.name.as_str() == spec.brokers.container)
        else {
            return Outcome::verdict(Decision::Deny(DenyReason::NoBrokerContainer {
                expected: spec.brokers.container.clone(),
                found: containers
                    .iter()
                    .map(|c| c.name.as_str().to_owned())
                    .collect(),
            }));
        };

        let namespace = ctx
            .namespace
            .filter(|n| !n.is_empty())
            .or(meta.namespace.as_deref().filter(|n| !n.is_empty()))
            .unwrap_or("default");
        if namespace.len() > MAX_NAMESPACE_BYTES {
            return Outcome::verdict(Decision::Deny(DenyReason::NameTooLong {
                what: "namespace",
                len: namespace.len(),
                max: MAX_NAMESPACE_BYTES,
            }));
        }

        // Identity: only for pods; a template's ordinal is unknown.
        let pod_name;
        let identity = match ctx.target {
            Target::Template => None,
            Target::Pod => {
                let ordinal = match kpool_policy::ordinal_of(
                    meta.label(POD_INDEX_LABEL),
                    meta.name.as_deref(),
                    meta.generate_name.as_deref(),
                ) {
                    Ok(o) => o,
                    Err(e) => return Outcome::verdict(Decision::Deny(DenyReason::NoOrdinal(e))),
                };
                pod_name = match (meta.name.as_deref(), meta.generate_name.as_deref()) {
                    (Some(n), _) if !n.is_empty() => n.to_owned(),
                    // A StatefulSet names pod N `<generateName>N`.
                    (_, Some(g)) => format!("{g}{ordinal}"),
                    _ => String::new(),
                };
                if pod_name.len() > MAX_POD_NAME_BYTES {
                    return Outcome::verdict(Decision::Deny(DenyReason::NameTooLong {
                        what: "name",
                        len: pod_name.len(),
                        max: MAX_POD_NAME_BYTES,
                    }));
                }
                match policy.identity(&pod_name, namespace, ordinal) {
                    Ok(id) => Some(id),
                    Err(e) => return Outcome::verdict(Decision::Deny(DenyReason::Identity(e))),
                }
            }
        };

        let previous = meta.annotation(STATUS_ANNOTATION).and_then(Status::parse);
        let mut plan = Plan {
            injector: self,
            previous: previous.as_ref(),
            ops: Vec::new(),
            changed: Vec::new(),
            notes: Vec::new(),
            owned_containers: Vec::new(),
            owned_volumes: Vec::new(),
        };
        if let Err(reason) = plan.build(pod, broker, identity.as_ref(), namespace) {
            return Outcome::verdict(Decision::Deny(reason));
        }
        let Plan {
            ops,
            changed,
            notes,
            ..
        } = plan;
        let decision = if ops.is_empty() {
            Decision::AlreadyInjected
        } else {
            Decision::Inject
        };
        Outcome {
            decision,
            patch: ops,
            changed,
            notes,
        }
    }
}

/// Working state while building one pod's patch.
struct Plan<'e> {
    injector: &'e Injector,
    /// The status annotation kpool left on an earlier pass, if any.
    previous: Option<&'e Status>,
    ops: Vec<PatchOp>,
    changed: Vec<Piece>,
    notes: Vec<String>,
    owned_containers: Vec<String>,
    owned_volumes: Vec<String>,
}

impl Plan<'_> {
    fn build(
        &mut self,
        pod: &PodView<'_>,
        broker: usize,
        id: Option<&BrokerIdentity<'_>>,
        namespace: &str,
    ) -> Result<(), DenyReason> {
        let Some(spec) = pod.spec.as_ref() else {
            return Err(DenyReason::NoSpec);
        };
        // Clashes are checked before any operation is emitted; the bounds (affinity terms,
        // env duplicates) where they are scanned, and a denial drops what was emitted.
        let mut sidecar = sidecar::prepare(self, spec, id, namespace)?;
        let bin_volume = probe::check_clashes(self, spec, broker)?;

        identity::labels(self, &pod.metadata, id);
        sidecar::apply_volumes(self, spec, &mut sidecar, bin_volume);
        scheduling::toleration(self, spec);
        scheduling::affinity(self, spec, id)?;
        scheduling::spread(self, spec);
        // The installer is appended before the native sidecar is inserted at index 0, so
        // no operation refers to an index the insert has shifted.
        probe::installer(self, spec);
        sidecar::apply_container(self, spec, sidecar);
        identity::env(self, spec, broker, id)?;
        probe::mount_and_probe(self, spec, broker);
        status::annotation(self, &pod.metadata, id);
        Ok(())
    }

    fn push(&mut self, piece: Piece, op: PatchOp) {
        self.ops.push(op);
        if !self.changed.contains(&piece) {
            self.changed.push(piece);
        }
    }

    /// True when kpool's earlier pass recorded `name` as its own container.
    fn owns_container(&self, name: &str) -> bool {
        self.previous
            .is_some_and(|s| s.containers.iter().any(|c| c == name))
    }

    /// True when kpool's earlier pass recorded `name` as its own volume.
    fn owns_volume(&self, name: &str) -> bool {
        self.previous
            .is_some_and(|s| s.volumes.iter().any(|c| c == name))
    }

    /// True when the earlier pass used a different policy, so owned pieces are refreshed.
    fn policy_changed(&self) -> bool {
        self.previous
            .is_none_or(|s| s.policy_hash != self.injector.policy.hash())
    }
}
