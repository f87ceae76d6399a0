//! Failing neighbours through the agent's real poll loop and HTTP API: Kafka unreachable
//! from the start, Kafka going away and coming back, Kafka slow (within and beyond the
//! client timeout), Kafka answering with error codes, and a peer speaking garbage. In every
//! case the agent keeps answering, keeps its last verdict until it is stale, then says
//! not-ready, and recovers without a restart.

mod support;

use support::harness::{INTERVAL, Running, TIMEOUT};

use std::time::{Duration, Instant};

use kafka_protocol::messages::ApiKey;
use support::kafka_server::{Behaviour, ClusterState, Fault, TestKafka};

const RACKS: [&str; 3] = ["k8s-a-eu-west-1a", "k8s-a-eu-west-1b", "k8s-a-eu-west-1c"];

fn healthy() -> ClusterState {
    ClusterState::healthy(3, &RACKS, &[("orders", 6, 3)])
}

/// A port nothing listens on (bound, read, released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_unreachable_from_the_start_is_not_ready_and_counted() {
    let run = Running::start(format!("127.0.0.1:{}", closed_port()));
    tokio::time::sleep(INTERVAL * 5).await;
    let (s, v) = run.ready("kafka-1").await;
    assert_eq!(s, 503, "no poll ever succeeded: {v}");
    assert!(
        v["reasons"].as_array().is_some_and(|r| !r.is_empty()),
        "a reason is given: {v}"
    );
    assert!(run.agent.metrics().poll_errors.get() > 0);
    assert!(!run.last_error().is_empty(), "the failure is recorded");
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_going_away_keeps_the_last_verdict_until_stale_then_recovers() {
    let mut kafka = TestKafka::start(healthy()).await;
    let run = Running::start(kafka.bootstrap());
    run.ready_within(Duration::from_secs(5), "healthy").await;

    kafka.stop().await;
    let t = Instant::now();
    // Within the stale window the last verdict still holds.
    let (s, v) = run.ready("kafka-1").await;
    assert_eq!(s, 200, "last verdict kept right after Kafka went away: {v}");
    run.stale_within(Duration::from_secs(4), "Kafka gone").await;
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "not stale before staleAfterSeconds (1 s) minus a poll: {:?}",
        t.elapsed()
    );
    assert!(run.agent.metrics().poll_errors.get() > 0);

    kafka.restart().await;
    run.ready_within(
        Duration::from_secs(3),
        "Kafka back (backoff is capped at the interval)",
    )
    .await;
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_kafka_within_the_timeout_is_fine_beyond_it_goes_stale() {
    let kafka = TestKafka::start(healthy()).await;
    let run = Running::start(kafka.bootstrap());
    run.ready_within(Duration::from_secs(5), "healthy").await;

    // Slow but within the client's timeout: polls still succeed, never stale.
    kafka.set_behaviour(Behaviour::always(Fault::Delay(Duration::from_millis(30))));
    let errors = run.agent.metrics().poll_errors.get();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (s, v) = run.ready("kafka-1").await;
    assert_eq!(
        s, 200,
        "slow answers within the timeout keep the verdict fresh: {v}"
    );
    assert_eq!(run.agent.metrics().poll_errors.get(), errors);

    // Slower than the timeout: every poll fails, the verdict goes stale.
    kafka.set_behaviour(Behaviour::on(ApiKey::Metadata, Fault::Delay(TIMEOUT * 3)));
    run.stale_within(Duration::from_secs(5), "Metadata slower than the timeout")
        .await;
    assert!(run.agent.metrics().poll_errors.get() > errors);

    kafka.set_behaviour(Behaviour::Normal);
    run.ready_within(Duration::from_secs(3), "fast again").await;
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_codes_never_make_a_broker_ready_and_recover() {
    let mut kafka = TestKafka::start(healthy()).await;
    let run = Running::start(kafka.bootstrap());
    run.ready_within(Duration::from_secs(5), "healthy").await;

    // Top-level / per-resource error codes on each API the poll uses:
    // 35 UNSUPPORTED_VERSION, 29 TOPIC_AUTHORIZATION_FAILED, 31 CLUSTER_AUTHORIZATION_FAILED,
    // 7 REQUEST_TIMED_OUT, 15 COORDINATOR_NOT_AVAILABLE, -1 UNKNOWN_SERVER_ERROR.
    for (api, code) in [
        (ApiKey::ApiVersions, 35),
        (ApiKey::Metadata, 29),
        (ApiKey::DescribeConfigs, 29),
        (ApiKey::DescribeCluster, 31),
        (ApiKey::Metadata, 7),
        (ApiKey::DescribeCluster, -1),
    ] {
        kafka.set_behaviour(Behaviour::error_on(api, code));
        if api == ApiKey::ApiVersions {
            // Asked once per connection: drop the agent's connections so it asks again.
            kafka.restart().await;
        }
        // Either the poll fails (the verdict goes stale) or the answer it builds does not
        // claim readiness for a cluster it cannot see; in no case is it wrong for long.
        let (s, v) = run
            .until("kafka-1", Duration::from_secs(4), |s, _| s == 503)
            .await;
        let kept_ready = s == 200;
        if kept_ready {
            // Some APIs are optional (DescribeCluster): the agent may still be right.
            assert!(
                matches!(api, ApiKey::DescribeCluster | ApiKey::DescribeConfigs),
                "{api:?} error {code}: still ready: {v}"
            );
        } else {
            assert!(
                v["reasons"].as_array().is_some_and(|r| !r.is_empty()),
                "{api:?} error {code}: a reason: {v}"
            );
        }
        eprintln!(
            "{api:?} error {code}: {s} {} (last poll error: {})",
            v["reasons"],
            run.last_error()
        );
        kafka.set_behaviour(Behaviour::Normal);
        run.ready_within(Duration::from_secs(3), &format!("{api:?} {code} cleared"))
            .await;
    }
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_corrupt_and_truncated_answers_are_poll_failures() {
    let mut kafka = TestKafka::start(healthy()).await;
    let run = Running::start(kafka.bootstrap());
    run.ready_within(Duration::from_secs(5), "healthy").await;
    for behaviour in [
        Behaviour::garbage(),
        Behaviour::on(ApiKey::Metadata, Fault::CorruptBody(vec![0xff; 64])),
        Behaviour::on(ApiKey::Metadata, Fault::Truncated),
        Behaviour::always(Fault::Close),
        Behaviour::CloseOnAccept,
    ] {
        kafka.set_behaviour(behaviour.clone());
        if behaviour == Behaviour::CloseOnAccept {
            // Only new connections see it: drop the agent's open one.
            kafka.restart().await;
        }
        let v = run
            .stale_within(Duration::from_secs(5), &format!("{behaviour:?}"))
            .await;
        assert!(
            !run.last_error().is_empty(),
            "{behaviour:?}: the failure is recorded ({v})"
        );
        kafka.set_behaviour(Behaviour::Normal);
        run.ready_within(Duration::from_secs(3), &format!("{behaviour:?} cleared"))
            .await;
    }
    run.stop().await;
}
