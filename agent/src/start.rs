//! Starting and stopping the whole agent, as `kpool-agent run` does: the Kafka poll loop,
//! the node view and guard (in a cluster), the overhead sampler, and the API listener
//! (hardened by `kpool-serve`). A test or another server starts the same agent with
//! [`start`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kpool_policy::Policy;
use kpool_serve::{Limits, Serving};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::guard::Guard;
use crate::guard::act::{Actor, Retry};
use crate::guard::watch::{guard_loop, overhead_loop};
use crate::kafka::{KafkaClient, KafkaConfig, KafkaError, TlsSettings};
use crate::nodeview::NodeView;
use crate::overhead::{Sampler, allocatable_of};
use crate::pods::{KubePods, PodDirectory, Standalone};
use crate::service::{Agent, SnapshotSource, poll_loop};
use crate::snapshot::Snapshot;

/// Where the agent learns which pods are on its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// No Kubernetes API: pods map to brokers by the ordinal in their name; no guard, no
    /// overrides.
    Standalone,
    /// Watch this node's pods and Node (the guard and overhead attribution run too).
    Node(String),
}

/// Everything [`start`] needs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub policy: Arc<Policy>,
    pub placement: Placement,
    /// The API listener.
    pub listen: SocketAddr,
    /// Its connection cap and deadlines.
    pub limits: Limits,
    /// Bootstrap brokers (`host:port`).
    pub bootstrap: Vec<String>,
    pub kafka_tls: Option<TlsSettings>,
    pub kafka_timeout: Duration,
    pub poll_interval: Duration,
    pub exporter_timeout: Duration,
    pub cgroup_root: PathBuf,
    pub overhead_interval: Duration,
    pub guard_interval: Duration,
    pub guard_backoff: Duration,
    /// kpool's namespace (the downward API's metadata.namespace): where the racks Lease and
    /// its Events live. Needed only with `racks.selfHealing`.
    pub namespace: Option<String>,
}

/// The API listener's default bounds: the brokers' probes and a scraper, not a crowd.
pub fn api_limits() -> Limits {
    Limits {
        max_connections: 128,
        handshake_timeout: Duration::from_secs(5),
        header_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(30),
        request_timeout: Duration::from_secs(10),
        max_h2_streams: 8,
    }
}

/// Descriptors kept for everything but API connections: Kafka and exporter connections,
/// the Kubernetes watches, cgroup files.
const FD_RESERVE: u64 = 64;

/// Why the agent cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("Kafka client: {0}")]
    Kafka(#[from] KafkaError),
    #[error(
        "cannot reach the Kubernetes API (in-cluster config or KUBECONFIG): {0}; run with --standalone to map pods by name instead"
    )]
    Kube(#[source] kube::Error),
    #[error(
        "racks.selfHealing is on but the agent does not know its namespace, where the Lease kpool-racks lives: set POD_NAMESPACE (the downward API's metadata.namespace) or --namespace"
    )]
    NoNamespace,
    #[error("cannot listen on {addr} (agent API, HTTP): {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A started agent.
#[derive(Debug)]
pub struct Running {
    agent: Arc<Agent>,
    api: Serving,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// The Kafka client as the poll loop's snapshot source.
struct Kafka(KafkaClient);

impl SnapshotSource for Kafka {
    async fn snapshot(&mut self) -> Result<Snapshot, String> {
        self.0.snapshot().await.map_err(|e| e.to_string())
    }
}

/// Starts every part of the agent and the API listener; serving once this returns. Must be
/// called within a Tokio runtime.
pub async fn start(cfg: AgentConfig) -> Result<Running, StartError> {
    let client = KafkaClient::new(KafkaConfig {
        bootstrap: cfg.bootstrap.clone(),
        timeout: cfg.kafka_timeout,
        tls: cfg.kafka_tls.clone(),
        client_id: format!("kpool-agent/{}", env!("CARGO_PKG_VERSION")),
    })?;
    let policy = cfg.policy.clone();
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let (pods, view): (Arc<dyn PodDirectory>, _) = match &cfg.placement {
        Placement::Standalone => (Arc::new(Standalone::new(policy.clone())), None),
        Placement::Node(node) => {
            kpool_cli::install_crypto_provider();
            let kube = kube::Client::try_default()
                .await
                .map_err(StartError::Kube)?;
            // One watch of every pod on the node serves both the probe's broker lookups and
            // the guard.
            let (view, watches) = NodeView::start(kube.clone(), node);
            // The watches never end on their own; they stop with the runtime.
            drop(watches);
            let pods = KubePods::from_view(&view, policy.clone());
            tracing::info!(%node, "watching the pods of this node and the node");
            (
                Arc::new(pods) as Arc<dyn PodDirectory>,
                Some((view, kube, node.clone())),
            )
        }
    };
    let agent = Agent::new(policy.clone(), pods);
    let sampler = match Sampler::new(&cfg.cgroup_root) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "resource overhead is not sampled");
            agent.overhead_failed(e.to_string());
            None
        }
    };
    match view {
        None => {
            if let Some(sampler) = sampler {
                tasks.push(tokio::spawn(overhead_loop(
                    agent.clone(),
                    sampler,
                    cfg.overhead_interval,
                    || (Default::default(), None),
                    stop_rx.clone(),
                )));
            }
        }
        Some((view, kube, node)) => {
            if policy.spec().racks.self_healing {
                let namespace = cfg.namespace.clone().ok_or(StartError::NoNamespace)?;
                tasks.push(tokio::spawn(heal_task(
                    &cfg,
                    agent.clone(),
                    kube.clone(),
                    &node,
                    namespace,
                    stop_rx.clone(),
                )?));
            }
            let actor = Actor::new(kube, &node, Retry::default());
            tasks.push(tokio::spawn(guard_loop(
                agent.clone(),
                view.clone(),
                actor,
                Guard::new(cfg.guard_backoff),
                cfg.guard_interval,
                stop_rx.clone(),
            )));
            if let Some(sampler) = sampler {
                let p = policy.clone();
                let context = move || {
                    (
                        view.broker_uids(&p),
                        view.node().and_then(|n| allocatable_of(&n)),
                    )
                };
                tasks.push(tokio::spawn(overhead_loop(
                    agent.clone(),
                    sampler,
                    cfg.overhead_interval,
                    context,
                    stop_rx.clone(),
                )));
            }
        }
    }
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let mut limits = cfg.limits.clone();
    if let Some(soft) = kpool_serve::fd_soft_limit() {
        let mut caps = [limits.max_connections];
        if kpool_serve::fit_caps(&mut caps, FD_RESERVE, soft) {
            tracing::warn!(
                fd_limit = soft,
                api = caps[0],
                "API connection cap lowered to fit the open-file limit"
            );
        }
        limits.max_connections = caps[0];
    }
    tasks.push(tokio::spawn(poll_loop(
        agent.clone(),
        Kafka(client),
        cfg.poll_interval,
        cfg.exporter_timeout,
        stop_rx,
    )));
    let api = kpool_serve::spawn(
        "api",
        listener,
        None,
        crate::api::router(agent.clone()),
        limits.clone(),
        &agent.metrics().listeners,
    );
    tracing::info!(
        listen = %api.addr(),
        bootstrap = ?cfg.bootstrap,
        standalone = cfg.placement == Placement::Standalone,
        policy = %policy.hash(),
        max_connections = limits.max_connections,
        "kpool-agent serving"
    );
    Ok(Running {
        agent,
        api,
        stop,
        tasks,
    })
}

/// The racks healer (`racks.selfHealing`): its own Kafka connection, the Lease, Events on
/// it. Renews within a third of the Lease duration, so a healthy holder never loses it.
fn heal_task(
    cfg: &AgentConfig,
    agent: Arc<Agent>,
    kube: kube::Client,
    node: &str,
    namespace: String,
    stop: watch::Receiver<bool>,
) -> Result<impl Future<Output = ()> + use<>, StartError> {
    let kafka = KafkaClient::new(KafkaConfig {
        bootstrap: cfg.bootstrap.clone(),
        timeout: cfg.kafka_timeout,
        tls: cfg.kafka_tls.clone(),
        client_id: format!("kpool-agent-racks/{}", env!("CARGO_PKG_VERSION")),
    })?;
    let interval = cfg.poll_interval.max(Duration::from_secs(1));
    let lease = crate::lease::LeaseLock::new(
        kube.clone(),
        &namespace,
        crate::heal::LEASE_NAME,
        &format!("kpool-agent-{node}"),
        (interval * 3).max(Duration::from_secs(15)),
    );
    tracing::info!(%namespace, lease = crate::heal::LEASE_NAME, "racks self-healing on: one agent at a time heals");
    let healer = crate::heal::Healer {
        agent,
        policy: cfg.policy.clone(),
        kafka,
        lease,
        events: Some((Actor::new(kube, node, Retry::default()), namespace)),
        interval,
        apply: crate::racks::apply::ApplyConfig {
            timeout: Some(Duration::from_secs(30 * 60)),
            ..crate::racks::apply::ApplyConfig::default()
        },
        audit: Arc::new(crate::audit::emit),
    };
    Ok(healer.run(stop))
}

impl Running {
    /// Where the API listens (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.api.addr()
    }

    /// The agent (its state, metrics, verdicts).
    pub fn agent(&self) -> &Arc<Agent> {
        &self.agent
    }

    /// The API listener's live numbers.
    pub fn api_stats(&self) -> &Arc<kpool_serve::Stats> {
        self.api.stats()
    }

    /// Stops accepting, lets requests in flight finish (up to 5 s), then stops the loops.
    pub async fn shutdown(self) {
        self.api.shutdown(Duration::from_secs(5)).await;
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        tracing::info!("shut down");
    }
}
