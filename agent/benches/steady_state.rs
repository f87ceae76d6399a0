//! Steady state of the agent on a node with 110 pods: the real guard loop (over reflector
//! stores holding the 110 pods and the Node) and the real overhead loop (a 110-pod
//! systemd-layout cgroup tree), plus a Prometheus scrape per second, for a fixed time;
//! measures the process's own CPU time (/proc/self/stat utime+stime) and RSS
//! (/proc/self/status).
//!
//! `cargo bench -p kpool-agent --bench steady_state` (KPOOL_BENCH_SECONDS, default 30).
//! The loops run faster than the defaults (guard every 1 s instead of 5 s, overhead every
//! 2 s instead of 10 s), so the CPU figure is an upper bound. Targets: under 1% of a core,
//! RSS under 40 MiB.

use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use k8s_openapi::api::core::v1::{Node, Pod};
use kpool_agent::guard::Guard;
use kpool_agent::guard::act::{Actor, Retry};
use kpool_agent::guard::watch::{guard_loop, overhead_loop};
use kpool_agent::nodeview::NodeView;
use kpool_agent::overhead::{Sampler, allocatable_of};
use kpool_agent::pods::Standalone;
use kpool_agent::service::Agent;
use kpool_policy::Policy;
use kube::client::Body;
use kube::runtime::{reflector, watcher};

#[path = "overhead_support.rs"]
mod support;

/// CPU time of this process so far (user + system), from /proc/self/stat.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').expect("stat") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the state.
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("status field")
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: run briefly then.
    let bench = std::env::args().any(|a| a == "--bench");
    let seconds: u64 = std::env::var("KPOOL_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if bench { 30 } else { 2 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(seconds));
}

async fn run(seconds: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    support::cgroup_tree(dir.path());
    let policy = Arc::new(Policy::builtin().expect("policy"));
    let agent = Agent::new(policy.clone(), Arc::new(Standalone::new(policy.clone())));

    let (pods, mut pod_writer) = reflector::store::<Pod>();
    let (nodes, mut node_writer) = reflector::store::<Node>();
    pod_writer.apply_watcher_event(&watcher::Event::Init);
    for p in support::pods() {
        pod_writer.apply_watcher_event(&watcher::Event::InitApply(p));
    }
    pod_writer.apply_watcher_event(&watcher::Event::InitDone);
    node_writer.apply_watcher_event(&watcher::Event::Init);
    node_writer.apply_watcher_event(&watcher::Event::InitApply(support::node()));
    node_writer.apply_watcher_event(&watcher::Event::InitDone);
    let view = NodeView::from_stores(pods, nodes, "pool-1");
    assert_eq!(view.pod_facts().len(), support::PODS);

    // A mock API server: a compliant node makes no calls, and any call would be counted.
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = calls.clone();
    tokio::spawn(async move {
        let mut handle = pin!(handle);
        while let Some((_req, send)) = handle.next_request().await {
            c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            send.send_response(
                Response::builder()
                    .status(201)
                    .body(Body::from(b"{}".to_vec()))
                    .expect("response"),
            );
        }
    });
    let actor = Actor::new(
        kube::Client::new(service, "default"),
        "pool-1",
        Retry::default(),
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let guard = tokio::spawn(guard_loop(
        agent.clone(),
        view.clone(),
        actor,
        Guard::default(),
        Duration::from_secs(1),
        stop_rx.clone(),
    ));
    let sampler = Sampler::new(dir.path()).expect("sampler");
    let p = policy.clone();
    let v = view.clone();
    let overhead = tokio::spawn(overhead_loop(
        agent.clone(),
        sampler,
        Duration::from_secs(2),
        move || (v.broker_uids(&p), v.node().and_then(|n| allocatable_of(&n))),
        stop_rx,
    ));

    // Warm up (first samples, allocations settle), then measure.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (cpu0, t0) = (cpu_time(), Instant::now());
    let mut scrapes = 0usize;
    while t0.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        std::hint::black_box(agent.metrics().encode());
        scrapes += 1;
    }
    let (cpu, wall) = (cpu_time() - cpu0, t0.elapsed());
    let _ = stop_tx.send(true);
    let _ = guard.await;
    let _ = overhead.await;

    let (o, err) = agent.overhead();
    let o = o.expect("an overhead sample");
    assert!(err.is_none(), "{err:?}");
    assert_eq!(o.broker_pods + o.other_pod_count, support::PODS);
    assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 0);
    let share = cpu.as_secs_f64() / wall.as_secs_f64() * 100.0;
    let rss = status_kib("VmRSS:");
    let hwm = status_kib("VmHWM:");
    println!(
        "steady-state/110-pods: {:.1} s wall, CPU {:.3} s = {share:.2}% of a core (target < 1%), \
         RSS {:.1} MiB, peak {:.1} MiB (target < 40 MiB), {scrapes} scrapes",
        wall.as_secs_f64(),
        cpu.as_secs_f64(),
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
    );
}
