//! The guard's Kubernetes calls against a kube-rs `tower-test` mock API server that records
//! every request: the exact Eviction (policy/v1) and Event (events.k8s.io/v1) requests,
//! retry on 429, audit mode that never evicts, no eviction loop across rounds.

use std::collections::BTreeMap;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use kpool_agent::guard::act::{Actor, EvictOutcome, Retry};
use kpool_agent::guard::decide::{Guard, NodeFacts, PodFacts};
use kpool_agent::guard::watch::round;
use kpool_agent::pods::Standalone;
use kpool_agent::service::Agent;
use kpool_policy::Policy;
use kube::client::Body;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    body: Value,
}

/// A fake API server: answers evictions with the scripted status codes (then 201), Events
/// with 201, and records everything.
#[derive(Clone, Default)]
struct FakeApi {
    log: Arc<Mutex<Vec<Recorded>>>,
    eviction_codes: Arc<Mutex<Vec<u16>>>,
}

fn respond(code: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).expect("code"))
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).expect("json")))
        .expect("response")
}

impl FakeApi {
    fn with_evictions(codes: &[u16]) -> Self {
        let f = Self::default();
        *f.eviction_codes.lock().expect("lock") = codes.to_vec();
        f
    }

    fn log(&self) -> Vec<Recorded> {
        self.log.lock().expect("lock").clone()
    }

    fn client(&self) -> kube::Client {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let fake = self.clone();
        tokio::spawn(async move {
            let mut handle = pin!(handle);
            while let Some((request, send)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.expect("body");
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let path = parts.uri.path().to_owned();
                fake.log.lock().expect("lock").push(Recorded {
                    method: parts.method.to_string(),
                    path: path.clone(),
                    body: body.clone(),
                });
                let response = if path.ends_with("/eviction") {
                    let code = {
                        let mut codes = fake.eviction_codes.lock().expect("lock");
                        if codes.is_empty() {
                            201
                        } else {
                            codes.remove(0)
                        }
                    };
                    if code == 201 {
                        respond(201, &body)
                    } else {
                        respond(
                            code,
                            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                "message": "Cannot evict pod as it would violate the pod's disruption budget.",
                                "reason": "TooManyRequests", "code": code}),
                        )
                    }
                } else {
                    respond(201, &body)
                };
                send.send_response(response);
            }
        });
        kube::Client::new(service, "default")
    }
}

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
