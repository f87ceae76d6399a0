//! The Kubernetes API server going away under a running agent: the production node view
//! (`NodeView::start`, kube-rs watchers over a real `kube::Client`) against a
//! protocol-faithful fake API server (tower-test) that answers pod and node lists and
//! watches, and refuses every request while it is "down". The agent keeps answering from
//! its cache with its last verdict until the outage passes the staleness bound, then says
//! not-ready ("stale"); when the API server comes back the watch lists afresh, so pods
//! deleted meanwhile are gone and the verdict follows Kafka again.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kpool_agent::nodeview::NodeView;
use kpool_agent::pods::KubePods;
use serde_json::{Value, json};
use support::fake_api::FakeApi;
use support::harness::Running;
use support::kafka_server::{ClusterState, TestKafka};

const NODE: &str = "node-a";
const RACKS: [&str; 3] = ["k8s-a-eu-west-1a", "k8s-a-eu-west-1b", "k8s-a-eu-west-1c"];

fn broker_pod(name: &str, index: u32) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": "streaming", "uid": format!("uid-{name}"),
            "resourceVersion": "7",
            "labels": {
                "apps.kubernetes.io/pod-index": index.to_string(),
                "app.kubernetes.io/name": "kafka",
                "app.kubernetes.io/component": "broker"
            },
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "kafka",
                "uid": "uid-sts", "controller": true}]
        },
        "spec": {"nodeName": NODE, "containers": [{"name": "kafka", "image": "kafka"}]}
    })
}

fn reasons(v: &Value) -> String {
    v["reasons"].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_api_unreachable_keeps_the_last_verdict_until_stale_then_recovers() {
    let kafka = TestKafka::start(ClusterState::healthy(6, &RACKS, &[("orders", 6, 3)])).await;
    let fake = FakeApi::default();
    fake.set_pods(vec![broker_pod("kafka-1", 1), broker_pod("kafka-4", 4)]);
    let (view, watches) = NodeView::start(fake.client(), NODE);
    let policy = Running::policy();
    let pods = Arc::new(KubePods::from_view(&view, policy.clone()));
    let run = Running::start_with(kafka.bootstrap(), policy, pods);

    run.ready_within(Duration::from_secs(5), "healthy, API server up")
        .await;
    let (s, v) = run.ready("kafka-4").await;
    assert_eq!(s, 200, "{v}");
    assert!(
        fake.log().iter().any(|r| r.path == "/api/v1/pods"
            && r.query.contains("fieldSelector=spec.nodeName%3Dnode-a")),
        "the pod watch is scoped to this node: {:?}",
        fake.log()
    );
    assert!(
        fake.log().iter().any(|r| r.path == "/api/v1/pods"
            && r.query.contains("watch=true")
            && r.query.contains("timeoutSeconds=60")),
        "watches are renewed every minute, so a silent dead connection shows: {:?}",
        fake.log()
    );

    // While the API server is down, kafka-4 is deleted: the agent cannot know yet.
    fake.go_down();
    fake.forget_pod("kafka-4");
    let down_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, v) = run.ready("kafka-1").await;
    assert_eq!(s, 200, "the last verdict holds inside the bound: {v}");
    assert!(
        view.pods_health.outage(Instant::now()).is_some(),
        "the broken watch is noticed"
    );

    let (s, v) = run
        .until("kafka-1", Duration::from_secs(5), |s, _| s != 200)
        .await;
    assert_eq!(s, 503, "stale once the outage passes the 1 s bound: {v}");
    assert!(
        down_at.elapsed() >= Duration::from_secs(1),
        "not before the bound: {:?}",
        down_at.elapsed()
    );
    let r = reasons(&v);
    assert!(
        r.contains("stale: no contact with the Kubernetes API") && r.contains("connection refused"),
        "the reason names the outage and the last error: {r}"
    );
    assert!(
        run.agent.last_error().is_none(),
        "Kafka itself is fine: the verdict is stale for Kubernetes' sake alone"
    );
    assert!(
        fake.refused.load(Ordering::SeqCst) >= 2,
        "the watch keeps retrying"
    );

    // Back: a fresh list repairs the cache (kafka-4 is gone) and the verdict returns.
    let lists_before = fake.lists.load(Ordering::SeqCst);
    fake.come_back();
    run.ready_within(
        Duration::from_secs(10),
        "API server back (retry backoff ≤ 4 s here)",
    )
    .await;
    assert!(fake.lists.load(Ordering::SeqCst) > lists_before, "relisted");
    assert!(view.pods_health.outage(Instant::now()).is_none());
    assert!(
        run.metrics_text()
            .await
            .contains("kpool_agent_kube_pod_watch_outage_seconds 0\n"),
        "back to 0 in contact"
    );
    let (s, v) = run.ready("kafka-4").await;
    assert_eq!(
        s, 404,
        "deleted during the outage, gone after the relist: {v}"
    );

    run.stop().await;
    for w in watches {
        w.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_api_unreachable_from_the_start_answers_not_found_not_a_guess() {
    let kafka = TestKafka::start(ClusterState::healthy(6, &RACKS, &[("orders", 6, 3)])).await;
    let fake = FakeApi::default();
    fake.go_down();
    let (view, watches) = NodeView::start(fake.client(), NODE);
    let policy = Running::policy();
    let pods = Arc::new(KubePods::from_view(&view, policy.clone()));
    let run = Running::start_with(kafka.bootstrap(), policy, pods);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (s, v) = run.ready("kafka-1").await;
    assert_eq!(s, 404, "no pod was ever seen: {v}");
    assert!(
        v.to_string().contains("node-a"),
        "the answer says where the agent looked: {v}"
    );
    run.stop().await;
    for w in watches {
        w.abort();
    }
}
