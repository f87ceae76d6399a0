//! Helpers shared by the engine tests.
#![allow(dead_code)]

pub mod tls;

use kpool_policy::{DEFAULT_POLICY_YAML, Policy};
use kpool_webhook::inject::{Context, Injector, Outcome};
use kpool_webhook::offline::apply_patch;
use serde_json::Value;

/// The captured AdmissionReviews, as the API server sent them.
pub fn fixture(name: &str) -> Value {
    kpool_testkit::fixtures::admission(name)
}

/// The pod inside a captured AdmissionReview.
pub fn fixture_pod(name: &str) -> Value {
    fixture(name)["request"]["object"].clone()
}

/// The built-in policy.
pub fn policy() -> Policy {
    Policy::builtin().expect("built-in policy loads")
}

/// The built-in policy with one text replacement.
pub fn policy_with(replace: &str, by: &str) -> Policy {
    assert!(
        DEFAULT_POLICY_YAML.contains(replace),
        "{replace:?} not in the policy"
    );
    Policy::from_yaml(&DEFAULT_POLICY_YAML.replacen(replace, by, 1), "test policy")
        .expect("modified policy loads")
}

/// Runs the engine and applies its patch; returns the outcome and the patched pod.
pub fn inject(policy: &Policy, pod: &Value, ctx: Context<'_>) -> (Outcome, Value) {
    let outcome = Injector::new(std::sync::Arc::new(policy.clone()))
        .inject(pod, ctx)
        .expect("pod is readable");
    let mut patched = pod.clone();
    apply_patch(&mut patched, &outcome.patch).expect("patch applies");
    (outcome, patched)
}

/// The container named `name` in `list` (`containers` or `initContainers`).
pub fn container<'v>(pod: &'v Value, list: &str, name: &str) -> &'v Value {
    pod["spec"][list]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {list} entry {name:?} in {pod}"))
}

/// The env var `name` of container `c`.
pub fn env<'v>(c: &'v Value, name: &str) -> Option<&'v Value> {
    c["env"].as_array()?.iter().find(|e| e["name"] == name)
}

/// A small broker pod with the given extra `spec` members merged in.
pub fn broker_pod(name: &str, spec_extra: Value) -> Value {
    let mut pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "streaming",
            "labels": {"app.kubernetes.io/name": "kafka", "app.kubernetes.io/component": "broker"}
        },
        "spec": {"containers": [{"name": "kafka", "image": "apache/kafka:3.9.0"}]}
    });
    if let (Some(spec), Value::Object(extra)) = (pod["spec"].as_object_mut(), spec_extra) {
        spec.extend(extra);
    }
    pod
}
