//! The pool guard as a pure function: policy + pod → verdict.

mod common;

use kpool_webhook::guard::{Allow, Verdict, check};
use kpool_webhook::inject::PodView;
use serde_json::{Value, json};

fn verdict(policy: &kpool_policy::Policy, pod: &Value, ns: &str) -> Verdict {
    check(policy, &PodView::from_value(pod).expect("readable"), ns)
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
    ds["metadata"]["ownerReferences"] =
        json!([{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "fluent-bit", "uid": "u"}]);
    assert_eq!(
        verdict(&p, &ds, "logging"),
        Verdict::Allow(Allow::DaemonSet)
    );
    assert_eq!(
        verdict(&p, &foreign(tolerating.clone()), "kpool-system"),
        Verdict::Allow(Allow::AllowedNamespace("kpool-system".into()))
    );
    assert_eq!(
        verdict(&p, &foreign(tolerating.clone()), "monitoring"),
        Verdict::Allow(Allow::AllowedServiceAccount(
            "monitoring/node-exporter".into()
        ))
    );
    assert!(matches!(
        verdict(&p, &foreign(tolerating), "other"),
        Verdict::Violation(_)
    ));
}
