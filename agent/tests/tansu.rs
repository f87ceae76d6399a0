//! Interop with a real Kafka-compatible broker: tansu (`scripts/install-tansu`).
//!
//! Starts `tansu broker` with in-memory storage on a free port, creates topics with a real
//! Kafka client (Python confluent-kafka, i.e. librdkafka), and takes a snapshot with
//! `KafkaClient`. Without a tansu binary the test explains why and passes, unless
//! `KPOOL_REQUIRE_TANSU=1`, when it fails.

use std::fs::File;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kpool_agent::kafka::{KafkaClient, KafkaConfig};
use kpool_agent::snapshot::Snapshot;

const REQUIRE: &str = "KPOOL_REQUIRE_TANSU";

fn required() -> bool {
    std::env::var(REQUIRE).is_ok_and(|v| v == "1")
}

/// Skip (print why and return) or, when required, fail.
fn skip_or_fail(why: &str) {
    if required() {
        panic!("{REQUIRE}=1 but {why}");
    }
    eprintln!("skipping the tansu interop test: {why} (set {REQUIRE}=1 to make this a failure)");
}

/// `tansu` on PATH, else in cargo's bin directory.
fn find_tansu() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("tansu"));
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    on_path
        .chain(cargo_home.map(|h| h.join("bin").join("tansu")))
        .find(|p| p.is_file())
}

/// The broker process, killed when the test ends however it ends.
struct Broker {
    child: Child,
    log: PathBuf,
}

impl Broker {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn start_broker(tansu: &Path, port: u16, dir: &Path) -> Broker {
    let url = format!("tcp://127.0.0.1:{port}");
    let log = dir.join("tansu.log");
    let out = File::create(&log).expect("log file");
    let err = out.try_clone().expect("log file");
    let child = Command::new(tansu)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "memory://tansu/",
        ])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", tansu.display()));
    let mut broker = Broker { child, log };

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = broker.child.try_wait() {
            panic!(
                "tansu exited with {status} before listening:\n{}",
                broker.log()
            );
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return broker;
        }
        assert!(
            Instant::now() < deadline,
            "tansu did not listen on {port} within 30s:\n{}",
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Make sure `confluent_kafka` imports, installing it with pip if missing.
fn ensure_confluent_kafka() -> Result<(), String> {
    let imports = || {
        Command::new("python3")
            .args(["-c", "import confluent_kafka"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if imports() {
        return Ok(());
    }
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "confluent-kafka",
        ])
        .output()
        .map_err(|e| format!("cannot run python3 -m pip: {e}"))?;
    if !out.status.success() || !imports() {
        return Err(format!(
            "pip install confluent-kafka failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// Topics created through librdkafka's admin API: (name, partitions, replication factor,
/// explicit min.insync.replicas).
const TOPICS: [(&str, i32, i32, Option<&str>); 3] = [
    ("orders", 3, 1, None),
    ("payments", 2, 1, None),
    ("audit", 1, 1, Some("2")),
];

const CREATE_TOPICS: &str = r#"
import json, sys
from confluent_kafka.admin import AdminClient, NewTopic
bootstrap, spec = sys.argv[1], json.loads(sys.argv[2])
admin = AdminClient({"bootstrap.servers": bootstrap, "broker.address.family": "v4"})
topics = []
for name, partitions, rf, min_isr in spec:
    config = {"min.insync.replicas": min_isr} if min_isr else {}
    topics.append(NewTopic(name, num_partitions=partitions, replication_factor=rf, config=config))
for name, future in admin.create_topics(topics, request_timeout=20).items():
    future.result(timeout=30)
    print("created", name)
"#;

fn create_topics(bootstrap: &str) {
    let spec = format!(
        "[{}]",
        TOPICS
            .iter()
            .map(|(n, p, rf, m)| format!(
                "[\"{n}\", {p}, {rf}, {}]",
                m.map_or("null".to_owned(), |m| format!("\"{m}\""))
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let out = Command::new("python3")
        .args(["-c", CREATE_TOPICS, bootstrap, &spec])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "creating topics with confluent-kafka failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn has_all_topics(s: &Snapshot) -> bool {
    TOPICS.iter().all(|(name, partitions, _, _)| {
        s.topics
            .iter()
            .any(|t| t.name == *name && t.partitions.len() == *partitions as usize)
    })
}

#[test]
fn snapshot_of_a_real_tansu_broker() {
    let Some(tansu) = find_tansu() else {
        skip_or_fail("no tansu binary on PATH or in ~/.cargo/bin (run scripts/install-tansu)");
        return;
    };
    if let Err(why) = ensure_confluent_kafka() {
        skip_or_fail(&why);
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let broker = start_broker(&tansu, port, dir.path());
    let bootstrap = format!("127.0.0.1:{port}");
    create_topics(&bootstrap);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut client = KafkaClient::new(KafkaConfig {
        bootstrap: vec![bootstrap.clone()],
        timeout: Duration::from_secs(5),
        ..KafkaConfig::default()
    })
    .expect("client");

    // Topic creation may take a moment to show in Metadata.
    let deadline = Instant::now() + Duration::from_secs(20);
    let snapshot = loop {
        let attempt = runtime.block_on(client.snapshot());
        match attempt {
            Ok(s) if has_all_topics(&s) => break s,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "no complete snapshot from tansu within 20s; last: {other:#?}\nbroker log:\n{}",
                    broker.log()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    eprintln!(
        "tansu snapshot: negotiated {:?}; cluster {:?}, controller {:?}, brokers {:?}, \
         default min ISR {:?}",
        client.negotiated(),
        snapshot.cluster_id,
        snapshot.controller_id,
        snapshot.brokers,
        snapshot.default_min_isr
    );

    assert_eq!(snapshot.brokers.len(), 1, "{:?}", snapshot.brokers);
    let me = &snapshot.brokers[0];
    assert_eq!((me.host.as_str(), me.port), ("127.0.0.1", i32::from(port)));
    assert!(
        snapshot
            .cluster_id
            .as_deref()
            .is_some_and(|c| !c.is_empty())
    );
    assert!(
        snapshot.controller_id.is_none_or(|c| c == me.id),
        "controller {:?} is not the only broker {}",
        snapshot.controller_id,
        me.id
    );

    for (name, partitions, _, explicit) in TOPICS {
        let topic = snapshot
            .topics
            .iter()
            .find(|t| t.name == name)
            .expect("topic");
        assert!(!topic.internal, "{name}");
        let indices: Vec<i32> = topic.partitions.iter().map(|p| p.index).collect();
        assert_eq!(indices, (0..partitions).collect::<Vec<_>>(), "{name}");
        for p in &topic.partitions {
            assert_eq!(p.leader, me.id, "{name}-{}", p.index);
            assert_eq!(p.replicas, [me.id], "{name}-{}", p.index);
            assert_eq!(p.isr, [me.id], "{name}-{}", p.index);
            assert!(p.offline_replicas.is_empty(), "{name}-{}", p.index);
        }
        match explicit {
            // tansu reports only configs set on the topic: none here, so the effective
            // min ISR is the broker default (tansu reports none: Kafka's 1).
            None => {
                assert_eq!(topic.min_isr, None, "{name}");
                assert_eq!(
                    snapshot.min_isr(topic),
                    snapshot.default_min_isr.unwrap_or(1),
                    "{name}"
                );
            }
            // Set at creation: reported back as the topic's own value (tansu labels it
            // DEFAULT_CONFIG, which the client reads as the topic's own).
            Some(v) => {
                let v: i32 = v.parse().expect("int");
                assert_eq!(topic.min_isr, Some(v), "{name}");
                assert_eq!(snapshot.min_isr(topic), v, "{name}");
            }
        }
    }
    assert_eq!(
        snapshot.default_min_isr, None,
        "tansu reports no broker configs"
    );

    // The connection is reused for the next snapshot.
    let again = runtime
        .block_on(client.snapshot())
        .expect("second snapshot");
    assert_eq!(again.topics.len(), snapshot.topics.len());
    drop(broker);
}
