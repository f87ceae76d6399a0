//! The Kubernetes calls of `secret` and `patch-webhooks`, against a tower-test mock that
//! records every request: exact methods, paths, server-side apply query and bodies.

mod support;

use kpool_certs::cluster;
use kpool_certs::create::{CreateOptions, create};
use serde_json::json;
use support::*;

fn b64(bytes: &[u8]) -> serde_json::Value {
    serde_json::to_value(k8s_openapi::ByteString(bytes.to_vec())).expect("b64")
}

fn apply_query() -> Vec<(String, String)> {
    vec![
        ("fieldManager".into(), "kpool-certs".into()),
        ("force".into(), "true".into()),
    ]
}

fn made_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    create(&CreateOptions::new(SERVICE, NS, dir.path())).expect("create");
    dir
}

#[tokio::test]
async fn secret_is_applied_server_side_exactly_once() {
    let dir = made_dir();
    let read = |f: &str| std::fs::read(dir.path().join(f)).expect("read");
    let fake = FakeApi::new();
    let client = fake.client();

    let out = cluster::apply_secret_from_dir(&client, NS, SECRET, dir.path(), Some(CA_SECRET))
        .await
        .expect("apply");
    assert!(out.iter().all(|o| o.updated), "{out:?}");

    let log = fake.log();
    let methods: Vec<(&str, &str)> = log
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    let (tls_path, ca_path) = (secret_path(SECRET), secret_path(CA_SECRET));
    assert_eq!(
        methods,
        vec![
            ("GET", tls_path.as_str()),
            ("PATCH", tls_path.as_str()),
            ("GET", ca_path.as_str()),
            ("PATCH", ca_path.as_str())
        ]
    );
    let tls_apply = &log[1];
    assert_eq!(tls_apply.query, apply_query());
    assert_eq!(
        tls_apply.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert_eq!(
        tls_apply.body,
        Some(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": { "name": SECRET, "namespace": NS },
            "type": "kubernetes.io/tls",
            "data": { "ca.crt": b64(&read("ca.crt")), "tls.crt": b64(&read("tls.crt")), "tls.key": b64(&read("tls.key")) }
        }))
    );
    let ca_apply = &log[3];
    assert_eq!(ca_apply.query, apply_query());
    assert_eq!(
        ca_apply.body,
        Some(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": { "name": CA_SECRET, "namespace": NS },
            "type": "Opaque",
            "data": { "ca.crt": b64(&read("ca.crt")), "ca.key": b64(&read("ca.key")) }
        }))
    );

    // Idempotent: the same directory again reads, finds everything in place, writes nothing.
    fake.clear_log();
    let out = cluster::apply_secret_from_dir(&client, NS, SECRET, dir.path(), Some(CA_SECRET))
        .await
        .expect("again");
    assert!(out.iter().all(|o| !o.updated), "{out:?}");
    assert!(
        fake.log().iter().all(|r| r.method == "GET"),
        "{:?}",
        fake.log()
    );
}

#[tokio::test]
async fn secret_refuses_a_mismatched_directory_before_calling_the_api() {
    let dir = made_dir();
    let other = made_dir();
    std::fs::copy(other.path().join("tls.key"), dir.path().join("tls.key")).expect("copy");
    let fake = FakeApi::new();
    let e = cluster::apply_secret_from_dir(&fake.client(), NS, SECRET, dir.path(), None)
        .await
        .expect_err("mismatch");
    assert!(
        e.to_string().contains("does not match the certificate in"),
        "{e}"
    );
    assert!(e.to_string().contains("tls.key"), "{e}");
    assert!(fake.log().is_empty());

    // A leaf from another CA is refused too.
    std::fs::copy(other.path().join("tls.crt"), dir.path().join("tls.crt")).expect("copy");
    let e = cluster::apply_secret_from_dir(&fake.client(), NS, SECRET, dir.path(), None)
        .await
        .expect_err("foreign");
    assert!(e.to_string().contains("does not chain"), "{e}");
}

#[tokio::test]
async fn patch_webhooks_applies_only_the_ca_bundle_of_each_webhook() {
    let dir = made_dir();
    let ca_file = dir.path().join("ca.crt");
    let ca_pem = std::fs::read(&ca_file).expect("ca");
    let fake = FakeApi::with_webhooks();
    let client = fake.client();

    let out = cluster::patch_webhooks(&client, WEBHOOK, &ca_file)
        .await
        .expect("patch");
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|o| o.updated && o.webhooks == 1));

    let log = fake.log();
    let seen: Vec<(&str, &str)> = log
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("GET", MUTATING_PATH),
            ("GET", VALIDATING_PATH),
            ("PATCH", MUTATING_PATH),
            ("PATCH", VALIDATING_PATH)
        ]
    );
    for (r, kind, webhook) in [
        (&log[2], "MutatingWebhookConfiguration", "inject.kpool.io"),
        (&log[3], "ValidatingWebhookConfiguration", "guard.kpool.io"),
    ] {
        assert_eq!(r.query, apply_query());
        assert_eq!(
            r.content_type.as_deref(),
            Some("application/apply-patch+yaml")
        );
        assert_eq!(
            r.body,
            Some(json!({
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": kind,
                "metadata": { "name": WEBHOOK },
                "webhooks": [{ "name": webhook, "clientConfig": { "caBundle": b64(&ca_pem) } }]
            }))
        );
    }
    // The rest of the configuration (rules, service, owner labels) is untouched.
    let m = fake.get(MUTATING_PATH).expect("mutating");
    assert_eq!(m["webhooks"][0]["clientConfig"]["service"]["name"], SERVICE);
    assert_eq!(
        m["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "Helm"
    );
    assert_eq!(fake.ca_bundle(MUTATING_PATH), ca_pem);

    // Idempotent: a second run only reads.
    fake.clear_log();
    let out = cluster::patch_webhooks(&client, WEBHOOK, &ca_file)
        .await
        .expect("again");
    assert!(out.iter().all(|o| !o.updated));
    assert_eq!(fake.log().len(), 2);
}

#[tokio::test]
async fn patch_webhooks_handles_one_missing_configuration_and_errors_on_none() {
    let dir = made_dir();
    let ca_file = dir.path().join("ca.crt");
    let fake = FakeApi::new();
    fake.put(
        MUTATING_PATH,
        webhook_config("MutatingWebhookConfiguration", "inject.kpool.io"),
    );
    let out = cluster::patch_webhooks(&fake.client(), WEBHOOK, &ca_file)
        .await
        .expect("mutating only");
    assert_eq!(out.len(), 1);

    let empty = FakeApi::new();
    let e = cluster::patch_webhooks(&empty.client(), WEBHOOK, &ca_file)
        .await
        .expect_err("none");
    assert!(e.to_string().contains("expected a MutatingWebhookConfiguration or ValidatingWebhookConfiguration, found neither"), "{e}");
    assert!(empty.log().iter().all(|r| r.method == "GET"));

    // A leaf is not a CA bundle.
    let e = cluster::patch_webhooks(&fake.client(), WEBHOOK, &dir.path().join("tls.crt"))
        .await
        .expect_err("leaf");
    assert!(
        e.to_string().contains("expected CA certificates only"),
        "{e}"
    );
}

#[tokio::test]
async fn api_errors_name_the_action() {
    let dir = made_dir();
    let fake = FakeApi::new();
    fake.fail_write(1);
    let e = cluster::apply_secret_from_dir(&fake.client(), NS, SECRET, dir.path(), None)
        .await
        .expect_err("500");
    assert!(
        e.to_string()
            .starts_with(&format!("apply Secret {NS}/{SECRET}: ")),
        "{e}"
    );
}
