//! The server over real sockets: TLS verified against the generated CA, reload under
//! concurrent requests, header read timeout, graceful shutdown with requests in flight.

mod common;

use common::tls::{Env, post, tls};

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kpool_certs::create::{CreateOptions, create};
use kpool_certs::generate::{Ca, ServingRequest};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

async fn get_plain(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out)
}

fn review() -> Vec<u8> {
    common::fixture("000-create-kafka-0.json")
        .to_string()
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_admission_over_verified_tls_and_ops_over_http() {
    let env = Env::start(|_| {}).await;
    let (addr, ca) = (env.running().tls_addr, env.path("ca.crt"));
    let (status, body, _) = post(addr, &ca, "/mutate", review()).await.expect("request");
    assert_eq!(status, 200);
    let out: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(out["response"]["allowed"], true);
    assert_eq!(out["response"]["patchType"], "JSONPatch");

    let (status, body, _) = post(addr, &ca, "/mutate", b"{oops".to_vec())
        .await
        .expect("request");
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    // Oversized bodies (declared or streamed): tests/hostile.rs.

    // A client that does not trust the CA cannot talk to it.
    let other = tempfile::tempdir().expect("tmp");
    create(&CreateOptions::new("other", "x", other.path())).expect("other CA");
    let err = tls(addr, &other.path().join("ca.crt"))
        .await
        .expect_err("untrusted");
    assert!(
        err.to_string().contains("UnknownIssuer")
            || err.to_string().contains("invalid peer certificate"),
        "{err}"
    );

    let ops = env.running().ops_addr;
    assert_eq!(get_plain(ops, "/healthz").await.0, 200);
    assert_eq!(get_plain(ops, "/readyz").await.0, 200);
    let (status, metrics) = get_plain(ops, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("kpool_webhook_serving_certificate_not_after_seconds "),
        "{metrics}"
    );
    env.running
        .as_ref()
        .expect("r")
        .state()
        .admission
        .audit()
        .sync();
    let lines = env.audit_lines();
    assert_eq!(lines.len(), 2, "two admission requests, two audit lines");
    assert_eq!(lines[0]["decision"], "inject");
    assert_eq!(lines[1]["reason_code"], "malformed-json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_reload_under_concurrent_requests_loses_nothing() {
    let env = Env::start(|_| {}).await;
    let (addr, ca_path) = (env.running().tls_addr, env.path("ca.crt"));
    let ca = Ca::from_pem(
        "ca.crt",
        &std::fs::read(&ca_path).expect("ca"),
        "ca.key",
        &std::fs::read(env.path("ca.key")).expect("key"),
    )
    .expect("ca loads");
    let first_serial = post(addr, &ca_path, "/mutate", review())
        .await
        .expect("first")
        .2;

    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (ok, failed, stop, ca_path) =
            (ok.clone(), failed.clone(), stop.clone(), ca_path.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match post(addr, &ca_path, "/mutate", review()).await {
                    Ok((200, _, _)) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok((s, b, _)) => failed
                        .lock()
                        .expect("lock")
                        .push(format!("{s}: {}", String::from_utf8_lossy(&b))),
                    Err(e) => failed.lock().expect("lock").push(e),
                }
            }
        }));
    }
    let req = ServingRequest {
        service: "kpool-webhook".into(),
        namespace: "kpool-system".into(),
        dns: vec!["localhost".into()],
        ips: vec![],
        days: 30,
    };
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        // A mismatched pair (new cert, old key) must be refused while the old pair serves.
        let pair = ca
            .issue_serving(&req, time::OffsetDateTime::now_utc())
            .expect("issue");
        if round == 1 {
            std::fs::write(env.path("tls.crt"), pair.cert_pem()).expect("write cert only");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Write key then cert via rename, as a careful writer (or the kubelet) would.
        std::fs::write(env.path("tls.key.new"), pair.key_pem()).expect("key");
        std::fs::write(env.path("tls.crt.new"), pair.cert_pem()).expect("cert");
        std::fs::rename(env.path("tls.key.new"), env.path("tls.key")).expect("rename key");
        std::fs::rename(env.path("tls.crt.new"), env.path("tls.crt")).expect("rename cert");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client task");
    }
    let failed = failed.lock().expect("lock").clone();
    assert!(
        failed.is_empty(),
        "{} failed requests: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(
        ok.load(Ordering::Relaxed) > 20,
        "only {} requests",
        ok.load(Ordering::Relaxed)
    );
    let last_serial = post(addr, &ca_path, "/mutate", review())
        .await
        .expect("last")
        .2;
    assert_ne!(
        first_serial, last_serial,
        "new connections get the new certificate"
    );
    let (_, metrics) = get_plain(env.running().ops_addr, "/metrics").await;
    let count = |label: &str| -> u64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "kpool_webhook_certificate_reloads_total{{result=\"{label}\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert!(count("success") >= 3, "{metrics}");
    assert!(
        count("failure") >= 1,
        "the mismatched pair was refused and counted:\n{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off() {
    let env = Env::start(|c| c.limits.header_timeout = Duration::from_millis(300)).await;
    let mut s = tls(env.running().tls_addr, &env.path("ca.crt"))
        .await
        .expect("tls");
    s.write_all(b"POST /mutate HTTP/1.1\r\nhost: localhost\r\n")
        .await
        .expect("partial headers");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the server must close a connection whose headers never finish"
    );
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let mut env = Env::start(|c| c.shutdown_delay = Duration::from_millis(400)).await;
    let (addr, ops) = (env.running().tls_addr, env.running().ops_addr);
    // A request in flight: headers and half the body sent.
    let body = review();
    let mut s = tls(addr, &env.path("ca.crt")).await.expect("tls");
    let head = format!(
        "POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("head");
    s.write_all(&body[..body.len() / 2])
        .await
        .expect("half body");
    s.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(100)).await;

    let running = env.running.take().expect("running");
    let shutdown = tokio::spawn(running.shutdown());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        get_plain(ops, "/readyz").await.0,
        503,
        "not ready while draining"
    );

    s.write_all(&body[body.len() / 2..])
        .await
        .expect("rest of body");
    let mut resp = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("answered")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        resp.extend_from_slice(&buf[..n]);
        if resp.windows(4).any(|w| w == b"\r\n\r\n")
            && String::from_utf8_lossy(&resp).contains("\"uid\"")
        {
            break;
        }
    }
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .expect("shutdown completes")
        .expect("task");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "listener closed after shutdown"
    );
    let lines = env.audit_lines();
    assert_eq!(
        lines.len(),
        1,
        "the in-flight request was answered and audited"
    );
}
