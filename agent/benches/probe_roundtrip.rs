//! Load harness: kpool-probe round trips (process start included) against an agent holding
//! a 100,000-partition cluster, and the agent's resident memory.
//! `cargo bench -p kpool-agent --bench probe_roundtrip`; targets: p99 under 5 ms, RSS under
//! 50 MiB.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kpool_agent::pods::Standalone;
use kpool_agent::service::Agent;
use kpool_policy::Policy;

#[path = "support.rs"]
mod support;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists benchmarks; there is nothing to list
    }
    let quick = !std::env::args().any(|a| a == "--bench");
    let rss_before = rss_kib();
    let policy = Arc::new(Policy::builtin().expect("policy"));
    let agent = Agent::new(policy.clone(), Arc::new(Standalone::new(policy)));
    {
        let snapshot = support::big_snapshot();
        agent.publish(&snapshot, BTreeMap::new());
    }
    let rss_after = rss_kib();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let addr = runtime.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let agent = agent.clone();
        tokio::spawn(async move { axum::serve(l, kpool_agent::api::router(agent)).await });
        addr
    });
    let url = format!("http://{addr}");
    let runs = if quick { 20 } else { 500 };
    let mut times: Vec<Duration> = Vec::with_capacity(runs);
    for i in 0..runs + 10 {
        let start = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_kpool-probe"))
            .args([
                "--agent",
                &url,
                "--namespace",
                "streaming",
                "--pod",
                "kafka-1",
            ])
            .output()
            .expect("probe runs");
        let took = start.elapsed();
        assert!(
            out.status.code().is_some_and(|c| c == 0 || c == 1),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        if i >= 10 {
            times.push(took); // the first runs warm the page cache
        }
    }
    times.sort();
    let pct = |q: f64| times[((times.len() as f64 * q).ceil() as usize).min(times.len()) - 1];
    println!(
        "kpool-probe round trip, {runs} runs (process start included): p50 {:?}  p99 {:?}  max {:?}",
        pct(0.50),
        pct(0.99),
        times[times.len() - 1]
    );
    println!(
        "agent RSS holding 100,000 partitions x RF 6 evaluated: {:.1} MiB (process total; {:.1} MiB before loading)",
        rss_after as f64 / 1024.0,
        rss_before as f64 / 1024.0
    );
}
