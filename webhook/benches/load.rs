//! Load harness for the admission server: HTTPS keep-alive throughput and latency of
//! `POST /mutate` with the captured CREATE of broker pod `kafka-0`, measured in the same
//! run beside a bare axum + rustls handler that answers every POST with a body of the same
//! size (the floor: TLS, HTTP and the network stack, no admission work), and beside the
//! same bare handler made to read the review with serde_json (`IgnoredAny`: every byte
//! scanned and validated, nothing built), which is the least any webhook that reads the
//! whole review must do, so the table shows how much of the gap is parsing alone.
//!
//! Both servers run as separate processes (the release `kpool-webhook serve`, and this
//! harness re-executed in "bare" mode) with the same TLS setup; this process is the client:
//! - closed loop: `CONNECTIONS` keep-alive connections sending back to back; the two
//!   servers alternate for `ROUNDS` rounds, the median round is reported;
//! - paced: 1,000 requests/s spread over the connections, open loop (sends on a fixed
//!   schedule), latency from send to complete answer;
//! - RSS: VmHWM of each server process after the load.
//!
//! `cargo bench -p kpool-webhook --bench load`; `BENCH_QUICK=1` shortens every phase;
//! `KPOOL_LOAD_WEBHOOK_ARGS="--max-concurrency 8 ..."` adds flags to `kpool-webhook serve`.
//! Every answer is checked (status 200, expected size); any failure exits 1.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

mod support;
use support::{Server, start_webhook};

const CONNECTIONS: usize = 16;
const ROUNDS: usize = 3;
const PACED_RPS: u64 = 1_000;
const REVIEW: &str = "tests/fixtures/admission/000-create-kafka-0.json";

/// Environment variable that turns this binary into the bare server: the body file.
const BARE_BODY: &str = "KPOOL_LOAD_BARE_BODY";
/// Set (to 1) with [`BARE_BODY`]: the bare server scans each request body as JSON first.
const BARE_SCAN: &str = "KPOOL_LOAD_BARE_SCAN";

fn main() -> ExitCode {
    if let Ok(body) = std::env::var(BARE_BODY) {
        return bare_server(Path::new(&body), std::env::var_os(BARE_SCAN).is_some());
    }
    if std::env::args().any(|a| a == "--list") {
        return ExitCode::SUCCESS; // `cargo test --benches` lists; there is nothing to list
    }
    match orchestrate() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load harness failed: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---- the bare server -------------------------------------------------------------------

fn bare_server(body: &Path, scan: bool) -> ExitCode {
    let dir = body.parent().expect("body in the temp dir");
    let body = Bytes::from(std::fs::read(body).expect("read body"));
    kpool_certs::tls::install_crypto_provider();
    let resolver =
        kpool_certs::tls::ReloadingResolver::load(&dir.join("tls.crt"), &dir.join("tls.key"))
            .expect("certificate");
    let config = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(
        kpool_certs::tls::server_config(resolver),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("non-blocking");
    let addr = listener.local_addr().expect("addr");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let handler = move |request: Bytes| {
            let body = body.clone();
            async move {
                if scan && serde_json::from_slice::<serde::de::IgnoredAny>(&request).is_err() {
                    return (http::StatusCode::BAD_REQUEST, Bytes::new());
                }
                (http::StatusCode::OK, body)
            }
        };
        let app = axum::Router::new().route("/mutate", axum::routing::post(handler));
        let server = axum_server::from_tcp_rustls(listener, config).expect("server");
        println!("LISTEN {addr}");
        std::io::stdout().flush().expect("flush");
        server.serve(app.into_make_service()).await.expect("serve");
    });
    ExitCode::SUCCESS
}

// ---- the client ------------------------------------------------------------------------

/// CPU time (user + system, all threads) `server` has used so far, in seconds (clock
/// ticks of 10 ms, the Linux default USER_HZ).
fn cpu_seconds(server: &Server) -> Result<f64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", server.child.id()))
        .map_err(|e| format!("{}: /proc stat: {e}", server.name))?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(u), Some(s)) => Ok((u + s) / 100.0),
        _ => Err(format!("{}: cannot parse /proc stat", server.name)),
    }
}

fn start_bare(body_file: &Path, scan: bool) -> Result<Server, String> {
    let mut command = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
    command.env(BARE_BODY, body_file);
    if scan {
        command.env(BARE_SCAN, "1");
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("start the bare server: {e}"))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let addr = line
        .trim()
        .strip_prefix("LISTEN ")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("bare server said {line:?}"))?;
    Ok(Server {
        name: if scan {
            "bare + JSON scan of the review"
        } else {
            "bare axum+rustls"
        },
        addr,
        child,
    })
}

#[derive(Clone)]
struct Client {
    connector: TlsConnector,
    review: Bytes,
    expect_len: usize,
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

impl Client {
    async fn connect(&self, addr: SocketAddr) -> Result<Sender, String> {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let tls = self
            .connector
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Ok(sender)
    }

    /// One request on `sender`; the answer must be 200 with the expected body size.
    async fn post(&self, sender: &mut Sender) -> Result<Bytes, String> {
        sender.ready().await.map_err(|e| e.to_string())?;
        let req = Request::post("/mutate")
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(self.review.clone()))
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if status != 200 || (self.expect_len > 0 && body.len() != self.expect_len) {
            return Err(format!(
                "answer {status} with {} bytes, expected 200 with {}",
                body.len(),
                self.expect_len
            ));
        }
        Ok(body)
    }
}

/// Throughput of `server` over `duration` with every connection sending back to back:
/// requests per second, and the server's CPU time per request in µs.
async fn closed_loop(
    client: &Client,
    server: &Server,
    duration: Duration,
) -> Result<(f64, f64), String> {
    let addr = server.addr;
    let cpu_before = cpu_seconds(server)?;
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut sender = client.connect(addr).await?;
            let mut n = 0u64;
            while Instant::now() < deadline {
                client.post(&mut sender).await?;
                n += 1;
            }
            Ok::<u64, String>(n)
        }));
    }
    let start = Instant::now();
    let mut total = 0;
    for t in tasks {
        total += t.await.map_err(|e| e.to_string())??;
    }
    let rps = total as f64 / start.elapsed().as_secs_f64();
    let cpu_us = (cpu_seconds(server)? - cpu_before) * 1e6 / total.max(1) as f64;
    Ok((rps, cpu_us))
}

/// Latencies (µs) at `PACED_RPS`, open loop (each request has its send time on a fixed
/// schedule, whatever happened to the previous ones).
async fn paced(client: &Client, addr: SocketAddr, duration: Duration) -> Result<Vec<u64>, String> {
    let total = ((PACED_RPS as f64 * duration.as_secs_f64()) as u64).max(CONNECTIONS as u64);
    let interval = Duration::from_nanos(1_000_000_000 / PACED_RPS);
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS as u64 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut sender = client.connect(addr).await?;
            let mut lat = Vec::new();
            let mut k = c;
            while k < total {
                let at = start + interval * u32::try_from(k).expect("fits");
                tokio::time::sleep_until(at).await;
                // From the actual send: tokio's timer wakes up to 1 ms after `at`, which
                // would otherwise dominate sub-millisecond latencies.
                let sent = tokio::time::Instant::now();
                client.post(&mut sender).await?;
                lat.push(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX));
                k += CONNECTIONS as u64;
            }
            Ok::<Vec<u64>, String>(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.map_err(|e| e.to_string())??);
    }
    all.sort_unstable();
    Ok(all)
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn workspace_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn orchestrate() -> Result<(), String> {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: then a smoke run
    // (debug build, every answer still checked, figures meaningless).
    let bench = std::env::args().any(|a| a == "--bench");
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1");
    let phase = match (bench, quick) {
        (false, _) => Duration::from_millis(300),
        (true, true) => Duration::from_secs(2),
        (true, false) => Duration::from_secs(5),
    };
    let rounds = if bench { ROUNDS } else { 1 };
    kpool_certs::tls::install_crypto_provider();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut opts =
        kpool_certs::create::CreateOptions::new("kpool-webhook", "kpool-system", dir.path());
    opts.dns = vec!["localhost".into()];
    kpool_certs::create::create(&opts).map_err(|e| e.to_string())?;
    let review = std::fs::read(workspace_file(REVIEW)).map_err(|e| format!("{REVIEW}: {e}"))?;

    let tls = kpool_certs::tls::client_config(&dir.path().join("ca.crt"), &[b"http/1.1"])
        .map_err(|e| e.to_string())?;
    let mut client = Client {
        connector: TlsConnector::from(Arc::new(tls)),
        review: Bytes::from(review),
        expect_len: 0,
    };

    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let webhook = start_webhook(dir.path(), "KPOOL_LOAD_WEBHOOK_ARGS")?;
    // The webhook's answer for this review, served as-is by the bare handler.
    let answer = runtime.block_on(async {
        let mut s = client.connect(webhook.addr).await?;
        client.post(&mut s).await
    })?;
    let answer_len = answer.len();
    let patched = serde_json::from_slice::<serde_json::Value>(&answer)
        .ok()
        .is_some_and(|v| v["response"]["patch"].is_string());
    if !patched {
        return Err(format!(
            "the webhook did not inject the review: {}",
            String::from_utf8_lossy(&answer)
        ));
    }
    client.expect_len = answer_len;
    let body_file = dir.path().join("answer.json");
    std::fs::write(&body_file, &answer).map_err(|e| e.to_string())?;
    let servers = [
        webhook,
        start_bare(&body_file, false)?,
        start_bare(&body_file, true)?,
    ];
    eprintln!(
        "review {} bytes, answer {answer_len} bytes; {CONNECTIONS} keep-alive connections; {rounds} rounds of {:.1} s per server",
        client.review.len(),
        phase.as_secs_f64()
    );

    // (requests per second, server CPU µs per request) per server, per round.
    let mut closed: Vec<Vec<(f64, f64)>> = vec![Vec::new(); servers.len()];
    let mut latencies: Vec<Vec<u64>> = Vec::new();
    runtime.block_on(async {
        // Warm-up: TLS session setup, allocator, caches.
        for server in &servers {
            closed_loop(&client, server, Duration::from_millis(500)).await?;
        }
        for round in 0..rounds {
            let mut line = format!("round {}:", round + 1);
            for (server, results) in servers.iter().zip(&mut closed) {
                let (rps, cpu) = closed_loop(&client, server, phase).await?;
                line.push_str(&format!(
                    " {} {rps:.0} req/s ({cpu:.1} µs CPU/req);",
                    server.name
                ));
                results.push((rps, cpu));
            }
            eprintln!("{line}");
        }
        for server in &servers {
            latencies.push(paced(&client, server.addr, phase).await?);
        }
        Ok::<(), String>(())
    })?;
    let audit_lines = std::fs::read_to_string(dir.path().join("audit.jsonl"))
        .map(|t| t.lines().count())
        .unwrap_or(0);

    println!(
        "| server | closed loop, {CONNECTIONS} conns (median of {rounds}) | server CPU per request | p50 @ {PACED_RPS}/s | p99 @ {PACED_RPS}/s | peak RSS |"
    );
    println!("|---|---|---|---|---|---|");
    let mut rps = Vec::new();
    for ((server, results), lat) in servers.iter().zip(closed).zip(&latencies) {
        let cpu = median(results.iter().map(|r| r.1).collect());
        let r = median(results.into_iter().map(|r| r.0).collect());
        println!(
            "| {} | {r:.0} req/s | {cpu:.1} µs | {:.3} ms | {:.3} ms | {:.1} MiB |",
            server.name,
            pct(lat, 0.50),
            pct(lat, 0.99),
            server.status_mib("VmHWM")?
        );
        rps.push(r);
    }
    println!(
        "throughput ratio kpool-webhook / bare: {:.2} (bare + JSON scan / bare: {:.2})",
        rps[0] / rps[1],
        rps[2] / rps[1]
    );
    println!(
        "paced requests: {} per server; audit lines in the current audit file: {audit_lines}",
        latencies[0].len()
    );
    Ok(())
}
