//! What tansu (a real Kafka-compatible broker, `scripts/install-tansu`; a single broker,
//! node id 111) implements of the rack executor's admin APIs. Recorded for tansu 0.6:
//! - ListPartitionReassignments v0: answered, listing every partition as a reassignment
//!   adding and removing nothing (the client leaves those out: Kafka never reports one);
//! - AlterPartitionReassignments and ElectLeaders: not offered, so `racks apply` stops
//!   before changing anything, `--throttle` or not;
//! - IncrementalAlterConfigs v1: SET on a topic accepted, and DescribeConfigs reports the
//!   value (as a default); APPEND, which apply uses for the throttled-replica lists, makes
//!   tansu panic and poison its storage.
//!
//! A tansu upgrade that changes any of it fails here, so the docs (DESIGN, "Racks: the
//! executor") follow. Without tansu the test explains why and passes, unless
//! `KPOOL_REQUIRE_TANSU=1`, when it fails.

use std::process::Command;

use kpool_agent::kafka::{ConfigAlteration, ConfigOp, ConfigResource, KafkaError, Reassignment};
use kpool_testkit::tansu::{self, NODE_ID, Tansu};

const CREATE_TOPIC: &str = r#"
import sys
from confluent_kafka.admin import AdminClient, NewTopic
admin = AdminClient({"bootstrap.servers": sys.argv[1], "broker.address.family": "v4"})
for name, future in admin.create_topics([NewTopic("moving", num_partitions=1, replication_factor=1)], request_timeout=20).items():
    future.result(timeout=30)
"#;

/// What a request got, for the log.
fn outcome<T: std::fmt::Debug>(r: &Result<T, KafkaError>) -> String {
    match r {
        Ok(v) => format!("ok: {v:?}"),
        Err(e) => format!("error: {e}"),
    }
}

#[test]
fn what_tansu_implements_of_the_executors_apis() {
    let Some(tansu) = tansu::available() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Tansu::start_local(&tansu, dir.path());
    let bootstrap = broker.listen().to_string();
    let out = Command::new("python3")
        .args(["-c", CREATE_TOPIC, &bootstrap])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "creating the topic failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (runtime, mut client, _) =
        broker.client_when(|s| s.topics.iter().any(|t| t.name == "moving"));
    let v = client.negotiated().expect("connected");
    let offered = (
        v.list_reassignments,
        v.alter_reassignments,
        v.incremental_alter_configs,
        v.elect_leaders,
    );
    eprintln!("tansu offers (list, alter, configs, elect): {offered:?}");
    assert_eq!(
        offered,
        (Some(0), None, Some(1), None),
        "what tansu 0.6 offers of ListPartitionReassignments, AlterPartitionReassignments, \
         IncrementalAlterConfigs, ElectLeaders changed: update this test and DESIGN's racks \
         section"
    );

    // ListPartitionReassignments answers, listing every partition as a "reassignment"
    // adding and removing nothing, which the client leaves out.
    let list = runtime.block_on(client.list_partition_reassignments());
    eprintln!("tansu ListPartitionReassignments: {}", outcome(&list));
    assert_eq!(list.expect("answered"), []);

    // AlterPartitionReassignments and ElectLeaders are not offered.
    let alter = runtime.block_on(client.alter_partition_reassignments(&[Reassignment {
        topic: "moving".into(),
        partition: 0,
        replicas: Some(vec![NODE_ID]),
    }]));
    let elect = runtime.block_on(client.elect_preferred_leaders(&[("moving".into(), 0)]));
    for (api, result) in [
        ("AlterPartitionReassignments", outcome(&alter)),
        ("ElectLeaders", outcome(&elect)),
    ] {
        eprintln!("tansu {api}: {result}");
        assert!(
            result.contains(&format!("does not support {api}")),
            "{api}: {result}"
        );
    }

    // So racks apply stops before changing anything, even with --throttle.
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = dir.path().join("plan.json");
    std::fs::write(
        &plan,
        format!(r#"{{"version":1,"partitions":[{{"topic":"moving","partition":0,"replicas":[{NODE_ID}]}}]}}"#),
    )
    .expect("plan");
    let out = Command::new(env!("CARGO_BIN_EXE_kpool-agent"))
        .args(["racks", "apply", "-f"])
        .arg(&plan)
        .args(["--kafka-bootstrap", &bootstrap, "--throttle", "1MiB"])
        .env_remove("KPOOL_POLICY")
        .env("KPOOL_LOG", "error")
        .output()
        .expect("kpool-agent");
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("tansu racks apply: {err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("does not offer AlterPartitionReassignments")
            && err.contains("nothing was changed"),
        "{err}"
    );

    // IncrementalAlterConfigs SET on a topic is accepted and reads back.
    let set = runtime.block_on(client.alter_configs(&[ConfigAlteration {
        resource: ConfigResource::Topic("moving".into()),
        changes: vec![(
            "leader.replication.throttled.replicas".into(),
            ConfigOp::Set(format!("0:{NODE_ID}")),
        )],
    }]));
    eprintln!("tansu IncrementalAlterConfigs SET: {}", outcome(&set));
    assert!(set.expect("answered").iter().all(|o| o.error.is_none()));
    let read = runtime.block_on(client.describe_configs(
        &[ConfigResource::Topic("moving".into())],
        &["leader.replication.throttled.replicas"],
    ));
    eprintln!("tansu DescribeConfigs after SET: {}", outcome(&read));
    let read = read.expect("answered");
    let value = read[0]
        .1
        .as_ref()
        .ok()
        .and_then(|c| c.get("leader.replication.throttled.replicas"));
    assert_eq!(
        value.map(String::as_str),
        Some(format!("0:{NODE_ID}").as_str()),
        "tansu reports the value it was set to (as a default)"
    );

    // APPEND, which apply uses for the throttled-replica lists, makes tansu 0.6 panic
    // (its storage lock is poisoned and every later request fails): last, on purpose.
    let append = runtime.block_on(client.alter_configs(&[ConfigAlteration {
        resource: ConfigResource::Topic("moving".into()),
        changes: vec![(
            "leader.replication.throttled.replicas".into(),
            ConfigOp::Append(format!("0:{NODE_ID}")),
        )],
    }]));
    eprintln!("tansu IncrementalAlterConfigs APPEND: {}", outcome(&append));
    assert!(
        matches!(append, Err(KafkaError::Closed { .. })),
        "tansu answered APPEND ({}): update this test and DESIGN's racks section",
        outcome(&append)
    );
}
