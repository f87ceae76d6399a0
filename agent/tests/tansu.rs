//! Interop with a real Kafka-compatible broker: tansu (`scripts/install-tansu`).
//!
//! Starts `tansu broker` with in-memory storage on a free port, creates topics with a real
//! Kafka client (Python confluent-kafka, i.e. librdkafka), and takes a snapshot with
//! `KafkaClient`. Without a tansu binary the test explains why and passes, unless
//! `KPOOL_REQUIRE_TANSU=1`, when it fails.

use std::process::Command;

use kpool_agent::snapshot::Snapshot;
use kpool_testkit::tansu::{self, Tansu};

/// Topics created through librdkafka's admin API: (name, partitions, replication factor,
/// explicit min.insync.replicas).
const TOPICS: [(&str, i32, i32, Option<&str>); 3] = [
    ("orders", 3, 1, None),
    ("payments", 2, 1, None),
    ("audit", 1, 1, Some("2")),
];

const CREATE_TOPICS: &str = r#"
import json, sys
from confluent_kafka.admin import AdminClient, NewTopic
bootstrap, spec = sys.argv[1], json.loads(sys.argv[2])
admin = AdminClient({"bootstrap.servers": bootstrap, "broker.address.family": "v4"})
topics = []
for name, partitions, rf, min_isr in spec:
    config = {"min.insync.replicas": min_isr} if min_isr else {}
    topics.append(NewTopic(name, num_partitions=partitions, replication_factor=rf, config=config))
for name, future in admin.create_topics(topics, request_timeout=20).items():
    future.result(timeout=30)
    print("created", name)
"#;

fn create_topics(bootstrap: &str) {
    let spec = format!(
        "[{}]",
        TOPICS
            .iter()
            .map(|(n, p, rf, m)| format!(
                "[\"{n}\", {p}, {rf}, {}]",
                m.map_or("null".to_owned(), |m| format!("\"{m}\""))
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let out = Command::new("python3")
        .args(["-c", CREATE_TOPICS, bootstrap, &spec])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "creating topics with confluent-kafka failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn has_all_topics(s: &Snapshot) -> bool {
    TOPICS.iter().all(|(name, partitions, _, _)| {
        s.topics
            .iter()
            .any(|t| t.name == *name && t.partitions.len() == *partitions as usize)
    })
}

#[test]
fn snapshot_of_a_real_tansu_broker() {
    let Some(tansu) = tansu::available() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Tansu::start_local(&tansu, dir.path());
    let port = broker.listen().port();
    create_topics(&broker.listen().to_string());
    let (runtime, mut client, snapshot) = broker.client_when(has_all_topics);
    eprintln!(
        "tansu snapshot: negotiated {:?}; cluster {:?}, controller {:?}, brokers {:?}, \
         default min ISR {:?}",
        client.negotiated(),
        snapshot.cluster_id,
        snapshot.controller_id,
        snapshot.brokers,
        snapshot.default_min_isr
    );

    assert_eq!(snapshot.brokers.len(), 1, "{:?}", snapshot.brokers);
    let me = &snapshot.brokers[0];
    assert_eq!((me.host.as_str(), me.port), ("127.0.0.1", i32::from(port)));
    assert!(
        snapshot
            .cluster_id
            .as_deref()
            .is_some_and(|c| !c.is_empty())
    );
    assert!(
        snapshot.controller_id.is_none_or(|c| c == me.id),
        "controller {:?} is not the only broker {}",
        snapshot.controller_id,
        me.id
    );

    for (name, partitions, _, explicit) in TOPICS {
        let topic = snapshot
            .topics
            .iter()
            .find(|t| t.name == name)
            .expect("topic");
        assert!(!topic.internal, "{name}");
        let indices: Vec<i32> = topic.partitions.iter().map(|p| p.index).collect();
        assert_eq!(indices, (0..partitions).collect::<Vec<_>>(), "{name}");
        for p in &topic.partitions {
            assert_eq!(p.leader, me.id, "{name}-{}", p.index);
            assert_eq!(p.replicas, [me.id], "{name}-{}", p.index);
            assert_eq!(p.isr, [me.id], "{name}-{}", p.index);
            assert!(p.offline_replicas.is_empty(), "{name}-{}", p.index);
        }
        match explicit {
            // tansu reports only configs set on the topic: none here, so the effective
            // min ISR is the broker default (tansu reports none: Kafka's 1).
            None => {
                assert_eq!(topic.min_isr, None, "{name}");
                assert_eq!(
                    snapshot.min_isr(topic),
                    snapshot.default_min_isr.unwrap_or(1),
                    "{name}"
                );
            }
            // Set at creation: reported back as the topic's own value (tansu labels it
            // DEFAULT_CONFIG, which the client reads as the topic's own).
            Some(v) => {
                let v: i32 = v.parse().expect("int");
                assert_eq!(topic.min_isr, Some(v), "{name}");
                assert_eq!(snapshot.min_isr(topic), v, "{name}");
            }
        }
    }
    assert_eq!(
        snapshot.default_min_isr, None,
        "tansu reports no broker configs"
    );

    // The connection is reused for the next snapshot.
    let again = runtime
        .block_on(client.snapshot())
        .expect("second snapshot");
    assert_eq!(again.topics.len(), snapshot.topics.len());
    drop(broker);
}
