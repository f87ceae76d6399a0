//! The audit record: one JSON line per decision, the same schema for every component.
//!
//! What was decided ([`Decision`]) and what was done ([`Action`]) are closed sets, each
//! value written as one string ([`Decision::as_str`], [`Action::as_str`]); the README lists
//! them, and a test holds the two to each other.

use kpool_policy::model::Mode;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Who or what a decision was about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Subject {
    pub namespace: String,
    /// The name, or `generateName*` when the object has no name yet.
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
}

/// One decision. Fields that do not apply to a component are omitted from the line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRecord {
    /// RFC 3339, UTC, microseconds.
    pub time: String,
    /// `webhook` or `agent`.
    pub component: &'static str,
    /// What was decided.
    pub decision: Decision,
    pub subject: Subject,
    /// Why, in words; empty when the decision needs no explanation.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Stable machine code of the reason (`not-a-broker`, `tolerates-pool-taint`, ...).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason_code: String,
    pub policy_hash: String,
    /// What was done.
    pub action: Action,
    /// The policy's mode: `enforce` or `audit` ([`Mode::as_str`]).
    #[serde(serialize_with = "mode_as_str")]
    pub mode: Mode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admission: Option<AdmissionFacts>,
}

fn mode_as_str<S: Serializer>(mode: &Mode, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(mode.as_str())
}

/// Defines a closed set of audit values: the enum, its one `as_str`, `ALL`, and serde as
/// that string.
macro_rules! audit_values {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident => $text:literal, )+ }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The value as written in the audit line (and in metric labels).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == text)
                    .ok_or_else(|| {
                        serde::de::Error::custom(format_args!(
                            concat!("unknown ", stringify!($name), " {:?}"),
                            text
                        ))
                    })
            }
        }
    };
}

audit_values! {
    /// What was decided: the webhook's answers, the guards' findings (webhook and agent), the
    /// agent's readiness overrides and rack reassignments.
    pub enum Decision {
        /// Webhook: a broker pod gets its identity (patch).
        Inject => "inject",
        /// Webhook: the pod already carries this policy's injection.
        AlreadyInjected => "already-injected",
        /// Webhook: nothing to inject (not a broker, not a CREATE, not a pod).
        Skip => "skip",
        /// Webhook: the pool guard lets the pod in.
        Allow => "allow",
        /// Webhook: a broker pod the engine cannot inject is refused.
        Deny => "deny",
        /// Webhook and agent: the pool guard found a violation.
        Violation => "violation",
        /// Webhook: the review itself cannot be answered (unreadable, too large).
        Error => "error",
        /// Agent: a readiness override decides a pod's readiness.
        Override => "override",
        /// Agent: a readiness override has expired.
        OverrideExpired => "override-expired",
        /// Agent: a malformed readiness override is ignored.
        OverrideIgnored => "override-ignored",
        /// Agent: a readiness override annotation was removed.
        OverrideRemoved => "override-removed",
        /// Agent (the Lease holder): a partition breaks the rack rule and is due for
        /// reassignment.
        RackReassignment => "rack-reassignment",
    }
}

audit_values! {
    /// What was done about a decision.
    pub enum Action {
        /// Webhook: allowed with the injection patch.
        Patched => "patched",
        /// Webhook: allowed as is.
        Admitted => "admitted",
        /// Webhook: a deny or violation, admitted because the policy is in `audit` mode.
        AdmittedAuditMode => "admitted-audit-mode",
        /// Webhook: refused (403).
        Denied => "denied",
        /// Webhook: the review was not answered with a decision (400, 413).
        Rejected => "rejected",
        /// Agent guard: the API server accepted the eviction.
        Evicted => "evicted",
        /// Agent guard: the pod (with that uid) was gone before the eviction or deletion.
        AlreadyGone => "already-gone",
        /// Agent guard: the eviction was still refused (429) after every attempt.
        EvictionBlocked => "eviction-blocked",
        /// Agent guard: the eviction failed otherwise.
        EvictionFailed => "eviction-failed",
        /// Agent guard: reported (Event), nothing evicted.
        Reported => "reported",
        /// Agent guard: reported only, because the policy is in `audit` mode.
        ReportedAuditMode => "reported-audit-mode",
        /// Agent guard: deleted after `guard.deleteAfterRefusals` refused evictions.
        Deleted => "deleted",
        /// Agent guard: that deletion failed.
        DeleteFailed => "delete-failed",
        /// Agent: the override makes the readiness answer ready.
        ReportedReady => "reported-ready",
        /// Agent: readiness is Kafka's verdict again.
        VerdictFromKafka => "verdict-from-kafka",
        /// Agent racks healing: the reassignment was handed to the executor.
        ReassignmentSubmitted => "reassignment-submitted",
        /// Agent racks healing: the executor left the reassignment alone (the reason says why).
        ReassignmentLeftAlone => "reassignment-left-alone",
    }
}

/// Facts of an admission request.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AdmissionFacts {
    pub request_uid: String,
    pub endpoint: &'static str,
    pub user: String,
    /// `request.operation` as the request names it (`CREATE`, `UPDATE`, ...; verbatim).
    pub operation: String,
    pub dry_run: bool,
    /// `group/version/Kind` (`v1/Pod` for the core group).
    pub kind: String,
    pub patch_ops: usize,
    pub latency_us: u64,
}

impl AuditRecord {
    /// The record as one JSON line, newline included.
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_else(|e| {
            format!(
                "{{\"component\":\"{}\",\"error\":\"audit record does not encode: {e}\"}}",
                self.component
            )
        });
        line.push('\n');
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_is_one_json_object() {
        let r = AuditRecord {
            time: "t".into(),
            component: "webhook",
            decision: Decision::Inject,
            subject: Subject::default(),
            reason: String::new(),
            reason_code: String::new(),
            policy_hash: "sha256:x".into(),
            action: Action::Patched,
            mode: Mode::Enforce,
            admission: None,
        };
        let line = r.to_line();
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["decision"], "inject");
        assert!(v.get("reason").is_none());
        assert!(v.get("admission").is_none());
        assert_eq!(v["action"], "patched");
        assert_eq!(v["mode"], "enforce");
    }

    /// Each value serialises as its `as_str` and reads back as itself; no two share a string.
    fn round_trips<T>(all: &[T], as_str: fn(T) -> &'static str)
    where
        T: Copy + PartialEq + std::fmt::Debug + Serialize + for<'de> Deserialize<'de>,
    {
        let mut seen = std::collections::BTreeSet::new();
        for &v in all {
            let text = as_str(v);
            assert!(seen.insert(text), "{text} twice");
            let json = serde_json::to_string(&v).expect("encodes");
            assert_eq!(json, format!("\"{text}\""));
            let back: T = serde_json::from_str(&json).expect("decodes");
            assert_eq!(back, v);
        }
        assert!(serde_json::from_str::<T>("\"no-such-value\"").is_err());
    }

    #[test]
    fn decisions_and_actions_round_trip_through_serde_as_their_string() {
        round_trips(Decision::ALL, Decision::as_str);
        round_trips(Action::ALL, Action::as_str);
        for v in Decision::ALL {
            assert_eq!(v.to_string(), v.as_str());
        }
        for v in Action::ALL {
            assert_eq!(v.to_string(), v.as_str());
        }
    }

    /// `ALL` lists every variant: this match has no wildcard, so a new variant fails to
    /// compile here until it is counted, and the count is checked against `ALL`.
    #[test]
    fn all_lists_every_variant() {
        let decision_count = |d: Decision| match d {
            Decision::Inject
            | Decision::AlreadyInjected
            | Decision::Skip
            | Decision::Allow
            | Decision::Deny
            | Decision::Violation
            | Decision::Error
            | Decision::Override
            | Decision::OverrideExpired
            | Decision::OverrideIgnored
            | Decision::OverrideRemoved
            | Decision::RackReassignment => 12,
        };
        let action_count = |a: Action| match a {
            Action::Patched
            | Action::Admitted
            | Action::AdmittedAuditMode
            | Action::Denied
            | Action::Rejected
            | Action::Evicted
            | Action::AlreadyGone
            | Action::EvictionBlocked
            | Action::EvictionFailed
            | Action::Reported
            | Action::ReportedAuditMode
            | Action::Deleted
            | Action::DeleteFailed
            | Action::ReportedReady
            | Action::VerdictFromKafka
            | Action::ReassignmentSubmitted
            | Action::ReassignmentLeftAlone => 17,
        };
        assert_eq!(Decision::ALL.len(), decision_count(Decision::Inject));
        assert_eq!(Action::ALL.len(), action_count(Action::Patched));
    }

    #[test]
    fn mode_is_written_as_the_policy_writes_it() {
        for mode in [Mode::Enforce, Mode::Audit] {
            let r = AuditRecord {
                time: String::new(),
                component: "agent",
                decision: Decision::Violation,
                subject: Subject::default(),
                reason: String::new(),
                reason_code: String::new(),
                policy_hash: String::new(),
                action: Action::Reported,
                mode,
                admission: None,
            };
            let v: serde_json::Value = serde_json::from_str(&r.to_line()).expect("json");
            assert_eq!(v["mode"], mode.as_str());
            // the policy file's spelling, which the policy hash is computed over
            assert_eq!(serde_json::to_value(mode).expect("encodes"), mode.as_str());
        }
    }

    const README: &str = include_str!("../../README.md");

    /// The backticked values of the README line that starts with `- \`field\``: the
    /// documented set of that field.
    fn documented(field: &str) -> std::collections::BTreeSet<&'static str> {
        let start = format!("- `{field}`");
        let line = README
            .lines()
            .find(|l| l.starts_with(&start))
            .unwrap_or_else(|| panic!("README.md lists no {start}"));
        line[start.len()..].split('`').skip(1).step_by(2).collect()
    }

    #[test]
    fn the_readme_documents_exactly_the_decisions_and_actions_written() {
        let decisions: std::collections::BTreeSet<_> =
            Decision::ALL.iter().map(|d| d.as_str()).collect();
        assert_eq!(documented("decision"), decisions);
        let actions: std::collections::BTreeSet<_> =
            Action::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(documented("action"), actions);
    }

    /// Wherever the README quotes `` `action: a|b` `` or `` `decision: a|b` `` (the node guard
    /// section does), each value is one written.
    #[test]
    fn every_value_the_readme_quotes_is_written() {
        let text = README.replace('\n', " ");
        for (field, known) in [
            (
                "decision",
                Decision::ALL.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
            ),
            ("action", Action::ALL.iter().map(|a| a.as_str()).collect()),
        ] {
            let quote = format!("`{field}: ");
            let mut quoted = 0;
            for (at, _) in text.match_indices(&quote) {
                let rest = &text[at + quote.len()..];
                let values = &rest[..rest.find('`').expect("closing backtick")];
                for v in values.split('|').map(str::trim) {
                    assert!(known.contains(&v), "README quotes {field}: {v}");
                    quoted += 1;
                }
            }
            assert!(quoted > 0, "README quotes no {field}");
        }
    }
}
