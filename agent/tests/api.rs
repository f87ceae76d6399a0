//! The agent's HTTP API and kpool-probe, over the real router and a real socket.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use kpool_agent::pods::{KubePods, PodDirectory, Standalone};
use kpool_agent::service::Agent;
use kpool_agent::snapshot::{Broker, Partition, Snapshot, Topic};
use kpool_policy::Policy;
use serde_json::Value;
use tower::ServiceExt as _;

fn policy() -> Arc<Policy> {
    Arc::new(Policy::builtin().expect("policy"))
}

fn snapshot(isr_of_1: &[i32]) -> Snapshot {
    let ids = [0, 1, 2];
    Snapshot {
        cluster_id: Some("c".into()),
        controller_id: Some(0),
        brokers: ids
            .iter()
            .map(|id| Broker {
                id: *id,
                host: "h".into(),
                port: 9092,
                rack: Some(format!("k8s-a-eu-west-1{}", ["a", "b", "c"][*id as usize])),
            })
            .collect(),
        topics: vec![Topic {
            name: "orders".into(),
            internal: false,
            min_isr: Some(2),
            partitions: vec![
                Partition {
                    index: 0,
                    leader: 0,
                    replicas: ids.to_vec(),
                    isr: ids.to_vec(),
                    offline_replicas: vec![],
                    adding_replicas: vec![],
                },
                Partition {
                    index: 1,
                    leader: 0,
                    replicas: ids.to_vec(),
                    isr: isr_of_1.to_vec(),
                    offline_replicas: vec![],
                    adding_replicas: vec![],
                },
            ],
        }],
        default_min_isr: None,
    }
}

async fn get(agent: &Arc<Agent>, path: &str) -> (StatusCode, Value) {
    let resp = kpool_agent::api::router(agent.clone())
        .oneshot(Request::get(path).body(Body::empty()).expect("req"))
        .await
        .expect("infallible");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned())),
    )
}

#[tokio::test]
async fn readiness_follows_the_cluster() {
    let p = policy();
    let agent = Agent::new(p.clone(), Arc::new(Standalone::new(p)));
    let (status, body) = get(&agent, "/v1/ready/streaming/kafka-1").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["reasons"][0], "stale: no successful Kafka poll yet");

    agent.publish(&snapshot(&[0, 1, 2]), BTreeMap::new());
    let (status, body) = get(&agent, "/v1/ready/streaming/kafka-1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ready"], true);
    assert_eq!(body["broker_id"], 1);
    assert_eq!(body["namespace"], "streaming");

    agent.publish(&snapshot(&[0, 2]), BTreeMap::new());
    let (status, body) = get(&agent, "/v1/ready/streaming/kafka-1").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body["reasons"][0],
        "broker 1 has 1 partition with its replica outside the ISR: orders-1"
    );
    assert_eq!(
        get(&agent, "/v1/ready/streaming/kafka-2").await.0,
        StatusCode::OK,
        "broker mode: others stay ready"
    );

    let (status, body) = get(&agent, "/v1/ready/streaming/toolbox").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("no -N ordinal suffix"),
        "{body}"
    );
}

#[tokio::test]
async fn restart_safety_cluster_view_and_metrics() {
    let p = policy();
    let agent = Agent::new(p.clone(), Arc::new(Standalone::new(p)));
    assert_eq!(
        get(&agent, "/v1/cluster").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    agent.publish(&snapshot(&[0, 2]), BTreeMap::new());
    let (status, body) = get(&agent, "/v1/brokers/0/restart-safety").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["safe"], false,
        "orders-1 is at min ISR 2 with broker 0 in it: {body}"
    );
    assert_eq!(body["blocking"]["first"][0], "orders-1");
    assert_eq!(
        get(&agent, "/v1/brokers/1/restart-safety").await.1["safe"],
        true
    );
    assert_eq!(
        get(&agent, "/v1/brokers/x/restart-safety").await.0,
        StatusCode::BAD_REQUEST
    );
    let (status, body) = get(&agent, "/v1/cluster").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["partitions"]["under_replicated"]["count"], 1);
    assert_eq!(body["unsafe_to_restart"], serde_json::json!([0, 2]));
    let _ = get(&agent, "/v1/ready/streaming/kafka-1").await;
    let resp = kpool_agent::api::router(agent.clone())
        .oneshot(Request::get("/metrics").body(Body::empty()).expect("req"))
        .await
        .expect("infallible");
    let text = String::from_utf8_lossy(&resp.into_body().collect().await.expect("b").to_bytes())
        .into_owned();
    for want in [
        "kpool_agent_partitions{state=\"under_replicated\"} 1",
        "kpool_agent_broker_restart_safe{broker=\"0\"} 0",
        "kpool_agent_pod_ready{namespace=\"streaming\",pod=\"kafka-1\"} 0",
        "kpool_agent_kafka_last_successful_poll_timestamp_seconds ",
        "kpool_agent_active_readiness_overrides 0",
    ] {
        assert!(text.contains(want), "metrics lack {want:?}:\n{text}");
    }
}

fn pod(name: &str, index: &str, annotations: &[(&str, &str)]) -> k8s_openapi::api::core::v1::Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": name, "namespace": "streaming",
            "labels": {"apps.kubernetes.io/pod-index": index, "app.kubernetes.io/name": "kafka", "app.kubernetes.io/component": "broker"},
            "annotations": annotations.iter().map(|(k, v)| ((*k).to_owned(), Value::from(*v))).collect::<serde_json::Map<_, _>>(),
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "kafka", "uid": "uid-sts", "controller": true}],
        }
    }))
    .expect("pod")
}

#[tokio::test]
async fn in_cluster_directory_reads_watched_pods_and_overrides() {
    let p = policy();
    let (store, mut writer) = kube::runtime::reflector::store();
    let future = (time::OffsetDateTime::now_utc() + time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .expect("fmt");
    writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(pod(
        "kafka-1",
        "1",
        &[
            ("kpool.io/readiness-override", &future),
            ("kpool.io/readiness-override-reason", "INC-7 stuck rollout"),
        ],
    )));
    writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(pod(
        "kafka-2",
        "2",
        &[("kpool.io/readiness-override", "soon")],
    )));
    let dir = KubePods::from_store(store, "node-a", p.clone());
    assert_eq!(
        dir.lookup("streaming", "kafka-1").expect("found").broker_id,
        1
    );
    let missing = dir
        .lookup("streaming", "kafka-9")
        .expect_err("not on this node");
    assert!(missing.to_string().contains("node node-a"), "{missing}");
    // The store holds every pod of the node (the guard's watch): a non-broker never answers.
    let mut other = pod("tool-0", "0", &[]);
    other.metadata.labels = None;
    writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(other));
    let not_broker = dir.lookup("streaming", "tool-0").expect_err("not a broker");
    assert!(
        not_broker.to_string().contains("brokers.selector"),
        "{not_broker}"
    );

    let agent = Agent::new(p, Arc::new(dir));
    agent.publish(&snapshot(&[0, 2]), BTreeMap::new());
    let (status, body) = get(&agent, "/v1/ready/streaming/kafka-1").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the override makes it ready: {body}"
    );
    assert_eq!(
        body["reasons"][0],
        format!("override until {future}: INC-7 stuck rollout")
    );
    assert_eq!(body["without_override"]["ready"], false);
    // A malformed override is ignored: Kafka decides.
    let (status, _) = get(&agent, "/v1/ready/streaming/kafka-2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(agent.metrics().active_overrides.get(), 1);
}
