//! A partial, borrowing view of a pod: only the fields the engine decides on.
//!
//! Everything else (managedFields, container details, volume sources) is skipped without
//! being built, which is most of the cost of reading an AdmissionReview. Small subtrees the
//! engine merges into (affinity, topology spread constraints, readiness probes) are kept as
//! `Value`.
//!
//! What the view builds is bounded by an item budget, not by the bytes read: an item of a
//! list costs the view 24 to 144 bytes (a container is 144, a `Value` 72, an object member
//! more) where the JSON can spend 3 (`{},`), so a 3 MiB pod of a million `{}` containers
//! built 143 MiB, and a server decoding 16 such reviews peaked at 450 MiB. Every list entry
//! and map entry the view keeps (containers, init containers, env, volume mounts, volumes,
//! tolerations, owner references, topology spread constraints, labels, annotations, node
//! selector) and every array element and object member inside the subtrees kept as `Value`
//! counts against one budget of [`MAX_POD_ITEMS`] per pod; past it the read fails naming
//! the field where the budget ran out, and a list never holds capacity past the budget.
//! Real pods have tens to a few hundred such items. The budget is a thread-local set for
//! the length of one [`PodView`] read (reads are synchronous), so the derived readers need
//! no seed threaded through them.

use std::borrow::Cow;
use std::cell::Cell;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// At most this many items (list entries, map entries, and array elements and object
/// members inside `affinity`, `topologySpreadConstraints` and readiness probes) are read
/// from one pod; a pod with more is not readable (the admission answer denies with code 400
/// naming the list where the count ran out). Real pods have tens to a few hundred; at
/// 150 bytes an item at most, the view of any pod stays a few MiB (a 3 MiB review of
/// `{}` items measured +4.3 MiB over its body; BENCHMARKS.md).
pub const MAX_POD_ITEMS: usize = 20_000;

thread_local! {
    /// The budget of the pod being read on this thread: (items left, the limit); `None`
    /// when no pod is being read (a view's part read on its own is not counted).
    static ITEMS: Cell<Option<(usize, usize)>> = const { Cell::new(None) };
}

/// The item budget of the pod reads on this thread, from creation to drop (which restores
/// the budget in force before, if any). Reads are synchronous: nothing else runs on the
/// thread meanwhile.
#[derive(Debug)]
#[must_use = "the budget is in force until this is dropped"]
pub(crate) struct ItemBudget {
    outer: Option<(usize, usize)>,
}

impl ItemBudget {
    /// A budget of `limit` items.
    pub fn start(limit: usize) -> Self {
        Self {
            outer: ITEMS.replace(Some((limit, limit))),
        }
    }

    /// Items counted so far.
    #[cfg(test)]
    pub fn used(&self) -> usize {
        ITEMS.get().map_or(0, |(left, limit)| limit - left)
    }
}

impl Drop for ItemBudget {
    fn drop(&mut self) {
        ITEMS.set(self.outer);
    }
}

/// Makes room for one more entry in `list` as `push` would (doubling), but never past what
/// the budget in force lets the list reach: a list at the budget holds no spare capacity.
fn reserve_one<T>(list: &mut Vec<T>) {
    if list.len() == list.capacity() {
        let left = ITEMS.get().map_or(usize::MAX, |(left, _)| left);
        list.reserve_exact(list.len().max(4).min(left.saturating_add(1)));
    }
}

/// Counts one item against the budget in force; an error once it is spent.
fn take_item<E: de::Error>() -> Result<(), E> {
    match ITEMS.get() {
        None => Ok(()),
        Some((0, limit)) => Err(E::custom(format_args!(
            "more than {limit} items (entries of lists and maps) in one pod; kpool reads at most {limit}, real pods have a few hundred"
        ))),
        Some((left, limit)) => {
            ITEMS.set(Some((left - 1, limit)));
            Ok(())
        }
    }
}

/// A list whose entries count against the item budget.
struct Counted<T>(Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Counted<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Counted<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                // As serde's `Vec` says.
                f.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Counted<T>, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element()? {
                    take_item()?;
                    reserve_one(&mut out);
                    out.push(item);
                }
                Ok(Counted(out))
            }
        }
        d.deserialize_seq(V(PhantomData))
    }
}

/// `deserialize_with` for an optional list whose entries count against the item budget.
fn counted_list<'de, D, T>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Counted<T>>::deserialize(d)?.map(|c| c.0))
}

/// A JSON value built as serde_json builds it, each array element and object member
/// counted against the item budget.
#[repr(transparent)]
struct CountedValue(Value);

impl<'de> Deserialize<'de> for CountedValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor).map(CountedValue)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        CountedValue::deserialize(d).map(|v| v.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(CountedValue(v)) = seq.next_element()? {
            take_item()?;
            reserve_one(&mut out);
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some((k, CountedValue(v))) = map.next_entry::<String, CountedValue>()? {
            take_item()?;
            // A repeated key keeps its first place and takes the last value, as serde_json.
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

/// `deserialize_with` for an optional `Value` whose members count against the item budget.
fn counted_value<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Ok(Option::<CountedValue>::deserialize(d)?.map(|v| v.0))
}

/// `deserialize_with` for an optional list of `Value`s, counted likewise.
fn counted_values<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Value>>, D::Error> {
    Ok(counted_list::<D, CountedValue>(d)?.map(|l| l.into_iter().map(|v| v.0).collect()))
}

/// A pod, or a pod template (`metadata` + `spec`). Reading one counts its items against a
/// budget of [`MAX_POD_ITEMS`] (see the module docs).
#[derive(Debug, Default)]
pub struct PodView<'a> {
    pub metadata: MetaView<'a>,
    pub spec: Option<SpecView<'a>>,
}

/// [`PodView`]'s fields as serde reads them.
#[derive(Deserialize)]
struct PodFields<'a> {
    #[serde(borrow, default)]
    metadata: MetaView<'a>,
    #[serde(borrow, default)]
    spec: Option<SpecView<'a>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for PodView<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A budget already in force (a test's) counts this pod too.
        let _budget = ITEMS
            .get()
            .is_none()
            .then(|| ItemBudget::start(MAX_POD_ITEMS));
        let PodFields { metadata, spec } = PodFields::deserialize(d)?;
        Ok(PodView { metadata, spec })
    }
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
    #[serde(borrow, default, deserialize_with = "counted_list")]
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
    #[serde(borrow, default, deserialize_with = "counted_list")]
    pub containers: Option<Vec<ContainerView<'a>>>,
    #[serde(borrow, default, deserialize_with = "counted_list")]
    pub init_containers: Option<Vec<ContainerView<'a>>>,
    #[serde(borrow, default, deserialize_with = "counted_list")]
    pub volumes: Option<Vec<NamedView<'a>>>,
    #[serde(borrow, default, deserialize_with = "counted_list")]
    pub tolerations: Option<Vec<TolerationView<'a>>>,
    #[serde(default, deserialize_with = "counted_value")]
    pub affinity: Option<Value>,
    #[serde(default, deserialize_with = "counted_values")]
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
    #[serde(borrow, default, deserialize_with = "counted_list")]
    pub env: Option<Vec<EnvView<'a>>>,
    #[serde(default, deserialize_with = "counted_value")]
    pub readiness_probe: Option<Value>,
    #[serde(borrow, default, deserialize_with = "counted_list")]
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
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Pairs<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Pairs<'a>, A::Error> {
                // A hint (reading from a `Value`) is taken only up to a small map's size: the
                // budget, not the hint, bounds what is built.
                let mut out = Vec::with_capacity(m.size_hint().unwrap_or(8).min(64));
                while let Some((k, v)) = m.next_entry::<Str<'a>, Str<'a>>()? {
                    take_item()?;
                    reserve_one(&mut out);
                    out.push((k, v));
                }
                Ok(Pairs(out))
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// A string that borrows from the input when it can (serde's plain `Cow` impl always copies).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Str<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
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
        d.deserialize_str(V(PhantomData))
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

    /// Any JSON value, nested a few levels.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            "\\PC{0,6}|[\"\\\\\u{0}-\u{1f}]{0,3}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec(("[a-c]{0,2}", inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    /// The array elements and object members in `v`, at any depth.
    fn members(v: &Value) -> usize {
        match v {
            Value::Array(a) => a.len() + a.iter().map(members).sum::<usize>(),
            Value::Object(m) => m.len() + m.values().map(members).sum::<usize>(),
            _ => 0,
        }
    }

    /// A container with `env` env entries, `mounts` volume mounts and a readiness probe, and
    /// fields the view skips (not counted); with the items it holds.
    fn container(i: usize, env: usize, mounts: usize, probe: &Option<Value>) -> (Value, usize) {
        let mut c = json!({
            "name": format!("c{i}"),
            "image": "x",
            "ports": [{"containerPort": 1}, {"containerPort": 2}],
            "env": (0..env).map(|e| json!({"name": format!("E{e}"), "value": "v"})).collect::<Vec<_>>(),
            "volumeMounts": (0..mounts).map(|m| json!({"name": format!("m{m}"), "mountPath": "/m"})).collect::<Vec<_>>(),
        });
        let mut items = env + mounts;
        if let Some(p) = probe {
            c["readinessProbe"] = p.clone();
            items += members(p);
        }
        (c, items)
    }

    type ContainerShape = (usize, usize, Option<Value>);

    fn containers() -> impl Strategy<Value = Vec<ContainerShape>> {
        proptest::collection::vec(
            (0usize..4, 0usize..3, proptest::option::of(json_value())),
            0..4,
        )
    }

    /// A pod with every counted list, nested lists in containers, and the `Value` subtrees;
    /// with the items it holds.
    fn pod() -> impl Strategy<Value = (Value, usize)> {
        (
            (0usize..5, 0usize..5, 0usize..3, 0usize..3),
            (containers(), containers()),
            (0usize..3, 0usize..3),
            (
                proptest::option::of(json_value()),
                proptest::option::of(proptest::collection::vec(json_value(), 0..3)),
            ),
        )
            .prop_map(
                |(
                    (labels, annotations, owners, selectors),
                    (cs, inits),
                    (volumes, tolerations),
                    (affinity, spread),
                )| {
                    let map = |n: usize| -> Value {
                        Value::Object((0..n).map(|i| (format!("k{i}"), json!("v"))).collect())
                    };
                    let list = |n: usize, item: Value| -> Value {
                        Value::Array(vec![item; n])
                    };
                    let mut items = labels + annotations + owners + selectors + volumes + tolerations;
                    let mut build = |shapes: &[ContainerShape]| -> Value {
                        let mut out = Vec::new();
                        for (i, (env, mounts, probe)) in shapes.iter().enumerate() {
                            let (c, n) = container(i, *env, *mounts, probe);
                            items += 1 + n;
                            out.push(c);
                        }
                        Value::Array(out)
                    };
                    let mut pod = json!({
                        "metadata": {
                            "name": "p",
                            "labels": map(labels),
                            "annotations": map(annotations),
                            "ownerReferences": list(owners, json!({"kind": "StatefulSet", "name": "s", "controller": true})),
                            "managedFields": [{"manager": "m", "fieldsV1": {"f:a": {}, "f:b": [1, 2, 3]}}],
                        },
                        "spec": {
                            "containers": build(&cs),
                            "initContainers": build(&inits),
                            "volumes": list(volumes, json!({"name": "v", "emptyDir": {"sizeLimit": "1Gi"}})),
                            "tolerations": list(tolerations, json!({"key": "k", "operator": "Exists"})),
                            "nodeSelector": map(selectors),
                        },
                    });
                    if let Some(a) = affinity {
                        items += members(&a);
                        pod["spec"]["affinity"] = a;
                    }
                    if let Some(s) = spread {
                        items += s.len() + s.iter().map(members).sum::<usize>();
                        pod["spec"]["topologySpreadConstraints"] = Value::Array(s);
                    }
                    (pod, items)
                },
            )
    }

    proptest! {
        /// The counted `Value` is serde_json's, read from text or from a `Value`, and every
        /// array element and object member at any depth is counted once.
        #[test]
        fn counted_values_are_serde_json_values(v in json_value()) {
            let text = v.to_string();
            let budget = ItemBudget::start(usize::MAX);
            let CountedValue(got) = serde_json::from_str(&text).expect("reads");
            prop_assert_eq!(budget.used(), members(&v));
            drop(budget);
            prop_assert_eq!(&got, &serde_json::from_str::<Value>(&text).expect("serde_json reads"));
            let CountedValue(again) = CountedValue::deserialize(&v).expect("reads a Value");
            prop_assert_eq!(again, v);
        }

        /// Every entry of every list and map the view keeps counts, nested ones (env and
        /// mounts of each container, the members of affinity, spread constraints and probes)
        /// included, and what the view skips does not: the pod reads with exactly that many
        /// items of budget and not with one fewer, and the error names where it ran out.
        #[test]
        fn the_item_budget_counts_nested_lists((pod, items) in pod()) {
            let text = pod.to_string();
            let budget = ItemBudget::start(usize::MAX);
            let view: PodView<'_> = serde_json::from_str(&text).expect("reads");
            prop_assert_eq!(budget.used(), items);
            drop(budget);
            let again = ItemBudget::start(items);
            prop_assert!(PodView::deserialize(&pod).is_ok());
            prop_assert_eq!(again.used(), items);
            drop(again);
            prop_assert_eq!(
                view.spec.as_ref().and_then(|s| s.containers.as_ref()).map_or(0, Vec::len),
                pod["spec"]["containers"].as_array().map_or(0, Vec::len)
            );
            if items > 0 {
                let _short = ItemBudget::start(items - 1);
                let mut de = serde_json::Deserializer::from_str(&text);
                let e = serde_path_to_error::deserialize::<_, PodView<'_>>(&mut de)
                    .expect_err("one item over the budget");
                let message = e.inner().to_string();
                prop_assert!(
                    message.starts_with(&format!("more than {} items (entries of lists and maps) in one pod", items - 1)),
                    "{}", message
                );
                let path = e.path().to_string();
                prop_assert!(path.starts_with("metadata.") || path.starts_with("spec."), "{}", path);
            }
        }
    }

    #[test]
    fn a_pod_read_on_its_own_gets_the_full_budget_and_gives_it_back() {
        assert_eq!(ITEMS.get(), None);
        let pod = format!(
            r#"{{"spec":{{"tolerations":[{}]}}}}"#,
            vec!["{}"; MAX_POD_ITEMS].join(",")
        );
        let view = PodView::from_json(&pod).expect("at the budget");
        let tolerations = view.spec.and_then(|s| s.tolerations).unwrap_or_default();
        assert_eq!(tolerations.len(), MAX_POD_ITEMS);
        assert_eq!(
            tolerations.capacity(),
            MAX_POD_ITEMS,
            "no spare capacity past the budget"
        );
        assert_eq!(ITEMS.get(), None, "restored");
        let over = format!(
            r#"{{"spec":{{"tolerations":[{}]}}}}"#,
            vec!["{}"; MAX_POD_ITEMS + 1].join(",")
        );
        let e = PodView::from_json(&over).expect_err("over the budget");
        assert_eq!(e.path, "spec.tolerations");
        assert!(
            e.message.starts_with(&format!("more than {MAX_POD_ITEMS} items (entries of lists and maps) in one pod; kpool reads at most {MAX_POD_ITEMS}, real pods have a few hundred")),
            "{}",
            e.message
        );
        assert_eq!(ITEMS.get(), None, "restored after an error");
    }

    #[test]
    fn a_repeated_key_keeps_its_place_and_takes_the_last_value_as_serde_json() {
        let text = r#"{"b":1,"a":{"x":[1,{"y":2}]},"b":3}"#;
        let budget = ItemBudget::start(usize::MAX);
        let CountedValue(got) = serde_json::from_str(text).expect("reads");
        assert_eq!(
            budget.used(),
            7,
            "every member read counts, repeated or not"
        );
        assert_eq!(
            got,
            serde_json::from_str::<Value>(text).expect("serde_json")
        );
        assert_eq!(got.to_string(), r#"{"b":3,"a":{"x":[1,{"y":2}]}}"#);
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
