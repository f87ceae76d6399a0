//! The running server: the admission listener over rustls (certificates hot-reloaded), the
//! plain-HTTP operations listener, and graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kpool_certs::tls::{ReloadEvent, ReloadingResolver};
use kpool_policy::Policy;
use kpool_serve::{Limits, Serving};
use tokio::task::JoinHandle;

use crate::admission::{Admission, AdmissionLimits, AppState, ops_router, router};
use crate::audit::{AuditLog, AuditTarget};
use crate::metrics::{Metrics, ResultLabel};

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Admission (HTTPS) listener.
    pub listen: SocketAddr,
    /// Health, readiness and metrics (plain HTTP) listener.
    pub metrics_listen: SocketAddr,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub policy: Arc<Policy>,
    pub audit: AuditTarget,
    /// Admission work under way at once (engine slots, request body bytes).
    pub admission: AdmissionLimits,
    /// Connections, deadlines and HTTP/2 streams of the admission listener.
    pub limits: Limits,
    /// How often the certificate files are checked for changes.
    pub reload_interval: Duration,
    /// At shutdown, how long `/readyz` reports not-ready before the listener closes, so the
    /// Service stops routing here first.
    pub shutdown_delay: Duration,
    /// At shutdown, how long in-flight requests may take to finish.
    pub shutdown_grace: Duration,
}

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("serving certificate: {0}")]
    Cert(#[from] kpool_certs::CertError),
    #[error("audit log: {0}")]
    Audit(std::io::Error),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        source: std::io::Error,
    },
}

/// A started server.
#[derive(Debug)]
pub struct Running {
    /// Where the admission listener is bound (useful with port 0).
    pub tls_addr: SocketAddr,
    /// Where the operations listener is bound.
    pub ops_addr: SocketAddr,
    state: Arc<AppState>,
    tls: Serving,
    ops: Serving,
    watcher: JoinHandle<()>,
    shutdown_delay: Duration,
    shutdown_grace: Duration,
}

/// The operations listener's bounds: a handful of probes and scrapers.
pub fn ops_limits() -> Limits {
    Limits {
        max_connections: 64,
        handshake_timeout: Duration::from_secs(5),
        header_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(60),
        request_timeout: Duration::from_secs(10),
        max_h2_streams: 8,
    }
}

/// Descriptors kept for everything but the listeners' connections: the audit log,
/// certificate reloads, the runtime.
const FD_RESERVE: u64 = 64;

async fn bind(addr: SocketAddr, what: &'static str) -> Result<tokio::net::TcpListener, ServeError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, what, source })
}

/// Loads the certificate, binds both listeners and starts serving. Ready once this returns.
pub async fn start(cfg: ServeConfig) -> Result<Running, ServeError> {
    kpool_certs::tls::install_crypto_provider();
    let metrics = Arc::new(Metrics::new());
    let resolver = ReloadingResolver::load(&cfg.tls_cert, &cfg.tls_key)?;
    let info = resolver.current();
    metrics.cert_not_after.set(info.not_after.unix_timestamp());
    tracing::info!(
        subject = %info.subject,
        dns = ?info.dns_names,
        not_after = %info.not_after,
        "serving certificate loaded"
    );
    let watcher = {
        let m = metrics.clone();
        kpool_certs::tls::spawn_watcher(resolver.clone(), cfg.reload_interval, move |event| {
            match event {
                ReloadEvent::Reloaded(info) => {
                    m.cert_reloads
                        .get_or_create(&ResultLabel { result: "success" })
                        .inc();
                    m.cert_not_after.set(info.not_after.unix_timestamp());
                    tracing::info!(subject = %info.subject, not_after = %info.not_after, "serving certificate reloaded");
                }
                ReloadEvent::Failed(reason) => {
                    m.cert_reloads
                        .get_or_create(&ResultLabel { result: "failure" })
                        .inc();
                    tracing::error!(%reason, "serving certificate not reloaded; the previous one is still served");
                }
            }
        })
    };
    let audit = AuditLog::start(cfg.audit.clone(), metrics.clone()).map_err(ServeError::Audit)?;
    let listener_metrics = metrics.listeners.clone();
    let state = AppState::with_limits(
        Admission::new(cfg.policy.clone(), metrics, audit),
        cfg.admission,
    );

    let tls_listener = bind(cfg.listen, "admission, HTTPS").await?;
    let ops_listener = bind(cfg.metrics_listen, "health and metrics, HTTP").await?;
    let (mut limits, mut ops) = (cfg.limits.clone(), ops_limits());
    if let Some(soft) = kpool_serve::fd_soft_limit() {
        let mut caps = [limits.max_connections, ops.max_connections];
        if kpool_serve::fit_caps(&mut caps, FD_RESERVE, soft) {
            tracing::warn!(
                fd_limit = soft,
                admission = caps[0],
                ops = caps[1],
                "connection caps lowered to fit the open-file limit"
            );
        }
        (limits.max_connections, ops.max_connections) = (caps[0], caps[1]);
    }
    let server_config = Arc::new(kpool_certs::tls::server_config(resolver));
    let tls = kpool_serve::spawn(
        "admission",
        tls_listener,
        Some(server_config),
        router(state.clone()),
        limits.clone(),
        &listener_metrics,
    );
    state.watch_listener(tls.stats().clone());
    let ops = kpool_serve::spawn(
        "ops",
        ops_listener,
        None,
        ops_router(state.clone()),
        ops,
        &listener_metrics,
    );
    let (tls_addr, ops_addr) = (tls.addr(), ops.addr());

    state.ready.store(true, Ordering::Release);
    tracing::info!(
        %tls_addr,
        %ops_addr,
        policy = %state.admission.policy().hash(),
        max_connections = limits.max_connections,
        max_concurrency = state.limits().max_concurrency,
        "kpool-webhook serving"
    );
    Ok(Running {
        tls_addr,
        ops_addr,
        state,
        tls,
        ops,
        watcher,
        shutdown_delay: cfg.shutdown_delay,
        shutdown_grace: cfg.shutdown_grace,
    })
}

impl Running {
    /// The shared state (readiness flag, handler).
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Graceful shutdown: readiness goes false, then the listener stops accepting and
    /// in-flight requests finish (up to the grace period), then the audit log is flushed.
    pub async fn shutdown(self) {
        self.state.ready.store(false, Ordering::Release);
        tracing::info!(delay = ?self.shutdown_delay, "shutting down: not ready");
        tokio::time::sleep(self.shutdown_delay).await;
        self.tls.shutdown(self.shutdown_grace).await;
        self.ops.shutdown(Duration::from_secs(1)).await;
        self.watcher.abort();
        self.state.admission.audit().sync();
        tracing::info!("shut down");
    }
}
