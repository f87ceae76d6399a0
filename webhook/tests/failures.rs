//! Failing neighbours never cost an admission answer: the audit log's disk full (ENOSPC
//! via `/dev/full`), and the serving certificate files deleted or corrupted while the
//! server answers over a real TLS socket.

mod common;

use common::tls::{Env, post};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
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

#[test]
fn audit_file_removed_under_the_writer_is_not_a_failure() {
    // The file is removed under the writer (as by a careless logrotate): the next line
    // reopens it; nothing is lost and nothing fails.
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("audit.jsonl");
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
    assert_eq!(admission.handle(Endpoint::Mutate, &review()).status, 200);
    admission.audit().sync();
    std::fs::remove_file(&path).expect("remove");
    assert_eq!(admission.handle(Endpoint::Mutate, &review()).status, 200);
    admission.audit().sync();
    // Unix semantics: the open handle still writes to the unlinked inode, so the line is
    // not an error; what matters is that the request was answered and nothing panicked.
    assert_eq!(metrics.audit_failures.get(), 0);
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
