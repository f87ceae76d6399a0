//! The admission endpoints in process (tower `oneshot` on the real router): real captured
//! AdmissionReviews, every bad-input class, audit lines and metrics.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use http_body_util::BodyExt as _;
use kpool_policy::Policy;
use kpool_webhook::admission::{Admission, AppState, ops_router, router};
use kpool_webhook::audit::{AuditLog, AuditTarget};
use kpool_webhook::metrics::Metrics;
use serde_json::{Value, json};
use tower::ServiceExt as _;

struct Harness {
    state: Arc<AppState>,
    audit_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new(policy: Policy) -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let audit_path = dir.path().join("audit.jsonl");
        let metrics = Arc::new(Metrics::new());
        let audit = AuditLog::start(
            AuditTarget::File {
                path: audit_path.clone(),
                max_bytes: 1 << 30,
                max_files: 1,
            },
            metrics.clone(),
        )
        .expect("audit log");
        let state = AppState::new(Admission::new(Arc::new(policy), metrics, audit));
        Self {
            state,
            audit_path,
            _dir: dir,
        }
    }

    async fn post(&self, path: &str, body: impl Into<Body>) -> (StatusCode, Vec<u8>) {
        let req = Request::post(path)
            .header("content-type", "application/json")
            .body(body.into())
            .expect("request");
        let resp = router(self.state.clone())
            .oneshot(req)
            .await
            .expect("infallible");
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        (status, bytes)
    }

    async fn review(&self, path: &str, review: &Value) -> Value {
        let (status, body) = self.post(path, review.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let out: Value = serde_json::from_slice(&body).expect("response is JSON");
        assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(out["kind"], "AdmissionReview");
        assert_eq!(out["response"]["uid"], review["request"]["uid"], "same uid");
        out["response"].clone()
    }

    fn audit_lines(&self) -> Vec<Value> {
        self.state.admission.audit().sync();
        std::fs::read_to_string(&self.audit_path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
            .collect()
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let resp = ops_router(self.state.clone())
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = resp.status();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }
}

fn patch_of(response: &Value) -> Value {
    assert_eq!(response["patchType"], "JSONPatch");
    let b64 = response["patch"]
        .as_str()
        .expect("patch is a base64 string");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64");
    serde_json::from_slice(&bytes).expect("patch is JSON")
}

#[tokio::test]
async fn real_create_is_patched_and_audited() {
    let h = Harness::new(common::policy());
    let review = common::fixture("000-create-kafka-0.json");
    let resp = h.review("/mutate", &review).await;
    assert_eq!(resp["allowed"], true);
    let patch = patch_of(&resp);
    let mut pod = review["request"]["object"].clone();
    let ops: json_patch::Patch = serde_json::from_value(patch.clone()).expect("RFC 6902");
    json_patch::patch(&mut pod, &ops).expect("applies to the object as sent");
    assert_eq!(
        pod["metadata"]["labels"]["kpool.io/rack"],
        "k8s-a-eu-west-1a"
    );
    let _: k8s_openapi::api::core::v1::Pod = serde_json::from_value(pod).expect("valid Pod");

    let lines = h.audit_lines();
    assert_eq!(lines.len(), 1);
    let a = &lines[0];
    assert_eq!(a["component"], "webhook");
    assert_eq!(a["decision"], "inject");
    assert_eq!(a["action"], "patched");
    assert_eq!(a["subject"]["namespace"], "streaming");
    assert_eq!(a["subject"]["name"], "kafka-0");
    assert_eq!(a["admission"]["request_uid"], review["request"]["uid"]);
    assert_eq!(a["admission"]["user"], "admin");
    assert_eq!(a["admission"]["operation"], "CREATE");
    assert_eq!(a["admission"]["dry_run"], false);
    assert_eq!(a["admission"]["kind"], "v1/Pod");
    assert_eq!(
        a["admission"]["patch_ops"],
        patch.as_array().map_or(0, Vec::len)
    );
    assert_eq!(a["policy_hash"], common::policy().hash());
    assert!(a["admission"]["latency_us"].as_u64().is_some());
}

#[tokio::test]
async fn reinvocation_of_an_injected_pod_is_a_no_op() {
    let h = Harness::new(common::policy());
    let mut review = common::fixture("000-create-kafka-0.json");
    let resp = h.review("/mutate", &review).await;
    let ops: json_patch::Patch = serde_json::from_value(patch_of(&resp)).expect("patch");
    json_patch::patch(&mut review["request"]["object"], &ops).expect("applies");
    let again = h.review("/mutate", &review).await;
    assert_eq!(again["allowed"], true);
    assert!(again.get("patch").is_none(), "{again}");
    assert_eq!(h.audit_lines()[1]["decision"], "already-injected");
}

#[tokio::test]
async fn dry_run_non_broker_is_skipped_by_mutate_and_denied_by_validate() {
    let h = Harness::new(common::policy());
    let review = common::fixture("003-create-sneaky-batch-dryrun.json");
    let m = h.review("/mutate", &review).await;
    assert_eq!(m["allowed"], true);
    assert!(m.get("patch").is_none());
    let v = h.review("/validate", &review).await;
    assert_eq!(v["allowed"], false);
    assert_eq!(v["status"]["code"], 403);
    let msg = v["status"]["message"].as_str().expect("message");
    assert!(
        msg.contains("tolerates the Kafka pool taint dedicated=kafka:NoSchedule"),
        "{msg}"
    );
    assert!(msg.contains("spec.tolerations["), "{msg}");
    assert!(msg.contains("pool.taint"), "{msg}");

    let lines = h.audit_lines();
    assert_eq!(lines[0]["decision"], "skip");
    assert_eq!(lines[0]["reason_code"], "not-a-broker");
    assert_eq!(lines[0]["admission"]["dry_run"], true);
    assert_eq!(lines[1]["decision"], "violation");
    assert_eq!(lines[1]["reason_code"], "tolerates-pool-taint");
    assert_eq!(lines[1]["action"], "denied");
    assert_eq!(lines[1]["admission"]["endpoint"], "validate");
}

#[tokio::test]
async fn audit_mode_admits_violations_with_a_warning() {
    let h = Harness::new(common::policy_with("mode: enforce", "mode: audit"));
    let review = common::fixture("003-create-sneaky-batch-dryrun.json");
    let v = h.review("/validate", &review).await;
    assert_eq!(v["allowed"], true);
    let warning = v["warnings"][0].as_str().expect("warning");
    assert!(warning.contains("audit mode, not enforced"), "{warning}");
    assert_eq!(h.audit_lines()[0]["action"], "admitted-audit-mode");
}

#[tokio::test]
async fn update_is_not_mutated_but_is_guarded() {
    let h = Harness::new(common::policy());
    let review = common::fixture("005-update-kafka-0.json");
    let m = h.review("/mutate", &review).await;
    assert_eq!(m["allowed"], true);
    assert!(m.get("patch").is_none());
    let v = h.review("/validate", &review).await;
    assert_eq!(v["allowed"], true);
    let lines = h.audit_lines();
    assert_eq!(lines[0]["reason_code"], "not-create");
    assert_eq!(lines[1]["decision"], "allow");
    assert_eq!(lines[1]["reason_code"], "broker");
}

#[tokio::test]
async fn broker_without_ordinal_is_denied_or_warned() {
    let mut review = common::fixture("000-create-kafka-0.json");
    let meta = review["request"]["object"]["metadata"]
        .as_object_mut()
        .expect("meta");
    meta.remove("name");
    meta["labels"]
        .as_object_mut()
        .expect("labels")
        .remove("apps.kubernetes.io/pod-index");
    let h = Harness::new(common::policy());
    let r = h.review("/mutate", &review).await;
    assert_eq!(r["allowed"], false);
    assert_eq!(r["status"]["code"], 403);
    assert!(
        r["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no ordinal"),
        "{r}"
    );
    assert_eq!(h.audit_lines()[0]["subject"]["name"], "kafka-*");

    let h = Harness::new(common::policy_with("mode: enforce", "mode: audit"));
    let r = h.review("/mutate", &review).await;
    assert_eq!(r["allowed"], true);
    assert!(
        r["warnings"][0]
            .as_str()
            .unwrap_or_default()
            .contains("no ordinal"),
        "{r}"
    );
}

#[tokio::test]
async fn bad_envelopes_get_400_with_the_reason() {
    let h = Harness::new(common::policy());
    let mut wrong_version = common::fixture("000-create-kafka-0.json");
    wrong_version["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let mut wrong_kind = common::fixture("000-create-kafka-0.json");
    wrong_kind["kind"] = json!("ConversionReview");
    let mut no_request = common::fixture("000-create-kafka-0.json");
    no_request.as_object_mut().expect("obj").remove("request");
    let mut no_uid = common::fixture("000-create-kafka-0.json");
    no_uid["request"]["uid"] = json!("");
    let cases: [(String, &str); 7] = [
        ("{not json".to_owned(), "not valid JSON"),
        (String::new(), "not valid JSON"),
        ("[1,2]".to_owned(), "not valid JSON"),
        (
            wrong_version.to_string(),
            "apiVersion: expected \"admission.k8s.io/v1\", found \"admission.k8s.io/v1beta1\"",
        ),
        (
            wrong_kind.to_string(),
            "kind: expected \"AdmissionReview\", found \"ConversionReview\"",
        ),
        (no_request.to_string(), "request: missing"),
        (no_uid.to_string(), "request.uid: missing or empty"),
    ];
    for (body, want) in cases {
        for path in ["/mutate", "/validate"] {
            let (status, out) = h.post(path, body.clone()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            let text = String::from_utf8_lossy(&out);
            assert!(text.contains(want), "{path} {body:.60}: {text}");
        }
    }
    let lines = h.audit_lines();
    assert_eq!(lines.len(), 14, "every request leaves an audit line");
    assert!(
        lines
            .iter()
            .all(|l| l["decision"] == "error" && l["action"] == "rejected")
    );
}

#[tokio::test]
async fn bad_objects_get_an_admission_response_naming_the_field() {
    let h = Harness::new(common::policy());
    let mut no_object = common::fixture("000-create-kafka-0.json");
    no_object["request"]
        .as_object_mut()
        .expect("req")
        .remove("object");
    let r = h.review("/mutate", &no_object).await;
    assert_eq!(r["allowed"], false);
    assert_eq!(
        r["status"],
        json!({"code": 400, "message": "request.object: missing"})
    );

    let mut bad = common::fixture("000-create-kafka-0.json");
    bad["request"]["object"]["spec"]["containers"] = json!("kafka");
    for path in ["/mutate", "/validate"] {
        let r = h.review(path, &bad).await;
        assert_eq!(r["allowed"], false);
        let msg = r["status"]["message"].as_str().expect("message");
        assert!(
            msg.starts_with(
                "request.object is not a readable Pod: request.object.spec.containers: invalid type"
            ),
            "{msg}"
        );
    }

    let mut sts = common::fixture("000-create-kafka-0.json");
    sts["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "StatefulSet"});
    let r = h.review("/mutate", &sts).await;
    assert_eq!(r["allowed"], true);
    assert!(r.get("patch").is_none());
    assert_eq!(
        r["status"]["message"],
        "kpool: kind apps/v1/StatefulSet: kpool mutates only v1 Pods"
    );
}

#[tokio::test]
async fn oversized_body_is_413_and_wrong_method_405() {
    let h = Harness::new(common::policy());
    let big = vec![b' '; kpool_webhook::admission::MAX_BODY_BYTES + 1];
    let (status, _) = h.post("/mutate", big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let lines = h.audit_lines();
    assert_eq!(
        lines[0]["reason_code"], "body-too-large",
        "oversized bodies are audited too"
    );
    let resp = router(h.state.clone())
        .oneshot(Request::get("/mutate").body(Body::empty()).expect("req"))
        .await
        .expect("infallible");
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let h = Harness::new(common::policy());
    assert_eq!(h.get("/healthz").await.0, StatusCode::OK);
    assert_eq!(h.get("/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
    h.state.ready.store(true, Ordering::Release);
    assert_eq!(h.get("/readyz").await.0, StatusCode::OK);

    h.review("/mutate", &common::fixture("000-create-kafka-0.json"))
        .await;
    h.review(
        "/validate",
        &common::fixture("003-create-sneaky-batch-dryrun.json"),
    )
    .await;
    let (status, text) = h.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    for want in [
        "kpool_webhook_admission_requests_total{endpoint=\"mutate\",decision=\"inject\",reason=\"injected\"} 1",
        "kpool_webhook_admission_requests_total{endpoint=\"validate\",decision=\"violation\",reason=\"tolerates-pool-taint\"} 1",
        "kpool_webhook_admission_duration_seconds_bucket{le=\"0.00001\",endpoint=\"mutate\"}",
        "kpool_webhook_admission_duration_seconds_bucket{le=\"1.0\",endpoint=\"mutate\"} 1",
        "kpool_webhook_in_flight_requests 0",
        "kpool_webhook_build_info{version=",
        "# EOF",
    ] {
        assert!(text.contains(want), "metrics lack {want:?}:\n{text}");
    }
}

#[tokio::test]
async fn delete_without_object_is_allowed_with_the_reason() {
    // The API server sends a DELETE with `oldObject` and no `object`: nothing to inject.
    let h = Harness::new(common::policy());
    let mut review = common::fixture("005-update-kafka-0.json");
    review["request"]["operation"] = json!("DELETE");
    review["request"]
        .as_object_mut()
        .expect("request")
        .remove("object");
    for path in ["/mutate", "/validate"] {
        let r = h.review(path, &review).await;
        assert_eq!(r["allowed"], true, "{path}: {r}");
        assert!(r.get("patch").is_none(), "{path}: {r}");
    }
    let mut null_object = review.clone();
    null_object["request"]["object"] = Value::Null;
    let r = h.review("/mutate", &null_object).await;
    assert_eq!(r["allowed"], true, "{r}");
    let lines = h.audit_lines();
    assert_eq!(lines[0]["decision"], "skip");
    assert_eq!(lines[0]["reason_code"], "not-create");
    assert_eq!(
        lines[0]["reason"],
        "operation DELETE: kpool mutates pods on CREATE only"
    );
    assert_eq!(lines[0]["subject"]["name"], "kafka-0");
    assert_eq!(lines[0]["subject"]["namespace"], "streaming");
    assert_eq!(lines[1]["reason_code"], "not-create-or-update");
}

#[tokio::test]
async fn a_repeated_node_selector_key_means_its_last_value() {
    // Only a client posting directly can repeat a key; the API server's Go decoding keeps
    // the last value, and the guard must judge the pod the API server stores.
    let h = Harness::new(common::policy());
    let mut review = common::fixture("003-create-sneaky-batch-dryrun.json");
    review["request"]["object"]["spec"]["tolerations"] = json!([]);
    review["request"]["object"]["spec"]["nodeSelector"] = json!("@@SELECTOR@@");
    let text = review.to_string();
    let with = |selector: &str| text.replacen("\"@@SELECTOR@@\"", selector, 1);

    let (status, body) = h
        .post(
            "/validate",
            with(r#"{"dedicated": "kafka", "dedicated": "batch"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let r: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(r["response"]["allowed"], true, "{r}");

    let (_, body) = h
        .post(
            "/validate",
            with(r#"{"dedicated": "batch", "dedicated": "kafka"}"#),
        )
        .await;
    let r: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(r["response"]["allowed"], false, "{r}");
    let message = r["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("requires the Kafka pool nodes with spec.nodeSelector dedicated=kafka"),
        "{message}"
    );
}
