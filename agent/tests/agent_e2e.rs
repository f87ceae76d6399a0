//! The agent end to end: the real Kafka client polling the scripted Kafka-protocol server,
//! the poll loop, the cache and the HTTP API, as the cluster moves healthy → broker down →
//! recovered, then stops answering (the verdict goes stale).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt as _;
use kpool_agent::kafka::{KafkaClient, KafkaConfig};
use kpool_agent::pods::Standalone;
use kpool_agent::service::{Agent, SnapshotSource, poll_loop};
use kpool_agent::snapshot::Snapshot;
use kpool_policy::{DEFAULT_POLICY_YAML, Policy};
use serde_json::Value;
use support::kafka_server::{Behaviour, ClusterState, TestKafka};
use tower::ServiceExt as _;

struct Source(KafkaClient);

impl SnapshotSource for Source {
    async fn snapshot(&mut self) -> Result<Snapshot, String> {
        self.0.snapshot().await.map_err(|e| e.to_string())
    }
}

const RACKS: [&str; 6] = [
    "k8s-a-eu-west-1a",
    "k8s-a-eu-west-1b",
    "k8s-a-eu-west-1c",
    "k8s-b-eu-west-1a",
    "k8s-b-eu-west-1b",
    "k8s-b-eu-west-1c",
];

async fn ready(agent: &Arc<Agent>, pod: &str) -> (u16, Value) {
    let resp = kpool_agent::api::router(agent.clone())
        .oneshot(
            Request::get(format!("/v1/ready/streaming/{pod}"))
                .body(Body::empty())
                .expect("req"),
        )
        .await
        .expect("infallible");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&body).expect("json"))
}

/// Polls the API until `want` holds or `within` passes; returns the last answer.
async fn until(
    agent: &Arc<Agent>,
    pod: &str,
    within: Duration,
    want: impl Fn(u16, &Value) -> bool,
) -> (u16, Value) {
    let start = Instant::now();
    loop {
        let (s, v) = ready(agent, pod).await;
        if want(s, &v) || start.elapsed() > within {
            return (s, v);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdict_follows_the_cluster_within_one_poll() {
    let policy = DEFAULT_POLICY_YAML.replacen("staleAfterSeconds: 30", "staleAfterSeconds: 1", 1);
    let policy = Arc::new(Policy::from_yaml(&policy, "test").expect("policy"));
    let kafka = TestKafka::start(ClusterState::healthy(6, &RACKS, &[("orders", 12, 6)])).await;
    let client = KafkaClient::new(KafkaConfig {
        bootstrap: vec![kafka.bootstrap()],
        timeout: Duration::from_millis(300),
        ..KafkaConfig::default()
    })
    .expect("client");
    let agent = Agent::new(policy.clone(), Arc::new(Standalone::new(policy)));
    let interval = Duration::from_millis(100);
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let poller = tokio::spawn(poll_loop(
        agent.clone(),
        Source(client),
        interval,
        Duration::from_millis(200),
        stop_rx,
    ));
    let one_poll = interval * 3; // a poll interval plus the poll itself, with slack for CI

    let (s, v) = until(&agent, "kafka-1", Duration::from_secs(5), |s, _| s == 200).await;
    assert_eq!(s, 200, "healthy cluster: {v}");

    kafka.update_state(|s| s.broker_down(1));
    let (s, v) = until(&agent, "kafka-1", one_poll, |s, _| s == 503).await;
    assert_eq!(s, 503, "broker 1 down: {v}");
    assert_eq!(
        v["reasons"][0],
        "broker 1 is not registered with the cluster"
    );
    let (s, _) = ready(&agent, "kafka-2").await;
    assert_eq!(s, 200, "the others stay ready (verdict: broker)");

    kafka.set_state(ClusterState::healthy(6, &RACKS, &[("orders", 12, 6)]));
    let (s, v) = until(&agent, "kafka-1", one_poll, |s, _| s == 200).await;
    assert_eq!(s, 200, "recovered: {v}");

    // Kafka stops answering: the last verdict holds until the poll is stale, then not-ready.
    kafka.set_behaviour(Behaviour::silent());
    let (s, v) = until(&agent, "kafka-1", Duration::from_secs(4), |s, v| {
        s == 503
            && v["reasons"][0]
                .as_str()
                .is_some_and(|r| r.starts_with("stale"))
    })
    .await;
    assert_eq!(s, 503, "{v}");
    assert!(agent.metrics().poll_errors.get() > 0);
    assert!(
        agent
            .last_error()
            .is_some_and(|e| e.contains("did not complete")),
        "{:?}",
        agent.last_error()
    );

    stop.send(true).expect("stop");
    poller.await.expect("poller ends");
}
