//! The rack executor against the scripted Kafka-protocol server playing a KRaft controller
//! (reassignments catch up after a few polls): plan → apply heals a skewed cluster until a
//! re-plan finds nothing, leaders first; batches keep to --max-per-broker; throttles are set
//! before moves and cleared as brokers finish; a broker dying mid-move pauses new moves
//! until it returns; NOT_CONTROLLER is retried; someone else's reassignment is left alone;
//! a run dropped mid-way and started again adopts what is in flight and submits nothing
//! twice; status and cancel; the CLI's exit codes and errors.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use kpool_agent::racks::apply::{ApplyConfig, ApplyReport, ApplyStatus, apply};
use kpool_agent::racks::execute::{ExecOptions, LeftAlone, Move};
use kpool_agent::racks::input;
use kpool_agent::racks::plan::{Layout, Plan, PlanOptions, plan};
use kpool_policy::Policy;
use kpool_testkit::kafka_server::{ApiKey, CatchUp, ClusterState, RACKS, TestKafka, closed_addr};

const BIN: &str = env!("CARGO_BIN_EXE_kpool-agent");

/// Starts the server with every broker advertised at its address (so requests meant for
/// a broker reach it, and it answers config requests for every broker id).
async fn start_reachable(state: ClusterState) -> TestKafka {
    let server = TestKafka::start(state).await;
    server.update_state(|s| s.advertise_all(server.addr()));
    server
}

/// Eight partitions of RF 3 (`wide-p` on p, p+1, p+2), for hand-written moves.
fn wide() -> ClusterState {
    ClusterState::healthy(12, &RACKS, &[("wide", 8, 3)])
        .catch_up(CatchUp::Polls(2))
        .advertise_unreachable(closed_addr())
}

/// `wide-p` moves its last replica (p+2) to broker 11: every move adds a replica to 11.
fn onto_eleven() -> Vec<Move> {
    (0..8)
        .map(|p| Move {
            topic: "wide".into(),
            partition: p,
            from: None,
            to: vec![p, p + 1, 11],
        })
        .collect()
}

fn fast(options: ExecOptions) -> ApplyConfig {
    ApplyConfig {
        options,
        interval: Duration::from_millis(10),
        timeout: Some(Duration::from_secs(30)),
        progress_every: Duration::from_secs(60),
    }
}

/// Runs the executor to its end; returns its report and progress lines.
async fn run(server: &TestKafka, moves: Vec<Move>, config: ApplyConfig) -> (ApplyReport, String) {
    let policy = Policy::builtin().expect("policy");
    let mut c = server.client();
    let mut progress = Vec::new();
    let report = apply(&mut c, &policy, moves, &config, &mut progress)
        .await
        .expect("apply");
    (report, String::from_utf8_lossy(&progress).into_owned())
}

/// The planner over what the cluster says now.
async fn replan(server: &TestKafka) -> Plan {
    let policy = Policy::builtin().expect("policy");
    let snapshot = server.client().snapshot().await.expect("snapshot");
    let inputs = input::from_snapshot(&snapshot);
    let layout = Layout::new(&policy, &inputs.brokers, None);
    plan(&layout, &inputs.partitions, &PlanOptions::default())
}

fn count(server: &TestKafka, api: ApiKey) -> usize {
    server.requests().iter().filter(|r| r.api == api).count()
}

/// Every partition's leader is its first replica, nothing is in flight, no config is set.
fn assert_settled(state: &ClusterState) {
    for t in &state.topics {
        for p in &t.partitions {
            assert_eq!(
                Some(p.leader),
                p.replicas.first().copied(),
                "{}-{}: leader first ({p:?})",
                t.name,
                p.index
            );
            assert!(!p.reassigning(), "{}-{} still moving", t.name, p.index);
        }
    }
    assert!(
        state.configs.is_empty(),
        "every throttle cleared: {:?}",
        state.configs
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_keep_to_max_per_broker() {
    let server = TestKafka::start(wide()).await;
    let (report, _) = run(
        &server,
        onto_eleven(),
        fast(ExecOptions {
            max_per_broker: 2,
            throttle: None,
        }),
    )
    .await;
    assert_eq!(report.status, ApplyStatus::Done, "{report:?}");
    assert_eq!(report.counts.done, 8);
    let state = server.state();
    assert_eq!(
        state.peak_in_flight.get(&11),
        Some(&2),
        "never more than two moves into broker 11: {:?}",
        state.peak_in_flight
    );
    assert!(state.peak_in_flight.values().all(|&n| n <= 2));
    assert!(
        count(&server, ApiKey::AlterPartitionReassignments) >= 4,
        "eight moves in batches of two"
    );
    for p in 0..8 {
        let got = state.partition("wide", p).expect("partition");
        assert_eq!(got.replicas, [p, p + 1, 11]);
    }
    assert_settled(&state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttles_are_set_before_moves_and_cleared_as_brokers_finish() {
    let server = start_reachable(wide()).await;
    let (report, _) = run(
        &server,
        onto_eleven()[..3].to_vec(),
        fast(ExecOptions {
            max_per_broker: 1,
            throttle: Some(1_048_576),
        }),
    )
    .await;
    assert_eq!(report.status, ApplyStatus::Done, "{report:?}");
    let seen = server.requests();
    let first_move = seen
        .iter()
        .position(|r| r.api == ApiKey::AlterPartitionReassignments)
        .expect("a move");
    let first = &seen[first_move].reassignments;
    assert_eq!(first, &[("wide".to_owned(), 0, Some(vec![0, 1, 11]))]);
    // Before it: the rates on its brokers and its replicas in the lists.
    let before: Vec<(String, String, i8, Option<String>)> = seen[..first_move]
        .iter()
        .flat_map(|r| &r.config_changes)
        .map(|c| (c.resource.clone(), c.name.clone(), c.op, c.value.clone()))
        .collect();
    for b in [0, 1, 2, 11] {
        for rate in [
            "leader.replication.throttled.rate",
            "follower.replication.throttled.rate",
        ] {
            assert!(
                before.contains(&(
                    format!("broker {b}"),
                    rate.into(),
                    0,
                    Some("1048576".into())
                )),
                "{rate} on broker {b} before the move: {before:?}"
            );
        }
    }
    assert!(before.contains(&(
        "topic wide".into(),
        "leader.replication.throttled.replicas".into(),
        2,
        Some("0:0,0:1,0:2".into())
    )));
    assert!(before.contains(&(
        "topic wide".into(),
        "follower.replication.throttled.replicas".into(),
        2,
        Some("0:11".into())
    )));
    // Broker 0 is in the first move only: its rates go while later moves run.
    let last_move = seen
        .iter()
        .rposition(|r| r.api == ApiKey::AlterPartitionReassignments)
        .expect("moves");
    let cleared_0 = seen
        .iter()
        .position(|r| {
            r.config_changes
                .iter()
                .any(|c| c.resource == "broker 0" && c.op == 1)
        })
        .expect("broker 0 cleared");
    assert!(
        cleared_0 < last_move,
        "broker 0's rates cleared (request {cleared_0}) before the last move was submitted \
         (request {last_move})"
    );
    assert_settled(&server.state());
}

/// A broker dies while a move is in flight: partitions under min ISR, no new move starts
/// until it is back; then the rest go, and the partition it led gets its preferred leader
/// back by election.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_dying_mid_move_pauses_new_moves_until_it_returns() {
    let state = wide().topic_min_isr("wide", 3).catch_up(CatchUp::Polls(3));
    let server = TestKafka::start(state).await;
    let policy = Policy::builtin().expect("policy");
    let mut c = server.client();
    let config = fast(ExecOptions {
        max_per_broker: 1,
        throttle: None,
    });
    let mut progress = Vec::new();
    let run = apply(&mut c, &policy, onto_eleven(), &config, &mut progress);
    let control = async {
        // wide-0 [0, 1, 2] is moving to [0, 1, 11]: kill its leader.
        while count(&server, ApiKey::AlterPartitionReassignments) == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        server.update_state(|s| s.broker_down(0));
        // Let the executor see it, then count what it submits over the next polls.
        wait_polls(&server, 3).await;
        let submitted = count(&server, ApiKey::AlterPartitionReassignments);
        wait_polls(&server, 15).await;
        let still = count(&server, ApiKey::AlterPartitionReassignments);
        let down = server.state();
        server.update_state(|s| s.broker_up(0));
        (submitted, still, down)
    };
    let (report, (submitted, still, down)) = tokio::join!(run, control);
    let report = report.expect("apply");
    assert_eq!(
        submitted, still,
        "no move submitted while broker 0 was down"
    );
    let wide0 = down.partition("wide", 0).expect("wide-0");
    assert_eq!(wide0.leader, 1, "broker 0 led wide-0; 1 took over");
    let progress = String::from_utf8_lossy(&progress);
    assert!(
        progress.contains("paused, no new moves while") && progress.contains("under min ISR"),
        "{progress}"
    );
    assert_eq!(report.status, ApplyStatus::Done, "{report:?}\n{progress}");
    assert_eq!(report.counts.done, 8);
    assert!(report.elected >= 1, "wide-0's leader is back by election");
    assert_settled(&server.state());
}

/// Waits until the client has sent `n` more Metadata requests (one per poll).
async fn wait_polls(server: &TestKafka, n: usize) {
    let start = count(server, ApiKey::Metadata);
    while count(server, ApiKey::Metadata) < start + n {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_controller_answers_are_retried() {
    let server = TestKafka::start(wide().not_controller_for(4)).await;
    let (report, _) = run(
        &server,
        onto_eleven()[..2].to_vec(),
        fast(ExecOptions::default()),
    )
    .await;
    assert_eq!(report.status, ApplyStatus::Done, "{report:?}");
    let state = server.state();
    assert_eq!(
        state.not_controller, 0,
        "all four NOT_CONTROLLER answers were met"
    );
    assert_settled(&state);
}

/// The executor is dropped while moves are in flight (a crash), then started again from
/// the same plan file (no `from`): what is in flight is adopted, nothing is submitted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_run_after_a_crash_adopts_and_submits_nothing_twice() {
    let server = TestKafka::start(wide().catch_up(CatchUp::Polls(6))).await;
    let config = fast(ExecOptions {
        max_per_broker: 3,
        throttle: Some(1_000_000),
    });
    {
        let policy = Policy::builtin().expect("policy");
        let mut c = server.client();
        let mut progress = Vec::new();
        let run = apply(&mut c, &policy, onto_eleven(), &config, &mut progress);
        let crash = async {
            while count(&server, ApiKey::AlterPartitionReassignments) == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        tokio::select! {
            r = run => panic!("finished before the crash: {r:?}"),
            () = crash => {}
        }
    }
    let in_flight = server
        .state()
        .topics
        .iter()
        .flat_map(|t| &t.partitions)
        .filter(|p| p.reassigning())
        .count();
    assert_eq!(in_flight, 3, "the crash left three moves in flight");
    let (report, progress) = run(&server, onto_eleven(), config).await;
    assert_eq!(report.status, ApplyStatus::Done, "{report:?}");
    assert_eq!(report.counts.adopted, 3, "{progress}");
    assert!(
        progress.contains("(3 adopted from an earlier run)"),
        "{progress}"
    );
    let mut submissions: BTreeMap<i32, usize> = BTreeMap::new();
    for r in server.requests() {
        for (_, p, target) in &r.reassignments {
            assert!(target.is_some(), "nothing cancelled");
            *submissions.entry(*p).or_default() += 1;
        }
    }
    assert_eq!(
        submissions,
        (0..8).map(|p| (p, 1)).collect::<BTreeMap<_, _>>(),
        "each move submitted exactly once over both runs"
    );
    assert_settled(&server.state());
}

/// A cluster that cannot reassign (like tansu) is told so before any throttle is set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_without_the_apis_is_refused_before_anything_changes() {
    let state = wide().without_api(ApiKey::AlterPartitionReassignments);
    let server = TestKafka::start(state).await;
    let policy = Policy::builtin().expect("policy");
    let mut c = server.client();
    let mut progress = Vec::new();
    let config = fast(ExecOptions {
        max_per_broker: 5,
        throttle: Some(1000),
    });
    let err = apply(&mut c, &policy, onto_eleven(), &config, &mut progress)
        .await
        .expect_err("refused");
    assert!(
        err.to_string().contains(
            "does not offer AlterPartitionReassignments (not in its ApiVersions), which racks \
             apply needs; nothing was changed"
        ),
        "{err}"
    );
    assert_eq!(count(&server, ApiKey::IncrementalAlterConfigs), 0);
}

// ------------------------------------------------------------------ the command line

fn cli(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("KPOOL_POLICY")
        .env_remove("KPOOL_KAFKA_BOOTSTRAP")
        .env_remove("KPOOL_KAFKA_TIMEOUT")
        .env_remove("KPOOL_RACKS_PLAN")
        .env_remove("KPOOL_RACKS_THROTTLE")
        .env_remove("KPOOL_RACKS_MAX_PER_BROKER")
        .env_remove("KPOOL_RACKS_TIMEOUT")
        .env_remove("KPOOL_RACKS_POLL_INTERVAL")
        .env("KPOOL_LOG", "warn")
        .output()
        .expect("kpool-agent runs")
}

async fn cli_async(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&args)
    })
    .await
    .expect("join")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// From offenders to a healed cluster through the binary: `racks plan` writes the plan,
/// `racks apply -f` carries it out with a throttle, `racks plan` then finds nothing, every
/// leader is its partition's first replica and no throttle is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_then_apply_heals_the_cluster() {
    let server = start_reachable(ClusterState::skewed()).await;
    let bootstrap = server.bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let plan_path = dir.path().join("plan.json");
    let out = cli_async(args(&["racks", "plan", "--kafka-bootstrap", &bootstrap])).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    std::fs::write(&plan_path, stdout(&out)).expect("write plan");
    let planned: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(planned["partitions"].as_array().map(Vec::len), Some(3));

    let out = cli_async(args(&[
        "racks",
        "apply",
        "-f",
        plan_path.to_str().expect("utf-8"),
        "--kafka-bootstrap",
        &bootstrap,
        "--throttle",
        "10MiB/s",
        "--poll-interval",
        "10ms",
        "--timeout",
        "60s",
    ]))
    .await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("racks apply: 3/3 done"), "{err}");
    assert!(err.contains("racks apply: finished in"), "{err}");
    assert_eq!(stdout(&out), "", "apply prints nothing on stdout");

    let again = replan(&server).await;
    assert_eq!(
        again.summary.offenders, 0,
        "re-plan finds nothing: {again:?}"
    );
    let out = cli_async(args(&["racks", "plan", "--kafka-bootstrap", &bootstrap])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_settled(&server.state());
    let out = cli_async(args(&["racks", "status", "--kafka-bootstrap", &bootstrap])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

/// Someone else's reassignment of a partition of the plan: left alone (not submitted,
/// not cancelled), named with the reason, exit 4; the rest is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn someone_elses_reassignment_is_left_alone() {
    // wide-2 [2, 3, 4] is being moved by someone else, adding 9 (stuck).
    let server = TestKafka::start(wide().reassigning("wide", 2, &[9])).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = dir.path().join("plan.json");
    write_plan(&plan, &onto_eleven()[..4]);
    let out = cli_async(args(&[
        "racks",
        "apply",
        "-f",
        plan.to_str().expect("utf-8"),
        "--kafka-bootstrap",
        &server.bootstrap(),
        "--poll-interval",
        "10ms",
    ]))
    .await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains(
            "racks apply: left alone wide-2: another reassignment is in flight, toward [2, 3, 4, 9]"
        ),
        "{err}"
    );
    assert!(
        server
            .requests()
            .iter()
            .flat_map(|r| &r.reassignments)
            .all(|(_, p, _)| *p != 2),
        "wide-2 never touched"
    );
    let state = server.state();
    assert_eq!(
        state
            .partition("wide", 2)
            .map(|p| p.adding_replicas.clone()),
        Some(vec![9])
    );
    for p in [0, 1, 3] {
        assert_eq!(
            state.partition("wide", p).map(|x| x.replicas.clone()),
            Some(vec![p, p + 1, 11])
        );
    }
}

fn write_plan(path: &Path, moves: &[Move]) {
    let partitions: Vec<serde_json::Value> = moves
        .iter()
        .map(|m| {
            serde_json::json!({
                "topic": m.topic, "partition": m.partition, "replicas": m.to,
                "log_dirs": vec!["any"; m.to.len()],
            })
        })
        .collect();
    let doc = serde_json::json!({"version": 1, "partitions": partitions});
    std::fs::write(path, doc.to_string()).expect("write plan");
}

/// Moves that never catch up: apply stops at its timeout (exit 3) with throttles set;
/// status lists the moves and throttles (exit 2); cancel reverts kpool's moves, leaves
/// someone else's, clears every throttle (exit 4); status then shows only the other one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_status_and_cancel() {
    let state = wide()
        .catch_up(CatchUp::Polls(1_000_000))
        .reassigning("wide", 6, &[10]);
    let server = TestKafka::start(state).await;
    let bootstrap = server.bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = dir.path().join("plan.json");
    write_plan(&plan, &onto_eleven()[..2]);
    let plan = plan.to_str().expect("utf-8").to_owned();
    let out = cli_async(args(&[
        "racks",
        "apply",
        "-f",
        &plan,
        "--kafka-bootstrap",
        &bootstrap,
        "--poll-interval",
        "10ms",
        "--timeout",
        "300ms",
        "--throttle",
        "5MB",
    ]))
    .await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("stopped at --timeout 300ms"), "{err}");
    assert!(
        err.contains("replication throttles stay set on brokers 0, 1, 2, 3, 11"),
        "{err}"
    );

    let out = cli_async(args(&[
        "racks",
        "status",
        "-f",
        &plan,
        "--kafka-bootstrap",
        &bootstrap,
    ]))
    .await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{text}{}", stderr(&out));
    assert!(
        text.contains("racks status: 3 reassignments in flight"),
        "{text}"
    );
    assert!(
        text.contains("wide-0: [0, 1, 2] -> [0, 1, 11], adding [11], removing [2] (the plan's)"),
        "{text}"
    );
    assert!(
        text.contains("wide-6: [6, 7, 8] -> [6, 7, 8, 10], adding [10], removing [] (not kpool's"),
        "{text}"
    );
    assert!(
        text.contains("topic wide: follower.replication.throttled.replicas=0:11,1:11, leader.replication.throttled.replicas=0:0,0:1,0:2,1:1,1:2,1:3"),
        "{text}"
    );
    assert!(
        text.contains("could not read the throttles of broker 1, broker 2"),
        "broker configs are read from each broker; theirs are unreachable: {text}"
    );

    let out = cli_async(args(&[
        "racks",
        "cancel",
        "-f",
        &plan,
        "--kafka-bootstrap",
        &bootstrap,
    ]))
    .await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("racks cancel: cancelled 2 reassignments (wide-0, wide-1)"),
        "{err}"
    );
    assert!(
        err.contains("racks cancel: left alone wide-6: not kpool's"),
        "{err}"
    );
    let state = server.state();
    assert_eq!(
        state.partition("wide", 0).map(|p| p.replicas.clone()),
        Some(vec![0, 1, 2])
    );
    assert_eq!(
        state.partition("wide", 1).map(|p| p.replicas.clone()),
        Some(vec![1, 2, 3])
    );
    assert!(state.partition("wide", 6).is_some_and(|p| p.reassigning()));
    assert!(state.configs.is_empty(), "{:?}", state.configs);

    let out = cli_async(args(&["racks", "status", "--kafka-bootstrap", &bootstrap])).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("racks status: 1 reassignments in flight"),
        "{text}"
    );
    assert!(
        text.contains("replication throttles set on 0 brokers and 0 topics"),
        "{text}"
    );
}

#[test]
fn usage_and_plan_file_errors_exit_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"version":1,"partitions":[{"topic":"t","partition":0,"replicas":[1,1]}]}"#,
    )
    .expect("write");
    let bad = bad.to_str().expect("utf-8");
    let out = cli(&[
        "racks",
        "apply",
        "-f",
        bad,
        "--kafka-bootstrap",
        "127.0.0.1:1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("partitions[0].replicas[1]: broker 1 is listed twice"),
        "{}",
        stderr(&out)
    );
    for a in [
        &["racks", "apply", "-f", bad][..],
        &["racks", "apply", "--kafka-bootstrap", "k:9092"],
        &[
            "racks",
            "apply",
            "-f",
            bad,
            "--kafka-bootstrap",
            "k:9092",
            "--throttle",
            "0",
        ],
        &[
            "racks",
            "apply",
            "-f",
            bad,
            "--kafka-bootstrap",
            "k:9092",
            "--throttle",
            "5 furlongs",
        ],
        &[
            "racks",
            "apply",
            "-f",
            bad,
            "--kafka-bootstrap",
            "k:9092",
            "--max-per-broker",
            "0",
        ],
        &["racks", "status"],
        &[
            "racks",
            "cancel",
            "--kafka-bootstrap",
            "k:9092",
            "--timeout",
            "1s",
        ],
    ] {
        let out = cli(a);
        assert_eq!(out.status.code(), Some(1), "{a:?}: {}", stderr(&out));
    }
    for (cmd, first) in [
        (
            "apply",
            "Exit codes:\n  0  done: every move of the plan is in place",
        ),
        ("status", "Exit codes:\n  0  no reassignment in flight"),
        (
            "cancel",
            "Exit codes:\n  0  kpool's reassignments in flight cancelled",
        ),
    ] {
        let out = cli(&["racks", cmd, "--help"]);
        assert_eq!(out.status.code(), Some(0));
        assert!(stdout(&out).contains(first), "{cmd}: {}", stdout(&out));
        assert!(
            stdout(&out).contains("[env: KPOOL_KAFKA_BOOTSTRAP="),
            "{cmd}"
        );
    }
    let out = cli(&["racks", "apply", "--help"]);
    for var in [
        "KPOOL_RACKS_PLAN",
        "KPOOL_RACKS_THROTTLE",
        "KPOOL_RACKS_MAX_PER_BROKER",
        "KPOOL_RACKS_TIMEOUT",
        "KPOOL_RACKS_POLL_INTERVAL",
        "KPOOL_KAFKA_TIMEOUT",
        "KPOOL_POLICY",
    ] {
        assert!(stdout(&out).contains(&format!("[env: {var}")), "{var}");
    }
}

/// Left-alone reasons read as the executor writes them (the library API's view).
#[test]
fn left_alone_reasons_name_what_was_found() {
    let r = LeftAlone::OtherReassignment {
        target: vec![1, 2, 3],
    };
    assert_eq!(
        r.to_string(),
        "another reassignment is in flight, toward [1, 2, 3] (not this plan's)"
    );
}
