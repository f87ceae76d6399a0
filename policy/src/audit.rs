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

/// Formats a unix time (seconds, nanoseconds) as RFC 3339 UTC with microseconds.
pub fn rfc3339_micros(unix_secs: i64, nanos: u32) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60,
        nanos / 1000
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's
/// algorithm), so the audit path needs no date library.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Now, as RFC 3339 UTC with microseconds.
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339_micros(
        i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
        now.subsec_nanos(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339_micros(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339_micros(1_795_258_543, 123_456_789),
            "2026-11-21T10:55:43.123456Z"
        );
        assert_eq!(
            rfc3339_micros(951_782_400, 0),
            "2000-02-29T00:00:00.000000Z"
        );
        assert_eq!(rfc3339_micros(-1, 0), "1969-12-31T23:59:59.000000Z");
    }

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
