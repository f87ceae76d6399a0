//! The offline injector, in process and through the real binary; golden files for the
//! example StatefulSet (regenerate with `KPOOL_UPDATE_GOLDEN=1 cargo test`).

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use kpool_webhook::offline::{OfflineError, Options, inject_stream};
use serde_json::Value;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Compares with a golden file, or rewrites it when KPOOL_UPDATE_GOLDEN is set.
fn golden(name: &str, actual: &str) {
    let path = repo(&format!("webhook/tests/golden/{name}"));
    if std::env::var_os("KPOOL_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with KPOOL_UPDATE_GOLDEN=1)", path.display()));
    assert!(
        want == actual,
        "{name} differs from the golden file; diff with KPOOL_UPDATE_GOLDEN=1 and git diff"
    );
}

fn kpool(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kpool-webhook"))
        .args(args)
        .current_dir(repo(""))
        .env_remove("KPOOL_POLICY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn example_statefulset_golden() {
    let out = kpool(&["inject", "-f", "examples/kafka-statefulset.yaml"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    golden("kafka-statefulset.yaml", &text(&out.stdout));
    golden("kafka-statefulset.notes.txt", &text(&out.stderr));
}

#[test]
fn example_statefulset_ordinal_preview_golden() {
    let out = kpool(
        &[
            "inject",
            "-f",
            "examples/kafka-statefulset.yaml",
            "--ordinal",
            "4",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    golden("kafka-statefulset.ordinal-4.yaml", &text(&out.stdout));
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text(&out.stdout)).expect("YAML out");
    let pod = docs
        .iter()
        .find(|d| d["kind"] == "Pod")
        .expect("a preview pod");
    assert_eq!(pod["metadata"]["name"], "kafka-4");
    assert_eq!(
        pod["metadata"]["labels"]["kpool.io/rack"],
        "k8s-a-eu-west-1b"
    );
    let _: k8s_openapi::api::core::v1::Pod =
        serde_json::from_value(pod.clone()).expect("a valid Pod");
}

#[test]
fn injected_statefulset_is_stable_under_reinjection() {
    let policy = common::policy();
    let first = inject_stream(
        &read("examples/kafka-statefulset.yaml"),
        &policy,
        &Options::default(),
    )
    .expect("injects");
    let yaml = first.to_yaml().expect("yaml");
    let second = inject_stream(&yaml, &policy, &Options::default()).expect("injects");
    assert_eq!(first.documents, second.documents);
    let sts = second
        .documents
        .iter()
        .find(|d| d["kind"] == "StatefulSet")
        .expect("sts");
    let _: k8s_openapi::api::apps::v1::StatefulSet =
        serde_json::from_value(sts.clone()).expect("valid StatefulSet");
}

#[test]
fn mixed_stream_injects_brokers_and_passes_the_rest_through() {
    let input = read("webhook/tests/fixtures/statefulset-multi.yaml");
    let report = inject_stream(&input, &common::policy(), &Options::default()).expect("injects");
    let kinds: Vec<&str> = report
        .documents
        .iter()
        .map(|d| d["kind"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(kinds, ["Pod", "ConfigMap", "Pod", "StatefulSet"]);
    let input_docs: Vec<Value> = serde_saphyr::from_multiple(&input).expect("yaml");
    assert_eq!(report.documents[1], input_docs[1], "ConfigMap unchanged");
    assert_eq!(report.documents[2], input_docs[2], "toolbox unchanged");
    assert_eq!(
        report.documents[0]["metadata"]["labels"]["kpool.io/rack"],
        "k8s-a-eu-west-1b"
    );
    let notes = report.notes.join("\n");
    assert!(
        notes.contains("document 2 (ConfigMap streaming/kafka-config): passed through unchanged"),
        "{notes}"
    );
    assert!(
        notes.contains("document 3 (Pod streaming/toolbox): skipped: not a broker"),
        "{notes}"
    );
    assert!(
        notes.contains("document 4 (StatefulSet streaming/kafka): pod template injected"),
        "{notes}"
    );
}

#[test]
fn bad_documents_fail_the_whole_run_and_all_are_named() {
    let input = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: kafka\n  namespace: streaming\n  labels: {app.kubernetes.io/name: kafka, app.kubernetes.io/component: broker}\nspec:\n  containers: [{name: kafka, image: k}]\n---\n- a\n- list\n---\nmetadata: {name: x}\n---\nkind: StatefulSet\nmetadata: {name: s}\n";
    let err = inject_stream(input, &common::policy(), &Options::default()).expect_err("must fail");
    let OfflineError::Documents(errors) = &err else {
        panic!("{err:?}")
    };
    let msgs: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(msgs.len(), 4, "{msgs:?}");
    assert!(
        msgs[0].starts_with("document 1 (Pod streaming/kafka): denied: broker pod has no ordinal"),
        "{msgs:?}"
    );
    assert!(
        msgs[1].starts_with("document 2 (object <no name>): expected a Kubernetes object"),
        "{msgs:?}"
    );
    assert_eq!(msgs[2], "document 3 (object x): the object has no kind");
    assert_eq!(
        msgs[3],
        "document 4 (StatefulSet s): spec.template: missing (a StatefulSet needs a pod template)"
    );
}

#[test]
fn invalid_yaml_and_empty_input_are_errors() {
    let err = inject_stream("kind: Pod\nspec: [", &common::policy(), &Options::default())
        .expect_err("bad yaml");
    assert!(
        err.to_string().starts_with("input is not valid YAML"),
        "{err}"
    );
    let err = inject_stream("", &common::policy(), &Options::default()).expect_err("empty");
    assert_eq!(err.to_string(), "input holds no documents");
}

#[test]
fn lists_are_injected_item_by_item() {
    let input = r#"{"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "kafka-0", "namespace": "streaming", "labels": {"app.kubernetes.io/name": "kafka", "app.kubernetes.io/component": "broker"}},
         "spec": {"containers": [{"name": "kafka", "image": "k"}]}}]}"#;
    let report = inject_stream(input, &common::policy(), &Options::default()).expect("injects");
    assert_eq!(
        report.documents[0]["items"][0]["metadata"]["labels"]["kpool.io/zone"],
        "eu-west-1a"
    );
}

#[test]
fn cli_reads_stdin_and_reports_skips_on_stderr() {
    let out = kpool(
        &["inject", "-f", "-"],
        Some(&read("webhook/tests/fixtures/statefulset-multi.yaml")),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("kpool.io/rack: k8s-a-eu-west-1b"));
    assert!(text(&out.stderr).contains("kpool: document 3 (Pod streaming/toolbox): skipped"));
}

#[test]
fn cli_failure_prints_nothing_and_exits_1() {
    let input = "kind: Pod\nmetadata: {name: kafka, labels: {app.kubernetes.io/name: kafka, app.kubernetes.io/component: broker}}\nspec: {containers: [{name: kafka, image: k}]}\n";
    let out = kpool(&["inject", "-f", "-", "-n", "streaming"], Some(input));
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).contains("no ordinal"),
        "{}",
        text(&out.stderr)
    );

    let out = kpool(&["inject", "-f", "/nonexistent/kpool.yaml"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot read /nonexistent/kpool.yaml"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn cli_reports_policy_errors_by_field() {
    let dir = std::env::temp_dir().join(format!("kpool-policy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let path = dir.join("policy.yaml");
    let bad = kpool_policy::DEFAULT_POLICY_YAML.replacen(
        "zones: [eu-west-1a, eu-west-1b, eu-west-1c]",
        "zones: [eu-west-1a, eu-west-1b, eu-west-1b]",
        1,
    );
    std::fs::write(&path, bad).expect("write");
    let p = path.to_string_lossy().into_owned();
    let out = kpool(
        &[
            "inject",
            "-f",
            "examples/kafka-statefulset.yaml",
            "--policy",
            &p,
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("invalid policy"), "{err}");
    assert!(
        err.contains("zones[2]: duplicate zone \"eu-west-1b\""),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn cli_help_explains_inject() {
    let out = kpool(&["inject", "--help"], None);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for word in [
        "--filename",
        "--policy",
        "--ordinal",
        "[env: KPOOL_POLICY=]",
        "built-in default",
    ] {
        assert!(help.contains(word), "help lacks {word:?}:\n{help}");
    }
}

#[test]
fn a_broker_without_a_known_namespace_is_skipped_saying_so() {
    // Offline, the namespace comes from the object or -n; brokers live only in
    // brokers.namespaces, so without one the labels do not make a broker.
    let input = "kind: Pod\nmetadata: {name: kafka-0, labels: {app.kubernetes.io/name: kafka, app.kubernetes.io/component: broker}}\nspec: {containers: [{name: kafka, image: k}]}\n";
    let report = inject_stream(input, &common::policy(), &Options::default()).expect("skips");
    let notes = report.notes.join("\n");
    assert!(notes.contains("no namespace is known"), "{notes}");
    let opts = Options {
        namespace: Some("streaming".into()),
        ..Options::default()
    };
    let report = inject_stream(input, &common::policy(), &opts).expect("injects");
    assert_eq!(
        report.documents[0]["metadata"]["labels"]["kpool.io/zone"],
        "eu-west-1a"
    );
}
