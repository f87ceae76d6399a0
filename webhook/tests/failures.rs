//! Failing neighbours never cost an admission answer: the audit log's disk full (ENOSPC
//! via `/dev/full`), and the serving certificate files deleted or corrupted while the
//! server answers over a real TLS socket.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use kpool_certs::create::{CreateOptions, create};
use kpool_webhook::admission::{Admission, Endpoint};
use kpool_webhook::audit::{AuditLog, AuditTarget};
use kpool_webhook::metrics::Metrics;
use kpool_webhook::server::{Running, ServeConfig, start};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const DEV_FULL: &str = "/dev/full";

fn review() -> Vec<u8> {
    common::fixture("000-create-kafka-0.json")
        .to_string()
        .into_bytes()
}

#[test]
fn audit_disk_full_still_answers_and_counts_the_failure() {
    if !Path::new(DEV_FULL).exists() {
        eprintln!("skipped: no {DEV_FULL} on this system");
        return;
    }
    let metrics = Arc::new(Metrics::new());
    let audit = AuditLog::start(
        AuditTarget::File {
            path: PathBuf::from(DEV_FULL),
            max_bytes: 1 << 30,
            max_files: 1,
        },
        metrics.clone(),
    )
    .expect("/dev/full opens for append");
    let admission = Admission::new(Arc::new(common::policy()), metrics.clone(), audit);
    for i in 0..5 {
        let reply = admission.handle(Endpoint::Mutate, &review());
        assert_eq!(reply.status, 200, "request {i} answered");
        let body: Value = serde_json::from_slice(&reply.body).expect("json");
        assert_eq!(body["response"]["allowed"], true, "{body}");
        assert!(
            body["response"]["patch"].is_string(),
            "still mutated: {body}"
        );
    }
    let reply = admission.handle(
        Endpoint::Validate,
        common::fixture("003-create-sneaky-batch-dryrun.json")
            .to_string()
            .as_bytes(),
    );
    assert_eq!(reply.status, 200);
    let body: Value = serde_json::from_slice(&reply.body).expect("json");
    assert_eq!(body["response"]["allowed"], false, "still denied: {body}");
    admission.audit().sync();
    assert_eq!(
        metrics.audit_failures.get(),
        6,
        "every unwritable line is counted"
    );
    let text = metrics.encode();
    assert!(
        text.lines().any(
            |l| l.starts_with("kpool_webhook_audit_write_failures_total") && l.ends_with(" 6")
        ),
        "{text}"
    );
}

#[test]
fn audit_file_removed_under_the_writer_is_not_a_failure() {
    // The file is removed under the writer (as by a careless logrotate): the next line
    // reopens it; nothing is lost and nothing fails.
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("audit.jsonl");
    let metrics = Arc::new(Metrics::new());
    let audit = AuditLog::start(
        AuditTarget::File {
            path: path.clone(),
            max_bytes: 1 << 30,
            max_files: 1,
        },
        metrics.clone(),
    )
    .expect("audit");
    let admission = Admission::new(Arc::new(common::policy()), metrics.clone(), audit);
    assert_eq!(admission.handle(Endpoint::Mutate, &review()).status, 200);
    admission.audit().sync();
    std::fs::remove_file(&path).expect("remove");
    assert_eq!(admission.handle(Endpoint::Mutate, &review()).status, 200);
    admission.audit().sync();
    // Unix semantics: the open handle still writes to the unlinked inode, so the line is
    // not an error; what matters is that the request was answered and nothing panicked.
    assert_eq!(metrics.audit_failures.get(), 0);
}

struct Env {
    dir: tempfile::TempDir,
    running: Option<Running>,
}

impl Env {
    async fn start(audit: AuditTarget) -> Self {
        kpool_certs::tls::install_crypto_provider();
        let dir = tempfile::tempdir().expect("tmp");
        let mut opts = CreateOptions::new("kpool-webhook", "kpool-system", dir.path());
        opts.dns = vec!["localhost".into()];
        create(&opts).expect("certificates");
        let cfg = ServeConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            metrics_listen: "127.0.0.1:0".parse().expect("addr"),
            tls_cert: dir.path().join("tls.crt"),
            tls_key: dir.path().join("tls.key"),
            policy: Arc::new(common::policy()),
            audit,
            max_concurrency: 8,
            header_read_timeout: Duration::from_secs(5),
            reload_interval: Duration::from_millis(50),
            shutdown_delay: Duration::from_millis(0),
            shutdown_grace: Duration::from_secs(5),
        };
        let running = start(cfg).await.expect("server starts");
        Self {
            dir,
            running: Some(running),
        }
    }

    fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn reloads(&self, result: &str) -> u64 {
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

    async fn shutdown(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

fn connector(ca: &Path) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("ca file") {
        roots.add(c.expect("ca cert")).expect("root");
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// One POST to /mutate on a fresh verified TLS connection: (status, body, leaf cert).
async fn post(addr: SocketAddr, ca: &Path) -> Result<(u16, Value, Vec<u8>), String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let stream = connector(ca)
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .map_err(|e| format!("tls: {e}"))?;
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
    let req = Request::post("/mutate")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(review())))
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
        .to_bytes();
    let body = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    Ok((status, body, leaf))
}

/// Waits until `f` holds (the reload watcher polls every 50 ms).
async fn eventually(what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(5), "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_or_corrupted_cert_files_keep_the_old_pair_serving() {
    let env = Env::start(AuditTarget::File {
        path: PathBuf::from("/dev/null"),
        max_bytes: 1 << 30,
        max_files: 1,
    })
    .await;
    let (addr, ca) = (env.running().tls_addr, env.path("ca.crt"));
    let (status, _, leaf) = post(addr, &ca).await.expect("first request");
    assert_eq!(status, 200);
    let (cert, key) = (
        std::fs::read(env.path("tls.crt")).expect("cert"),
        std::fs::read(env.path("tls.key")).expect("key"),
    );

    // Deleted: the old pair keeps serving; the failed reload is counted.
    let failures = env.reloads("failure");
    std::fs::remove_file(env.path("tls.crt")).expect("rm cert");
    std::fs::remove_file(env.path("tls.key")).expect("rm key");
    eventually("deleted files counted as a failed reload", || {
        env.reloads("failure") > failures
    })
    .await;
    for _ in 0..5 {
        let (status, body, served) = post(addr, &ca).await.expect("served while deleted");
        assert_eq!(status, 200, "{body}");
        assert_eq!(served, leaf, "the old certificate keeps serving");
    }

    // Corrupted: garbage in both files (not PEM), then a truncated PEM certificate.
    let failures = env.reloads("failure");
    std::fs::write(env.path("tls.crt"), b"\x00\xffnot a certificate").expect("garbage");
    std::fs::write(env.path("tls.key"), b"-----BEGIN PRIVATE KEY-----\nAAAA").expect("garbage");
    eventually("garbage counted as a failed reload", || {
        env.reloads("failure") > failures
    })
    .await;
    let (status, _, served) = post(addr, &ca).await.expect("served while corrupted");
    assert_eq!((status, served.as_slice()), (200, leaf.as_slice()));

    let failures = env.reloads("failure");
    std::fs::write(env.path("tls.crt"), &cert[..cert.len() / 2]).expect("truncate");
    std::fs::write(env.path("tls.key"), &key).expect("key back");
    eventually("truncated cert counted as a failed reload", || {
        env.reloads("failure") > failures
    })
    .await;
    let (status, _, served) = post(addr, &ca).await.expect("served while truncated");
    assert_eq!((status, served.as_slice()), (200, leaf.as_slice()));

    // Restored (the same bytes as served: nothing to swap): no further failure is
    // counted and the server keeps answering with its pair.
    std::fs::write(env.path("tls.crt"), &cert).expect("cert back");
    tokio::time::sleep(Duration::from_millis(250)).await;
    let failures = env.reloads("failure");
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        env.reloads("failure"),
        failures,
        "a good pair is not a failure"
    );
    let (status, _, served) = post(addr, &ca).await.expect("served after restore");
    assert_eq!((status, served.as_slice()), (200, leaf.as_slice()));
    env.shutdown().await;
}
