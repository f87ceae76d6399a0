//! A partial, borrowing view of a pod: only the fields the engine decides on.
//!
//! Everything else (managedFields, container details, volume sources) is skipped without
//! being built, which is most of the cost of reading an AdmissionReview. Small subtrees the
//! engine merges into (affinity, tolerations, env, probes) are kept as `Value`.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

/// A pod, or a pod template (`metadata` + `spec`).
#[derive(Debug, Default, Deserialize)]
pub struct PodView<'a> {
    #[serde(borrow, default)]
    pub metadata: MetaView<'a>,
    #[serde(borrow, default)]
    pub spec: Option<SpecView<'a>>,
}

/// Object metadata.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetaView<'a> {
    #[serde(borrow, default)]
    pub name: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub generate_name: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub namespace: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub labels: Option<Pairs<'a>>,
    #[serde(borrow, default)]
    pub annotations: Option<Pairs<'a>>,
    #[serde(borrow, default)]
    pub uid: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub owner_references: Option<Vec<OwnerView<'a>>>,
}

/// An owner reference.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerView<'a> {
    #[serde(borrow, default)]
    pub api_version: Str<'a>,
    #[serde(borrow, default)]
    pub kind: Str<'a>,
    #[serde(borrow, default)]
    pub uid: Str<'a>,
    #[serde(borrow, default)]
    pub name: Str<'a>,
    #[serde(default)]
    pub controller: Option<bool>,
}

/// The pod spec.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecView<'a> {
    #[serde(borrow, default)]
    pub containers: Option<Vec<ContainerView<'a>>>,
    #[serde(borrow, default)]
    pub init_containers: Option<Vec<ContainerView<'a>>>,
    #[serde(borrow, default)]
    pub volumes: Option<Vec<NamedView<'a>>>,
    #[serde(borrow, default)]
    pub tolerations: Option<Vec<TolerationView<'a>>>,
    #[serde(default)]
    pub affinity: Option<Value>,
    #[serde(default)]
    pub topology_spread_constraints: Option<Vec<Value>>,
    #[serde(borrow, default)]
    pub service_account_name: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub node_selector: Option<Pairs<'a>>,
    #[serde(borrow, default)]
    pub node_name: Option<Str<'a>>,
}

/// A pod as the pool rules ([`kpool_policy::pool`]) read it: in `namespace`, the request's
/// (a pod being created may not carry its own).
#[derive(Debug, Clone, Copy)]
pub struct InNamespace<'p, 'a> {
    pub pod: &'p PodView<'a>,
    pub namespace: &'p str,
}

impl kpool_policy::pool::PoolPod for InNamespace<'_, '_> {
    fn namespace(&self) -> &str {
        self.namespace
    }

    fn label(&self, key: &str) -> Option<&str> {
        self.pod.metadata.label(key)
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        self.pod.metadata.annotation(key)
    }

    fn controller(&self) -> Option<kpool_policy::pool::OwnerRef<'_>> {
        self.pod
            .metadata
            .owner_references
            .as_deref()?
            .iter()
            .find(|o| o.controller == Some(true))
            .map(|o| kpool_policy::pool::OwnerRef {
                api_version: o.api_version.as_str(),
                kind: o.kind.as_str(),
                name: o.name.as_str(),
                uid: o.uid.as_str(),
            })
    }

    fn name(&self) -> &str {
        self.pod.metadata.name.as_deref().unwrap_or_default()
    }

    fn node_name(&self) -> Option<&str> {
        self.pod.spec.as_ref()?.node_name.as_deref()
    }

    fn service_account(&self) -> &str {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.as_deref())
            .unwrap_or_default()
    }
}

/// A container.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerView<'a> {
    #[serde(borrow, default)]
    pub name: Str<'a>,
    #[serde(borrow, default)]
    pub env: Option<Vec<EnvView<'a>>>,
    #[serde(default)]
    pub readiness_probe: Option<Value>,
    #[serde(borrow, default)]
    pub volume_mounts: Option<Vec<MountView<'a>>>,
}

/// An env var.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvView<'a> {
    #[serde(borrow, default)]
    pub name: Str<'a>,
    #[serde(borrow, default)]
    pub value: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub value_from: Option<ValueFromView<'a>>,
}

/// An env var's `valueFrom`: only a downward-API field reference is looked at (any other
/// source still makes it `Some`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValueFromView<'a> {
    #[serde(borrow, default)]
    pub field_ref: Option<FieldRefView<'a>>,
}

/// `valueFrom.fieldRef`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldRefView<'a> {
    #[serde(borrow, default)]
    pub field_path: Option<Str<'a>>,
}

/// A toleration (typed rather than a `Value`: every broker pod carries the API server's
/// default tolerations, and building maps for them was a measurable share of a request).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TolerationView<'a> {
    #[serde(borrow, default)]
    pub key: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub operator: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub value: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub effect: Option<Str<'a>>,
    #[serde(default)]
    pub toleration_seconds: Option<i64>,
}

impl TolerationView<'_> {
    /// True when this toleration tolerates `taint`, by the scheduler's rules.
    pub fn tolerates(&self, taint: &kpool_policy::model::Taint) -> bool {
        fn f<'s>(s: &'s Option<Str<'_>>) -> &'s str {
            s.as_deref().unwrap_or("")
        }
        taint.is_tolerated(
            f(&self.key),
            f(&self.operator),
            f(&self.value),
            f(&self.effect),
        )
    }
}

/// As JSON, the fields present in the API's order (for messages).
impl std::fmt::Display for TolerationView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = String::from("{");
        for (name, v) in [
            ("key", &self.key),
            ("operator", &self.operator),
            ("value", &self.value),
            ("effect", &self.effect),
        ] {
            if let Some(v) = v {
                if out.len() > 1 {
                    out.push(',');
                }
                out.push('"');
                out.push_str(name);
                out.push_str("\":");
                kpool_policy::push_json_str(&mut out, v);
            }
        }
        if let Some(s) = self.toleration_seconds {
            if out.len() > 1 {
                out.push(',');
            }
            out.push_str("\"tolerationSeconds\":");
            out.push_str(&s.to_string());
        }
        out.push('}');
        f.write_str(&out)
    }
}

/// Anything identified by `name` (volumes).
#[derive(Debug, Default, Deserialize)]
pub struct NamedView<'a> {
    #[serde(borrow, default)]
    pub name: Str<'a>,
}

/// A volume mount.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountView<'a> {
    #[serde(borrow, default)]
    pub name: Str<'a>,
    #[serde(borrow, default)]
    pub mount_path: Str<'a>,
}

impl MetaView<'_> {
    /// A label's value.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.as_ref()?.get(key)
    }

    /// An annotation's value.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key)
    }
}

/// A string map kept as pairs in document order: label and annotation maps are small, and
/// a linear scan beats hashing them. A key given twice (only a client posting directly can
/// send that) means its last value, as the API server's Go decoding reads it.
#[derive(Debug, Default)]
pub struct Pairs<'a>(pub Vec<(Str<'a>, Str<'a>)>);

impl Pairs<'_> {
    /// The value of `key`: the last one, when the key is repeated.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rfind(|(k, _)| k.as_str() == key)
            .map(|(_, v)| v.as_str())
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Pairs<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Pairs<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of strings")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Pairs<'a>, A::Error> {
                let mut out = Vec::with_capacity(m.size_hint().unwrap_or(8));
                while let Some((k, v)) = m.next_entry::<Str<'a>, Str<'a>>()? {
                    out.push((k, v));
                }
                Ok(Pairs(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// A string that borrows from the input when it can (serde's plain `Cow` impl always copies).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Str<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// Why a document cannot be read as a pod.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PodError {
    /// Where in the pod (`spec.containers[0].env`), `.` for the top level.
    pub path: String,
    pub message: String,
}

impl<'a> PodView<'a> {
    /// Reads the view from JSON text, borrowing strings where they need no unescaping.
    pub fn from_json(json: &'a str) -> Result<Self, PodError> {
        // The plain deserializer is fast; only a failure pays for tracking the field path.
        serde_json::from_str(json).map_err(|plain| {
            let mut de = serde_json::Deserializer::from_str(json);
            match serde_path_to_error::deserialize::<_, PodView<'_>>(&mut de) {
                Err(e) => path_error(e),
                Ok(_) => PodError {
                    path: ".".to_owned(),
                    message: plain.to_string(),
                },
            }
        })
    }

    /// Reads the view from an already parsed document.
    pub fn from_value(value: &'a Value) -> Result<Self, PodError> {
        if !value.is_object() {
            return Err(PodError {
                path: ".".to_owned(),
                message: format!("expected a pod object, found {}", kind_of(value)),
            });
        }
        Self::deserialize(value).map_err(|plain| {
            match serde_path_to_error::deserialize::<_, PodView<'_>>(value) {
                Err(e) => path_error(e),
                Ok(_) => PodError {
                    path: ".".to_owned(),
                    message: plain.to_string(),
                },
            }
        })
    }
}

fn path_error<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> PodError {
    PodError {
        path: e.path().to_string(),
        message: e.into_inner().to_string(),
    }
}

/// A short name for a JSON value's type, for error messages.
pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Str<'_> {
    /// The string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use kpool_policy::model::{Taint, TaintEffect};
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn field() -> impl Strategy<Value = Option<&'static str>> {
        proptest::option::of(proptest::sample::select(vec![
            "",
            "dedicated",
            "kafka",
            "other",
            "Exists",
            "Equal",
            "NoSchedule",
            "NoExecute",
        ]))
    }

    proptest! {
        /// The typed toleration decides exactly as the policy's rule on the JSON value, and
        /// prints back as the same JSON.
        #[test]
        fn typed_toleration_matches_the_value_rule(
            key in field(), operator in field(), value in field(), effect in field(),
            seconds in proptest::option::of(0i64..100_000),
            taint_value in proptest::option::of(proptest::sample::select(vec!["kafka", ""])),
            no_execute: bool,
        ) {
            let mut t = serde_json::Map::new();
            for (k, v) in [("key", key), ("operator", operator), ("value", value), ("effect", effect)] {
                if let Some(v) = v {
                    t.insert(k.to_owned(), json!(v));
                }
            }
            if let Some(s) = seconds {
                t.insert("tolerationSeconds".to_owned(), json!(s));
            }
            let t = Value::Object(t);
            let taint = Taint {
                key: "dedicated".to_owned(),
                value: taint_value.map(str::to_owned),
                effect: if no_execute { TaintEffect::NoExecute } else { TaintEffect::NoSchedule },
            };
            let text = t.to_string();
            let view: TolerationView<'_> = serde_json::from_str(&text).expect("reads");
            prop_assert_eq!(view.tolerates(&taint), taint.is_tolerated_by(&t));
            let printed: Value = serde_json::from_str(&view.to_string()).expect("prints JSON");
            prop_assert_eq!(printed, t);
        }
    }
}
