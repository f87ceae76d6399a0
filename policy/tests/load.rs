//! Loading and validating policies: every error names the field path and the bad value.

use kpool_policy::{DEFAULT_POLICY_YAML, Policy, PolicyError};

fn with(replace: &str, by: &str) -> String {
    assert!(
        DEFAULT_POLICY_YAML.contains(replace),
        "fixture text {replace:?} not in the policy"
    );
    DEFAULT_POLICY_YAML.replacen(replace, by, 1)
}

fn err(yaml: &str) -> PolicyError {
    Policy::from_yaml(yaml, "policy.yaml").expect_err("policy must be rejected")
}

fn messages(e: &PolicyError) -> Vec<String> {
    e.field_errors().iter().map(ToString::to_string).collect()
}

#[test]
fn builtin_policy_loads() {
    let p = Policy::builtin().expect("built-in policy is valid");
    assert_eq!(p.spec().zones.len(), 3);
    assert_eq!(
        p.racks(),
        ["k8s-a-eu-west-1a", "k8s-a-eu-west-1b", "k8s-a-eu-west-1c"]
    );
    assert!(p.hash().starts_with("sha256:"));
    assert_eq!(p.sidecar_name(), "kpool-proxy");
    assert!(p.sidecar_is_per_pod());
}

#[test]
fn duplicate_zone_is_named() {
    let e = err(&with(
        "zones: [eu-west-1a, eu-west-1b, eu-west-1c]",
        "zones: [eu-west-1b, eu-west-1b]",
    ));
    assert_eq!(messages(&e), ["zones[1]: duplicate zone \"eu-west-1b\""]);
}

#[test]
fn unknown_key_is_rejected_with_its_path() {
    let e = err(&with("  idBase: 0", "  idBase: 0\n  idbase: 3"));
    let PolicyError::Parse {
        path,
        line,
        message,
        ..
    } = &e
    else {
        panic!("expected a parse error, got {e:?}");
    };
    assert_eq!(path, "brokers.idbase");
    assert!(message.contains("unknown field `idbase`"), "{message}");
    assert!(line.is_some());
    assert!(e.to_string().starts_with("policy.yaml:"), "{e}");
}

#[test]
fn wrong_type_names_field() {
    let e = err(&with("  basePort: 9091", "  basePort: lots"));
    let PolicyError::Parse { path, .. } = &e else {
        panic!("expected a parse error, got {e:?}");
    };
    assert_eq!(path, "mesh.basePort");
}

#[test]
fn bad_mode_names_field() {
    let e = err(&with("mode: enforce", "mode: enforcing"));
    assert!(e.to_string().contains("mode"), "{e}");
    assert!(e.to_string().contains("enforcing"), "{e}");
}

#[test]
fn several_invalid_values_are_all_reported() {
    let yaml = with("cluster: k8s-a", "cluster: \"k8s a\"");
    let yaml = yaml.replacen(
        "apiVersion: kpool.io/v1alpha1",
        "apiVersion: kpool.io/v2",
        1,
    );
    let yaml = yaml.replacen("periodSeconds: 10", "periodSeconds: 0", 1);
    let e = err(&yaml);
    let m = messages(&e);
    assert!(
        m.iter()
            .any(|l| l
                .starts_with("apiVersion: expected \"kpool.io/v1alpha1\", found \"kpool.io/v2\"")),
        "{m:?}"
    );
    assert!(
        m.iter()
            .any(|l| l.starts_with("cluster: \"k8s a\" is not a valid label value")),
        "{m:?}"
    );
    assert!(
        m.iter()
            .any(|l| l == "readiness.periodSeconds: must be at least 1, found 0"),
        "{m:?}"
    );
}

#[test]
fn rack_format_errors() {
    let e = err(&with(
        "rackFormat: \"{cluster}-{zone}\"",
        "rackFormat: \"{cluster}-{zome}\"",
    ));
    assert_eq!(
        messages(&e),
        ["rackFormat: \"{cluster}-{zome}\": unknown placeholder {zome} (known: {cluster}, {zone})"]
    );
    let e = err(&with(
        "rackFormat: \"{cluster}-{zone}\"",
        "rackFormat: \"{cluster}\"",
    ));
    assert!(
        messages(&e)[0].contains("same rack \"k8s-a\" for more than one zone"),
        "{e}"
    );
}

#[test]
fn listener_template_rejects_unknown_placeholders() {
    let e = err(&with("{mesh_address}:{port}", "{mesh_address}:{prot}"));
    assert!(
        messages(&e)[0].contains("{mesh_address}:{prot}\": unknown placeholder {prot}"),
        "{e}"
    );
}

#[test]
fn sidecar_container_is_checked_as_a_kubernetes_container() {
    let e = err(&with("containerPort: 9443", "containerPort: \"{port}\""));
    let m = messages(&e);
    assert!(
        m[0].starts_with("sidecar.container.ports[0].containerPort: "),
        "{m:?}"
    );

    let e = err(&with(
        "    image: envoyproxy/envoy:v1.31.2",
        "    image: envoyproxy/envoy:v1.31.2\n    imagePulPolicy: Always",
    ));
    assert_eq!(
        messages(&e),
        ["sidecar.container.imagePulPolicy: unknown field"]
    );

    let e = err(&with("    name: kpool-proxy", "    name: kafka"));
    assert_eq!(
        messages(&e),
        ["sidecar.container.name: \"kafka\" is the broker container's name (brokers.container)"]
    );
}

#[test]
fn sidecar_volume_names_must_be_distinct() {
    let e = err(&with(
        "    - name: kpool-proxy-certs",
        "    - name: kpool-proxy-config",
    ));
    assert_eq!(
        messages(&e),
        ["sidecar.volumes[1].name: duplicate volume \"kpool-proxy-config\""]
    );
}

#[test]
fn env_names_must_not_collide() {
    let e = err(&with("  zone: KPOOL_ZONE", "  zone: KAFKA_BROKER_RACK"));
    assert_eq!(
        messages(&e),
        ["identity.zone: env var \"KAFKA_BROKER_RACK\" is already used by identity.rack"]
    );
    let e = err(&with("  zone: KPOOL_ZONE", "  zone: HOST_IP"));
    assert!(
        messages(&e)[0].contains("the probe's downward-API env"),
        "{e}"
    );
}

#[test]
fn empty_selector_and_bad_taint_effect() {
    let e = err(&with(
        "  selector:\n    app.kubernetes.io/name: kafka\n    app.kubernetes.io/component: broker",
        "  selector: {}",
    ));
    assert!(messages(&e)[0].starts_with("brokers.selector: must have at least one label"));
    let e = err(&with("effect: NoSchedule", "effect: NoScheduling"));
    let PolicyError::Parse { path, message, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(path, "pool.taint.effect");
    assert!(message.contains("NoScheduling"), "{message}");
}

#[test]
fn invalid_yaml_and_empty_documents() {
    let e = err("zones: [a, b\n");
    assert!(matches!(e, PolicyError::Parse { .. }), "{e:?}");
    let e = err("   \n");
    assert!(e.to_string().contains("empty"), "{e}");
    let e = err("- just\n- a list\n");
    assert!(matches!(e, PolicyError::Parse { .. }), "{e:?}");
}

#[test]
fn missing_required_field_is_named() {
    let e = err(&with("cluster: k8s-a\n", ""));
    assert!(e.to_string().contains("missing field `cluster`"), "{e}");
}

#[test]
fn hash_ignores_formatting_and_comments_but_not_meaning() {
    let a = Policy::builtin().expect("valid");
    let reformatted: String = DEFAULT_POLICY_YAML
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    let b = Policy::from_yaml(&reformatted, "b").expect("valid");
    assert_eq!(a.hash(), b.hash());
    let c = Policy::from_yaml(&with("idBase: 0", "idBase: 100"), "c").expect("valid");
    assert_ne!(a.hash(), c.hash());
}

#[test]
fn identity_math() {
    let p = Policy::from_yaml(&with("idBase: 0", "idBase: 100"), "p").expect("valid");
    let id = p.identity("kafka-4", "streaming", 4).expect("identity");
    assert_eq!(id.zone, "eu-west-1b");
    assert_eq!(id.rack, "k8s-a-eu-west-1b");
    assert_eq!(id.broker_id, 104);
    // The mesh port follows the broker id (basePort 9091 + 104), not the ordinal.
    assert_eq!(id.port, 9195);
    assert_eq!(
        p.advertised_listener(&id),
        "INTERNAL://kafka-4.kafka-headless.streaming.k8s-a.kafka.internal:9092,CLIENT://127.0.0.5:9195"
    );
    let e = p
        .identity("kafka-100", "streaming", 100)
        .expect_err("ordinal beyond maxBrokersPerCluster");
    assert_eq!(
        e.to_string(),
        "ordinal 100 is beyond the mesh's 100 brokers per Kubernetes cluster (mesh.maxBrokersPerCluster)"
    );
}

#[test]
fn racks_parse_back_for_both_clusters() {
    let p = Policy::builtin().expect("valid");
    assert_eq!(
        p.parse_rack("k8s-a-eu-west-1c"),
        Some(("k8s-a", "eu-west-1c"))
    );
    assert_eq!(
        p.parse_rack("k8s-b-eu-west-1a"),
        Some(("k8s-b", "eu-west-1a"))
    );
    assert_eq!(p.parse_rack("eu-west-1a"), None);
    assert_eq!(p.parse_rack("k8s-b-us-east-1a"), None);
}

#[test]
fn readiness_and_kafka_settings_are_validated() {
    let e = err(&with("  staleAfterSeconds: 30", "  staleAfterSeconds: 0"));
    assert_eq!(
        messages(&e),
        ["readiness.staleAfterSeconds: must be at least 1, found 0"]
    );
    let e = err(&with("  verdict: broker", "  verdict: strict"));
    assert!(e.to_string().contains("readiness.verdict"), "{e}");
    let e = err(&with(
        "  # brokerState:\n  #   urlTemplate: \"http://{pod}.kafka-headless.{namespace}.svc:5556/metrics\"",
        "  brokerState:\n    urlTemplate: \"https://{pod}:5556/{nope}\"",
    ));
    assert_eq!(
        messages(&e)[0],
        "readiness.brokerState.urlTemplate: \"https://{pod}:5556/{nope}\": unknown placeholder {nope} (known: {pod}, {namespace}, {ordinal}, {broker_id}, {rack}, {zone}, {cluster}, {port}, {mesh_address})"
    );
    let e = err(&with(
        "\"kafka-1.kafka-headless.streaming.svc:9092\"",
        "\"kafka-1\"",
    ));
    assert_eq!(
        messages(&e),
        ["kafka.bootstrap[1]: expected host:port, found \"kafka-1\""]
    );
}

#[test]
fn guard_delete_after_refusals_is_opt_in_and_at_least_one() {
    let p = Policy::builtin().expect("built-in policy");
    assert_eq!(p.spec().guard.delete_after_refusals, None);
    let on = with("  # deleteAfterRefusals: 3", "  deleteAfterRefusals: 3");
    let q = Policy::from_yaml(&on, "policy.yaml").expect("deleteAfterRefusals: 3 loads");
    assert_eq!(q.spec().guard.delete_after_refusals, Some(3));
    assert_ne!(p.hash(), q.hash(), "opting in changes the policy's meaning");
    let e = err(&with(
        "  # deleteAfterRefusals: 3",
        "  deleteAfterRefusals: 0",
    ));
    assert_eq!(
        messages(&e),
        ["guard.deleteAfterRefusals: must be at least 1, found 0 (leave it out to never delete)"]
    );
    let e = err(&with(
        "  # deleteAfterRefusals: 3",
        "  deleteAfterRefusals: -1",
    ));
    assert!(e.to_string().contains("guard.deleteAfterRefusals"), "{e}");
}
