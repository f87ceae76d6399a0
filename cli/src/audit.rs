//! The audit record: one JSON line per decision, the same schema for every component.

use serde::Serialize;

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
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AuditRecord {
    /// RFC 3339, UTC, microseconds.
    pub time: String,
    /// `webhook` or `agent`.
    pub component: &'static str,
    /// What was decided (`inject`, `skip`, `deny`, `allow`, `violation`, `override`, ...).
    pub decision: String,
    pub subject: Subject,
    /// Why, in words; empty when the decision needs no explanation.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Stable machine code of the reason (`not-a-broker`, `tolerates-pool-taint`, ...).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason_code: String,
    pub policy_hash: String,
    /// What was done (`patched`, `denied`, `admitted`, `admitted-audit-mode`, `evicted`, ...).
    pub action: String,
    /// `enforce` or `audit`.
    pub mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admission: Option<AdmissionFacts>,
}

/// Facts of an admission request.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AdmissionFacts {
    pub request_uid: String,
    pub endpoint: &'static str,
    pub user: String,
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
            decision: "inject".into(),
            policy_hash: "sha256:x".into(),
            action: "patched".into(),
            mode: "enforce",
            ..Default::default()
        };
        let line = r.to_line();
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["decision"], "inject");
        assert!(v.get("reason").is_none());
        assert!(v.get("admission").is_none());
    }
}
