//! Pool protection: only brokers (and DaemonSet pods, and what the policy allow-lists) may
//! be scheduled onto the Kafka pool. Pure: policy + pod in, verdict out.

use std::fmt;

use kpool_policy::Policy;
use serde_json::Value;

use crate::inject::PodView;

/// Why a pod may be admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allow {
    Broker,
    /// Neither tolerates the pool taint nor requires the pool label.
    NotForPool,
    DaemonSet,
    AllowedNamespace(String),
    AllowedServiceAccount(String),
}

impl Allow {
    /// A stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Broker => "broker",
            Self::NotForPool => "not-for-pool",
            Self::DaemonSet => "daemonset",
            Self::AllowedNamespace(_) => "allowed-namespace",
            Self::AllowedServiceAccount(_) => "allowed-service-account",
        }
    }
}

impl fmt::Display for Allow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Broker => f.write_str("a broker (brokers.selector)"),
            Self::NotForPool => f.write_str("does not target the Kafka pool"),
            Self::DaemonSet => f.write_str("owned by a DaemonSet"),
            Self::AllowedNamespace(ns) => write!(f, "namespace {ns:?} is in guard.allowNamespaces"),
            Self::AllowedServiceAccount(sa) => {
                write!(f, "service account {sa:?} is in guard.allowServiceAccounts")
            }
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

/// Decides whether `pod` (in `namespace`) may target the pool.
pub fn check(policy: &Policy, pod: &PodView<'_>, namespace: &str) -> Verdict {
    let spec = policy.spec();
    let meta = &pod.metadata;
    if spec
        .brokers
        .selector
        .iter()
        .all(|(k, v)| meta.label(k) == Some(v.as_str()))
    {
        return Verdict::Allow(Allow::Broker);
    }
    let Some(violation) = find_violation(policy, pod) else {
        return Verdict::Allow(Allow::NotForPool);
    };
    if meta
        .owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|o| o.kind.as_str() == "DaemonSet")
    {
        return Verdict::Allow(Allow::DaemonSet);
    }
    if spec.guard.allow_namespaces.iter().any(|n| n == namespace) {
        return Verdict::Allow(Allow::AllowedNamespace(namespace.to_owned()));
    }
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref())
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    let qualified = format!("{namespace}/{sa}");
    if spec.guard.allow_service_accounts.contains(&qualified) {
        return Verdict::Allow(Allow::AllowedServiceAccount(qualified));
    }
    Verdict::Violation(violation)
}

fn find_violation(policy: &Policy, pod: &PodView<'_>) -> Option<Violation> {
    let spec = policy.spec();
    let pod_spec = pod.spec.as_ref()?;
    let taint = &spec.pool.taint;
    let taint_text = taint.to_string();
    let tail = "only brokers (brokers.selector), DaemonSet pods and pods of guard.allowNamespaces or guard.allowServiceAccounts may use the Kafka pool";
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
