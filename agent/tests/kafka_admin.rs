//! The client's admin requests (AlterPartitionReassignments, ListPartitionReassignments,
//! IncrementalAlterConfigs, ElectLeaders, DescribeConfigs of named configs) against the
//! scripted Kafka-protocol server playing a KRaft controller: a move's life (target +
//! removing, catch-up, leader kept or handed over), cancel, refusals named by partition and
//! Kafka's code, NOT_CONTROLLER retried and bounded, throttle configs recorded and read
//! back, preferred-leader elections, and where requests go (the controller's advertised
//! address, else the bootstrap connection).

use kpool_agent::kafka::{
    ADMIN_ATTEMPTS, ConfigAlteration, ConfigOp, ConfigResource, ELECTION_NOT_NEEDED, KafkaError,
    NO_REASSIGNMENT_IN_PROGRESS, NOT_CONTROLLER, PREFERRED_LEADER_NOT_AVAILABLE, Reassignment,
};
use kpool_testkit::kafka_server::{ApiKey, CatchUp, ClusterState, TestKafka, closed_addr};

/// Six brokers advertised where nothing listens (admin requests fall back to the bootstrap
/// connection), topic `orders` with 4 partitions of RF 3 on p, p+1, p+2.
fn cluster() -> ClusterState {
    ClusterState::healthy(6, &[], &[("orders", 4, 3)])
        .catch_up(CatchUp::Polls(2))
        .advertise_unreachable(closed_addr())
}

fn move_to(topic: &str, partition: i32, replicas: &[i32]) -> Reassignment {
    Reassignment {
        topic: topic.to_owned(),
        partition,
        replicas: Some(replicas.to_vec()),
    }
}

fn cancel(topic: &str, partition: i32) -> Reassignment {
    Reassignment {
        topic: topic.to_owned(),
        partition,
        replicas: None,
    }
}

fn count(server: &TestKafka, api: ApiKey) -> usize {
    server.requests().iter().filter(|r| r.api == api).count()
}

#[tokio::test]
async fn a_move_lists_target_plus_removing_until_the_added_replica_catches_up() {
    let server = TestKafka::start(cluster()).await;
    let mut c = server.client();
    // orders-0 is on [0, 1, 2], led by 0: move 2 to 4.
    let out = c
        .alter_partition_reassignments(&[move_to("orders", 0, &[0, 1, 4])])
        .await
        .expect("submitted");
    assert_eq!(out.len(), 1);
    assert!(out[0].error.is_none(), "{:?}", out[0].error);

    let ongoing = c.list_partition_reassignments().await.expect("list");
    assert_eq!(ongoing.len(), 1, "{ongoing:?}");
    let r = &ongoing[0];
    assert_eq!((r.topic.as_str(), r.partition), ("orders", 0));
    assert_eq!(
        r.replicas,
        [0, 1, 4, 2],
        "target, then the replica being removed"
    );
    assert_eq!(
        (r.adding.as_slice(), r.removing.as_slice()),
        (&[4][..], &[2][..])
    );
    assert_eq!(r.target(), [0, 1, 4]);
    assert_eq!(r.original(), [0, 1, 2]);

    let s = c.snapshot().await.expect("snapshot");
    let p = &s.topics[0].partitions[0];
    assert_eq!(p.replicas, [0, 1, 4, 2]);
    assert_eq!(p.isr, [0, 1, 2], "the added replica is not in the ISR yet");
    assert_eq!(p.adding_replicas, [4]);

    // Two Metadata requests later (the snapshot above was one) it has caught up.
    let s = c.snapshot().await.expect("snapshot");
    let p = &s.topics[0].partitions[0];
    assert_eq!(p.replicas, [0, 1, 4]);
    assert_eq!(p.isr, [0, 1, 4]);
    assert_eq!(p.leader, 0, "the leader stays: it is in the target");
    assert!(p.adding_replicas.is_empty());
    assert!(
        c.list_partition_reassignments()
            .await
            .expect("list")
            .is_empty()
    );
}

#[tokio::test]
async fn a_leader_leaving_hands_over_to_the_first_target_replica_in_the_isr() {
    let server = TestKafka::start(cluster()).await;
    let mut c = server.client();
    // orders-1 is on [1, 2, 3], led by 1: move it off broker 1.
    c.alter_partition_reassignments(&[move_to("orders", 1, &[5, 2, 3])])
        .await
        .expect("submitted");
    for _ in 0..3 {
        c.snapshot().await.expect("snapshot");
    }
    let state = server.state();
    let p = state.partition("orders", 1).expect("orders-1");
    assert_eq!(p.replicas, [5, 2, 3]);
    assert_eq!(p.leader, 5, "the first target replica, now in the ISR");
}

#[tokio::test]
async fn cancel_reverts_and_refusals_name_partition_and_code() {
    let server = TestKafka::start(cluster()).await;
    let mut c = server.client();
    c.alter_partition_reassignments(&[move_to("orders", 2, &[2, 3, 5])])
        .await
        .expect("submitted");
    let out = c
        .alter_partition_reassignments(&[
            cancel("orders", 2),
            cancel("orders", 3),
            move_to("orders", 9, &[0, 1, 2]),
            move_to("orders", 0, &[0, 1, 2, 3]),
            move_to("orders", 1, &[1, 2, 99]),
        ])
        .await
        .expect("answered");
    let codes: Vec<i16> = out.iter().map(|o| o.code()).collect();
    assert_eq!(
        codes,
        [0, NO_REASSIGNMENT_IN_PROGRESS, 3, 38, 39],
        "cancelled; nothing to cancel; unknown partition; RF change; unknown broker"
    );
    let msg = |i: usize| {
        out[i]
            .error
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default()
    };
    assert!(
        msg(1).contains("AlterPartitionReassignments v1 (partition orders-3) with NO_REASSIGNMENT_IN_PROGRESS (85)"),
        "{}",
        msg(1)
    );
    assert!(
        msg(3).contains("INVALID_REPLICATION_FACTOR (38)"),
        "{}",
        msg(3)
    );
    let state = server.state();
    let p = state.partition("orders", 2).expect("orders-2");
    assert_eq!(p.replicas, [2, 3, 4], "back to the original replicas");
    assert!(!p.reassigning());
    assert_eq!(
        server.requests().last().map(|r| r.reassignments.len()),
        Some(5),
        "one request for all five"
    );
}

#[tokio::test]
async fn not_controller_refreshes_metadata_and_retries_within_a_bound() {
    let server = TestKafka::start(cluster().not_controller_for(2)).await;
    let mut c = server.client();
    let out = c
        .alter_partition_reassignments(&[move_to("orders", 0, &[0, 1, 5])])
        .await
        .expect("retried past NOT_CONTROLLER");
    assert!(out[0].error.is_none());
    assert_eq!(count(&server, ApiKey::AlterPartitionReassignments), 3);
    assert_eq!(
        count(&server, ApiKey::Metadata),
        3,
        "Metadata read before each attempt"
    );

    server.update_state(|s| s.not_controller_for(100));
    let err = c
        .list_partition_reassignments()
        .await
        .expect_err("NOT_CONTROLLER every time");
    match &err {
        KafkaError::BrokerError { code, .. } => assert_eq!(*code, NOT_CONTROLLER),
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string()
            .contains("ListPartitionReassignments v0 with NOT_CONTROLLER (41)")
            && err
                .to_string()
                .contains(&format!("after {ADMIN_ATTEMPTS} attempts")),
        "{err}"
    );
    assert_eq!(
        count(&server, ApiKey::ListPartitionReassignments),
        ADMIN_ATTEMPTS as usize
    );
}

#[tokio::test]
async fn configs_are_set_appended_subtracted_deleted_and_read_back() {
    let server = TestKafka::start(cluster()).await;
    // Every broker reachable at the server's address, so broker configs can be read back
    // from "their" broker.
    server.update_state(|s| s.advertise_all(server.addr()));
    let mut c = server.client();
    let rate = "leader.replication.throttled.rate";
    let replicas = "follower.replication.throttled.replicas";
    let out = c
        .alter_configs(&[
            ConfigAlteration {
                resource: ConfigResource::Broker(4),
                changes: vec![(rate.into(), ConfigOp::Set("1048576".into()))],
            },
            ConfigAlteration {
                resource: ConfigResource::Topic("orders".into()),
                changes: vec![(replicas.into(), ConfigOp::Append("0:4,1:5".into()))],
            },
            ConfigAlteration {
                resource: ConfigResource::Topic("missing".into()),
                changes: vec![(replicas.into(), ConfigOp::Append("0:4".into()))],
            },
        ])
        .await
        .expect("answered");
    assert!(out[0].error.is_none() && out[1].error.is_none());
    let err = out[2].error.as_ref().map(ToString::to_string);
    assert!(
        err.as_deref().is_some_and(|e| e.contains(
            "IncrementalAlterConfigs v1 (topic missing) with UNKNOWN_TOPIC_OR_PARTITION (3)"
        )),
        "{err:?}"
    );
    c.alter_configs(&[ConfigAlteration {
        resource: ConfigResource::Topic("orders".into()),
        changes: vec![(replicas.into(), ConfigOp::Append("1:5,2:3".into()))],
    }])
    .await
    .expect("append again");
    let state = server.state();
    assert_eq!(state.broker_config(4, rate), Some("1048576"));
    assert_eq!(
        state.topic_config("orders", replicas),
        Some("0:4,1:5,2:3"),
        "APPEND keeps an entry once"
    );

    let read = c
        .describe_configs(
            &[
                ConfigResource::Broker(4),
                ConfigResource::Topic("orders".into()),
            ],
            &[rate, replicas],
        )
        .await
        .expect("describe");
    assert_eq!(read.len(), 2);
    let broker = read[0].1.as_ref().expect("broker 4 answers");
    assert_eq!(broker.get(rate).map(String::as_str), Some("1048576"));
    let topic = read[1].1.as_ref().expect("orders answers");
    assert_eq!(topic.get(replicas).map(String::as_str), Some("0:4,1:5,2:3"));

    c.alter_configs(&[
        ConfigAlteration {
            resource: ConfigResource::Broker(4),
            changes: vec![(rate.into(), ConfigOp::Delete)],
        },
        ConfigAlteration {
            resource: ConfigResource::Topic("orders".into()),
            changes: vec![(replicas.into(), ConfigOp::Subtract("0:4,2:3".into()))],
        },
    ])
    .await
    .expect("cleared");
    let state = server.state();
    assert_eq!(state.broker_config(4, rate), None);
    assert_eq!(state.topic_config("orders", replicas), Some("1:5"));
}

#[tokio::test]
async fn preferred_leaders_are_elected_when_in_the_isr() {
    let state = cluster()
        // orders-0 [0,1,2] led by 1; orders-1 [1,2,3] led by 1; orders-2 [2,3,4] with 2
        // out of the ISR.
        .set_isr("orders", 0, &[1, 2])
        .set_isr("orders", 0, &[1, 2, 0])
        .set_isr("orders", 2, &[3, 4]);
    let server = TestKafka::start(state).await;
    let mut c = server.client();
    let out = c
        .elect_preferred_leaders(&[
            ("orders".into(), 0),
            ("orders".into(), 1),
            ("orders".into(), 2),
        ])
        .await
        .expect("answered");
    let codes: Vec<i16> = out.iter().map(|o| o.code()).collect();
    assert_eq!(
        codes,
        [0, ELECTION_NOT_NEEDED, PREFERRED_LEADER_NOT_AVAILABLE]
    );
    let state = server.state();
    assert_eq!(state.partition("orders", 0).map(|p| p.leader), Some(0));
    assert_eq!(state.partition("orders", 2).map(|p| p.leader), Some(3));
    assert_eq!(
        server.requests().last().map(|r| (r.api, r.version)),
        Some((ApiKey::ElectLeaders, 2))
    );
}

#[tokio::test]
async fn an_added_replica_on_a_dead_broker_waits_until_it_returns() {
    let server = TestKafka::start(cluster()).await;
    let mut c = server.client();
    c.alter_partition_reassignments(&[move_to("orders", 0, &[0, 1, 5])])
        .await
        .expect("submitted");
    server.update_state(|s| s.broker_down(5));
    for _ in 0..4 {
        c.snapshot().await.expect("snapshot");
    }
    let p = server.state().partition("orders", 0).cloned().expect("p");
    assert_eq!(p.replicas, [0, 1, 5, 2], "still in flight");
    server.update_state(|s| s.broker_up(5));
    for _ in 0..2 {
        c.snapshot().await.expect("snapshot");
    }
    let p = server.state().partition("orders", 0).cloned().expect("p");
    assert_eq!((p.replicas, p.isr), (vec![0, 1, 5], vec![0, 1, 5]));
}

/// The controller advertised at a reachable address gets its own connection; brokers
/// advertised where nothing listens are reached through the bootstrap connection.
#[tokio::test]
async fn requests_go_to_the_controller_else_over_the_bootstrap_connection() {
    let server = TestKafka::start(cluster()).await;
    let mut c = server.client();
    // Broker 0, the controller, refuses connections: the bootstrap connection carries it.
    c.list_partition_reassignments()
        .await
        .expect("through bootstrap");
    assert_eq!(server.connections(), 1);

    // The controller (broker 3) at a second address of this server: 127.0.0.1 is the
    // bootstrap, so advertise it by name.
    let port = server.addr().port();
    server.update_state(|s| {
        let mut s = s;
        s.controller_id = 3;
        for b in s.brokers.iter_mut().filter(|b| b.id == 3) {
            b.host = "localhost".into();
            b.port = i32::from(port);
        }
        s
    });
    let mut c = server.client();
    c.list_partition_reassignments().await.expect("to broker 3");
    assert_eq!(
        server.connections(),
        3,
        "bootstrap, then the controller's own connection"
    );
    c.list_partition_reassignments().await.expect("reused");
    assert_eq!(server.connections(), 3, "the controller connection is kept");
}
