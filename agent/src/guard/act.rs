//! The guard's Kubernetes calls: evictions through the Eviction API (policy/v1, so
//! PodDisruptionBudgets hold), Events (events.k8s.io/v1) on the offending object, and the
//! audit record of what was done.
//!
//! A PodDisruptionBudget can shield a foreign pod for good (429 on every eviction). The
//! escalation: each refused eviction of a foreign pod is counted per pod uid
//! ([`Refusals`]) and reported as a `PoolBreached` Warning Event on the pod and on the Node;
//! in `enforce` mode, when the policy opts in with `guard.deleteAfterRefusals: N`, the N-th
//! refusal is followed by a DELETE with a uid precondition ([`delete_due`]). Brokers are never
//! deleted this way: their budget is what keeps Kafka's partitions available.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use kpool_cli::audit::{self, AuditRecord, Subject};
use kpool_cli::clock::now_rfc3339;
use kpool_policy::Policy;
use kpool_policy::model::Mode;
use serde_json::json;

use super::decide::{Action, Decision, Kind, Target};

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
    /// The audit `action`.
    pub fn action(&self) -> audit::Action {
        match self {
            Self::Evicted => audit::Action::Evicted,
            Self::Gone => audit::Action::AlreadyGone,
            Self::Blocked { .. } => audit::Action::EvictionBlocked,
            Self::Failed(_) => audit::Action::EvictionFailed,
        }
    }

    /// The metric label: the audit `action`'s string.
    pub fn code(&self) -> &'static str {
        self.action().as_str()
    }
}

/// How a deletion (after `guard.deleteAfterRefusals` refused evictions) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// The API server accepted the deletion (the pod terminates with its grace period).
    Deleted,
    /// The pod with that uid no longer exists (404, or 409: the uid precondition failed).
    Gone,
    /// Any other failure (403: the agent's role lacks `delete` on pods).
    Failed(String),
}

impl DeleteOutcome {
    /// The audit `action`.
    pub fn action(&self) -> audit::Action {
        match self {
            Self::Deleted => audit::Action::Deleted,
            Self::Gone => audit::Action::AlreadyGone,
            Self::Failed(_) => audit::Action::DeleteFailed,
        }
    }

    /// The metric label: the audit `action`'s string.
    pub fn code(&self) -> &'static str {
        self.action().as_str()
    }
}

/// The Event reason of a refused eviction of a foreign pod (on the pod and on the Node).
pub const POOL_BREACHED: &str = "PoolBreached";
/// The Event reason of a foreign pod deleted after `guard.deleteAfterRefusals` refusals.
pub const POOL_BREACH_DELETED: &str = "PoolBreachDeleted";
/// The Event reason of such a deletion that failed.
pub const POOL_BREACH_DELETE_FAILED: &str = "PoolBreachDeleteFailed";

/// Refused evictions of foreign pods, by pod uid (a pod recreated under the same name
/// starts again from zero). Memory is bounded by the node: [`Refusals::retain`] drops the
/// pods that are no longer foreign violators.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Refusals {
    by_uid: HashMap<String, u32>,
}

impl Refusals {
    /// One more refusal for `uid`; returns how many so far.
    pub fn refused(&mut self, uid: &str) -> u32 {
        let n = self.by_uid.entry(uid.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// The pod was evicted, deleted or is gone: nothing is blocked any more.
    pub fn forget(&mut self, uid: &str) {
        self.by_uid.remove(uid);
    }

    /// Keeps only the pods for which `present` is true.
    pub fn retain(&mut self, present: impl Fn(&str) -> bool) {
        self.by_uid.retain(|uid, _| present(uid));
    }

    /// Refusals of `uid` so far.
    pub fn count(&self, uid: &str) -> u32 {
        self.by_uid.get(uid).copied().unwrap_or(0)
    }

    /// Foreign pods whose last eviction was refused: the pool is breached by each.
    pub fn breached(&self) -> usize {
        self.by_uid.len()
    }
}

/// Whether the guard deletes a pod whose eviction has now been refused `refusals` times:
/// only in `enforce` mode, only a foreign pod, only when the policy opts in with
/// `guard.deleteAfterRefusals` and that many refusals have been seen.
pub fn delete_due(mode: Mode, kind: Kind, delete_after: Option<u32>, refusals: u32) -> bool {
    mode == Mode::Enforce
        && kind == Kind::ForeignPod
        && delete_after.is_some_and(|n| n >= 1 && refusals >= n)
}

/// What one decision did.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The audit records: the violation's, then the deletion's when there was one.
    pub records: Vec<AuditRecord>,
    /// The eviction, when one was requested.
    pub eviction: Option<EvictOutcome>,
    /// Refusals of this foreign pod so far, when its eviction was refused this time.
    pub refusals: Option<u32>,
    /// The deletion, when the refusals reached `guard.deleteAfterRefusals`.
    pub deletion: Option<DeleteOutcome>,
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

/// Does the guard's Kubernetes calls for one node, and remembers the refused evictions of
/// foreign pods (clones share that memory).
#[derive(Clone)]
pub struct Actor {
    client: kube::Client,
    node: String,
    retry: Retry,
    refusals: Arc<Mutex<Refusals>>,
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
        Target::Lease { namespace, name } => format!("lease {namespace}/{name}"),
    }
}

impl Actor {
    /// An actor for `node`.
    pub fn new(client: kube::Client, node: &str, retry: Retry) -> Self {
        Self {
            client,
            node: node.to_owned(),
            retry,
            refusals: Arc::default(),
        }
    }

    fn ledger(&self) -> MutexGuard<'_, Refusals> {
        // The ledger is only counters: a panic elsewhere cannot leave it half-updated.
        self.refusals.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The refused evictions remembered now.
    pub fn refusals(&self) -> Refusals {
        self.ledger().clone()
    }

    /// Forgets the refusals of every pod that is not a foreign violator any more
    /// (`present` says which uids still are); returns how many foreign pods remain shielded.
    pub fn retain_refusals(&self, present: impl Fn(&str) -> bool) -> usize {
        let mut l = self.ledger();
        l.retain(present);
        l.breached()
    }

    /// Deletes `namespace/name`, only if it still has `uid`: what the guard does, when the
    /// policy opts in, to a foreign pod a PodDisruptionBudget shields for good. No retry
    /// here: the next refused eviction (one `--guard-backoff` later) tries again.
    pub async fn delete(&self, namespace: &str, name: &str, uid: &str) -> DeleteOutcome {
        let params = kube::api::DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: Some(uid.to_owned()),
                resource_version: None,
            }),
            ..kube::api::DeleteParams::default()
        };
        let req = match kube::core::Request::new(format!("/api/v1/namespaces/{namespace}/pods"))
            .delete(name, &params)
        {
            Ok(r) => r,
            Err(e) => return DeleteOutcome::Failed(format!("building the deletion: {e}")),
        };
        match self.client.request::<serde_json::Value>(req).await {
            Ok(_) => DeleteOutcome::Deleted,
            // 409: the uid precondition failed, the pod was replaced.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => DeleteOutcome::Gone,
            Err(kube::Error::Api(s)) if s.code == 403 => DeleteOutcome::Failed(format!(
                "HTTP 403: {}: the agent's role lacks delete on pods (the chart grants it with policy.guard.deleteAfterRefusals in enforce mode)",
                s.message
            )),
            Err(kube::Error::Api(s)) => {
                DeleteOutcome::Failed(format!("HTTP {}: {}", s.code, s.message))
            }
            Err(e) => DeleteOutcome::Failed(e.to_string()),
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
        let mut backoff = crate::backoff::Backoff::new(self.retry.first, self.retry.max);
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
                    let delay = backoff.next();
                    tracing::info!(pod = %format!("{namespace}/{name}"), code, attempt, ?delay, %message, "eviction refused; retrying");
                    tokio::time::sleep(delay).await;
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

    /// Creates an Event about `target` (events.k8s.io/v1): a Warning about a pod or a node
    /// (a violation), Normal about a Lease (a rack reassignment, work done on purpose).
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
            Target::Lease { namespace, name } => (
                namespace.as_str(),
                json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "namespace": namespace, "name": name}),
                name.as_str(),
            ),
        };
        let kind = match target {
            Target::Lease { .. } => "Normal",
            Target::Pod { .. } | Target::Node { .. } => "Warning",
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
        let event_time = kpool_cli::clock::rfc3339_micros(now.unix_timestamp(), now.nanosecond());
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
            "type": kind,
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
    /// and returns the audit records of what was done. Event failures are logged, not fatal:
    /// the audit line and the metric still say what happened.
    ///
    /// A foreign pod whose eviction is refused (429 after every retry) is counted; the
    /// Event is `PoolBreached`, on the pod and on the Node, with the count; when
    /// [`delete_due`], the pod is deleted (uid precondition), with its own Events and audit
    /// record.
    pub async fn apply(&self, d: &Decision, policy: &Policy) -> Applied {
        let v = &d.violation;
        let mode = policy.spec().mode;
        let delete_after = policy.spec().guard.delete_after_refusals;
        let pod = match &v.target {
            Target::Pod {
                namespace,
                name,
                uid,
            } => Some((namespace.as_str(), name.as_str(), uid.as_str())),
            Target::Node { .. } | Target::Lease { .. } => None,
        };
        let eviction = match (d.action, pod) {
            (Action::Evict, Some((namespace, name, uid))) => {
                Some(self.evict(namespace, name, uid).await)
            }
            _ => None,
        };
        let refusals = match (&eviction, pod) {
            (Some(EvictOutcome::Blocked { .. }), Some((_, _, uid)))
                if v.kind == Kind::ForeignPod =>
            {
                Some(self.ledger().refused(uid))
            }
            (Some(EvictOutcome::Evicted | EvictOutcome::Gone), Some((_, _, uid))) => {
                self.ledger().forget(uid);
                None
            }
            _ => None,
        };
        let deleting = refusals.is_some_and(|n| delete_due(mode, v.kind, delete_after, n));
        let action = action_code(mode, d.action, eviction.as_ref());
        let note = match (&eviction, refusals) {
            (Some(EvictOutcome::Blocked { attempts, message }), Some(n)) => {
                let next = if deleting {
                    format!("deleting it now (guard.deleteAfterRefusals: {n})")
                } else {
                    match delete_after {
                        Some(after) if mode == Mode::Enforce => format!(
                            "deleted at refusal {after} (guard.deleteAfterRefusals); the agent asks again every guard backoff"
                        ),
                        _ => "the agent asks again every guard backoff and never deletes it (guard.deleteAfterRefusals is not set): relax the budget or remove the pod".to_owned(),
                    }
                };
                format!(
                    "the Kafka pool is breached: {}; a PodDisruptionBudget blocks its eviction (refusal {n}, {attempts} attempts each: {message}); {next}",
                    v.message
                )
            }
            (Some(EvictOutcome::Blocked { attempts, message }), None) => format!(
                "{}; eviction refused {attempts} times (PodDisruptionBudget?): {message}",
                v.message
            ),
            (Some(EvictOutcome::Failed(e)), _) => format!("{}; eviction failed: {e}", v.message),
            (Some(EvictOutcome::Evicted), _) => format!("{}; evicted", v.message),
            _ => v.message.clone(),
        };
        let event_action = if eviction.is_some() {
            "Evict"
        } else {
            "Report"
        };
        if refusals.is_some() {
            self.event_on_pod_and_node(&v.target, POOL_BREACHED, event_action, &note)
                .await;
        } else if !matches!(eviction, Some(EvictOutcome::Gone))
            && let Err(e) = self
                .event(&v.target, v.kind.event_reason(), event_action, &note)
                .await
        {
            tracing::warn!(error = %e, "cannot record the guard's Event");
        }
        let mut records = vec![audit_record(policy, d, action, &note)];

        let mut deletion = None;
        if let (true, Some((namespace, name, uid)), Some(n)) = (deleting, pod, refusals) {
            let outcome = self.delete(namespace, name, uid).await;
            if matches!(outcome, DeleteOutcome::Deleted | DeleteOutcome::Gone) {
                self.ledger().forget(uid);
            }
            let note = match &outcome {
                DeleteOutcome::Deleted => format!(
                    "{}; deleted at refusal {n} (guard.deleteAfterRefusals), bypassing the PodDisruptionBudget that refuses its eviction",
                    v.message
                ),
                DeleteOutcome::Gone => format!(
                    "{}; gone, or replaced under the same name, before it could be deleted",
                    v.message
                ),
                DeleteOutcome::Failed(e) => format!(
                    "{}; deleting it at refusal {n} (guard.deleteAfterRefusals) failed: {e}",
                    v.message
                ),
            };
            let reason = match outcome {
                DeleteOutcome::Deleted => Some(POOL_BREACH_DELETED),
                DeleteOutcome::Failed(_) => Some(POOL_BREACH_DELETE_FAILED),
                DeleteOutcome::Gone => None,
            };
            if let Some(reason) = reason {
                self.event_on_pod_and_node(&v.target, reason, "Delete", &note)
                    .await;
            }
            records.push(audit_record(policy, d, outcome.action(), &note));
            deletion = Some(outcome);
        }
        Applied {
            records,
            eviction,
            refusals,
            deletion,
        }
    }

    /// The same Warning Event on `target` and on this node: a breach of the pool shows on
    /// the Node too (and stays there when the pod is gone).
    async fn event_on_pod_and_node(&self, target: &Target, reason: &str, action: &str, note: &str) {
        let node = Target::Node {
            name: self.node.clone(),
        };
        for t in [target, &node] {
            if let Err(e) = self.event(t, reason, action, note).await {
                tracing::warn!(error = %e, "cannot record the guard's Event");
            }
        }
    }
}

/// The audit `action` of a decision.
pub fn action_code(mode: Mode, action: Action, outcome: Option<&EvictOutcome>) -> audit::Action {
    match (action, outcome) {
        (Action::Evict, Some(o)) => o.action(),
        (_, _) if mode == Mode::Audit => audit::Action::ReportedAuditMode,
        _ => audit::Action::Reported,
    }
}

/// The audit record (shared schema) of a guard decision.
pub fn audit_record(
    policy: &Policy,
    d: &Decision,
    action: audit::Action,
    reason: &str,
) -> AuditRecord {
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
        Target::Lease { namespace, name } => Subject {
            namespace: namespace.clone(),
            name: name.clone(),
            uid: String::new(),
        },
    };
    AuditRecord {
        time: now_rfc3339(),
        component: "agent",
        decision: audit::Decision::Violation,
        subject,
        reason: reason.to_owned(),
        reason_code: v.kind.code().to_owned(),
        policy_hash: policy.hash().to_owned(),
        action,
        mode: policy.spec().mode,
        admission: None,
    }
}
