//! The readiness probe that asks the agent, and the init container that installs its client.

use kpool_policy::Policy;
use kpool_policy::model::OnConflict;
use serde_json::{Value, json};

use super::patch::{RawJson, container_path, is_subset, join};
use super::pod::SpecView;
use super::sidecar::{Action, append_all, find_container};
use super::{DenyReason, PatchOp, Piece, Plan};

use kpool_policy::keys::{
    PROBE_DIR as BIN_DIR, PROBE_ENV, PROBE_INSTALLER_NAME as INSTALLER_NAME, PROBE_PATH,
    PROBE_VOLUME_NAME as BIN_VOLUME,
};

/// Everything here depends only on the policy, so it is built once.
#[derive(Debug)]
pub(super) struct Fixed {
    installer: RawJson,
    bin_volume: RawJson,
    bin_mount: RawJson,
    probe: Value,
    probe_raw: RawJson,
    /// (name, fieldPath, the env entry as JSON) of the probe's downward-API env.
    pub(super) downward_env: Vec<(&'static str, &'static str, RawJson)>,
}

impl Fixed {
    pub(super) fn new(policy: &Policy) -> Self {
        let r = &policy.spec().readiness;
        // Leave the kubelet's timeout a margin so the probe prints its own reason.
        let probe_timeout_ms = (u64::from(r.timeout_seconds) * 1000)
            .saturating_sub(250)
            .max(250);
        let probe = json!({
            "exec": {"command": [
                PROBE_PATH,
                format!("--agent-port={}", r.agent_port),
                format!("--timeout-ms={probe_timeout_ms}"),
            ]},
            "initialDelaySeconds": r.initial_delay_seconds,
            "periodSeconds": r.period_seconds,
            "timeoutSeconds": r.timeout_seconds,
            "failureThreshold": r.failure_threshold,
            "successThreshold": 1
        });
        Self {
            installer: RawJson::value(&json!({
                "name": INSTALLER_NAME,
                "image": r.probe_image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["/usr/local/bin/kpool-probe", "install", PROBE_PATH],
                "volumeMounts": [{"name": BIN_VOLUME, "mountPath": BIN_DIR}],
                "resources": {
                    "requests": {"cpu": "10m", "memory": "16Mi"},
                    "limits": {"memory": "32Mi"}
                },
                "securityContext": {
                    "runAsNonRoot": true,
                    "runAsUser": 65532,
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]}
                }
            }))
            .shared(),
            bin_volume: RawJson::value(&json!({"name": BIN_VOLUME, "emptyDir": {"sizeLimit": "32Mi"}}))
                .shared(),
            bin_mount: RawJson::value(&json!({"name": BIN_VOLUME, "mountPath": BIN_DIR, "readOnly": true}))
                .shared(),
            probe_raw: RawJson::value(&probe).shared(),
            probe,
            downward_env: PROBE_ENV
                .iter()
                .zip(["status.hostIP", "metadata.name", "metadata.namespace"])
                .map(|(name, field)| {
                    let entry = json!({"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": field}}});
                    (*name, field, RawJson::value(&entry).shared())
                })
            .collect(),
        }
    }
}

/// Refuses pods that already use kpool's names for something else; returns what to do with
/// the probe volume.
pub(super) fn check_clashes(
    plan: &mut Plan<'_>,
    spec: &SpecView<'_>,
    broker: usize,
) -> Result<Action, DenyReason> {
    if let Some((list, i)) = find_container(spec, INSTALLER_NAME)
        && !plan.owns_container(INSTALLER_NAME)
    {
        return Err(DenyReason::NameClash {
            what: "container",
            name: INSTALLER_NAME.to_owned(),
            location: format!("spec.{list}[{i}]"),
            field: "the pod (the name is reserved for kpool's probe installer)".to_owned(),
        });
    }
    plan.owned_containers.push(INSTALLER_NAME.to_owned());

    let volumes = spec.volumes.as_deref().unwrap_or_default();
    let bin = match volumes.iter().position(|v| v.name.as_str() == BIN_VOLUME) {
        Some(i) if !plan.owns_volume(BIN_VOLUME) => {
            return Err(DenyReason::NameClash {
                what: "volume",
                name: BIN_VOLUME.to_owned(),
                location: format!("spec.volumes[{i}]"),
                field: "the pod (the name is reserved for kpool's probe binary)".to_owned(),
            });
        }
        Some(_) => Action::Keep,
        None => Action::Append(plan.injector.fixed.bin_volume.clone()),
    };
    plan.owned_volumes.push(BIN_VOLUME.to_owned());

    let mounts = spec.containers.as_deref().unwrap_or_default()[broker]
        .volume_mounts
        .as_deref()
        .unwrap_or_default();
    if let Some(i) = mounts
        .iter()
        .position(|m| m.mount_path.as_str() == BIN_DIR && m.name.as_str() != BIN_VOLUME)
    {
        return Err(DenyReason::NameClash {
            what: "mount path",
            name: BIN_DIR.to_owned(),
            location: format!("spec.containers[{broker}].volumeMounts[{i}]"),
            field: "the broker container's mounts (the path is reserved for kpool-probe)"
                .to_owned(),
        });
    }
    Ok(bin)
}

/// Ensures the init container that copies `kpool-probe` into the pod.
pub(super) fn installer(plan: &mut Plan<'_>, spec: &SpecView<'_>) {
    let installer = &plan.injector.fixed.installer;
    match find_container(spec, INSTALLER_NAME) {
        None => {
            let v = installer.clone();
            append_all(
                plan,
                Piece::ProbeInstaller,
                "/spec/initContainers",
                spec.init_containers.is_some(),
                vec![v],
            );
        }
        Some((list, i)) if plan.policy_changed() => {
            let value = installer.clone();
            plan.push(
                Piece::ProbeInstaller,
                PatchOp::replace(format!("/spec/{list}/{i}"), value),
            );
        }
        Some(_) => {}
    }
}

/// Ensures the broker container mounts `kpool-probe` and its readiness probe runs it.
pub(super) fn mount_and_probe(plan: &mut Plan<'_>, spec: &SpecView<'_>, broker: usize) {
    let container = &spec.containers.as_deref().unwrap_or_default()[broker];
    let base = container_path(broker, "");
    let fixed = &plan.injector.fixed;

    let mounts = container.volume_mounts.as_deref();
    if !mounts
        .unwrap_or_default()
        .iter()
        .any(|m| m.name.as_str() == BIN_VOLUME)
    {
        let v = fixed.bin_mount.clone();
        append_all(
            plan,
            Piece::ProbeMount,
            &join(&base, "/volumeMounts"),
            mounts.is_some(),
            vec![v],
        );
    }

    let want = &fixed.probe;
    match &container.readiness_probe {
        Some(have) if is_subset(want, have) => {}
        Some(_) if plan.injector.policy.spec().conflicts.readiness_probe == OnConflict::Keep => {
            plan.notes.push(format!(
                "kept the readiness probe of container {:?} (conflicts.readinessProbe: keep): its readiness does not follow Kafka health",
                container.name.as_str()
            ));
        }
        _ => {
            let value = fixed.probe_raw.clone();
            plan.push(
                Piece::ReadinessProbe,
                PatchOp::add(join(&base, "/readinessProbe"), value),
            );
        }
    }
}
