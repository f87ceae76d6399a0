//! Memory of the admission server under hostile reviews (issue 16 item 3): the release
//! `kpool-webhook serve` is sent a review just under the API server's 3 MiB whose pod holds
//! as many of one kind of item as fit (a million `{}` containers, tolerations, node selector
//! terms, ...), first one at a time on one connection, then by 16 connections at once,
//! several rounds each, and the server's peak resident set (VmHWM from `/proc/<pid>/status`)
//! is reported after each phase beside its peak after the captured 6.3 KB review. A fresh
//! server per kind, so each peak is that kind's alone; the first kind (a 3 MiB string the
//! pod view skips) is the floor: request bodies, buffers and TLS, nothing decoded.
//!
//! `cargo bench -p kpool-webhook --bench memory`; `BENCH_QUICK=1` runs 2 rounds instead of
//! 4; `KPOOL_MEMORY_WEBHOOK_ARGS="--max-concurrency 8 ..."` adds flags to the server. Every
//! answer is checked (a 200 AdmissionReview, or a 400, under 1 MiB); any failure exits 1.
//! Under `cargo test --benches` (debug build, no `--bench`) it is a smoke run: one round of 4
//! connections.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

mod support;
use support::start_webhook;

const REVIEW: &str = "tests/fixtures/admission/000-create-kafka-0.json";
/// The API server sends at most 3 MiB.
const REQUEST_LIMIT: usize = 3 * 1024 * 1024;
const ANSWER_LIMIT: usize = 1024 * 1024;
const REQUIRED: &str = "requiredDuringSchedulingIgnoredDuringExecution";

fn main() -> ExitCode {
    if std::env::args().any(|a| a == "--list") {
        return ExitCode::SUCCESS; // `cargo test --benches` lists; there is nothing to list
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("memory harness failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One hostile review: the captured one, changed by `edit`, with the array or object at
/// `pointer` filled with `item(i)` until the body is just under 3 MiB.
struct Kind {
    name: &'static str,
    edit: fn(&mut Value),
    pointer: &'static str,
    /// `[...]` or `{...}` around the items.
    object: bool,
    item: fn(usize) -> String,
}

fn no_edit(_: &mut Value) {}

fn set_affinity(review: &mut Value) {
    review["request"]["object"]["spec"]["affinity"] =
        json!({"nodeAffinity": {REQUIRED: {"nodeSelectorTerms": []}}});
}

fn set_probe(review: &mut Value) {
    review["request"]["object"]["spec"]["containers"][0]["readinessProbe"] =
        json!({"exec": {"command": []}});
}

const KINDS: &[Kind] = &[
    // The floor: 3 MiB the view skips (bodies, buffers and TLS, nothing decoded).
    Kind {
        name: "managedFields: one 3 MiB string (skipped)",
        edit: no_edit,
        pointer: "/request/object/metadata/managedFields",
        object: false,
        item: |_| {
            format!(
                "{{\"manager\":\"{}\"}}",
                "x".repeat(REQUEST_LIMIT - 8 * 1024)
            )
        },
    },
    Kind {
        name: "containers: `{}`",
        edit: no_edit,
        pointer: "/request/object/spec/containers",
        object: false,
        item: |_| "{}".to_owned(),
    },
    Kind {
        name: "tolerations: `{}`",
        edit: no_edit,
        pointer: "/request/object/spec/tolerations",
        object: false,
        item: |_| "{}".to_owned(),
    },
    Kind {
        name: "required node selector terms: `{}`",
        edit: set_affinity,
        pointer: "/request/object/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms",
        object: false,
        item: |_| "{}".to_owned(),
    },
    Kind {
        name: "required node selector terms: `{\"a\":0}`",
        edit: set_affinity,
        pointer: "/request/object/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms",
        object: false,
        item: |_| r#"{"a":0}"#.to_owned(),
    },
    Kind {
        name: "topologySpreadConstraints: `{}`",
        edit: no_edit,
        pointer: "/request/object/spec/topologySpreadConstraints",
        object: false,
        item: |_| "{}".to_owned(),
    },
    Kind {
        name: "broker readinessProbe.exec.command: `0`",
        edit: set_probe,
        pointer: "/request/object/spec/containers/0/readinessProbe/exec/command",
        object: false,
        item: |_| "0".to_owned(),
    },
    Kind {
        name: "broker env: duplicates of KAFKA_NODE_ID",
        edit: no_edit,
        pointer: "/request/object/spec/containers/0/env",
        object: false,
        item: |i| format!(r#"{{"name":"KAFKA_NODE_ID","value":"{i}"}}"#),
    },
    Kind {
        name: "broker env: `{}`",
        edit: no_edit,
        pointer: "/request/object/spec/containers/0/env",
        object: false,
        item: |_| "{}".to_owned(),
    },
    Kind {
        name: "broker volumeMounts: `{}`",
        edit: no_edit,
        pointer: "/request/object/spec/containers/0/volumeMounts",
        object: false,
        item: |_| "{}".to_owned(),
    },
    Kind {
        name: "volumes: `{}`",
        edit: no_edit,
        pointer: "/request/object/spec/volumes",
        object: false,
        item: |_| "{}".to_owned(),
    },
    Kind {
        name: "ownerReferences: `{}`",
        edit: no_edit,
        pointer: "/request/object/metadata/ownerReferences",
        object: false,
        item: |_| "{}".to_owned(),
    },
    Kind {
        name: "annotations: `\"\":\"\"`",
        edit: no_edit,
        pointer: "/request/object/metadata/annotations",
        object: true,
        item: |_| r#""":"""#.to_owned(),
    },
    Kind {
        name: "nodeSelector: `\"\":\"\"`",
        edit: no_edit,
        pointer: "/request/object/spec/nodeSelector",
        object: true,
        item: |_| r#""":"""#.to_owned(),
    },
];

/// The body of `kind` and how many items it holds.
fn hostile_body(review: &Value, kind: &Kind) -> Result<(Vec<u8>, usize), String> {
    let mut review = review.clone();
    (kind.edit)(&mut review);
    // The member is created if the pod has none.
    let (parent, key) = kind.pointer.rsplit_once('/').ok_or("a member pointer")?;
    review
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .ok_or_else(|| format!("{}: no object at {parent}", kind.name))?
        .insert(key.to_owned(), json!("@@FILL@@"));
    let text = review.to_string();
    let (head, tail) = text
        .split_once("\"@@FILL@@\"")
        .ok_or("placeholder not found")?;
    let room = REQUEST_LIMIT - 1 - head.len() - tail.len() - 2;
    let mut fill = String::with_capacity(room);
    let mut n = 0;
    loop {
        let next = (kind.item)(n);
        if fill.len() + next.len() + 1 > room {
            break;
        }
        if n > 0 {
            fill.push(',');
        }
        fill.push_str(&next);
        n += 1;
    }
    let (open, close) = if kind.object { ('{', '}') } else { ('[', ']') };
    Ok((format!("{head}{open}{fill}{close}{tail}").into_bytes(), n))
}

// ---- the client ------------------------------------------------------------------------

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(connector: &TlsConnector, addr: SocketAddr) -> Result<Sender, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(sender)
}

/// One `POST /mutate`: the status and the answer body.
async fn post(sender: &mut Sender, body: Bytes) -> Result<(u16, Bytes), String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    let req = Request::post("/mutate")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// What the answer says, in a few words: `200 allowed`, `200 denied 403: <message>`, ...
fn summary(status: u16, body: &[u8]) -> Result<String, String> {
    if body.len() >= ANSWER_LIMIT {
        return Err(format!("a {} byte answer", body.len()));
    }
    match status {
        200 => {
            let v: Value = serde_json::from_slice(body).map_err(|e| format!("answer: {e}"))?;
            let r = &v["response"];
            if r["allowed"] == true {
                Ok("allowed".to_owned())
            } else {
                let message = r["status"]["message"].as_str().unwrap_or_default();
                let cut: String = message.chars().take(110).collect();
                Ok(format!("denied {}: {cut}", r["status"]["code"]))
            }
        }
        400 => Ok(format!(
            "400: {}",
            String::from_utf8_lossy(&body[..body.len().min(110)]).trim()
        )),
        s => Err(format!(
            "unexpected status {s}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        )),
    }
}

/// `connections` connections each send `body` once per round, all at once, for `rounds`
/// rounds; returns the first answer's summary and the wall time of the slowest round.
async fn fire(
    connector: &TlsConnector,
    addr: SocketAddr,
    connections: usize,
    rounds: usize,
    body: Bytes,
) -> Result<(String, Duration), String> {
    let mut senders = Vec::new();
    for _ in 0..connections {
        senders.push(connect(connector, addr).await?);
    }
    let mut first = None;
    let mut slowest = Duration::ZERO;
    for _ in 0..rounds {
        let start = Instant::now();
        let mut tasks = Vec::new();
        for mut sender in senders.drain(..) {
            let body = body.clone();
            tasks.push(tokio::spawn(async move {
                let answer = post(&mut sender, body).await;
                (sender, answer)
            }));
        }
        for t in tasks {
            let (sender, answer) = t.await.map_err(|e| e.to_string())?;
            let (status, answer) = answer?;
            let s = summary(status, &answer)?;
            first.get_or_insert(s);
            senders.push(sender);
        }
        slowest = slowest.max(start.elapsed());
    }
    Ok((first.unwrap_or_default(), slowest))
}

fn run() -> Result<(), String> {
    let bench = std::env::args().any(|a| a == "--bench");
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1");
    let (connections, rounds) = match (bench, quick) {
        (false, _) => (4, 1),
        (true, true) => (16, 2),
        (true, false) => (16, 4),
    };
    kpool_certs::tls::install_crypto_provider();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut opts =
        kpool_certs::create::CreateOptions::new("kpool-webhook", "kpool-system", dir.path());
    opts.dns = vec!["localhost".into()];
    kpool_certs::create::create(&opts).map_err(|e| e.to_string())?;
    let tls = kpool_certs::tls::client_config(&dir.path().join("ca.crt"), &[b"http/1.1"])
        .map_err(|e| e.to_string())?;
    let connector = TlsConnector::from(Arc::new(tls));
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(REVIEW);
    let captured = std::fs::read(&path).map_err(|e| format!("{REVIEW}: {e}"))?;
    let review: Value = serde_json::from_slice(&captured).map_err(|e| format!("{REVIEW}: {e}"))?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;

    eprintln!(
        "one connection, then {connections} at once; {rounds} rounds each; a fresh kpool-webhook serve per kind"
    );
    println!(
        "| review | items | answer | peak RSS: the captured review | one hostile review at a time ({rounds}x) | {connections} at once ({rounds} rounds) | slowest round of {connections} |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut worst: f64 = 0.0;
    for kind in KINDS {
        let (body, n) = hostile_body(&review, kind)?;
        let body = Bytes::from(body);
        let captured = Bytes::from(captured.clone());
        let server = start_webhook(dir.path(), "KPOOL_MEMORY_WEBHOOK_ARGS")?;
        let (answer, _) =
            runtime.block_on(fire(&connector, server.addr, 1, 1, captured.clone()))?;
        if answer != "allowed" {
            return Err(format!("the captured review was answered {answer}"));
        }
        let idle = server.status_mib("VmHWM")?;
        let (answer, _) =
            runtime.block_on(fire(&connector, server.addr, 1, rounds, body.clone()))?;
        let single = server.status_mib("VmHWM")?;
        runtime.block_on(fire(&connector, server.addr, connections, 1, captured))?;
        let (_, slowest) =
            runtime.block_on(fire(&connector, server.addr, connections, rounds, body))?;
        let all = server.status_mib("VmHWM")?;
        worst = worst.max(all);
        println!(
            "| {} | {n} | {} | {idle:.1} MiB | {single:.1} MiB (+{:.1}) | **{all:.1} MiB** (+{:.1}) | {:.0} ms |",
            kind.name,
            answer.replace('|', "\\|"),
            single - idle,
            all - idle,
            slowest.as_secs_f64() * 1e3,
        );
    }
    println!("highest peak RSS over all kinds: {worst:.1} MiB");
    Ok(())
}
