//! The node guard's decisions as pure functions: pods on the node + the Node + the policy
//! in, violations and actions out.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kpool_agent::guard::decide::{
    self, Action, Controller, Guard, Kind, NodeFacts, PodFacts, Target,
};
use kpool_policy::Policy;
use kpool_policy::model::Mode;
use proptest::prelude::*;

fn policy() -> Policy {
    Policy::builtin().expect("policy")
}

fn audit_policy() -> Policy {
    let yaml = kpool_policy::DEFAULT_POLICY_YAML.replace("mode: enforce", "mode: audit");
    Policy::from_yaml(&yaml, "audit").expect("audit policy")
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn broker(name: &str, created: i64) -> PodFacts {
    PodFacts {
        namespace: "streaming".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        labels: labels(&[
            ("app.kubernetes.io/name", "kafka"),
            ("app.kubernetes.io/component", "broker"),
        ]),
        created_unix: created,
        controller: Some(controller("StatefulSet", "kafka")),
        controller_exists: Some(true),
        node_name: "pool-1".into(),
        service_account: "kafka".into(),
        ..PodFacts::default()
    }
}

/// A controller reference as its controller writes it (`Node`: a mirror pod's, on pool-1).
fn controller(kind: &str, name: &str) -> Controller {
    Controller {
        api_version: if kind == "Node" { "v1" } else { "apps/v1" }.into(),
        kind: kind.into(),
        name: if kind == "Node" { "pool-1" } else { name }.into(),
        uid: format!("uid-{kind}-{name}"),
    }
}

/// A pod owned by a real `owner` (a mirror pod carries the kubelet's annotation).
fn pod(ns: &str, name: &str, owner: &str) -> PodFacts {
    let mut annotations = BTreeMap::new();
    if owner == "Node" {
        annotations.insert(
            kpool_policy::pool::MIRROR_ANNOTATION.to_owned(),
            "hash".to_owned(),
        );
    }
    PodFacts {
        namespace: ns.into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        annotations,
        controller: Some(controller(owner, name)),
        controller_exists: Some(true),
        node_name: "pool-1".into(),
        created_unix: 100,
        ..PodFacts::default()
    }
}

/// A compliant pool node in eu-west-1a (broker ordinal 0, 3, ...'s zone).
fn node() -> NodeFacts {
    NodeFacts {
        name: "pool-1".into(),
        labels: labels(&[
            ("dedicated", "kafka"),
            ("topology.kubernetes.io/zone", "eu-west-1a"),
        ]),
        taints: vec![("dedicated".into(), "kafka".into(), "NoSchedule".into())],
    }
}

fn kinds(v: &[decide::Violation]) -> Vec<(Kind, String)> {
    v.iter()
        .map(|v| {
            let name = match &v.target {
                Target::Pod { name, .. } => name.clone(),
                Target::Node { name } => format!("node/{name}"),
                Target::Lease { name, .. } => format!("lease/{name}"),
            };
            (v.kind, name)
        })
        .collect()
}

#[test]
fn a_compliant_node_with_one_broker_and_daemonsets_has_no_violation() {
    let pods = vec![
        broker("kafka-0", 10),
        pod("kube-system", "kube-proxy-x", "DaemonSet"),
        pod("kube-system", "kube-apiserver-static", "Node"),
        pod("kpool-system", "anything", "ReplicaSet"),
    ];
    assert_eq!(
        kinds(&decide::violations(&policy(), &node(), &pods)),
        vec![]
    );
}

#[test]
fn the_newer_broker_is_the_violator_never_the_older() {
    let pods = vec![broker("kafka-6", 500), broker("kafka-0", 10)];
    let v = decide::violations(&policy(), &node(), &pods);
    assert_eq!(kinds(&v), vec![(Kind::SecondBroker, "kafka-6".into())]);
    assert!(v[0].message.contains("kafka-0"), "{}", v[0].message);
    // Equal creation times: the name breaks the tie, deterministically.
    let pods = vec![broker("kafka-9", 10), broker("kafka-3", 10)];
    assert_eq!(
        kinds(&decide::violations(&policy(), &node(), &pods)),
        vec![(Kind::SecondBroker, "kafka-9".into())]
    );
}

#[test]
fn a_terminating_broker_does_not_count() {
    let mut old = broker("kafka-0", 10);
    old.gone = true;
    let pods = vec![old, broker("kafka-3", 500)];
    assert_eq!(
        kinds(&decide::violations(&policy(), &node(), &pods)),
        vec![]
    );
}

#[test]
fn foreign_pods_are_violators_unless_allowed() {
    let mut allowed_sa = pod("monitoring", "scraper", "ReplicaSet");
    allowed_sa.service_account = "scraper".into();
    let yaml = kpool_policy::DEFAULT_POLICY_YAML.replace(
        "allowServiceAccounts: []",
        "allowServiceAccounts: [monitoring/scraper]",
    );
    let p = Policy::from_yaml(&yaml, "sa").expect("policy");
    let pods = vec![
        broker("kafka-0", 10),
        pod("default", "nginx", "ReplicaSet"),
        allowed_sa,
        pod("kube-system", "fluentd", "DaemonSet"),
    ];
    let v = decide::violations(&p, &node(), &pods);
    assert_eq!(kinds(&v), vec![(Kind::ForeignPod, "nginx".into())]);
    assert!(v[0].message.contains("default/default"), "{}", v[0].message);
}

#[test]
fn foreign_pods_are_left_alone_on_a_node_that_is_not_a_pool_node() {
    let n = NodeFacts {
        name: "general-1".into(),
        labels: BTreeMap::new(),
        taints: vec![],
    };
    let pods = vec![pod("default", "nginx", "ReplicaSet")];
    assert_eq!(
        kinds(&decide::violations(&policy(), &n, &pods)),
        vec![(Kind::NodeNotCompliant, "node/general-1".into())]
    );
}

#[test]
fn node_compliance_names_what_is_missing_on_each_broker() {
    let mut n = node();
    n.taints.clear();
    let v = decide::violations(&policy(), &n, &[broker("kafka-0", 1)]);
    assert_eq!(kinds(&v), vec![(Kind::NodeNotCompliant, "kafka-0".into())]);
    assert!(
        v[0].message
            .contains("missing taint dedicated=kafka:NoSchedule"),
        "{}",
        v[0].message
    );
    let mut n = node();
    n.labels.remove("dedicated");
    n.taints[0].2 = "NoExecute".into();
    let v = decide::violations(&policy(), &n, &[broker("kafka-0", 1)]);
    assert!(
        v[0].message.contains("label dedicated=kafka and taint"),
        "{}",
        v[0].message
    );
}

#[test]
fn rack_drift_compares_the_broker_zone_with_the_node_zone() {
    // kafka-1 belongs in eu-west-1b by its ordinal; the node is in eu-west-1a.
    let v = decide::violations(&policy(), &node(), &[broker("kafka-1", 1)]);
    assert_eq!(kinds(&v), vec![(Kind::RackDrift, "kafka-1".into())]);
    assert!(v[0].message.contains("zone eu-west-1b"), "{}", v[0].message);
    // The zone label wins over the ordinal.
    let mut b = broker("kafka-1", 1);
    b.labels.insert("kpool.io/zone".into(), "eu-west-1a".into());
    assert_eq!(kinds(&decide::violations(&policy(), &node(), &[b])), vec![]);
}

#[test]
fn enforce_evicts_second_brokers_and_foreign_pods_only() {
    let mut n = node();
    n.taints.clear();
    let pods = vec![
        broker("kafka-0", 1),
        broker("kafka-3", 2),
        pod("default", "nginx", "ReplicaSet"),
    ];
    let found = decide::violations(&policy(), &n, &pods);
    let mut g = Guard::new(Duration::from_secs(60));
    let d = g.decide(Mode::Enforce, found, Instant::now());
    let acts: Vec<(Kind, Action)> = d.iter().map(|d| (d.violation.kind, d.action)).collect();
    assert_eq!(
        acts,
        vec![
            (Kind::SecondBroker, Action::Evict),
            (Kind::NodeNotCompliant, Action::Report),
            (Kind::NodeNotCompliant, Action::Report),
            (Kind::ForeignPod, Action::Evict),
        ]
    );
}

#[test]
fn audit_mode_never_evicts() {
    let p = audit_policy();
    let pods = vec![
        broker("kafka-0", 1),
        broker("kafka-3", 2),
        pod("default", "x", "Job"),
    ];
    let found = decide::violations(&p, &node(), &pods);
    let mut g = Guard::default();
    let d = g.decide(p.spec().mode, found, Instant::now());
    assert_eq!(d.len(), 2);
    assert!(d.iter().all(|d| d.action == Action::Report));
}

#[test]
fn a_violator_is_acted_on_once_per_window() {
    let pods = vec![broker("kafka-0", 1), broker("kafka-3", 2)];
    let p = policy();
    let mut g = Guard::new(Duration::from_secs(300));
    let t0 = Instant::now();
    let round = |g: &mut Guard, t: Instant| {
        g.decide(Mode::Enforce, decide::violations(&p, &node(), &pods), t)
            .len()
    };
    assert_eq!(round(&mut g, t0), 1);
    for s in [1, 5, 60, 299] {
        assert_eq!(round(&mut g, t0 + Duration::from_secs(s)), 0, "at {s}s");
    }
    assert_eq!(round(&mut g, t0 + Duration::from_secs(300)), 1);
    assert_eq!(g.tracked(), 1);
    // Gone, then back: acted on again at once, and memory is bounded by what is present.
    assert!(
        g.decide(Mode::Enforce, vec![], t0 + Duration::from_secs(301))
            .is_empty()
    );
    assert_eq!(g.tracked(), 0);
    assert_eq!(round(&mut g, t0 + Duration::from_secs(302)), 1);
}

fn arb_pods() -> impl Strategy<Value = Vec<PodFacts>> {
    prop::collection::vec(
        (0u32..50, 0i64..20, any::<bool>(), any::<bool>(), 0u8..4),
        0..30,
    )
    .prop_map(|items| {
        items
            .into_iter()
            .enumerate()
            .map(|(i, (ord, created, is_broker, gone, owner))| {
                let mut p = if is_broker {
                    broker(&format!("kafka-{ord}"), created)
                } else {
                    pod(
                        ["default", "kube-system", "kpool-system"][i % 3],
                        &format!("p-{i}"),
                        ["ReplicaSet", "DaemonSet", "Job", "Node"][owner as usize],
                    )
                };
                p.uid = format!("uid-{i}");
                p.name = format!("{}-{i}", p.name);
                p.gone = gone;
                p
            })
            .collect()
    })
}

proptest! {
    /// Whatever is on the node, the oldest live broker is never evicted, audit mode never
    /// evicts, and a second round inside the window acts on nothing.
    #[test]
    fn the_oldest_broker_is_never_evicted_and_nothing_loops(pods in arb_pods(), audit in any::<bool>()) {
        let p = if audit { audit_policy() } else { policy() };
        let found = decide::violations(&p, &node(), &pods);
        let oldest = pods
            .iter()
            .filter(|x| !x.gone && x.labels.contains_key("app.kubernetes.io/component"))
            .min_by(|a, b| (a.created_unix, &a.namespace, &a.name).cmp(&(b.created_unix, &b.namespace, &b.name)));
        let mut g = Guard::new(Duration::from_secs(60));
        let t = Instant::now();
        let first = g.decide(p.spec().mode, found.clone(), t);
        for d in &first {
            if d.action == Action::Evict {
                prop_assert!(!audit);
                if let (Some(o), Target::Pod { uid, .. }) = (oldest, &d.violation.target) {
                    prop_assert_ne!(&o.uid, uid);
                }
                if let Target::Pod { uid, .. } = &d.violation.target {
                    let victim = pods.iter().find(|x| &x.uid == uid);
                    prop_assert!(victim.is_some_and(|v| !v.gone));
                }
            }
        }
        let live_brokers = pods.iter().filter(|x| !x.gone && x.labels.contains_key("app.kubernetes.io/component")).count();
        prop_assert_eq!(found.iter().filter(|v| v.kind == Kind::SecondBroker).count(), live_brokers.saturating_sub(1));
        prop_assert!(g.decide(p.spec().mode, found, t + Duration::from_secs(59)).is_empty());
    }
}

#[test]
fn facts_come_from_pod_and_node_objects() {
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "kafka-0", "namespace": "streaming", "uid": "u0",
            "creationTimestamp": "2026-01-01T00:00:10Z",
            "labels": {"app.kubernetes.io/name": "kafka"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "kafka", "uid": "s"}]},
        "spec": {"serviceAccountName": "kafka", "containers": []},
        "status": {"phase": "Running"}
    }))
    .expect("pod");
    let f = kpool_agent::guard::pod_facts(&pod, Some(true));
    assert_eq!(
        (
            f.namespace.as_str(),
            f.name.as_str(),
            f.uid.as_str(),
            f.created_unix,
            f.gone
        ),
        ("streaming", "kafka-0", "u0", 1_767_225_610, false)
    );
    assert_eq!(
        f.controller
            .as_ref()
            .map(|c| (c.kind.as_str(), c.name.as_str(), c.uid.as_str())),
        None,
        "an owner reference not marked controller is not the controller"
    );
    assert_eq!(f.controller_exists, Some(true));
    assert_eq!(f.service_account, "kafka");
    let mut done = pod.clone();
    done.status.as_mut().expect("status").phase = Some("Succeeded".into());
    assert!(kpool_agent::guard::pod_facts(&done, None).gone);
    let mut deleting = pod;
    deleting.metadata.deletion_timestamp = deleting.metadata.creation_timestamp.clone();
    assert!(kpool_agent::guard::pod_facts(&deleting, None).gone);

    let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "pool-1", "labels": {"dedicated": "kafka"}},
        "spec": {"taints": [{"key": "dedicated", "value": "kafka", "effect": "NoSchedule"}, {"key": "x", "effect": "NoExecute"}]},
        "status": {"capacity": {"cpu": "8", "memory": "32Gi"}, "allocatable": {"cpu": "7500m", "memory": "30Gi"}}
    }))
    .expect("node");
    let n = kpool_agent::guard::node_facts(&node);
    assert_eq!(n.name, "pool-1");
    assert_eq!(
        n.taints,
        vec![
            ("dedicated".into(), "kafka".into(), "NoSchedule".into()),
            ("x".into(), String::new(), "NoExecute".into())
        ]
    );
    let a = kpool_agent::overhead::allocatable_of(&node).expect("allocatable");
    assert_eq!((a.capacity_cpu_cores, a.allocatable_cpu_cores), (8.0, 7.5));
    assert_eq!(
        a.capacity_memory_bytes - a.allocatable_memory_bytes,
        2 << 30
    );
}

#[test]
fn deletion_is_due_only_in_enforce_for_a_foreign_pod_after_the_opted_in_refusals() {
    use kpool_agent::guard::act::delete_due;
    for mode in [Mode::Enforce, Mode::Audit] {
        for kind in Kind::ALL {
            for after in [None, Some(0), Some(1), Some(3)] {
                for refusals in 0..5 {
                    let want = mode == Mode::Enforce
                        && kind == Kind::ForeignPod
                        && after.is_some_and(|n| n >= 1 && refusals >= n);
                    assert_eq!(
                        delete_due(mode, kind, after, refusals),
                        want,
                        "{mode:?} {kind} after {after:?} refusals {refusals}"
                    );
                }
            }
        }
    }
    assert!(delete_due(Mode::Enforce, Kind::ForeignPod, Some(3), 3));
    assert!(!delete_due(Mode::Enforce, Kind::ForeignPod, Some(3), 2));
    assert!(!delete_due(Mode::Enforce, Kind::SecondBroker, Some(1), 9));
    assert!(!delete_due(Mode::Audit, Kind::ForeignPod, Some(1), 9));
}

#[test]
fn refusals_are_counted_per_uid_and_forgotten_with_the_pod() {
    use kpool_agent::guard::act::Refusals;
    let mut r = Refusals::default();
    assert_eq!((r.refused("a"), r.refused("a"), r.refused("b")), (1, 2, 1));
    assert_eq!((r.count("a"), r.count("b"), r.count("c")), (2, 1, 0));
    assert_eq!(r.breached(), 2);
    // A replacement under the same name has another uid: it starts from zero.
    r.retain(|uid| uid == "b" || uid == "a2");
    assert_eq!((r.count("a"), r.count("a2"), r.breached()), (0, 0, 1));
    r.forget("b");
    assert_eq!(r.breached(), 0);
}

/// Hardening 4: broker labels prove nothing outside the broker namespaces, or without a
/// real StatefulSet; such a pod is foreign, and the real broker is not a "second broker".
#[test]
fn broker_labels_outside_the_broker_namespaces_make_a_foreign_pod_not_a_broker() {
    let mut impostor = broker("kafka-9", 1);
    impostor.namespace = "default".into();
    impostor.controller = Some(controller("ReplicaSet", "kafka-9"));
    // Older than the real broker, so it would have won "first broker on the node".
    let pods = vec![impostor, broker("kafka-0", 10)];
    let v = decide::violations(&policy(), &node(), &pods);
    assert_eq!(kinds(&v), vec![(Kind::ForeignPod, "kafka-9".into())]);
    assert!(
        v[0].message
            .contains("brokers live only in brokers.namespaces"),
        "{}",
        v[0].message
    );

    // In the broker namespace, but its StatefulSet does not exist with that uid.
    let mut forged = broker("kafka-8", 1);
    forged.controller_exists = Some(false);
    let v = decide::violations(&policy(), &node(), &[forged, broker("kafka-0", 10)]);
    assert_eq!(kinds(&v), vec![(Kind::ForeignPod, "kafka-8".into())]);
    assert!(v[0].message.contains("does not exist"), "{}", v[0].message);

    // No controller at all.
    let mut orphan = broker("kafka-7", 1);
    orphan.controller = None;
    let v = decide::violations(&policy(), &node(), &[orphan, broker("kafka-0", 10)]);
    assert_eq!(kinds(&v), vec![(Kind::ForeignPod, "kafka-7".into())]);

    // Not yet checked (or the API is unreachable): the benefit of the doubt.
    let mut unchecked = broker("kafka-0", 10);
    unchecked.controller_exists = None;
    assert!(decide::violations(&policy(), &node(), &[unchecked]).is_empty());
}

/// Hardening 5: exemptions a pod writes itself do not count.
#[test]
fn forged_daemonset_and_mirror_exemptions_do_not_count() {
    let forged = |f: &dyn Fn(&mut PodFacts)| {
        let mut p = pod("default", "miner", "DaemonSet");
        f(&mut p);
        let v = decide::violations(&policy(), &node(), &[broker("kafka-0", 1), p]);
        assert_eq!(kinds(&v), vec![(Kind::ForeignPod, "miner".into())], "{v:?}");
    };
    // A DaemonSet the API does not have with that uid.
    forged(&|p| p.controller_exists = Some(false));
    // Not the apps/v1 DaemonSet.
    forged(&|p| {
        if let Some(c) = p.controller.as_mut() {
            c.api_version = "example.com/v1".into();
        }
    });
    // An owner reference that is not the controller.
    forged(&|p| p.controller = None);
    // "Mirror pods": a Node owner without the kubelet's annotation...
    forged(&|p| {
        *p = pod("default", "miner", "Node");
        p.annotations.clear();
    });
    // ...or naming another node.
    forged(&|p| {
        *p = pod("default", "miner", "Node");
        p.node_name = "pool-2".into();
    });
    // The real ones still pass.
    let ok = vec![
        broker("kafka-0", 1),
        pod("kube-system", "kube-proxy-x", "DaemonSet"),
        pod("kube-system", "etcd-pool-1", "Node"),
    ];
    assert!(decide::violations(&policy(), &node(), &ok).is_empty());
}
