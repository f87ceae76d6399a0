//! The `kpool.io/status` annotation: what kpool injected, under which policy.

use kpool_policy::BrokerIdentity;
use serde::{Deserialize, Serialize};

use super::patch::{RawJson, push_segment};
use super::pod::MetaView;
use super::{PatchOp, Piece, Plan};

pub use kpool_policy::keys::STATUS_ANNOTATION;

/// What kpool recorded in a pod or template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub version: u32,
    pub policy_hash: String,
    /// `pod` or `template`.
    pub scope: String,
    /// Containers kpool owns in this pod.
    pub containers: Vec<String>,
    /// Volumes kpool owns in this pod.
    pub volumes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_id: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
}

impl Status {
    /// Reads an annotation value; an unreadable one counts as absent (it is rewritten).
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_str(s).ok()
    }
}

/// Ensures the status annotation describes this pass.
pub(super) fn annotation(
    plan: &mut Plan<'_>,
    meta: &MetaView<'_>,
    id: Option<&BrokerIdentity<'_>>,
) {
    let status = Status {
        version: 1,
        policy_hash: plan.injector.policy.hash().to_owned(),
        scope: if id.is_some() { "pod" } else { "template" }.to_owned(),
        containers: std::mem::take(&mut plan.owned_containers),
        volumes: std::mem::take(&mut plan.owned_volumes),
        broker_id: id.map(|i| i.broker_id),
        rack: id.map(|i| i.rack.to_owned()),
    };
    let text = serde_json::to_string(&status).unwrap_or_default();
    if meta.annotation(STATUS_ANNOTATION) == Some(text.as_str()) {
        return;
    }
    let op = match &meta.annotations {
        None => PatchOp::add(
            "/metadata/annotations",
            RawJson::value(&serde_json::json!({ STATUS_ANNOTATION: text })),
        ),
        Some(_) => {
            let mut path = "/metadata/annotations".to_owned();
            push_segment(&mut path, STATUS_ANNOTATION);
            PatchOp::add(path, RawJson::string(&text))
        }
    };
    plan.push(Piece::Status, op);
}
