//! The agent's check that the controllers pods name are real (hardening 4 and 5), through
//! kube-rs against a `tower-test` mock API server: a DaemonSet or StatefulSet the API has
//! with that uid is confirmed, one it lacks (or has with another uid) is refused, one it
//! cannot read stays unknown. The guard's facts and the pod → broker lookup then use it.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Pod;
use kpool_agent::pods::{KubePods, PodDirectory};
use kpool_agent::pool::{KubePod, Owners, verify_loop};
use kpool_policy::Policy;
use kube::client::Body;
use kube::runtime::reflector;
use kube::runtime::watcher::Event;
use serde_json::{Value, json};

fn pod(ns: &str, name: &str, labels: Value, owner_kind: &str, owner: &str, uid: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "uid": format!("pod-{name}"),
            "labels": labels,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner_kind, "name": owner,
                "uid": uid, "controller": true}]},
        "spec": {"nodeName": "pool-1", "containers": [{"name": "c", "image": "x"}]}
    }))
    .expect("pod")
}

fn respond(code: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).expect("code"))
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).expect("json")))
        .expect("response")
}

/// The API: DaemonSet kube-system/fluentd is uid "ds-real"; StatefulSet streaming/kafka is
/// "sts-real"; kube-system/flaky answers 500; everything else 404.
fn api(gets: Arc<AtomicUsize>) -> kube::Client {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        let mut handle = pin!(handle);
        while let Some((request, send)) = handle.next_request().await {
            gets.fetch_add(1, Ordering::SeqCst);
            let path = request.uri().path().to_owned();
            let object = |kind: &str, ns: &str, name: &str, uid: &str| {
                json!({"apiVersion": "apps/v1", "kind": kind,
                    "metadata": {"name": name, "namespace": ns, "uid": uid}})
            };
            let resp = match path.as_str() {
                "/apis/apps/v1/namespaces/kube-system/daemonsets/fluentd" => respond(
                    200,
                    &object("DaemonSet", "kube-system", "fluentd", "ds-real"),
                ),
                "/apis/apps/v1/namespaces/streaming/statefulsets/kafka" => respond(
                    200,
                    &object("StatefulSet", "streaming", "kafka", "sts-real"),
                ),
                "/apis/apps/v1/namespaces/kube-system/daemonsets/flaky" => respond(
                    500,
                    &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 500, "reason": "InternalError", "message": "etcd"}),
                ),
                _ => respond(
                    404,
                    &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound", "message": "not found"}),
                ),
            };
            send.send_response(resp);
        }
    });
    kube::Client::new(service, "default")
}

fn broker_labels() -> Value {
    json!({"app.kubernetes.io/name": "kafka", "app.kubernetes.io/component": "broker",
        "apps.kubernetes.io/pod-index": "0"})
}

#[tokio::test]
async fn controllers_are_confirmed_refused_or_left_unknown_and_the_rules_follow() {
    let gets = Arc::new(AtomicUsize::new(0));
    let client = api(gets.clone());
    let (store, mut writer) = reflector::store::<Pod>();
    let pods = [
        pod(
            "kube-system",
            "fluentd-x",
            json!({}),
            "DaemonSet",
            "fluentd",
            "ds-real",
        ),
        pod(
            "default",
            "miner",
            json!({}),
            "DaemonSet",
            "fluentd",
            "ds-forged",
        ),
        pod(
            "kube-system",
            "flaky-x",
            json!({}),
            "DaemonSet",
            "flaky",
            "ds-flaky",
        ),
        pod(
            "streaming",
            "kafka-0",
            broker_labels(),
            "StatefulSet",
            "kafka",
            "sts-real",
        ),
        pod(
            "streaming",
            "kafka-1",
            broker_labels(),
            "StatefulSet",
            "ghost",
            "sts-ghost",
        ),
    ];
    for p in &pods {
        writer.apply_watcher_event(&Event::Apply(p.clone()));
    }
    let owners = Owners::default();
    let task = tokio::spawn(verify_loop(
        client,
        store.clone(),
        owners.clone(),
        Duration::from_millis(20),
    ));
    let start = std::time::Instant::now();
    while owners.known("sts-ghost").is_none() {
        assert!(start.elapsed() < Duration::from_secs(10), "never checked");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(owners.known("ds-real"), Some(true));
    assert_eq!(
        owners.known("ds-forged"),
        Some(false),
        "same name, other uid"
    );
    assert_eq!(owners.known("ds-flaky"), None, "unreadable stays unknown");
    assert_eq!(owners.known("sts-real"), Some(true));
    assert_eq!(owners.known("sts-ghost"), Some(false));

    let policy = Policy::builtin().expect("policy");
    let exempt = |p: &Pod| {
        let v = KubePod::new(p, &owners);
        policy.pool_exemption(&v, &v).is_some()
    };
    assert!(exempt(&pods[0]), "the real DaemonSet's pod");
    assert!(!exempt(&pods[1]), "a forged DaemonSet reference");
    assert!(exempt(&pods[2]), "unknown: the benefit of the doubt");
    let directory = KubePods::from_store(store.clone(), "pool-1", Arc::new(policy.clone()))
        .with_owners(owners.clone());
    assert!(directory.lookup("streaming", "kafka-0").is_ok());
    let ghost = format!(
        "{:?}",
        directory
            .lookup("streaming", "kafka-1")
            .expect_err("no real StatefulSet")
    );
    assert!(ghost.contains("does not exist"), "{ghost}");
    let v = KubePod::new(&pods[4], &owners);
    let err = policy.broker_check(&v, &v).expect_err("ghost StatefulSet");
    assert!(err.to_string().contains("does not exist"), "{err}");

    // Confirmed and missing answers are cached: no GET storm every round.
    let after_first = gets.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let more = gets.load(Ordering::SeqCst) - after_first;
    assert!(
        more <= 12,
        "{more} GETs in 200 ms: only the unreadable one is retried"
    );
    task.abort();
}
