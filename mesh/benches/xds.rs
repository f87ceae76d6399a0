//! The xDS control plane under load: `kpool-mesh serve` (the release binary, its own
//! process) with 1, 100 and 1,000 connected ADS streams, each a Rust client speaking the
//! protocol as Envoy does (its own HTTP/2 connection, ACKs, EDS subscriptions following its
//! clusters). For each count: the initial sync, then membership changes made by rewriting
//! the pinned endpoints file (6 brokers): a broker moving (EDS only) and a broker added
//! (CDS, EDS, LDS), each timed from the file write to the last client applying it, and
//! from the snapshot's publication to the last ACK as the server reports it
//! (`kpool_mesh_xds_change_to_last_ack_milliseconds`); the server's RSS per stream and its
//! CPU per response sent.
//!
//! Run: `cargo bench -p kpool-mesh --bench xds` (`XDS_BENCH_STREAMS=1,100,1000`,
//! `XDS_BENCH_ROUNDS=5`); under `cargo test --all-targets` a smoke run of 1 and 10 streams,
//! one round. Targets on the 2-core machine: 1,000 streams updated in under
//! 1 s, under 64 KiB per stream.

#[path = "../tests/xds_support/mod.rs"]
mod xds_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use kpool_mesh::xds::ResourceType;
use tokio::sync::mpsc;
use xds_support::FakeEnvoy;

const BROKERS: i32 = 6;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

struct Server {
    child: Child,
    metrics: u16,
    xds: u16,
}

impl Server {
    fn start(dir: &Path, endpoints: &Path) -> Self {
        let (xds, metrics) = (free_port(), free_port());
        let policy = dir.join("policy.yaml");
        std::fs::write(&policy, kpool_policy::DEFAULT_POLICY_YAML).expect("policy");
        let child = Command::new(env!("CARGO_BIN_EXE_kpool-mesh"))
            .arg("serve")
            .arg("--policy")
            .arg(&policy)
            .args(["--listen", &format!("127.0.0.1:{xds}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
            .args(["--standalone", "--log", "warn"])
            .arg("--endpoints-file")
            .arg(endpoints)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("serve.log")).expect("log"))
            .spawn()
            .expect("start kpool-mesh serve");
        let server = Self {
            child,
            metrics,
            xds,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !http_get(metrics, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
            assert!(Instant::now() < deadline, "serve not ready within 30s");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn metric(&self, name: &str) -> f64 {
        http_get(self.metrics, "/metrics")
            .and_then(|body| {
                body.lines()
                    .filter_map(|l| l.strip_prefix(name))
                    .filter(|rest| rest.starts_with(' ') || rest.starts_with('{'))
                    .map(|rest| {
                        rest.rsplit(' ')
                            .next()
                            .unwrap_or("0")
                            .parse::<f64>()
                            .unwrap_or(0.0)
                    })
                    .reduce(|a, b| a + b)
            })
            .unwrap_or(0.0)
    }

    fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS")
    }

    /// utime + stime, in clock ticks (1/100 s).
    fn cpu_ticks(&self) -> u64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).expect("stat");
        let after = stat.rsplit(')').next().unwrap_or_default();
        let f: Vec<&str> = after.split_whitespace().collect();
        f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Responses applied by all clients, by type.
#[derive(Default)]
struct Applied([AtomicU64; 3]);

impl Applied {
    fn get(&self, t: ResourceType) -> u64 {
        self.0[t as usize].load(Ordering::Relaxed)
    }
}

async fn client(port: u16, i: usize, applied: Arc<Applied>) {
    let mut envoy = FakeEnvoy::new(&format!("bench-{i}"));
    let mut c = AggregatedDiscoveryServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect");
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(16);
    for r in envoy.initial() {
        tx.send(r).await.expect("queue");
    }
    let mut stream = c
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    while let Ok(Some(r)) = stream.message().await {
        let kind = ResourceType::from_type_url(&r.type_url).expect("type");
        let requests = envoy.on_response(&r);
        envoy.received.clear();
        for q in requests {
            if tx.send(q).await.is_err() {
                return;
            }
        }
        applied.0[kind as usize].fetch_add(1, Ordering::Relaxed);
    }
}

fn endpoints(file: &Path, brokers: i32, moved: u16) {
    let mut text = String::new();
    for id in 0..brokers {
        let port = if id == 1 {
            20000 + moved
        } else {
            19000 + id as u16
        };
        text.push_str(&format!("{id}=10.0.0.{id}:{port}\n"));
    }
    std::fs::write(file, text).expect("endpoints");
}

async fn wait_until(what: &str, limit: Duration, f: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    start.elapsed()
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn run(n: usize, rounds: usize) {
    let tmp = tempfile::tempdir().expect("tmp");
    let file = tmp.path().join("endpoints");
    endpoints(&file, BROKERS, 0);
    let server = Server::start(tmp.path(), &file);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss0 = server.rss_kib();
    let applied = Arc::new(Applied::default());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..n {
        tasks.push(tokio::spawn(client(server.xds, i, applied.clone())));
    }
    let lds = |a: &Applied| a.get(ResourceType::Listener);
    wait_until("the initial sync", Duration::from_secs(60), || {
        lds(&applied) >= n as u64
    })
    .await;
    let initial = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss1 = server.rss_kib();
    let per_stream = (rss1.saturating_sub(rss0) as f64) * 1024.0 / n as f64;

    let (mut moves, mut moves_server, mut adds, mut adds_server) = (vec![], vec![], vec![], vec![]);
    let ticks0 = server.cpu_ticks();
    let pushes0 = server.metric("kpool_mesh_xds_pushes_total");
    for round in 0..rounds {
        // A broker moves: EDS only.
        let eds = applied.get(ResourceType::Endpoint);
        let at = Instant::now();
        endpoints(&file, BROKERS, round as u16 + 1);
        wait_until("the move applied", Duration::from_secs(30), || {
            applied.get(ResourceType::Endpoint) >= eds + n as u64
        })
        .await;
        moves.push(at.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(50)).await;
        moves_server.push(server.metric("kpool_mesh_xds_change_to_last_ack_milliseconds"));
        // A broker added (then removed again, not timed): CDS, EDS, LDS.
        let l = lds(&applied);
        let at = Instant::now();
        endpoints(&file, BROKERS + 1, round as u16 + 1);
        wait_until("the add applied", Duration::from_secs(30), || {
            lds(&applied) >= l + n as u64
        })
        .await;
        adds.push(at.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(50)).await;
        adds_server.push(server.metric("kpool_mesh_xds_change_to_last_ack_milliseconds"));
        let c = applied.get(ResourceType::Cluster);
        endpoints(&file, BROKERS, round as u16 + 1);
        wait_until("the removal applied", Duration::from_secs(30), || {
            applied.get(ResourceType::Cluster) >= c + n as u64
        })
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ticks = server.cpu_ticks() - ticks0;
    let pushes = server.metric("kpool_mesh_xds_pushes_total") - pushes0;
    let cpu_per_push_us = ticks as f64 * 10_000.0 / pushes.max(1.0);
    println!(
        "xds streams={n}: initial sync {:.0} ms; broker moved (EDS) p50 {:.1} ms max {:.1} ms \
         [server publish->last ACK p50 {:.0} ms max {:.0} ms]; broker added (CDS+EDS+LDS) p50 \
         {:.1} ms max {:.1} ms [server p50 {:.0} ms max {:.0} ms]; RSS {rss0} -> {rss1} KiB, \
         {:.1} KiB per stream; CPU {:.0} us per response ({pushes:.0} responses, {ticks} ticks)",
        initial.as_secs_f64() * 1000.0,
        percentile(&mut moves.clone(), 0.5),
        percentile(&mut moves, 1.0),
        percentile(&mut moves_server.clone(), 0.5),
        percentile(&mut moves_server, 1.0),
        percentile(&mut adds.clone(), 0.5),
        percentile(&mut adds, 1.0),
        percentile(&mut adds_server.clone(), 0.5),
        percentile(&mut adds_server, 1.0),
        per_stream / 1024.0,
        cpu_per_push_us,
    );
    for t in tasks {
        t.abort();
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists; there is nothing to list
    }
    // `cargo bench` passes --bench; `cargo test --all-targets` passes nothing: then a smoke
    // run (a few streams, one round) that still checks every answer.
    let bench = std::env::args().any(|a| a == "--bench");
    let streams: Vec<usize> = std::env::var("XDS_BENCH_STREAMS")
        .unwrap_or_else(|_| if bench { "1,100,1000" } else { "1,10" }.to_owned())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rounds = std::env::var("XDS_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if bench { 5 } else { 1 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "changes are made by rewriting the endpoints file, which serve checks every 200 ms: the \
         client-side times include that wait; the server figures start at the snapshot's publication"
    );
    for n in streams {
        runtime.block_on(run(n, rounds));
    }
}
