//! Per-broker identity: labels and env for rack, zone, cluster, broker id, and the
//! advertised listener; plus the downward-API env the probe needs.

use kpool_policy::BrokerIdentity;
use kpool_policy::model::OnConflict;
use serde_json::{Value, json};

use super::patch::{is_subset, push_segment};
use super::pod::{MetaView, SpecView};
use super::sidecar::append_all;
use super::{PatchOp, Piece, Plan};

/// Labels kpool sets on broker pods.
pub const RACK_LABEL: &str = "kpool.io/rack";
pub const ZONE_LABEL: &str = "kpool.io/zone";
pub const CLUSTER_LABEL: &str = "kpool.io/cluster";
pub const BROKER_ID_LABEL: &str = "kpool.io/broker-id";

/// Ensures the identity labels. `kpool.io/*` labels are kpool's own, so they are always
/// set to the policy's values.
pub(super) fn labels(
    plan: &mut Plan<'_, '_>,
    meta: &MetaView<'_>,
    id: Option<&BrokerIdentity<'_>>,
) {
    let cluster = plan.injector.policy.spec().cluster.as_str();
    let mut want: Vec<(&str, String)> = vec![(CLUSTER_LABEL, cluster.to_owned())];
    if let Some(id) = id {
        want.push((RACK_LABEL, id.rack.to_owned()));
        want.push((ZONE_LABEL, id.zone.to_owned()));
        want.push((BROKER_ID_LABEL, id.broker_id.to_string()));
    }
    match &meta.labels {
        None => {
            let map: serde_json::Map<String, Value> = want
                .into_iter()
                .map(|(k, v)| (k.to_owned(), Value::String(v)))
                .collect();
            plan.push(
                Piece::Labels,
                PatchOp::Add {
                    path: "/metadata/labels".to_owned(),
                    value: Value::Object(map),
                },
            );
        }
        Some(labels) => {
            for (k, v) in want {
                if labels.get(k) != Some(v.as_str()) {
                    let mut path = "/metadata/labels".to_owned();
                    push_segment(&mut path, k);
                    plan.push(
                        Piece::Labels,
                        PatchOp::Add {
                            path,
                            value: Value::String(v),
                        },
                    );
                }
            }
        }
    }
}

/// Ensures the broker container's env: identity, advertised listener, and the probe's
/// downward-API variables.
pub(super) fn env(
    plan: &mut Plan<'_, '_>,
    spec: &SpecView<'_>,
    broker: usize,
    id: Option<&BrokerIdentity<'_>>,
) {
    let policy = plan.injector.policy;
    let p = policy.spec();
    let value = |name: &str, v: &str| json!({"name": name, "value": v});
    let mut want: Vec<(Piece, Value)> =
        vec![(Piece::IdentityEnv, value(&p.identity.cluster, &p.cluster))];
    if let Some(id) = id {
        want.push((Piece::IdentityEnv, value(&p.identity.rack, id.rack)));
        want.push((Piece::IdentityEnv, value(&p.identity.zone, id.zone)));
        want.push((
            Piece::IdentityEnv,
            value(&p.identity.broker_id, &id.broker_id.to_string()),
        ));
        want.push((
            Piece::ListenerEnv,
            value(&p.listener.env, &policy.advertised_listener(id)),
        ));
        if let Some(port_env) = &p.listener.port_env {
            want.push((Piece::ListenerEnv, value(port_env, &id.port.to_string())));
        }
    }
    want.extend(
        plan.injector
            .fixed
            .downward_env
            .iter()
            .map(|e| (Piece::ProbeEnv, e.clone())),
    );

    let container = &spec.containers.as_deref().unwrap_or_default()[broker];
    let base = format!("/spec/containers/{broker}/env");
    let Some(existing) = container.env.as_deref() else {
        let pieces: Vec<Piece> = want.iter().map(|(p, _)| *p).collect();
        append_all(
            plan,
            Piece::IdentityEnv,
            &base,
            false,
            want.into_iter().map(|(_, v)| v).collect(),
        );
        for piece in pieces {
            if !plan.changed.contains(&piece) {
                plan.changed.push(piece);
            }
        }
        return;
    };
    let mut appends = Vec::new();
    for (piece, entry) in want {
        let name = entry
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match existing
            .iter()
            .position(|e| e.get("name").and_then(Value::as_str) == Some(name))
        {
            None => appends.push((piece, entry)),
            Some(i) if is_subset(&entry, &existing[i]) => {}
            Some(_) if p.conflicts.env == OnConflict::Keep => {
                plan.notes.push(format!(
                    "kept env {name} of container {:?} as the pod sets it (conflicts.env: keep); the policy wants {}",
                    container.name.as_str(),
                    entry
                ));
            }
            Some(i) => plan.push(
                piece,
                PatchOp::Replace {
                    path: format!("{base}/{i}"),
                    value: entry,
                },
            ),
        }
    }
    for (piece, entry) in appends {
        plan.push(
            piece,
            PatchOp::Add {
                path: format!("{base}/-"),
                value: entry,
            },
        );
    }
}
