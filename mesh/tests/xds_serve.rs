//! `kpool-mesh serve` in-process against a scripted Kafka server: membership from
//! Metadata (brokers added and removed), pinned endpoints reloaded from a file (a broker
//! moving is EDS only), readiness after the first complete snapshot, Kafka unreachable at
//! start (not ready, retried) and mid-run (last snapshot kept, reported stale), an audit
//! line per change, metrics, graceful shutdown.

mod xds_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kpool_agent::kafka::{KafkaClient, KafkaConfig};
use kpool_mesh::client::ClientOptions;
use kpool_mesh::serve::pods::{KubePods, PodAddresses};
use kpool_mesh::serve::{self, MembershipOptions, MeshMetrics, ServeConfig};
use kpool_mesh::xds::ResourceType;
use kpool_policy::{DEFAULT_POLICY_YAML, Policy};
use kpool_testkit::kafka_server::{ClusterState, TestKafka};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use xds_support::{CONFIG_DIR, FakeEnvoy, GrpcEnvoy};

struct Running {
    xds: SocketAddr,
    http: SocketAddr,
    metrics: Arc<MeshMetrics>,
    audit: Arc<Mutex<Vec<u8>>>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(kafka: Option<&TestKafka>, endpoints_file: Option<PathBuf>) -> Self {
        Self::start_with(kafka, endpoints_file, None).await
    }

    async fn start_with(
        kafka: Option<&TestKafka>,
        endpoints_file: Option<PathBuf>,
        pods: Option<(Arc<dyn PodAddresses>, Arc<tokio::sync::Notify>)>,
    ) -> Self {
        let xds = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let http = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let (xds_addr, http_addr) = (
            xds.local_addr().expect("addr"),
            http.local_addr().expect("addr"),
        );
        let kafka = kafka.map(|k| {
            KafkaClient::new(KafkaConfig {
                bootstrap: vec![k.bootstrap()],
                timeout: Duration::from_secs(1),
                ..KafkaConfig::default()
            })
            .expect("kafka client")
        });
        let config = ServeConfig {
            membership: MembershipOptions {
                policies: vec![
                    Policy::from_yaml(DEFAULT_POLICY_YAML, "policy.yaml").expect("policy"),
                ],
                routes: ClientOptions::default(),
                config_dir: CONFIG_DIR.to_owned(),
                pins: BTreeMap::new(),
                endpoints_file,
                poll_interval: Duration::from_millis(200),
                backoff: (Duration::from_millis(100), Duration::from_millis(400)),
                local_cluster: pods.as_ref().map(|_| "k8s-a".to_owned()),
            },
            kafka,
            tls: None,
            ads_limits: kpool_mesh::xds::server::ads_limits(64),
            pods,
        };
        let metrics = Arc::new(MeshMetrics::default());
        let audit = Arc::new(Mutex::new(Vec::new()));
        let sink: serve::AuditSink = audit.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve::run(
            config,
            xds,
            Some(http),
            metrics.clone(),
            sink,
            async {
                let _ = stopped.await;
            },
        ));
        Self {
            xds: xds_addr,
            http: http_addr,
            metrics,
            audit,
            stop: Some(stop),
            task,
        }
    }

    fn audit_lines(&self) -> Vec<serde_json::Value> {
        let text = String::from_utf8(self.audit.lock().expect("audit").clone()).expect("utf-8");
        text.lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect()
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("stops within 10s")
            .expect("a clean stop");
    }
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        status,
        out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned(),
    )
}

async fn until(what: &str, f: impl AsyncFn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "{what} within 15s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn brokers_follow_kafka_metadata_and_pins_follow_the_file() {
    let kafka = TestKafka::start(ClusterState::healthy(3, &[], &[])).await;
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("endpoints");
    std::fs::write(
        &file,
        "# pinned\n0=127.0.0.1:19000\n1=127.0.0.1:19001\n2=127.0.0.1:19002\n",
    )
    .expect("write");
    let running = Running::start(Some(&kafka), Some(file.clone())).await;
    until("ready", async || {
        get(running.http, "/readyz").await.0 == 200
    })
    .await;
    let envoy = GrpcEnvoy::connect(running.xds, FakeEnvoy::new("app-1")).await;
    envoy
        .wait("three listeners", |e| e.listeners.len() == 3)
        .await;
    assert_eq!(
        envoy.state.lock().expect("state").endpoint_addrs()["kafka-stretch-2"],
        ["127.0.0.1:19002"]
    );

    // A broker added to Metadata is a new listener (its INTERNAL host does not resolve
    // here: its cluster has no endpoint, and the listener is there all the same).
    kafka.set_state(ClusterState::healthy(4, &[], &[]));
    envoy
        .wait("four listeners", |e| e.listeners.len() == 4)
        .await;
    assert!(envoy.state.lock().expect("state").endpoint_addrs()["kafka-stretch-3"].is_empty());

    // A pin changed in the file moves a broker: endpoints only.
    envoy.state.lock().expect("state").received.clear();
    std::fs::write(
        &file,
        "0=127.0.0.1:19000\n1=127.0.0.1:29001\n2=127.0.0.1:19002\n",
    )
    .expect("write");
    envoy
        .wait("broker 1 moved", |e| {
            e.endpoint_addrs()["kafka-stretch-1"] == ["127.0.0.1:29001"]
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received: Vec<ResourceType> = envoy
        .state
        .lock()
        .expect("state")
        .received
        .iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(received, [ResourceType::Endpoint], "a move is EDS only");

    // A broker leaving Metadata loses its listener and cluster.
    kafka.set_state(ClusterState::healthy(2, &[], &[]));
    envoy
        .wait("two brokers", |e| {
            e.listeners.len() == 2 && e.clusters.len() == 2
        })
        .await;

    let lines = running.audit_lines();
    let changes: Vec<(Vec<i64>, Vec<i64>, usize)> = lines
        .iter()
        .map(|l| {
            assert_eq!(l["decision"], "membership-change");
            let ids = |k: &str| {
                l[k].as_array()
                    .expect("array")
                    .iter()
                    .map(|v| v.as_i64().expect("id"))
                    .collect::<Vec<_>>()
            };
            (
                ids("added"),
                ids("removed"),
                l["moved"].as_array().expect("moved").len(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            (vec![0, 1, 2], vec![], 0),
            (vec![3], vec![], 0),
            (vec![], vec![], 1),
            (vec![], vec![2, 3], 0)
        ]
    );
    assert_eq!(lines[2]["moved"][0]["to"][0], "127.0.0.1:29001");

    let (status, body) = get(running.http, "/metrics").await;
    assert_eq!(status, 200);
    for metric in [
        "kpool_mesh_ready 1",
        "kpool_mesh_membership_brokers 2",
        "kpool_mesh_snapshot_generation 4",
        "kpool_mesh_xds_streams 1",
        "kpool_mesh_membership_stale 0",
    ] {
        assert!(body.contains(metric), "{metric} in\n{body}");
    }
    assert!(
        body.contains("kpool_mesh_xds_pushes_total{type=\"eds\"}"),
        "{body}"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn kafka_unreachable_at_start_is_not_ready_and_mid_run_is_stale() {
    let mut kafka = TestKafka::start(ClusterState::healthy(2, &[], &[])).await;
    kafka.stop().await;
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("endpoints");
    std::fs::write(&file, "0=127.0.0.1:19000\n1=127.0.0.1:19001\n").expect("write");
    let running = Running::start(Some(&kafka), Some(file.clone())).await;
    let early = GrpcEnvoy::connect(running.xds, FakeEnvoy::new("early")).await;
    until("Kafka polls retried", async || {
        running.metrics.kafka_poll_failures() >= 2
    })
    .await;
    let (status, body) = get(running.http, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        early.state.lock().expect("state").received.is_empty(),
        "nothing served yet"
    );

    kafka.restart().await;
    until("ready once Kafka answers", async || {
        get(running.http, "/readyz").await.0 == 200
    })
    .await;
    early.wait("served", |e| e.listeners.len() == 2).await;

    // Mid-run: the last broker set is kept, reported stale; pins still apply.
    kafka.stop().await;
    until("stale", async || running.metrics.is_stale()).await;
    let (status, body) = get(running.http, "/readyz").await;
    assert_eq!(status, 200);
    assert!(body.contains("stale"), "{body}");
    std::fs::write(&file, "0=127.0.0.1:19000\n1=127.0.0.1:29001\n").expect("write");
    early
        .wait("a pin applies while stale", |e| {
            e.endpoint_addrs()["kafka-stretch-1"] == ["127.0.0.1:29001"]
        })
        .await;
    assert_eq!(
        early.state.lock().expect("state").listeners.len(),
        2,
        "last good brokers kept"
    );
    let lines = running.audit_lines();
    assert_eq!(lines.last().expect("line")["stale"], true);

    kafka.restart().await;
    until("live again", async || !running.metrics.is_stale()).await;
    running.shutdown().await;
}

#[tokio::test]
async fn without_kafka_the_pinned_brokers_are_the_membership() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("endpoints");
    std::fs::write(&file, "5=127.0.0.1:19005\n").expect("write");
    let running = Running::start(None, Some(file.clone())).await;
    let envoy = GrpcEnvoy::connect(running.xds, FakeEnvoy::new("standalone")).await;
    envoy
        .wait("one listener", |e| {
            e.listener_ports().get("kafka-stretch-5") == Some(&9096)
        })
        .await;
    std::fs::write(&file, "5=127.0.0.1:19005\n6=127.0.0.1:19006\n").expect("write");
    envoy
        .wait("a pinned broker added", |e| e.listeners.len() == 2)
        .await;
    // A file that does not parse is refused; the last pins stay.
    std::fs::write(&file, "5=nope\n").expect("write");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(envoy.state.lock().expect("state").listeners.len(), 2);
    running.shutdown().await;
}

#[test]
fn the_endpoints_file_names_its_bad_line() {
    let e = serve::membership::parse_endpoints_file("0=a:1\n\n# c\n1=b\n").expect_err("bad");
    assert!(e.starts_with("line 4:"), "{e}");
    let e = serve::membership::parse_endpoints_file("0=a:1\n0=b:2\n").expect_err("twice");
    assert_eq!(e, "line 2: broker 0 is pinned twice");
    let ok = serve::membership::parse_endpoints_file("7=[::1]:9443 # v6\n").expect("ok");
    assert_eq!(ok[&7].host, "::1");
}

/// The `kpool-mesh serve` binary with `--kafka-tls-*` (the agent's flags and variables,
/// `kpool_cli::kafka::KafkaTlsArgs`): its brokers come from a Kafka that speaks only mTLS;
/// the same process without them stays not ready; the flags without `--kafka-bootstrap` are
/// refused.
#[tokio::test]
async fn serve_follows_a_kafka_that_speaks_only_mtls() {
    use kpool_testkit::kafka_server::tls;
    let dir = tempfile::tempdir().expect("tmp");
    let m = tls::generate(dir.path());
    let kafka =
        TestKafka::start_tls(ClusterState::healthy(3, &[], &[]), tls::acceptor(&m, true)).await;
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, DEFAULT_POLICY_YAML).expect("policy");
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
    };
    let start = |tls_flags: bool| {
        let metrics = free();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kpool-mesh"));
        cmd.arg("serve")
            .arg("--policy")
            .arg(&policy)
            .args(["--standalone", "--poll-interval", "200ms"])
            .args(["--listen", &free().to_string()])
            .args(["--metrics-listen", &metrics.to_string()])
            .args([
                "--kafka-bootstrap",
                &format!("localhost:{}", kafka.addr().port()),
            ])
            .env_clear()
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        if tls_flags {
            cmd.arg("--kafka-tls-ca")
                .arg(&m.ca)
                .env("KPOOL_KAFKA_TLS_CERT", &m.client_cert)
                .env("KPOOL_KAFKA_TLS_KEY", &m.client_key);
        }
        (cmd.spawn().expect("start kpool-mesh serve"), metrics)
    };
    let readyz = |addr: SocketAddr| async move {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(_) => Some(get(addr, "/readyz").await.0),
            Err(_) => None,
        }
    };
    let (mut with_tls, metrics) = start(true);
    until("ready from the mTLS Kafka's Metadata", async || {
        readyz(metrics).await == Some(200)
    })
    .await;
    let (mut plaintext, metrics_plain) = start(false);
    until("the plaintext one answering", async || {
        readyz(metrics_plain).await.is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        readyz(metrics_plain).await,
        Some(503),
        "plaintext to an mTLS-only Kafka gets no Metadata"
    );
    for child in [&mut with_tls, &mut plaintext] {
        let _ = child.kill();
        let _ = child.wait();
    }
    let mut audit = String::new();
    if let Some(mut out) = with_tls.stdout.take() {
        std::io::Read::read_to_string(&mut out, &mut audit).expect("audit");
    }
    let first: serde_json::Value =
        serde_json::from_str(audit.lines().next().unwrap_or_default()).expect("an audit line");
    assert_eq!(first["added"], serde_json::json!([0, 1, 2]), "{audit}");

    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_kpool-mesh"))
        .arg("serve")
        .arg("--policy")
        .arg(&policy)
        .args(["--standalone", "--endpoint", "0=127.0.0.1:1"])
        .arg("--kafka-tls-ca")
        .arg(&m.ca)
        .env_clear()
        .output()
        .expect("run");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("expected --kafka-bootstrap with them"),
        "{stderr}"
    );
}

/// `--tls-cert`/`--tls-key` are checked at start, the error naming the flag, the file and
/// what was expected.
#[test]
fn tls_files_are_checked_at_start_and_named() {
    let dir = tempfile::tempdir().expect("tmp");
    let certs = dir.path().join("xds");
    xds_support::server_certs(&certs, "127.0.0.1");
    let (cert, key) = (certs.join("tls.crt"), certs.join("tls.key"));
    assert!(serve::tls_config(&cert, &key).is_ok());
    let missing = dir.path().join("nope.crt");
    let e = serve::tls_config(&missing, &key)
        .expect_err("missing")
        .to_string();
    assert!(
        e.starts_with(&format!("--tls-cert {}: cannot read it", missing.display())),
        "{e}"
    );
    let e = serve::tls_config(&key, &key)
        .expect_err("a key")
        .to_string();
    assert!(
        e.contains("--tls-cert")
            && e.contains("expected a PEM certificate chain")
            && e.contains("found none"),
        "{e}"
    );
    let e = serve::tls_config(&cert, &cert)
        .expect_err("a certificate")
        .to_string();
    assert!(
        e.starts_with(&format!(
            "--tls-key {}: expected a PEM private key",
            cert.display()
        )),
        "{e}"
    );
}

fn pod(name: &str, namespace: &str, phase: &str, ip: Option<&str>) -> serde_json::Value {
    let mut status = serde_json::json!({"phase": phase});
    if let Some(ip) = ip {
        status["podIP"] = serde_json::json!(ip);
    }
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}")},
        "spec": {"containers": [{"name": "kafka", "image": "kafka"}]},
        "status": status,
    })
}

/// Brokers of this Kubernetes cluster get their running pod's IP at the mTLS port, pushed
/// as soon as the watch sees a new one; a pod not running yet has no endpoint; pods of
/// other namespaces are not looked at (the watches are per broker namespace, so a Role in
/// each is all the RBAC it needs); a pin still wins.
#[tokio::test]
async fn local_broker_pods_are_reached_at_their_running_ip() {
    let api = kpool_testkit::fake_api::FakeApi::default();
    api.set_pods(vec![
        pod("kafka-0", "streaming", "Running", Some("10.1.0.10")),
        pod("kafka-1", "streaming", "Pending", None),
        pod("kafka-2", "other", "Running", Some("10.9.9.9")),
    ]);
    let wake = Arc::new(tokio::sync::Notify::new());
    let (pods, watch) = KubePods::watch(
        api.client(),
        vec!["streaming".to_owned(), "kafka-eu".to_owned()],
        wake.clone(),
    );
    let kafka = TestKafka::start(ClusterState::healthy(4, &[], &[])).await;
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("endpoints");
    std::fs::write(&file, "3=127.0.0.1:19003\n").expect("write");
    let running = Running::start_with(Some(&kafka), Some(file), Some((Arc::new(pods), wake))).await;
    let envoy = GrpcEnvoy::connect(running.xds, FakeEnvoy::new("app")).await;
    envoy
        .wait("kafka-0 at its pod IP", |e| {
            e.endpoint_addrs().get("kafka-stretch-0").map(Vec::as_slice)
                == Some(&["10.1.0.10:9443".to_owned()][..])
        })
        .await;
    {
        let e = envoy.state.lock().expect("state");
        let addrs = e.endpoint_addrs();
        assert!(
            addrs["kafka-stretch-1"].is_empty(),
            "not running: no endpoint"
        );
        assert!(
            addrs["kafka-stretch-2"].is_empty(),
            "another namespace's pod is not it"
        );
        assert_eq!(
            addrs["kafka-stretch-3"],
            ["127.0.0.1:19003"],
            "the pin wins"
        );
    }
    // Rescheduled: the new IP is pushed at once (well before the next Kafka poll).
    api.add_pod(pod("kafka-1", "streaming", "Running", Some("10.1.0.11")));
    envoy
        .wait("kafka-1 running", |e| {
            e.endpoint_addrs()["kafka-stretch-1"] == ["10.1.0.11:9443"]
        })
        .await;
    api.add_pod(pod("kafka-0", "streaming", "Running", Some("10.1.0.20")));
    envoy
        .wait("kafka-0 moved", |e| {
            e.endpoint_addrs()["kafka-stretch-0"] == ["10.1.0.20:9443"]
        })
        .await;
    // Only the broker namespaces' pods were ever asked for, never every namespace's.
    let paths: std::collections::BTreeSet<String> = api.log().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        [
            "/api/v1/namespaces/kafka-eu/pods",
            "/api/v1/namespaces/streaming/pods"
        ]
        .map(str::to_owned)
        .into(),
    );
    watch.abort();
    running.shutdown().await;
}
