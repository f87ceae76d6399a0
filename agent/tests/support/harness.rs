//! The agent as tests run it: the real Kafka client, poll loop and HTTP API, with a
//! 1 s staleness bound and a 100 ms poll interval.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt as _;
use kpool_agent::kafka::{KafkaClient, KafkaConfig};
use kpool_agent::pods::{PodDirectory, Standalone};
use kpool_agent::service::{Agent, SnapshotSource, poll_loop};
use kpool_agent::snapshot::Snapshot;
use kpool_policy::{DEFAULT_POLICY_YAML, Policy};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::ServiceExt as _;

/// Poll interval of the harness.
pub const INTERVAL: Duration = Duration::from_millis(100);
/// Kafka request timeout of the harness.
pub const TIMEOUT: Duration = Duration::from_millis(300);

pub struct Source(KafkaClient);

impl SnapshotSource for Source {
    async fn snapshot(&mut self) -> Result<Snapshot, String> {
        self.0.snapshot().await.map_err(|e| e.to_string())
    }
}

pub struct Running {
    pub agent: Arc<Agent>,
    stop: watch::Sender<bool>,
    poller: JoinHandle<()>,
}

impl Running {
    /// The harness's policy: the built-in default with a 1 s staleness bound.
    pub fn policy() -> Arc<Policy> {
        let policy =
            DEFAULT_POLICY_YAML.replacen("staleAfterSeconds: 30", "staleAfterSeconds: 1", 1);
        Arc::new(Policy::from_yaml(&policy, "test").expect("policy"))
    }

    /// The agent with pods mapped by name (standalone).
    pub fn start(bootstrap: String) -> Self {
        let policy = Self::policy();
        Self::start_with(bootstrap, policy.clone(), Arc::new(Standalone::new(policy)))
    }

    /// The agent with `pods` as its pod directory.
    pub fn start_with(bootstrap: String, policy: Arc<Policy>, pods: Arc<dyn PodDirectory>) -> Self {
        let client = KafkaClient::new(KafkaConfig {
            bootstrap: vec![bootstrap],
            timeout: TIMEOUT,
            ..KafkaConfig::default()
        })
        .expect("client");
        let agent = Agent::new(policy, pods);
        let (stop, stop_rx) = watch::channel(false);
        let poller = tokio::spawn(poll_loop(
            agent.clone(),
            Source(client),
            INTERVAL,
            Duration::from_millis(200),
            stop_rx,
        ));
        Self {
            agent,
            stop,
            poller,
        }
    }

    pub async fn ready(&self, pod: &str) -> (u16, Value) {
        let resp = kpool_agent::api::router(self.agent.clone())
            .oneshot(
                Request::get(format!("/v1/ready/streaming/{pod}"))
                    .body(Body::empty())
                    .expect("req"),
            )
            .await
            .expect("infallible");
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, serde_json::from_slice(&body).expect("json"))
    }

    /// The `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        let resp = kpool_agent::api::router(self.agent.clone())
            .oneshot(Request::get("/metrics").body(Body::empty()).expect("req"))
            .await
            .expect("infallible");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        String::from_utf8(body.to_vec()).expect("utf-8")
    }

    /// Asks until `want` holds or `within` passes; returns the last answer.
    pub async fn until(
        &self,
        pod: &str,
        within: Duration,
        want: impl Fn(u16, &Value) -> bool,
    ) -> (u16, Value) {
        let start = Instant::now();
        loop {
            let (s, v) = self.ready(pod).await;
            if want(s, &v) || start.elapsed() > within {
                return (s, v);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn ready_within(&self, within: Duration, what: &str) {
        let (s, v) = self.until("kafka-1", within, |s, _| s == 200).await;
        assert_eq!(s, 200, "{what}: {v}");
    }

    pub async fn stale_within(&self, within: Duration, what: &str) -> Value {
        let (s, v) = self
            .until("kafka-1", within, |s, v| s == 503 && is_stale(v))
            .await;
        assert!(s == 503 && is_stale(&v), "{what}: {s} {v}");
        v
    }

    pub fn last_error(&self) -> String {
        self.agent.last_error().unwrap_or_default()
    }

    pub async fn stop(self) {
        self.stop.send(true).expect("stop");
        tokio::time::timeout(Duration::from_secs(5), self.poller)
            .await
            .expect("the poll loop stops promptly even while Kafka misbehaves")
            .expect("poller task");
    }
}

pub fn is_stale(v: &Value) -> bool {
    v["reasons"].as_array().is_some_and(|r| {
        r.iter()
            .any(|r| r.as_str().is_some_and(|r| r.contains("stale")))
    })
}
