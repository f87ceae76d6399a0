//! RFC 6902 JSON-patch operations against the raw pod.

use serde::Serialize;
use serde_json::Value;

/// One patch operation. kpool only ever adds (which also replaces an existing member) or
/// replaces array items, so the pod's other fields are never rewritten.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum PatchOp {
    Add { path: String, value: Value },
    Replace { path: String, value: Value },
}

impl PatchOp {
    /// The JSON pointer the operation targets.
    pub fn path(&self) -> &str {
        match self {
            Self::Add { path, .. } | Self::Replace { path, .. } => path,
        }
    }
}

/// Appends `segment` to a JSON pointer, escaping `~` and `/` (RFC 6901).
pub fn push_segment(pointer: &mut String, segment: &str) {
    pointer.push('/');
    for c in segment.chars() {
        match c {
            '~' => pointer.push_str("~0"),
            '/' => pointer.push_str("~1"),
            c => pointer.push(c),
        }
    }
}

/// A JSON pointer from segments.
pub fn pointer(segments: &[&str]) -> String {
    let mut p = String::with_capacity(segments.iter().map(|s| s.len() + 1).sum());
    for s in segments {
        push_segment(&mut p, s);
    }
    p
}

/// Serialises operations as the JSON array the API server expects.
pub fn to_json(ops: &[PatchOp]) -> Vec<u8> {
    // Serialising Values and Strings cannot fail.
    serde_json::to_vec(ops).unwrap_or_else(|_| b"[]".to_vec())
}

/// True when every member of `want` is in `have` with the same value (arrays compare
/// whole). Fields the API server defaults after admission therefore do not count as drift.
pub fn is_subset(want: &Value, have: &Value) -> bool {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => w
            .iter()
            .all(|(k, wv)| h.get(k).is_some_and(|hv| is_subset(wv, hv))),
        (Value::Array(w), Value::Array(h)) => {
            w.len() == h.len() && w.iter().zip(h).all(|(a, b)| is_subset(a, b))
        }
        (w, h) => w == h,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn pointers_escape_slash_and_tilde() {
        assert_eq!(
            pointer(&["metadata", "labels", "kpool.io/rack"]),
            "/metadata/labels/kpool.io~1rack"
        );
        assert_eq!(pointer(&["a~b"]), "/a~0b");
    }

    #[test]
    fn ops_serialise_as_rfc6902() {
        let ops = [PatchOp::Add {
            path: "/a".into(),
            value: json!(1),
        }];
        assert_eq!(to_json(&ops), br#"[{"op":"add","path":"/a","value":1}]"#);
    }

    #[test]
    fn subset_ignores_defaulted_fields() {
        let want = json!({"exec": {"command": ["x"]}, "periodSeconds": 10});
        let have = json!({"exec": {"command": ["x"]}, "periodSeconds": 10, "successThreshold": 1});
        assert!(is_subset(&want, &have));
        assert!(!is_subset(&have, &want));
        assert!(!is_subset(&json!({"exec": {"command": ["x", "y"]}}), &have));
    }
}
