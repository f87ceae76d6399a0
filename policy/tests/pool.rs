//! The pool rules (brokers, exemptions, identity) as pure functions, with the evidence each
//! caller has: none (offline), the admission request's creator (webhook), controller reads
//! (agent).

use std::collections::BTreeMap;

use kpool_policy::Policy;
use kpool_policy::pool::{
    Admission, Evidence, Exemption, MIRROR_ANNOTATION, NoEvidence, NotBroker, OwnerRef, PoolPod,
};

#[derive(Debug, Clone, Default)]
struct Pod {
    namespace: String,
    name: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    controller: Option<(String, String, String, String)>,
    node: Option<String>,
    sa: String,
}

impl PoolPod for Pod {
    fn namespace(&self) -> &str {
        &self.namespace
    }
    fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
    fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).map(String::as_str)
    }
    fn controller(&self) -> Option<OwnerRef<'_>> {
        self.controller.as_ref().map(|(a, k, n, u)| OwnerRef {
            api_version: a,
            kind: k,
            name: n,
            uid: u,
        })
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn node_name(&self) -> Option<&str> {
        self.node.as_deref()
    }
    fn service_account(&self) -> &str {
        &self.sa
    }
}

/// The agent's evidence: owners read from the API.
struct Read(Option<bool>);

impl Evidence for Read {
    fn owner_exists(&self, _: &str, _: &OwnerRef<'_>) -> Option<bool> {
        self.0
    }
    fn checks_owners(&self) -> bool {
        true
    }
}

fn policy() -> Policy {
    Policy::builtin().expect("built-in policy")
}

fn owned(kind: &str, name: &str) -> Option<(String, String, String, String)> {
    let api = if kind == "Node" { "v1" } else { "apps/v1" };
    Some((api.into(), kind.into(), name.into(), format!("uid-{name}")))
}

fn broker(ns: &str, name: &str) -> Pod {
    Pod {
        namespace: ns.into(),
        name: name.into(),
        labels: [
            ("app.kubernetes.io/name", "kafka"),
            ("app.kubernetes.io/component", "broker"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        controller: owned("StatefulSet", "kafka"),
        ..Pod::default()
    }
}

#[test]
fn a_broker_is_labelled_in_a_broker_namespace_and_where_checked_owned_by_a_real_statefulset() {
    let p = policy();
    assert_eq!(
        p.broker_check(&broker("streaming", "kafka-0"), &NoEvidence),
        Ok(())
    );
    let err = p
        .broker_check(&broker("default", "kafka-0"), &NoEvidence)
        .expect_err("wrong namespace");
    assert!(matches!(err, NotBroker::Namespace { .. }) && err.is_impostor());
    assert_eq!(err.code(), "broker-labels-outside-broker-namespaces");
    assert!(err.to_string().contains("\"default\""), "{err}");

    let mut unlabelled = broker("streaming", "kafka-0");
    unlabelled.labels.clear();
    let err = p
        .broker_check(&unlabelled, &Read(Some(true)))
        .expect_err("labels");
    assert!(!err.is_impostor(), "{err}");

    // At admission no owner is checked: a pod created by hand in a broker namespace is a
    // broker (creating it needs rights there). The agent checks.
    let mut hand_made = broker("streaming", "kafka-0");
    hand_made.controller = None;
    assert!(p.is_broker(&hand_made, &NoEvidence));
    assert!(!p.is_broker(&hand_made, &Read(None)));
    assert!(
        p.is_broker(&broker("streaming", "kafka-0"), &Read(None)),
        "unknown: benefit of the doubt"
    );
    let err = p
        .broker_check(&broker("streaming", "kafka-0"), &Read(Some(false)))
        .expect_err("ghost");
    assert!(err.to_string().contains("does not exist"), "{err}");
    let mut rs = broker("streaming", "kafka-0");
    rs.controller = owned("ReplicaSet", "kafka");
    assert!(!p.is_broker(&rs, &Read(Some(true))));
}

fn ds_pod(ns: &str) -> Pod {
    Pod {
        namespace: ns.into(),
        name: "fluentd-x".into(),
        controller: owned("DaemonSet", "fluentd"),
        ..Pod::default()
    }
}

#[test]
fn daemonset_pods_are_exempt_only_when_the_daemonset_is_real() {
    let p = policy();
    let dsc = "system:serviceaccount:kube-system:daemon-set-controller";
    let created_by = |user| Admission {
        creator: Some(user),
    };
    assert_eq!(
        p.pool_exemption(&ds_pod("kube-system"), &created_by(dsc)),
        Some(Exemption::DaemonSet {
            name: "kube-system/fluentd".into()
        })
    );
    assert_eq!(
        p.pool_exemption(&ds_pod("default"), &created_by("alice")),
        None,
        "forged at create"
    );
    assert!(
        p.pool_exemption(&ds_pod("default"), &Read(Some(false)))
            .is_none(),
        "agent: not real"
    );
    assert!(
        p.pool_exemption(&ds_pod("default"), &Read(Some(true)))
            .is_some()
    );
    let mut not_apps = ds_pod("default");
    if let Some(c) = not_apps.controller.as_mut() {
        c.0 = "evil.example/v1".into();
    }
    assert!(p.pool_exemption(&not_apps, &NoEvidence).is_none());
}

#[test]
fn mirror_pods_are_exempt_only_with_the_annotation_on_their_own_node() {
    let p = policy();
    let mirror = || Pod {
        namespace: "kube-system".into(),
        name: "etcd-pool-1".into(),
        annotations: [(MIRROR_ANNOTATION.to_owned(), "h".to_owned())].into(),
        controller: owned("Node", "pool-1"),
        node: Some("pool-1".into()),
        ..Pod::default()
    };
    assert!(matches!(
        p.pool_exemption(&mirror(), &NoEvidence),
        Some(Exemption::MirrorPod { .. })
    ));
    let by_kubelet = Admission {
        creator: Some("system:node:pool-1"),
    };
    assert!(p.pool_exemption(&mirror(), &by_kubelet).is_some());
    let by_other_node = Admission {
        creator: Some("system:node:pool-2"),
    };
    assert!(p.pool_exemption(&mirror(), &by_other_node).is_none());
    let mut no_annotation = mirror();
    no_annotation.annotations.clear();
    assert!(p.pool_exemption(&no_annotation, &NoEvidence).is_none());
    let mut elsewhere = mirror();
    elsewhere.node = Some("pool-2".into());
    assert!(p.pool_exemption(&elsewhere, &NoEvidence).is_none());
}

#[test]
fn allow_lists_still_exempt_and_everything_else_is_refused() {
    let yaml = kpool_policy::DEFAULT_POLICY_YAML.replace(
        "allowServiceAccounts: []",
        "allowServiceAccounts: [monitoring/scraper]",
    );
    let p = Policy::from_yaml(&yaml, "t").expect("policy");
    let plain = |ns: &str, sa: &str| Pod {
        namespace: ns.into(),
        name: "x".into(),
        sa: sa.into(),
        ..Pod::default()
    };
    assert_eq!(
        p.pool_exemption(&plain("kpool-system", ""), &NoEvidence),
        Some(Exemption::AllowedNamespace("kpool-system".into()))
    );
    assert_eq!(
        p.pool_exemption(&plain("monitoring", "scraper"), &NoEvidence),
        Some(Exemption::AllowedServiceAccount(
            "monitoring/scraper".into()
        ))
    );
    assert_eq!(p.pool_exemption(&plain("default", ""), &NoEvidence), None);
}

#[test]
fn identity_comes_from_the_pod_index_label_or_the_name() {
    let p = policy();
    let mut b = broker("streaming", "kafka-4");
    let id = p.broker_identity(&b).expect("identity");
    assert_eq!((id.ordinal, id.broker_id, id.zone), (4, 4, "eu-west-1b"));
    b.labels
        .insert(kpool_policy::POD_INDEX_LABEL.into(), "2".into());
    let id = p.broker_identity(&b).expect("identity");
    assert_eq!(id.ordinal, 2);
    b.labels
        .insert(kpool_policy::POD_INDEX_LABEL.into(), "x".into());
    assert!(p.broker_identity(&b).is_err());
}

#[test]
fn broker_namespaces_are_required_and_checked() {
    let without = kpool_policy::DEFAULT_POLICY_YAML.replace("  namespaces: [streaming]\n", "");
    let err = Policy::from_yaml(&without, "p.yaml")
        .expect_err("required")
        .to_string();
    assert!(err.contains("namespaces"), "{err}");
    let empty =
        kpool_policy::DEFAULT_POLICY_YAML.replace("namespaces: [streaming]", "namespaces: []");
    let err = Policy::from_yaml(&empty, "p.yaml")
        .expect_err("empty")
        .to_string();
    assert!(err.contains("brokers.namespaces"), "{err}");
    let bad = kpool_policy::DEFAULT_POLICY_YAML.replace(
        "namespaces: [streaming]",
        "namespaces: [streaming, Bad_NS, streaming]",
    );
    let err = Policy::from_yaml(&bad, "p.yaml")
        .expect_err("bad")
        .to_string();
    assert!(err.contains("brokers.namespaces[1]"), "{err}");
    assert!(err.contains("brokers.namespaces[2]: duplicate"), "{err}");
}
