//! The agent end to end: the real Kafka client polling the scripted Kafka-protocol server,
//! the poll loop, the cache and the HTTP API, as the cluster moves healthy → broker down →
//! recovered, then stops answering (the verdict goes stale).

mod support;

use std::time::Duration;

use support::harness::{INTERVAL, Running};
use support::kafka_server::{Behaviour, ClusterState, RACKS, TestKafka};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdict_follows_the_cluster_within_one_poll() {
    let kafka = TestKafka::start(ClusterState::healthy(6, &RACKS, &[("orders", 12, 6)])).await;
    let run = Running::start(kafka.bootstrap());
    let one_poll = INTERVAL * 3; // a poll interval plus the poll itself, with slack for CI

    let (s, v) = run
        .until("kafka-1", Duration::from_secs(5), |s, _| s == 200)
        .await;
    assert_eq!(s, 200, "healthy cluster: {v}");

    kafka.update_state(|s| s.broker_down(1));
    let (s, v) = run.until("kafka-1", one_poll, |s, _| s == 503).await;
    assert_eq!(s, 503, "broker 1 down: {v}");
    assert_eq!(
        v["reasons"][0],
        "broker 1 is not registered with the cluster"
    );
    let (s, _) = run.ready("kafka-2").await;
    assert_eq!(s, 200, "the others stay ready (verdict: broker)");

    kafka.set_state(ClusterState::healthy(6, &RACKS, &[("orders", 12, 6)]));
    let (s, v) = run.until("kafka-1", one_poll, |s, _| s == 200).await;
    assert_eq!(s, 200, "recovered: {v}");

    // Kafka stops answering: the last verdict holds until the poll is stale, then not-ready.
    kafka.set_behaviour(Behaviour::silent());
    let v = run
        .stale_within(Duration::from_secs(4), "Kafka silent")
        .await;
    assert_eq!(v["ready"], false);
    assert!(run.agent.metrics().poll_errors.get() > 0);
    assert!(
        run.last_error().contains("did not complete"),
        "{}",
        run.last_error()
    );
    run.stop().await;
}
