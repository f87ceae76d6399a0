//! Pool protection at admission: only brokers (and the exempt: real DaemonSet and mirror
//! pods, what the policy allow-lists) may be scheduled onto the Kafka pool. Pure: policy +
//! pod + what the request proves in, verdict out. Who is a broker and who is exempt is
//! decided in one place, [`kpool_policy::pool`], for the webhook and the agent alike.

use std::fmt;

use kpool_policy::Policy;
use kpool_policy::pool::{Admission, Exemption, WHO_MAY_USE_THE_POOL};
use serde_json::Value;

use crate::inject::PodView;
use crate::inject::pod::InNamespace;

/// Why a pod may be admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allow {
    Broker,
    /// Neither tolerates the pool taint nor requires the pool label.
    NotForPool,
    /// Not a broker, but exempt (see [`Exemption`]).
    Exempt(Exemption),
}

impl Allow {
    /// A stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Broker => "broker",
            Self::NotForPool => "not-for-pool",
            Self::Exempt(e) => e.code(),
        }
    }
}

impl fmt::Display for Allow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Broker => f.write_str("a broker (brokers.selector in brokers.namespaces)"),
            Self::NotForPool => f.write_str("does not target the Kafka pool"),
            Self::Exempt(e) => e.fmt(f),
        }
    }
}

/// A foreign pod aiming at the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// `tolerates-pool-taint` or `requires-pool-node`.
    pub rule: &'static str,
    /// What in the pod breaks the rule, with its field path.
    pub offending: String,
    /// The full message for the API server and the audit trail.
    pub message: String,
}

/// The guard's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow(Allow),
    Violation(Violation),
}

/// Decides whether `pod` (in `namespace`) may target the pool. `creator` is the
/// authenticated user of a CREATE (an UPDATE proves nothing about who made the pod: there
/// the agent checks the DaemonSet against the API).
pub fn check(
    policy: &Policy,
    pod: &PodView<'_>,
    namespace: &str,
    creator: Option<&str>,
) -> Verdict {
    let view = InNamespace { pod, namespace };
    let evidence = Admission { creator };
    let impostor = match policy.broker_check(&view, &evidence) {
        Ok(()) => return Verdict::Allow(Allow::Broker),
        Err(why) => why.is_impostor().then_some(why),
    };
    let Some(mut violation) = find_violation(policy, pod) else {
        return Verdict::Allow(Allow::NotForPool);
    };
    if let Some(exemption) = policy.pool_exemption(&view, &evidence) {
        return Verdict::Allow(Allow::Exempt(exemption));
    }
    if let Some(why) = impostor {
        violation.message = format!("{} ({why})", violation.message);
    }
    Verdict::Violation(violation)
}

fn find_violation(policy: &Policy, pod: &PodView<'_>) -> Option<Violation> {
    let spec = policy.spec();
    let pod_spec = pod.spec.as_ref()?;
    let taint = &spec.pool.taint;
    let taint_text = taint.to_string();
    let tail = WHO_MAY_USE_THE_POOL;
    if let Some((i, t)) = pod_spec
        .tolerations
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
        .find(|(_, t)| t.tolerates(taint))
    {
        let offending = format!("spec.tolerations[{i}] {t}");
        return Some(Violation {
            rule: "tolerates-pool-taint",
            message: format!(
                "kpool: pod is not a broker but tolerates the Kafka pool taint {taint_text} with {offending} (policy rule pool.taint); {tail}"
            ),
            offending,
        });
    }
    let label = &spec.pool.node_label;
    if let Some(v) = pod_spec
        .node_selector
        .as_ref()
        .and_then(|s| s.get(&label.key))
        && v == label.value
    {
        let offending = format!("spec.nodeSelector {}={v}", label.key);
        return Some(Violation {
            rule: "requires-pool-node",
            message: format!(
                "kpool: pod is not a broker but requires the Kafka pool nodes with {offending} (policy rule pool.nodeLabel); {tail}"
            ),
            offending,
        });
    }
    let terms = pod_spec
        .affinity
        .as_ref()
        .and_then(|a| {
            a.pointer(
                "/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms",
            )
        })
        .and_then(Value::as_array);
    for (ti, term) in terms
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let exprs = term.get("matchExpressions").and_then(Value::as_array);
        for (ei, e) in exprs
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let key_matches = e.get("key").and_then(Value::as_str) == Some(label.key.as_str());
            let selects_pool = match e.get("operator").and_then(Value::as_str) {
                Some("In") => e
                    .get("values")
                    .and_then(Value::as_array)
                    .is_some_and(|vs| vs.iter().any(|v| v.as_str() == Some(label.value.as_str()))),
                Some("Exists") => true,
                _ => false,
            };
            if key_matches && selects_pool {
                let offending = format!(
                    "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[{ti}].matchExpressions[{ei}] {e}"
                );
                return Some(Violation {
                    rule: "requires-pool-node",
                    message: format!(
                        "kpool: pod is not a broker but requires the Kafka pool nodes with {offending} (policy rule pool.nodeLabel); {tail}"
                    ),
                    offending,
                });
            }
        }
    }
    None
}
