//! `kpool-mesh serve`: the control plane process. A membership loop
//! ([`membership::Membership`]) publishes snapshots; the ADS server
//! ([`crate::xds::server`]) serves the latest to every client sidecar; a small HTTP
//! listener answers `/readyz` (ready once the first complete snapshot is published),
//! `/healthz` and `/metrics`.
//!
//! Any number of replicas can run side by side: each follows Kafka itself and serves the
//! full snapshot, and since versions are content hashes, a sidecar that moves to another
//! replica is sent only what differs. No leader is needed.

pub mod membership;
pub mod metrics;
pub mod pods;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kpool_agent::kafka::KafkaClient;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use membership::{AuditSink, Membership, MembershipOptions};
pub use metrics::MeshMetrics;

use crate::xds::{AdsService, Snapshot};

/// How long open HTTP requests may take to finish at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What a running control plane is made of (the binary builds it from flags; tests
/// directly).
#[derive(Debug)]
pub struct ServeConfig {
    pub membership: MembershipOptions,
    /// The Kafka client of the membership (none: pinned brokers only).
    pub kafka: Option<KafkaClient>,
    /// TLS of the ADS listener (none: plaintext gRPC).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The ADS listener's bounds ([`crate::xds::server::ads_limits`]).
    pub ads_limits: kpool_serve::Limits,
    /// Broker pods of this Kubernetes cluster and the signal that one changed (none:
    /// `--standalone`).
    pub pods: Option<(Arc<dyn pods::PodAddresses>, Arc<tokio::sync::Notify>)>,
}

/// Runs the control plane on `xds` (ADS) and `http` (readiness, metrics) until `shutdown`
/// resolves, writing audit lines to `audit`.
pub async fn run(
    config: ServeConfig,
    xds: TcpListener,
    http: Option<TcpListener>,
    metrics: Arc<MeshMetrics>,
    audit: AuditSink,
    shutdown: impl Future<Output = ()>,
) {
    let xds_addr = xds
        .local_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    let (publish, snapshots) = watch::channel::<Option<Arc<Snapshot>>>(None);
    let (stop, stopped) = watch::channel(false);
    let membership = Membership::new(
        config.membership,
        config.kafka,
        publish,
        metrics.clone(),
        audit,
    );
    let membership = match config.pods {
        Some((pods, wake)) => membership.with_pods(pods, wake),
        None => membership,
    };
    let membership = tokio::spawn(membership.run(stopped));
    let registry = Arc::new(metrics.registry());
    let http = http.map(|listener| {
        kpool_serve::spawn(
            "metrics",
            listener,
            None,
            router(metrics.clone(), registry),
            kpool_serve::Limits::default(),
            &metrics.listeners,
        )
    });
    let service = AdsService::new(snapshots, metrics.xds.clone());
    let ads = crate::xds::server::spawn(
        xds,
        service,
        config.tls,
        config.ads_limits,
        &metrics.listeners,
    );
    tracing::info!(xds = xds_addr, http = ?http.as_ref().map(kpool_serve::Serving::addr), "kpool-mesh serve started");

    shutdown.await;
    // Stopping the membership drops the publisher, which ends every ADS stream; then the
    // ADS listener has nothing left to drain.
    let _ = stop.send(true);
    let _ = membership.await;
    ads.shutdown(SHUTDOWN_GRACE).await;
    if let Some(http) = http {
        http.shutdown(SHUTDOWN_GRACE).await;
    }
    tracing::info!("kpool-mesh serve stopped");
}

#[derive(Clone)]
struct Http {
    metrics: Arc<MeshMetrics>,
    registry: Arc<Registry>,
}

/// `/readyz`, `/healthz`, `/metrics`.
pub fn router(metrics: Arc<MeshMetrics>, registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/readyz", get(readyz))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics_text))
        .with_state(Http { metrics, registry })
}

async fn readyz(State(h): State<Http>) -> Response {
    if h.metrics.is_ready() {
        let stale = if h.metrics.is_stale() {
            " (stale: Kafka does not answer; serving the last known brokers)"
        } else {
            ""
        };
        (StatusCode::OK, format!("ready{stale}\n")).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no complete snapshot yet (waiting for Kafka Metadata)\n",
        )
            .into_response()
    }
}

async fn metrics_text(State(h): State<Http>) -> Response {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &h.registry).is_err() {
        out.clear();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// The ADS listener's TLS from `--tls-cert` (a PEM certificate chain, leaf first) and
/// `--tls-key` (its PEM private key), checked here so a bad file is named at start rather
/// than reported as a bare TLS error; served as kpool's servers serve TLS (TLS 1.2 and 1.3,
/// ALPN h2; `kpool_certs::tls`). Handshakes are bounded by the ADS listener's limits. The
/// files are read once: a rotated certificate needs a restart.
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<rustls::ServerConfig>, crate::MeshError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read = |flag: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| {
            crate::MeshError::Usage(format!("{flag} {}: cannot read it: {e}", path.display()))
        })
    };
    let cert_pem = read("--tls-cert", cert)?;
    let key_pem = read("--tls-key", key)?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            crate::MeshError::Usage(format!(
                "--tls-cert {}: expected PEM certificates: {e}",
                cert.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(crate::MeshError::Usage(format!(
            "--tls-cert {}: expected a PEM certificate chain (BEGIN CERTIFICATE), found none",
            cert.display()
        )));
    }
    PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        crate::MeshError::Usage(format!(
            "--tls-key {}: expected a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
            key.display()
        ))
    })?;
    let resolver = kpool_certs::tls::ReloadingResolver::load(cert, key).map_err(|e| {
        crate::MeshError::Usage(format!(
            "--tls-cert {} / --tls-key {}: {e}",
            cert.display(),
            key.display()
        ))
    })?;
    Ok(Arc::new(kpool_certs::tls::server_config(resolver)))
}

/// `--config-dir` as the served clusters name it: absolute, without a trailing slash.
pub fn config_dir(dir: &std::path::Path) -> Result<String, crate::MeshError> {
    crate::bundle::dir_string("--config-dir", dir)
}

/// The accept queue a listener asks for (the kernel caps it at `net.core.somaxconn`,
/// 4096 by default): 1,000 sidecars reconnecting at once to a replica (after the other went
/// away) would overflow tokio's default of 1024, and the connections past it be reset.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` (address reuse on, as tokio's `TcpListener::bind`) with an accept queue of
/// [`LISTEN_BACKLOG`], naming `flag` and the address in the error.
pub async fn bind(flag: &str, addr: SocketAddr) -> Result<TcpListener, std::io::Error> {
    let listen = || {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen()
        .map_err(|e| std::io::Error::new(e.kind(), format!("{flag} {addr}: cannot listen: {e}")))
}

/// Which Kubernetes cluster's brokers are reached at their pod IPs (from the Kubernetes API):
/// none with `--standalone`, else `--kubernetes-cluster`, else the first policy's cluster.
pub fn local_cluster(
    standalone: bool,
    flag: Option<&str>,
    policies: &[kpool_policy::Policy],
) -> Option<String> {
    if standalone {
        return None;
    }
    flag.map(str::to_owned)
        .or_else(|| policies.first().map(|p| p.spec().cluster.clone()))
}

/// The namespaces whose broker pods are watched: `--namespace` when given, else the
/// `brokers.namespaces` of the local cluster's policies; none without a local cluster.
pub fn pod_namespaces(
    flag: Option<&str>,
    local_cluster: Option<&str>,
    policies: &[kpool_policy::Policy],
) -> Vec<String> {
    match (flag, local_cluster) {
        (Some(ns), _) => vec![ns.to_owned()],
        (None, Some(local)) => policies
            .iter()
            .filter(|p| p.spec().cluster == local)
            .flat_map(|p| p.spec().brokers.namespaces.clone())
            .collect(),
        (None, None) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpool_policy::Policy;

    fn both() -> Vec<Policy> {
        let a = Policy::builtin().expect("k8s-a");
        let b = Policy::from_yaml(
            include_str!("../../../examples/policy-k8s-b.yaml"),
            "policy-k8s-b.yaml",
        )
        .expect("k8s-b");
        vec![a, b]
    }

    #[test]
    fn the_local_cluster_and_its_broker_namespaces() {
        let p = both();
        assert_eq!(local_cluster(true, Some("k8s-b"), &p), None);
        assert_eq!(local_cluster(false, None, &p).as_deref(), Some("k8s-a"));
        assert_eq!(
            local_cluster(false, Some("k8s-b"), &p).as_deref(),
            Some("k8s-b")
        );
        assert_eq!(local_cluster(false, None, &[]), None);
        assert_eq!(pod_namespaces(None, Some("k8s-b"), &p), ["streaming"]);
        assert_eq!(
            pod_namespaces(Some("kafka-eu"), Some("k8s-a"), &p),
            ["kafka-eu"]
        );
        assert!(pod_namespaces(None, None, &p).is_empty());
        assert!(pod_namespaces(None, Some("k8s-c"), &p).is_empty());
    }
}
