//! The fuzz target bodies, shared by the libFuzzer entries (`fuzz_targets/`, run by
//! `cargo fuzz`) and the stable-Rust driver (`src/bin/drive.rs`), so both exercise exactly
//! the same code. Each body must never panic, hang or abort on any input.

use kpool_testkit::kafka_server;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use kafka_server::{Behaviour, ClusterState, Fault, TestKafka};
use kpool_agent::kafka::{KafkaClient, KafkaConfig};
use kpool_policy::Policy;
use kpool_webhook::admission::{Admission, Endpoint};
use kpool_webhook::audit::{AuditLog, AuditTarget};
use kpool_webhook::metrics::Metrics;

/// The names of the targets, as `cargo fuzz` and the driver know them.
pub const TARGETS: [&str; 4] = ["admission", "policy", "kafka_response", "kafka_exchange"];

/// Runs the target `name` on `data`; `false` if there is no such target.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "admission" => admission(data),
        "policy" => policy(data),
        "kafka_response" => kafka_response(data),
        "kafka_exchange" => kafka_exchange(data),
        _ => return false,
    }
    true
}

struct AdmissionEnv {
    admission: Admission,
    _dir: tempfile::TempDir,
}

fn admission_env() -> &'static AdmissionEnv {
    static ENV: OnceLock<AdmissionEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        let dir = tempfile::tempdir().expect("fuzz: temp dir");
        let metrics = Arc::new(Metrics::new());
        // A real file target, rotated small so a long run does not fill the disk.
        let audit = AuditLog::start(
            AuditTarget::File {
                path: dir.path().join("audit.jsonl"),
                max_bytes: 1 << 20,
                max_files: 1,
            },
            metrics.clone(),
        )
        .expect("fuzz: audit log");
        let policy = Policy::builtin().expect("fuzz: built-in policy");
        AdmissionEnv {
            admission: Admission::new(Arc::new(policy), metrics, audit),
            _dir: dir,
        }
    })
}

/// AdmissionReview handling, as the HTTP router calls it: the first byte picks the
/// endpoint, the rest is the request body. Checks the reply is a well-formed answer.
pub fn admission(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let endpoint = if selector & 1 == 0 {
        Endpoint::Mutate
    } else {
        Endpoint::Validate
    };
    let reply = admission_env().admission.handle(endpoint, body);
    assert!(
        matches!(reply.status, 200 | 400 | 413 | 415 | 422),
        "unexpected status {}",
        reply.status
    );
    if reply.status == 200 {
        let v: serde_json::Value =
            serde_json::from_slice(&reply.body).expect("a 200 answer is JSON");
        assert!(v["response"].is_object(), "a 200 answer has a response");
    }
}

/// Policy loading: any text, either loads (and then hashes stably) or gives an error.
pub fn policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = Policy::from_yaml(text, "fuzz") {
        let again = Policy::from_yaml(text, "fuzz").expect("loading is deterministic");
        assert_eq!(p.hash(), again.hash(), "the hash is stable");
    }
}

struct KafkaEnv {
    rt: tokio::runtime::Runtime,
    server: TestKafka,
    client: Mutex<KafkaClient>,
}

fn kafka_env() -> &'static KafkaEnv {
    static ENV: OnceLock<KafkaEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("fuzz: runtime");
        let racks = ["a", "b", "c"];
        let server = rt.block_on(TestKafka::start(ClusterState::healthy(
            3,
            &racks,
            &[("orders", 3, 3)],
        )));
        let client = KafkaClient::new(KafkaConfig {
            bootstrap: vec![server.bootstrap()],
            timeout: Duration::from_millis(500),
            ..KafkaConfig::default()
        })
        .expect("fuzz: client");
        KafkaEnv {
            rt,
            server,
            client: Mutex::new(client),
        }
    })
}

/// The agent's Kafka response decoding (`kafka::decode_response`, the step the client
/// runs on every body): the first byte picks the API, the second the version within the
/// client's range, the rest is the body. Seeds: `fuzz/corpus/kafka_response`, real
/// encodings written by `agent/tests/kafka_decode.rs`.
pub fn kafka_response(data: &[u8]) {
    let [api, version, body @ ..] = data else {
        return;
    };
    let apis = kpool_agent::kafka::supported();
    let (key, (min, max)) = apis[usize::from(*api) % apis.len()];
    let span = u8::try_from(max - min + 1).unwrap_or(u8::MAX);
    let version = min + i16::from(*version % span);
    if let Err(e) = kpool_agent::kafka::decode_response(
        key,
        version,
        bytes::Bytes::copy_from_slice(body),
    ) {
        assert!(!e.detail.is_empty(), "an error says what was wrong");
    }
}

/// The same decoding behind the client's framing, over loopback: the scripted server
/// answers one API (picked by the first byte) with a well-framed response whose body is
/// the rest of the input, and the real client takes a snapshot. Slower than
/// `kafka_response`; covers the header, correlation and connection handling around it.
pub fn kafka_exchange(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let api = match selector % 5 {
        0 => ApiKey::ApiVersions,
        1 => ApiKey::Metadata,
        2 => ApiKey::DescribeConfigs,
        3 => ApiKey::DescribeCluster,
        _ => ApiKey::ListPartitionReassignments,
    };
    let env = kafka_env();
    let mut client = env
        .client
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    env.server
        .set_behaviour(Behaviour::on(api, Fault::CorruptBody(body.to_vec())));
    if api == ApiKey::ApiVersions {
        client.disconnect(); // ApiVersions is asked once per connection
    }
    // Ok or Err are both fine; a panic, hang (the client's timeout bounds it) or abort is not.
    let _ = env.rt.block_on(client.snapshot());
    env.server.set_behaviour(Behaviour::Normal);
}
