//! Puts the broker sidecar's files into the ConfigMap its pods mount, in every broker
//! namespace, by server-side apply (what the chart's Job runs after install and upgrade).

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

/// The field manager of every apply.
pub const FIELD_MANAGER: &str = "kpool-mesh";
/// The annotation carrying the hash of the policy the files were rendered from.
pub const POLICY_HASH_ANNOTATION: &str = "kpool.io/policy-hash";

/// The ConfigMap `name` in `namespace` holding `files` (file name → text).
pub fn configmap_body(
    name: &str,
    namespace: &str,
    files: &[(String, String)],
    policy_hash: &str,
) -> Value {
    let data: serde_json::Map<String, Value> = files
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": FIELD_MANAGER},
            "annotations": {POLICY_HASH_ANNOTATION: policy_hash},
        },
        "data": data,
    })
}

/// Applies the ConfigMap (forced: kpool-mesh owns these keys).
pub async fn apply_configmap(client: &Client, body: &Value) -> Result<(), anyhow::Error> {
    let meta = |k: &str| {
        body["metadata"][k]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("ConfigMap body without metadata.{k}"))
    };
    let (name, namespace) = (meta("name")?, meta("namespace")?);
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(body),
    )
    .await
    .map_err(|e| anyhow::anyhow!("apply ConfigMap {namespace}/{name}: {e}"))?;
    Ok(())
}
