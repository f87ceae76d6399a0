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
use kpool_agent::guard::decide::{Guard, NodeFacts, PodFacts};
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
        owner_kinds: vec!["StatefulSet".into()],
        service_account: "kafka".into(),
        gone: false,
    }
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
    foreign.owner_kinds = vec!["ReplicaSet".into()];
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
    assert_eq!(log.len(), 4, "{log:?}");
    assert_eq!(
        log[3].path,
        "/apis/events.k8s.io/v1/namespaces/default/events"
    );
    assert_eq!(log[3].body["reason"], "KpoolForeignPod");
    assert!(
        log[3].body["note"]
            .as_str()
            .expect("note")
            .contains("eviction refused 3 times")
    );
    assert_eq!(records[0].action, "eviction-blocked");
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
            .all(|r| r.action == "reported-audit-mode" && r.mode == "audit")
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
