//! The injection engine, piece by piece, against real captured pods and small crafted ones.

mod common;

use common::{broker_pod, container, env, fixture_pod, inject, policy, policy_with};
use k8s_openapi::api::core::v1::Pod;
use kpool_webhook::inject::{
    Context, Decision, DenyReason, Injector, Piece, STATUS_ANNOTATION, SkipReason, Status,
};
use serde_json::{Value, json};

#[test]
fn real_statefulset_pod_is_injected_completely() {
    let policy = policy();
    let pod = fixture_pod("000-create-kafka-0.json");
    let (out, patched) = inject(&policy, &pod, Context::POD);
    assert_eq!(out.decision, Decision::Inject);
    for piece in [
        Piece::Labels,
        Piece::Sidecar,
        Piece::Volumes,
        Piece::Toleration,
        Piece::NodeAffinity,
        Piece::AntiAffinity,
        Piece::Spread,
        Piece::IdentityEnv,
        Piece::ListenerEnv,
        Piece::ProbeEnv,
        Piece::ProbeMount,
        Piece::ReadinessProbe,
        Piece::ProbeInstaller,
        Piece::Status,
    ] {
        assert!(
            out.changed.contains(&piece),
            "{piece:?} missing from {:?}",
            out.changed
        );
    }
    // The result is a valid Pod.
    let typed: Pod = serde_json::from_value(patched.clone()).expect("patched pod is a Pod");
    assert_eq!(typed.metadata.name.as_deref(), Some("kafka-0"));

    // Native sidecar first, before the existing native sidecar; probe installer appended.
    let init: Vec<&str> = patched["spec"]["initContainers"]
        .as_array()
        .expect("init containers")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(init, ["kpool-proxy", "log-shipper", "kpool-probe-install"]);
    assert_eq!(
        container(&patched, "initContainers", "kpool-proxy")["restartPolicy"],
        "Always"
    );

    // Nothing the pod had is gone: managedFields, the projected token volume, liveness.
    assert_eq!(
        patched["metadata"]["managedFields"],
        pod["metadata"]["managedFields"]
    );
    assert_eq!(patched["spec"]["volumes"][1], pod["spec"]["volumes"][1]);
    let kafka = container(&patched, "containers", "kafka");
    assert_eq!(
        kafka["livenessProbe"],
        pod["spec"]["containers"][0]["livenessProbe"]
    );
    assert_eq!(
        env(kafka, "KAFKA_HEAP_OPTS").expect("kept")["value"],
        "-Xmx6g -Xms6g"
    );
    let tolerations = patched["spec"]["tolerations"]
        .as_array()
        .expect("tolerations");
    assert_eq!(
        tolerations.len(),
        3,
        "two default NoExecute tolerations kept, one added"
    );
}

#[test]
fn injection_is_idempotent_on_real_pods() {
    let policy = policy();
    for name in ["000-create-kafka-0.json", "005-update-kafka-0.json"] {
        let pod = fixture_pod(name);
        let (_, once) = inject(&policy, &pod, Context::POD);
        let (again, twice) = inject(&policy, &once, Context::POD);
        assert_eq!(again.decision, Decision::AlreadyInjected, "{name}");
        assert!(again.patch.is_empty(), "{name}: {:?}", again.patch);
        assert_eq!(once, twice);
    }
}

#[test]
fn json_text_and_value_paths_agree() {
    let policy = policy();
    let injector = Injector::new(std::sync::Arc::new(policy.clone()));
    for name in [
        "000-create-kafka-0.json",
        "003-create-sneaky-batch-dryrun.json",
        "005-update-kafka-0.json",
    ] {
        let pod = fixture_pod(name);
        let text = serde_json::to_string(&pod).expect("encodes");
        let a = injector.inject(&pod, Context::POD).expect("value");
        let b = injector.inject_json(&text, Context::POD).expect("text");
        assert_eq!(a, b, "{name}");
    }
}

#[test]
fn non_broker_is_skipped_with_the_label_named() {
    let policy = policy();
    let pod = fixture_pod("003-create-sneaky-batch-dryrun.json");
    let (out, _) = inject(&policy, &pod, Context::POD);
    assert!(out.patch.is_empty());
    let Decision::Skip(reason) = &out.decision else {
        panic!("expected skip, got {:?}", out.decision)
    };
    assert_eq!(reason.code(), "not-a-broker");
    assert!(
        reason.to_string().contains("app.kubernetes.io/"),
        "{reason}"
    );
}

#[test]
fn opt_out_annotation_skips() {
    let policy = policy();
    let mut pod = broker_pod("kafka-0", json!({}));
    pod["metadata"]["annotations"] = json!({"kpool.io/inject": "false"});
    let (out, _) = inject(&policy, &pod, Context::POD);
    assert_eq!(
        out.decision,
        Decision::Skip(SkipReason::OptedOut {
            annotation: "kpool.io/inject".into(),
            value: "false".into()
        })
    );
}

#[test]
fn identity_labels_env_and_listener_follow_the_ordinal() {
    let policy = policy_with("idBase: 0", "idBase: 100");
    let mut pod = broker_pod("kafka-4", json!({}));
    pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"] = json!("4");
    let (_, patched) = inject(&policy, &pod, Context::POD);
    let labels = &patched["metadata"]["labels"];
    assert_eq!(labels["kpool.io/rack"], "k8s-a-eu-west-1b");
    assert_eq!(labels["kpool.io/zone"], "eu-west-1b");
    assert_eq!(labels["kpool.io/cluster"], "k8s-a");
    assert_eq!(labels["kpool.io/broker-id"], "104");
    let kafka = container(&patched, "containers", "kafka");
    assert_eq!(
        env(kafka, "KAFKA_BROKER_RACK").expect("rack")["value"],
        "k8s-a-eu-west-1b"
    );
    assert_eq!(env(kafka, "KAFKA_NODE_ID").expect("id")["value"], "104");
    assert_eq!(
        env(kafka, "KPOOL_BROKER_PORT").expect("port")["value"],
        "9195",
        "mesh.basePort 9091 + broker id 104"
    );
    assert_eq!(
        env(kafka, "KAFKA_ADVERTISED_LISTENERS").expect("listener")["value"],
        "INTERNAL://kafka-4.kafka-headless.streaming.k8s-a.kafka.internal:9092,CLIENT://127.0.0.5:9195"
    );
    assert_eq!(
        env(kafka, "HOST_IP").expect("host ip")["valueFrom"]["fieldRef"]["fieldPath"],
        "status.hostIP"
    );
    // The sidecar template is rendered for this broker.
    let proxy = container(&patched, "initContainers", "kpool-proxy");
    assert_eq!(proxy["args"][1], "--service-node=kafka-4");
    assert_eq!(
        env(proxy, "KPOOL_BROKER_ID").expect("sidecar env")["value"],
        "104"
    );
    let status: Status = Status::parse(
        patched["metadata"]["annotations"][STATUS_ANNOTATION]
            .as_str()
            .expect("status"),
    )
    .expect("status parses");
    assert_eq!(status.broker_id, Some(104));
    assert_eq!(status.policy_hash, policy.hash());
}

#[test]
fn ordinal_from_name_suffix_when_no_label() {
    let (_, patched) = inject(&policy(), &broker_pod("kafka-2", json!({})), Context::POD);
    assert_eq!(patched["metadata"]["labels"]["kpool.io/zone"], "eu-west-1c");
}

#[test]
fn generate_name_with_pod_index_gets_the_statefulset_name() {
    let mut pod = broker_pod("x", json!({}));
    let meta = pod["metadata"].as_object_mut().expect("meta");
    meta.remove("name");
    meta.insert("generateName".into(), json!("kafka-"));
    pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"] = json!("1");
    let (_, patched) = inject(&policy(), &pod, Context::POD);
    let proxy = container(&patched, "initContainers", "kpool-proxy");
    assert_eq!(proxy["args"][1], "--service-node=kafka-1");
}

#[test]
fn pod_without_ordinal_is_denied_with_the_reason() {
    let mut pod = broker_pod("x", json!({}));
    let meta = pod["metadata"].as_object_mut().expect("meta");
    meta.remove("name");
    meta.insert("generateName".into(), json!("kafka-"));
    let (out, _) = inject(&policy(), &pod, Context::POD);
    let Decision::Deny(reason) = &out.decision else {
        panic!("{:?}", out.decision)
    };
    assert_eq!(reason.code(), "no-ordinal");
    assert_eq!(
        reason.to_string(),
        "broker pod has no ordinal: no apps.kubernetes.io/pod-index label and the pod has only generateName \"kafka-\" (no name yet), which has no numeric -N suffix"
    );
    assert!(out.patch.is_empty());

    let (out, _) = inject(&policy(), &broker_pod("kafka", json!({})), Context::POD);
    assert!(matches!(
        out.decision,
        Decision::Deny(DenyReason::NoOrdinal(_))
    ));
}

#[test]
fn missing_broker_container_is_denied_listing_what_exists() {
    let mut pod = broker_pod("kafka-0", json!({}));
    pod["spec"]["containers"][0]["name"] = json!("broker");
    let (out, _) = inject(&policy(), &pod, Context::POD);
    let Decision::Deny(reason) = &out.decision else {
        panic!("{:?}", out.decision)
    };
    assert_eq!(
        reason.to_string(),
        "broker pod has no container named \"kafka\" (brokers.container); containers: [broker]"
    );
}

#[test]
fn sidecar_name_clash_is_denied() {
    let pod = broker_pod(
        "kafka-0",
        json!({"containers": [{"name": "kafka", "image": "k"}, {"name": "kpool-proxy", "image": "mine"}]}),
    );
    let (out, _) = inject(&policy(), &pod, Context::POD);
    let Decision::Deny(reason) = &out.decision else {
        panic!("{:?}", out.decision)
    };
    assert_eq!(reason.code(), "name-clash");
    assert_eq!(
        reason.to_string(),
        "container \"kpool-proxy\" already exists at spec.containers[1] and was not injected by kpool; rename it or change sidecar.container.name"
    );
}

#[test]
fn volume_and_installer_and_mount_clashes_are_denied() {
    let cases = [
        (
            json!({"volumes": [{"name": "kpool-proxy-certs", "emptyDir": {}}]}),
            "volume \"kpool-proxy-certs\" already exists at spec.volumes[0]",
        ),
        (
            json!({"volumes": [{"name": "kpool-bin", "emptyDir": {}}]}),
            "volume \"kpool-bin\" already exists at spec.volumes[0]",
        ),
        (
            json!({"initContainers": [{"name": "kpool-probe-install", "image": "x"}]}),
            "container \"kpool-probe-install\" already exists at spec.initContainers[0]",
        ),
        (
            json!({"containers": [{"name": "kafka", "image": "k", "volumeMounts": [{"name": "tools", "mountPath": "/kpool/bin"}]}]}),
            "mount path \"/kpool/bin\" already exists at spec.containers[0].volumeMounts[0]",
        ),
    ];
    for (extra, want) in cases {
        let (out, _) = inject(&policy(), &broker_pod("kafka-0", extra), Context::POD);
        let reason = out.decision.reason().unwrap_or_default();
        assert!(reason.starts_with(want), "{reason}");
        assert!(out.patch.is_empty());
    }
}

#[test]
fn existing_matching_toleration_is_enough() {
    let pod = broker_pod(
        "kafka-0",
        json!({"tolerations": [{"key": "dedicated", "operator": "Exists"}]}),
    );
    let (out, patched) = inject(&policy(), &pod, Context::POD);
    assert!(!out.changed.contains(&Piece::Toleration));
    assert_eq!(patched["spec"]["tolerations"], pod["spec"]["tolerations"]);
}

#[test]
fn user_affinity_terms_are_kept_and_pool_expressions_anded_into_each() {
    let user = json!({
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["m6i.2xlarge"]}]},
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}
            ]},
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["nvme"]}]}}
            ]
        },
        "podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}
    });
    let pod = broker_pod("kafka-0", json!({"affinity": user}));
    let (_, patched) = inject(&policy(), &pod, Context::POD);
    let aff = &patched["spec"]["affinity"];
    let terms =
        aff["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            .as_array()
            .expect("terms");
    assert_eq!(terms.len(), 2);
    for term in terms {
        let keys: Vec<&str> = term["matchExpressions"]
            .as_array()
            .expect("expressions")
            .iter()
            .map(|e| e["key"].as_str().unwrap_or_default())
            .collect();
        assert!(keys.contains(&"dedicated"), "{term}");
        assert!(keys.contains(&"topology.kubernetes.io/zone"), "{term}");
    }
    assert_eq!(
        terms[0]["matchExpressions"][0]["key"],
        "node.kubernetes.io/instance-type"
    );
    assert_eq!(
        terms[1]["matchFields"],
        user["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            [1]["matchFields"]
    );
    assert_eq!(
        aff["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"],
        user["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    );
    assert_eq!(aff["podAffinity"], user["podAffinity"]);
    let anti = &aff["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(anti["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(
        anti["labelSelector"]["matchLabels"]["app.kubernetes.io/component"],
        "broker"
    );
}

#[test]
fn user_zone_spread_wins() {
    let spread = json!([{"maxSkew": 2, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"}]);
    let pod = broker_pod("kafka-0", json!({"topologySpreadConstraints": spread}));
    let (out, patched) = inject(&policy(), &pod, Context::POD);
    assert!(!out.changed.contains(&Piece::Spread));
    assert_eq!(patched["spec"]["topologySpreadConstraints"], spread);
}

#[test]
fn env_and_probe_conflicts_follow_the_policy() {
    let pod = broker_pod(
        "kafka-0",
        json!({"containers": [{
            "name": "kafka", "image": "k",
            "env": [{"name": "KAFKA_BROKER_RACK", "value": "mine"}],
            "readinessProbe": {"tcpSocket": {"port": 9092}}
        }]}),
    );
    // The built-in policy replaces.
    let (out, patched) = inject(&policy(), &pod, Context::POD);
    let kafka = container(&patched, "containers", "kafka");
    assert_eq!(
        env(kafka, "KAFKA_BROKER_RACK").expect("rack")["value"],
        "k8s-a-eu-west-1a"
    );
    assert_eq!(
        kafka["env"].as_array().map(Vec::len),
        Some(9),
        "replaced in place, not duplicated"
    );
    assert!(kafka["readinessProbe"]["exec"].is_object());
    assert!(out.notes.is_empty());

    let keep = policy_with(
        "  readinessProbe: replace\n  env: replace",
        "  readinessProbe: keep\n  env: keep",
    );
    let (out, patched) = inject(&keep, &pod, Context::POD);
    let kafka = container(&patched, "containers", "kafka");
    assert_eq!(
        env(kafka, "KAFKA_BROKER_RACK").expect("rack")["value"],
        "mine"
    );
    assert_eq!(
        kafka["readinessProbe"],
        json!({"tcpSocket": {"port": 9092}})
    );
    assert_eq!(out.notes.len(), 2, "{:?}", out.notes);
    assert!(
        out.notes[0].contains("kept env KAFKA_BROKER_RACK"),
        "{:?}",
        out.notes
    );
    assert!(
        out.notes[1].contains("kept the readiness probe"),
        "{:?}",
        out.notes
    );
}

#[test]
fn classic_sidecar_is_appended_to_containers() {
    let policy = policy_with("  native: true", "  native: false");
    let (_, patched) = inject(&policy, &broker_pod("kafka-0", json!({})), Context::POD);
    let proxy = container(&patched, "containers", "kpool-proxy");
    assert!(proxy.get("restartPolicy").is_none());
    assert_eq!(patched["spec"]["containers"][0]["name"], "kafka");
}

#[test]
fn a_new_policy_refreshes_owned_pieces_without_duplicating() {
    let (_, once) = inject(&policy(), &broker_pod("kafka-0", json!({})), Context::POD);
    let newer = policy_with("envoyproxy/envoy:v1.31.2", "envoyproxy/envoy:v1.32.0");
    let (out, twice) = inject(&newer, &once, Context::POD);
    assert_eq!(out.decision, Decision::Inject);
    assert!(
        out.patch
            .iter()
            .any(|op| op.op == kpool_webhook::inject::patch::Op::Replace
                && op.path == "/spec/initContainers/0")
    );
    let names: Vec<&str> = twice["spec"]["initContainers"]
        .as_array()
        .expect("init")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["kpool-proxy", "kpool-probe-install"]);
    assert_eq!(
        container(&twice, "initContainers", "kpool-proxy")["image"],
        "envoyproxy/envoy:v1.32.0"
    );
    let (again, _) = inject(&newer, &twice, Context::POD);
    assert_eq!(again.decision, Decision::AlreadyInjected);
}

#[test]
fn template_gets_only_what_is_the_same_for_every_pod_and_admission_completes_it() {
    let policy = policy();
    let mut template = broker_pod("ignored", json!({}));
    template["metadata"]
        .as_object_mut()
        .expect("meta")
        .remove("name");
    let (out, tpl) = inject(&policy, &template, Context::TEMPLATE);
    assert_eq!(out.decision, Decision::Inject);
    assert!(tpl["metadata"]["labels"].get("kpool.io/rack").is_none());
    assert_eq!(tpl["metadata"]["labels"]["kpool.io/cluster"], "k8s-a");
    let exprs = &tpl["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"][0]["matchExpressions"];
    assert_eq!(
        exprs.as_array().map(Vec::len),
        Some(1),
        "pool only, no zone: {exprs}"
    );
    assert!(
        out.notes
            .iter()
            .any(|n| n.contains("filled per pod at admission")),
        "{:?}",
        out.notes
    );
    assert!(
        tpl["spec"].get("initContainers").is_some(),
        "probe installer is per-template"
    );

    // The StatefulSet controller stamps out pod 1; admission fills the rest, once.
    let mut pod = tpl.clone();
    pod["metadata"]["name"] = json!("kafka-1");
    pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"] = json!("1");
    let (out, admitted) = inject(&policy, &pod, Context::POD);
    assert_eq!(out.decision, Decision::Inject);
    assert_eq!(
        admitted["metadata"]["labels"]["kpool.io/zone"],
        "eu-west-1b"
    );
    let terms = &admitted["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"];
    assert_eq!(terms.as_array().map(Vec::len), Some(1));
    assert_eq!(
        terms[0]["matchExpressions"].as_array().map(Vec::len),
        Some(2)
    );
    let init = admitted["spec"]["initContainers"].as_array().expect("init");
    assert_eq!(
        init.len(),
        2,
        "installer kept, sidecar added once: {init:?}"
    );
    let (again, _) = inject(&policy, &admitted, Context::POD);
    assert_eq!(again.decision, Decision::AlreadyInjected);
}

#[test]
fn request_namespace_fills_an_empty_pod_namespace() {
    let mut pod = broker_pod("kafka-0", json!({}));
    pod["metadata"]
        .as_object_mut()
        .expect("meta")
        .remove("namespace");
    let ctx = Context {
        namespace: Some("kafka-prod"),
        target: kpool_webhook::inject::Target::Pod,
    };
    let p = policy_with("namespaces: [streaming]", "namespaces: [kafka-prod]");
    let (_, patched) = inject(&p, &pod, ctx);
    let kafka = container(&patched, "containers", "kafka");
    let listener = env(kafka, "KAFKA_ADVERTISED_LISTENERS").expect("listener")["value"]
        .as_str()
        .unwrap_or_default();
    assert!(
        listener.contains(".kafka-prod.k8s-a.kafka.internal"),
        "{listener}"
    );
}

#[test]
fn pod_without_spec_is_denied() {
    let mut pod = broker_pod("kafka-0", json!({}));
    pod.as_object_mut().expect("pod").remove("spec");
    let (out, _) = inject(&policy(), &pod, Context::POD);
    assert_eq!(out.decision, Decision::Deny(DenyReason::NoSpec));
}

#[test]
fn unreadable_pods_are_errors_that_name_the_field() {
    let policy = policy();
    let injector = Injector::new(std::sync::Arc::new(policy.clone()));
    let e = injector
        .inject(&json!({"metadata": {"labels": {"a": 1}}}), Context::POD)
        .expect_err("label value must be a string");
    assert_eq!(e.path, "metadata.labels.a");
    let e = injector
        .inject(&json!({"spec": {"containers": "kafka"}}), Context::POD)
        .expect_err("containers must be a list");
    assert_eq!(e.path, "spec.containers");
    let e = injector
        .inject(&json!([1, 2]), Context::POD)
        .expect_err("not an object");
    assert_eq!(e.to_string(), ".: expected a pod object, found an array");
    let e = injector
        .inject_json("{\"metadata\": ", Context::POD)
        .expect_err("truncated");
    assert!(e.message.contains("EOF"), "{e}");
    let e = injector
        .inject_json("{} {}", Context::POD)
        .expect_err("trailing data");
    assert!(e.message.contains("trailing"), "{e}");
}

#[test]
fn patch_paths_escape_label_keys() {
    let (out, _) = inject(&policy(), &broker_pod("kafka-0", json!({})), Context::POD);
    assert!(
        out.patch
            .iter()
            .any(|op| op.path() == "/metadata/labels/kpool.io~1rack")
    );
    let json: Value = serde_json::from_slice(&out.patch_json()).expect("patch is JSON");
    assert!(json.as_array().is_some_and(|ops| {
        ops.iter()
            .all(|op| op["op"] == "add" || op["op"] == "replace")
    }));
}

#[test]
fn affinity_levels_missing_or_null_are_created_once() {
    let req = "requiredDuringSchedulingIgnoredDuringExecution";
    let cases = [
        json!({}),
        json!({"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}),
        json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}),
        json!({"nodeAffinity": {req: {"nodeSelectorTerms": []}}}),
        json!({"nodeAffinity": null, "podAntiAffinity": null}),
        json!({"nodeAffinity": {req: {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n"]}]}]}}}),
        json!({"podAntiAffinity": {req: [{"topologyKey": "topology.kubernetes.io/zone", "labelSelector": {"matchLabels": {"app": "zk"}}}]}}),
    ];
    for case in cases {
        let pod = broker_pod("kafka-0", json!({"affinity": case}));
        let (out, patched) = inject(&policy(), &pod, Context::POD);
        assert!(
            out.changed.contains(&Piece::NodeAffinity)
                && out.changed.contains(&Piece::AntiAffinity),
            "{case}"
        );
        let aff = &patched["spec"]["affinity"];
        let terms = aff["nodeAffinity"][req]["nodeSelectorTerms"]
            .as_array()
            .expect("terms");
        assert_eq!(terms.len(), 1, "{case}: {aff}");
        assert_eq!(
            terms[0]["matchExpressions"].as_array().map(Vec::len),
            Some(2),
            "{case}: {aff}"
        );
        let anti = aff["podAntiAffinity"][req].as_array().expect("anti");
        assert!(
            anti.iter()
                .any(|t| t["topologyKey"] == "kubernetes.io/hostname"),
            "{case}: {aff}"
        );
        if let Some(user_anti) = case.pointer(&format!("/podAntiAffinity/{req}/0")) {
            assert_eq!(&anti[0], user_anti, "user anti-affinity term kept first");
        }
        if let Some(pa) = case.get("podAffinity") {
            assert_eq!(&aff["podAffinity"], pa);
        }
        let _: Pod = serde_json::from_value(patched.clone()).expect("valid pod");
        let (again, _) = inject(&policy(), &patched, Context::POD);
        assert_eq!(again.decision, Decision::AlreadyInjected, "{case}");
    }
}

/// The env entries of `name` in container `c`, in order.
fn env_all<'v>(c: &'v Value, name: &str) -> Vec<&'v Value> {
    c["env"]
        .as_array()
        .map(|es| es.iter().filter(|e| e["name"] == name).collect())
        .unwrap_or_default()
}

#[test]
fn duplicate_identity_env_ends_once_with_kpools_value() {
    // The kubelet uses the last entry of a name: kafka-0 is node 0 in rack
    // k8s-a-eu-west-1a, whatever the later duplicates say.
    let pod = broker_pod(
        "kafka-0",
        json!({"containers": [{
            "name": "kafka", "image": "k",
            "env": [
                {"name": "KAFKA_NODE_ID", "value": "0"},
                {"name": "KAFKA_BROKER_RACK", "value": "mine"},
                {"name": "JAVA_OPTS", "value": "-Xmx1g"},
                {"name": "KAFKA_NODE_ID", "value": "7"},
                {"name": "KAFKA_BROKER_RACK", "value": "k8s-a-eu-west-1a"},
                {"name": "HOST_IP", "value": "1.2.3.4"},
                {"name": "KAFKA_NODE_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
                {"name": "JAVA_OPTS", "value": "-Xmx2g"},
                {"name": "HOST_IP", "value": "5.6.7.8"}
            ]
        }]}),
    );
    let (out, patched) = inject(&policy(), &pod, Context::POD);
    assert_eq!(out.decision, Decision::Inject);
    let kafka = container(&patched, "containers", "kafka");
    for (name, want) in [
        (
            "KAFKA_NODE_ID",
            json!({"name": "KAFKA_NODE_ID", "value": "0"}),
        ),
        (
            "KAFKA_BROKER_RACK",
            json!({"name": "KAFKA_BROKER_RACK", "value": "k8s-a-eu-west-1a"}),
        ),
        (
            "HOST_IP",
            json!({"name": "HOST_IP", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.hostIP"}}}),
        ),
    ] {
        assert_eq!(env_all(kafka, name), [&want], "{name} in {kafka}");
    }
    // The pod's own duplicates are not kpool's business.
    assert_eq!(env_all(kafka, "JAVA_OPTS").len(), 2, "{kafka}");
    // The kept entry is the first: kpool's value is defined as early as the pod defined it.
    assert_eq!(kafka["env"][0]["name"], "KAFKA_NODE_ID");
    let (again, _) = inject(&policy(), &patched, Context::POD);
    assert_eq!(
        again.decision,
        Decision::AlreadyInjected,
        "{:?}",
        again.patch
    );
}

#[test]
fn a_later_duplicate_of_a_correct_identity_env_is_removed() {
    // The reported case: the first entry already has kpool's value, the second overrides it.
    let pod = broker_pod(
        "kafka-0",
        json!({"containers": [{
            "name": "kafka", "image": "k",
            "env": [
                {"name": "KAFKA_NODE_ID", "value": "0"},
                {"name": "KAFKA_NODE_ID", "value": "5"}
            ]
        }]}),
    );
    let (out, patched) = inject(&policy(), &pod, Context::POD);
    assert!(
        out.patch
            .iter()
            .any(|op| op.op == kpool_webhook::inject::patch::Op::Remove
                && op.path == "/spec/containers/0/env/1"),
        "{:?}",
        out.patch
    );
    let kafka = container(&patched, "containers", "kafka");
    assert_eq!(
        env_all(kafka, "KAFKA_NODE_ID"),
        [&json!({"name": "KAFKA_NODE_ID", "value": "0"})]
    );
}

#[test]
fn duplicate_env_under_keep_is_judged_by_the_entry_the_kubelet_uses() {
    let keep = policy_with("  env: replace", "  env: keep");
    let env = |values: [&str; 2]| {
        broker_pod(
            "kafka-0",
            json!({"containers": [{
                "name": "kafka", "image": "k",
                "env": [
                    {"name": "KAFKA_BROKER_RACK", "value": values[0]},
                    {"name": "KAFKA_BROKER_RACK", "value": values[1]}
                ]
            }]}),
        )
    };
    // The last entry is not kpool's: kept (the pod's choice) and said so.
    let (out, patched) = inject(&keep, &env(["k8s-a-eu-west-1a", "mine"]), Context::POD);
    let kafka = container(&patched, "containers", "kafka");
    assert_eq!(env_all(kafka, "KAFKA_BROKER_RACK").len(), 2);
    assert!(
        out.notes.iter().any(|n| n.contains(
            "kept env KAFKA_BROKER_RACK (the last of its 2 entries, which the kubelet uses)"
        )),
        "{:?}",
        out.notes
    );
    // The last entry is kpool's: nothing to say.
    let (out, _) = inject(&keep, &env(["mine", "k8s-a-eu-west-1a"]), Context::POD);
    assert!(
        !out.notes.iter().any(|n| n.contains("KAFKA_BROKER_RACK")),
        "{:?}",
        out.notes
    );
}

#[test]
fn env_duplicates_beyond_the_bound_are_denied_naming_it() {
    use kpool_webhook::inject::MAX_ENV_DUPLICATES;
    let pod = |duplicates: usize| {
        let env: Vec<Value> = (0..=duplicates)
            .map(|i| json!({"name": "KAFKA_NODE_ID", "value": i.to_string()}))
            .collect();
        broker_pod(
            "kafka-0",
            json!({"containers": [{"name": "kafka", "image": "k", "env": env}]}),
        )
    };
    let (out, patched) = inject(&policy(), &pod(MAX_ENV_DUPLICATES), Context::POD);
    assert_eq!(out.decision, Decision::Inject);
    let kafka = container(&patched, "containers", "kafka");
    assert_eq!(
        env_all(kafka, "KAFKA_NODE_ID"),
        [&json!({"name": "KAFKA_NODE_ID", "value": "0"})]
    );

    let (out, _) = inject(&policy(), &pod(MAX_ENV_DUPLICATES + 1), Context::POD);
    let Decision::Deny(reason) = &out.decision else {
        panic!("{:?}", out.decision)
    };
    assert_eq!(reason.code(), "too-many-env-duplicates");
    assert_eq!(
        reason.to_string(),
        format!(
            "broker container has {} duplicate entries of env names kpool sets, the first at spec.containers[0].env[1] (\"KAFKA_NODE_ID\"); kpool removes at most {MAX_ENV_DUPLICATES}: set each name once",
            MAX_ENV_DUPLICATES + 1
        )
    );
    assert!(out.patch.is_empty());
}

/// `n` required node selector terms, each with `exprs` expressions of its own.
fn terms(n: usize, exprs: usize) -> Value {
    let terms: Vec<Value> = (0..n)
        .map(|t| {
            let e: Vec<Value> = (0..exprs)
                .map(|i| json!({"key": format!("k{i}"), "operator": "In", "values": [format!("v{t}")]}))
                .collect();
            json!({"matchExpressions": e})
        })
        .collect();
    json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}})
}

#[test]
fn node_selector_terms_up_to_the_bound_are_merged_and_beyond_it_denied() {
    use kpool_webhook::inject::MAX_NODE_SELECTOR_TERMS;
    let pod = broker_pod(
        "kafka-0",
        json!({"affinity": terms(MAX_NODE_SELECTOR_TERMS, 2)}),
    );
    let (out, patched) = inject(&policy(), &pod, Context::POD);
    assert_eq!(out.decision, Decision::Inject);
    let merged = patched["spec"]["affinity"]["nodeAffinity"]
        ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        .as_array()
        .expect("terms");
    assert_eq!(merged.len(), MAX_NODE_SELECTOR_TERMS);
    for term in merged {
        assert_eq!(term["matchExpressions"].as_array().map(Vec::len), Some(4));
    }

    let (out, _) = inject(
        &policy(),
        &broker_pod(
            "kafka-0",
            json!({"affinity": terms(MAX_NODE_SELECTOR_TERMS + 1, 2)}),
        ),
        Context::POD,
    );
    let Decision::Deny(reason) = &out.decision else {
        panic!("{:?}", out.decision)
    };
    assert_eq!(reason.code(), "too-many-node-selector-terms");
    assert_eq!(
        reason.to_string(),
        format!(
            "broker pod has {} required node selector terms at spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms; kpool ANDs the pool and zone into each term and accepts at most {MAX_NODE_SELECTOR_TERMS}: merge the terms",
            MAX_NODE_SELECTOR_TERMS + 1
        )
    );
    assert!(out.patch.is_empty());
    // A template is bounded the same way (9,000 terms of 2 items each: within the pod
    // view's item budget).
    let (out, _) = inject(
        &policy(),
        &broker_pod("x", json!({"affinity": terms(9_000, 0)})),
        Context::TEMPLATE,
    );
    assert!(
        matches!(
            out.decision,
            Decision::Deny(DenyReason::TooManyNodeSelectorTerms { found: 9_000, .. })
        ),
        "{:?}",
        out.decision
    );
}

#[test]
fn names_longer_than_kubernetes_allows_are_denied() {
    use kpool_webhook::inject::{MAX_NAMESPACE_BYTES, MAX_POD_NAME_BYTES};
    let longest = format!("{}-0", "k".repeat(MAX_POD_NAME_BYTES - 2));
    let (out, _) = inject(&policy(), &broker_pod(&longest, json!({})), Context::POD);
    assert_eq!(out.decision, Decision::Inject);

    let too_long = format!("{}-0", "k".repeat(MAX_POD_NAME_BYTES - 1));
    let (out, _) = inject(&policy(), &broker_pod(&too_long, json!({})), Context::POD);
    assert_eq!(
        out.decision.reason().as_deref(),
        Some(
            "broker pod name is 254 bytes; Kubernetes allows at most 253 and kpool renders it into the broker's env and sidecar"
        )
    );

    // A namespace longer than Kubernetes allows is never one of brokers.namespaces (they
    // are validated DNS labels), so such a pod is not a broker at all (the engine's own
    // length bound stays behind it, as defence in depth).
    let mut pod = broker_pod("kafka-0", json!({}));
    pod["metadata"]["namespace"] = json!("n".repeat(MAX_NAMESPACE_BYTES + 1));
    let (out, _) = inject(&policy(), &pod, Context::TEMPLATE);
    assert!(
        matches!(
            &out.decision,
            Decision::Skip(SkipReason::NotABroker(
                kpool_policy::pool::NotBroker::Namespace { .. }
            ))
        ),
        "{:?}",
        out.decision
    );
}

#[test]
fn a_repeated_map_key_means_its_last_value() {
    // Only a client posting directly can repeat a key; the API server's Go decoding keeps
    // the last value, and so does kpool (serde_json's Value agrees for the other fields).
    let injector = Injector::new(std::sync::Arc::new(policy()));
    let pod = |labels: &str, annotations: &str| {
        format!(
            r#"{{"metadata": {{"name": "kafka-0", "namespace": "streaming", "labels": {{{labels}}}, "annotations": {{{annotations}}}}},
               "spec": {{"containers": [{{"name": "kafka", "image": "k"}}]}}}}"#
        )
    };
    let broker = r#""app.kubernetes.io/name": "kafka", "app.kubernetes.io/component": "broker""#;
    let decide = |labels: &str, annotations: &str| {
        injector
            .inject_json(&pod(labels, annotations), Context::POD)
            .expect("readable")
            .decision
    };
    assert_eq!(
        decide(
            &format!(r#"{broker}, "app.kubernetes.io/component": "zookeeper""#),
            ""
        )
        .reason()
        .as_deref(),
        Some(
            "not a broker: label app.kubernetes.io/component=\"zookeeper\", brokers.selector wants \"broker\""
        )
    );
    assert_eq!(
        decide(
            &format!(r#""app.kubernetes.io/component": "zookeeper", {broker}"#),
            ""
        ),
        Decision::Inject
    );
    assert_eq!(
        decide(
            broker,
            r#""kpool.io/inject": "false", "kpool.io/inject": "true""#
        ),
        Decision::Inject
    );
    assert!(matches!(
        decide(
            broker,
            r#""kpool.io/inject": "true", "kpool.io/inject": "false""#
        ),
        Decision::Skip(SkipReason::OptedOut { .. })
    ));
    // A kpool label given twice, the last one stale: it is set again.
    let out = injector
        .inject_json(
            &pod(
                &format!(
                    r#"{broker}, "kpool.io/rack": "k8s-a-eu-west-1a", "kpool.io/rack": "stale""#
                ),
                "",
            ),
            Context::POD,
        )
        .expect("readable");
    assert!(
        out.patch
            .iter()
            .any(|op| op.path == "/metadata/labels/kpool.io~1rack"),
        "{:?}",
        out.patch
    );
}
