//! Failing neighbours never cost an admission answer: the audit log's disk full (ENOSPC
//! via `/dev/full`), its file or folder removed, renamed or replaced while serving (noticed,
//! reopened, counted and logged), and the serving certificate files deleted or corrupted
//! while the server answers over a real TLS socket.

mod common;

use common::tls::{Env, post};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use kpool_webhook::admission::{Admission, Endpoint};
use kpool_webhook::audit::{AuditLog, AuditTarget};
use kpool_webhook::metrics::Metrics;
use serde_json::Value;

const DEV_FULL: &str = "/dev/full";

fn review() -> Vec<u8> {
    common::fixture("000-create-kafka-0.json")
        .to_string()
        .into_bytes()
}

#[test]
fn audit_disk_full_still_answers_and_counts_the_failure() {
    if !Path::new(DEV_FULL).exists() {
        eprintln!("skipped: no {DEV_FULL} on this system");
        return;
    }
    let metrics = Arc::new(Metrics::new());
    let audit = AuditLog::start(
        AuditTarget::File {
            path: PathBuf::from(DEV_FULL),
            max_bytes: 1 << 30,
            max_files: 1,
        },
        metrics.clone(),
    )
    .expect("/dev/full opens for append");
    let admission = Admission::new(Arc::new(common::policy()), metrics.clone(), audit);
    for i in 0..5 {
        let reply = admission.handle(Endpoint::Mutate, &review());
        assert_eq!(reply.status, 200, "request {i} answered");
        let body: Value = serde_json::from_slice(&reply.body).expect("json");
        assert_eq!(body["response"]["allowed"], true, "{body}");
        assert!(
            body["response"]["patch"].is_string(),
            "still mutated: {body}"
        );
    }
    let reply = admission.handle(
        Endpoint::Validate,
        common::fixture("003-create-sneaky-batch-dryrun.json")
            .to_string()
            .as_bytes(),
    );
    assert_eq!(reply.status, 200);
    let body: Value = serde_json::from_slice(&reply.body).expect("json");
    assert_eq!(body["response"]["allowed"], false, "still denied: {body}");
    admission.audit().sync();
    assert_eq!(
        metrics.audit_failures.get(),
        6,
        "every unwritable line is counted"
    );
    let text = metrics.encode();
    assert!(
        text.lines().any(
            |l| l.starts_with("kpool_webhook_audit_write_failures_total") && l.ends_with(" 6")
        ),
        "{text}"
    );
}

/// What the audit writer logged (events of `kpool_webhook::audit`, from every thread: the
/// writer has its own), one string of `field=value` pairs per event.
fn audit_events() -> &'static Mutex<Vec<String>> {
    static EVENTS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    EVENTS.get_or_init(|| {
        let _ = tracing::subscriber::set_global_default(AuditRecorder);
        Mutex::new(Vec::new())
    })
}

/// Records the audit writer's events into `audit_events()`.
struct AuditRecorder;

impl tracing::Subscriber for AuditRecorder {
    fn enabled(&self, meta: &tracing::Metadata<'_>) -> bool {
        meta.target().starts_with("kpool_webhook::audit")
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut text = format!("{} ", event.metadata().level());
        event.record(
            &mut |field: &tracing::field::Field, value: &dyn std::fmt::Debug| {
                text.push_str(&format!("{}={value:?} ", field.name()));
            },
        );
        if let Ok(mut events) = audit_events().lock() {
            events.push(text);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// The recorded events mentioning `needle`.
fn logged(needle: &str) -> Vec<String> {
    audit_events()
        .lock()
        .expect("events")
        .iter()
        .filter(|e| e.contains(needle))
        .cloned()
        .collect()
}

fn line_count(p: &Path) -> usize {
    std::fs::read_to_string(p).map_or(0, |t| t.lines().count())
}

#[test]
fn audit_file_or_folder_removed_under_the_writer_is_reopened_counted_and_logged() {
    audit_events();
    let dir = tempfile::tempdir().expect("tmp");
    let folder = dir.path().join("audit");
    std::fs::create_dir(&folder).expect("mkdir");
    let path = folder.join("audit.jsonl");
    let metrics = Arc::new(Metrics::new());
    let audit = AuditLog::start(
        AuditTarget::File {
            path: path.clone(),
            max_bytes: 1 << 30,
            max_files: 1,
        },
        metrics.clone(),
    )
    .expect("audit");
    let admission = Admission::new(Arc::new(common::policy()), metrics.clone(), audit);
    let answer = |n: usize| {
        for i in 0..n {
            let reply = admission.handle(Endpoint::Mutate, &review());
            assert_eq!(reply.status, 200, "request {i} answered");
        }
        admission.audit().sync();
    };
    let counts = || (metrics.audit_reopens.get(), metrics.audit_failures.get());
    answer(1);
    assert_eq!(line_count(&path), 1);

    // Removed (a careless logrotate, an rm): the next lines land in a new file at the
    // path, not in the removed one.
    std::fs::remove_file(&path).expect("rm");
    answer(2);
    assert_eq!(
        line_count(&path),
        2,
        "a new file at the path holds the new lines"
    );
    assert_eq!(counts(), (1, 0));

    // Renamed away: the old name keeps only the lines written before.
    let renamed = folder.join("audit.jsonl.old");
    std::fs::rename(&path, &renamed).expect("mv");
    answer(3);
    assert_eq!((line_count(&path), line_count(&renamed)), (3, 2));
    assert_eq!(counts(), (2, 0));

    // Renamed, and another file created at the path (logrotate's `create`): lines follow
    // the path.
    std::fs::rename(&path, folder.join("audit.jsonl.1")).expect("mv");
    std::fs::write(&path, "{\"rotated\":true}\n").expect("create");
    answer(1);
    assert_eq!(line_count(&path), 2, "appended to the new file");
    assert_eq!(line_count(&folder.join("audit.jsonl.1")), 3);
    assert_eq!(counts(), (3, 0));

    // The folder removed: recreated, and the lines land in it.
    std::fs::remove_dir_all(&folder).expect("rm -r");
    answer(2);
    assert_eq!(
        line_count(&path),
        2,
        "the folder is back with the new lines"
    );
    assert_eq!(counts(), (4, 0));

    // The folder cannot come back (a file stands at its path): every line is counted as a
    // failure and logged, none written into the unreachable file.
    std::fs::remove_dir_all(&folder).expect("rm -r");
    std::fs::write(&folder, "not a folder").expect("a file in the way");
    answer(3);
    assert_eq!(counts(), (4, 3));
    let path_text = path.display().to_string();
    let failed: Vec<String> = logged("cannot write audit lines")
        .into_iter()
        .filter(|e| e.contains(&format!("cannot reopen audit log {path_text}")))
        .collect();
    let lines_logged: u64 = failed
        .iter()
        .filter_map(|e| {
            e.split("lines=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert_eq!(
        lines_logged, 3,
        "each lost line is in an error log: {failed:#?}"
    );
    assert!(failed.iter().all(|e| e.starts_with("ERROR")), "{failed:#?}");

    // Once it can, the writer recovers on its own.
    std::fs::remove_file(&folder).expect("rm");
    answer(1);
    assert_eq!(line_count(&path), 1);
    assert_eq!(counts(), (5, 3));

    let noticed = logged("path no longer names the open file");
    assert_eq!(
        noticed.iter().filter(|e| e.contains(&path_text)).count(),
        5,
        "each move is noticed once: {noticed:#?}"
    );
    assert!(
        noticed.iter().all(|e| e.starts_with("WARN")),
        "{noticed:#?}"
    );
    assert_eq!(logged("audit log reopened").len(), 5);
    let recreated = logged("folder was removed while serving; recreated it");
    assert_eq!(recreated.len(), 2, "{recreated:#?}");
    let text = metrics.encode();
    for want in [
        "kpool_webhook_audit_reopens_total 5",
        "kpool_webhook_audit_write_failures_total 3",
    ] {
        assert!(text.lines().any(|l| l == want), "{want:?} not in:\n{text}");
    }
}

/// One POST of the captured review to /mutate: (status, JSON body, serving leaf cert).
async fn mutate(addr: SocketAddr, ca: &Path) -> Result<(u16, Value, Vec<u8>), String> {
    let (status, body, leaf) = post(addr, ca, "/mutate", review()).await?;
    let body = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    Ok((status, body, leaf))
}

/// Waits until `f` holds (the reload watcher polls every 50 ms).
async fn eventually(what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(5), "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_or_corrupted_cert_files_keep_the_old_pair_serving() {
    let env = Env::start(|c| {
        c.audit = AuditTarget::File {
            path: PathBuf::from("/dev/null"),
            max_bytes: 1 << 30,
            max_files: 1,
        }
    })
    .await;
    let (addr, ca) = (env.running().tls_addr, env.path("ca.crt"));
    let (status, _, leaf) = mutate(addr, &ca).await.expect("first request");
    assert_eq!(status, 200);
    let (cert, key) = (
        std::fs::read(env.path("tls.crt")).expect("cert"),
        std::fs::read(env.path("tls.key")).expect("key"),
    );

    // Deleted: the old pair keeps serving; the failed reload is counted.
    let failures = env.reloads("failure");
    std::fs::remove_file(env.path("tls.crt")).expect("rm cert");
    std::fs::remove_file(env.path("tls.key")).expect("rm key");
    eventually("deleted files counted as a failed reload", || {
        env.reloads("failure") > failures
    })
    .await;
    for _ in 0..5 {
        let (status, body, served) = mutate(addr, &ca).await.expect("served while deleted");
        assert_eq!(status, 200, "{body}");
        assert_eq!(served, leaf, "the old certificate keeps serving");
    }

    // Corrupted: garbage in both files (not PEM), then a truncated PEM certificate.
    let failures = env.reloads("failure");
    std::fs::write(env.path("tls.crt"), b"\x00\xffnot a certificate").expect("garbage");
    std::fs::write(env.path("tls.key"), b"-----BEGIN PRIVATE KEY-----\nAAAA").expect("garbage");
    eventually("garbage counted as a failed reload", || {
        env.reloads("failure") > failures
    })
    .await;
    let (status, _, served) = mutate(addr, &ca).await.expect("served while corrupted");
    assert_eq!((status, served.as_slice()), (200, leaf.as_slice()));

    let failures = env.reloads("failure");
    std::fs::write(env.path("tls.crt"), &cert[..cert.len() / 2]).expect("truncate");
    std::fs::write(env.path("tls.key"), &key).expect("key back");
    eventually("truncated cert counted as a failed reload", || {
        env.reloads("failure") > failures
    })
    .await;
    let (status, _, served) = mutate(addr, &ca).await.expect("served while truncated");
    assert_eq!((status, served.as_slice()), (200, leaf.as_slice()));

    // Restored (the same bytes as served: nothing to swap): no further failure is
    // counted and the server keeps answering with its pair.
    std::fs::write(env.path("tls.crt"), &cert).expect("cert back");
    tokio::time::sleep(Duration::from_millis(250)).await;
    let failures = env.reloads("failure");
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        env.reloads("failure"),
        failures,
        "a good pair is not a failure"
    );
    let (status, _, served) = mutate(addr, &ca).await.expect("served after restore");
    assert_eq!((status, served.as_slice()), (200, leaf.as_slice()));
    env.shutdown().await;
}
