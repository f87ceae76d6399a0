//! A real webhook server for socket tests, and a TLS client that verifies it against the
//! CA the test generated.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use kpool_certs::create::{CreateOptions, create};
use kpool_webhook::audit::AuditTarget;
use kpool_webhook::server::{Running, ServeConfig, start};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub struct Env {
    pub dir: tempfile::TempDir,
    pub running: Option<Running>,
}

impl Env {
    pub async fn start(tweak: impl FnOnce(&mut ServeConfig)) -> Self {
        kpool_certs::tls::install_crypto_provider();
        let dir = tempfile::tempdir().expect("tmp");
        let mut opts = CreateOptions::new("kpool-webhook", "kpool-system", dir.path());
        opts.dns = vec!["localhost".into()];
        create(&opts).expect("certificates");
        let mut cfg = ServeConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            metrics_listen: "127.0.0.1:0".parse().expect("addr"),
            tls_cert: dir.path().join("tls.crt"),
            tls_key: dir.path().join("tls.key"),
            policy: Arc::new(super::policy()),
            audit: AuditTarget::File {
                path: dir.path().join("audit.jsonl"),
                max_bytes: 1 << 30,
                max_files: 1,
            },
            admission: kpool_webhook::admission::AdmissionLimits {
                max_concurrency: 8,
                ..Default::default()
            },
            limits: kpool_serve::Limits {
                header_timeout: Duration::from_secs(5),
                ..Default::default()
            },
            reload_interval: Duration::from_millis(50),
            shutdown_delay: Duration::from_millis(0),
            shutdown_grace: Duration::from_secs(5),
        };
        tweak(&mut cfg);
        let running = start(cfg).await.expect("server starts");
        Self {
            dir,
            running: Some(running),
        }
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.path("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit JSON"))
            .collect()
    }

    pub fn reloads(&self, result: &str) -> u64 {
        let text = self.running().state().admission.metrics().encode();
        text.lines()
            .find(|l| {
                l.starts_with(&format!(
                    "kpool_webhook_certificate_reloads_total{{result=\"{result}\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    pub async fn shutdown(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

pub fn connector(ca: &Path) -> TlsConnector {
    let config = kpool_certs::tls::client_config(ca, &[b"http/1.1"]).expect("client config");
    TlsConnector::from(Arc::new(config))
}

pub type Tls = tokio_rustls::client::TlsStream<TcpStream>;

pub async fn tls(addr: SocketAddr, ca: &Path) -> std::io::Result<Tls> {
    let tcp = TcpStream::connect(addr).await?;
    connector(ca)
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
}

/// One POST on a fresh TLS connection; returns (status, body, serving cert serial).
pub async fn post(
    addr: SocketAddr,
    ca: &Path,
    path: &str,
    body: Vec<u8>,
) -> Result<(u16, Vec<u8>, Vec<u8>), String> {
    let stream = tls(addr, ca).await.map_err(|e| format!("tls: {e}"))?;
    let leaf = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::post(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes()
        .to_vec();
    Ok((status, body, leaf))
}
