//! The HTTP face: AdmissionReview in, AdmissionReview out, one audit line and one metric
//! sample per request. `handle` is synchronous and socket-free so tests drive it directly;
//! `router` wraps it in axum for the server and for tower `oneshot` tests.

pub mod review;
mod router;

use std::sync::Arc;
use std::time::Instant;

use kpool_cli::audit::{Action, AdmissionFacts, AuditRecord, Decision, Subject};
use kpool_cli::clock::now_rfc3339;
use kpool_policy::Policy;
use kpool_policy::model::Mode;

pub use router::{AdmissionLimits, AppState, MAX_BODY_BYTES, ops_router, router};

use crate::audit::AuditLog;
use crate::guard::{self, Verdict};
use crate::inject::{self, Context, Injector, PodView, Target};
use crate::metrics::{EndpointLabel, Metrics, RequestLabels};
use review::{Answer, Object, Request, ReviewError};

/// Which webhook was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Mutate,
    Validate,
}

impl Endpoint {
    /// The metric and audit label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mutate => "mutate",
            Self::Validate => "validate",
        }
    }
}

/// The operation of an admission request, read once from `request.operation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
    /// Anything else, or no operation: the request's own text is what answers and audit
    /// lines quote.
    Other,
}

impl Operation {
    const NAMED: [Self; 4] = [Self::Create, Self::Update, Self::Delete, Self::Connect];

    /// The API server's name of the operation (`CREATE`, ...); `Other` has none (`""`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Create => "CREATE",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::Connect => "CONNECT",
            Self::Other => "",
        }
    }

    /// Reads `request.operation`: one of the API server's names (exact case), else `Other`.
    pub fn parse(text: &str) -> Self {
        Self::NAMED
            .into_iter()
            .find(|o| o.as_str() == text)
            .unwrap_or(Self::Other)
    }
}

/// An HTTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// What one request decided, before encoding.
struct Decided {
    answer: Answer,
    decision: Decision,
    reason_code: &'static str,
    reason: String,
    action: Action,
    subject: Subject,
    patch_ops: usize,
}

impl Decided {
    fn allow(decision: Decision, reason_code: &'static str, reason: String) -> Self {
        Self {
            answer: Answer {
                allowed: true,
                ..Answer::default()
            },
            decision,
            reason_code,
            reason,
            action: Action::Admitted,
            subject: Subject::default(),
            patch_ops: 0,
        }
    }

    fn reject(code: u16, reason_code: &'static str, reason: String) -> Self {
        Self {
            answer: Answer {
                allowed: false,
                status: Some((code, reason.clone())),
                ..Answer::default()
            },
            decision: Decision::Error,
            reason_code,
            reason,
            action: Action::Rejected,
            subject: Subject::default(),
            patch_ops: 0,
        }
    }
}

/// Answers admission requests with the policy's engine and guard.
#[derive(Debug)]
pub struct Admission {
    injector: Injector,
    metrics: Arc<Metrics>,
    audit: AuditLog,
}

impl Admission {
    /// Builds the handler.
    pub fn new(policy: Arc<Policy>, metrics: Arc<Metrics>, audit: AuditLog) -> Self {
        Self {
            injector: Injector::new(policy),
            metrics,
            audit,
        }
    }

    /// The policy in use.
    pub fn policy(&self) -> &Policy {
        self.injector.policy()
    }

    /// The audit log (flushed at shutdown).
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// Answers one request body. Never panics on bad input: a body that is not an
    /// AdmissionReview gets a 400 with the reason; anything with a request uid gets an
    /// AdmissionReview answer.
    pub fn handle(&self, endpoint: Endpoint, body: &[u8]) -> Reply {
        let start = Instant::now();
        let (reply, decided, facts) = match review::decode(body) {
            Err(e) => {
                let decided = Decided::reject(400, review_error_code(&e), e.to_string());
                let reply = Reply {
                    status: 400,
                    content_type: "text/plain; charset=utf-8",
                    body: format!("kpool: {e}\n").into_bytes(),
                };
                (reply, decided, None)
            }
            Ok(req) => {
                let operation = Operation::parse(req.operation.as_deref().unwrap_or_default());
                let mut decided = match endpoint {
                    Endpoint::Mutate => self.mutate(&req, operation),
                    Endpoint::Validate => self.validate(&req, operation),
                };
                if decided.subject.name.is_empty() {
                    decided.subject.name = req.name.as_deref().unwrap_or_default().to_owned();
                }
                if decided.subject.namespace.is_empty() {
                    decided.subject.namespace =
                        req.namespace.as_deref().unwrap_or_default().to_owned();
                }
                let uid = req.uid.as_deref().unwrap_or_default();
                let reply = Reply {
                    status: 200,
                    content_type: "application/json",
                    body: review::encode(uid, &decided.answer),
                };
                let facts = AdmissionFacts {
                    request_uid: uid.to_owned(),
                    endpoint: endpoint.as_str(),
                    user: req
                        .user_info
                        .as_ref()
                        .and_then(|u| u.username.as_deref())
                        .unwrap_or_default()
                        .to_owned(),
                    operation: req.operation.as_deref().unwrap_or_default().to_owned(),
                    dry_run: req.dry_run.unwrap_or(false),
                    kind: req
                        .kind
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    patch_ops: decided.patch_ops,
                    latency_us: 0,
                };
                (reply, decided, Some(facts))
            }
        };
        self.finish(endpoint, start, decided, facts);
        reply
    }

    /// Answers a body larger than [`MAX_BODY_BYTES`] with 413, audited like any other.
    pub fn too_large(&self, endpoint: Endpoint) -> Reply {
        let start = Instant::now();
        let reason = format!(
            "request body exceeds {MAX_BODY_BYTES} bytes (the API server never sends more)"
        );
        let reply = Reply {
            status: 413,
            content_type: "text/plain; charset=utf-8",
            body: format!("kpool: {reason}\n").into_bytes(),
        };
        self.finish(
            endpoint,
            start,
            Decided::reject(413, "body-too-large", reason),
            None,
        );
        reply
    }

    /// Counts, times and audits one answered request.
    fn finish(
        &self,
        endpoint: Endpoint,
        start: Instant,
        decided: Decided,
        facts: Option<AdmissionFacts>,
    ) {
        let elapsed = start.elapsed();
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.as_str(),
                decision: decided.decision.as_str(),
                reason: decided.reason_code,
            })
            .inc();
        self.metrics
            .latency
            .get_or_create(&EndpointLabel {
                endpoint: endpoint.as_str(),
            })
            .observe(elapsed.as_secs_f64());
        let policy = self.injector.policy();
        let mut facts = facts.unwrap_or_else(|| AdmissionFacts {
            endpoint: endpoint.as_str(),
            ..AdmissionFacts::default()
        });
        facts.latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.audit.record(&AuditRecord {
            time: now_rfc3339(),
            component: "webhook",
            decision: decided.decision,
            subject: decided.subject,
            reason: decided.reason,
            reason_code: decided.reason_code.to_owned(),
            policy_hash: policy.hash().to_owned(),
            action: decided.action,
            mode: policy.spec().mode,
            admission: Some(facts),
        });
    }

    fn mutate(&self, req: &Request<'_>, operation: Operation) -> Decided {
        let kind = req.kind.as_ref();
        if !kind.is_some_and(|k| k.is_pod()) {
            let what = kind.map_or_else(|| "no kind".to_owned(), ToString::to_string);
            let mut d = Decided::allow(
                Decision::Skip,
                "unsupported-kind",
                review::clip_owned(format!("kind {what}: kpool mutates only v1 Pods")),
            );
            d.answer.status = Some((200, format!("kpool: {}", d.reason)));
            return d;
        }
        if operation != Operation::Create {
            let operation = req.operation.as_deref().unwrap_or_default();
            // Nothing to inject, so nothing to read: a DELETE carries no object, and an
            // unreadable one is not kpool's to refuse here.
            let mut d = Decided::allow(
                Decision::Skip,
                "not-create",
                review::clip_owned(format!(
                    "operation {operation}: kpool mutates pods on CREATE only"
                )),
            );
            if let Some(Object::Pod(pod)) = &req.object {
                d.subject = subject_of(pod, req);
            }
            return d;
        }
        let pod = match read_pod(req) {
            Ok(p) => p,
            Err(d) => return *d,
        };
        let subject = subject_of(pod, req);
        let ctx = Context {
            namespace: req.namespace.as_deref(),
            target: Target::Pod,
        };
        let outcome = self.injector.plan(pod, ctx);
        let audit_mode = self.policy().spec().mode == Mode::Audit;
        // Reasons can quote the request (a label value, the container names): each is
        // clipped, for the answer and the audit line alike.
        let deny = |code: &'static str, reason: String| {
            let reason = review::clip_owned(reason);
            if audit_mode {
                let mut d = Decided::allow(Decision::Deny, code, reason);
                d.action = Action::AdmittedAuditMode;
                d.answer
                    .warnings
                    .push(format!("kpool (audit mode, not enforced): {}", d.reason));
                d
            } else {
                let mut d = Decided::reject(403, code, reason);
                d.decision = Decision::Deny;
                d.action = Action::Denied;
                d.answer.status = Some((403, format!("kpool: {}", d.reason)));
                d
            }
        };
        let mut d = match &outcome.decision {
            inject::Decision::Inject => {
                let patch = outcome.patch_json();
                if patch.len() > review::MAX_PATCH_BYTES {
                    // The engine's own bounds keep patches far below this; only a policy
                    // whose templates are this large gets here.
                    deny(
                        "patch-too-large",
                        format!(
                            "the patch for this broker pod is {} bytes in {} operations; kpool answers with at most {} bytes of patch: shrink the policy's sidecar templates",
                            patch.len(),
                            outcome.patch.len(),
                            review::MAX_PATCH_BYTES
                        ),
                    )
                } else {
                    let mut d = Decided::allow(Decision::Inject, "injected", String::new());
                    d.answer.patch = Some(patch);
                    d.patch_ops = outcome.patch.len();
                    d.action = Action::Patched;
                    d.reason = outcome
                        .changed
                        .iter()
                        .map(|p| p.as_str())
                        .collect::<Vec<_>>()
                        .join(",");
                    d
                }
            }
            inject::Decision::AlreadyInjected => {
                Decided::allow(Decision::AlreadyInjected, "already-injected", String::new())
            }
            inject::Decision::Skip(r) => {
                Decided::allow(Decision::Skip, r.code(), review::clip_owned(r.to_string()))
            }
            inject::Decision::Deny(r) => deny(r.code(), r.to_string()),
        };
        for note in &outcome.notes {
            d.answer.warnings.push(format!("kpool: {note}"));
        }
        d.subject = subject;
        d
    }

    fn validate(&self, req: &Request<'_>, operation: Operation) -> Decided {
        if !req.kind.as_ref().is_some_and(|k| k.is_pod()) {
            return Decided::allow(
                Decision::Allow,
                "unsupported-kind",
                "kpool guards only v1 Pods".to_owned(),
            );
        }
        if !matches!(operation, Operation::Create | Operation::Update) {
            let operation = req.operation.as_deref().unwrap_or_default();
            return Decided::allow(
                Decision::Allow,
                "not-create-or-update",
                review::clip_owned(format!(
                    "operation {operation}: the pool guard checks CREATE and UPDATE"
                )),
            );
        }
        let pod = match read_pod(req) {
            Ok(p) => p,
            Err(d) => return *d,
        };
        let namespace = req
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .or(pod.metadata.namespace.as_deref())
            .unwrap_or("default");
        let subject = subject_of(pod, req);
        // Who made the pod is proven only on CREATE.
        let creator = (operation == Operation::Create)
            .then(|| req.user_info.as_ref().and_then(|u| u.username.as_deref()))
            .flatten();
        let mut d = match guard::check(self.policy(), pod, namespace, creator) {
            Verdict::Allow(a) => {
                Decided::allow(Decision::Allow, a.code(), review::clip_owned(a.to_string()))
            }
            Verdict::Violation(v) if self.policy().spec().mode == Mode::Audit => {
                let message = review::clip_owned(v.message);
                let mut d = Decided::allow(Decision::Violation, v.rule, message.clone());
                d.action = Action::AdmittedAuditMode;
                d.answer
                    .warnings
                    .push(format!("{message} (audit mode, not enforced)"));
                d
            }
            Verdict::Violation(v) => {
                let mut d = Decided::reject(403, v.rule, review::clip_owned(v.message));
                d.decision = Decision::Violation;
                d.action = Action::Denied;
                d
            }
        };
        d.subject = subject;
        d
    }

    /// Records metrics around one request (in-flight gauge).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// The pod under review, or the rejection to answer with.
fn read_pod<'q, 'r>(req: &'q Request<'r>) -> Result<&'q PodView<'r>, Box<Decided>> {
    match &req.object {
        None => Err(Box::new(Decided::reject(
            400,
            "no-object",
            "request.object: missing".to_owned(),
        ))),
        Some(Object::Pod(pod)) => Ok(pod),
        Some(Object::Unreadable(e)) => Err(Box::new(Decided::reject(
            400,
            "bad-object",
            // A parser's message quotes the value it could not read, which can be most of
            // the request.
            review::clip_owned(format!(
                "request.object is not a readable Pod: {}",
                prefixed(&e.to_string())
            )),
        ))),
    }
}

fn prefixed(e: &str) -> String {
    // PodError paths are relative to the object.
    match e.strip_prefix(".: ") {
        Some(rest) => rest.to_owned(),
        None => format!("request.object.{e}"),
    }
}

fn subject_of(pod: &PodView<'_>, req: &Request<'_>) -> Subject {
    let meta = &pod.metadata;
    let name = meta
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .or_else(|| meta.generate_name.as_deref().map(|g| format!("{g}*")))
        .or_else(|| req.name.as_deref().map(str::to_owned))
        .unwrap_or_default();
    Subject {
        namespace: req
            .namespace
            .as_deref()
            .or(meta.namespace.as_deref())
            .unwrap_or_default()
            .to_owned(),
        name,
        uid: meta.uid.as_deref().unwrap_or_default().to_owned(),
    }
}

fn review_error_code(e: &ReviewError) -> &'static str {
    match e {
        ReviewError::Json(_) => "malformed-json",
        ReviewError::ApiVersion(_) => "wrong-api-version",
        ReviewError::Kind(_) => "wrong-kind",
        ReviewError::NoRequest => "no-request",
        ReviewError::NoUid => "no-uid",
        ReviewError::UidTooLong(_) => "uid-too-long",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_is_read_by_its_exact_api_name() {
        for op in Operation::NAMED {
            assert_eq!(Operation::parse(op.as_str()), op);
        }
        for other in ["", "create", "PATCH", " CREATE", "CREATE "] {
            assert_eq!(Operation::parse(other), Operation::Other, "{other:?}");
        }
    }
}
