//! The operator's readiness override: pod annotation `kpool.io/readiness-override` holding
//! an RFC 3339 expiry, and `kpool.io/readiness-override-reason`. No override is forever.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Annotation holding the override's expiry.
pub const OVERRIDE_ANNOTATION: &str = "kpool.io/readiness-override";
/// Annotation holding why.
pub const OVERRIDE_REASON_ANNOTATION: &str = "kpool.io/readiness-override-reason";

/// An override in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub until: OffsetDateTime,
    /// The annotation's text, as the operator wrote it.
    pub until_text: String,
    pub reason: String,
}

/// What the annotations say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverrideStatus {
    None,
    Active(Override),
    Expired { until: String },
    Malformed { value: String, error: String },
}

/// Reads the override from a pod's annotations at `now`.
pub fn read_override<'a>(
    mut annotation: impl FnMut(&str) -> Option<&'a str>,
    now: OffsetDateTime,
) -> OverrideStatus {
    let Some(value) = annotation(OVERRIDE_ANNOTATION) else {
        return OverrideStatus::None;
    };
    let value = value.trim();
    match OffsetDateTime::parse(value, &Rfc3339) {
        Err(e) => OverrideStatus::Malformed {
            value: value.to_owned(),
            error: format!("expected an RFC 3339 time like 2026-11-21T18:00:00Z: {e}"),
        },
        Ok(until) if until <= now => OverrideStatus::Expired {
            until: value.to_owned(),
        },
        Ok(until) => OverrideStatus::Active(Override {
            until,
            until_text: value.to_owned(),
            reason: annotation(OVERRIDE_REASON_ANNOTATION)
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .unwrap_or("no reason given (kpool.io/readiness-override-reason)")
                .to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn read(pairs: &[(&str, &str)]) -> OverrideStatus {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        read_override(
            |k| {
                pairs
                    .iter()
                    .find(|(pk, _)| pk == k)
                    .map(|(_, v)| v.as_str())
            },
            datetime!(2026-11-21 12:00 UTC),
        )
    }

    #[test]
    fn active_expired_malformed_absent() {
        let OverrideStatus::Active(o) = read(&[
            (OVERRIDE_ANNOTATION, "2026-11-21T13:00:00Z"),
            (OVERRIDE_REASON_ANNOTATION, "INC-42 stuck rollout"),
        ]) else {
            panic!("must be active")
        };
        assert_eq!(o.reason, "INC-42 stuck rollout");
        assert_eq!(o.until_text, "2026-11-21T13:00:00Z");
        assert!(matches!(
            read(&[(OVERRIDE_ANNOTATION, "2026-11-21T11:59:59Z")]),
            OverrideStatus::Expired { .. }
        ));
        assert!(matches!(
            read(&[(OVERRIDE_ANNOTATION, "2026-11-21T12:00:00Z")]),
            OverrideStatus::Expired { .. }
        ));
        let OverrideStatus::Malformed { error, .. } = read(&[(OVERRIDE_ANNOTATION, "tomorrow")])
        else {
            panic!("malformed")
        };
        assert!(error.contains("RFC 3339"));
        assert_eq!(read(&[]), OverrideStatus::None);
        let OverrideStatus::Active(o) = read(&[(OVERRIDE_ANNOTATION, "2026-11-21T14:00:00+01:00")])
        else {
            panic!("offsets are fine")
        };
        assert!(o.reason.starts_with("no reason given"));
    }
}
