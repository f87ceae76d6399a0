//! The security sidecar and its volumes.

use kpool_policy::{BrokerIdentity, Var, Vars};

use super::patch::RawJson;
use super::pod::SpecView;
use super::{DenyReason, PatchOp, Piece, Plan};

/// What to do with one injected object (container or volume).
pub(super) enum Action {
    Append(RawJson),
    Replace { path: String, value: RawJson },
    Keep,
}

/// The sidecar's actions, decided (and clash-checked) before any operation is emitted.
pub(super) struct SidecarPlan {
    container: Option<Action>,
    volumes: Vec<Action>,
}

/// Renders what a pod template can hold: only namespace and cluster are known.
struct TemplateVars<'a> {
    namespace: &'a str,
    cluster: &'a str,
}

impl Vars for TemplateVars<'_> {
    fn write_var(&self, var: Var, out: &mut String) {
        match var {
            Var::Namespace => out.push_str(self.namespace),
            Var::Cluster => out.push_str(self.cluster),
            // unreachable: per-pod templates are deferred to admission
            _ => {}
        }
    }
}

pub(super) fn prepare(
    plan: &mut Plan<'_>,
    spec: &SpecView<'_>,
    id: Option<&BrokerIdentity<'_>>,
    namespace: &str,
) -> Result<SidecarPlan, DenyReason> {
    let policy = &*plan.injector.policy;
    let template_vars;
    let vars: &dyn Vars = match id {
        Some(id) => id,
        None if policy.sidecar_is_per_pod() => {
            plan.notes.push(format!(
                "sidecar {:?} and its volumes are filled per pod at admission (the sidecar template uses per-pod placeholders)",
                policy.sidecar_name()
            ));
            return Ok(SidecarPlan {
                container: None,
                volumes: Vec::new(),
            });
        }
        None => {
            template_vars = TemplateVars {
                namespace,
                cluster: &policy.spec().cluster,
            };
            &template_vars
        }
    };

    let name = policy.sidecar_name();
    let render_sidecar = || render(policy.sidecar_container(), vars);
    let container = match find_container(spec, name) {
        None => Action::Append(render_sidecar()),
        Some((list, i)) => {
            if !plan.owns_container(name) {
                return Err(DenyReason::NameClash {
                    what: "container",
                    name: name.to_owned(),
                    location: format!("spec.{list}[{i}]"),
                    field: "sidecar.container.name".to_owned(),
                });
            }
            if plan.policy_changed() {
                Action::Replace {
                    path: format!("/spec/{list}/{i}"),
                    value: render_sidecar(),
                }
            } else {
                Action::Keep
            }
        }
    };
    plan.owned_containers.push(name.to_owned());

    let mut volumes = Vec::new();
    for (vi, (vname, template)) in policy
        .sidecar_volume_names()
        .iter()
        .zip(policy.sidecar_volumes())
        .enumerate()
    {
        let existing = spec
            .volumes
            .as_deref()
            .unwrap_or_default()
            .iter()
            .position(|v| v.name.as_str() == vname);
        let action = match existing {
            None => Action::Append(render(template, vars)),
            Some(i) if !plan.owns_volume(vname) => {
                return Err(DenyReason::NameClash {
                    what: "volume",
                    name: vname.clone(),
                    location: format!("spec.volumes[{i}]"),
                    field: format!("sidecar.volumes[{vi}].name"),
                });
            }
            Some(i) if plan.policy_changed() => Action::Replace {
                path: format!("/spec/volumes/{i}"),
                value: render(template, vars),
            },
            Some(_) => Action::Keep,
        };
        plan.owned_volumes.push(vname.clone());
        volumes.push(action);
    }
    Ok(SidecarPlan {
        container: Some(container),
        volumes,
    })
}

fn render(template: &kpool_policy::JsonTemplate, vars: &dyn Vars) -> RawJson {
    // Room for a typical sidecar container without regrowing.
    let mut text = String::with_capacity(2048);
    template.render_json(vars, &mut text);
    RawJson::trusted(text)
}

/// Where a container of that name is: (`containers` or `initContainers`, index).
pub(super) fn find_container(spec: &SpecView<'_>, name: &str) -> Option<(&'static str, usize)> {
    let find = |list: &Option<Vec<super::pod::ContainerView<'_>>>| {
        list.as_deref()
            .unwrap_or_default()
            .iter()
            .position(|c| c.name.as_str() == name)
    };
    find(&spec.containers)
        .map(|i| ("containers", i))
        .or_else(|| find(&spec.init_containers).map(|i| ("initContainers", i)))
}

/// Emits the volume operations: the sidecar's volumes and the probe binary volume.
pub(super) fn apply_volumes(
    plan: &mut Plan<'_>,
    spec: &SpecView<'_>,
    sidecar: &mut SidecarPlan,
    bin_volume: Action,
) {
    let mut appends = Vec::new();
    let volumes = std::mem::take(&mut sidecar.volumes);
    for action in volumes.into_iter().chain(std::iter::once(bin_volume)) {
        match action {
            Action::Append(v) => appends.push(v),
            Action::Replace { path, value } => {
                plan.push(Piece::Volumes, PatchOp::replace(path, value));
            }
            Action::Keep => {}
        }
    }
    append_all(
        plan,
        Piece::Volumes,
        "/spec/volumes",
        spec.volumes.is_some(),
        appends,
    );
}

/// Emits the sidecar container operation.
pub(super) fn apply_container(plan: &mut Plan<'_>, spec: &SpecView<'_>, sidecar: SidecarPlan) {
    match sidecar.container {
        Some(Action::Append(c)) => {
            let op = if plan.injector.policy.spec().sidecar.native {
                // First init container: a native sidecar must be up before the other init
                // containers and the broker need the network.
                if spec.init_containers.is_some() || plan_added_init(plan) {
                    PatchOp::add("/spec/initContainers/0", c)
                } else {
                    PatchOp::add("/spec/initContainers", array(&[c]))
                }
            } else if spec.containers.is_some() {
                PatchOp::add("/spec/containers/-", c)
            } else {
                PatchOp::add("/spec/containers", array(&[c]))
            };
            plan.push(Piece::Sidecar, op);
        }
        Some(Action::Replace { path, value }) => {
            plan.push(Piece::Sidecar, PatchOp::replace(path, value));
        }
        Some(Action::Keep) | None => {}
    }
}

/// True when an earlier operation of this plan created `spec.initContainers`.
fn plan_added_init(plan: &Plan<'_>) -> bool {
    plan.ops
        .iter()
        .any(|op| op.path() == "/spec/initContainers")
}

/// A JSON array of `items`.
pub(super) fn array(items: &[RawJson]) -> RawJson {
    let mut text =
        String::with_capacity(items.iter().map(|i| i.as_str().len() + 1).sum::<usize>() + 2);
    text.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(item.as_str());
    }
    text.push(']');
    RawJson::trusted(text)
}

/// Appends `items` to the array at `path`, creating it when the pod has none.
pub(super) fn append_all(
    plan: &mut Plan<'_>,
    piece: Piece,
    path: &str,
    exists: bool,
    items: Vec<RawJson>,
) {
    if items.is_empty() {
        return;
    }
    if exists {
        for value in items {
            plan.push(piece, PatchOp::add(super::patch::join(path, "/-"), value));
        }
    } else {
        plan.push(piece, PatchOp::add(path, array(&items)));
    }
}
