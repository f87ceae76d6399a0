//! The listener against hostile peers over real sockets: silent and slow clients (TCP, TLS
//! handshake, headers, body), idle connections on HTTP/1 and HTTP/2, more connections than
//! the cap, too many HTTP/2 streams, and shutdown with requests in flight.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kpool_serve::{Limits, ListenerMetrics, Serving, spawn};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Timeouts short enough for a test, long enough for a loaded CI machine to meet.
fn limits() -> Limits {
    Limits {
        max_connections: 8,
        handshake_timeout: Duration::from_millis(400),
        header_timeout: Duration::from_millis(400),
        idle_timeout: Duration::from_millis(600),
        request_timeout: Duration::from_millis(600),
        max_h2_streams: 4,
    }
}

/// Far beyond any bound above: a connection still open then was never closed.
const NEVER: Duration = Duration::from_secs(8);

fn app(concurrent: Arc<AtomicUsize>, peak: Arc<AtomicUsize>) -> Router {
    Router::new()
        .route("/ok", get(|| async { "ok\n" }))
        .route(
            "/echo",
            post(|body: Body| async move {
                match axum::body::to_bytes(body, 1 << 20).await {
                    Ok(b) => format!("{} bytes\n", b.len()),
                    Err(e) => format!("error: {e}\n"),
                }
            }),
        )
        .route(
            "/slow",
            get(move || {
                let concurrent = concurrent.clone();
                let peak = peak.clone();
                async move {
                    let now = concurrent.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    concurrent.fetch_sub(1, Ordering::SeqCst);
                    "slow\n"
                }
            }),
        )
}

struct Server {
    serving: Serving,
    peak: Arc<AtomicUsize>,
    metrics: ListenerMetrics,
    _dir: Option<tempfile::TempDir>,
    ca: Option<std::path::PathBuf>,
}

impl Server {
    async fn plain(limits: Limits) -> Self {
        Self::start(limits, false).await
    }

    async fn tls(limits: Limits) -> Self {
        Self::start(limits, true).await
    }

    async fn start(limits: Limits, tls: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let peak = Arc::new(AtomicUsize::new(0));
        let metrics = ListenerMetrics::default();
        let (dir, config, ca) = if tls {
            kpool_certs::tls::install_crypto_provider();
            let dir = tempfile::tempdir().expect("tmp");
            let mut opts =
                kpool_certs::create::CreateOptions::new("kpool-test", "default", dir.path());
            opts.dns = vec!["localhost".into()];
            kpool_certs::create::create(&opts).expect("certificates");
            let resolver = kpool_certs::tls::ReloadingResolver::load(
                &dir.path().join("tls.crt"),
                &dir.path().join("tls.key"),
            )
            .expect("load");
            let config = Arc::new(kpool_certs::tls::server_config(resolver));
            let ca = dir.path().join("ca.crt");
            (Some(dir), Some(config), Some(ca))
        } else {
            (None, None, None)
        };
        let serving = spawn(
            "test",
            listener,
            config,
            app(Arc::new(AtomicUsize::new(0)), peak.clone()),
            limits,
            &metrics,
        );
        Self {
            serving,
            peak,
            metrics,
            _dir: dir,
            ca,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.serving.addr()
    }

    async fn tls_stream(&self, alpn: &[u8]) -> tokio_rustls::client::TlsStream<TcpStream> {
        let ca = self.ca.as_ref().expect("a TLS server");
        let config = kpool_certs::tls::client_config(ca, &[alpn]).expect("client config");
        let tcp = TcpStream::connect(self.addr()).await.expect("connect");
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .expect("handshake")
    }
}

/// Reads until the peer closes (EOF or reset); the time that took, or None if it did not
/// within `NEVER`. Whatever the server sent is returned too.
async fn until_closed<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> (Option<Duration>, Vec<u8>) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((start + NEVER).into(), s.read(&mut buf)).await {
            Err(_) => return (None, got),
            Ok(Ok(0)) | Ok(Err(_)) => return (Some(start.elapsed()), got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

async fn get_ok(addr: SocketAddr) -> Result<String, String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    s.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .map_err(|_| "no answer within 5 s".to_owned())?
        .map_err(|e| e.to_string())?;
    Ok(out)
}

#[tokio::test]
async fn a_silent_tcp_connection_is_closed() {
    let server = Server::plain(limits()).await;
    let mut s = TcpStream::connect(server.addr()).await.expect("connect");
    let (closed, got) = until_closed(&mut s).await;
    assert!(closed.is_some(), "a silent connection stayed open");
    assert!(got.is_empty(), "nothing to answer: {got:?}");
    assert_eq!(server.serving.stats().closed_idle(), 1);
}

#[tokio::test]
async fn a_silent_tls_handshake_is_cut() {
    let server = Server::tls(limits()).await;
    let mut s = TcpStream::connect(server.addr()).await.expect("connect");
    // Half a ClientHello record header, then nothing.
    s.write_all(&[0x16, 0x03, 0x01]).await.expect("write");
    let (closed, _) = until_closed(&mut s).await;
    assert!(closed.is_some(), "a stalled handshake stayed open");
}

#[tokio::test]
async fn an_idle_tls_connection_is_closed_on_http1_and_http2() {
    let server = Server::tls(limits()).await;
    for alpn in [&b"http/1.1"[..], b"h2"] {
        let mut s = server.tls_stream(alpn).await;
        let (closed, _) = until_closed(&mut s).await;
        assert!(
            closed.is_some(),
            "{}: a handshaken, silent connection stayed open",
            String::from_utf8_lossy(alpn)
        );
    }
}

#[tokio::test]
async fn a_dripped_header_does_not_keep_a_connection() {
    let server = Server::plain(limits()).await;
    let mut s = TcpStream::connect(server.addr()).await.expect("connect");
    let start = Instant::now();
    let header = b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Drip: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    for b in header {
        if s.write_all(&[*b]).await.is_err() {
            break;
        }
        if start.elapsed() > NEVER {
            panic!("still accepting header bytes after {NEVER:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (closed, _) = until_closed(&mut s).await;
    assert!(closed.is_some(), "a dripping client kept its connection");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_dripped_body_is_answered_408_within_the_request_timeout() {
    let server = Server::plain(limits()).await;
    let mut s = TcpStream::connect(server.addr()).await.expect("connect");
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        .await
        .expect("write");
    let start = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    // Drip one byte every 50 ms (1,000 bytes would take 50 s) while reading the answer.
    loop {
        assert!(start.elapsed() < NEVER, "no answer while dripping");
        let _ = s.write_all(b"a").await;
        match tokio::time::timeout(Duration::from_millis(50), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body included"), "{text}");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "answered after {:?}",
        start.elapsed()
    );
    assert_eq!(server.serving.stats().timed_out(), 1);
}

#[tokio::test]
async fn a_keep_alive_connection_serves_then_closes_when_idle() {
    let server = Server::plain(limits()).await;
    let mut s = TcpStream::connect(server.addr()).await.expect("connect");
    for _ in 0..3 {
        s.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
        // Less than the idle timeout between requests: the connection stays.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (closed, _) = until_closed(&mut s).await;
    assert!(
        closed.is_some(),
        "an idle keep-alive connection stayed open"
    );
}

#[tokio::test]
async fn past_the_cap_new_clients_wait_until_a_slot_frees() {
    let lim = Limits {
        max_connections: 4,
        // Idle connections go after 1.5 s; until then the cap holds.
        header_timeout: Duration::from_millis(1500),
        ..limits()
    };
    let server = Server::plain(lim).await;
    let mut hogs = Vec::new();
    for _ in 0..4 {
        hogs.push(TcpStream::connect(server.addr()).await.expect("connect"));
    }
    let start = Instant::now();
    while server.serving.stats().open() < 4 {
        assert!(start.elapsed() < NEVER, "hogs never counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(server.serving.stats().saturated());
    let metrics = {
        let mut r = prometheus_client::registry::Registry::default();
        server.metrics.register(&mut r);
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &r).expect("encode");
        s
    };
    assert!(
        metrics.contains("connections_open{listener=\"test\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("connections_max{listener=\"test\"} 4"),
        "{metrics}"
    );
    // A fifth client is not served while the hogs hold every slot...
    let fifth = tokio::spawn(get_ok(server.addr()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!fifth.is_finished(), "served past the cap");
    // ...and is once the silent hogs are closed.
    let answer = fifth.await.expect("task").expect("answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(start.elapsed() >= Duration::from_millis(1200));
    drop(hogs);
}

#[tokio::test]
async fn thousands_of_silent_connections_stay_under_the_cap_and_go() {
    let server = Server::plain(Limits {
        max_connections: 16,
        ..limits()
    })
    .await;
    let mut conns = Vec::new();
    for _ in 0..1500 {
        // The backlog fills past the cap; connect may then fail, which is fine.
        match tokio::time::timeout(
            Duration::from_millis(200),
            TcpStream::connect(server.addr()),
        )
        .await
        {
            Ok(Ok(s)) => conns.push(s),
            _ => break,
        }
        assert!(server.serving.stats().open() <= 16);
    }
    // Everyone is eventually closed, and a real client gets through.
    let answer = get_ok(server.addr()).await;
    drop(conns);
    let answer = match answer {
        Ok(a) => a,
        Err(_) => get_ok(server.addr())
            .await
            .expect("served once the flood left"),
    };
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(server.serving.stats().closed_idle() >= 16);
}

#[tokio::test]
async fn http2_streams_per_connection_are_capped() {
    let server = Server::tls(limits()).await;
    let tls = server.tls_stream(b"h2").await;
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    // One request first, so the client has the server's SETTINGS (its stream cap) before the
    // burst; a client that ignores them gets REFUSED_STREAM, which the cap also means.
    let first = sender
        .clone()
        .send_request(
            http::Request::get("https://localhost/ok")
                .body(Full::new(Bytes::new()))
                .expect("request"),
        )
        .await
        .expect("first request");
    assert_eq!(first.status(), 200);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let mut sender = sender.clone();
        tasks.push(tokio::spawn(async move {
            let req = http::Request::get("https://localhost/slow")
                .body(Full::new(Bytes::new()))
                .expect("request");
            let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let _ = resp.into_body().collect().await;
            Ok::<_, String>(status)
        }));
    }
    for t in tasks {
        let status = t.await.expect("task").expect("answered");
        assert_eq!(status, 200);
    }
    let peak = server.peak.load(Ordering::SeqCst);
    assert!((1..=4).contains(&peak), "{peak} streams at once, cap is 4");
}

#[tokio::test]
async fn shutdown_finishes_requests_in_flight_and_stops_accepting() {
    let server = Server::plain(limits()).await;
    let addr = server.addr();
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let Server { serving, .. } = server;
    serving.shutdown(Duration::from_secs(5)).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "in-flight request lost: {text}"
    );
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}
