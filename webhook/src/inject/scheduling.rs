//! Scheduling: the pool toleration, required node affinity (pool and zone), one broker
//! per node, and topology spread over zones.

use kpool_policy::{BrokerIdentity, Policy};
use serde_json::{Map, Value, json};

use super::patch::is_subset;
use super::pod::SpecView;
use super::sidecar::append_all;
use super::{PatchOp, Piece, Plan};

const HOSTNAME_KEY: &str = "kubernetes.io/hostname";
const REQUIRED: &str = "requiredDuringSchedulingIgnoredDuringExecution";

/// Everything here depends only on the policy, so it is built once.
#[derive(Debug)]
pub(super) struct Fixed {
    toleration: Value,
    pool_expr: Value,
    anti_term: Value,
    spread: Value,
}

impl Fixed {
    pub(super) fn new(policy: &Policy) -> Self {
        let spec = policy.spec();
        let taint = &spec.pool.taint;
        let toleration = match &taint.value {
            Some(v) => {
                json!({"key": taint.key, "operator": "Equal", "value": v, "effect": taint.effect.as_str()})
            }
            None => {
                json!({"key": taint.key, "operator": "Exists", "effect": taint.effect.as_str()})
            }
        };
        let selector = json!({"matchLabels": spec.brokers.selector});
        Self {
            toleration,
            pool_expr: json!({
                "key": spec.pool.node_label.key,
                "operator": "In",
                "values": [spec.pool.node_label.value],
            }),
            // All namespaces: brokers of another Kafka cluster must not share the node either.
            anti_term: json!({
                "labelSelector": selector,
                "namespaceSelector": {},
                "topologyKey": HOSTNAME_KEY,
            }),
            spread: json!({
                "maxSkew": spec.spread.max_skew,
                "topologyKey": spec.pool.zone_label,
                "whenUnsatisfiable": spec.spread.when_unsatisfiable.as_str(),
                "labelSelector": selector,
            }),
        }
    }
}

/// Ensures the pod tolerates the pool taint (an existing matching toleration is enough).
pub(super) fn toleration(plan: &mut Plan<'_, '_>, spec: &SpecView<'_>) {
    let taint = &plan.injector.policy.spec().pool.taint;
    let existing = spec.tolerations.as_deref().unwrap_or_default();
    if existing.iter().any(|t| taint.is_tolerated_by(t)) {
        return;
    }
    let t = plan.injector.scheduling.toleration.clone();
    append_all(
        plan,
        Piece::Toleration,
        "/spec/tolerations",
        spec.tolerations.is_some(),
        vec![t],
    );
}

/// Ensures required node affinity to the pool (and, for a pod, to its zone) in every node
/// selector term, and the one-broker-per-node anti-affinity. User terms are kept: kpool's
/// expressions are ANDed into each existing term.
pub(super) fn affinity(
    plan: &mut Plan<'_, '_>,
    spec: &SpecView<'_>,
    id: Option<&BrokerIdentity<'_>>,
) {
    let fixed = &plan.injector.scheduling;
    let mut exprs = vec![fixed.pool_expr.clone()];
    if let Some(id) = id {
        exprs.push(json!({
            "key": plan.injector.policy.spec().pool.zone_label,
            "operator": "In",
            "values": [id.zone],
        }));
    }
    let mut affinity = match &spec.affinity {
        Some(Value::Object(m)) => Value::Object(m.clone()),
        _ => Value::Object(Map::new()),
    };
    let node_changed = ensure_node_terms(&mut affinity, &exprs);
    let anti_changed = ensure_anti_affinity(&mut affinity, &fixed.anti_term);
    if node_changed || anti_changed {
        let op = PatchOp::Add {
            path: "/spec/affinity".to_owned(),
            value: affinity,
        };
        plan.ops.push(op);
        for (changed, piece) in [
            (node_changed, Piece::NodeAffinity),
            (anti_changed, Piece::AntiAffinity),
        ] {
            if changed && !plan.changed.contains(&piece) {
                plan.changed.push(piece);
            }
        }
    }
}

/// The member `key` of `v` (made an object first if it is not), made `empty()` if it is
/// missing or not of the same JSON type.
fn member<'v>(v: &'v mut Value, key: &str, empty: fn() -> Value) -> &'v mut Value {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    let slot = &mut v[key];
    let want = empty();
    if std::mem::discriminant(slot) != std::mem::discriminant(&want) {
        *slot = want;
    }
    slot
}

fn obj() -> Value {
    Value::Object(Map::new())
}

fn arr() -> Value {
    Value::Array(Vec::new())
}

fn ensure_node_terms(affinity: &mut Value, exprs: &[Value]) -> bool {
    let required = member(member(affinity, "nodeAffinity", obj), REQUIRED, obj);
    let Value::Array(terms) = member(required, "nodeSelectorTerms", arr) else {
        return false;
    };
    if terms.is_empty() {
        terms.push(json!({"matchExpressions": exprs}));
        return true;
    }
    let mut changed = false;
    for term in terms.iter_mut() {
        let Value::Array(list) = member(term, "matchExpressions", arr) else {
            continue;
        };
        for e in exprs {
            if !list.iter().any(|have| is_subset(e, have)) {
                list.push(e.clone());
                changed = true;
            }
        }
    }
    changed
}

fn ensure_anti_affinity(affinity: &mut Value, term: &Value) -> bool {
    let Value::Array(terms) = member(member(affinity, "podAntiAffinity", obj), REQUIRED, arr)
    else {
        return false;
    };
    if terms.iter().any(|have| is_subset(term, have)) {
        return false;
    }
    terms.push(term.clone());
    true
}

/// Ensures a topology spread constraint over zones, unless the pod already spreads over
/// the zone key (the user's constraint wins).
pub(super) fn spread(plan: &mut Plan<'_, '_>, spec: &SpecView<'_>) {
    let zone_key = &plan.injector.policy.spec().pool.zone_label;
    let existing = spec
        .topology_spread_constraints
        .as_deref()
        .unwrap_or_default();
    if existing
        .iter()
        .any(|c| c.get("topologyKey").and_then(Value::as_str) == Some(zone_key.as_str()))
    {
        return;
    }
    let c = plan.injector.scheduling.spread.clone();
    append_all(
        plan,
        Piece::Spread,
        "/spec/topologySpreadConstraints",
        spec.topology_spread_constraints.is_some(),
        vec![c],
    );
}
