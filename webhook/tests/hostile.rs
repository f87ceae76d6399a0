//! The admission server against the clients that used to stop it (issue: hardening 1–2):
//! bodies that never come on HTTP/1 and HTTP/2, a declared length over the limit, idle
//! connections on both listeners, more connections than the cap; `/readyz` tells the truth.

mod common;

use common::tls::{Env, post, tls};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

fn review() -> Vec<u8> {
    common::fixture("000-create-kafka-0.json")
        .to_string()
        .into_bytes()
}

async fn get_plain(addr: SocketAddr, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    let _ = s
        .write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await;
    let mut out = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out)).await;
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out)
}

/// A real admission answered within `within`, while the attack goes on.
async fn admission_still_answers(env: &Env, within: Duration) {
    let start = Instant::now();
    let r = tokio::time::timeout(
        within,
        post(
            env.running().tls_addr,
            &env.path("ca.crt"),
            "/mutate",
            review(),
        ),
    )
    .await;
    let (status, body, _) = r
        .unwrap_or_else(|_| panic!("/mutate not answered within {within:?}"))
        .expect("request");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let out: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(out["response"]["allowed"], true, "{out}");
    assert!(start.elapsed() < within);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_send_their_body_do_not_stop_admission() {
    // Four engine slots; sixteen clients that declare a body and send none. They used to
    // hold every slot for as long as they liked.
    let env = Env::start(|c| {
        c.admission.max_concurrency = 4;
        c.limits.request_timeout = Duration::from_secs(30);
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..16 {
        let mut s = tls(env.running().tls_addr, &env.path("ca.crt"))
            .await
            .expect("tls");
        s.write_all(
            b"POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n",
        )
        .await
        .expect("headers");
        s.flush().await.expect("flush");
        silent.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    admission_still_answers(&env, Duration::from_secs(3)).await;
    let (status, text) = get_plain(env.running().ops_addr, "/readyz").await;
    assert_eq!(status, 200, "{text}");
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_finishes_is_cut_at_the_request_timeout() {
    let env = Env::start(|c| c.limits.request_timeout = Duration::from_millis(500)).await;
    let mut s = tls(env.running().tls_addr, &env.path("ca.crt"))
        .await
        .expect("tls");
    let body = review();
    s.write_all(
        format!(
            "POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .expect("headers");
    s.write_all(&body[..100]).await.expect("some body");
    let start = Instant::now();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    let metrics = env.running().state().admission.metrics().encode();
    assert!(
        metrics.contains("kpool_webhook_requests_timed_out_total{listener=\"admission\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_http2_connection_with_hundreds_of_open_streams_does_not_stop_admission() {
    let env = Env::start(|c| {
        c.admission.max_concurrency = 4;
        c.limits.request_timeout = Duration::from_secs(30);
    })
    .await;
    let config =
        kpool_certs::tls::client_config(&env.path("ca.crt"), &[b"h2"]).expect("client config");
    let tcp = TcpStream::connect(env.running().tls_addr)
        .await
        .expect("connect");
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("handshake");
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2");
    tokio::spawn(conn);
    // 200 streams that send headers and a body that never ends.
    let mut held = Vec::new();
    for _ in 0..200 {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
        let body = StreamBody::new(tokio_stream_from(rx));
        let req = http::Request::post("https://localhost/mutate")
            .header("content-type", "application/json")
            .body(body.boxed())
            .expect("request");
        let mut sender = sender.clone();
        held.push((
            tx,
            tokio::spawn(async move { sender.send_request(req).await }),
        ));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    admission_still_answers(&env, Duration::from_secs(3)).await;
    let (status, text) = get_plain(env.running().ops_addr, "/readyz").await;
    assert_eq!(status, 200, "{text}");
    drop(held);
}

/// An mpsc receiver as a body stream (no tokio-stream dependency for one adapter).
fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_length_over_the_limit_is_refused_before_the_body() {
    let env = Env::start(|_| {}).await;
    let mut s = tls(env.running().tls_addr, &env.path("ca.crt"))
        .await
        .expect("tls");
    s.write_all(b"POST /validate HTTP/1.1\r\nhost: localhost\r\ncontent-length: 3145729\r\n\r\n")
        .await
        .expect("headers");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .expect("answered without the body")
        .expect("read");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    env.running().state().admission.audit().sync();
    let lines = env.audit_lines();
    assert_eq!(lines[0]["reason_code"], "body-too-large", "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_past_the_limit_is_refused_once_it_passes_it() {
    let env = Env::start(|_| {}).await;
    let mut s = tls(env.running().tls_addr, &env.path("ca.crt"))
        .await
        .expect("tls");
    s.write_all(b"POST /mutate HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\n\r\n")
        .await
        .expect("headers");
    // 64 KiB chunks until the server answers (3 MiB is 48 of them).
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0usize;
    let mut buf = vec![0u8; 4096];
    let answer = loop {
        assert!(sent <= 4 * 1024 * 1024, "still reading past 4 MiB");
        let head = format!("{:x}\r\n", chunk.len());
        if s.write_all(head.as_bytes()).await.is_err()
            || s.write_all(&chunk).await.is_err()
            || s.write_all(b"\r\n").await.is_err()
        {
            let n = s.read(&mut buf).await.unwrap_or(0);
            break String::from_utf8_lossy(&buf[..n]).into_owned();
        }
        sent += chunk.len();
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await
            && n > 0
        {
            break String::from_utf8_lossy(&buf[..n]).into_owned();
        }
    };
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        sent >= 3 * 1024 * 1024 - chunk.len(),
        "refused after {sent} bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_on_both_listeners() {
    let env = Env::start(|c| {
        c.limits.header_timeout = Duration::from_millis(400);
        c.limits.idle_timeout = Duration::from_millis(400);
    })
    .await;
    // Admission: a completed handshake, then silence.
    let mut s = tls(env.running().tls_addr, &env.path("ca.crt"))
        .await
        .expect("tls");
    let mut out = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(r.is_ok(), "an idle TLS connection stayed open");
    // Ops (plain HTTP): a header that never ends (ops limits: 5 s).
    let mut p = TcpStream::connect(env.running().ops_addr)
        .await
        .expect("connect");
    p.write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .expect("write");
    let r = tokio::time::timeout(Duration::from_secs(10), p.read_to_end(&mut out)).await;
    assert!(r.is_ok(), "a half-sent request on the ops port stayed open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_readyz_says_not_ready_and_recovers() {
    let env = Env::start(|c| {
        c.limits.max_connections = 8;
        // The hogs never start a TLS handshake.
        c.limits.handshake_timeout = Duration::from_secs(2);
    })
    .await;
    let mut hogs = Vec::new();
    for _ in 0..8 {
        hogs.push(
            TcpStream::connect(env.running().tls_addr)
                .await
                .expect("connect"),
        );
    }
    let start = Instant::now();
    loop {
        let (status, text) = get_plain(env.running().ops_addr, "/readyz").await;
        if status == 503 {
            assert!(text.contains("connection cap (8)"), "{text}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "never unready: {text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The hogs send nothing and are closed; readiness and admission come back.
    admission_still_answers(&env, Duration::from_secs(6)).await;
    let (status, text) = get_plain(env.running().ops_addr, "/readyz").await;
    assert_eq!(status, 200, "{text}");
    drop(hogs);
}
