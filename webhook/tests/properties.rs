//! Property tests over generated pods: the patch always applies, the result is a valid
//! Pod, injection is idempotent, nothing the pod had is lost unless the policy replaces it,
//! and answers stay proportionate whatever the pod holds.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

use k8s_openapi::api::core::v1::Pod;
use kpool_webhook::admission::{Admission, Endpoint};
use kpool_webhook::audit::{AuditLog, AuditTarget};
use kpool_webhook::inject::{
    Context, Decision, Injector, MAX_ENV_DUPLICATES, MAX_NAMESPACE_BYTES, MAX_NODE_SELECTOR_TERMS,
    MAX_POD_NAME_BYTES,
};
use kpool_webhook::metrics::Metrics;
use kpool_webhook::offline::apply_patch;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Env vars, labels and probe the built-in policy sets (and replaces on conflict).
const POLICY_ENV: [&str; 9] = [
    "KPOOL_CLUSTER",
    "KAFKA_BROKER_RACK",
    "KPOOL_ZONE",
    "KAFKA_NODE_ID",
    "KAFKA_ADVERTISED_LISTENERS",
    "KPOOL_BROKER_PORT",
    "HOST_IP",
    "POD_NAME",
    "POD_NAMESPACE",
];

fn name_from(pool: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::sample::select(pool).prop_map(str::to_owned)
}

fn env_var() -> impl Strategy<Value = Value> {
    (
        name_from(&[
            "KAFKA_HEAP_OPTS",
            "KAFKA_BROKER_RACK",
            "HOST_IP",
            "JAVA_OPTS",
            "POD_NAME",
            "X",
        ]),
        "[a-z0-9 ]{0,8}",
    )
        .prop_map(|(n, v)| json!({"name": n, "value": v}))
}

/// An entry of an env name kpool sets, by value or by field (duplicates of these are
/// removed, so the kubelet cannot pick another value).
fn policy_env_var() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(&POLICY_ENV[..]),
        prop_oneof![
            "[a-z0-9-]{0,8}".prop_map(|v| json!({"value": v})),
            Just(json!({"value": "0"})),
            Just(json!({"valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.hostIP"}}})),
        ],
    )
        .prop_map(|(n, mut v)| {
            v["name"] = json!(n);
            v
        })
}

fn unique_by_name(items: Vec<Value>) -> Vec<Value> {
    let mut seen = BTreeSet::new();
    items
        .into_iter()
        .filter(|v| seen.insert(v["name"].as_str().unwrap_or_default().to_owned()))
        .collect()
}

fn container(name: impl Strategy<Value = String>) -> impl Strategy<Value = Value> {
    (
        name,
        prop::option::of(prop::collection::vec(env_var(), 0..4)),
        prop::option::of(prop::sample::select(vec![
            json!({"tcpSocket": {"port": 9092}}),
            json!({"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 5}),
        ])),
        prop::option::of(prop::collection::vec(
            name_from(&["data", "config", "logs"]).prop_map(|n| json!({"name": n, "mountPath": format!("/mnt/{n}")})),
            0..3,
        )),
        any::<bool>(),
    )
        .prop_map(|(name, env, probe, mounts, future)| {
            let mut c = json!({"name": name, "image": "img:1", "livenessProbe": {"tcpSocket": {"port": 9092}}});
            if let Some(env) = env {
                c["env"] = Value::Array(unique_by_name(env));
            }
            if let Some(p) = probe {
                c["readinessProbe"] = p;
            }
            if let Some(m) = mounts {
                c["volumeMounts"] = Value::Array(unique_by_name(m));
            }
            if future {
                c["x-future-field"] = json!({"kept": [1, 2, 3]});
            }
            c
        })
}

fn toleration() -> impl Strategy<Value = Value> {
    prop::sample::select(vec![
        json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}),
        json!({"key": "dedicated", "operator": "Equal", "value": "kafka", "effect": "NoSchedule"}),
        json!({"key": "dedicated", "operator": "Exists"}),
        json!({"key": "dedicated", "operator": "Equal", "value": "other", "effect": "NoSchedule"}),
    ])
}

fn affinity() -> impl Strategy<Value = Value> {
    let expr = prop::sample::select(vec![
        json!({"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["m6i.2xlarge"]}),
        json!({"key": "dedicated", "operator": "In", "values": ["kafka"]}),
        json!({"key": "disk", "operator": "Exists"}),
    ]);
    (
        prop::option::of(prop::collection::vec(prop::collection::vec(expr, 0..3), 0..3)),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(terms, preferred, anti)| {
            let mut a = Map::new();
            let mut node = Map::new();
            if let Some(terms) = terms {
                let terms: Vec<Value> = terms.into_iter().map(|e| json!({"matchExpressions": e})).collect();
                node.insert(
                    "requiredDuringSchedulingIgnoredDuringExecution".into(),
                    json!({"nodeSelectorTerms": terms}),
                );
            }
            if preferred {
                node.insert(
                    "preferredDuringSchedulingIgnoredDuringExecution".into(),
                    json!([{"weight": 5, "preference": {"matchExpressions": [{"key": "ssd", "operator": "Exists"}]}}]),
                );
            }
            a.insert("nodeAffinity".into(), Value::Object(node));
            if anti {
                a.insert(
                    "podAntiAffinity".into(),
                    json!({"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "podAffinityTerm": {"topologyKey": "x", "labelSelector": {}}}]}),
                );
            }
            Value::Object(a)
        })
}

prop_compose! {
    fn pod()(
        ordinal in 0u32..40,
        by_label in any::<bool>(),
        is_broker in prop::bool::weighted(0.85),
        extra_labels in prop::collection::btree_map("[a-z]{1,6}", "[a-z0-9]{0,6}", 0..3),
        stale_rack in any::<bool>(),
        annotations in prop::option::of(prop::collection::btree_map("[a-z]{1,6}\\.io/[a-z]{1,6}", "[ -~]{0,12}", 0..3)),
        kafka in container(Just("kafka".to_owned())),
        kafka_duplicates in prop::collection::vec((policy_env_var(), any::<prop::sample::Index>()), 0..4),
        others in prop::collection::vec(container(name_from(&["jmx-exporter", "log-shipper", "cruise"])), 0..3),
        init in prop::option::of(prop::collection::vec(container(name_from(&["init-a", "log-shipper-native"])), 0..2)),
        volumes in prop::option::of(prop::collection::vec(name_from(&["data", "config", "logs", "tmp"]), 0..4)),
        tolerations in prop::option::of(prop::collection::vec(toleration(), 0..3)),
        affinity in prop::option::of(affinity()),
        spread in any::<bool>(),
        future in any::<bool>(),
    ) -> Value {
        let mut labels = Map::new();
        for (k, v) in extra_labels {
            labels.insert(format!("x-{k}"), json!(v));
        }
        if is_broker {
            labels.insert("app.kubernetes.io/name".into(), json!("kafka"));
            labels.insert("app.kubernetes.io/component".into(), json!("broker"));
        }
        if stale_rack {
            labels.insert("kpool.io/rack".into(), json!("somewhere-else"));
        }
        let mut meta = json!({"namespace": "streaming", "labels": labels});
        if by_label {
            meta["generateName"] = json!("kafka-");
            meta["labels"]["apps.kubernetes.io/pod-index"] = json!(ordinal.to_string());
        } else {
            meta["name"] = json!(format!("kafka-{ordinal}"));
        }
        if let Some(a) = annotations {
            meta["annotations"] = json!(a);
        }
        // Entries of kpool's env names anywhere in the broker's env, repeating what is there
        // or each other.
        let mut kafka = kafka;
        if !kafka_duplicates.is_empty() {
            let env = kafka["env"].as_array().cloned().unwrap_or_default();
            let mut env = env;
            for (entry, at) in kafka_duplicates {
                let i = at.index(env.len() + 1);
                env.insert(i, entry);
            }
            kafka["env"] = Value::Array(env);
        }
        let mut containers = vec![kafka];
        containers.extend(others);
        let mut spec = json!({"containers": unique_by_name(containers)});
        if let Some(init) = init {
            spec["initContainers"] = Value::Array(unique_by_name(init));
        }
        if let Some(v) = volumes {
            let v: Vec<Value> = v.into_iter().map(|n| json!({"name": n, "emptyDir": {}})).collect();
            spec["volumes"] = Value::Array(unique_by_name(v));
        }
        if let Some(t) = tolerations {
            spec["tolerations"] = Value::Array(t);
        }
        if let Some(a) = affinity {
            spec["affinity"] = a;
        }
        if spread {
            spec["topologySpreadConstraints"] = json!([{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway"}]);
        }
        if future {
            spec["x-future-spec"] = json!({"anything": true});
        }
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
    }
}

/// True for what the policy may replace: kpool's labels and annotation, and the env and
/// readiness probe of the broker container (the built-in policy says `replace`).
fn exempt(path: &str) -> bool {
    path.starts_with("metadata.labels.kpool.io/")
        || path == "metadata.annotations.kpool.io/status"
        || path.starts_with("spec.containers[kafka].readinessProbe")
        || POLICY_ENV
            .iter()
            .any(|n| path.starts_with(&format!("spec.containers[kafka].env[{n}]")))
}

/// Checks that everything in `orig` is still in `new` (named list items matched by name).
fn preserved(orig: &Value, new: &Value, path: &str) -> Result<(), String> {
    if exempt(path) {
        return Ok(());
    }
    match (orig, new) {
        (Value::Object(o), Value::Object(n)) => {
            for (k, ov) in o {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match n.get(k) {
                    Some(nv) => preserved(ov, nv, &p)?,
                    None if exempt(&p) => {}
                    None => return Err(format!("{p}: lost")),
                }
            }
            Ok(())
        }
        (Value::Array(o), Value::Array(n)) => {
            let named = o
                .iter()
                .all(|v| v.get("name").is_some_and(Value::is_string));
            // The k-th item of a repeated name is matched with the k-th of that name.
            let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
            for (i, ov) in o.iter().enumerate() {
                if named {
                    let name = ov["name"].as_str().unwrap_or_default();
                    let k = seen.entry(name).or_default();
                    let occurrence = *k;
                    *k += 1;
                    let p = format!("{path}[{name}]");
                    match n
                        .iter()
                        .filter(|nv| nv["name"] == ov["name"])
                        .nth(occurrence)
                    {
                        Some(nv) => preserved(ov, nv, &p)?,
                        None if exempt(&p) => {}
                        None => return Err(format!("{p}: lost")),
                    }
                } else {
                    let p = format!("{path}[{i}]");
                    match n.get(i) {
                        Some(nv) => preserved(ov, nv, &p)?,
                        None => return Err(format!("{p}: lost")),
                    }
                }
            }
            Ok(())
        }
        (o, n) if o == n => Ok(()),
        (o, n) => Err(format!("{path}: {o} became {n}")),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn injection_applies_is_valid_idempotent_and_loses_nothing(pod in pod()) {
        let policy = common::policy();
        let injector = Injector::new(Arc::new(policy.clone()));
        let out = injector.inject(&pod, Context::POD).expect("generated pods are readable");
        match &out.decision {
            Decision::Inject => {}
            Decision::Skip(_) | Decision::Deny(_) | Decision::AlreadyInjected => {
                prop_assert!(out.patch.is_empty());
                return Ok(());
            }
        }
        let mut patched = pod.clone();
        apply_patch(&mut patched, &out.patch).map_err(TestCaseError::fail)?;
        let typed: Result<Pod, _> = serde_json::from_value(patched.clone());
        prop_assert!(typed.is_ok(), "not a Pod: {:?}", typed.err());
        preserved(&pod, &patched, "").map_err(TestCaseError::fail)?;
        let kafka = patched["spec"]["containers"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == "kafka"))
            .expect("broker container");
        for name in POLICY_ENV {
            let n = kafka["env"]
                .as_array()
                .map_or(0, |es| es.iter().filter(|e| e["name"] == name).count());
            prop_assert_eq!(n, 1, "{} in {}", name, kafka["env"]);
        }

        let again = injector.inject(&patched, Context::POD).expect("readable");
        prop_assert_eq!(&again.decision, &Decision::AlreadyInjected);
        prop_assert!(again.patch.is_empty(), "second pass patched: {:?}", again.patch);

        // The text fast path decides the same.
        let text = serde_json::to_string(&pod).expect("encodes");
        prop_assert_eq!(injector.inject_json(&text, Context::POD).expect("readable"), out);
    }

    #[test]
    fn template_then_admission_is_idempotent(pod in pod()) {
        let policy = common::policy();
        let injector = Injector::new(Arc::new(policy.clone()));
        let mut template = pod.clone();
        let out = injector.inject(&template, Context::TEMPLATE).expect("readable");
        apply_patch(&mut template, &out.patch).map_err(TestCaseError::fail)?;
        let admitted = injector.inject(&template, Context::POD).expect("readable");
        let mut pod2 = template.clone();
        apply_patch(&mut pod2, &admitted.patch).map_err(TestCaseError::fail)?;
        let again = injector.inject(&pod2, Context::POD).expect("readable");
        prop_assert!(again.patch.is_empty(), "{:?}", again.patch);
    }

    #[test]
    fn arbitrary_json_never_panics(v in arbitrary_json()) {
        let policy = common::policy();
        let injector = Injector::new(Arc::new(policy.clone()));
        let _ = injector.inject(&v, Context::POD);
        let _ = injector.inject_json(&v.to_string(), Context::POD);
    }
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(|n| json!(n)),
        prop::sample::select(vec![
            "kafka",
            "kafka-1",
            "broker",
            "app.kubernetes.io/name",
            ""
        ])
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "metadata",
                        "spec",
                        "labels",
                        "name",
                        "containers",
                        "env",
                        "affinity",
                        "tolerations",
                        "volumes",
                        "annotations"
                    ]),
                    inner
                ),
                0..5
            )
            .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

#[test]
fn the_loss_checker_can_fail() {
    let orig = json!({"spec": {"containers": [{"name": "kafka", "env": [{"name": "A", "value": "1"}]}], "tolerations": [{"key": "a"}]}});
    assert!(preserved(&orig, &orig, "").is_ok());
    let lost_env = json!({"spec": {"containers": [{"name": "kafka", "env": []}], "tolerations": [{"key": "a"}]}});
    assert_eq!(
        preserved(&orig, &lost_env, ""),
        Err("spec.containers[kafka].env[A]: lost".to_owned())
    );
    let changed = json!({"spec": {"containers": [{"name": "kafka", "env": [{"name": "A", "value": "1"}]}], "tolerations": [{"key": "b"}]}});
    assert!(preserved(&orig, &changed, "").is_err());
    let exempted = json!({"spec": {"containers": [{"name": "kafka", "env": [{"name": "HOST_IP", "value": "x"}]}]}});
    let replaced = json!({"spec": {"containers": [{"name": "kafka", "env": [{"name": "HOST_IP", "valueFrom": {}}]}]}});
    assert!(preserved(&exempted, &replaced, "").is_ok());
}

#[test]
fn generated_pods_mostly_get_injected() {
    use proptest::strategy::ValueTree;
    let policy = common::policy();
    let injector = Injector::new(Arc::new(policy.clone()));
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let injected = (0..200)
        .filter(|_| {
            let pod = pod().new_tree(&mut runner).expect("tree").current();
            injector
                .inject(&pod, Context::POD)
                .expect("readable")
                .decision
                == Decision::Inject
        })
        .count();
    assert!(
        injected > 120,
        "only {injected}/200 generated pods were injected"
    );
}

/// One admission handler for every case (its audit log is a thread and a file).
fn admission() -> &'static Admission {
    static ADMISSION: OnceLock<(Admission, tempfile::TempDir)> = OnceLock::new();
    &ADMISSION
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("tmp");
            let metrics = Arc::new(Metrics::new());
            let audit = AuditLog::start(
                AuditTarget::File {
                    path: dir.path().join("audit.jsonl"),
                    max_bytes: 1 << 20,
                    max_files: 1,
                },
                metrics.clone(),
            )
            .expect("audit log");
            (
                Admission::new(Arc::new(common::policy()), metrics, audit),
                dir,
            )
        })
        .0
}

/// The most any answer may be, whatever the request (the largest patch within every bound
/// is about 35 KB, 47 KB as the answer's base64).
const ANSWER_CAP: usize = 64 * 1024;

/// The most operations a patch may have: every piece once (about 25) plus two per node
/// selector term and one per removed env duplicate.
const OPS_CAP: usize = 32 + 2 * MAX_NODE_SELECTOR_TERMS + MAX_ENV_DUPLICATES;

/// A broker pod made to push every bound: many terms of one shape, many entries of kpool's
/// env names, many containers and tolerations, long names.
#[derive(Debug, Clone)]
struct Big {
    terms: usize,
    term: Value,
    duplicates: usize,
    containers: usize,
    tolerations: usize,
    name: usize,
    namespace: usize,
}

fn big() -> impl Strategy<Value = Big> {
    (
        prop_oneof![
            0..=3usize,
            MAX_NODE_SELECTOR_TERMS - 2..=MAX_NODE_SELECTOR_TERMS + 2,
            0..=3 * MAX_NODE_SELECTOR_TERMS,
        ],
        prop::sample::select(vec![
            json!({}),
            json!({"matchExpressions": []}),
            json!({"matchExpressions": [{"key": "disk", "operator": "Exists"}]}),
            json!({"matchExpressions": [{"key": "dedicated", "operator": "In", "values": ["kafka"]}]}),
            json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}),
        ]),
        prop_oneof![
            0..=3usize,
            MAX_ENV_DUPLICATES - 2..=MAX_ENV_DUPLICATES + 2,
            0..=3 * MAX_ENV_DUPLICATES,
        ],
        0..200usize,
        0..200usize,
        prop_oneof![1..=12usize, MAX_POD_NAME_BYTES - 4..=MAX_POD_NAME_BYTES + 4],
        prop_oneof![1..=12usize, MAX_NAMESPACE_BYTES - 2..=MAX_NAMESPACE_BYTES + 2],
    )
        .prop_map(
            |(terms, term, duplicates, containers, tolerations, name, namespace)| Big {
                terms,
                term,
                duplicates,
                containers,
                tolerations,
                name,
                namespace,
            },
        )
}

impl Big {
    fn pod_name(&self) -> String {
        format!("{}-0", "k".repeat(self.name.saturating_sub(2)))
    }

    fn namespace(&self) -> String {
        "n".repeat(self.namespace)
    }

    fn pod(&self) -> Value {
        // Each of kpool's names once, then `duplicates` more of them.
        let env: Vec<Value> = (0..POLICY_ENV.len() + self.duplicates)
            .map(|i| json!({"name": POLICY_ENV[i % POLICY_ENV.len()], "value": i.to_string()}))
            .collect();
        let mut containers = vec![json!({"name": "kafka", "image": "k", "env": env})];
        containers.extend((0..self.containers).map(|i| {
            json!({"name": format!("c{i}"), "image": "x",
                   "env": [{"name": "KAFKA_NODE_ID", "value": "9"}, {"name": "KAFKA_NODE_ID", "value": "8"}],
                   "volumeMounts": [{"name": "data", "mountPath": "/kpool/bin"}]})
        }));
        let tolerations: Vec<Value> = (0..self.tolerations)
            .map(|i| json!({"key": format!("k{i}"), "operator": "Exists"}))
            .collect();
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": self.pod_name(), "namespace": self.namespace(),
                "labels": {"app.kubernetes.io/name": "kafka", "app.kubernetes.io/component": "broker"}
            },
            "spec": {
                "containers": containers,
                "tolerations": tolerations,
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": vec![self.term.clone(); self.terms]
                }}}
            }
        })
    }

    /// A policy whose broker namespaces hold this pod's, when Kubernetes would allow it
    /// (a longer one can never be a broker namespace: those are validated DNS labels).
    fn policy(&self) -> kpool_policy::Policy {
        if self.namespace > MAX_NAMESPACE_BYTES {
            return common::policy();
        }
        common::policy_with(
            "namespaces: [streaming]",
            &format!("namespaces: [streaming, {}]", self.namespace()),
        )
    }

    /// The denial this pod must get, if any (the engine checks names first); a namespace
    /// longer than Kubernetes allows makes no broker.
    fn expected_denial(&self) -> Option<&'static str> {
        if self.namespace > MAX_NAMESPACE_BYTES {
            Some("broker-labels-outside-broker-namespaces")
        } else if self.pod_name().len() > MAX_POD_NAME_BYTES {
            Some("name-too-long")
        } else if self.terms > MAX_NODE_SELECTOR_TERMS {
            Some("too-many-node-selector-terms")
        } else if self.duplicates > MAX_ENV_DUPLICATES {
            Some("too-many-env-duplicates")
        } else {
            None
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// However many terms, duplicates, containers and tolerations a broker pod has, the
    /// answer is at most `ANSWER_CAP` and the patch at most `OPS_CAP` operations; past a
    /// bound the pod is denied naming it, within every bound it is injected with each of
    /// kpool's env names exactly once, and injecting again changes nothing.
    #[test]
    fn answers_stay_proportionate(big in big()) {
        let pod = big.pod();
        let injector = Injector::new(Arc::new(big.policy()));
        let out = injector.inject(&pod, Context::POD).expect("readable");
        match (big.expected_denial(), &out.decision) {
            (Some(code), Decision::Deny(reason)) => prop_assert_eq!(reason.code(), code),
            (Some(code), Decision::Skip(reason)) => prop_assert_eq!(reason.code(), code),
            (None, Decision::Inject) => {}
            (want, got) => prop_assert!(false, "expected {:?}, got {:?}", want, got),
        }
        prop_assert!(out.patch.len() <= OPS_CAP, "{} operations", out.patch.len());

        let review = json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "0b6a4b4e-4b1c-4a5e-9f5e-1f2d3c4b5a69",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "operation": "CREATE", "namespace": big.namespace(), "object": pod,
            }
        })
        .to_string();
        for endpoint in [Endpoint::Mutate, Endpoint::Validate] {
            let reply = admission().handle(endpoint, review.as_bytes());
            prop_assert_eq!(reply.status, 200);
            prop_assert!(
                reply.body.len() <= ANSWER_CAP,
                "{:?}: {} request bytes, {} answer bytes",
                endpoint,
                review.len(),
                reply.body.len()
            );
        }

        if out.decision == Decision::Inject {
            let mut patched = pod.clone();
            apply_patch(&mut patched, &out.patch).map_err(TestCaseError::fail)?;
            let env = patched["spec"]["containers"][0]["env"].as_array().cloned().unwrap_or_default();
            for name in POLICY_ENV {
                prop_assert_eq!(env.iter().filter(|e| e["name"] == name).count(), 1, "{}", name);
            }
            let again = injector.inject(&patched, Context::POD).expect("readable");
            prop_assert_eq!(&again.decision, &Decision::AlreadyInjected, "{:?}", again.patch);
        }
    }
}
