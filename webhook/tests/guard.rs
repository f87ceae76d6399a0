//! The pool guard as a pure function: policy + pod → verdict.

mod common;

use kpool_policy::pool::Exemption;
use kpool_webhook::guard::{Allow, Verdict, check};
use kpool_webhook::inject::PodView;
use serde_json::{Value, json};

/// The user the API server names when the DaemonSet controller creates a pod.
const DS_CONTROLLER: &str = "system:serviceaccount:kube-system:daemon-set-controller";

fn verdict(policy: &kpool_policy::Policy, pod: &Value, ns: &str) -> Verdict {
    verdict_by(policy, pod, ns, Some("admin"))
}

fn verdict_by(
    policy: &kpool_policy::Policy,
    pod: &Value,
    ns: &str,
    creator: Option<&str>,
) -> Verdict {
    check(
        policy,
        &PodView::from_value(pod).expect("readable"),
        ns,
        creator,
    )
}

fn foreign(spec: Value) -> Value {
    json!({"metadata": {"name": "batch", "labels": {"app": "batch"}}, "spec": spec})
}

#[test]
fn brokers_and_pods_not_for_the_pool_are_allowed() {
    let p = common::policy();
    let broker = common::broker_pod(
        "kafka-0",
        json!({"tolerations": [{"key": "dedicated", "operator": "Exists"}]}),
    );
    assert_eq!(
        verdict(&p, &broker, "streaming"),
        Verdict::Allow(Allow::Broker)
    );
    let other =
        foreign(json!({"containers": [], "tolerations": [{"key": "gpu", "operator": "Exists"}]}));
    assert_eq!(
        verdict(&p, &other, "batch"),
        Verdict::Allow(Allow::NotForPool)
    );
}

#[test]
fn toleration_node_selector_and_affinity_are_violations_naming_the_field() {
    let p = common::policy();
    let cases = [
        (
            json!({"tolerations": [{"key": "x"}, {"operator": "Exists"}]}),
            "tolerates-pool-taint",
            "spec.tolerations[1]",
        ),
        (
            json!({"nodeSelector": {"dedicated": "kafka"}}),
            "requires-pool-node",
            "spec.nodeSelector dedicated=kafka",
        ),
        (
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "Exists"}, {"key": "dedicated", "operator": "In", "values": ["x", "kafka"]}]}
            ]}}}}),
            "requires-pool-node",
            "nodeSelectorTerms[0].matchExpressions[1]",
        ),
    ];
    for (spec, rule, offending) in cases {
        let Verdict::Violation(v) = verdict(&p, &foreign(spec.clone()), "batch") else {
            panic!("{spec} must be a violation");
        };
        assert_eq!(v.rule, rule);
        assert!(v.offending.contains(offending), "{}", v.offending);
        assert!(v.message.contains(offending), "{}", v.message);
    }
    // A node selector on another value of the label is not the pool.
    let other = foreign(json!({"nodeSelector": {"dedicated": "spark"}}));
    assert_eq!(
        verdict(&p, &other, "batch"),
        Verdict::Allow(Allow::NotForPool)
    );
}

#[test]
fn daemonsets_and_allow_lists_may_use_the_pool() {
    let p = common::policy_with(
        "  allowServiceAccounts: []",
        "  allowServiceAccounts: [monitoring/node-exporter]",
    );
    let tolerating =
        json!({"tolerations": [{"operator": "Exists"}], "serviceAccountName": "node-exporter"});
    let mut ds = foreign(tolerating.clone());
    ds["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "DaemonSet",
        "name": "fluent-bit", "uid": "u", "controller": true}]);
    assert_eq!(
        verdict_by(&p, &ds, "logging", Some(DS_CONTROLLER)),
        Verdict::Allow(Allow::Exempt(Exemption::DaemonSet {
            name: "logging/fluent-bit".into()
        }))
    );
    // On UPDATE the creator is unknown: the reference is taken as it is (the agent checks
    // the DaemonSet's uid on the node).
    assert!(matches!(
        verdict_by(&p, &ds, "logging", None),
        Verdict::Allow(Allow::Exempt(_))
    ));
    assert_eq!(
        verdict(&p, &foreign(tolerating.clone()), "kpool-system"),
        Verdict::Allow(Allow::Exempt(Exemption::AllowedNamespace(
            "kpool-system".into()
        )))
    );
    assert_eq!(
        verdict(&p, &foreign(tolerating.clone()), "monitoring"),
        Verdict::Allow(Allow::Exempt(Exemption::AllowedServiceAccount(
            "monitoring/node-exporter".into()
        )))
    );
    assert!(matches!(
        verdict(&p, &foreign(tolerating), "other"),
        Verdict::Violation(_)
    ));
}

/// Hardening 5: a DaemonSet reference the pod wrote itself is not an exemption.
#[test]
fn forged_daemonset_and_mirror_exemptions_are_violations() {
    let p = common::policy();
    let tolerating = json!({"tolerations": [{"operator": "Exists"}]});
    let owned = |owner: Value| {
        let mut pod = foreign(tolerating.clone());
        pod["metadata"]["ownerReferences"] = json!([owner]);
        pod
    };
    let cases = [
        // Created by someone else than the DaemonSet controller.
        (
            owned(
                json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "x", "uid": "u", "controller": true}),
            ),
            Some("alice"),
        ),
        // Not the controller reference.
        (
            owned(json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "x", "uid": "u"})),
            Some(DS_CONTROLLER),
        ),
        // Any other apiVersion.
        (
            owned(
                json!({"apiVersion": "evil.example/v1", "kind": "DaemonSet", "name": "x", "uid": "u", "controller": true}),
            ),
            Some(DS_CONTROLLER),
        ),
        // A "mirror pod" without the kubelet's annotation.
        (
            owned(
                json!({"apiVersion": "v1", "kind": "Node", "name": "pool-1", "uid": "u", "controller": true}),
            ),
            Some("system:node:pool-1"),
        ),
    ];
    for (pod, creator) in cases {
        assert!(
            matches!(
                verdict_by(&p, &pod, "batch", creator),
                Verdict::Violation(_)
            ),
            "{pod} by {creator:?} must be a violation"
        );
    }
    // The real mirror pod: annotation, Node owner naming its node, created by that node.
    let mut mirror = owned(
        json!({"apiVersion": "v1", "kind": "Node", "name": "pool-1", "uid": "u", "controller": true}),
    );
    mirror["metadata"]["annotations"] = json!({"kubernetes.io/config.mirror": "h"});
    mirror["spec"]["nodeName"] = json!("pool-1");
    assert!(matches!(
        verdict_by(&p, &mirror, "kube-system", Some("system:node:pool-1")),
        Verdict::Allow(Allow::Exempt(Exemption::MirrorPod { .. }))
    ));
    assert!(matches!(
        verdict_by(&p, &mirror, "kube-system", Some("system:node:pool-2")),
        Verdict::Violation(_)
    ));
}

/// Hardening 4: broker labels outside brokers.namespaces do not make a broker.
#[test]
fn broker_labels_outside_the_broker_namespaces_are_a_violation_that_says_why() {
    let p = common::policy();
    let broker = common::broker_pod(
        "kafka-0",
        json!({"tolerations": [{"key": "dedicated", "operator": "Exists"}]}),
    );
    let Verdict::Violation(v) = verdict(&p, &broker, "default") else {
        panic!("a labelled pod in default must be a violation");
    };
    assert_eq!(v.rule, "tolerates-pool-taint");
    assert!(
        v.message
            .contains("brokers live only in brokers.namespaces"),
        "{}",
        v.message
    );
    assert_eq!(
        verdict(&p, &broker, "streaming"),
        Verdict::Allow(Allow::Broker)
    );
}
