//! The running server: the admission listener over rustls (certificates hot-reloaded), the
//! plain-HTTP operations listener, and graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;
use hyper_util::rt::TokioTimer;
use kpool_certs::tls::{ReloadEvent, ReloadingResolver};
use kpool_policy::Policy;
use tokio::task::JoinHandle;

use crate::admission::{Admission, AppState, ops_router, router};
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
    /// Admission requests answered at once; more wait.
    pub max_concurrency: usize,
    /// A client must send its request headers within this time.
    pub header_read_timeout: Duration,
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
    tls: (Handle<SocketAddr>, JoinHandle<std::io::Result<()>>),
    ops: (Handle<SocketAddr>, JoinHandle<std::io::Result<()>>),
    watcher: JoinHandle<()>,
    shutdown_delay: Duration,
    shutdown_grace: Duration,
}

fn bind(addr: SocketAddr, what: &'static str) -> Result<std::net::TcpListener, ServeError> {
    let l = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| ServeError::Bind { addr, what, source })?;
    Ok(l)
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
    let state = AppState::new(Admission::new(cfg.policy.clone(), metrics, audit));

    let tls_listener = bind(cfg.listen, "admission, HTTPS")?;
    let ops_listener = bind(cfg.metrics_listen, "health and metrics, HTTP")?;
    let tls_addr = local_addr(&tls_listener, cfg.listen);
    let ops_addr = local_addr(&ops_listener, cfg.metrics_listen);

    let tls_config = RustlsConfig::from_config(Arc::new(kpool_certs::tls::server_config(resolver)));
    let tls_handle = Handle::new();
    let mut tls_server = axum_server::from_tcp_rustls(tls_listener, tls_config)
        .map_err(|source| ServeError::Bind {
            addr: cfg.listen,
            what: "admission, HTTPS",
            source,
        })?
        .handle(tls_handle.clone());
    tls_server
        .http_builder()
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout);
    let app = router(state.clone(), cfg.max_concurrency);
    let tls_task = tokio::spawn(tls_server.serve(app.into_make_service()));

    let ops_handle = Handle::new();
    let ops_server = axum_server::from_tcp(ops_listener)
        .map_err(|source| ServeError::Bind {
            addr: cfg.metrics_listen,
            what: "health and metrics, HTTP",
            source,
        })?
        .handle(ops_handle.clone());
    let ops_task = tokio::spawn(ops_server.serve(ops_router(state.clone()).into_make_service()));

    state.ready.store(true, Ordering::Release);
    tracing::info!(%tls_addr, %ops_addr, policy = %state.admission.policy().hash(), "kpool-webhook serving");
    Ok(Running {
        tls_addr,
        ops_addr,
        state,
        tls: (tls_handle, tls_task),
        ops: (ops_handle, ops_task),
        watcher,
        shutdown_delay: cfg.shutdown_delay,
        shutdown_grace: cfg.shutdown_grace,
    })
}

fn local_addr(l: &std::net::TcpListener, fallback: SocketAddr) -> SocketAddr {
    l.local_addr().unwrap_or(fallback)
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
        self.tls.0.graceful_shutdown(Some(self.shutdown_grace));
        match self.tls.1.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "admission listener ended with an error"),
            Err(e) => tracing::error!(error = %e, "admission listener task failed"),
        }
        self.ops.0.graceful_shutdown(Some(Duration::from_secs(1)));
        let _ = self.ops.1.await;
        self.watcher.abort();
        self.state.admission.audit().sync();
        tracing::info!("shut down");
    }
}
