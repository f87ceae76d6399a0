//! `admission.k8s.io/v1` AdmissionReview: a borrowing decode of just what kpool reads (the
//! pod object stays raw JSON text for the engine's own partial read), and the response.

use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::inject::pod::Str;

/// The only AdmissionReview version kpool speaks.
pub const API_VERSION: &str = "admission.k8s.io/v1";

/// A request as the API server sends it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewIn<'a> {
    #[serde(borrow, default)]
    pub api_version: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub kind: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub request: Option<RequestIn<'a>>,
}

/// `request` of an AdmissionReview.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestIn<'a> {
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
    #[serde(borrow, default)]
    pub object: Option<&'a RawValue>,
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
}

fn found(s: Option<&Str<'_>>) -> String {
    s.map_or_else(|| "nothing".to_owned(), |s| format!("{:?}", s.as_str()))
}

/// Decodes and checks the envelope.
pub fn decode(body: &[u8]) -> Result<RequestIn<'_>, ReviewError> {
    let review: ReviewIn<'_> =
        serde_json::from_slice(body).map_err(|e| ReviewError::Json(e.to_string()))?;
    if review.api_version.as_deref() != Some(API_VERSION) {
        return Err(ReviewError::ApiVersion(found(review.api_version.as_ref())));
    }
    if review.kind.as_deref() != Some("AdmissionReview") {
        return Err(ReviewError::Kind(found(review.kind.as_ref())));
    }
    let request = review.request.ok_or(ReviewError::NoRequest)?;
    if request.uid.as_deref().is_none_or(str::is_empty) {
        return Err(ReviewError::NoUid);
    }
    Ok(request)
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

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    /// Base64, as Go encodes `[]byte`.
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<StatusOut<'a>>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
}

#[derive(Serialize)]
struct StatusOut<'a> {
    code: u16,
    message: &'a str,
}

/// Encodes the response AdmissionReview for request `uid`.
pub fn encode(uid: &str, answer: &Answer) -> Vec<u8> {
    let out = ReviewOut {
        api_version: API_VERSION,
        kind: "AdmissionReview",
        response: ResponseOut {
            uid,
            allowed: answer.allowed,
            patch_type: answer.patch.as_ref().map(|_| "JSONPatch"),
            patch: answer
                .patch
                .as_ref()
                .map(|p| base64::engine::general_purpose::STANDARD.encode(p)),
            status: answer.status.as_ref().map(|(code, message)| StatusOut {
                code: *code,
                message,
            }),
            warnings: &answer.warnings,
        },
    };
    serde_json::to_vec(&out).unwrap_or_default()
}
