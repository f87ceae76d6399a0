//! The ConfigMap the chart's Job applies: its body and the exact request.

mod common;

use std::pin::pin;
use std::sync::{Arc, Mutex};

use common::policy_with;
use http::{Request, Response};
use kpool_mesh::Format;
use kpool_mesh::apply::{self, FIELD_MANAGER, POLICY_HASH_ANNOTATION};
use kpool_mesh::broker::{self, BrokerOptions};
use kube::client::Body;
use serde_json::Value;

type Seen = Arc<Mutex<Vec<(String, String, Option<String>, Value)>>>;

/// A kube client whose API server records each request and answers with its body.
fn recording_client() -> (kube::Client, Seen) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        let mut handle = pin!(handle);
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.expect("body");
            let body: Value = serde_json::from_slice(&bytes).expect("JSON body");
            log.lock().expect("lock").push((
                parts.method.to_string(),
                parts.uri.to_string(),
                parts
                    .headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                body.clone(),
            ));
            send.send_response(
                Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&body).expect("json")))
                    .expect("response"),
            );
        }
    });
    (kube::Client::new(service, "default"), seen)
}

#[tokio::test]
async fn the_configmap_holds_every_file_and_is_applied_server_side() {
    let policy = policy_with(&[]);
    let bundle = broker::render(&policy, &BrokerOptions::default()).expect("renders");
    let files = bundle.files(Format::Yaml).expect("files");
    let body = apply::configmap_body("kpool-proxy-config", "streaming", &files, policy.hash());
    let (client, seen) = recording_client();
    apply::apply_configmap(&client, &body)
        .await
        .expect("applied");

    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 1);
    let (method, uri, content_type, sent) = &seen[0];
    assert_eq!(method, "PATCH");
    assert_eq!(
        uri,
        "/api/v1/namespaces/streaming/configmaps/kpool-proxy-config?&force=true&fieldManager=kpool-mesh"
    );
    assert_eq!(
        content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert_eq!(sent["kind"], "ConfigMap");
    assert_eq!(
        sent["metadata"]["annotations"][POLICY_HASH_ANNOTATION],
        policy.hash()
    );
    assert_eq!(
        sent["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        FIELD_MANAGER
    );
    let data = sent["data"].as_object().expect("data");
    let keys: Vec<_> = data.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["envoy.yaml", "sds-certificate.yaml", "sds-validation.yaml"]
    );
    // The bootstrap in the ConfigMap is the one broker-config prints.
    let bootstrap: Value =
        serde_saphyr::from_str(data["envoy.yaml"].as_str().expect("text")).expect("YAML");
    assert_eq!(bootstrap, bundle.bootstrap);
}
