//! The Kafka admin client against the scripted Kafka-protocol test server: cluster states,
//! misbehaving brokers, reconnects, version negotiation, TLS.

use kpool_testkit::kafka_server;

use std::time::{Duration, Instant};

use kafka_server::{ApiKey, Behaviour, ClusterState, Fault, TestKafka};
use kpool_agent::health::partition_state;
use kpool_agent::kafka::{KafkaClient, KafkaConfig, KafkaError, NegotiatedVersions, TlsSettings};
use kpool_agent::snapshot::{Broker, Partition, Snapshot, Topic};

const SIX_RACKS: [&str; 6] = ["a-z1", "a-z2", "a-z3", "b-z1", "b-z2", "b-z3"];

fn client_for(bootstrap: Vec<String>, timeout: Duration) -> KafkaClient {
    KafkaClient::new(KafkaConfig {
        bootstrap,
        timeout,
        ..KafkaConfig::default()
    })
    .expect("valid config")
}

fn client(server: &TestKafka) -> KafkaClient {
    client_for(vec![server.bootstrap()], Duration::from_secs(2))
}

/// The (API, version) of every request the server received, in order.
fn seen(server: &TestKafka) -> Vec<(ApiKey, i16)> {
    server
        .requests()
        .iter()
        .map(|r| (r.api, r.version))
        .collect()
}

/// A cluster of `SIX_RACKS` brokers with the design's RF 6 / min ISR 3 topics.
fn rf6_cluster() -> ClusterState {
    ClusterState::healthy(6, &SIX_RACKS, &[("orders", 12, 6), ("payments", 3, 6)])
        .broker_default_min_isr(Some(3))
}

fn partition<'a>(s: &'a Snapshot, topic: &str, index: i32) -> &'a Partition {
    s.topics
        .iter()
        .find(|t| t.name == topic)
        .and_then(|t| t.partitions.iter().find(|p| p.index == index))
        .unwrap_or_else(|| panic!("no {topic}-{index} in {s:#?}"))
}

fn topic<'a>(s: &'a Snapshot, name: &str) -> &'a Topic {
    s.topics
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no topic {name}"))
}

// ---------------------------------------------------------------- cluster states

#[tokio::test]
async fn healthy_cluster_exact_snapshot() {
    let state = ClusterState::healthy(3, &["a-z1", "a-z2", "a-z3"], &[("orders", 2, 3)])
        .add_internal_topic("__consumer_offsets", 1, 3)
        .topic_min_isr("orders", 2);
    let server = TestKafka::start(state).await;
    let mut c = client(&server);
    let snapshot = c.snapshot().await.expect("snapshot");

    let broker = |id: i32, rack: &str| Broker {
        id,
        host: format!("broker-{id}.kafka.test"),
        port: 9092,
        rack: Some(rack.to_owned()),
    };
    let part = |index: i32, replicas: [i32; 3]| Partition {
        index,
        leader: replicas[0],
        replicas: replicas.to_vec(),
        isr: replicas.to_vec(),
        offline_replicas: vec![],
        adding_replicas: vec![],
    };
    let expected = Snapshot {
        cluster_id: Some("kpool-test-cluster".into()),
        controller_id: Some(0),
        brokers: vec![broker(0, "a-z1"), broker(1, "a-z2"), broker(2, "a-z3")],
        topics: vec![
            Topic {
                name: "__consumer_offsets".into(),
                internal: true,
                min_isr: None,
                partitions: vec![part(0, [0, 1, 2])],
            },
            Topic {
                name: "orders".into(),
                internal: false,
                min_isr: Some(2),
                partitions: vec![part(0, [0, 1, 2]), part(1, [1, 2, 0])],
            },
        ],
        default_min_isr: Some(2),
    };
    assert_eq!(snapshot, expected);
    assert_eq!(snapshot, server.state().expected_snapshot());
    assert_eq!(
        c.negotiated(),
        Some(NegotiatedVersions {
            api_versions: 3,
            metadata: 13,
            describe_configs: 4,
            describe_cluster: Some(2),
            list_reassignments: Some(0),
            alter_reassignments: Some(1),
            incremental_alter_configs: Some(1),
            elect_leaders: Some(2),
        })
    );
    let seen = seen(&server);
    assert_eq!(
        seen,
        [
            (ApiKey::ApiVersions, 3),
            (ApiKey::Metadata, 13),
            (ApiKey::DescribeConfigs, 4),
            (ApiKey::DescribeCluster, 2),
            (ApiKey::ListPartitionReassignments, 0),
        ]
    );
    assert!(
        server
            .requests()
            .iter()
            .all(|r| r.client_id.as_deref() == Some("kpool-agent"))
    );
}

#[tokio::test]
async fn rf6_cluster_matches_the_expected_snapshot() {
    let server = TestKafka::start(rf6_cluster()).await;
    let snapshot = client(&server).snapshot().await.expect("snapshot");
    assert_eq!(snapshot, server.state().expected_snapshot());
    assert_eq!(snapshot.brokers.len(), 6);
    assert_eq!(topic(&snapshot, "orders").partitions.len(), 12);
    assert_eq!(snapshot.default_min_isr, Some(3));
    assert_eq!(snapshot.min_isr(topic(&snapshot, "orders")), 3);
    // Partition 4: brokers 4,5,0,1,2,3 — leader 4.
    assert_eq!(
        partition(&snapshot, "orders", 4).replicas,
        [4, 5, 0, 1, 2, 3]
    );
    assert_eq!(partition(&snapshot, "orders", 4).leader, 4);
}

#[tokio::test]
async fn broker_down_shows_under_replicated_partitions_and_moved_leaders() {
    let server = TestKafka::start(rf6_cluster()).await;
    let mut c = client(&server);
    c.snapshot().await.expect("healthy snapshot");

    server.update_state(|s| s.broker_down(2));
    let snapshot = c.snapshot().await.expect("snapshot");
    assert_eq!(snapshot, server.state().expected_snapshot());
    assert!(snapshot.brokers.iter().all(|b| b.id != 2));
    assert_eq!(snapshot.brokers.len(), 5);
    // Every partition has a replica on 2 (RF 6 on 6 brokers): all under-replicated.
    for t in &snapshot.topics {
        for p in &t.partitions {
            assert_eq!(p.replicas.len(), 6);
            assert_eq!(p.isr.len(), 5, "{}-{}", t.name, p.index);
            assert!(!p.isr.contains(&2));
            assert_eq!(p.offline_replicas, [2]);
            assert_ne!(p.leader, 2);
        }
    }
    // orders-2 was led by 2; the next ISR member (3) leads now.
    assert_eq!(partition(&snapshot, "orders", 2).leader, 3);
    assert_eq!(partition(&snapshot, "orders", 2).isr, [3, 4, 5, 0, 1]);
}

#[tokio::test]
async fn partition_under_min_isr() {
    let state = rf6_cluster()
        .topic_min_isr("payments", 4)
        .shrink_isr("orders", 4, 2)
        .shrink_isr("payments", 1, 3);
    let server = TestKafka::start(state).await;
    let snapshot = client(&server).snapshot().await.expect("snapshot");
    assert_eq!(snapshot, server.state().expected_snapshot());
    let p = partition(&snapshot, "orders", 4);
    assert_eq!(p.isr, [4, 5]);
    assert_eq!(p.leader, 4);
    assert_eq!(snapshot.min_isr(topic(&snapshot, "orders")), 3);
    assert_eq!(topic(&snapshot, "payments").min_isr, Some(4));
    assert_eq!(partition(&snapshot, "payments", 1).isr, [1, 2, 3]);
}

#[tokio::test]
async fn offline_partition_is_kept_with_no_leader() {
    // Kafka reports a leaderless partition with LEADER_NOT_AVAILABLE: it must stay in the
    // snapshot, it is exactly what the health engine looks for.
    let state = rf6_cluster()
        .offline("orders", 7)
        .set_isr("payments", 0, &[]);
    let server = TestKafka::start(state).await;
    let snapshot = client(&server).snapshot().await.expect("snapshot");
    assert_eq!(snapshot, server.state().expected_snapshot());
    assert_eq!(partition(&snapshot, "orders", 7).leader, -1);
    assert_eq!(partition(&snapshot, "orders", 7).isr.len(), 6);
    assert_eq!(partition(&snapshot, "payments", 0).leader, -1);
    assert!(partition(&snapshot, "payments", 0).isr.is_empty());
    assert_eq!(topic(&snapshot, "orders").partitions.len(), 12);
}

#[tokio::test]
async fn last_isr_member_down_leaves_partition_leaderless() {
    let state = ClusterState::healthy(3, &[], &[("solo", 1, 1)]).broker_down(0);
    let server = TestKafka::start(state).await;
    let snapshot = client(&server).snapshot().await.expect("snapshot");
    let p = partition(&snapshot, "solo", 0);
    assert_eq!((p.leader, p.isr.as_slice()), (-1, &[0][..]));
    assert_eq!(p.offline_replicas, [0]);
    assert_eq!(snapshot.controller_id, Some(1));
    assert_eq!(snapshot, server.state().expected_snapshot());
}

#[tokio::test]
async fn topic_without_min_isr_uses_the_broker_default() {
    let state = rf6_cluster().topic_min_isr("payments", 4);
    let server = TestKafka::start(state).await;
    let snapshot = client(&server).snapshot().await.expect("snapshot");
    let orders = topic(&snapshot, "orders");
    assert_eq!(orders.min_isr, None, "inherited, not the topic's own");
    assert_eq!(snapshot.default_min_isr, Some(3));
    assert_eq!(snapshot.min_isr(orders), 3);
    assert_eq!(snapshot.min_isr(topic(&snapshot, "payments")), 4);
    // Kafka's built-in default when nothing is set anywhere: 1.
    server.update_state(|s| s.broker_default_min_isr(None));
    let snapshot = client(&server).snapshot().await.expect("snapshot");
    assert_eq!(snapshot.default_min_isr, Some(1));
    assert_eq!(snapshot.min_isr(topic(&snapshot, "orders")), 1);
    assert_eq!(snapshot, server.state().expected_snapshot());
}

#[tokio::test]
async fn tansu_style_configs_absent_means_default() {
    // tansu reports only configs set on the topic, and nothing for brokers.
    let state = rf6_cluster().topic_min_isr("payments", 2).tansu_style();
    let server = TestKafka::start(state).await;
    let snapshot = client(&server).snapshot().await.expect("snapshot");
    assert_eq!(snapshot, server.state().expected_snapshot());
    assert_eq!(snapshot.default_min_isr, None);
    assert_eq!(topic(&snapshot, "orders").min_isr, None);
    assert_eq!(snapshot.min_isr(topic(&snapshot, "orders")), 1);
    assert_eq!(topic(&snapshot, "payments").min_isr, Some(2));
}

#[tokio::test]
async fn brokers_that_cannot_parse_config_keys_get_null_keys() {
    // tansu 0.6 closes the connection on a DescribeConfigs naming configuration keys.
    let server = TestKafka::start(rf6_cluster().tansu_style()).await;
    let mut c = client(&server);
    let snapshot = c.snapshot().await.expect("snapshot despite the rejections");
    assert_eq!(snapshot, server.state().expected_snapshot());
    c.snapshot().await.expect("second snapshot");
    let keyed: Vec<bool> = server
        .requests()
        .iter()
        .filter(|r| r.api == ApiKey::DescribeConfigs)
        .map(|r| r.named_config_keys)
        .collect();
    // Keys, keys again on a fresh connection, then null keys for good.
    assert_eq!(keyed, [true, true, false, false]);
    assert_eq!(server.connections(), 3);
}

#[tokio::test]
async fn one_close_during_describe_configs_keeps_naming_keys() {
    let server = TestKafka::start(rf6_cluster()).await;
    let mut c = client(&server);
    server.set_behaviour_times(Behaviour::on(ApiKey::DescribeConfigs, Fault::Close), 1);
    let snapshot = c.snapshot().await.expect("retried on a fresh connection");
    assert_eq!(snapshot, server.state().expected_snapshot());
    c.snapshot().await.expect("second snapshot");
    let keyed: Vec<bool> = server
        .requests()
        .iter()
        .filter(|r| r.api == ApiKey::DescribeConfigs)
        .map(|r| r.named_config_keys)
        .collect();
    assert_eq!(keyed, [true, true, true]);
    assert_eq!(server.connections(), 2);
}

#[tokio::test]
async fn a_broker_that_keeps_closing_on_describe_configs_fails_the_snapshot() {
    let server = TestKafka::start(rf6_cluster()).await;
    server.set_behaviour(Behaviour::on(ApiKey::DescribeConfigs, Fault::Close));
    let err = client(&server)
        .snapshot()
        .await
        .expect_err("closes every time");
    assert!(
        matches!(&err, KafkaError::Closed { api, .. } if api == "DescribeConfigs v4"),
        "{err:?}"
    );
    // Two retries on fresh connections, then give up.
    assert_eq!(server.connections(), 3);
}

#[tokio::test]
async fn broker_default_falls_back_to_inherited_topic_values() {
    // The server is broker 0, which is down (not registered): nobody answers the broker
    // resource, but topic entries inherited from the static broker config carry it.
    let state = rf6_cluster().broker_down(0);
    let server = TestKafka::start(state).await;
    let snapshot = client(&server).snapshot().await.expect("snapshot");
    assert_eq!(snapshot.default_min_isr, Some(3));
    assert_eq!(snapshot, server.state().expected_snapshot());
}

#[tokio::test]
async fn rack_skewed_placement_is_reported_as_is() {
    let state = rf6_cluster()
        .with_racks(&["a-z1", "a-z1", "a-z1", "b-z2", "b-z2", "b-z3"])
        .assign("payments", 0, &[0, 1, 2]);
    let server = TestKafka::start(state).await;
    let snapshot = client(&server).snapshot().await.expect("snapshot");
    assert_eq!(snapshot, server.state().expected_snapshot());
    let racks: Vec<Option<&str>> = snapshot.brokers.iter().map(|b| b.rack.as_deref()).collect();
    assert_eq!(
        racks,
        [
            Some("a-z1"),
            Some("a-z1"),
            Some("a-z1"),
            Some("b-z2"),
            Some("b-z2"),
            Some("b-z3")
        ]
    );
    assert_eq!(partition(&snapshot, "payments", 0).replicas, [0, 1, 2]);
}

#[tokio::test]
async fn state_changes_between_snapshots_are_seen_on_the_same_connection() {
    let server = TestKafka::start(rf6_cluster()).await;
    let mut c = client(&server);
    let states = [
        rf6_cluster(),
        rf6_cluster().broker_down(5),
        rf6_cluster().broker_down(5).broker_down(4),
        rf6_cluster()
            .shrink_isr("orders", 0, 1)
            .offline("orders", 1),
        rf6_cluster(),
    ];
    for state in states {
        server.set_state(state.clone());
        assert_eq!(
            c.snapshot().await.expect("snapshot"),
            state.expected_snapshot()
        );
    }
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn topic_level_metadata_errors_skip_only_that_topic() {
    let state = rf6_cluster().topic_error("payments", 29);
    let server = TestKafka::start(state).await;
    let snapshot = client(&server).snapshot().await.expect("snapshot");
    let names: Vec<&str> = snapshot.topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["orders"]);
    assert_eq!(snapshot, server.state().expected_snapshot());
    // DescribeConfigs was not asked about the skipped topic.
    let configs = server
        .requests()
        .into_iter()
        .find(|r| r.api == ApiKey::DescribeConfigs)
        .expect("DescribeConfigs");
    assert!(
        !configs
            .config_resources
            .iter()
            .any(|(_, n)| n == "payments")
    );
}

// ---------------------------------------------------------------- broker identity

#[tokio::test]
async fn broker_default_is_asked_of_the_connected_broker_only_once_known() {
    let server = TestKafka::start(rf6_cluster()).await;
    let mut c = client(&server);
    c.snapshot().await.expect("snapshot");
    c.snapshot().await.expect("snapshot");
    let broker_resources: Vec<Vec<String>> = server
        .requests()
        .iter()
        .filter(|r| r.api == ApiKey::DescribeConfigs)
        .map(|r| {
            r.config_resources
                .iter()
                .filter(|(t, _)| *t == 4)
                .map(|(_, n)| n.clone())
                .collect()
        })
        .collect();
    // First: unknown which broker this is, so all six are asked (Kafka answers only for
    // itself); after that only the one that answered.
    assert_eq!(broker_resources[0], ["0", "1", "2", "3", "4", "5"]);
    assert_eq!(broker_resources[1], ["0"]);
}

#[tokio::test]
async fn connected_broker_recognised_by_its_advertised_address() {
    let server = TestKafka::start(rf6_cluster()).await;
    let addr = server.addr();
    server.update_state(|s| s.advertise(0, addr));
    let snapshot = client(&server).snapshot().await.expect("snapshot");
    assert_eq!(snapshot.default_min_isr, Some(3));
    let configs = server
        .requests()
        .into_iter()
        .find(|r| r.api == ApiKey::DescribeConfigs)
        .expect("DescribeConfigs");
    let brokers: Vec<&str> = configs
        .config_resources
        .iter()
        .filter(|(t, _)| *t == 4)
        .map(|(_, n)| n.as_str())
        .collect();
    assert_eq!(brokers, ["0"]);
}

// ---------------------------------------------------------------- misbehaviour

#[tokio::test]
async fn garbage_bytes_are_a_frame_size_error() {
    let server = TestKafka::start(rf6_cluster()).await;
    server.set_behaviour(Behaviour::garbage());
    let err = client(&server).snapshot().await.expect_err("garbage");
    match &err {
        KafkaError::FrameSize {
            addr, api, size, ..
        } => {
            assert_eq!(addr, &server.bootstrap());
            assert_eq!(api, "ApiVersions v3");
            assert_eq!(*size, i64::from(i32::from_be_bytes(*b"HTTP")));
        }
        other => panic!("expected FrameSize, got {other:?}"),
    }
    assert!(err.to_string().contains("not a Kafka response"), "{err}");
}

#[tokio::test]
async fn corrupt_bodies_are_decode_errors_not_panics_or_huge_allocations() {
    let server = TestKafka::start(rf6_cluster()).await;
    let mut c = client(&server);
    // Metadata v13 body (flexible): throttle, then a brokers array claiming 2^32-2 entries.
    let huge_array = vec![0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f];
    let bodies: Vec<Vec<u8>> = vec![
        huge_array,
        vec![],
        vec![0xff; 7],
        vec![0, 0, 0, 0, 1, 0],
        // A plausible prefix followed by junk.
        vec![
            0, 0, 0, 0, 2, 0, 0, 0, 1, 2, b'h', 0, 0, 0x23, 0x84, 0x00, 0xde, 0xad,
        ],
    ];
    for body in bodies {
        server.set_behaviour(Behaviour::on(
            ApiKey::Metadata,
            Fault::CorruptBody(body.clone()),
        ));
        match c.snapshot().await {
            Err(KafkaError::Decode { api, detail, .. }) => {
                assert_eq!(api, "Metadata v13");
                assert!(!detail.is_empty());
            }
            other => panic!("body {body:?}: expected Decode, got {other:?}"),
        }
    }
    server.set_behaviour(Behaviour::Normal);
    assert_eq!(
        c.snapshot().await.expect("recovers"),
        server.state().expected_snapshot()
    );
}

#[tokio::test]
async fn absurd_array_length_error_names_the_field() {
    let server = TestKafka::start(rf6_cluster()).await;
    server.set_behaviour(Behaviour::on(
        ApiKey::Metadata,
        Fault::CorruptBody(vec![0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f]),
    ));
    let err = client(&server).snapshot().await.expect_err("corrupt");
    let msg = err.to_string();
    assert!(msg.contains("MetadataResponse.brokers"), "{msg}");
    assert!(msg.contains("4294967294"), "{msg}");
}

#[tokio::test]
async fn silent_server_times_out_within_the_timeout() {
    let server = TestKafka::start(rf6_cluster()).await;
    server.set_behaviour(Behaviour::silent());
    let timeout = Duration::from_millis(300);
    let mut c = client_for(vec![server.bootstrap()], timeout);
    let started = Instant::now();
    let err = c.snapshot().await.expect_err("silent");
    let elapsed = started.elapsed();
    assert!(elapsed >= timeout, "{elapsed:?}");
    assert!(
        elapsed < timeout + Duration::from_millis(700),
        "took {elapsed:?}"
    );
    match err {
        KafkaError::Timeout { addr, api, after } => {
            assert_eq!(addr, server.bootstrap());
            assert_eq!(api, "ApiVersions v3");
            assert_eq!(after, timeout);
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
}

#[tokio::test]
async fn silent_metadata_times_out_and_the_next_snapshot_reconnects() {
    let server = TestKafka::start(rf6_cluster()).await;
    let mut c = client_for(vec![server.bootstrap()], Duration::from_millis(300));
    c.snapshot().await.expect("first");
    server.set_behaviour(Behaviour::on(ApiKey::Metadata, Fault::Silent));
    let err = c.snapshot().await.expect_err("silent metadata");
    assert!(
        matches!(&err, KafkaError::Timeout { api, .. } if api == "Metadata v13"),
        "{err:?}"
    );
    assert_eq!(c.connected_to(), None, "a failed call drops the connection");
    server.set_behaviour(Behaviour::Normal);
    c.snapshot().await.expect("after reconnect");
    assert_eq!(server.connections(), 2);
}

#[tokio::test]
async fn slow_but_timely_answers_are_fine() {
    let server = TestKafka::start(rf6_cluster()).await;
    server.set_behaviour(Behaviour::always(Fault::Delay(Duration::from_millis(50))));
    let mut c = client_for(vec![server.bootstrap()], Duration::from_millis(500));
    assert_eq!(
        c.snapshot().await.expect("slow"),
        server.state().expected_snapshot()
    );
}

#[tokio::test]
async fn server_that_closes_on_accept() {
    let server = TestKafka::start(rf6_cluster()).await;
    server.set_behaviour(Behaviour::CloseOnAccept);
    let err = client(&server).snapshot().await.expect_err("closed");
    // Depending on timing the close shows as EOF or as a reset.
    assert!(
        matches!(
            &err,
            KafkaError::Closed { api, .. } | KafkaError::Io { api, .. } if api == "ApiVersions v3"
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn server_that_closes_instead_of_answering_metadata() {
    let server = TestKafka::start(rf6_cluster()).await;
    server.set_behaviour(Behaviour::on(ApiKey::Metadata, Fault::Close));
    let err = client(&server).snapshot().await.expect_err("closed");
    match err {
        KafkaError::Closed { api, detail, .. } => {
            assert_eq!(api, "Metadata v13");
            assert_eq!(detail, "before answering");
        }
        other => panic!("expected Closed, got {other:?}"),
    }
}

#[tokio::test]
async fn truncated_response_is_reported_with_byte_counts() {
    let server = TestKafka::start(rf6_cluster()).await;
    server.set_behaviour(Behaviour::on(ApiKey::Metadata, Fault::Truncated));
    let err = client(&server).snapshot().await.expect_err("truncated");
    match err {
        KafkaError::Closed { api, detail, .. } => {
            assert_eq!(api, "Metadata v13");
            assert!(detail.starts_with("after "), "{detail}");
        }
        other => panic!("expected Closed, got {other:?}"),
    }
}

// ---------------------------------------------------------------- broker error codes

#[tokio::test]
async fn api_versions_error_code() {
    let server = TestKafka::start(rf6_cluster()).await;
    server.set_behaviour(Behaviour::error_on(ApiKey::ApiVersions, 31));
    let err = client(&server).snapshot().await.expect_err("error");
    match &err {
        KafkaError::BrokerError { api, code, .. } => {
            assert_eq!((api.as_str(), *code), ("ApiVersions v3", 31));
        }
        other => panic!("expected BrokerError, got {other:?}"),
    }
    assert!(
        err.to_string()
            .contains("CLUSTER_AUTHORIZATION_FAILED (31)"),
        "{err}"
    );
}

#[tokio::test]
async fn describe_configs_error_fails_the_snapshot_naming_the_topic() {
    let server = TestKafka::start(rf6_cluster()).await;
    server.set_behaviour(Behaviour::error_on(ApiKey::DescribeConfigs, 29));
    let err = client(&server).snapshot().await.expect_err("error");
    assert_eq!(
        err.to_string(),
        format!(
            "Kafka broker {} answered DescribeConfigs v4 (topic orders) with \
             TOPIC_AUTHORIZATION_FAILED (29): injected by the test server",
            server.bootstrap()
        )
    );
}

#[tokio::test]
async fn metadata_top_level_error_code_v13() {
    let server = TestKafka::start(rf6_cluster()).await;
    server.set_behaviour(Behaviour::error_on(ApiKey::Metadata, 7));
    let err = client(&server).snapshot().await.expect_err("error");
    assert!(
        matches!(&err, KafkaError::BrokerError { api, code: 7, .. } if api == "Metadata v13"),
        "{err:?}"
    );
    assert!(err.to_string().contains("REQUEST_TIMED_OUT (7)"), "{err}");
}

#[tokio::test]
async fn metadata_topic_error_codes_before_v13_skip_the_topics() {
    let state = rf6_cluster().api_versions(ApiKey::Metadata, 0, 12);
    let server = TestKafka::start(state).await;
    server.set_behaviour(Behaviour::error_on(ApiKey::Metadata, 3));
    let snapshot = client(&server).snapshot().await.expect("snapshot");
    assert!(snapshot.topics.is_empty());
    assert_eq!(snapshot.brokers.len(), 6);
}

#[tokio::test]
async fn describe_cluster_error_falls_back_to_metadata() {
    let server = TestKafka::start(rf6_cluster()).await;
    server.set_behaviour(Behaviour::error_on(ApiKey::DescribeCluster, 31));
    let snapshot = client(&server).snapshot().await.expect("snapshot");
    assert_eq!(snapshot, server.state().expected_snapshot());
}

#[tokio::test]
async fn replicas_being_added_by_a_reassignment_are_not_under_replication() {
    let state = ClusterState::healthy(6, &SIX_RACKS, &[("orders", 4, 3)])
        .broker_default_min_isr(Some(2))
        .reassigning("orders", 1, &[5]);
    let server = TestKafka::start(state).await;
    let mut c = client(&server);
    let snapshot = c.snapshot().await.expect("snapshot");
    assert_eq!(snapshot, server.state().expected_snapshot());
    let p = partition(&snapshot, "orders", 1);
    assert_eq!(p.replicas, [1, 2, 3, 5]);
    assert_eq!(p.isr, [1, 2, 3]);
    assert_eq!(p.adding_replicas, [5]);
    let live = |_: i32| true;
    assert!(!partition_state(p, 2, live).under_replicated);
    // An original replica that drops out of the ISR meanwhile still counts.
    server.update_state(|s| s.set_isr("orders", 1, &[1, 2]));
    let snapshot = c.snapshot().await.expect("snapshot");
    let p = partition(&snapshot, "orders", 1);
    assert_eq!(p.adding_replicas, [5]);
    assert!(partition_state(p, 2, live).under_replicated);
}

#[tokio::test]
async fn a_refused_reassignment_listing_keeps_the_snapshot() {
    let state = ClusterState::healthy(6, &SIX_RACKS, &[("orders", 4, 3)])
        .broker_default_min_isr(Some(2))
        .reassigning("orders", 1, &[5]);
    let server = TestKafka::start(state).await;
    // NOT_CONTROLLER: a ZooKeeper-mode broker that is not the controller.
    server.set_behaviour(Behaviour::error_on(ApiKey::ListPartitionReassignments, 41));
    let mut c = client(&server);
    for _ in 0..2 {
        let snapshot = c.snapshot().await.expect("snapshot despite the refusal");
        let p = partition(&snapshot, "orders", 1);
        assert!(
            p.adding_replicas.is_empty(),
            "nothing known about the reassignment"
        );
        // Without the listing, the new replica counts as missing (Metadata alone).
        assert!(partition_state(p, 2, |_| true).under_replicated);
    }
    let asked = seen(&server)
        .iter()
        .filter(|(k, _)| *k == ApiKey::ListPartitionReassignments)
        .count();
    assert_eq!(
        asked, 2,
        "asked on every poll, in case the controller moves here"
    );
}

// ---------------------------------------------------------------- versions

#[tokio::test]
async fn negotiates_down_to_lower_broker_versions() {
    let state = rf6_cluster()
        .api_versions(ApiKey::ApiVersions, 0, 2)
        .api_versions(ApiKey::Metadata, 0, 8)
        .api_versions(ApiKey::DescribeConfigs, 0, 2)
        .without_api(ApiKey::DescribeCluster)
        .without_api(ApiKey::ListPartitionReassignments);
    let server = TestKafka::start(state).await;
    let mut c = client(&server);
    let snapshot = c.snapshot().await.expect("snapshot");
    assert_eq!(snapshot, server.state().expected_snapshot());
    assert_eq!(
        c.negotiated(),
        Some(NegotiatedVersions {
            api_versions: 2,
            metadata: 8,
            describe_configs: 2,
            describe_cluster: None,
            list_reassignments: None,
            alter_reassignments: Some(1),
            incremental_alter_configs: Some(1),
            elect_leaders: Some(2),
        })
    );
    let seen = seen(&server);
    assert_eq!(
        seen,
        [
            (ApiKey::ApiVersions, 3),
            (ApiKey::ApiVersions, 2),
            (ApiKey::Metadata, 8),
            (ApiKey::DescribeConfigs, 2),
        ]
    );
}

#[tokio::test]
async fn oldest_supported_versions_still_give_a_snapshot() {
    // Metadata v1: no cluster id (v2+), no offline replicas (v5+); ApiVersions v0.
    let state = rf6_cluster()
        .broker_down(3)
        .api_versions(ApiKey::ApiVersions, 0, 0)
        .api_versions(ApiKey::Metadata, 1, 1)
        .api_versions(ApiKey::DescribeConfigs, 1, 1)
        .without_api(ApiKey::DescribeCluster);
    let server = TestKafka::start(state).await;
    let mut c = client(&server);
    let snapshot = c.snapshot().await.expect("snapshot");
    let mut expected = server.state().expected_snapshot();
    expected.cluster_id = None;
    for t in &mut expected.topics {
        for p in &mut t.partitions {
            p.offline_replicas.clear();
        }
    }
    assert_eq!(snapshot, expected);
    assert_eq!(
        c.negotiated().map(|n| (n.api_versions, n.metadata)),
        Some((0, 1))
    );
}

#[tokio::test]
async fn describe_cluster_supplies_the_cluster_id_when_metadata_cannot() {
    let state = rf6_cluster().api_versions(ApiKey::Metadata, 1, 1);
    let server = TestKafka::start(state).await;
    let snapshot = client(&server).snapshot().await.expect("snapshot");
    assert_eq!(snapshot.cluster_id.as_deref(), Some("kpool-test-cluster"));
}

#[tokio::test]
async fn no_common_metadata_version_is_an_unsupported_api_error() {
    let state = rf6_cluster().api_versions(ApiKey::Metadata, 0, 0);
    let server = TestKafka::start(state).await;
    let err = client(&server).snapshot().await.expect_err("unsupported");
    assert_eq!(
        err.to_string(),
        format!(
            "Kafka broker {} does not support Metadata in a version this client speaks \
             (client 1..=13, broker 0..=0)",
            server.bootstrap()
        )
    );
    let state = rf6_cluster().without_api(ApiKey::DescribeConfigs);
    server.set_state(state);
    let err = client(&server).snapshot().await.expect_err("unsupported");
    assert!(err.to_string().contains("DescribeConfigs"), "{err}");
    assert!(err.to_string().contains("broker none"), "{err}");
}

// ---------------------------------------------------------------- reconnects

#[tokio::test]
async fn reconnects_after_the_server_restarts() {
    let mut server = TestKafka::start(rf6_cluster()).await;
    let mut c = client_for(vec![server.bootstrap()], Duration::from_millis(500));
    c.snapshot().await.expect("before restart");
    assert_eq!(server.connections(), 1);

    server.stop().await;
    let err = c.snapshot().await.expect_err("server gone");
    assert!(
        matches!(
            err,
            KafkaError::Closed { .. } | KafkaError::Io { .. } | KafkaError::Connect { .. }
        ),
        "{err:?}"
    );
    let err = c.snapshot().await.expect_err("still gone");
    assert!(matches!(err, KafkaError::Connect { .. }), "{err:?}");

    server.restart().await;
    server.set_state(rf6_cluster().broker_down(1));
    let snapshot = c.snapshot().await.expect("after restart");
    assert_eq!(snapshot, server.state().expected_snapshot());
    assert_eq!(server.connections(), 2);
}

#[tokio::test]
async fn a_restart_mid_connection_costs_at_most_one_failed_snapshot() {
    let mut server = TestKafka::start(rf6_cluster()).await;
    let mut c = client_for(vec![server.bootstrap()], Duration::from_millis(500));
    c.snapshot().await.expect("before restart");
    server.restart().await;
    let first = c.snapshot().await;
    if first.is_err() {
        c.snapshot().await.expect("second snapshot reconnects");
    }
}

#[tokio::test]
async fn tries_bootstrap_addresses_in_turn() {
    let dead = {
        // A port that refuses connections: bind, learn the port, close.
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let server = TestKafka::start(rf6_cluster()).await;
    let mut c = client_for(
        vec![dead.clone(), server.bootstrap()],
        Duration::from_millis(500),
    );
    c.snapshot().await.expect("second address works");
    assert_eq!(c.connected_to(), Some(server.bootstrap().as_str()));

    let dead2 = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let mut c = client_for(
        vec![dead.clone(), dead2.clone()],
        Duration::from_millis(500),
    );
    match c.snapshot().await.expect_err("all dead") {
        KafkaError::Unreachable { errors } => {
            assert_eq!(errors.len(), 2);
            assert!(matches!(&errors[0], KafkaError::Connect { addr, .. } if *addr == dead));
            assert!(matches!(&errors[1], KafkaError::Connect { addr, .. } if *addr == dead2));
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn after_a_failure_the_next_bootstrap_address_is_tried_first() {
    let a = TestKafka::start(rf6_cluster()).await;
    let b = TestKafka::start(rf6_cluster()).await;
    let mut c = client_for(
        vec![a.bootstrap(), b.bootstrap()],
        Duration::from_millis(300),
    );
    c.snapshot().await.expect("via a");
    assert_eq!(c.connected_to(), Some(a.bootstrap().as_str()));
    a.set_behaviour(Behaviour::on(ApiKey::Metadata, Fault::Silent));
    c.snapshot().await.expect_err("a hangs");
    c.snapshot().await.expect("via b");
    assert_eq!(c.connected_to(), Some(b.bootstrap().as_str()));
    assert_eq!(a.connections(), 1, "a is not retried first");
}

// ---------------------------------------------------------------- configuration and TLS

#[test]
fn invalid_configs_are_rejected_up_front() {
    let cfg = |bootstrap: Vec<String>, timeout: Duration| KafkaConfig {
        bootstrap,
        timeout,
        ..KafkaConfig::default()
    };
    assert!(matches!(
        KafkaClient::new(cfg(vec![], Duration::from_secs(1))),
        Err(KafkaError::NoBootstrap)
    ));
    assert!(matches!(
        KafkaClient::new(cfg(vec!["k1:9092".into()], Duration::ZERO)),
        Err(KafkaError::InvalidConfig {
            field: "timeout",
            ..
        })
    ));
    assert!(matches!(
        KafkaClient::new(cfg(vec!["k1".into()], Duration::from_secs(1))),
        Err(KafkaError::InvalidBootstrap { .. })
    ));
    let missing = KafkaConfig {
        bootstrap: vec!["k1:9092".into()],
        tls: Some(TlsSettings {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..TlsSettings::default()
        }),
        ..KafkaConfig::default()
    };
    let err = KafkaClient::new(missing).expect_err("missing CA");
    assert!(
        matches!(
            err,
            KafkaError::Tls {
                what: "CA bundle",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
}

#[test]
fn tls_material_is_checked_when_the_client_is_built() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = kafka_server::tls::generate(dir.path());
    let build = |tls: TlsSettings| {
        KafkaClient::new(KafkaConfig {
            bootstrap: vec!["localhost:9093".into()],
            tls: Some(tls),
            ..KafkaConfig::default()
        })
    };
    build(TlsSettings {
        ca_file: Some(m.ca.clone()),
        client_cert: Some(m.client_cert.clone()),
        client_key: Some(m.client_key.clone()),
        server_name: None,
    })
    .expect("complete material");
    let err = build(TlsSettings {
        ca_file: Some(m.ca.clone()),
        client_cert: Some(m.client_cert.clone()),
        ..TlsSettings::default()
    })
    .expect_err("cert without key");
    assert!(err.to_string().contains("both or neither"), "{err}");
    let err = build(TlsSettings {
        ca_file: Some(m.client_key.clone()),
        ..TlsSettings::default()
    })
    .expect_err("a key is not a CA");
    assert!(err.to_string().contains("CERTIFICATE"), "{err}");
    let err = build(TlsSettings {
        ca_file: Some(m.ca.clone()),
        client_cert: Some(m.client_cert.clone()),
        client_key: Some(m.server_key.clone()),
        ..TlsSettings::default()
    })
    .expect_err("key of another certificate");
    assert!(matches!(err, KafkaError::Tls { .. }), "{err:?}");
}

#[tokio::test]
async fn mutual_tls_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = kafka_server::tls::generate(dir.path());
    let server = TestKafka::start_tls(rf6_cluster(), kafka_server::tls::acceptor(&m, true)).await;
    let tls = TlsSettings {
        ca_file: Some(m.ca.clone()),
        client_cert: Some(m.client_cert.clone()),
        client_key: Some(m.client_key.clone()),
        server_name: None,
    };
    let config = KafkaConfig {
        bootstrap: vec![format!("localhost:{}", server.addr().port())],
        timeout: Duration::from_secs(2),
        tls: Some(tls.clone()),
        ..KafkaConfig::default()
    };
    let snapshot = KafkaClient::new(config.clone())
        .expect("client")
        .snapshot()
        .await
        .expect("snapshot over mTLS");
    assert_eq!(snapshot, server.state().expected_snapshot());

    // By IP, verified against the IP SAN.
    let by_ip = KafkaConfig {
        bootstrap: vec![server.bootstrap()],
        ..config.clone()
    };
    KafkaClient::new(by_ip)
        .expect("client")
        .snapshot()
        .await
        .expect("snapshot by IP");

    // A server name the certificate does not carry fails the handshake.
    let wrong_name = KafkaConfig {
        tls: Some(TlsSettings {
            server_name: Some("kafka.example".into()),
            ..tls.clone()
        }),
        ..config.clone()
    };
    let err = KafkaClient::new(wrong_name)
        .expect("client")
        .snapshot()
        .await
        .expect_err("name mismatch");
    assert!(matches!(err, KafkaError::TlsHandshake { .. }), "{err:?}");

    // Without a client certificate the server refuses.
    let anonymous = KafkaConfig {
        tls: Some(TlsSettings {
            client_cert: None,
            client_key: None,
            ..tls
        }),
        ..config
    };
    let err = KafkaClient::new(anonymous)
        .expect("client")
        .snapshot()
        .await
        .expect_err("no client cert");
    // TLS 1.3 reports the missing client certificate after the handshake, on first read.
    assert!(
        matches!(
            err,
            KafkaError::TlsHandshake { .. } | KafkaError::Io { .. } | KafkaError::Closed { .. }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn plaintext_client_against_a_tls_server_fails_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = kafka_server::tls::generate(dir.path());
    let server = TestKafka::start_tls(rf6_cluster(), kafka_server::tls::acceptor(&m, false)).await;
    let err = client_for(vec![server.bootstrap()], Duration::from_millis(500))
        .snapshot()
        .await
        .expect_err("plaintext to TLS");
    // The TLS server answers the plaintext bytes with an alert and closes (or waits for
    // more bytes): any of these is fine, a hang or panic is not.
    assert!(
        matches!(
            err,
            KafkaError::FrameSize { .. }
                | KafkaError::Closed { .. }
                | KafkaError::Io { .. }
                | KafkaError::Timeout { .. }
                | KafkaError::Decode { .. }
        ),
        "{err:?}"
    );
}
