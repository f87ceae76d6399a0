//! `admission.k8s.io/v1` AdmissionReview: a borrowing decode of just what kpool reads, and
//! the response.
//!
//! The decode is one pass: the envelope and the engine's partial pod view are read
//! together, so the object's bytes are scanned once. Only when that fails does a second,
//! slower pass run (envelope first, object kept raw, then the pod view with field-path
//! tracking) so that a bad body or object gets an error naming what is wrong; both passes
//! deserialise the same bytes with the same types, so a body the fast pass reads is read
//! the same way by the slow one. Both stop at the pod view's item budget
//! ([`crate::inject::MAX_POD_ITEMS`]): a pod with more items is an [`Object::Unreadable`]
//! naming the list, so what a decode builds stays a few MiB whatever the body holds.

use std::borrow::Cow;
use std::fmt;

use kpool_policy::push_json_str;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::inject::patch::push_index;
use crate::inject::pod::Str;
use crate::inject::{PodError, PodView};

/// The only AdmissionReview version kpool speaks.
pub const API_VERSION: &str = "admission.k8s.io/v1";

/// The longest request uid accepted. The answer echoes the uid, and the API server's are
/// UUIDs (36 bytes).
pub const MAX_UID_BYTES: usize = 256;

/// Messages (status, warnings, the reason of a 400) are cut to this many bytes: they can
/// quote the request (a label value, a container list, a parser's error), and an answer must
/// stay small whatever the request holds.
pub const MAX_MESSAGE_BYTES: usize = 2048;

/// At most this many warnings are sent (the last says how many more there were).
pub const MAX_WARNINGS: usize = 16;

/// The largest JSON patch sent; a larger one is refused (its base64 is 4/3 of this). With
/// the bounds above, an answer stays under 1 MiB (`MAX_ANSWER_BYTES`) whatever the request.
pub const MAX_PATCH_BYTES: usize = 512 * 1024;

/// What the bounds above guarantee for every answer body (and every 400 body).
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// `s`, cut to [`MAX_MESSAGE_BYTES`] at a character boundary, saying how much was left out.
pub fn clip(s: &str) -> Cow<'_, str> {
    if s.len() <= MAX_MESSAGE_BYTES {
        return Cow::Borrowed(s);
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!(
        "{}... ({} more bytes not shown)",
        &s[..end],
        s.len() - end
    ))
}

/// [`clip`] for an owned message.
pub fn clip_owned(s: String) -> String {
    match clip(&s) {
        Cow::Borrowed(_) => s,
        Cow::Owned(c) => c,
    }
}

/// A request as the API server sends it, generic over how `request.object` is read: as
/// the pod view (the fast pass) or as raw text (the slow pass).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn<'a, O> {
    #[serde(borrow, default)]
    api_version: Option<Str<'a>>,
    #[serde(borrow, default)]
    kind: Option<Str<'a>>,
    #[serde(borrow, default = "Option::default")]
    request: Option<RequestIn<'a, O>>,
}

/// `request` of an AdmissionReview.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestIn<'a, O> {
    #[serde(borrow, default)]
    pub uid: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub kind: Option<GroupVersionKind<'a>>,
    #[serde(borrow, default)]
    pub name: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub namespace: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub operation: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub user_info: Option<UserInfo<'a>>,
    #[serde(default)]
    pub dry_run: Option<bool>,
    #[serde(default = "Option::default")]
    pub object: Option<O>,
}

/// A decoded request: the envelope's fields, and the object as the engine reads it.
pub type Request<'a> = RequestIn<'a, Object<'a>>;

/// `request.object`, read as a pod.
#[derive(Debug)]
// The pod is what nearly every request carries; boxing it would allocate per request.
#[allow(clippy::large_enum_variant)]
pub enum Object<'a> {
    Pod(PodView<'a>),
    /// Present but not readable as a pod; the error's path is relative to the object.
    Unreadable(PodError),
}

impl<'de: 'a, 'a> Deserialize<'de> for Object<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        PodView::deserialize(d).map(Object::Pod)
    }
}

/// The kind of the object under review.
#[derive(Debug, Default, Deserialize)]
pub struct GroupVersionKind<'a> {
    #[serde(borrow, default)]
    pub group: Str<'a>,
    #[serde(borrow, default)]
    pub version: Str<'a>,
    #[serde(borrow, default)]
    pub kind: Str<'a>,
}

impl fmt::Display for GroupVersionKind<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() {
            write!(f, "{}/{}", self.version.as_str(), self.kind.as_str())
        } else {
            write!(
                f,
                "{}/{}/{}",
                self.group.as_str(),
                self.version.as_str(),
                self.kind.as_str()
            )
        }
    }
}

impl GroupVersionKind<'_> {
    /// True for core `v1` `Pod`.
    pub fn is_pod(&self) -> bool {
        self.group.is_empty() && self.version.as_str() == "v1" && self.kind.as_str() == "Pod"
    }
}

/// Who made the request.
#[derive(Debug, Default, Deserialize)]
pub struct UserInfo<'a> {
    #[serde(borrow, default)]
    pub username: Option<Str<'a>>,
}

/// Why a body is not an AdmissionReview kpool can answer (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    #[error("body is not valid JSON for an AdmissionReview: {0}")]
    Json(String),
    #[error("apiVersion: expected {API_VERSION:?}, found {0}")]
    ApiVersion(String),
    #[error("kind: expected \"AdmissionReview\", found {0}")]
    Kind(String),
    #[error("request: missing (an AdmissionReview from the API server always has one)")]
    NoRequest,
    #[error("request.uid: missing or empty")]
    NoUid,
    #[error(
        "request.uid: expected at most {MAX_UID_BYTES} bytes (the API server sends a UUID), found {0} bytes"
    )]
    UidTooLong(usize),
}

fn found(s: Option<&Str<'_>>) -> String {
    s.map_or_else(
        || "nothing".to_owned(),
        |s| clip_owned(format!("{:?}", s.as_str())),
    )
}

/// Decodes and checks the envelope, and reads the object as a pod.
pub fn decode(body: &[u8]) -> Result<Request<'_>, ReviewError> {
    // UTF-8 is checked once for the whole body (fast), not per borrowed string.
    let fast = std::str::from_utf8(body)
        .ok()
        .and_then(|text| serde_json::from_str::<ReviewIn<'_, Object<'_>>>(text).ok());
    match fast {
        Some(review) => check(review),
        None => decode_slowly(body),
    }
}

/// The second pass: the envelope with the object kept raw, then the object on its own, so
/// each error says where it is.
fn decode_slowly(body: &[u8]) -> Result<Request<'_>, ReviewError> {
    let review: ReviewIn<'_, &RawValue> =
        serde_json::from_slice(body).map_err(|e| ReviewError::Json(clip_owned(e.to_string())))?;
    let review = check(review)?;
    let object = review
        .object
        .map(|raw| match PodView::from_json(raw.get()) {
            Ok(pod) => Object::Pod(pod),
            Err(e) => Object::Unreadable(e),
        });
    Ok(RequestIn {
        uid: review.uid,
        kind: review.kind,
        name: review.name,
        namespace: review.namespace,
        operation: review.operation,
        user_info: review.user_info,
        dry_run: review.dry_run,
        object,
    })
}

fn check<O>(review: ReviewIn<'_, O>) -> Result<RequestIn<'_, O>, ReviewError> {
    if review.api_version.as_deref() != Some(API_VERSION) {
        return Err(ReviewError::ApiVersion(found(review.api_version.as_ref())));
    }
    if review.kind.as_deref() != Some("AdmissionReview") {
        return Err(ReviewError::Kind(found(review.kind.as_ref())));
    }
    let request = review.request.ok_or(ReviewError::NoRequest)?;
    match request.uid.as_deref().map_or(0, str::len) {
        0 => Err(ReviewError::NoUid),
        n if n > MAX_UID_BYTES => Err(ReviewError::UidTooLong(n)),
        _ => Ok(request),
    }
}

/// What to answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Answer {
    pub allowed: bool,
    /// JSON patch bytes; `None` for no patch.
    pub patch: Option<Vec<u8>>,
    /// HTTP-like code and message when denying (or explaining).
    pub status: Option<(u16, String)>,
    pub warnings: Vec<String>,
}

/// Encodes the response AdmissionReview for request `uid`.
///
/// Written by hand rather than through serde: the patch goes straight from bytes to base64
/// in the output (a serde string would be scanned again for escapes), and the envelope's
/// keys are constants. The status message and each warning are [`clip`]ped and at most
/// [`MAX_WARNINGS`] warnings are written, so with a uid the decode accepted and a patch of at
/// most [`MAX_PATCH_BYTES`] the answer is under [`MAX_ANSWER_BYTES`].
pub fn encode(uid: &str, answer: &Answer) -> Vec<u8> {
    let patch_len = answer.patch.as_ref().map_or(0, |p| p.len().div_ceil(3) * 4);
    let mut out = String::with_capacity(160 + uid.len() + patch_len);
    out.push_str(
        r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"#,
    );
    push_json_str(&mut out, uid);
    out.push_str(if answer.allowed {
        r#","allowed":true"#
    } else {
        r#","allowed":false"#
    });
    if let Some(patch) = &answer.patch {
        // Base64, as Go encodes `[]byte`.
        out.push_str(r#","patchType":"JSONPatch","patch":""#);
        base64_simd::STANDARD.encode_append(patch, &mut out);
        out.push('"');
    }
    if let Some((code, message)) = &answer.status {
        out.push_str(r#","status":{"code":"#);
        push_index(&mut out, usize::from(*code));
        out.push_str(r#","message":"#);
        push_json_str(&mut out, &clip(message));
        out.push('}');
    }
    if !answer.warnings.is_empty() {
        out.push_str(r#","warnings":["#);
        let n = answer.warnings.len();
        let shown = if n > MAX_WARNINGS {
            MAX_WARNINGS - 1
        } else {
            n
        };
        for (i, w) in answer.warnings[..shown].iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_str(&mut out, &clip(w));
        }
        if shown < n {
            out.push(',');
            push_json_str(
                &mut out,
                &format!("kpool: {} more warnings not shown", n - shown),
            );
        }
        out.push(']');
    }
    out.push_str("}}");
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    /// The response as serde would build it, for comparison with the hand-written encoder.
    fn expected(uid: &str, a: &Answer) -> Value {
        let mut response = json!({"uid": uid, "allowed": a.allowed});
        if let Some(p) = &a.patch {
            response["patchType"] = json!("JSONPatch");
            response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(p));
        }
        if let Some((code, message)) = &a.status {
            response["status"] = json!({"code": code, "message": message});
        }
        if !a.warnings.is_empty() {
            response["warnings"] = json!(a.warnings);
        }
        json!({"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response})
    }

    #[test]
    fn encodes_a_patch_answer() {
        let a = Answer {
            allowed: true,
            patch: Some(br#"[{"op":"add","path":"/a","value":1}]"#.to_vec()),
            ..Answer::default()
        };
        let text = String::from_utf8(encode("u-1", &a)).expect("utf8");
        assert_eq!(
            text,
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"u-1","allowed":true,"patchType":"JSONPatch","patch":"W3sib3AiOiJhZGQiLCJwYXRoIjoiL2EiLCJ2YWx1ZSI6MX1d"}}"#
        );
    }

    /// Every captured review, and variants that break the object in ways only the slow pass
    /// can name: both passes must read the same request.
    #[test]
    fn one_pass_and_two_pass_decodes_agree() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/admission");
        let mut bodies = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("fixtures") {
            let path = entry.expect("entry").path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let text = std::fs::read_to_string(path).expect("read");
            let v: Value = serde_json::from_str(&text).expect("json");
            bodies.push(text);
            for (pointer, bad) in [
                ("/request/object/spec/containers", json!("not-a-list")),
                ("/request/object/metadata/labels", json!([1])),
                ("/request/object", Value::Null),
                ("/request/dryRun", json!("yes")),
            ] {
                let mut w = v.clone();
                if let Some(slot) = w.pointer_mut(pointer) {
                    *slot = bad;
                    bodies.push(w.to_string());
                }
            }
        }
        assert!(bodies.len() > 8, "fixtures found in {}", dir.display());
        for body in &bodies {
            let fast = format!("{:?}", decode(body.as_bytes()));
            let slow = format!("{:?}", decode_slowly(body.as_bytes()));
            assert_eq!(fast, slow, "body {body}");
        }
    }

    fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, c) in m {
                    let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                    out.push(p.clone());
                    pointers(c, p, out);
                }
            }
            Value::Array(items) => {
                for (i, c) in items.iter().enumerate() {
                    let p = format!("{at}/{i}");
                    out.push(p.clone());
                    pointers(c, p, out);
                }
            }
            _ => {}
        }
    }

    fn captured() -> (Value, Vec<String>) {
        let text = include_str!("../../../tests/fixtures/admission/000-create-kafka-0.json");
        let v: Value = serde_json::from_str(text).expect("fixture");
        let mut all = Vec::new();
        pointers(&v, String::new(), &mut all);
        (v, all)
    }

    proptest! {
        /// Any one field of the captured review replaced by a value of another type, or the
        /// body cut or corrupted anywhere: the one-pass decode answers exactly as the
        /// two-pass one.
        #[test]
        fn one_pass_agrees_with_two_pass_on_broken_reviews(
            pick in any::<proptest::sample::Index>(),
            replacement in proptest::sample::select(vec![
                json!(null), json!(1), json!(-2.5), json!("s"), json!(true), json!([]),
                json!({}), json!([1, "x"]), json!({"a": {"b": []}}),
            ]),
            cut in any::<proptest::sample::Index>(),
            flip in proptest::option::of((any::<proptest::sample::Index>(), any::<u8>())),
        ) {
            let (v, all) = captured();
            let mut broken = v.clone();
            if let Some(slot) = broken.pointer_mut(pick.get(all.as_slice()).as_str()) {
                *slot = replacement;
            }
            let text = broken.to_string();
            let mut bytes = text.into_bytes();
            let whole = bytes.clone();
            prop_assert_eq!(format!("{:?}", decode(&whole)), format!("{:?}", decode_slowly(&whole)));
            if let Some((at, b)) = flip {
                let i = at.index(bytes.len());
                bytes[i] = b;
            }
            bytes.truncate(cut.index(bytes.len() + 1));
            prop_assert_eq!(format!("{:?}", decode(&bytes)), format!("{:?}", decode_slowly(&bytes)));
        }

        #[test]
        fn hand_written_encoding_matches_serde(
            uid in "\\PC{0,12}|[\u{0}-\u{1f}\"\\\\]{0,4}",
            allowed: bool,
            patch in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
            status in proptest::option::of((100u16..=65535, "\\PC{0,20}|[\u{0}-\u{1f}\"\\\\/]{0,6}")),
            warnings in proptest::collection::vec("\\PC{0,10}|[\u{0}-\u{1f}\"]{0,3}", 0..3),
        ) {
            let a = Answer { allowed, patch, status, warnings };
            let out = encode(&uid, &a);
            let got: Value = serde_json::from_slice(&out).expect("valid JSON");
            prop_assert_eq!(got, expected(&uid, &a));
        }
    }
}
