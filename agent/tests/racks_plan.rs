//! `kpool-agent racks plan` as a script meets it: exit codes, the kafka-reassign-partitions
//! JSON on stdout, the summary on stderr, errors naming the JSON path of a bad field; from a
//! `--from` file and from the scripted Kafka-protocol server's Metadata.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use kpool_testkit::kafka_server::{ClusterState, RACKS, TestKafka};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_kpool-agent");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("KPOOL_POLICY")
        .env("KPOOL_LOG", "warn")
        .output()
        .expect("kpool-agent runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes `doc` to a file in `dir` and runs `racks plan --from` it with `extra` flags.
fn plan_from(dir: &Path, doc: &Value, extra: &[&str]) -> Output {
    let path = dir.join("cluster.json");
    std::fs::write(&path, doc.to_string()).expect("write");
    let mut args = vec!["racks", "plan", "--from", path.to_str().expect("utf-8")];
    args.extend_from_slice(extra);
    run(&args)
}

/// 2 clusters x 3 zones, two brokers per cell: ids 0-5 in k8s-a, 100-105 in k8s-b; broker
/// `base + i` is in zone `i % 3`.
fn brokers() -> Vec<Value> {
    let mut v = Vec::new();
    for (base, cluster) in [(0, "k8s-a"), (100, "k8s-b")] {
        for i in 0..6 {
            let zone = ["eu-west-1a", "eu-west-1b", "eu-west-1c"][i % 3];
            v.push(json!({"id": base + i, "rack": format!("{cluster}-{zone}"), "alive": true}));
        }
    }
    v
}

fn rack_of(doc: &Value) -> BTreeMap<i64, (String, bool)> {
    doc["brokers"]
        .as_array()
        .expect("brokers")
        .iter()
        .map(|b| {
            (
                b["id"].as_i64().expect("id"),
                (
                    b["rack"].as_str().unwrap_or("").to_owned(),
                    b["alive"].as_bool().unwrap_or(true),
                ),
            )
        })
        .collect()
}

/// 3 replicas per cluster and 2 per zone, all on live brokers, no duplicates.
fn balanced(replicas: &[i64], racks: &BTreeMap<i64, (String, bool)>) -> bool {
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for (i, r) in replicas.iter().enumerate() {
        let Some((rack, true)) = racks.get(r) else {
            return false;
        };
        if replicas[..i].contains(r) {
            return false;
        }
        let (cluster, zone) = rack.split_at(5);
        *per.entry(cluster.to_owned()).or_default() += 1;
        *per.entry(zone.to_owned()).or_default() += 1;
    }
    replicas.len() == 6
        && per.len() == 5
        && per
            .iter()
            .all(|(k, n)| *n == if k.starts_with("k8s") { 3 } else { 2 })
}

/// The reassignment JSON's partitions, checked for kafka-reassign-partitions' shape.
fn reassignment(o: &Output) -> Vec<(String, i64, Vec<i64>)> {
    let doc: Value = serde_json::from_str(&stdout(o)).expect("stdout is JSON");
    assert_eq!(doc["version"], 1, "{doc}");
    assert_eq!(doc.as_object().expect("object").len(), 2, "{doc}");
    doc["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| {
            assert_eq!(p.as_object().expect("object").len(), 4, "{p}");
            let replicas: Vec<i64> = p["replicas"]
                .as_array()
                .expect("replicas")
                .iter()
                .map(|r| r.as_i64().expect("id"))
                .collect();
            let dirs = p["log_dirs"].as_array().expect("log_dirs");
            assert_eq!(dirs.len(), replicas.len(), "{p}");
            assert!(dirs.iter().all(|d| d == "any"), "{p}");
            (
                p["topic"].as_str().expect("topic").to_owned(),
                p["partition"].as_i64().expect("partition"),
                replicas,
            )
        })
        .collect()
}

#[test]
fn a_balanced_cluster_exits_0_with_an_empty_plan() {
    let dir = tempfile::tempdir().expect("dir");
    let doc = json!({"brokers": brokers(), "partitions": [
        {"topic": "t", "partition": 0, "replicas": [0, 1, 2, 100, 101, 102]},
        {"topic": "t", "partition": 1, "replicas": [104, 3, 5, 103, 4, 105]},
    ]});
    let out = plan_from(dir.path(), &doc, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "{\"version\":1,\"partitions\":[]}\n");
    assert!(
        stderr(&out).contains("2 partitions checked") && stderr(&out).contains("0 offenders"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn offenders_exit_2_with_a_reassignment_that_balances_them() {
    let dir = tempfile::tempdir().expect("dir");
    let mut b = brokers();
    b[4]["alive"] = json!(false); // broker 4 (k8s-a, eu-west-1b) is down
    let doc = json!({"brokers": b, "partitions": [
        {"topic": "ok", "partition": 0, "replicas": [0, 1, 2, 100, 101, 102]},
        // two replicas in k8s-a/eu-west-1a, none in k8s-a/eu-west-1c: one move
        {"topic": "skew", "partition": 0, "replicas": [0, 3, 1, 100, 101, 102]},
        // four replicas in k8s-a: one move out of it
        {"topic": "skew", "partition": 1, "replicas": [3, 1, 2, 0, 101, 102]},
        // a replica on the dead broker leads: it moves, and first
        {"topic": "dead", "partition": 0, "replicas": [4, 0, 2, 100, 101, 102]},
    ]});
    let racks = rack_of(&doc);
    let out = plan_from(dir.path(), &doc, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let plan = reassignment(&out);
    let names: Vec<(&str, i64)> = plan.iter().map(|(t, p, _)| (t.as_str(), *p)).collect();
    assert_eq!(
        names,
        [("dead", 0), ("skew", 0), ("skew", 1)],
        "offline first"
    );
    for (topic, partition, replicas) in &plan {
        assert!(
            balanced(replicas, &racks),
            "{topic}-{partition}: {replicas:?}"
        );
    }
    assert_eq!(
        plan[0].2[0], 0,
        "the dead leader's place goes to a replica that stayed"
    );
    assert_eq!(plan[1].2[0], 0, "the leader stays first");
    assert_eq!(plan[2].2[0], 3, "the leader stays first");
    let err = stderr(&out);
    assert!(
        err.contains("4 partitions checked")
            && err.contains("3 offenders: 3 planned with 3 moves (1 replacing replicas on dead or unknown brokers), 0 infeasible"),
        "{err}"
    );
}

#[test]
fn infeasible_partitions_exit_3_named_with_the_reason_and_the_rest_is_planned() {
    let dir = tempfile::tempdir().expect("dir");
    let mut b = brokers();
    // zone eu-west-1c: only broker 105 is alive (2, 5 and 102 are down)
    for i in [2, 5, 8] {
        b[i]["alive"] = json!(false);
    }
    let doc = json!({"brokers": b, "partitions": [
        {"topic": "t", "partition": 0, "replicas": [0, 1, 2, 100, 101, 102]},
        // RF 4: 2 per cluster, 1 or 2 per zone, no zone needs eu-west-1c
        {"topic": "t4", "partition": 0, "replicas": [0, 3, 100, 101]},
    ]});
    let out = plan_from(dir.path(), &doc, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let plan = reassignment(&out);
    assert_eq!(plan.len(), 1, "{plan:?}");
    assert_eq!((plan[0].0.as_str(), plan[0].2.len()), ("t4", 4));
    let err = stderr(&out);
    assert!(
        err.contains(
            "infeasible, 1 partitions: zone eu-west-1c has 1 live broker, the rule needs 2 replicas there (RF 6 over 3 zones): t-0"
        ),
        "{err}"
    );
}

#[test]
fn bad_fields_are_named_by_their_json_path() {
    let dir = tempfile::tempdir().expect("dir");
    let part = |replicas: Value| json!({"topic": "t", "partition": 0, "replicas": replicas});
    let mut dup = brokers();
    dup[3]["id"] = json!(1);
    let mut bad_rack = brokers();
    bad_rack[2]["rack"] = json!("k8s-a-mars-1a");
    let cases = [
        (
            json!({"brokers": brokers(), "partitions": [part(json!([0, 1, 2, 100, 101, 102])), {"topic": "t", "partition": 1, "replicas": [0]}, {"topic": "t", "partition": 2, "replicas": [0]}, {"topic": "u", "partition": 0, "replicas": [0, 99]}]}),
            "partitions[3].replicas[1]: broker 99 is not in brokers",
        ),
        (
            json!({"brokers": brokers(), "partitions": [part(json!([0, 1, 0]))]}),
            "partitions[0].replicas[2]: broker 0 is listed twice (also replicas[0])",
        ),
        (
            json!({"brokers": brokers(), "partitions": [part(json!([0, "1"]))]}),
            "partitions[0].replicas[1]: invalid type: string \"1\", expected i32",
        ),
        (
            json!({"brokers": brokers(), "partitions": [{"topic": "t", "partition": 0, "replica": [0]}]}),
            "partitions[0].replica: unknown field `replica`",
        ),
        (
            json!({"brokers": dup, "partitions": []}),
            "brokers[3].id: broker 1 is listed twice (also brokers[1])",
        ),
        (
            json!({"brokers": bad_rack, "partitions": []}),
            "brokers[2].rack: \"k8s-a-mars-1a\" does not parse with the policy's rackFormat \"{cluster}-{zone}\"",
        ),
        (
            json!({"brokers": brokers(), "partitions": [part(json!([])) ]}),
            "partitions[0].replicas: expected at least one replica, found none",
        ),
        (
            json!({"brokers": brokers(), "partitions": [part(json!([0])), part(json!([1]))]}),
            "partitions[1]: t-0 is listed twice (also partitions[0])",
        ),
    ];
    for (doc, want) in cases {
        let out = plan_from(dir.path(), &doc, &[]);
        assert_eq!(out.status.code(), Some(1), "{want}: {}", stderr(&out));
        assert_eq!(stdout(&out), "", "{want}");
        let err = stderr(&out);
        assert!(
            err.starts_with("kpool-agent: error: ")
                && err.contains("cluster.json: ")
                && err.contains(want),
            "want {want:?}, got {err}"
        );
    }
}

#[test]
fn max_moves_plans_whole_partitions_and_says_what_it_left_out() {
    let dir = tempfile::tempdir().expect("dir");
    let doc = json!({"brokers": brokers(), "partitions": [
        {"topic": "t", "partition": 0, "replicas": [0, 3, 1, 4, 101, 104]},   // 2 moves
        {"topic": "t", "partition": 1, "replicas": [0, 3, 1, 100, 101, 102]}, // 1 move
        {"topic": "t", "partition": 2, "replicas": [0, 3, 1, 100, 101, 102]}, // 1 move
    ]});
    let out = plan_from(dir.path(), &doc, &["--max-moves", "2"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let plan = reassignment(&out);
    assert_eq!(
        plan.iter().map(|p| p.1).collect::<Vec<_>>(),
        [0],
        "{plan:?}"
    );
    let out = plan_from(dir.path(), &doc, &["--max-moves", "1"]);
    assert_eq!(
        reassignment(&out).iter().map(|p| p.1).collect::<Vec<_>>(),
        [1]
    );
    assert!(
        stderr(&out).contains("--max-moves 1 left out 2 partitions (3 moves)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn topics_select_whole_names() {
    let dir = tempfile::tempdir().expect("dir");
    let skew = json!([0, 3, 1, 100, 101, 102]);
    let doc = json!({"brokers": brokers(), "partitions": [
        {"topic": "orders", "partition": 0, "replicas": skew},
        {"topic": "orders-dlq", "partition": 0, "replicas": skew},
        {"topic": "payments", "partition": 0, "replicas": skew},
    ]});
    let out = plan_from(dir.path(), &doc, &["--topics", "orders|pay.*"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let topics: Vec<String> = reassignment(&out).into_iter().map(|p| p.0).collect();
    assert_eq!(topics, ["orders", "payments"]);
    assert!(
        stderr(&out).contains("2 partitions checked (topics matching"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn usage_errors_exit_1_not_2() {
    for args in [
        &["racks", "plan"][..],
        &[
            "racks",
            "plan",
            "--from",
            "x.json",
            "--kafka-bootstrap",
            "k:9092",
        ],
        &["racks", "plan", "--from", "x.json", "--max-moves", "many"],
        &["racks", "plan", "--from", "x.json", "--topics", "("],
        &["racks"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), "", "{args:?}");
    }
    let out = run(&["racks", "plan", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains("Exit codes:\n  0  nothing to do"),
        "{}",
        stdout(&out)
    );
    let out = run(&["racks", "plan", "--from", "/nonexistent/cluster.json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("/nonexistent/cluster.json: cannot read"),
        "{}",
        stderr(&out)
    );
}

/// From Metadata: brokers with racks, partitions with replicas and leaders; a broker gone
/// from Metadata holds offline replicas; a partition mid-reassignment is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_bootstrap_plans_from_metadata() {
    // 12 brokers, broker i in RACKS[i % 6]; partition p of "orders" on p..p+5: balanced.
    let state = ClusterState::healthy(12, &RACKS, &[("orders", 8, 6), ("other", 2, 6)])
        // 0 and 6 share k8s-a-eu-west-1a, k8s-b-eu-west-1a is missing
        .assign("orders", 1, &[0, 6, 1, 2, 4, 5])
        .assign("other", 0, &[0, 6, 1, 2, 4, 5])
        .reassigning("orders", 3, &[9])
        // the leader of orders-1 is its second replica
        .set_isr("orders", 1, &[6, 1, 2, 4, 5])
        .broker_down(11);
    let led: BTreeMap<i32, i32> = state.topics[0]
        .partitions
        .iter()
        .map(|p| (p.index, p.leader))
        .collect();
    let kafka = TestKafka::start(state).await;
    let bootstrap = kafka.bootstrap();
    let out = tokio::task::spawn_blocking(move || {
        run(&[
            "racks",
            "plan",
            "--kafka-bootstrap",
            &bootstrap,
            "--topics",
            "orders",
        ])
    })
    .await
    .expect("join");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let racks: BTreeMap<i64, (String, bool)> = (0..12)
        .map(|i| (i64::from(i), (RACKS[i as usize % 6].to_owned(), i != 11)))
        .collect();
    let plan = reassignment(&out);
    // orders-p holds broker 11 for p in 6..=7 (p..p+5 mod 12); p 3 is mid-reassignment
    let names: Vec<i64> = plan.iter().map(|p| p.1).collect();
    assert_eq!(
        names,
        [6, 7, 1],
        "offline first, then the skewed one: {plan:?}"
    );
    for (topic, partition, replicas) in &plan {
        assert_eq!(topic, "orders");
        assert!(balanced(replicas, &racks), "{partition}: {replicas:?}");
        let leader = i64::from(led[&i32::try_from(*partition).expect("small")]);
        assert_eq!(
            replicas[0], leader,
            "orders-{partition} keeps its leader first"
        );
    }
    let err = stderr(&out);
    assert!(
        err.contains("7 partitions checked")
            && err.contains("3 offenders: 3 planned with 3 moves (2 replacing"),
        "{err}"
    );
    assert!(
        err.contains("a reassignment is in progress: orders-3"),
        "{err}"
    );
}
