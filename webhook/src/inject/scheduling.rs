//! Scheduling: the pool toleration, required node affinity (pool and zone), one broker
//! per node, and topology spread over zones.

use kpool_policy::{BrokerIdentity, Policy};
use serde_json::{Map, Value, json};

use super::patch::{RawJson, is_subset, push_segment};
use super::pod::SpecView;
use super::sidecar::append_all;
use super::{DenyReason, MAX_NODE_SELECTOR_TERMS, PatchOp, Piece, Plan};

const HOSTNAME_KEY: &str = "kubernetes.io/hostname";
const REQUIRED: &str = "requiredDuringSchedulingIgnoredDuringExecution";

/// Everything here depends only on the policy, so it is built once.
#[derive(Debug)]
pub(super) struct Fixed {
    toleration: RawJson,
    pool_expr: Value,
    anti_term: Value,
    spread: RawJson,
    /// The whole affinity of a pod that has none, per zone (index of the policy's zones),
    /// and for a template (no zone).
    whole_per_zone: Vec<RawJson>,
    whole_template: RawJson,
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
        let pool_expr = json!({
            "key": spec.pool.node_label.key,
            "operator": "In",
            "values": [spec.pool.node_label.value],
        });
        // All namespaces: brokers of another Kafka cluster must not share the node either.
        let anti_term = json!({
            "labelSelector": selector,
            "namespaceSelector": {},
            "topologyKey": HOSTNAME_KEY,
        });
        let whole = |zone: Option<&str>| {
            let zone_expr = zone.map(|z| zone_expr(policy, z));
            let exprs: Vec<&Value> = std::iter::once(&pool_expr)
                .chain(zone_expr.as_ref())
                .collect();
            RawJson::value(&json!({
                "nodeAffinity": {REQUIRED: {"nodeSelectorTerms": [{"matchExpressions": exprs}]}},
                "podAntiAffinity": {REQUIRED: [anti_term]},
            }))
            .shared()
        };
        Self {
            toleration: RawJson::value(&toleration).shared(),
            whole_per_zone: spec.zones.iter().map(|z| whole(Some(z))).collect(),
            whole_template: whole(None),
            pool_expr,
            anti_term,
            spread: RawJson::value(&json!({
                "maxSkew": spec.spread.max_skew,
                "topologyKey": spec.pool.zone_label,
                "whenUnsatisfiable": spec.spread.when_unsatisfiable.as_str(),
                "labelSelector": selector,
            }))
            .shared(),
        }
    }

    /// The prebuilt affinity for a pod without one (`None`: the zone is not the policy's).
    fn whole(&self, policy: &Policy, id: Option<&BrokerIdentity<'_>>) -> Option<&RawJson> {
        match id {
            None => Some(&self.whole_template),
            Some(id) => policy
                .spec()
                .zones
                .iter()
                .position(|z| z == id.zone)
                .and_then(|i| self.whole_per_zone.get(i)),
        }
    }
}

fn zone_expr(policy: &Policy, zone: &str) -> Value {
    json!({
        "key": policy.spec().pool.zone_label,
        "operator": "In",
        "values": [zone],
    })
}

/// Ensures the pod tolerates the pool taint (an existing matching toleration is enough).
pub(super) fn toleration(plan: &mut Plan<'_>, spec: &SpecView<'_>) {
    let taint = &plan.injector.policy.spec().pool.taint;
    let existing = spec.tolerations.as_deref().unwrap_or_default();
    if existing.iter().any(|t| t.tolerates(taint)) {
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
/// expressions are ANDed into each existing term, by targeted operations. More than
/// [`MAX_NODE_SELECTOR_TERMS`] terms are refused: the operations grow with the terms, and
/// no smaller patch keeps each term's meaning ANDed with the pool and zone (replacing the
/// whole list is one operation but as many bytes).
pub(super) fn affinity(
    plan: &mut Plan<'_>,
    spec: &SpecView<'_>,
    id: Option<&BrokerIdentity<'_>>,
) -> Result<(), DenyReason> {
    let fixed = &plan.injector.scheduling;
    if spec.affinity.as_ref().is_none_or(|a| !a.is_object())
        && let Some(prebuilt) = fixed.whole(&plan.injector.policy, id)
    {
        // No affinity yet: one operation adds all of it, prebuilt for the broker's zone.
        plan.push(
            Piece::NodeAffinity,
            PatchOp::add("/spec/affinity", prebuilt.clone()),
        );
        plan.changed.push(Piece::AntiAffinity);
        return Ok(());
    }
    let zone_expr = id.map(|id| zone_expr(&plan.injector.policy, id.zone));
    let exprs: Vec<&Value> = std::iter::once(&fixed.pool_expr)
        .chain(zone_expr.as_ref())
        .collect();
    let Some(affinity) = spec.affinity.as_ref().filter(|a| a.is_object()) else {
        // No affinity yet: one operation adds all of it.
        let value = RawJson::value(&json!({
            "nodeAffinity": {REQUIRED: {"nodeSelectorTerms": [{"matchExpressions": exprs}]}},
            "podAntiAffinity": {REQUIRED: [fixed.anti_term]},
        }));
        plan.push(Piece::NodeAffinity, PatchOp::add("/spec/affinity", value));
        plan.changed.push(Piece::AntiAffinity);
        return Ok(());
    };
    let affinity = Some(affinity);

    // Node affinity: into every existing term, or one new term.
    let terms_path = ["nodeAffinity", REQUIRED, "nodeSelectorTerms"];
    let terms = affinity
        .and_then(|a| a.pointer(&format!("/{}", terms_path.join("/"))))
        .and_then(Value::as_array)
        .filter(|t| !t.is_empty());
    match terms {
        None => {
            let term = json!({"matchExpressions": exprs});
            add_nested(plan, Piece::NodeAffinity, affinity, &terms_path, &[&term]);
        }
        Some(terms) if terms.len() > MAX_NODE_SELECTOR_TERMS => {
            return Err(DenyReason::TooManyNodeSelectorTerms {
                found: terms.len(),
                max: MAX_NODE_SELECTOR_TERMS,
            });
        }
        Some(terms) => {
            for (i, term) in terms.iter().enumerate() {
                let have = term.get("matchExpressions").and_then(Value::as_array);
                let missing: Vec<&Value> = exprs
                    .iter()
                    .copied()
                    .filter(|e| !have.is_some_and(|h| h.iter().any(|x| is_subset(e, x))))
                    .collect();
                if missing.is_empty() {
                    continue;
                }
                let base = format!(
                    "/spec/affinity/nodeAffinity/{REQUIRED}/nodeSelectorTerms/{i}/matchExpressions"
                );
                if have.is_some() {
                    for e in missing {
                        plan.push(
                            Piece::NodeAffinity,
                            PatchOp::add(format!("{base}/-"), RawJson::value(e)),
                        );
                    }
                } else {
                    plan.push(
                        Piece::NodeAffinity,
                        PatchOp::add(base, RawJson::value(&json!(missing))),
                    );
                }
            }
        }
    }

    // One broker per node.
    let anti_path = ["podAntiAffinity", REQUIRED];
    let present = affinity
        .and_then(|a| a.pointer(&format!("/{}", anti_path.join("/"))))
        .and_then(Value::as_array)
        .is_some_and(|terms| terms.iter().any(|t| is_subset(&fixed.anti_term, t)));
    if !present {
        let term = fixed.anti_term.clone();
        add_nested(plan, Piece::AntiAffinity, affinity, &anti_path, &[&term]);
    }
    Ok(())
}

/// Appends `items` to the array at `/spec/affinity/<segs...>` (the affinity exists),
/// creating whatever levels are missing with one `add` at the first missing level. A level
/// holding something other than an object (or, last, an array) counts as missing and is
/// replaced.
fn add_nested(
    plan: &mut Plan<'_>,
    piece: Piece,
    affinity: Option<&Value>,
    segs: &[&str],
    items: &[&Value],
) {
    let mut path = "/spec/affinity".to_owned();
    let mut at = affinity;
    let mut depth = 0;
    while depth < segs.len() {
        let last = depth + 1 == segs.len();
        match at.and_then(|v| v.get(segs[depth])) {
            Some(next) if (last && next.is_array()) || (!last && next.is_object()) => {
                push_segment(&mut path, segs[depth]);
                at = Some(next);
                depth += 1;
            }
            _ => break,
        }
    }
    if depth == segs.len() {
        for item in items {
            plan.push(
                piece,
                PatchOp::add(format!("{path}/-"), RawJson::value(item)),
            );
        }
        return;
    }
    // Build the missing levels below the first missing one, from the inside out.
    let mut value = Value::Array(items.iter().map(|v| (*v).clone()).collect());
    for seg in segs[depth + 1..].iter().rev() {
        let mut m = Map::new();
        m.insert((*seg).to_owned(), value);
        value = Value::Object(m);
    }
    push_segment(&mut path, segs[depth]);
    plan.push(piece, PatchOp::add(path, RawJson::value(&value)));
}

/// Ensures a topology spread constraint over zones, unless the pod already spreads over
/// the zone key (the user's constraint wins).
pub(super) fn spread(plan: &mut Plan<'_>, spec: &SpecView<'_>) {
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
