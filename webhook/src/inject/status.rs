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

    /// The annotation value: exactly serde's compact encoding (pods annotated by earlier
    /// versions compare equal, so re-admission stays a no-op), written directly.
    pub fn to_json(&self) -> String {
        use kpool_policy::push_json_str;
        let list = |out: &mut String, items: &[String]| {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json_str(out, item);
            }
            out.push(']');
        };
        let mut out = String::with_capacity(256);
        out.push_str("{\"version\":");
        out.push_str(&self.version.to_string());
        out.push_str(",\"policyHash\":");
        push_json_str(&mut out, &self.policy_hash);
        out.push_str(",\"scope\":");
        push_json_str(&mut out, &self.scope);
        out.push_str(",\"containers\":");
        list(&mut out, &self.containers);
        out.push_str(",\"volumes\":");
        list(&mut out, &self.volumes);
        if let Some(id) = self.broker_id {
            out.push_str(",\"brokerId\":");
            out.push_str(&id.to_string());
        }
        if let Some(rack) = &self.rack {
            out.push_str(",\"rack\":");
            push_json_str(&mut out, rack);
        }
        out.push('}');
        out
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
    let text = status.to_json();
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn written_status_is_serdes_encoding(
            version in 0u32..5,
            policy_hash in "sha256:[0-9a-f]{0,8}|\\PC{0,6}",
            scope in "pod|template|\"q\"",
            containers in proptest::collection::vec("\\PC{0,8}", 0..3),
            volumes in proptest::collection::vec("[a-z\\\\\"-]{0,8}", 0..3),
            broker_id in proptest::option::of(any::<i32>()),
            rack in proptest::option::of("\\PC{0,8}"),
        ) {
            let s = Status { version, policy_hash, scope, containers, volumes, broker_id, rack };
            prop_assert_eq!(s.to_json(), serde_json::to_string(&s).expect("encodes"));
        }
    }
}
