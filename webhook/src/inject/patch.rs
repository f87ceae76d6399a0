//! RFC 6902 JSON-patch operations against the raw pod.
//!
//! Values are kept as JSON text: what depends only on the policy is serialised once when
//! the engine is built, so a request copies bytes instead of cloning `Value` trees.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

/// Valid JSON text: shared when it depends only on the policy (built once, cloned per
/// request for the price of a reference count), owned when a request rendered it.
#[derive(Clone)]
pub struct RawJson(Repr);

#[derive(Clone)]
enum Repr {
    Shared(Arc<str>),
    Owned(String),
}

impl RawJson {
    /// Serialises a value.
    pub fn value(v: &Value) -> Self {
        Self(Repr::Owned(
            serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned()),
        ))
    }

    /// A JSON string.
    pub fn string(s: &str) -> Self {
        let mut out = String::with_capacity(s.len() + 2);
        write_json_str(&mut out, s);
        Self(Repr::Owned(out))
    }

    /// Text already known to be valid JSON (produced by a JSON writer).
    pub(crate) fn trusted(text: String) -> Self {
        Self(Repr::Owned(text))
    }

    /// The same text, made cheap to clone: for what is built once and used by every
    /// request.
    pub(crate) fn shared(self) -> Self {
        match self.0 {
            Repr::Owned(s) => Self(Repr::Shared(Arc::from(s))),
            shared => Self(shared),
        }
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Shared(s) => s,
            Repr::Owned(s) => s,
        }
    }

    /// Parses the text back into a value.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.as_str()).unwrap_or(Value::Null)
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for RawJson {}

impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub use kpool_policy::push_json_str as write_json_str;

/// The operation kind. kpool adds (which also replaces an existing object member),
/// replaces array items, and removes the duplicates of env entries it owns, so the pod's
/// other fields are never rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Replace,
    /// Removes the array item at `path`; the operation's value is not used.
    Remove,
}

/// One patch operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchOp {
    pub op: Op,
    pub path: String,
    pub value: RawJson,
}

impl PatchOp {
    /// An `add` operation.
    pub fn add(path: impl Into<String>, value: RawJson) -> Self {
        Self {
            op: Op::Add,
            path: path.into(),
            value,
        }
    }

    /// A `replace` operation.
    pub fn replace(path: impl Into<String>, value: RawJson) -> Self {
        Self {
            op: Op::Replace,
            path: path.into(),
            value,
        }
    }

    /// A `remove` operation (its value is JSON `null` and is not written).
    pub fn remove(path: impl Into<String>) -> Self {
        Self {
            op: Op::Remove,
            path: path.into(),
            value: RawJson::trusted("null".to_owned()),
        }
    }

    /// The JSON pointer the operation targets.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The operation as a JSON value.
    pub fn to_value(&self) -> Value {
        match self.op {
            Op::Remove => serde_json::json!({"op": "remove", "path": self.path}),
            Op::Add | Op::Replace => serde_json::json!({
                "op": if self.op == Op::Add { "add" } else { "replace" },
                "path": self.path,
                "value": self.value.to_value(),
            }),
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

/// `base` followed by `suffix`, allocated once at its final size (`format!` grows its
/// buffer step by step, and these paths are built for every operation of every request).
pub fn join(base: &str, suffix: &str) -> String {
    let mut s = String::with_capacity(base.len() + suffix.len());
    s.push_str(base);
    s.push_str(suffix);
    s
}

/// `/spec/containers/<index><tail>`.
pub fn container_path(index: usize, tail: &str) -> String {
    let mut s = String::with_capacity(24 + tail.len());
    s.push_str("/spec/containers/");
    push_index(&mut s, index);
    s.push_str(tail);
    s
}

/// Appends a decimal index.
pub fn push_index(s: &mut String, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[i..] {
        s.push(char::from(d));
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
    let len: usize = ops
        .iter()
        .map(|o| o.path.len() + o.value.as_str().len() + 32)
        .sum();
    let mut out = String::with_capacity(len + 2);
    out.push('[');
    for (i, op) in ops.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(match op.op {
            Op::Add => "{\"op\":\"add\",\"path\":",
            Op::Replace => "{\"op\":\"replace\",\"path\":",
            Op::Remove => "{\"op\":\"remove\",\"path\":",
        });
        write_json_str(&mut out, &op.path);
        if op.op != Op::Remove {
            out.push_str(",\"value\":");
            out.push_str(op.value.as_str());
        }
        out.push('}');
    }
    out.push(']');
    out.into_bytes()
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
    fn paths_are_built_like_format() {
        for n in [0usize, 7, 10, 99, 123_456, usize::MAX] {
            assert_eq!(
                container_path(n, "/env"),
                format!("/spec/containers/{n}/env")
            );
            let mut s = String::new();
            push_index(&mut s, n);
            assert_eq!(s, n.to_string());
        }
        assert_eq!(join("/spec/volumes", "/-"), "/spec/volumes/-");
    }

    #[test]
    fn ops_serialise_as_rfc6902() {
        let ops = [
            PatchOp::add("/a", RawJson::value(&json!({"x": [1]}))),
            PatchOp::replace("/b/0", RawJson::string("q\"uote")),
            PatchOp::remove("/c/1"),
        ];
        let text = to_json(&ops);
        assert_eq!(
            std::str::from_utf8(&text).expect("utf8"),
            r#"[{"op":"add","path":"/a","value":{"x":[1]}},{"op":"replace","path":"/b/0","value":"q\"uote"},{"op":"remove","path":"/c/1"}]"#
        );
        let parsed: Value = serde_json::from_slice(&text).expect("valid JSON");
        assert_eq!(parsed[0], ops[0].to_value());
        assert_eq!(parsed[2], ops[2].to_value());
        assert_eq!(to_json(&[]), b"[]");
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
