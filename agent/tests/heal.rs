//! Racks self-healing: one agent at a time (the Lease, on the fake API server) plans and
//! applies fixes for offenders that persist across rounds, within the move budget, against
//! the scripted Kafka server playing a KRaft controller; every reassignment an audit line,
//! an Event on the Lease and a metric. Audit mode only reports; a broker down makes it wait.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kpool_agent::guard::act::{Actor, Retry};
use kpool_agent::heal::{Healer, Persistence, Round, choose};
use kpool_agent::lease::LeaseLock;
use kpool_agent::pods::Standalone;
use kpool_agent::racks::apply::ApplyConfig;
use kpool_agent::racks::input;
use kpool_agent::racks::plan::{Layout, Plan, PlanOptions, plan};
use kpool_agent::service::Agent;
use kpool_cli::audit::{Action, AuditRecord, Decision};
use kpool_policy::{DEFAULT_POLICY_YAML, Policy};
use kpool_testkit::fake_api::FakeApi;
use kpool_testkit::kafka_server::{ApiKey, ClusterState, TestKafka};
use tokio::sync::watch;

const NS: &str = "kpool-system";

fn policy(edits: &[(&str, &str)]) -> Arc<Policy> {
    let mut yaml = DEFAULT_POLICY_YAML.to_owned();
    for (from, to) in edits {
        assert!(yaml.contains(from), "{from}");
        yaml = yaml.replacen(from, to, 1);
    }
    Arc::new(Policy::from_yaml(&yaml, "policy.yaml").expect("valid"))
}

type Lines = Arc<Mutex<Vec<AuditRecord>>>;

fn healer(
    server: &TestKafka,
    api: &FakeApi,
    policy: &Arc<Policy>,
    node: &str,
) -> (Healer, Arc<Agent>, Lines) {
    let agent = Agent::new(policy.clone(), Arc::new(Standalone::new(policy.clone())));
    let lines: Lines = Arc::default();
    let sink = lines.clone();
    let h = Healer {
        agent: agent.clone(),
        policy: policy.clone(),
        kafka: server.client(),
        lease: LeaseLock::new(
            api.client(),
            NS,
            "kpool-racks",
            &format!("kpool-agent-{node}"),
            Duration::from_secs(15),
        ),
        events: Some((
            Actor::new(api.client(), node, Retry::default()),
            NS.to_owned(),
        )),
        interval: Duration::from_millis(30),
        apply: ApplyConfig {
            interval: Duration::from_millis(10),
            timeout: Some(Duration::from_secs(30)),
            ..ApplyConfig::default()
        },
        audit: Arc::new(move |r: &AuditRecord| sink.lock().expect("lines").push(r.clone())),
    };
    (h, agent, lines)
}

async fn replan(server: &TestKafka, policy: &Policy) -> Plan {
    let snapshot = server.client().snapshot().await.expect("snapshot");
    let inputs = input::from_snapshot(&snapshot);
    plan(
        &Layout::new(policy, &inputs.brokers, None),
        &inputs.partitions,
        &PlanOptions::default(),
    )
}

fn metric(agent: &Agent, line: &str) -> bool {
    agent.metrics().encode().lines().any(|l| l == line)
}

#[tokio::test]
async fn one_agent_heals_what_persists_and_the_other_follows() {
    let server = TestKafka::start(ClusterState::skewed()).await;
    server.update_state(|s| s.advertise_all(server.addr()));
    let api = FakeApi::default();
    let p = policy(&[("selfHealing: false", "selfHealing: true")]);
    let (mut a, agent_a, lines_a) = healer(&server, &api, &p, "node-a");
    let (mut b, agent_b, lines_b) = healer(&server, &api, &p, "node-b");
    let (_stop, mut rx) = watch::channel(false);
    let (mut pa, mut pb) = (Persistence::new(2), Persistence::new(2));

    // Round 1: a takes the Lease and sees three offenders for the first time: nothing yet.
    a.round(&mut pa, &mut rx).await;
    b.round(&mut pb, &mut rx).await;
    assert!(metric(&agent_a, "kpool_agent_racks_leader 1"));
    assert!(metric(&agent_b, "kpool_agent_racks_leader 0"));
    assert!(
        server
            .requests()
            .iter()
            .all(|r| r.api != ApiKey::AlterPartitionReassignments)
    );
    // Round 2: they persist, so a heals them (budget 10 fits 1 + 3 + 3 moves); b never acts.
    a.round(&mut pa, &mut rx).await;
    b.round(&mut pb, &mut rx).await;
    assert!(replan(&server, &p).await.moves.is_empty(), "healed");
    let submitted: Vec<String> = lines_a
        .lock()
        .expect("lines")
        .iter()
        .filter(|r| {
            r.decision == Decision::RackReassignment && r.action == Action::ReassignmentSubmitted
        })
        .map(|r| r.subject.name.clone())
        .collect();
    assert_eq!(submitted, ["orders-1", "orders-2", "orders-4"]);
    let first = lines_a.lock().expect("lines")[0].clone();
    assert!(
        first.reason.starts_with("replicas [0, 6, 1, 2, 4, 5] -> ["),
        "{}",
        first.reason
    );
    assert!(lines_b.lock().expect("lines").is_empty());
    assert!(metric(
        &agent_a,
        "kpool_agent_racks_reassignments_total{result=\"reassignment-submitted\"} 3"
    ));
    assert!(metric(
        &agent_a,
        "kpool_agent_racks_reassignments_total{result=\"reassignment-done\"} 3"
    ));
    assert!(metric(
        &agent_a,
        "kpool_agent_racks_runs_total{result=\"done\"} 1"
    ));
    // Each reassignment is a Normal Event on the Lease.
    let events: Vec<_> = api
        .writes()
        .into_iter()
        .filter(|r| r.path.ends_with("/events"))
        .collect();
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(
        events[0].path,
        format!("/apis/events.k8s.io/v1/namespaces/{NS}/events")
    );
    assert_eq!(events[0].body["type"], "Normal");
    assert_eq!(events[0].body["reason"], "RackReassignment");
    assert_eq!(events[0].body["regarding"]["kind"], "Lease");
    assert!(
        events[0].body["note"]
            .as_str()
            .is_some_and(|n| n.starts_with("orders-1: replicas"))
    );
    // Leaders first: kept by the plan, or elected at the end of the run.
    let snapshot = server.client().snapshot().await.expect("snapshot");
    for t in &snapshot.topics {
        for part in &t.partitions {
            assert_eq!(
                Some(&part.leader),
                part.replicas.first(),
                "{}-{}",
                t.name,
                part.index
            );
        }
    }
}

#[tokio::test]
async fn the_run_loop_heals_and_gives_the_lease_up_on_stop() {
    let server = TestKafka::start(ClusterState::skewed()).await;
    server.update_state(|s| s.advertise_all(server.addr()));
    let api = FakeApi::default();
    let p = policy(&[("selfHealing: false", "selfHealing: true")]);
    let (h, agent, _lines) = healer(&server, &api, &p, "node-a");
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(h.run(rx));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !replan(&server, &p).await.moves.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not healed within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(true).expect("stop");
    task.await.expect("healer");
    let lease = api.lease(NS, "kpool-racks").expect("lease");
    assert!(
        lease["spec"]["holderIdentity"].is_null(),
        "released: {lease}"
    );
    assert!(metric(&agent, "kpool_agent_racks_leader 0"));
}

#[tokio::test]
async fn audit_mode_reports_and_moves_nothing() {
    let server = TestKafka::start(ClusterState::skewed()).await;
    let api = FakeApi::default();
    let p = policy(&[
        ("selfHealing: false", "selfHealing: true"),
        ("mode: enforce", "mode: audit"),
    ]);
    let (mut h, _agent, lines) = healer(&server, &api, &p, "node-a");
    let (_stop, mut rx) = watch::channel(false);
    let mut persistence = Persistence::new(2);
    for _ in 0..3 {
        h.round(&mut persistence, &mut rx).await;
    }
    assert_eq!(replan(&server, &p).await.moves.len(), 3, "nothing moved");
    assert!(
        server
            .requests()
            .iter()
            .all(|r| r.api != ApiKey::AlterPartitionReassignments)
    );
    let lines = lines.lock().expect("lines");
    assert_eq!(lines.len(), 6, "reported in rounds 2 and 3");
    assert!(lines.iter().all(|r| r.action == Action::ReportedAuditMode));
}

#[tokio::test]
async fn a_broker_down_makes_healing_wait() {
    let server = TestKafka::start(ClusterState::skewed().broker_down(3)).await;
    let api = FakeApi::default();
    let p = policy(&[("selfHealing: false", "selfHealing: true")]);
    let (mut h, _agent, lines) = healer(&server, &api, &p, "node-a");
    let (_stop, mut rx) = watch::channel(false);
    let mut persistence = Persistence::new(1);
    h.round(&mut persistence, &mut rx).await;
    h.round(&mut persistence, &mut rx).await;
    assert!(lines.lock().expect("lines").is_empty());
    assert!(
        server
            .requests()
            .iter()
            .all(|r| r.api != ApiKey::AlterPartitionReassignments)
    );
}

#[tokio::test]
async fn the_budget_takes_whole_partitions_that_fit_and_persistence_counts() {
    let server = TestKafka::start(ClusterState::skewed()).await;
    let p = policy(&[("movesPerRun: 10", "movesPerRun: 4")]);
    let full = replan(&server, &p).await;
    let racks = &p.spec().racks;
    let mut persistence = Persistence::new(racks.persist_polls);
    assert_eq!(
        choose(&full, &mut persistence, racks, p.spec().mode),
        Round::Wait("3 offending partitions, none yet in 2 polls in a row".to_owned())
    );
    match choose(&full, &mut persistence, racks, p.spec().mode) {
        Round::Apply(moves) => {
            let names: Vec<String> = moves
                .iter()
                .map(|m| format!("{}-{}", m.topic, m.partition))
                .collect();
            // 1 + 3 fits 4; the next 3 does not.
            assert_eq!(names, ["orders-1", "orders-2"]);
        }
        other => panic!("{other:?}"),
    }
    let tight = policy(&[("movesPerRun: 10", "movesPerRun: 1")]);
    let mut once = Persistence::new(1);
    let only: Vec<_> = full
        .moves
        .iter()
        .filter(|m| m.moves == 3)
        .cloned()
        .collect();
    let plan3 = Plan {
        moves: only,
        ..full.clone()
    };
    assert_eq!(
        choose(&plan3, &mut once, &tight.spec().racks, tight.spec().mode),
        Round::Wait("every due partition needs more than racks.movesPerRun (1) moves".to_owned())
    );
    assert_eq!(
        choose(
            &Plan {
                moves: vec![],
                ..full
            },
            &mut once,
            racks,
            p.spec().mode
        ),
        Round::Nothing
    );
}
