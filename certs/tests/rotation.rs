//! `rotate` end to end against the fake API server, with real TLS handshakes: every step keeps
//! every client working, and a run that dies at any write is finished by the next run.

mod support;

use std::path::Path;
use std::time::Duration;

use kpool_certs::generate::ServingRequest;
use kpool_certs::inspect::verify_chain;
use kpool_certs::pemio::{Sensitivity, write_atomic};
use kpool_certs::rotate::{Policy, RotateOptions, Step, rotate, rotate_once};
use kpool_certs::tls::{ReloadOutcome, ReloadingResolver};
use rustls::pki_types::CertificateDer;
use support::*;
use time::OffsetDateTime;

const NAME: &str = "kpool-webhook.kpool-system.svc";

fn opts(force: bool, propagation_wait: Duration) -> RotateOptions {
    RotateOptions {
        namespace: NS.into(),
        secret: SECRET.into(),
        ca_secret: CA_SECRET.into(),
        webhook: WEBHOOK.into(),
        ca_days: 3650,
        policy: Policy {
            serving: ServingRequest {
                service: SERVICE.into(),
                namespace: NS.into(),
                dns: vec![],
                ips: vec!["127.0.0.1".parse().expect("ip")],
                days: 365,
            },
            renew_fraction: 1.0 / 3.0,
            force_rotation: force,
            propagation_wait,
            replace_names: false,
        },
        wait: true,
        bundle_settle: Duration::ZERO,
    }
}

fn names(steps: &[Step]) -> Vec<&'static str> {
    steps.iter().map(Step::name).collect()
}

/// Every place clients take trust from: both webhook configurations and the Secret's ca.crt.
fn bundles(fake: &FakeApi) -> Vec<Vec<CertificateDer<'static>>> {
    let mut out = vec![
        certs(&fake.ca_bundle(MUTATING_PATH)),
        certs(&fake.ca_bundle(VALIDATING_PATH)),
    ];
    if let Some(b) = fake.secret_data(SECRET, "ca.crt") {
        out.push(certs(&b));
    }
    out
}

/// The persisted state is consistent: the stored serving certificate verifies, for the
/// Service's name, against every bundle a client might hold right now.
fn assert_consistent(fake: &FakeApi, when: &str) {
    let leaf = certs(&fake.secret_data(SECRET, "tls.crt").expect("tls.crt"));
    for (i, b) in bundles(fake).iter().enumerate() {
        verify_chain("tls.crt", &leaf, b, Some(NAME), OffsetDateTime::now_utc()).unwrap_or_else(
            |e| panic!("{when}: bundle #{i} does not verify the serving certificate: {e}"),
        );
    }
}

fn sync_files(fake: &FakeApi, dir: &Path) {
    let crt = fake.secret_data(SECRET, "tls.crt").expect("tls.crt");
    let key = fake.secret_data(SECRET, "tls.key").expect("tls.key");
    write_atomic(&dir.join("tls.key"), &key, Sensitivity::Secret).expect("key");
    write_atomic(&dir.join("tls.crt"), &crt, Sensitivity::Public).expect("crt");
}

async fn bootstrap(fake: &FakeApi) {
    let report = rotate(&fake.client(), &opts(false, Duration::ZERO))
        .await
        .expect("bootstrap");
    assert_eq!(
        names(&report.steps),
        [
            "start-rotation",
            "publish-bundle",
            "issue-serving",
            "promote",
            "done"
        ]
    );
    assert_consistent(fake, "after bootstrap");
}

#[tokio::test]
async fn bootstrap_from_nothing_then_nothing_to_do() {
    let fake = FakeApi::with_webhooks();
    bootstrap(&fake).await;
    let writes = fake.writes();
    let report = rotate(&fake.client(), &opts(false, Duration::ZERO))
        .await
        .expect("steady");
    assert_eq!(names(&report.steps), ["done"]);
    assert_eq!(fake.writes(), writes, "a steady state writes nothing");
    assert!(fake.log().iter().all(|r| {
        r.method == "GET"
            || r.query
                .contains(&("fieldManager".into(), "kpool-certs".into()))
    }));
    // The CA Secret holds the current CA only.
    assert!(fake.secret_data(CA_SECRET, "ca.key").is_some());
    assert!(fake.secret_data(CA_SECRET, "next-ca.crt").is_none());
}

#[tokio::test]
async fn clients_keep_working_through_every_rotation_step() {
    let fake = FakeApi::with_webhooks();
    bootstrap(&fake).await;
    let client = fake.client();
    let dir = tempfile::tempdir().expect("tempdir");
    sync_files(&fake, dir.path());
    let resolver =
        ReloadingResolver::load(&dir.path().join("tls.crt"), &dir.path().join("tls.key"))
            .expect("load");
    let addr = serve(resolver.clone()).await;
    let original = bundles(&fake);
    for b in &original {
        assert_eq!(
            handshake(addr, b, NAME)
                .await
                .expect("before rotation")
                .reply,
            "ok\n"
        );
    }

    let mut o = opts(true, Duration::ZERO);
    let writes_before = fake.writes();
    let mut steps = Vec::new();
    for _ in 0..10 {
        let before = bundles(&fake);
        let step = rotate_once(&client, &o, OffsetDateTime::now_utc())
            .await
            .expect("step");
        o.policy.force_rotation = false;
        if step == Step::Done {
            break;
        }
        let after = bundles(&fake);
        // Clients may hold the bundle from before or after the step, and the webhook may
        // serve the pair from before (kubelet has not refreshed the volume yet) or after.
        for phase in ["server not yet reloaded", "server reloaded"] {
            if phase == "server reloaded" {
                sync_files(&fake, dir.path());
                resolver.reload().expect("reload");
            }
            for b in before.iter().chain(&after) {
                let h = handshake(addr, b, NAME).await.unwrap_or_else(|e| {
                    panic!("step {}, {phase}: handshake failed: {e}", step.name())
                });
                assert_eq!(h.reply, "ok\n");
            }
        }
        assert_consistent(&fake, step.name());
        steps.push(step.name());
    }
    assert_eq!(
        steps,
        [
            "start-rotation",
            "publish-bundle",
            "issue-serving",
            "drop-old",
            "promote"
        ]
    );
    assert_eq!(fake.writes() - writes_before, 9, "1 + 3 + 1 + 3 + 1 writes");
    // Control: the rotation really replaced the CA, so a client with only the original
    // bundle can no longer connect, while the final bundle can.
    let e = handshake(addr, &original[0], NAME)
        .await
        .expect_err("old CA was dropped");
    assert!(
        e.contains("UnknownIssuer") || e.contains("invalid peer certificate"),
        "{e}"
    );
    assert_eq!(bundles(&fake)[0].len(), 1);
    assert_ne!(bundles(&fake)[0], original[0]);
    handshake(addr, &bundles(&fake)[0], NAME)
        .await
        .expect("new bundle");
    // And it is served under 127.0.0.1 as asked.
    handshake(addr, &bundles(&fake)[0], "127.0.0.1")
        .await
        .expect("ip SAN");
}

#[tokio::test]
async fn a_run_that_dies_at_any_write_is_finished_by_the_next_run() {
    for k in 1..=9 {
        let fake = FakeApi::with_webhooks();
        bootstrap(&fake).await;
        let original_ca = fake.secret_data(CA_SECRET, "ca.crt").expect("ca");
        fake.fail_write(k);
        let e = rotate(&fake.client(), &opts(true, Duration::ZERO))
            .await
            .expect_err("injected failure");
        assert!(e.to_string().contains("injected failure"), "write {k}: {e}");
        // Whatever was persisted up to the crash still serves every client.
        assert_consistent(&fake, &format!("after a crash at write {k}"));
        // The Job is retried with the same arguments.
        let report = rotate(&fake.client(), &opts(true, Duration::ZERO))
            .await
            .expect("re-run");
        assert_eq!(report.steps.last(), Some(&Step::Done), "write {k}");
        assert_consistent(&fake, &format!("after the re-run for write {k}"));
        let ca = fake.secret_data(CA_SECRET, "ca.crt").expect("ca");
        assert_ne!(ca, original_ca, "write {k}: the rotation completed");
        assert!(
            fake.secret_data(CA_SECRET, "next-ca.crt").is_none(),
            "write {k}"
        );
        for b in bundles(&fake) {
            assert_eq!(
                b,
                certs(&ca),
                "write {k}: every bundle is exactly the new CA"
            );
        }
        // Exactly one rotation: a third run has nothing to do.
        let report = rotate(&fake.client(), &opts(true, Duration::ZERO))
            .await
            .expect("third");
        assert!(
            matches!(report.steps[0], Step::StartRotation { .. }),
            "--force with no rotation in progress starts one"
        );
    }
}

#[tokio::test]
async fn the_old_ca_is_dropped_only_after_the_propagation_wait() {
    let fake = FakeApi::with_webhooks();
    bootstrap(&fake).await;
    let client = fake.client();
    let mut o = opts(true, Duration::from_secs(60));
    o.wait = false;
    let report = rotate(&client, &o).await.expect("rotate");
    assert_eq!(
        names(&report.steps),
        ["start-rotation", "publish-bundle", "issue-serving", "wait"]
    );
    let pending = report.pending.expect("pending");
    assert!((55..=60).contains(&pending), "{pending}");
    assert_eq!(
        bundles(&fake)[0].len(),
        2,
        "old and new CA both trusted while waiting"
    );
    // A re-run before the time is up waits again and changes nothing.
    let writes = fake.writes();
    o.policy.force_rotation = false;
    assert!(matches!(
        rotate_once(&client, &o, OffsetDateTime::now_utc())
            .await
            .expect("early"),
        Step::Wait { .. }
    ));
    assert_eq!(fake.writes(), writes);
    // Once the wait is over, the run finishes.
    let later = OffsetDateTime::now_utc() + Duration::from_secs(61);
    assert!(matches!(
        rotate_once(&client, &o, later).await.expect("drop"),
        Step::DropOld { .. }
    ));
    assert_eq!(
        rotate_once(&client, &o, later).await.expect("promote"),
        Step::Promote
    );
    assert_eq!(
        rotate_once(&client, &o, later).await.expect("done"),
        Step::Done
    );
    assert_consistent(&fake, "after the wait");
}

#[tokio::test]
async fn a_due_serving_certificate_is_renewed_without_touching_the_bundle() {
    let fake = FakeApi::with_webhooks();
    let mut short = opts(false, Duration::ZERO);
    short.policy.serving.days = 3;
    rotate(&fake.client(), &short).await.expect("bootstrap");
    let bundle = fake.ca_bundle(MUTATING_PATH);
    let leaf = fake.secret_data(SECRET, "tls.crt").expect("leaf");
    let in_two_days = OffsetDateTime::now_utc() + Duration::from_secs(2 * 86_400 + 3600);
    let o = opts(false, Duration::ZERO);
    match rotate_once(&fake.client(), &o, in_two_days)
        .await
        .expect("renew")
    {
        Step::IssueServing { reason, .. } => assert!(reason.contains("less than 33%"), "{reason}"),
        s => panic!("expected a renewal, got {s:?}"),
    }
    assert_ne!(fake.secret_data(SECRET, "tls.crt").expect("leaf"), leaf);
    assert_eq!(fake.ca_bundle(MUTATING_PATH), bundle);
    assert_eq!(
        rotate_once(&fake.client(), &o, in_two_days)
            .await
            .expect("done"),
        Step::Done
    );
}

#[tokio::test]
async fn reload_outcome_is_unchanged_when_the_secret_did_not_change() {
    let fake = FakeApi::with_webhooks();
    bootstrap(&fake).await;
    let dir = tempfile::tempdir().expect("tempdir");
    sync_files(&fake, dir.path());
    let r = ReloadingResolver::load(&dir.path().join("tls.crt"), &dir.path().join("tls.key"))
        .expect("load");
    sync_files(&fake, dir.path());
    assert_eq!(r.reload().expect("reload"), ReloadOutcome::Unchanged);
}

#[tokio::test]
async fn an_unusable_serving_secret_is_reissued() {
    let fake = FakeApi::with_webhooks();
    bootstrap(&fake).await;
    let mut secret = fake.get(&secret_path(SECRET)).expect("secret");
    secret["data"]["tls.crt"] =
        serde_json::to_value(k8s_openapi::ByteString(b"garbage".to_vec())).expect("b64");
    fake.put(&secret_path(SECRET), secret);
    let report = rotate(&fake.client(), &opts(false, Duration::ZERO))
        .await
        .expect("rotate");
    match &report.steps[0] {
        Step::IssueServing { reason, .. } => assert!(
            reason.contains("the serving Secret is unusable: Secret kpool-system/kpool-webhook-tls key tls.crt: expected one or more PEM CERTIFICATE blocks"),
            "{reason}"
        ),
        s => panic!("expected a re-issue, got {s:?}"),
    }
    assert_eq!(names(&report.steps), ["issue-serving", "done"]);
    assert_consistent(&fake, "after re-issue");
}

#[tokio::test]
async fn a_corrupt_ca_secret_stops_with_an_error_naming_the_key() {
    let fake = FakeApi::with_webhooks();
    bootstrap(&fake).await;
    let mut secret = fake.get(&secret_path(CA_SECRET)).expect("secret");
    let other = kpool_certs::generate::Ca::generate(10, OffsetDateTime::now_utc()).expect("ca");
    secret["data"]["ca.key"] =
        serde_json::to_value(k8s_openapi::ByteString(other.key_pem().into_bytes())).expect("b64");
    fake.put(&secret_path(CA_SECRET), secret);
    let writes = fake.writes();
    let e = rotate(&fake.client(), &opts(false, Duration::ZERO))
        .await
        .expect_err("mismatch");
    assert_eq!(
        e.to_string(),
        "private key Secret kpool-system/kpool-webhook-tls-ca key ca.key does not match the certificate in \
         Secret kpool-system/kpool-webhook-tls-ca key ca.crt (the certificate's public key belongs to another key pair)"
    );
    assert_eq!(fake.writes(), writes, "nothing written");
}

fn issued_names(steps: &[Step]) -> Vec<kpool_certs::rotate::NameChange> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::IssueServing { names, .. } => Some(names.clone()),
            _ => None,
        })
        .collect()
}

/// The incident: `create --ip` (here: the bootstrap run with 127.0.0.1), then a rotation run
/// without `--ip`. The new certificate used to carry the flags' names only, so once the old CA
/// was dropped every client reaching the webhook by IP failed, while the run reported done.
#[tokio::test]
async fn a_rotation_run_without_the_ip_flag_keeps_the_ip_san() {
    let fake = FakeApi::with_webhooks();
    bootstrap(&fake).await;
    let client = fake.client();
    let mut forgot = opts(true, Duration::ZERO);
    forgot.policy.serving.ips = vec![];
    let report = rotate(&client, &forgot).await.expect("rotate");
    assert_eq!(
        names(&report.steps),
        [
            "start-rotation",
            "publish-bundle",
            "issue-serving",
            "drop-old",
            "promote",
            "done"
        ]
    );
    let issued = issued_names(&report.steps);
    assert_eq!(issued.len(), 1);
    assert!(
        issued[0].kept.contains(&"127.0.0.1".to_owned()),
        "{issued:?}"
    );
    assert!(issued[0].dropped.is_empty(), "{issued:?}");
    let json = serde_json::to_value(&report).expect("json");
    assert_eq!(json["steps"][2]["names"]["dropped"], serde_json::json!([]));

    // With the old CA gone, a client that reaches the webhook by IP still verifies it.
    let dir = tempfile::tempdir().expect("tempdir");
    sync_files(&fake, dir.path());
    let resolver =
        ReloadingResolver::load(&dir.path().join("tls.crt"), &dir.path().join("tls.key"))
            .expect("load");
    let addr = serve(resolver.clone()).await;
    let bundle = bundles(&fake)[0].clone();
    assert_eq!(bundle.len(), 1, "the old CA was dropped");
    handshake(addr, &bundle, "127.0.0.1")
        .await
        .expect("the IP SAN survived the rotation");
    handshake(addr, &bundle, NAME).await.expect("service name");

    // The daily renewal run, also without --ip, has nothing to do.
    forgot.policy.force_rotation = false;
    let report = rotate(&client, &forgot).await.expect("renewal run");
    assert_eq!(names(&report.steps), ["done"]);

    // --replace-names narrows on purpose, and the report says what it dropped.
    let mut narrow = forgot.clone();
    narrow.policy.replace_names = true;
    let report = rotate(&client, &narrow).await.expect("narrow");
    assert_eq!(names(&report.steps), ["issue-serving", "done"]);
    assert_eq!(issued_names(&report.steps)[0].dropped, ["127.0.0.1"]);
    sync_files(&fake, dir.path());
    resolver.reload().expect("reload");
    let e = handshake(addr, &bundle, "127.0.0.1")
        .await
        .expect_err("the IP was dropped on purpose");
    assert!(
        e.contains("NotValidForName") || e.contains("invalid peer certificate"),
        "{e}"
    );
    handshake(addr, &bundle, NAME).await.expect("service name");
}

/// A serving Secret that lost its key is re-issued; the names of its certificate are kept.
#[tokio::test]
async fn an_unusable_serving_secret_keeps_the_names_of_its_certificate() {
    let fake = FakeApi::with_webhooks();
    bootstrap(&fake).await;
    let mut secret = fake.get(&secret_path(SECRET)).expect("secret");
    secret["data"]
        .as_object_mut()
        .expect("data")
        .remove("tls.key");
    fake.put(&secret_path(SECRET), secret);
    let mut forgot = opts(false, Duration::ZERO);
    forgot.policy.serving.ips = vec![];
    let report = rotate(&fake.client(), &forgot).await.expect("rotate");
    assert_eq!(names(&report.steps), ["issue-serving", "done"]);
    let issued = issued_names(&report.steps);
    assert!(
        issued[0].kept.contains(&"127.0.0.1".to_owned()),
        "{issued:?}"
    );
    let leaf = certs(&fake.secret_data(SECRET, "tls.crt").expect("tls.crt"));
    verify_chain(
        "tls.crt",
        &leaf,
        &bundles(&fake)[0],
        Some("127.0.0.1"),
        OffsetDateTime::now_utc(),
    )
    .expect("the re-issued certificate still covers 127.0.0.1");
}
