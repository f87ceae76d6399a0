//! The `kpool-agent` binary as an operator meets it: startup errors that say what is
//! missing and where, and a graceful stop on SIGTERM.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_kpool-agent");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("NODE_NAME")
        .env_remove("KUBECONFIG")
        .env("KPOOL_LOG", "warn")
        .output()
        .expect("kpool-agent runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn in_cluster_without_node_name_says_what_to_set() {
    let out = run(&["run"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = stderr(&out);
    assert!(
        err.contains("NODE_NAME is not set") && err.contains("--standalone"),
        "{err}"
    );
}

#[test]
fn invalid_policy_names_the_file_and_the_field() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("policy.yaml");
    let yaml = kpool_policy::DEFAULT_POLICY_YAML.replace(
        "zones: [eu-west-1a, eu-west-1b, eu-west-1c]",
        "zones: [eu-west-1a, eu-west-1a, eu-west-1c]",
    );
    assert_ne!(
        yaml,
        kpool_policy::DEFAULT_POLICY_YAML,
        "the example changed"
    );
    std::fs::write(&path, yaml).expect("write");
    let out = run(&[
        "run",
        "--standalone",
        "--policy",
        path.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = stderr(&out);
    assert!(err.contains("policy.yaml"), "names the file: {err}");
    assert!(err.starts_with("kpool-agent: error: "), "{err}");
    assert!(
        err.contains("zones[1]") && err.contains("eu-west-1a"),
        "names the field and the value: {err}"
    );
}

#[test]
fn bad_flag_values_name_the_flag() {
    let out = run(&["run", "--standalone", "--poll-interval", "5x"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr(&out).contains("--poll-interval"), "{}", stderr(&out));
    let out = run(&["--log", "kpool=[", "run", "--standalone"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr(&out)
            .starts_with("kpool-agent: error: --log (KPOOL_LOG): invalid filter \"kpool=[\""),
        "{}",
        stderr(&out)
    );
    let out = run(&["run", "--standalone", "--kafka-bootstrap", "no-port"]);
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(stderr(&out).contains("no-port"), "{}", stderr(&out));
}

fn get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn standalone_serves_then_stops_cleanly_on_sigterm() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let closed = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(BIN)
        .args(["run", "--standalone", "--listen", &addr])
        .args(["--kafka-bootstrap", &format!("127.0.0.1:{closed}")])
        .args(["--cgroup-root", "/nonexistent"])
        .env_remove("NODE_NAME")
        .env("KPOOL_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    let health = loop {
        if let Some(r) = get(&addr, "/healthz") {
            break r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the agent did not start listening"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let ready = get(&addr, "/v1/ready/streaming/kafka-0").expect("answer");
    assert!(
        ready.starts_with("HTTP/1.1 503"),
        "Kafka unreachable: {ready}"
    );

    let pid = child.id().to_string();
    let kill = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(kill.success());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no exit within 10 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read");
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("SIGTERM received"), "{err}");
    assert!(
        err.contains("/nonexistent"),
        "the overhead sampler says why it is off: {err}"
    );
}
