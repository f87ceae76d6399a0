//! kpool-probe, the real binary, against a real agent on a loopback port.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kpool_agent::pods::Standalone;
use kpool_agent::service::Agent;
use kpool_agent::snapshot::{Broker, Partition, Snapshot, Topic};
use kpool_policy::Policy;

fn snapshot(isr: &[i32]) -> Snapshot {
    Snapshot {
        brokers: (0..3)
            .map(|id| Broker {
                id,
                host: "h".into(),
                port: 1,
                rack: None,
            })
            .collect(),
        topics: vec![Topic {
            name: "t".into(),
            internal: false,
            min_isr: Some(2),
            partitions: vec![Partition {
                index: 0,
                leader: 0,
                replicas: vec![0, 1, 2],
                isr: isr.to_vec(),
                offline_replicas: vec![],
                adding_replicas: vec![],
            }],
        }],
        ..Snapshot::default()
    }
}

async fn serve(agent: Arc<Agent>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, kpool_agent::api::router(agent)).await });
    addr
}

fn probe(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kpool-probe"));
    cmd.args(args)
        .env_remove("HOST_IP")
        .env_remove("POD_NAME")
        .env_remove("POD_NAMESPACE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("probe runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
    )
}

/// Runs the probe for pod `streaming/<pod>` against the agent at `url`, off the runtime.
async fn ask(url: &str, pod: &str) -> (i32, String) {
    let args = ["--agent", url, "--namespace", "streaming", "--pod", pod].map(str::to_owned);
    tokio::task::spawn_blocking(move || probe(&args.each_ref().map(String::as_str), &[]))
        .await
        .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_and_reason_lines() {
    let p = Arc::new(Policy::builtin().expect("policy"));
    let agent = Agent::new(p.clone(), Arc::new(Standalone::new(p)));
    let addr = serve(agent.clone()).await;
    let url = format!("http://{addr}");

    let (code, line) = ask(&url, "kafka-1").await;
    assert_eq!(
        (code, line.as_str()),
        (1, "not ready: stale: no successful Kafka poll yet")
    );

    agent.publish(&snapshot(&[0, 1, 2]), BTreeMap::new());
    // From the env the webhook injects.
    let env = [
        ("HOST_IP", "127.0.0.1"),
        ("POD_NAMESPACE", "streaming"),
        ("POD_NAME", "kafka-1"),
    ];
    let port = addr.port().to_string();
    let (code, line) = tokio::task::spawn_blocking(move || {
        probe(
            &[&format!("--agent-port={port}"), "--timeout-ms=1500"],
            &env,
        )
    })
    .await
    .expect("join");
    assert_eq!(code, 0, "{line}");
    assert!(line.starts_with("ready: broker 1 registered"), "{line}");

    agent.publish(&snapshot(&[0, 2]), BTreeMap::new());
    let (code, line) = ask(&url, "kafka-1").await;
    assert_eq!(code, 1);
    assert_eq!(
        line,
        "not ready: broker 1 has 1 partition with its replica outside the ISR: t-0"
    );

    let (code, line) = ask(&url, "toolbox").await;
    assert_eq!(code, 2);
    assert!(
        line.contains("HTTP 404") && line.contains("no -N ordinal suffix"),
        "{line}"
    );
}

#[test]
fn cannot_ask_is_exit_2_within_the_timeout() {
    // Nothing listens.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let (code, line) = probe(
        &[
            "--agent",
            &format!("http://{free}"),
            "--namespace",
            "n",
            "--pod",
            "p-0",
        ],
        &[],
    );
    assert_eq!(code, 2);
    assert!(
        line.starts_with("kpool-probe: could not ask the agent: connect"),
        "{line}"
    );

    // Accepts and never answers: the probe gives up on its own deadline.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("addr");
    let start = Instant::now();
    let (code, line) = probe(
        &[
            "--agent",
            &format!("http://{addr}"),
            "--namespace",
            "n",
            "--pod",
            "p-0",
            "--timeout-ms",
            "300",
        ],
        &[],
    );
    assert_eq!(code, 2, "{line}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
    drop(silent);

    let (code, line) = probe(&["--namespace", "n", "--pod", "p-0"], &[]);
    assert_eq!(code, 2);
    assert!(line.contains("HOST_IP is not set"), "{line}");
    let (code, line) = probe(&["--bogus"], &[]);
    assert_eq!(code, 2);
    assert!(line.contains("unknown argument \"--bogus\""), "{line}");
    assert_eq!(line.lines().count(), 1, "one line, no usage dump: {line}");

    // A name that would change the request (a space, CRLF, a slash) is refused, not sent.
    for pod in ["kafka-1 HTTP/1.1\r\nX-Injected: 1", "../kafka-1", "..", ""] {
        let (code, line) = probe(
            &[
                "--agent",
                "http://127.0.0.1:9",
                "--namespace",
                "n",
                "--pod",
                pod,
            ],
            &[],
        );
        assert_eq!(code, 2, "{line}");
        assert!(line.contains("expected a Kubernetes name"), "{line}");
        assert_eq!(line.lines().count(), 1, "{line}");
    }
}

#[test]
fn help_states_the_exit_codes() {
    let out = Command::new(env!("CARGO_BIN_EXE_kpool-probe"))
        .arg("--help")
        .output()
        .expect("probe runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for want in [
        "0  ready: the agent answered HTTP 200",
        "1  not ready: the agent answered HTTP 503",
        "2  cannot tell:",
        "--timeout-ms N     time allowed for the whole exchange",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
}

#[test]
fn install_copies_an_executable_probe() {
    let dir = tempfile_dir();
    let dest = dir.join("kpool-probe");
    let (code, line) = probe(&["install", dest.to_str().expect("utf8")], &[]);
    assert_eq!(code, 0, "{line}");
    let out = Command::new(&dest)
        .arg("--bogus")
        .output()
        .expect("installed probe runs");
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("kpool-probe-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}
