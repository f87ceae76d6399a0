//! The guard's Kubernetes calls: evictions through the Eviction API (policy/v1, so
//! PodDisruptionBudgets hold), Events (events.k8s.io/v1) on the offending object, and the
//! audit record of what was done.

use std::time::Duration;

use kpool_policy::Policy;
use kpool_policy::audit::{AuditRecord, Subject, now_rfc3339};
use kpool_policy::model::Mode;
use serde_json::json;

use super::decide::{Action, Decision, Target};

/// Why a Kubernetes call failed.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    #[error("building the {what} request for {target}: {message}")]
    Build {
        what: &'static str,
        target: String,
        message: String,
    },
    #[error("{what} for {target}: {source}")]
    Api {
        what: &'static str,
        target: String,
        #[source]
        source: kube::Error,
    },
}

/// How an eviction ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvictOutcome {
    /// The API server accepted the eviction.
    Evicted,
    /// The pod (with that uid) no longer exists: nothing to do.
    Gone,
    /// Still refused with 429 (a PodDisruptionBudget) after every attempt.
    Blocked { attempts: u32, message: String },
    /// Any other failure.
    Failed(String),
}

impl EvictOutcome {
    /// The audit `action` and metric label.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Evicted => "evicted",
            Self::Gone => "already-gone",
            Self::Blocked { .. } => "eviction-blocked",
            Self::Failed(_) => "eviction-failed",
        }
    }
}

/// Retries of an eviction refused with 429 (or a 5xx): exponential from `first` to `max`.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub attempts: u32,
    pub first: Duration,
    pub max: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 5,
            first: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

/// The reporting controller name in Events.
pub const CONTROLLER: &str = "kpool.io/agent";

/// Does the guard's Kubernetes calls for one node.
#[derive(Clone)]
pub struct Actor {
    client: kube::Client,
    node: String,
    retry: Retry,
}

impl std::fmt::Debug for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Actor")
            .field("node", &self.node)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

fn target_text(t: &Target) -> String {
    match t {
        Target::Pod {
            namespace, name, ..
        } => format!("pod {namespace}/{name}"),
        Target::Node { name } => format!("node {name}"),
    }
}

impl Actor {
    /// An actor for `node`.
    pub fn new(client: kube::Client, node: &str, retry: Retry) -> Self {
        Self {
            client,
            node: node.to_owned(),
            retry,
        }
    }

    /// Evicts `namespace/name`, only if it still has `uid` (a StatefulSet recreates pods
    /// under the same name; the precondition keeps the new one safe). Retries 429 and 5xx.
    pub async fn evict(&self, namespace: &str, name: &str, uid: &str) -> EvictOutcome {
        let body = json!({
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": { "name": name, "namespace": namespace },
            "deleteOptions": { "preconditions": { "uid": uid } },
        });
        let path = format!("/api/v1/namespaces/{namespace}/pods/{name}/eviction");
        let mut delay = self.retry.first;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let req = match http::Request::post(&path)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(&body).unwrap_or_default())
            {
                Ok(r) => r,
                Err(e) => return EvictOutcome::Failed(format!("building the eviction: {e}")),
            };
            let err = match self.client.request::<serde_json::Value>(req).await {
                Ok(_) => return EvictOutcome::Evicted,
                Err(e) => e,
            };
            let (code, message) = match &err {
                kube::Error::Api(s) => (s.code, s.message.clone()),
                other => (0, other.to_string()),
            };
            match code {
                404 => return EvictOutcome::Gone,
                // 409: the uid precondition failed, the pod was replaced.
                409 => return EvictOutcome::Gone,
                429 | 500..=599 if attempt < self.retry.attempts => {
                    tracing::info!(pod = %format!("{namespace}/{name}"), code, attempt, ?delay, %message, "eviction refused; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.retry.max);
                }
                429 => {
                    return EvictOutcome::Blocked {
                        attempts: attempt,
                        message,
                    };
                }
                _ => return EvictOutcome::Failed(format!("HTTP {code}: {message}")),
            }
        }
    }

    /// Creates a Warning Event about `target` (events.k8s.io/v1).
    pub async fn event(
        &self,
        target: &Target,
        reason: &str,
        action: &str,
        note: &str,
    ) -> Result<(), ActError> {
        let now = time::OffsetDateTime::now_utc();
        let (namespace, regarding, base) = match target {
            Target::Pod {
                namespace,
                name,
                uid,
            } => (
                namespace.as_str(),
                json!({"apiVersion": "v1", "kind": "Pod", "namespace": namespace, "name": name, "uid": uid}),
                name.as_str(),
            ),
            Target::Node { name } => (
                "default",
                json!({"apiVersion": "v1", "kind": "Node", "name": name}),
                name.as_str(),
            ),
        };
        // The API caps a note at 1 kB.
        let mut note = note.to_owned();
        if note.len() > 1024 {
            let mut cut = 1021;
            while !note.is_char_boundary(cut) {
                cut -= 1;
            }
            note.truncate(cut);
            note.push_str("...");
        }
        // MicroTime: the API server wants exactly six fraction digits.
        let event_time =
            kpool_policy::audit::rfc3339_micros(now.unix_timestamp(), now.nanosecond());
        let body = json!({
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {
                "name": format!("{base}.{:x}", now.unix_timestamp_nanos()),
                "namespace": namespace,
            },
            "eventTime": event_time,
            "reportingController": CONTROLLER,
            "reportingInstance": format!("kpool-agent-{}", self.node),
            "action": action,
            "reason": reason,
            "type": "Warning",
            "note": note,
            "regarding": regarding,
        });
        let path = format!("/apis/events.k8s.io/v1/namespaces/{namespace}/events");
        let req = http::Request::post(&path)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&body).unwrap_or_default())
            .map_err(|e| ActError::Build {
                what: "Event",
                target: target_text(target),
                message: e.to_string(),
            })?;
        self.client
            .request::<serde_json::Value>(req)
            .await
            .map_err(|source| ActError::Api {
                what: "creating an Event",
                target: target_text(target),
                source,
            })?;
        Ok(())
    }

    /// Carries out one decision: evicts (enforce mode, evicting kinds), records the Event,
    /// and returns the audit record of what was done. Event failures are logged, not fatal:
    /// the audit line and the metric still say what happened.
    pub async fn apply(
        &self,
        d: &Decision,
        policy: &Policy,
    ) -> (AuditRecord, Option<EvictOutcome>) {
        let v = &d.violation;
        let outcome = match (&d.action, &v.target) {
            (
                Action::Evict,
                Target::Pod {
                    namespace,
                    name,
                    uid,
                },
            ) => Some(self.evict(namespace, name, uid).await),
            _ => None,
        };
        let action = action_code(policy.spec().mode, d.action, outcome.as_ref());
        let note = match &outcome {
            Some(EvictOutcome::Blocked { attempts, message }) => format!(
                "{}; eviction refused {attempts} times (PodDisruptionBudget?): {message}",
                v.message
            ),
            Some(EvictOutcome::Failed(e)) => format!("{}; eviction failed: {e}", v.message),
            Some(EvictOutcome::Evicted) => format!("{}; evicted", v.message),
            _ => v.message.clone(),
        };
        let event_action = if outcome.is_some() { "Evict" } else { "Report" };
        if !matches!(outcome, Some(EvictOutcome::Gone))
            && let Err(e) = self
                .event(&v.target, v.kind.event_reason(), event_action, &note)
                .await
        {
            tracing::warn!(error = %e, "cannot record the guard's Event");
        }
        (audit_record(policy, d, &action, &note), outcome)
    }
}

/// The audit `action` of a decision.
pub fn action_code(mode: Mode, action: Action, outcome: Option<&EvictOutcome>) -> String {
    match (action, outcome) {
        (Action::Evict, Some(o)) => o.code().to_owned(),
        (_, _) if mode == Mode::Audit => "reported-audit-mode".to_owned(),
        _ => "reported".to_owned(),
    }
}

/// The audit record (shared schema) of a guard decision.
pub fn audit_record(policy: &Policy, d: &Decision, action: &str, reason: &str) -> AuditRecord {
    let v = &d.violation;
    let subject = match &v.target {
        Target::Pod {
            namespace,
            name,
            uid,
        } => Subject {
            namespace: namespace.clone(),
            name: name.clone(),
            uid: uid.clone(),
        },
        Target::Node { name } => Subject {
            namespace: String::new(),
            name: name.clone(),
            uid: String::new(),
        },
    };
    AuditRecord {
        time: now_rfc3339(),
        component: "agent",
        decision: "violation".to_owned(),
        subject,
        reason: reason.to_owned(),
        reason_code: v.kind.code().to_owned(),
        policy_hash: policy.hash().to_owned(),
        action: action.to_owned(),
        mode: match policy.spec().mode {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        },
        admission: None,
    }
}
