//! The guard's Kubernetes calls against a kube-rs `tower-test` mock API server that records
//! every request (`support::fake_api`): the exact Eviction (policy/v1) and Event
//! (events.k8s.io/v1) requests, retry on 429, audit mode that never evicts, no eviction
//! loop across rounds; and the whole production loop (node view watches → guard rounds →
//! eviction) when a second broker lands on the node.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kpool_agent::guard::act::{Actor, EvictOutcome, Retry};
use kpool_agent::guard::decide::{Controller, Guard, NodeFacts, PodFacts};
use kpool_agent::guard::watch::{guard_loop, round};
use kpool_agent::nodeview::NodeView;
use kpool_agent::pods::Standalone;
use kpool_agent::service::Agent;
use kpool_policy::Policy;
use serde_json::{Value, json};
use support::fake_api::FakeApi;

fn fast_retry() -> Retry {
    Retry {
        attempts: 3,
        first: Duration::from_millis(1),
        max: Duration::from_millis(4),
    }
}

fn broker(name: &str, created: i64) -> PodFacts {
    PodFacts {
        namespace: "streaming".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        labels: [
            ("app.kubernetes.io/name", "kafka"),
            ("app.kubernetes.io/component", "broker"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        created_unix: created,
        controller: Some(Controller {
            api_version: "apps/v1".into(),
            kind: "StatefulSet".into(),
            name: "kafka".into(),
            uid: "uid-sts".into(),
        }),
        controller_exists: Some(true),
        node_name: "pool-1".into(),
        service_account: "kafka".into(),
        ..PodFacts::default()
    }
}

/// The actions of a round's audit records, in order.
fn actions(records: &[kpool_cli::audit::AuditRecord]) -> Vec<&str> {
    records.iter().map(|r| r.action.as_str()).collect()
}

fn node() -> NodeFacts {
    NodeFacts {
        name: "pool-1".into(),
        labels: BTreeMap::from([
            ("dedicated".to_owned(), "kafka".to_owned()),
            (
                "topology.kubernetes.io/zone".to_owned(),
                "eu-west-1a".to_owned(),
            ),
        ]),
        taints: vec![("dedicated".into(), "kafka".into(), "NoSchedule".into())],
    }
}

fn agent(policy: Policy) -> Arc<Agent> {
    let policy = Arc::new(policy);
    Agent::new(policy.clone(), Arc::new(Standalone::new(policy)))
}

fn expected_eviction(name: &str) -> Value {
    json!({
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": name, "namespace": "streaming"},
        "deleteOptions": {"preconditions": {"uid": format!("uid-{name}")}},
    })
}

/// The Event body without its generated name and time.
fn event_shape(body: &Value) -> Value {
    let mut b = body.clone();
    let meta = b["metadata"].as_object_mut().expect("metadata");
    let name = meta.remove("name").expect("name");
    assert!(name.as_str().expect("name").starts_with(&format!(
        "{}.",
        body["regarding"]["name"].as_str().expect("regarding")
    )));
    let t = b
        .as_object_mut()
        .expect("obj")
        .remove("eventTime")
        .expect("eventTime");
    // MicroTime: exactly six fraction digits.
    let t = t.as_str().expect("time");
    assert_eq!(t.len(), "2026-11-21T10:55:43.123456Z".len(), "{t}");
    b
}

#[tokio::test]
async fn second_broker_is_evicted_with_policy_v1_and_an_event_on_the_pod() {
    let fake = FakeApi::default();
    let actor = Actor::new(fake.client(), "pool-1", fast_retry());
    let agent = agent(Policy::builtin().expect("policy"));
    let mut guard = Guard::default();
    let pods = vec![broker("kafka-3", 500), broker("kafka-0", 10)];
    let records = round(&agent, &mut guard, &actor, &node(), &pods, Instant::now()).await;

    let log = fake.log();
    let calls: Vec<(&str, &str)> = log
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        calls,
        vec![
            ("POST", "/api/v1/namespaces/streaming/pods/kafka-3/eviction"),
            ("POST", "/apis/events.k8s.io/v1/namespaces/streaming/events"),
        ]
    );
    assert_eq!(log[0].body, expected_eviction("kafka-3"));
    assert_eq!(
        event_shape(&log[1].body),
        json!({
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"namespace": "streaming"},
            "reportingController": "kpool.io/agent",
            "reportingInstance": "kpool-agent-pool-1",
            "action": "Evict",
            "reason": "KpoolSecondBroker",
            "type": "Warning",
            "note": "broker pod streaming/kafka-3 is a second broker on node pool-1: streaming/kafka-0 runs here since earlier; one broker per node; evicted",
            "regarding": {"apiVersion": "v1", "kind": "Pod", "namespace": "streaming", "name": "kafka-3", "uid": "uid-kafka-3"},
        })
    );
    assert_eq!(records.len(), 1);
    let line: Value = serde_json::from_str(&records[0].to_line()).expect("audit json");
    assert_eq!(line["component"], "agent");
    assert_eq!(line["decision"], "violation");
    assert_eq!(
        line["reasonCode"].as_str().or(line["reason_code"].as_str()),
        Some("second-broker")
    );
    assert_eq!(line["action"], "evicted");
    assert_eq!(line["mode"], "enforce");
    assert_eq!(line["subject"]["uid"], "uid-kafka-3");
    let metrics = agent.metrics().encode();
    assert!(
        metrics.contains("kpool_agent_guard_violations_total{kind=\"second-broker\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kpool_agent_guard_evictions_total{result=\"evicted\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kpool_agent_guard_current_violations{kind=\"second-broker\"} 1"),
        "{metrics}"
    );

    // Next rounds inside the window: no request at all (no eviction loop).
    for s in [5, 10, 60] {
        let again = round(
            &agent,
            &mut guard,
            &actor,
            &node(),
            &pods,
            Instant::now() + Duration::from_secs(s),
        )
        .await;
        assert!(again.is_empty());
    }
    assert_eq!(fake.log().len(), 2);
}

#[tokio::test]
async fn eviction_retries_429_then_succeeds_or_reports_blocked() {
    let fake = FakeApi::with_evictions(&[429, 429]);
    let actor = Actor::new(fake.client(), "pool-1", fast_retry());
    assert_eq!(
        actor.evict("streaming", "kafka-3", "uid-kafka-3").await,
        EvictOutcome::Evicted
    );
    let log = fake.log();
    assert_eq!(log.len(), 3);
    assert!(log.iter().all(|r| r.body == expected_eviction("kafka-3")));

    let fake = FakeApi::with_evictions(&[429, 429, 429, 429]);
    let actor = Actor::new(fake.client(), "pool-1", fast_retry());
    match actor.evict("streaming", "kafka-3", "uid-kafka-3").await {
        EvictOutcome::Blocked { attempts, message } => {
            assert_eq!(attempts, 3);
            assert!(message.contains("disruption budget"), "{message}");
        }
        other => panic!("expected Blocked, got {other:?}"),
    }
    assert_eq!(fake.log().len(), 3);

    // 404: the pod is already gone; 409: the uid precondition failed (a new pod took the
    // name). Neither is retried.
    for code in [404, 409] {
        let fake = FakeApi::with_evictions(&[code]);
        let actor = Actor::new(fake.client(), "pool-1", fast_retry());
        assert_eq!(
            actor.evict("streaming", "kafka-3", "uid-kafka-3").await,
            EvictOutcome::Gone
        );
        assert_eq!(fake.log().len(), 1);
    }
}

#[tokio::test]
async fn blocked_eviction_is_in_the_event_and_the_audit_line() {
    let fake = FakeApi::with_evictions(&[429, 429, 429]);
    let actor = Actor::new(fake.client(), "pool-1", fast_retry());
    let agent = agent(Policy::builtin().expect("policy"));
    let mut foreign = broker("nginx", 100);
    foreign.namespace = "default".into();
    foreign.labels.clear();
    foreign.controller = Some(Controller {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        name: "nginx".into(),
        uid: "uid-rs".into(),
    });
    let records = round(
        &agent,
        &mut Guard::default(),
        &actor,
        &node(),
        &[broker("kafka-0", 1), foreign],
        Instant::now(),
    )
    .await;
    let log = fake.log();
    assert_eq!(log.len(), 5, "{log:?}");
    // A foreign pod its PodDisruptionBudget shields: the pool is breached, on the pod and
    // on the Node.
    for (event, kind) in [(&log[3], "Pod"), (&log[4], "Node")] {
        assert_eq!(
            event.path,
            "/apis/events.k8s.io/v1/namespaces/default/events"
        );
        assert_eq!(event.body["reason"], "PoolBreached");
        assert_eq!(event.body["regarding"]["kind"], kind);
        assert!(
            event.body["note"]
                .as_str()
                .expect("note")
                .contains("(refusal 1, 3 attempts each: ")
        );
    }
    assert_eq!(records[0].action.as_str(), "eviction-blocked");
}

#[tokio::test]
async fn audit_mode_reports_and_never_evicts() {
    let yaml = kpool_policy::DEFAULT_POLICY_YAML.replace("mode: enforce", "mode: audit");
    let policy = Policy::from_yaml(&yaml, "audit").expect("policy");
    let fake = FakeApi::default();
    let actor = Actor::new(fake.client(), "pool-1", fast_retry());
    let agent = agent(policy);
    let mut n = node();
    n.taints.clear();
    let pods = vec![
        broker("kafka-0", 1),
        broker("kafka-3", 2),
        broker("kafka-1", 0),
    ];
    let records = round(
        &agent,
        &mut Guard::default(),
        &actor,
        &n,
        &pods,
        Instant::now(),
    )
    .await;
    let log = fake.log();
    assert!(!log.is_empty());
    assert!(
        log.iter().all(|r| !r.path.ends_with("/eviction")),
        "{log:?}"
    );
    let reasons: Vec<&str> = log
        .iter()
        .map(|r| r.body["reason"].as_str().expect("reason"))
        .collect();
    assert_eq!(
        reasons,
        vec![
            "KpoolSecondBroker",
            "KpoolSecondBroker",
            "KpoolNodeNotCompliant",
            "KpoolNodeNotCompliant",
            "KpoolNodeNotCompliant",
            "KpoolRackDrift",
        ]
    );
    assert!(log.iter().all(|r| r.body["action"] == "Report"));
    assert!(
        records
            .iter()
            .all(|r| r.action.as_str() == "reported-audit-mode" && r.mode.as_str() == "audit")
    );
    // kafka-1 (created first) is the one that stays; the rack drift is kafka-1's (zone b).
    assert_eq!(log[0].body["regarding"]["name"], "kafka-0");
    assert_eq!(log[1].body["regarding"]["name"], "kafka-3");
}

#[tokio::test]
async fn node_event_when_no_broker_is_there() {
    let fake = FakeApi::default();
    let actor = Actor::new(fake.client(), "pool-1", fast_retry());
    let agent = agent(Policy::builtin().expect("policy"));
    let mut n = node();
    n.labels.remove("dedicated");
    round(
        &agent,
        &mut Guard::default(),
        &actor,
        &n,
        &[],
        Instant::now(),
    )
    .await;
    let log = fake.log();
    assert_eq!(log.len(), 1);
    assert_eq!(
        log[0].path,
        "/apis/events.k8s.io/v1/namespaces/default/events"
    );
    assert_eq!(
        log[0].body["regarding"],
        json!({"apiVersion": "v1", "kind": "Node", "name": "pool-1"})
    );
    assert_eq!(log[0].body["reason"], "KpoolNodeNotCompliant");
}

fn pod_json(name: &str, created: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": "streaming", "uid": format!("uid-{name}"),
            "creationTimestamp": created,
            "labels": {"app.kubernetes.io/name": "kafka", "app.kubernetes.io/component": "broker",
                "topology.kubernetes.io/zone": "eu-west-1a"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "kafka",
                "uid": "uid-sts", "controller": true}]
        },
        "spec": {"nodeName": "pool-1", "serviceAccountName": "kafka",
            "containers": [{"name": "kafka", "image": "kafka"}]},
        "status": {"phase": "Running"}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_loop_over_the_watches_evicts_a_second_broker_once_when_it_lands() {
    let fake = FakeApi::default();
    fake.set_node(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "pool-1", "resourceVersion": "1",
            "labels": {"dedicated": "kafka", "topology.kubernetes.io/zone": "eu-west-1a"}},
        "spec": {"taints": [{"key": "dedicated", "value": "kafka", "effect": "NoSchedule"}]}
    }));
    fake.set_pods(vec![pod_json("kafka-0", "2026-11-20T10:00:00Z")]);
    let client = fake.client();
    let (view, watches) = NodeView::start(client.clone(), "pool-1");
    let agent = agent(Policy::builtin().expect("policy"));
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let guard = tokio::spawn(guard_loop(
        agent.clone(),
        view.clone(),
        Actor::new(client, "pool-1", fast_retry()),
        Guard::new(Duration::from_secs(300)),
        Duration::from_millis(50),
        stop_rx,
    ));

    // A compliant node with one broker: several rounds, not one write.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(fake.writes().is_empty(), "{:?}", fake.writes());

    // A second broker lands (a watch event): evicted once, with its Event.
    fake.add_pod(pod_json("kafka-3", "2026-11-21T10:00:00Z"));
    let start = Instant::now();
    while fake.writes().len() < 2 && start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await; // more rounds: nothing new
    let writes: Vec<(String, String)> = fake
        .writes()
        .into_iter()
        .map(|r| {
            (
                r.path,
                r.body["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        writes,
        [
            (
                "/api/v1/namespaces/streaming/pods/kafka-3/eviction".to_owned(),
                String::new()
            ),
            (
                "/apis/events.k8s.io/v1/namespaces/streaming/events".to_owned(),
                "KpoolSecondBroker".to_owned()
            ),
        ]
    );
    assert_eq!(fake.writes()[0].body, expected_eviction("kafka-3"));
    assert_eq!(
        fake.lists.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "one list each of pods and node; kafka-3 came as a watch event"
    );

    stop.send(true).expect("stop");
    tokio::time::timeout(Duration::from_secs(5), guard)
        .await
        .expect("the guard loop stops promptly")
        .expect("guard task");
    for w in watches {
        w.abort();
    }
}

// ---------------------------------------------------------------------------------------
// A PodDisruptionBudget that shields a foreign pod for good: counted, reported as a breach,
// and (enforce, opted in) deleted with a uid precondition after N refusals.

/// Not a broker (no broker labels), not a DaemonSet's, not allow-listed: foreign.
fn foreign(name: &str, uid: &str) -> PodFacts {
    let mut p = broker(name, 100);
    p.namespace = "default".into();
    p.labels.clear();
    p.uid = uid.into();
    p
}

fn opted_in(after: u32, mode: &str) -> Policy {
    let off = "  # deleteAfterRefusals: 3";
    assert!(kpool_policy::DEFAULT_POLICY_YAML.contains(off));
    let yaml = kpool_policy::DEFAULT_POLICY_YAML
        .replace(off, &format!("  deleteAfterRefusals: {after}"))
        .replace("mode: enforce", &format!("mode: {mode}"));
    let p = Policy::from_yaml(&yaml, "opted-in").expect("policy");
    assert_eq!(p.spec().guard.delete_after_refusals, Some(after));
    p
}

/// The value of the sample `name` (with its labels) in the exposition, when present.
fn sample(agent: &Agent, name: &str) -> Option<f64> {
    agent.metrics().encode().lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// The writes from index `from` on, as (method, path, Event reason, Event regarding kind).
fn writes_from(fake: &FakeApi, from: usize) -> Vec<(String, String, String, String)> {
    fake.writes()[from..]
        .iter()
        .map(|r| {
            (
                r.method.clone(),
                r.path.clone(),
                r.body["reason"].as_str().unwrap_or_default().to_owned(),
                r.body["regarding"]["kind"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

fn w(method: &str, path: &str, reason: &str, kind: &str) -> (String, String, String, String) {
    (method.into(), path.into(), reason.into(), kind.into())
}

const NGINX_EVICTION: &str = "/api/v1/namespaces/default/pods/nginx/eviction";
const NGINX: &str = "/api/v1/namespaces/default/pods/nginx";
const DEFAULT_EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";

/// One refused eviction round: three attempts, then the breach on the pod and the Node.
fn refused_round() -> Vec<(String, String, String, String)> {
    let mut out = vec![w("POST", NGINX_EVICTION, "", ""); 3];
    out.push(w("POST", DEFAULT_EVENTS, "PoolBreached", "Pod"));
    out.push(w("POST", DEFAULT_EVENTS, "PoolBreached", "Node"));
    out
}

#[tokio::test]
async fn a_pdb_refusing_for_good_is_a_counted_breach_and_never_a_deletion_without_opt_in() {
    let fake = FakeApi::with_pdb_forever();
    let actor = Actor::new(fake.client(), "pool-1", fast_retry());
    let agent = agent(Policy::builtin().expect("policy"));
    let mut guard = Guard::new(Duration::from_secs(300));
    let pods = [broker("kafka-0", 1), foreign("nginx", "uid-nginx")];
    let t0 = Instant::now();
    for (n, at) in [(1, 0), (2, 300), (3, 600)] {
        let before = fake.writes().len();
        let records = round(
            &agent,
            &mut guard,
            &actor,
            &node(),
            &pods,
            t0 + Duration::from_secs(at),
        )
        .await;
        assert_eq!(writes_from(&fake, before), refused_round(), "round {n}");
        let writes = fake.writes();
        for event in &writes[before + 3..] {
            let note = event.body["note"].as_str().expect("note");
            assert!(
                note.starts_with(
                    "the Kafka pool is breached: pod default/nginx runs on Kafka pool node pool-1"
                ),
                "{note}"
            );
            assert!(note.contains(&format!("a PodDisruptionBudget blocks its eviction (refusal {n}, 3 attempts each: Cannot evict pod")), "{note}");
            assert!(
                note.contains("never deletes it (guard.deleteAfterRefusals is not set)"),
                "{note}"
            );
            assert_eq!(event.body["type"], "Warning");
            assert_eq!(event.body["action"], "Evict");
        }
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].action.as_str(), "eviction-blocked");
        assert_eq!(records[0].reason_code, "foreign-pod");
        assert!(records[0].reason.contains(&format!("(refusal {n},")));
        assert_eq!(actor.refusals().count("uid-nginx"), n);
        assert_eq!(
            sample(&agent, "kpool_agent_guard_eviction_refusals_total"),
            Some(f64::from(n))
        );
        assert_eq!(sample(&agent, "kpool_agent_pool_breached"), Some(1.0));
        assert_eq!(
            sample(
                &agent,
                "kpool_agent_guard_evictions_total{result=\"eviction-blocked\"}"
            ),
            Some(f64::from(n))
        );
        // Inside the window: nothing, and the breach still shows.
        let quiet = round(
            &agent,
            &mut guard,
            &actor,
            &node(),
            &pods,
            t0 + Duration::from_secs(at + 5),
        )
        .await;
        assert!(quiet.is_empty());
        assert_eq!(sample(&agent, "kpool_agent_pool_breached"), Some(1.0));
    }
    assert!(
        fake.log().iter().all(|r| r.method != "DELETE"),
        "never deleted without guard.deleteAfterRefusals"
    );

    // The pod goes (its owner removed it): the breach is over, and nothing is remembered.
    round(
        &agent,
        &mut guard,
        &actor,
        &node(),
        &pods[..1],
        t0 + Duration::from_secs(601),
    )
    .await;
    assert_eq!(sample(&agent, "kpool_agent_pool_breached"), Some(0.0));
    assert_eq!(actor.refusals().breached(), 0);
}

#[tokio::test]
async fn opted_in_enforce_deletes_after_n_refusals_with_the_uid_precondition_only_that_pod() {
    let fake = FakeApi::with_pdb_forever();
    let actor = Actor::new(fake.client(), "pool-1", fast_retry());
    let agent = agent(opted_in(2, "enforce"));
    let mut guard = Guard::new(Duration::from_secs(300));
    let t0 = Instant::now();
    let at = |s| t0 + Duration::from_secs(s);

    // Refusal 1: the breach says when the pod will be deleted; nothing is deleted yet.
    let pods = [broker("kafka-0", 1), foreign("nginx", "uid-nginx")];
    let records = round(&agent, &mut guard, &actor, &node(), &pods, at(0)).await;
    assert_eq!(writes_from(&fake, 0), refused_round());
    let note = fake.writes()[3].body["note"]
        .as_str()
        .expect("note")
        .to_owned();
    assert!(
        note.contains("(refusal 1, ")
            && note.contains("deleted at refusal 2 (guard.deleteAfterRefusals)"),
        "{note}"
    );
    assert_eq!(actions(&records), ["eviction-blocked"]);

    // Refusal 2: the breach, then DELETE with the uid precondition, then the deletion's
    // own Events and audit record.
    let before = fake.writes().len();
    let records = round(&agent, &mut guard, &actor, &node(), &pods, at(300)).await;
    let mut expected = refused_round();
    expected.push(w("DELETE", NGINX, "", ""));
    expected.push(w("POST", DEFAULT_EVENTS, "PoolBreachDeleted", "Pod"));
    expected.push(w("POST", DEFAULT_EVENTS, "PoolBreachDeleted", "Node"));
    assert_eq!(writes_from(&fake, before), expected);
    let writes = fake.writes();
    assert!(
        writes[before + 3].body["note"]
            .as_str()
            .expect("note")
            .contains("deleting it now (guard.deleteAfterRefusals: 2)")
    );
    assert_eq!(
        writes[before + 5].body,
        json!({"preconditions": {"uid": "uid-nginx"}})
    );
    for event in &writes[before + 6..] {
        assert_eq!(event.body["action"], "Delete");
        let note = event.body["note"].as_str().expect("note");
        assert!(note.contains("deleted at refusal 2 (guard.deleteAfterRefusals), bypassing the PodDisruptionBudget that refuses its eviction"), "{note}");
    }
    assert_eq!(writes[before + 6].body["regarding"]["uid"], "uid-nginx");
    assert_eq!(actions(&records), ["eviction-blocked", "deleted"]);
    assert_eq!(records[1].subject.uid, "uid-nginx");
    assert_eq!(records[1].mode.as_str(), "enforce");
    assert_eq!(
        sample(
            &agent,
            "kpool_agent_guard_deletions_total{result=\"deleted\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&agent, "kpool_agent_guard_eviction_refusals_total"),
        Some(2.0)
    );
    assert_eq!(sample(&agent, "kpool_agent_pool_breached"), Some(0.0));

    // Its owner recreates it under the same name: a new uid starts from zero, and is
    // deleted in its turn with its own uid as the precondition.
    let pods = [broker("kafka-0", 1), foreign("nginx", "uid-nginx-2")];
    let before = fake.writes().len();
    round(&agent, &mut guard, &actor, &node(), &pods, at(301)).await;
    assert_eq!(writes_from(&fake, before), refused_round());
    assert_eq!(actor.refusals().count("uid-nginx-2"), 1);
    let before = fake.writes().len();
    round(&agent, &mut guard, &actor, &node(), &pods, at(601)).await;
    let deletes: Vec<_> = fake.writes()[before..]
        .iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.body.clone())
        .collect();
    assert_eq!(deletes, [json!({"preconditions": {"uid": "uid-nginx-2"}})]);
    assert_eq!(
        sample(
            &agent,
            "kpool_agent_guard_deletions_total{result=\"deleted\"}"
        ),
        Some(2.0)
    );
}

#[tokio::test]
async fn a_replaced_pod_is_not_deleted() {
    // 409: the uid precondition failed (a new pod holds the name): nothing deleted, no
    // deletion Event, the audit record says already-gone.
    let fake = FakeApi::with_pdb_forever();
    fake.script_deletions(&[409]);
    let actor = Actor::new(fake.client(), "pool-1", fast_retry());
    let agent = agent(opted_in(1, "enforce"));
    let pods = [broker("kafka-0", 1), foreign("nginx", "uid-old")];
    let records = round(
        &agent,
        &mut Guard::default(),
        &actor,
        &node(),
        &pods,
        Instant::now(),
    )
    .await;
    let mut expected = refused_round();
    expected.push(w("DELETE", NGINX, "", ""));
    assert_eq!(writes_from(&fake, 0), expected);
    assert_eq!(actions(&records), ["eviction-blocked", "already-gone"]);
    assert_eq!(
        sample(
            &agent,
            "kpool_agent_guard_deletions_total{result=\"already-gone\"}"
        ),
        Some(1.0)
    );
    assert_eq!(sample(&agent, "kpool_agent_pool_breached"), Some(0.0));
}

#[tokio::test]
async fn a_forbidden_deletion_is_reported_still_breached_and_tried_again_at_the_next_refusal() {
    // 403 (the chart grants delete only when the policy opts in): reported on the pod and
    // the Node, still breached, and tried again at the next refusal.
    let fake = FakeApi::with_pdb_forever();
    fake.script_deletions(&[403]);
    let actor = Actor::new(fake.client(), "pool-1", fast_retry());
    let agent = agent(opted_in(1, "enforce"));
    let mut guard = Guard::new(Duration::from_secs(300));
    let t0 = Instant::now();
    let pods = [broker("kafka-0", 1), foreign("nginx", "uid-nginx")];
    let records = round(&agent, &mut guard, &actor, &node(), &pods, t0).await;
    let mut expected = refused_round();
    expected.push(w("DELETE", NGINX, "", ""));
    expected.push(w("POST", DEFAULT_EVENTS, "PoolBreachDeleteFailed", "Pod"));
    expected.push(w("POST", DEFAULT_EVENTS, "PoolBreachDeleteFailed", "Node"));
    assert_eq!(writes_from(&fake, 0), expected);
    let note = fake.writes()[6].body["note"]
        .as_str()
        .expect("note")
        .to_owned();
    assert!(
        note.contains("deleting it at refusal 1 (guard.deleteAfterRefusals) failed: HTTP 403: pods is forbidden")
            && note.contains("the agent's role lacks delete on pods"),
        "{note}"
    );
    assert_eq!(actions(&records), ["eviction-blocked", "delete-failed"]);
    assert_eq!(
        sample(
            &agent,
            "kpool_agent_guard_deletions_total{result=\"delete-failed\"}"
        ),
        Some(1.0)
    );
    assert_eq!(sample(&agent, "kpool_agent_pool_breached"), Some(1.0));
    let before = fake.writes().len();
    let records = round(
        &agent,
        &mut guard,
        &actor,
        &node(),
        &pods,
        t0 + Duration::from_secs(300),
    )
    .await;
    assert_eq!(fake.writes()[before + 5].method, "DELETE");
    assert_eq!(records.last().map(|r| r.action.as_str()), Some("deleted"));
    assert_eq!(sample(&agent, "kpool_agent_pool_breached"), Some(0.0));
}

#[tokio::test]
async fn audit_mode_never_evicts_nor_deletes_even_when_opted_in() {
    // Audit mode: no eviction, so no refusal, no breach and no deletion; only reports.
    let fake = FakeApi::with_pdb_forever();
    let actor = Actor::new(fake.client(), "pool-1", fast_retry());
    let agent = agent(opted_in(1, "audit"));
    let mut guard = Guard::new(Duration::from_secs(300));
    let t0 = Instant::now();
    let pods = [broker("kafka-0", 1), foreign("nginx", "uid-nginx")];
    for at in [0, 300, 600] {
        let records = round(
            &agent,
            &mut guard,
            &actor,
            &node(),
            &pods,
            t0 + Duration::from_secs(at),
        )
        .await;
        assert_eq!(actions(&records), ["reported-audit-mode"]);
    }
    let log = fake.log();
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(log.iter().all(|r| r.method == "POST"
        && r.body["reason"] == "KpoolForeignPod"
        && r.body["action"] == "Report"));
    assert_eq!(
        sample(&agent, "kpool_agent_guard_eviction_refusals_total"),
        Some(0.0)
    );
    assert_eq!(sample(&agent, "kpool_agent_pool_breached"), Some(0.0));
}

#[tokio::test]
async fn a_second_broker_its_pdb_shields_is_never_deleted_even_when_opted_in() {
    let t0 = Instant::now();
    // Enforce: a second broker its (Kafka's) budget shields stays an eviction-blocked
    // report, never a deletion: that budget is what keeps partitions available.
    let fake = FakeApi::with_pdb_forever();
    let actor = Actor::new(fake.client(), "pool-1", fast_retry());
    let agent = agent(opted_in(1, "enforce"));
    let mut guard = Guard::new(Duration::from_secs(300));
    let pods = [broker("kafka-0", 1), broker("kafka-3", 500)];
    for at in [0, 300] {
        let records = round(
            &agent,
            &mut guard,
            &actor,
            &node(),
            &pods,
            t0 + Duration::from_secs(at),
        )
        .await;
        assert_eq!(actions(&records), ["eviction-blocked"]);
    }
    let log = fake.log();
    assert!(log.iter().all(|r| r.method == "POST"), "{log:?}");
    assert!(
        log.iter()
            .filter(|r| r.path.ends_with("/events"))
            .all(|r| r.body["reason"] == "KpoolSecondBroker")
    );
    assert_eq!(
        sample(&agent, "kpool_agent_guard_eviction_refusals_total"),
        Some(0.0)
    );
    assert_eq!(sample(&agent, "kpool_agent_pool_breached"), Some(0.0));
}
