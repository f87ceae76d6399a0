//! The agent's state: the last evaluated poll, the poll loop that refreshes it, and the
//! questions the API asks of it. Verdicts read the cache; nothing on the probe's path
//! talks to Kafka.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use kpool_cli::audit::{Action, AuditRecord, Decision, Subject};
use kpool_cli::clock::now_rfc3339;
use kpool_policy::Policy;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::health::{self, BrokerState, Health, Inputs, Verdict};
use crate::metrics::{BrokerLabel, Metrics, PodLabels};
use crate::overrides::{OverrideStatus, read_override};
use crate::pods::{LookupError, PodDirectory};
use crate::snapshot::Snapshot;

/// One poll, evaluated.
#[derive(Debug)]
pub struct Evaluated {
    pub health: Health,
    pub polled_at: Instant,
    /// Unix seconds of the poll.
    pub polled_unix: i64,
    /// BrokerState per broker id, for brokers whose exporter was read.
    pub broker_states: BTreeMap<i32, BrokerState>,
}

/// Where snapshots come from (the Kafka client in production, scripted in tests).
pub trait SnapshotSource: Send {
    /// Takes one snapshot.
    fn snapshot(&mut self) -> impl Future<Output = Result<Snapshot, String>> + Send;
}

/// A readiness answer for the API.
#[derive(Debug, Clone, Serialize)]
pub struct ReadyAnswer {
    pub namespace: String,
    pub pod: String,
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Age of the Kafka poll the verdict used, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poll_age_ms: Option<u64>,
}

/// The agent.
#[derive(Debug)]
pub struct Agent {
    policy: Arc<Policy>,
    pods: Arc<dyn PodDirectory>,
    metrics: Metrics,
    latest: RwLock<Option<Arc<Evaluated>>>,
    last_error: Mutex<Option<String>>,
    /// Broker pods the probe asked about: their exporters are read at each poll.
    asked: Mutex<BTreeMap<i32, (String, String)>>,
    /// Overrides in force, by pod, with their expiry (audited when first used).
    overrides: Mutex<BTreeMap<(String, String), OffsetDateTime>>,
    /// Offenders named per list.
    pub offenders: usize,
    /// The last overhead sample, and the last sampling error.
    overhead: RwLock<Option<Arc<crate::overhead::Overhead>>>,
    overhead_error: Mutex<Option<String>>,
}

impl Agent {
    /// An agent with no poll yet.
    pub fn new(policy: Arc<Policy>, pods: Arc<dyn PodDirectory>) -> Arc<Self> {
        Arc::new(Self {
            policy,
            pods,
            metrics: Metrics::new(),
            latest: RwLock::new(None),
            last_error: Mutex::new(None),
            asked: Mutex::new(BTreeMap::new()),
            overrides: Mutex::new(BTreeMap::new()),
            offenders: health::DEFAULT_OFFENDERS,
            overhead: RwLock::new(None),
            overhead_error: Mutex::new(None),
        })
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The last evaluated poll.
    pub fn latest(&self) -> Option<Arc<Evaluated>> {
        self.latest.read().ok().and_then(|l| l.clone())
    }

    /// The last poll error, if the last poll failed.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// Evaluates and publishes a snapshot.
    pub fn publish(&self, snapshot: &Snapshot, broker_states: BTreeMap<i32, BrokerState>) {
        let health = health::evaluate(snapshot, &self.policy, self.offenders);
        self.metrics.record_health(&health);
        self.metrics.broker_state.clear();
        for (id, state) in &broker_states {
            self.metrics
                .broker_state
                .get_or_create(&BrokerLabel { broker: *id })
                .set(state.code());
        }
        let polled_unix = OffsetDateTime::now_utc().unix_timestamp();
        self.metrics.last_success.set(polled_unix);
        let evaluated = Arc::new(Evaluated {
            health,
            polled_at: Instant::now(),
            polled_unix,
            broker_states,
        });
        if let Ok(mut l) = self.latest.write() {
            *l = Some(evaluated);
        }
        if let Ok(mut e) = self.last_error.lock() {
            *e = None;
        }
    }

    /// Publishes an overhead sample (API and gauges).
    pub fn publish_overhead(&self, o: crate::overhead::Overhead) {
        self.metrics.record_overhead(&o);
        if let Ok(mut l) = self.overhead.write() {
            *l = Some(Arc::new(o));
        }
        if let Ok(mut e) = self.overhead_error.lock() {
            *e = None;
        }
    }

    /// Records a failed overhead sample (the previous one keeps serving).
    pub fn overhead_failed(&self, error: String) {
        self.metrics.overhead_sample_errors.inc();
        if let Ok(mut e) = self.overhead_error.lock() {
            *e = Some(error);
        }
    }

    /// The last overhead sample and the last sampling error.
    pub fn overhead(&self) -> (Option<Arc<crate::overhead::Overhead>>, Option<String>) {
        (
            self.overhead.read().ok().and_then(|o| o.clone()),
            self.overhead_error.lock().ok().and_then(|e| e.clone()),
        )
    }

    /// Sets the gauges that are read off state rather than updated by events (called
    /// before each scrape).
    pub fn refresh_scrape_gauges(&self) {
        let outage = self.pods.outage(Instant::now()).map_or(0, |o| {
            i64::try_from(o.duration.as_secs()).unwrap_or(i64::MAX)
        });
        self.metrics.kube_watch_outage.set(outage);
    }

    /// Records a failed poll (the previous result stays until it goes stale).
    pub fn poll_failed(&self, error: String) {
        self.metrics.poll_errors.inc();
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(error);
        }
    }

    /// The verdict for pod `namespace/pod` at `now`.
    pub fn ready(
        &self,
        namespace: &str,
        pod: &str,
        now: OffsetDateTime,
    ) -> Result<ReadyAnswer, LookupError> {
        let info = self.pods.lookup(namespace, pod)?;
        if let Ok(mut asked) = self.asked.lock() {
            asked.insert(info.broker_id, (namespace.to_owned(), pod.to_owned()));
        }
        let latest = self.latest();
        let status = read_override(|k| info.annotation(k), now);
        let active = match &status {
            OverrideStatus::Active(o) => Some(o),
            _ => None,
        };
        self.track_override(namespace, pod, &status);
        let readiness = &self.policy.spec().readiness;
        let age = latest.as_ref().map(|e| e.polled_at.elapsed());
        let pods_outage = self.pods.outage(Instant::now());
        let verdict = health::verdict(Inputs {
            health: latest.as_ref().map(|e| &e.health),
            age: age.unwrap_or(Duration::MAX),
            stale_after: Duration::from_secs(u64::from(readiness.stale_after_seconds)),
            broker_id: info.broker_id,
            mode: readiness.verdict,
            state: latest
                .as_ref()
                .and_then(|e| e.broker_states.get(&info.broker_id).copied()),
            active_override: active,
            pods_outage: pods_outage.as_ref(),
        });
        self.metrics
            .pod_ready
            .get_or_create(&PodLabels {
                namespace: namespace.to_owned(),
                pod: pod.to_owned(),
            })
            .set(i64::from(verdict.ready));
        Ok(ReadyAnswer {
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
            verdict,
            poll_age_ms: age.map(|a| u64::try_from(a.as_millis()).unwrap_or(u64::MAX)),
        })
    }

    /// Audits an override the first time it decides a pod's readiness, and when it ends;
    /// keeps the active-overrides gauge current.
    fn track_override(&self, namespace: &str, pod: &str, status: &OverrideStatus) {
        let Ok(mut seen) = self.overrides.lock() else {
            return;
        };
        let key = (namespace.to_owned(), pod.to_owned());
        let line = match status {
            OverrideStatus::Active(o) => {
                let new = seen.insert(key, o.until) != Some(o.until);
                new.then(|| {
                    (
                        Decision::Override,
                        format!("override until {}: {}", o.until_text, o.reason),
                        Action::ReportedReady,
                    )
                })
            }
            OverrideStatus::Expired { until } => seen.remove(&key).map(|_| {
                (
                    Decision::OverrideExpired,
                    format!("override expired at {until}"),
                    Action::VerdictFromKafka,
                )
            }),
            OverrideStatus::Malformed { value, error } => {
                seen.remove(&key);
                Some((
                    Decision::OverrideIgnored,
                    format!("kpool.io/readiness-override {value:?} ignored: {error}"),
                    Action::VerdictFromKafka,
                ))
            }
            OverrideStatus::None => seen.remove(&key).map(|_| {
                (
                    Decision::OverrideRemoved,
                    "override annotation removed".to_owned(),
                    Action::VerdictFromKafka,
                )
            }),
        };
        self.metrics
            .active_overrides
            .set(i64::try_from(seen.len()).unwrap_or(i64::MAX));
        drop(seen);
        if let Some((decision, reason, action)) = line {
            let record = AuditRecord {
                time: now_rfc3339(),
                component: "agent",
                decision,
                subject: Subject {
                    namespace: namespace.to_owned(),
                    name: pod.to_owned(),
                    uid: String::new(),
                },
                reason,
                reason_code: decision.as_str().to_owned(),
                policy_hash: self.policy.hash().to_owned(),
                action,
                mode: self.policy.spec().mode,
                admission: None,
            };
            crate::audit::emit(&record);
        }
    }

    /// Pods whose exporters the poll reads: (broker id, namespace, pod).
    pub fn asked_pods(&self) -> Vec<(i32, String, String)> {
        self.asked
            .lock()
            .map(|a| {
                a.iter()
                    .map(|(id, (ns, p))| (*id, ns.clone(), p.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Polls forever (until `shutdown` turns true): on success publishes and waits `interval`;
/// on failure records it and retries with exponential backoff up to `interval`.
pub async fn poll_loop<S: SnapshotSource>(
    agent: Arc<Agent>,
    mut source: S,
    interval: Duration,
    exporter_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failures: u32 = 0;
    let mut backoff = crate::backoff::Backoff::new(Duration::from_millis(250), interval);
    loop {
        let start = Instant::now();
        let delay = match source.snapshot().await {
            Ok(snapshot) => {
                let states = read_broker_states(&agent, exporter_timeout).await;
                agent.publish(&snapshot, states);
                agent
                    .metrics
                    .poll_duration
                    .observe(start.elapsed().as_secs_f64());
                if failures > 0 {
                    tracing::info!(after_failures = failures, "Kafka poll succeeded again");
                }
                failures = 0;
                backoff.reset();
                interval
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::warn!(error = %e, failures, "Kafka poll failed");
                agent.poll_failed(e);
                backoff.next()
            }
        };
        if crate::backoff::sleep_or_stop(delay, &mut shutdown).await {
            return;
        }
    }
}

async fn read_broker_states(agent: &Agent, timeout: Duration) -> BTreeMap<i32, BrokerState> {
    let mut states = BTreeMap::new();
    let (Some(source), Some(template)) = (
        &agent.policy.spec().readiness.broker_state,
        agent.policy.broker_state_url(),
    ) else {
        return states;
    };
    for (id, namespace, pod) in agent.asked_pods() {
        let Some(ordinal) = kpool_policy::name_suffix_ordinal(&pod) else {
            continue;
        };
        let Ok(identity) = agent.policy.identity(&pod, &namespace, ordinal) else {
            continue;
        };
        let url = template.render(&identity);
        match crate::jmx::fetch_broker_state(&url, &source.metric, timeout).await {
            Ok(state) => {
                states.insert(id, state);
            }
            Err(e) => {
                tracing::warn!(broker = id, error = %e, "cannot read BrokerState; registration stands in")
            }
        }
    }
    states
}
