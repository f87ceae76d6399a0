//! The agent's hostPort API, started as `kpool-agent run` starts it, against the clients
//! that used to exhaust it (hardening 11): thousands of half-sent requests, silent
//! connections, a header that never ends. The brokers' probes must still be answered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kpool_agent::start::{AgentConfig, Placement, api_limits, start};
use kpool_policy::Policy;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

fn config(limits: kpool_serve::Limits, cgroups: &std::path::Path) -> AgentConfig {
    AgentConfig {
        policy: Arc::new(Policy::builtin().expect("built-in policy")),
        placement: Placement::Standalone,
        listen: "127.0.0.1:0".parse().expect("addr"),
        limits,
        // Nothing listens there: the poll fails, the API still answers.
        bootstrap: vec!["127.0.0.1:1".to_owned()],
        kafka_tls: None,
        kafka_timeout: Duration::from_millis(200),
        poll_interval: Duration::from_secs(60),
        exporter_timeout: Duration::from_millis(200),
        cgroup_root: cgroups.to_path_buf(),
        overhead_interval: Duration::from_secs(60),
        guard_interval: Duration::from_secs(60),
        guard_backoff: Duration::from_secs(60),
        namespace: None,
    }
}

async fn healthz(addr: std::net::SocketAddr) -> Result<String, String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .map_err(|_| "no answer in 5 s".to_owned())?
        .map_err(|e| e.to_string())?;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_half_sent_requests_stay_under_the_cap_and_probes_get_through() {
    let dir = tempfile::tempdir().expect("tmp");
    let limits = kpool_serve::Limits {
        max_connections: 32,
        header_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_millis(500),
        ..api_limits()
    };
    let running = start(config(limits, dir.path()))
        .await
        .expect("agent starts");
    let addr = running.addr();
    let mut held = Vec::new();
    for _ in 0..2000 {
        let Ok(Ok(mut s)) =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await
        else {
            break; // the backlog is full: the flood is throttled by the kernel
        };
        let _ = s
            .write_all(b"GET /v1/ready/kafka/kafka-0 HTTP/1.1\r\nhost: x\r\nx-pad: ")
            .await;
        held.push(s);
        assert!(running.api_stats().open() <= 32, "past the cap");
    }
    // The half-sent requests are cut; a probe's request is answered.
    let start = Instant::now();
    let answer = loop {
        match healthz(addr).await {
            Ok(a) => break a,
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "never answered: {e}"
                );
            }
        }
    };
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(running.api_stats().closed_idle() >= 32);
    let metrics = running.agent().metrics().encode();
    assert!(
        metrics.contains("kpool_agent_connections_max{listener=\"api\"} 32"),
        "{metrics}"
    );
    drop(held);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed() {
    let dir = tempfile::tempdir().expect("tmp");
    let limits = kpool_serve::Limits {
        header_timeout: Duration::from_millis(300),
        ..api_limits()
    };
    let running = start(config(limits, dir.path()))
        .await
        .expect("agent starts");
    let mut s = TcpStream::connect(running.addr()).await.expect("connect");
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(r.is_ok(), "a silent connection stayed open");
    running.shutdown().await;
}
