//! The reloading resolver and its watcher, over real TLS handshakes on loopback.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use kpool_certs::generate::{Ca, ServingPair, ServingRequest};
use kpool_certs::pemio::{Sensitivity, write_atomic};
use kpool_certs::tls::{
    ReloadEvent, ReloadOutcome, ReloadingResolver, install_crypto_provider, server_config,
    spawn_watcher,
};
use rustls::pki_types::CertificateDer;
use support::{handshake, handshake_with, serve};
use time::OffsetDateTime;

const NAME: &str = "kpool-webhook.kpool-system.svc";

fn request() -> ServingRequest {
    ServingRequest {
        service: "kpool-webhook".into(),
        namespace: "kpool-system".into(),
        dns: vec![],
        ips: vec![],
        days: 30,
    }
}

fn pair(ca: &Ca) -> ServingPair {
    ca.issue_serving(&request(), OffsetDateTime::now_utc())
        .expect("issue")
}

fn write_pair(dir: &Path, p: &ServingPair) -> (PathBuf, PathBuf) {
    let (crt, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    write_atomic(&key, p.key_pem().as_bytes(), Sensitivity::Secret).expect("key");
    write_atomic(&crt, p.cert_pem().as_bytes(), Sensitivity::Public).expect("crt");
    (crt, key)
}

fn ca() -> Ca {
    Ca::generate(365, OffsetDateTime::now_utc()).expect("ca")
}

fn bundle(ca: &Ca) -> Vec<CertificateDer<'static>> {
    vec![ca.cert_der().clone()]
}

#[test]
fn load_errors_name_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ca();
    let (crt, key) = write_pair(dir.path(), &pair(&ca));
    let s = |p: &Path| p.display().to_string();

    let missing = dir.path().join("nope.crt");
    let e = ReloadingResolver::load(&missing, &key).expect_err("missing");
    assert!(
        e.to_string()
            .starts_with(&format!("cannot read {}: ", s(&missing))),
        "{e}"
    );

    // Unreadable: a directory where the file should be (root ignores file modes).
    let e = ReloadingResolver::load(dir.path(), &key).expect_err("directory");
    assert!(
        e.to_string()
            .starts_with(&format!("cannot read {}: ", s(dir.path()))),
        "{e}"
    );

    let corrupt = dir.path().join("corrupt.crt");
    std::fs::write(
        &corrupt,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let e = ReloadingResolver::load(&corrupt, &key).expect_err("corrupt");
    assert!(
        e.to_string().starts_with(&format!(
            "{}: certificate #1 is not a valid X.509 certificate",
            s(&corrupt)
        )),
        "{e}"
    );

    let e = ReloadingResolver::load(&key, &key).expect_err("key as cert");
    assert_eq!(
        e.to_string(),
        format!(
            "{}: expected one or more PEM CERTIFICATE blocks, found only PRIVATE KEY block(s)",
            s(&key)
        )
    );
    let e = ReloadingResolver::load(&crt, &crt).expect_err("cert as key");
    assert_eq!(
        e.to_string(),
        format!(
            "{}: expected exactly one PEM PRIVATE KEY block, found only CERTIFICATE block(s)",
            s(&crt)
        )
    );

    let other = tempfile::tempdir().expect("other");
    let (_, other_key) = write_pair(other.path(), &pair(&ca));
    let e = ReloadingResolver::load(&crt, &other_key).expect_err("mismatch");
    assert_eq!(
        e.to_string(),
        format!(
            "private key {} does not match the certificate in {} (the certificate's public key belongs to another key pair)",
            s(&other_key),
            s(&crt)
        )
    );

    let old = Ca::generate(2, OffsetDateTime::now_utc() - time::Duration::days(3)).expect("old ca");
    let expired = old
        .issue_serving(
            &ServingRequest {
                days: 1,
                ..request()
            },
            OffsetDateTime::now_utc() - time::Duration::days(3),
        )
        .expect("expired pair");
    let exp_dir = tempfile::tempdir().expect("exp");
    let (exp_crt, exp_key) = write_pair(exp_dir.path(), &expired);
    let e = ReloadingResolver::load(&exp_crt, &exp_key).expect_err("expired");
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "{}: certificate O=kpool, CN=kpool-webhook.kpool-system.svc expired at ",
            s(&exp_crt)
        )),
        "{msg}"
    );
    assert!(msg.ends_with("; renew it"), "{msg}");
}

#[tokio::test]
async fn server_config_speaks_tls12_and_tls13_with_h2_and_http11() {
    install_crypto_provider();
    install_crypto_provider(); // idempotent
    assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ca();
    let (crt, key) = write_pair(dir.path(), &pair(&ca));
    let resolver = ReloadingResolver::load(&crt, &key).expect("load");
    let config = server_config(resolver.clone());
    assert_eq!(
        config.alpn_protocols,
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    let addr = serve(resolver).await;

    let h = handshake(addr, &bundle(&ca), NAME).await.expect("tls13");
    assert_eq!(h.version, Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(h.alpn.as_deref(), Some(&b"h2"[..]));
    let h = handshake_with(
        addr,
        &bundle(&ca),
        NAME,
        &[&rustls::version::TLS12],
        vec![b"http/1.1".to_vec()],
    )
    .await
    .expect("tls12");
    assert_eq!(h.version, Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(h.alpn.as_deref(), Some(&b"http/1.1"[..]));
    // The certificate is for the Service; another name fails verification.
    let e = handshake(addr, &bundle(&ca), "other.kpool-system.svc")
        .await
        .expect_err("wrong name");
    assert!(e.contains("not valid for name"), "{e}");
}

#[tokio::test]
async fn reload_under_concurrent_handshakes_never_fails_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ca();
    let (a, b) = (pair(&ca), pair(&ca));
    let (crt, key) = write_pair(dir.path(), &a);
    let resolver = ReloadingResolver::load(&crt, &key).expect("load");
    let addr = serve(resolver.clone()).await;
    let leaves = [a.cert_der().clone(), b.cert_der().clone()];

    let mut clients = Vec::new();
    for _ in 0..4 {
        let roots = bundle(&ca);
        let leaves = leaves.clone();
        clients.push(tokio::spawn(async move {
            for _ in 0..40 {
                let h = handshake(addr, &roots, NAME)
                    .await
                    .expect("handshake during reloads");
                assert_eq!(h.reply, "ok\n");
                assert!(
                    leaves.contains(&h.leaf),
                    "served a leaf that is neither pair"
                );
            }
        }));
    }
    let mut reloads = 0;
    for i in 0..20 {
        write_pair(dir.path(), if i % 2 == 0 { &b } else { &a });
        let r = resolver.clone();
        let outcome = tokio::task::spawn_blocking(move || r.reload())
            .await
            .expect("join")
            .expect("reload");
        assert!(matches!(outcome, ReloadOutcome::Reloaded(_)), "{outcome:?}");
        reloads += 1;
        tokio::task::yield_now().await;
    }
    for c in clients {
        c.await.expect("client task");
    }
    assert_eq!(reloads, 20);
    assert_eq!(
        resolver.current().sha256,
        kpool_certs::inspect::CertInfo::from_der("a", a.cert_der())
            .expect("info")
            .sha256
    );
}

#[tokio::test]
async fn an_invalid_pair_is_refused_and_the_old_one_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ca();
    let good = pair(&ca);
    let (crt, key) = write_pair(dir.path(), &good);
    let resolver = ReloadingResolver::load(&crt, &key).expect("load");
    let addr = serve(resolver.clone()).await;
    let before = resolver.current();

    // New certificate, old key: a mismatch (what a half-applied update looks like).
    let next = pair(&ca);
    write_atomic(&crt, next.cert_pem().as_bytes(), Sensitivity::Public).expect("crt");
    let e = resolver.reload().expect_err("mismatch");
    assert!(
        e.to_string().contains("does not match the certificate in"),
        "{e}"
    );
    assert_eq!(resolver.current(), before);
    assert_eq!(
        handshake(addr, &bundle(&ca), NAME)
            .await
            .expect("still serving")
            .leaf,
        *good.cert_der()
    );

    // Garbage, then an empty file: refused the same way.
    std::fs::write(&crt, "garbage").expect("garbage");
    assert!(
        resolver
            .reload()
            .expect_err("garbage")
            .to_string()
            .contains("expected one or more PEM CERTIFICATE blocks")
    );
    std::fs::write(&crt, "").expect("empty");
    assert!(
        resolver
            .reload()
            .expect_err("empty")
            .to_string()
            .contains("found an empty file")
    );
    std::fs::remove_file(&crt).expect("rm");
    assert!(
        resolver
            .reload()
            .expect_err("gone")
            .to_string()
            .starts_with("cannot read")
    );
    assert_eq!(
        handshake(addr, &bundle(&ca), NAME)
            .await
            .expect("still serving")
            .leaf,
        *good.cert_der()
    );

    // The matching key arrives: the new pair is taken.
    write_pair(dir.path(), &next);
    assert!(matches!(
        resolver.reload().expect("reload"),
        ReloadOutcome::Reloaded(_)
    ));
    assert_eq!(
        handshake(addr, &bundle(&ca), NAME).await.expect("new").leaf,
        *next.cert_der()
    );
    assert_eq!(resolver.reload().expect("again"), ReloadOutcome::Unchanged);
}

/// Lays out a directory the way kubelet's atomic writer does for a Secret volume:
/// `tls.crt -> ..data/tls.crt`, `..data -> ..<version>`, files in `..<version>/`.
fn secret_volume_version(dir: &Path, version: &str, p: &ServingPair) {
    let ts = dir.join(format!("..{version}"));
    std::fs::create_dir(&ts).expect("version dir");
    std::fs::write(ts.join("tls.crt"), p.cert_pem()).expect("crt");
    std::fs::write(ts.join("tls.key"), p.key_pem()).expect("key");
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).expect("symlink");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
    for f in ["tls.crt", "tls.key"] {
        let link = dir.join(f);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{f}"), &link).expect("file symlink");
        }
    }
}

async fn next_event(rx: &mut tokio::sync::mpsc::UnboundedReceiver<ReloadEvent>) -> ReloadEvent {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("an event within 5s")
        .expect("open")
}

#[tokio::test]
async fn the_watcher_sees_a_secret_volume_swap_and_an_in_place_rewrite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ca();
    let (first, second, third) = (pair(&ca), pair(&ca), pair(&ca));
    secret_volume_version(dir.path(), "2025_01_01_00_00_00.1", &first);
    let (crt, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let resolver = ReloadingResolver::load(&crt, &key).expect("load");
    let addr = serve(resolver.clone()).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = spawn_watcher(resolver.clone(), Duration::from_millis(20), move |e| {
        let _ = tx.send(e);
    });

    secret_volume_version(dir.path(), "2025_01_02_00_00_00.2", &second);
    std::fs::remove_dir_all(dir.path().join("..2025_01_01_00_00_00.1")).expect("old version gone");
    match next_event(&mut rx).await {
        ReloadEvent::Reloaded(info) => assert_eq!(info, second.info().clone()),
        e => panic!("expected a reload, got {e:?}"),
    }
    assert_eq!(
        handshake(addr, &bundle(&ca), NAME)
            .await
            .expect("after swap")
            .leaf,
        *second.cert_der()
    );

    // A plain in-place rewrite (no symlinks involved) is seen too.
    let plain = tempfile::tempdir().expect("plain");
    let (pcrt, pkey) = write_pair(plain.path(), &first);
    let plain_resolver = ReloadingResolver::load(&pcrt, &pkey).expect("load plain");
    let (ptx, mut prx) = tokio::sync::mpsc::unbounded_channel();
    let plain_watcher = spawn_watcher(
        plain_resolver.clone(),
        Duration::from_millis(20),
        move |e| {
            let _ = ptx.send(e);
        },
    );
    std::fs::write(&pkey, third.key_pem()).expect("key in place");
    std::fs::write(&pcrt, third.cert_pem()).expect("crt in place");
    // The key may be read before the certificate is rewritten: at most one failure, then the reload.
    let mut event = next_event(&mut prx).await;
    if let ReloadEvent::Failed(_) = event {
        event = next_event(&mut prx).await;
    }
    assert_eq!(event, ReloadEvent::Reloaded(third.info().clone()));
    assert_eq!(plain_resolver.current(), third.info().clone());

    watcher.abort();
    plain_watcher.abort();
}

#[tokio::test]
async fn the_watcher_reports_a_broken_update_once_and_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ca();
    let (good, next) = (pair(&ca), pair(&ca));
    let (crt, key) = write_pair(dir.path(), &good);
    let resolver = ReloadingResolver::load(&crt, &key).expect("load");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = spawn_watcher(resolver.clone(), Duration::from_millis(10), move |e| {
        let _ = tx.send(e);
    });
    std::fs::write(&crt, "not a certificate").expect("break");
    match next_event(&mut rx).await {
        ReloadEvent::Failed(msg) => {
            assert!(msg.starts_with(&crt.display().to_string()), "{msg}");
        }
        e => panic!("expected a failure, got {e:?}"),
    }
    // Many polls later, still only the one report, and the good pair still served.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(rx.try_recv().is_err(), "a broken update is reported once");
    assert_eq!(resolver.current(), good.info().clone());
    write_pair(dir.path(), &next);
    assert_eq!(
        next_event(&mut rx).await,
        ReloadEvent::Reloaded(next.info().clone())
    );
    watcher.abort();
}
