//! kpool end to end over real processes on loopback, as it runs in a cluster:
//!
//! `kpool-certs create` → `kpool-webhook serve` with those certificates → the
//! AdmissionReviews the API server sends for StatefulSet-created pods (the captured CREATE
//! of `kafka-0` with `generateName`, synthesized CREATEs of `kafka-1` / `kafka-2`, the
//! captured dry-run non-broker pod that tolerates the pool taint, the captured UPDATE) →
//! the JSON patches applied → the mutated pod's readiness command (`kpool-probe` with the
//! injected env) run against `kpool-agent run --standalone`, which polls an in-process
//! Kafka-protocol test server as the cluster moves healthy → broker down → recovered →
//! silent (stale). The verdict follows within one poll interval (plus slack), and the
//! webhook's audit lines account for every admission request.

use kpool_testkit::kafka_server;

use std::net::{SocketAddr, TcpListener, TcpStream as StdTcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use kafka_server::{Behaviour, ClusterState, RACKS, TestKafka};
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const POLL: Duration = Duration::from_millis(200);

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// The debug binaries of the workspace, built once per test process by a nested
/// `cargo build` into a target directory of their own (`<target>/e2e-bins`): the outer
/// `cargo test` unifies features with dev-dependencies (e.g. kafka-protocol's `broker`), so
/// sharing its directory would rebuild those crates back and forth on every run. After the
/// first build this is incremental and takes a moment.
fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = workspace_root();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map(|t| if t.is_absolute() { t } else { root.join(t) })
            .unwrap_or_else(|| root.join("target"));
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let target = target.join("e2e-bins");
        let status = Command::new(cargo)
            .current_dir(&root)
            .env("CARGO_TARGET_DIR", &target)
            .args([
                "build",
                "--quiet",
                "-p",
                "kpool-webhook",
                "-p",
                "kpool-certs",
                "-p",
                "kpool-agent",
                "--bins",
            ])
            .status()
            .expect("cargo build runs");
        assert!(status.success(), "building the kpool binaries failed");
        target.join("debug")
    })
}

fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(p.is_file(), "{} is missing", p.display());
    p
}

/// A loopback port that was free a moment ago (bind port 0, read it, release it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A child process killed (and reaped) on drop.
struct Proc {
    name: &'static str,
    child: Child,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command) -> Self {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Self { name, child }
    }

    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited early: {status}", self.name);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until something accepts TCP connections on `addr`.
fn wait_for_port(proc: &mut Proc, addr: SocketAddr) {
    let start = Instant::now();
    while StdTcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
        proc.assert_running();
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{} never listened on {addr}",
            proc.name
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn fixture(name: &str) -> Value {
    kpool_testkit::fixtures::admission(name)
}

/// The captured CREATE of `kafka-0`, renamed to pod `kafka-N` (as the StatefulSet
/// controller would send it: `generateName` kept, index label and pod-name label set).
fn create_for(ordinal: u32) -> Value {
    let mut r = fixture("000-create-kafka-0.json");
    let name = format!("kafka-{ordinal}");
    let req = &mut r["request"];
    req["uid"] = json!(format!("e2e-create-{name}"));
    req["name"] = json!(name);
    let meta = &mut req["object"]["metadata"];
    meta["name"] = json!(name);
    meta["labels"]["apps.kubernetes.io/pod-index"] = json!(ordinal.to_string());
    meta["labels"]["statefulset.kubernetes.io/pod-name"] = json!(name);
    r
}

fn tls_connector(ca: &Path) -> TlsConnector {
    let config = kpool_certs::tls::client_config(ca, &[b"http/1.1"]).expect("client config");
    TlsConnector::from(Arc::new(config))
}

/// POSTs one review over a fresh, verified TLS connection, as the API server does.
async fn post(addr: SocketAddr, ca: &Path, path: &str, review: &Value) -> (u16, Value) {
    let tcp = TcpStream::connect(addr).await.expect("connect webhook");
    let stream = tls_connector(ca)
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake verified against the generated CA");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("http handshake");
    tokio::spawn(conn);
    let req = Request::post(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(review.to_string())))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        serde_json::from_slice(&body).expect("AdmissionReview JSON"),
    )
}

/// The mutated pod: the review's object with the response's JSON patch applied.
fn mutated(review: &Value, answer: &Value) -> Value {
    let resp = &answer["response"];
    assert_eq!(resp["allowed"], true, "{answer}");
    assert_eq!(resp["patchType"], "JSONPatch", "{answer}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(resp["patch"].as_str().expect("base64 patch"))
        .expect("patch is base64");
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("RFC 6902 patch");
    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).expect("patch applies to the pod as sent");
    pod
}

/// The readiness command of the broker container, ready to run on this host: argv[0]
/// (`/kpool/bin/kpool-probe` in the pod) replaced by the built binary, the downward-API
/// env it declares filled in as the kubelet would on node 127.0.0.1.
struct ProbeCmd {
    args: Vec<String>,
    env: Vec<(String, String)>,
}

fn readiness_command(pod: &Value) -> ProbeCmd {
    let containers = pod["spec"]["containers"].as_array().expect("containers");
    let broker = containers
        .iter()
        .find(|c| c["readinessProbe"]["exec"].is_object())
        .expect("a container with the injected exec readiness probe");
    let command: Vec<String> = broker["readinessProbe"]["exec"]["command"]
        .as_array()
        .expect("command")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_owned())
        .collect();
    assert!(
        command[0].ends_with("/kpool-probe"),
        "the probe execs kpool-probe: {command:?}"
    );
    let name = pod["metadata"]["name"].as_str().expect("pod name");
    let namespace = "streaming";
    let mut env = Vec::new();
    for e in broker["env"].as_array().expect("env") {
        let key = e["name"].as_str().expect("env name");
        let field = e["valueFrom"]["fieldRef"]["fieldPath"].as_str();
        let value = match (key, field) {
            (_, Some("status.hostIP")) => "127.0.0.1".to_owned(),
            (_, Some("metadata.name")) => name.to_owned(),
            (_, Some("metadata.namespace")) => namespace.to_owned(),
            _ => continue,
        };
        env.push((key.to_owned(), value));
    }
    for want in ["HOST_IP", "POD_NAME", "POD_NAMESPACE"] {
        assert!(
            env.iter().any(|(k, _)| k == want),
            "{want} injected from the downward API: {env:?}"
        );
    }
    ProbeCmd {
        args: command[1..].to_vec(),
        env,
    }
}

impl ProbeCmd {
    fn run(&self) -> Output {
        Command::new(bin("kpool-probe"))
            .args(&self.args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("run kpool-probe")
    }

    /// Runs the probe until its exit code is `want` or `within` passes; returns the last
    /// exit code and output line.
    async fn until(&self, want: i32, within: Duration) -> (i32, String) {
        let start = Instant::now();
        loop {
            let out = self.run();
            let code = out.status.code().unwrap_or(-1);
            let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if code == want || start.elapsed() > within {
                return (code, line);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_to_readiness_over_real_processes() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();

    // The policy both enforcers read: the documented default, with the agent on a free
    // port and a short staleness window.
    let agent_port = free_port();
    let policy = include_str!("../../../examples/policy.yaml")
        .replacen("agentPort: 8475", &format!("agentPort: {agent_port}"), 1)
        .replacen("staleAfterSeconds: 30", "staleAfterSeconds: 1", 1);
    assert!(policy.contains(&format!("agentPort: {agent_port}")));
    let policy_path = d.join("policy.yaml");
    std::fs::write(&policy_path, &policy).expect("policy");

    // 1. certificates
    let certs = d.join("certs");
    let out = Command::new(bin("kpool-certs"))
        .args([
            "create",
            "--service",
            "kpool-webhook",
            "--namespace",
            "kpool-system",
            "--dns",
            "localhost",
            "--ip",
            "127.0.0.1",
            "--out",
        ])
        .arg(&certs)
        .output()
        .expect("kpool-certs runs");
    assert!(
        out.status.success(),
        "kpool-certs create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["ca.crt", "ca.key", "tls.crt", "tls.key"] {
        assert!(certs.join(f).is_file(), "{f} written");
    }

    // 2. the webhook with those certificates
    let (tls_port, ops_port) = (free_port(), free_port());
    let tls_addr: SocketAddr = ([127, 0, 0, 1], tls_port).into();
    let audit_path = d.join("audit.jsonl");
    let mut webhook = Proc::spawn(
        "kpool-webhook",
        Command::new(bin("kpool-webhook"))
            .arg("serve")
            .arg("--tls-cert")
            .arg(certs.join("tls.crt"))
            .arg("--tls-key")
            .arg(certs.join("tls.key"))
            .arg("--policy")
            .arg(&policy_path)
            .arg("--listen")
            .arg(tls_addr.to_string())
            .arg("--metrics-listen")
            .arg(format!("127.0.0.1:{ops_port}"))
            .arg("--audit-log")
            .arg(&audit_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for_port(&mut webhook, tls_addr);
    let ca = certs.join("ca.crt");

    // 3. admission, as the API server sends it
    let mut uids = Vec::new();
    let mut pods = Vec::new();
    for (ordinal, review) in [
        (0, fixture("000-create-kafka-0.json")),
        (1, create_for(1)),
        (2, create_for(2)),
    ] {
        assert_eq!(
            review["request"]["object"]["metadata"]["generateName"],
            "kafka-"
        );
        let (status, answer) = post(tls_addr, &ca, "/mutate", &review).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["response"]["uid"], review["request"]["uid"]);
        let pod = mutated(&review, &answer);
        let labels = &pod["metadata"]["labels"];
        assert_eq!(
            labels["kpool.io/broker-id"],
            ordinal.to_string(),
            "broker id from the ordinal: {labels}"
        );
        assert!(
            pod["metadata"]["annotations"]["kpool.io/status"].is_string(),
            "status annotation"
        );
        uids.push(review["request"]["uid"].as_str().expect("uid").to_owned());
        pods.push(pod);
    }

    // The captured dry-run CREATE of a non-broker pod tolerating the pool taint: the pool
    // guard denies it (enforce mode), dry run or not.
    let sneaky = fixture("003-create-sneaky-batch-dryrun.json");
    assert_eq!(sneaky["request"]["dryRun"], true);
    let (status, answer) = post(tls_addr, &ca, "/validate", &sneaky).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["response"]["uid"], sneaky["request"]["uid"]);
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    uids.push(sneaky["request"]["uid"].as_str().expect("uid").to_owned());

    // The same pod, not a dry run this time.
    let mut sneaky_real = sneaky.clone();
    sneaky_real["request"]["dryRun"] = json!(false);
    sneaky_real["request"]["uid"] = json!("e2e-sneaky-real");
    let (_, answer) = post(tls_addr, &ca, "/validate", &sneaky_real).await;
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    uids.push("e2e-sneaky-real".to_owned());

    // The captured UPDATE: admitted, not mutated (mutation happens on CREATE only).
    let update = fixture("005-update-kafka-0.json");
    let (status, answer) = post(tls_addr, &ca, "/mutate", &update).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    assert!(answer["response"]["patch"].is_null(), "{answer}");
    uids.push(update["request"]["uid"].as_str().expect("uid").to_owned());

    // Re-invocation (reinvocationPolicy: IfNeeded): the injected pod gives no patch.
    let mut again = fixture("000-create-kafka-0.json");
    again["request"]["uid"] = json!("e2e-reinvoke-kafka-0");
    again["request"]["object"] = pods[0].clone();
    let (_, answer) = post(tls_addr, &ca, "/mutate", &again).await;
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    assert!(
        answer["response"]["patch"].is_null(),
        "idempotent: {answer}"
    );
    uids.push("e2e-reinvoke-kafka-0".to_owned());

    // 4. the agent following the Kafka-protocol test server
    let kafka = TestKafka::start(ClusterState::healthy(6, &RACKS, &[("orders", 12, 6)])).await;
    let agent_addr: SocketAddr = ([127, 0, 0, 1], agent_port).into();
    let mut agent = Proc::spawn(
        "kpool-agent",
        Command::new(bin("kpool-agent"))
            .arg("run")
            .arg("--standalone")
            .arg("--listen")
            .arg(agent_addr.to_string())
            .arg("--kafka-bootstrap")
            .arg(kafka.bootstrap())
            .arg("--policy")
            .arg(&policy_path)
            .arg("--poll-interval")
            .arg("200ms")
            .arg("--kafka-timeout")
            .arg("300ms")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for_port(&mut agent, agent_addr);

    let probe1 = readiness_command(&pods[1]);
    let probe2 = readiness_command(&pods[2]);
    assert!(
        probe1
            .args
            .iter()
            .any(|a| a.contains(&agent_port.to_string())),
        "the probe asks the agent port of the policy: {:?}",
        probe1.args
    );
    // One poll interval, the poll itself, the probe process start; slack for a busy CI.
    let one_poll = POLL * 4;

    let (code, line) = probe1.until(0, Duration::from_secs(10)).await;
    assert_eq!(code, 0, "healthy cluster, kafka-1 ready: {line}");

    kafka.update_state(|s| s.broker_down(1));
    let t = Instant::now();
    let (code, line) = probe1.until(1, one_poll).await;
    assert_eq!(code, 1, "broker 1 down → kafka-1 not ready: {line}");
    assert!(line.contains("not registered"), "{line}");
    eprintln!("broker down seen by the probe after {:?}", t.elapsed());
    let (code, line) = probe2.until(0, Duration::ZERO).await;
    assert_eq!(code, 0, "kafka-2 stays ready (verdict: broker): {line}");

    kafka.set_state(ClusterState::healthy(6, &RACKS, &[("orders", 12, 6)]));
    let t = Instant::now();
    let (code, line) = probe1.until(0, one_poll).await;
    assert_eq!(code, 0, "recovered: {line}");
    eprintln!("recovery seen by the probe after {:?}", t.elapsed());

    // Kafka stops answering: the last verdict holds until it is stale, then not-ready.
    kafka.set_behaviour(Behaviour::silent());
    let (code, line) = probe1.until(1, Duration::from_secs(5)).await;
    assert_eq!(code, 1, "{line}");
    assert!(line.contains("stale"), "{line}");

    // The agent goes away: the probe says it could not ask (exit 2), quickly.
    agent.assert_running();
    drop(agent);
    let t = Instant::now();
    let out = probe1.run();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(t.elapsed() < Duration::from_secs(3));

    // 5. the audit lines account for every admission request
    webhook.assert_running();
    let start = Instant::now();
    let lines: Vec<Value> = loop {
        let text = std::fs::read_to_string(&audit_path).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each audit line is JSON"))
            .collect();
        if lines.len() >= uids.len() || start.elapsed() > Duration::from_secs(5) {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        lines.len(),
        uids.len(),
        "one audit line per request: {lines:#?}"
    );
    for uid in &uids {
        let line = lines
            .iter()
            .find(|l| l["admission"]["request_uid"] == uid.as_str())
            .unwrap_or_else(|| panic!("no audit line for request {uid}"));
        for key in [
            "time",
            "component",
            "decision",
            "subject",
            "policy_hash",
            "action",
        ] {
            assert!(!line[key].is_null(), "audit line has {key}: {line}");
        }
    }
    let by_uid = |uid: &str| {
        lines
            .iter()
            .find(|l| l["admission"]["request_uid"] == uid)
            .expect("line")
            .clone()
    };
    assert_eq!(by_uid(&uids[0])["decision"], "inject");
    assert_eq!(by_uid(&uids[0])["action"], "patched");
    assert_eq!(by_uid(&uids[3])["action"], "denied");
    assert_eq!(by_uid(&uids[3])["admission"]["dry_run"], true);
    assert_eq!(
        by_uid("e2e-reinvoke-kafka-0")["decision"],
        "already-injected"
    );
    drop(webhook);
}
