//! Per-broker identity: labels and env for rack, zone, cluster, broker id, and the
//! advertised listener; plus the downward-API env the probe needs.

use std::borrow::Cow;

use kpool_policy::BrokerIdentity;
use kpool_policy::keys::{BROKER_ID_LABEL, CLUSTER_LABEL, RACK_LABEL, ZONE_LABEL};
use kpool_policy::model::OnConflict;
use serde_json::Value;

use super::patch::{RawJson, container_path, join, push_index, push_segment, write_json_str};
use super::pod::{EnvView, MetaView, SpecView};
use super::sidecar::append_all;
use super::{DenyReason, MAX_ENV_DUPLICATES, PatchOp, Piece, Plan};

/// Ensures the identity labels. `kpool.io/*` labels are kpool's own, so they are always
/// set to the policy's values.
pub(super) fn labels(plan: &mut Plan<'_>, meta: &MetaView<'_>, id: Option<&BrokerIdentity<'_>>) {
    let cluster = plan.injector.policy.spec().cluster.as_str();
    let mut want: Vec<(&str, Cow<'_, str>)> = vec![(CLUSTER_LABEL, Cow::Borrowed(cluster))];
    if let Some(id) = id {
        want.push((RACK_LABEL, Cow::Borrowed(id.rack)));
        want.push((ZONE_LABEL, Cow::Borrowed(id.zone)));
        want.push((BROKER_ID_LABEL, Cow::Owned(id.broker_id.to_string())));
    }
    match &meta.labels {
        None => {
            let map: serde_json::Map<String, Value> = want
                .into_iter()
                .map(|(k, v)| (k.to_owned(), Value::String(v.into_owned())))
                .collect();
            plan.push(
                Piece::Labels,
                PatchOp::add("/metadata/labels", RawJson::value(&Value::Object(map))),
            );
        }
        Some(labels) => {
            for (k, v) in want {
                if labels.get(k) != Some(&*v) {
                    let mut path = "/metadata/labels".to_owned();
                    push_segment(&mut path, k);
                    plan.push(Piece::Labels, PatchOp::add(path, RawJson::string(&v)));
                }
            }
        }
    }
}

/// An env var kpool wants on the broker container, and where the container has it.
struct Want<'a> {
    piece: Piece,
    name: &'a str,
    source: Source<'a>,
    /// How many entries of this name the container has, and the first one's index.
    count: usize,
    first: usize,
    /// The last one's index: the kubelet uses the last of duplicates.
    last: usize,
}

impl<'a> Want<'a> {
    fn new(piece: Piece, name: &'a str, source: Source<'a>) -> Self {
        Self {
            piece,
            name,
            source,
            count: 0,
            first: 0,
            last: 0,
        }
    }
}

enum Source<'a> {
    Value(Cow<'a, str>),
    /// A downward-API field, with its entry already serialised.
    Field(&'static str, &'a RawJson),
}

impl Want<'_> {
    fn is_met_by(&self, have: &EnvView<'_>) -> bool {
        match &self.source {
            Source::Value(v) => have.value.as_deref() == Some(&**v) && have.value_from.is_none(),
            Source::Field(path, _) => {
                have.value.is_none()
                    && have
                        .value_from
                        .as_ref()
                        .and_then(|f| f.field_ref.as_ref())
                        .and_then(|r| r.field_path.as_deref())
                        == Some(*path)
            }
        }
    }

    fn entry(&self) -> RawJson {
        match &self.source {
            Source::Value(v) => {
                let mut text = String::with_capacity(self.name.len() + v.len() + 24);
                text.push_str("{\"name\":");
                write_json_str(&mut text, self.name);
                text.push_str(",\"value\":");
                write_json_str(&mut text, v);
                text.push('}');
                RawJson::trusted(text)
            }
            Source::Field(_, raw) => (*raw).clone(),
        }
    }
}

/// Ensures the broker container's env: identity, advertised listener, and the probe's
/// downward-API variables, each exactly once. The kubelet uses the last entry of a name, so
/// duplicates of a name kpool sets are removed (the first entry is kept, with kpool's
/// value), at most [`MAX_ENV_DUPLICATES`] of them; with `conflicts.env: keep` the pod's
/// entries stay and the last one is what counts.
pub(super) fn env(
    plan: &mut Plan<'_>,
    spec: &SpecView<'_>,
    broker: usize,
    id: Option<&BrokerIdentity<'_>>,
) -> Result<(), DenyReason> {
    let injector = plan.injector;
    let policy = &*injector.policy;
    let p = policy.spec();
    fn value<'a>(piece: Piece, name: &'a str, v: impl Into<Cow<'a, str>>) -> Want<'a> {
        Want::new(piece, name, Source::Value(v.into()))
    }
    let mut want: Vec<Want<'_>> = Vec::with_capacity(10);
    want.push(value(
        Piece::IdentityEnv,
        &p.identity.cluster,
        p.cluster.as_str(),
    ));
    if let Some(id) = id {
        want.push(value(Piece::IdentityEnv, &p.identity.rack, id.rack));
        want.push(value(Piece::IdentityEnv, &p.identity.zone, id.zone));
        want.push(value(
            Piece::IdentityEnv,
            &p.identity.broker_id,
            id.broker_id.to_string(),
        ));
        want.push(value(
            Piece::ListenerEnv,
            &p.listener.env,
            policy.advertised_listener(id),
        ));
        if let Some(port_env) = &p.listener.port_env {
            want.push(value(Piece::ListenerEnv, port_env, id.port.to_string()));
        }
    }
    want.extend(
        injector
            .fixed
            .downward_env
            .iter()
            .map(|(name, path, raw)| Want::new(Piece::ProbeEnv, name, Source::Field(path, raw))),
    );

    let container = &spec.containers.as_deref().unwrap_or_default()[broker];
    let base = container_path(broker, "/env");
    let Some(existing) = container.env.as_deref() else {
        for w in &want {
            if !plan.changed.contains(&w.piece) {
                plan.changed.push(w.piece);
            }
        }
        let entries = want.iter().map(Want::entry).collect();
        append_all(plan, Piece::IdentityEnv, &base, false, entries);
        return Ok(());
    };
    // One pass finds every entry of a wanted name.
    let mut duplicates = 0;
    let mut first_duplicate = 0;
    for (i, e) in existing.iter().enumerate() {
        if let Some(w) = want.iter_mut().find(|w| w.name == e.name.as_str()) {
            if w.count == 0 {
                w.first = i;
            } else {
                if duplicates == 0 {
                    first_duplicate = i;
                }
                duplicates += 1;
            }
            w.last = i;
            w.count += 1;
        }
    }
    let keep = p.conflicts.env == OnConflict::Keep;
    if !keep && duplicates > MAX_ENV_DUPLICATES {
        return Err(DenyReason::TooManyEnvDuplicates {
            location: format!("spec.containers[{broker}].env[{first_duplicate}]"),
            name: existing[first_duplicate].name.as_str().to_owned(),
            duplicates,
            max: MAX_ENV_DUPLICATES,
        });
    }
    let mut appends = Vec::new();
    for w in &want {
        if w.count == 0 {
            appends.push(w);
        } else if keep {
            if !w.is_met_by(&existing[w.last]) {
                let which = if w.count > 1 {
                    format!(
                        " (the last of its {} entries, which the kubelet uses)",
                        w.count
                    )
                } else {
                    String::new()
                };
                plan.notes.push(format!(
                    "kept env {}{which} of container {:?} as the pod sets it (conflicts.env: keep); the policy wants {}",
                    w.name,
                    container.name.as_str(),
                    w.entry().as_str()
                ));
            }
        } else if !w.is_met_by(&existing[w.first]) {
            let mut path = join(&base, "/");
            push_index(&mut path, w.first);
            plan.push(w.piece, PatchOp::replace(path, w.entry()));
        }
    }
    if duplicates > 0 && !keep {
        // Every later entry of a wanted name goes, from the end, so no removal shifts an
        // index another operation refers to (the replacements above are at first entries,
        // which are not removed, and are applied before).
        for (i, e) in existing.iter().enumerate().rev() {
            if let Some(w) = want.iter().find(|w| w.name == e.name.as_str())
                && i != w.first
            {
                let mut path = join(&base, "/");
                push_index(&mut path, i);
                plan.push(w.piece, PatchOp::remove(path));
            }
        }
    }
    for w in appends {
        plan.push(w.piece, PatchOp::add(join(&base, "/-"), w.entry()));
    }
    Ok(())
}
