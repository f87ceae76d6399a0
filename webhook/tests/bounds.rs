//! Answers stay proportionate: a review just under 3 MiB built to make the answer as large
//! as possible (thousands of node selector terms, duplicate identity env, thousands of
//! containers or tolerations, names and strings of megabytes) is answered in under 1 MiB,
//! and the decision names the bound that was hit. Decoding stays proportionate too: a pod
//! with more than `MAX_POD_ITEMS` list and map entries (a million `{}` containers built
//! 143 MiB) is refused naming the list where the budget ran out, in a small answer.

mod common;

use std::sync::Arc;

use base64::Engine as _;
use kpool_webhook::admission::{Admission, Endpoint, Reply};
use kpool_webhook::audit::{AuditLog, AuditTarget};
use kpool_webhook::inject::{MAX_ENV_DUPLICATES, MAX_NODE_SELECTOR_TERMS, MAX_POD_ITEMS};
use kpool_webhook::metrics::Metrics;
use serde_json::{Value, json};

/// The API server sends at most 3 MiB.
const REQUEST_LIMIT: usize = 3 * 1024 * 1024;
/// What every answer must stay under.
const ANSWER_LIMIT: usize = 1024 * 1024;

fn admission() -> (Admission, tempfile::TempDir) {
    admission_with(common::policy())
}

/// The longest namespace Kubernetes allows, a broker namespace in [`admission_with`]'s
/// policy for the largest-patch case.
fn longest_namespace() -> String {
    "n".repeat(63)
}

fn admission_with(policy: kpool_policy::Policy) -> (Admission, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tmp");
    let metrics = Arc::new(Metrics::new());
    let audit = AuditLog::start(
        AuditTarget::File {
            path: dir.path().join("audit.jsonl"),
            max_bytes: 1 << 30,
            max_files: 1,
        },
        metrics.clone(),
    )
    .expect("audit log");
    (Admission::new(Arc::new(policy), metrics, audit), dir)
}

/// The captured CREATE of kafka-0, changed by `edit`, with the JSON array at `pointer`
/// filled with as many `item(i)` as keep the body just under 3 MiB (built as text: a
/// million-item `Value` is slow to build in a debug test). Returns the body and the count.
fn just_under_3mib(
    edit: impl FnOnce(&mut Value),
    pointer: &str,
    item: impl Fn(usize) -> String,
) -> (Vec<u8>, usize) {
    fill(edit, pointer, item, usize::MAX, false)
}

/// The captured CREATE of kafka-0, changed by `edit`, with `n` items `item(i)` in the array
/// at `pointer`; when `pad`, made just under 3 MiB by a managedFields entry (the view
/// skips it) after them.
fn with_items(
    edit: impl FnOnce(&mut Value),
    pointer: &str,
    item: impl Fn(usize) -> String,
    n: usize,
    pad: bool,
) -> Vec<u8> {
    let (body, got) = fill(edit, pointer, item, n, pad);
    assert_eq!(got, n, "{n} items fit in 3 MiB");
    body
}

fn fill(
    edit: impl FnOnce(&mut Value),
    pointer: &str,
    item: impl Fn(usize) -> String,
    max: usize,
    pad: bool,
) -> (Vec<u8>, usize) {
    fill_with(edit, pointer, ('[', ']'), item, max, pad)
}

/// [`fill`], the items between `open` and `close`.
fn fill_with(
    edit: impl FnOnce(&mut Value),
    pointer: &str,
    (open, close): (char, char),
    item: impl Fn(usize) -> String,
    max: usize,
    pad: bool,
) -> (Vec<u8>, usize) {
    let mut review = common::fixture("000-create-kafka-0.json");
    edit(&mut review);
    // The member is created if the pod has none.
    let (parent, key) = pointer.rsplit_once('/').expect("a member pointer");
    review
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .expect("parent object exists")
        .insert(key.to_owned(), json!("@@FILL@@"));
    if pad {
        review["request"]["object"]["metadata"]["managedFields"]
            .as_array_mut()
            .expect("managedFields")
            .push(json!({"manager": "@@PAD@@"}));
    }
    let text = review.to_string();
    let (head, tail) = text.split_once("\"@@FILL@@\"").expect("placeholder");
    let room = REQUEST_LIMIT - 1 - head.len() - tail.len() - 2;
    let mut fill = String::with_capacity(room.min(max.saturating_mul(64)));
    let mut n = 0;
    while n < max {
        let next = item(n);
        if fill.len() + next.len() + 1 > room {
            break;
        }
        if n > 0 {
            fill.push(',');
        }
        fill.push_str(&next);
        n += 1;
    }
    let mut body = format!("{head}{open}{fill}{close}{tail}");
    if pad {
        let room = REQUEST_LIMIT - 1 - (body.len() - "@@PAD@@".len());
        body = body.replacen("@@PAD@@", &"x".repeat(room), 1);
    }
    if pad || max == usize::MAX {
        assert!(body.len() < REQUEST_LIMIT);
        assert!(
            body.len() > REQUEST_LIMIT - 64 * 1024,
            "{} bytes",
            body.len()
        );
    }
    (body.into_bytes(), n)
}

/// The captured CREATE of kafka-0 with the string at `pointer` made just under 3 MiB long
/// (`prefix`, then `x`s, then `suffix`).
fn long_string(pointer: &str, prefix: &str, suffix: &str) -> Vec<u8> {
    let mut review = common::fixture("000-create-kafka-0.json");
    *review.pointer_mut(pointer).expect("pointer exists") = json!("@@FILL@@");
    let text = review.to_string();
    let room = REQUEST_LIMIT - 1 - text.len() - prefix.len() - suffix.len();
    let body = text.replacen(
        "@@FILL@@",
        &format!("{prefix}{}{suffix}", "x".repeat(room)),
        1,
    );
    assert!(body.len() < REQUEST_LIMIT && body.len() > REQUEST_LIMIT - 64 * 1024);
    body.into_bytes()
}

/// Answers `body` on both endpoints; checks each answer's size; returns the mutate answer.
fn answer(admission: &Admission, case: &str, body: &[u8]) -> Reply {
    let mut mutate = None;
    for endpoint in [Endpoint::Mutate, Endpoint::Validate] {
        let reply = admission.handle(endpoint, body);
        eprintln!(
            "{case}: {} request bytes -> {endpoint:?} {} answer bytes ({})",
            body.len(),
            reply.body.len(),
            reply.status
        );
        assert!(
            reply.body.len() < ANSWER_LIMIT,
            "{case} {endpoint:?}: a {} byte request got a {} byte answer",
            body.len(),
            reply.body.len()
        );
        if endpoint == Endpoint::Mutate {
            mutate = Some(reply);
        }
    }
    mutate.expect("mutate answered")
}

/// The `response` of a 200 answer.
fn response(reply: &Reply) -> Value {
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body[..reply.body.len().min(500)])
    );
    let v: Value = serde_json::from_slice(&reply.body).expect("answer is JSON");
    v["response"].clone()
}

/// The status message of a denial with `code`.
fn denied(reply: &Reply, want: &str) -> String {
    let r = response(reply);
    assert_eq!(r["allowed"], false, "{r:.300}");
    assert!(r.get("patch").is_none());
    let message = r["status"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(want), "{message:.500}");
    message.to_owned()
}

const REQUIRED: &str = "requiredDuringSchedulingIgnoredDuringExecution";

fn set_affinity(review: &mut Value) {
    review["request"]["object"]["spec"]["affinity"] =
        json!({"nodeAffinity": {REQUIRED: {"nodeSelectorTerms": []}}});
}

const TERMS: &str = "/request/object/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms";

/// A term with an expression of its own (7 items of the budget).
fn term_with_expression(i: usize) -> String {
    format!(
        r#"{{"matchExpressions":[{{"key":"node.kubernetes.io/instance-type","operator":"In","values":["m{i}"]}}]}}"#
    )
}

#[test]
fn thousands_of_node_selector_terms_get_a_small_denial() {
    let (admission, _dir) = admission();
    // Terms with expressions of their own, as many as a pod can hold within the item budget
    // (the reported review had 30,000 in 1.6 MB: see
    // `every_list_past_the_item_budget_is_refused_naming_the_field`).
    let n = 2_500;
    let body = with_items(set_affinity, TERMS, term_with_expression, n, true);
    let reply = answer(&admission, "terms with expressions", &body);
    denied(
        &reply,
        &format!(
            "broker pod has {n} required node selector terms at spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms; kpool ANDs the pool and zone into each term and accepts at most {MAX_NODE_SELECTOR_TERMS}"
        ),
    );

    // Empty terms: the most terms (and, merged, the most operations) per item.
    let n = MAX_POD_ITEMS - 1_000;
    let body = with_items(set_affinity, TERMS, |_| "{}".to_owned(), n, true);
    let reply = answer(&admission, "empty terms", &body);
    denied(
        &reply,
        &format!("broker pod has {n} required node selector terms"),
    );
}

#[test]
fn thousands_of_duplicate_identity_env_entries_get_a_small_denial() {
    let (admission, _dir) = admission();
    let names = ["KAFKA_NODE_ID", "KAFKA_BROKER_RACK", "HOST_IP", "POD_NAME"];
    let n = MAX_POD_ITEMS - 1_000;
    let body = with_items(
        |_| {},
        "/request/object/spec/containers/0/env",
        |i| format!(r#"{{"name":"{}","value":"{i}"}}"#, names[i % names.len()]),
        n,
        true,
    );
    let reply = answer(&admission, "env duplicates", &body);
    denied(
        &reply,
        &format!(
            "broker container has {} duplicate entries of env names kpool sets, the first at spec.containers[0].env[{}] (\"KAFKA_NODE_ID\"); kpool removes at most {MAX_ENV_DUPLICATES}",
            n - names.len(),
            names.len()
        ),
    );
}

#[test]
fn thousands_of_containers_or_tolerations_add_nothing_to_the_patch() {
    let (admission, _dir) = admission();
    // Per-container injection would multiply: kpool injects into the broker container
    // only, and each extra container carries everything kpool could touch (7 items).
    let small = common::fixture("000-create-kafka-0.json").to_string();
    let small_patch = patch_bytes(&response(
        &admission.handle(Endpoint::Mutate, small.as_bytes()),
    ));
    let kafka = common::fixture_pod("000-create-kafka-0.json")["spec"]["containers"][0].to_string();
    let body = with_items(
        |_| {},
        "/request/object/spec/containers",
        |i| {
            if i == 0 {
                kafka.clone()
            } else {
                format!(
                    r#"{{"name":"c{i}","image":"x","env":[{{"name":"KAFKA_NODE_ID","value":"9"}},{{"name":"KAFKA_NODE_ID","value":"8"}},{{"name":"HOST_IP","value":"x"}}],"volumeMounts":[{{"name":"data","mountPath":"/kpool/bin"}}],"readinessProbe":{{"tcpSocket":{{"port":1}}}}}}"#
                )
            }
        },
        2_500,
        true,
    );
    let r = response(&answer(&admission, "containers", &body));
    assert_eq!(r["allowed"], true);
    assert_eq!(
        patch_bytes(&r),
        small_patch,
        "same patch as with 2 containers"
    );

    let body = with_items(
        |_| {},
        "/request/object/spec/tolerations",
        |i| format!(r#"{{"key":"k{i}","operator":"Exists","effect":"NoExecute"}}"#),
        MAX_POD_ITEMS - 1_000,
        true,
    );
    let r = response(&answer(&admission, "tolerations", &body));
    assert_eq!(r["allowed"], true);
    assert_eq!(
        patch_bytes(&r),
        small_patch,
        "one toleration added, as always"
    );
}

/// Each list the pod view builds, filled to just under 3 MiB (a million `{}` containers
/// built 143 MiB, `{}` tolerations 111 MiB, empty node selector terms 71 MiB): the decode
/// stops at the item budget, and both endpoints answer in a few hundred bytes naming the
/// list where it ran out.
#[test]
fn every_list_past_the_item_budget_is_refused_naming_the_field() {
    let (admission, _dir) = admission();
    let set_probe = |review: &mut Value| {
        review["request"]["object"]["spec"]["containers"][0]["readinessProbe"] =
            json!({"exec": {"command": []}});
    };
    let none = |_: &mut Value| {};
    let empty = |_: usize| "{}".to_owned();
    let pair = |_: usize| r#""":"""#.to_owned();
    type Case<'a> = (
        &'a str,
        &'a dyn Fn(&mut Value),
        &'a str,
        bool,
        &'a dyn Fn(usize) -> String,
    );
    let cases: &[Case<'_>] = &[
        (
            "spec.containers",
            &none,
            "/request/object/spec/containers",
            false,
            &empty,
        ),
        (
            "spec.initContainers",
            &none,
            "/request/object/spec/initContainers",
            false,
            &empty,
        ),
        (
            "spec.containers[0].env",
            &none,
            "/request/object/spec/containers/0/env",
            false,
            &empty,
        ),
        (
            "spec.containers[0].env",
            &none,
            "/request/object/spec/containers/0/env",
            false,
            &|i| format!(r#"{{"name":"KAFKA_NODE_ID","value":"{i}"}}"#),
        ),
        (
            "spec.containers[0].volumeMounts",
            &none,
            "/request/object/spec/containers/0/volumeMounts",
            false,
            &empty,
        ),
        (
            "spec.containers[0].readinessProbe.exec.command",
            &set_probe,
            "/request/object/spec/containers/0/readinessProbe/exec/command",
            false,
            &|_| "0".to_owned(),
        ),
        // Nested: the budget runs out in some container's env.
        (
            "spec.containers[",
            &none,
            "/request/object/spec/containers",
            false,
            &|_| r#"{"env":[{},{},{}]}"#.to_owned(),
        ),
        (
            "spec.volumes",
            &none,
            "/request/object/spec/volumes",
            false,
            &empty,
        ),
        (
            "spec.tolerations",
            &none,
            "/request/object/spec/tolerations",
            false,
            &empty,
        ),
        (
            "spec.topologySpreadConstraints",
            &none,
            "/request/object/spec/topologySpreadConstraints",
            false,
            &empty,
        ),
        (TERMS_FIELD, &set_affinity, TERMS, false, &empty),
        (TERMS_FIELD, &set_affinity, TERMS, false, &|_| {
            r#"{"a":0}"#.to_owned()
        }),
        // The reported review: 30,000 terms with expressions in 1.6 MB.
        (
            TERMS_FIELD,
            &set_affinity,
            TERMS,
            false,
            &term_with_expression,
        ),
        (
            "spec.nodeSelector",
            &none,
            "/request/object/spec/nodeSelector",
            true,
            &pair,
        ),
        (
            "metadata.labels",
            &none,
            "/request/object/metadata/labels",
            true,
            &pair,
        ),
        (
            "metadata.annotations",
            &none,
            "/request/object/metadata/annotations",
            true,
            &pair,
        ),
        (
            "metadata.ownerReferences",
            &none,
            "/request/object/metadata/ownerReferences",
            false,
            &empty,
        ),
    ];
    for (field, edit, pointer, object, item) in cases {
        let delimiters = if *object { ('{', '}') } else { ('[', ']') };
        let (body, n) = fill_with(edit, pointer, delimiters, item, usize::MAX, false);
        assert!(n > MAX_POD_ITEMS, "{field}: {n} items");
        let want = format!("request.object is not a readable Pod: request.object.{field}");
        let budget = format!(
            "more than {MAX_POD_ITEMS} items (entries of lists and maps) in one pod; kpool reads at most {MAX_POD_ITEMS}, real pods have a few hundred"
        );
        for endpoint in [Endpoint::Mutate, Endpoint::Validate] {
            let reply = admission.handle(endpoint, &body);
            let r = response(&reply);
            let message = r["status"]["message"].as_str().unwrap_or_default();
            eprintln!(
                "{field} ({n} items) {endpoint:?}: {} answer bytes: {message}",
                reply.body.len()
            );
            assert!(
                reply.body.len() < 1024,
                "{field}: {} bytes",
                reply.body.len()
            );
            assert_eq!(r["allowed"], false, "{field}");
            assert_eq!(r["status"]["code"], 400, "{field}");
            assert!(message.starts_with(&want), "{field}: {message}");
            assert!(message.contains(&budget), "{field}: {message}");
        }
    }
}

const TERMS_FIELD: &str =
    "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms";

fn patch_bytes(response: &Value) -> usize {
    response["patch"].as_str().map_or(0, |p| {
        base64::engine::general_purpose::STANDARD
            .decode(p)
            .expect("base64")
            .len()
    })
}

#[test]
fn the_largest_patch_within_every_bound_is_well_under_1_mib() {
    let namespace = longest_namespace();
    let (admission, _dir) = admission_with(common::policy_with(
        "namespaces: [streaming]",
        &format!("namespaces: [streaming, {namespace}]"),
    ));
    // Every term needs both expressions (two operations), every allowed duplicate is
    // removed, the pod name and namespace are as long as Kubernetes allows, the rest of the
    // item budget is tolerations the engine scans and leaves alone, and the rest of the
    // 3 MiB a managedFields entry.
    let name = format!("{}-0", "k".repeat(251));
    let terms: Vec<Value> = (0..MAX_NODE_SELECTOR_TERMS)
        .map(|_| json!({"matchExpressions": []}))
        .collect();
    let env: Vec<Value> = (0..=MAX_ENV_DUPLICATES)
        .map(|i| json!({"name": "KAFKA_NODE_ID", "value": i.to_string()}))
        .collect();
    let body = with_items(
        |review| {
            let req = &mut review["request"];
            req["name"] = json!(name);
            req["namespace"] = json!(namespace);
            let pod = &mut req["object"];
            pod["metadata"]["name"] = json!(name);
            pod["metadata"]["namespace"] = json!(namespace);
            pod["metadata"]["labels"]
                .as_object_mut()
                .expect("labels")
                .remove("apps.kubernetes.io/pod-index");
            pod["spec"]["affinity"] =
                json!({"nodeAffinity": {REQUIRED: {"nodeSelectorTerms": terms}}});
            pod["spec"]["containers"][0]["env"] = Value::Array(env);
        },
        "/request/object/spec/tolerations",
        |i| format!(r#"{{"key":"k{i}","operator":"Exists"}}"#),
        MAX_POD_ITEMS - 2_000,
        true,
    );
    let reply = answer(&admission, "everything at the bounds", &body);
    let r = response(&reply);
    assert_eq!(r["allowed"], true, "{r:.500}");
    let patch_len = patch_bytes(&r);
    eprintln!(
        "largest patch within the bounds: {patch_len} bytes, answer {} bytes",
        reply.body.len()
    );
    assert!(reply.body.len() < 64 * 1024, "{} bytes", reply.body.len());

    // And it does what it says.
    let review: Value = serde_json::from_slice(&body).expect("review");
    let mut pod = review["request"]["object"].clone();
    let ops: json_patch::Patch = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(r["patch"].as_str().expect("patch"))
            .expect("base64"),
    )
    .expect("RFC 6902");
    json_patch::patch(&mut pod, &ops).expect("applies");
    let kafka = common::container(&pod, "containers", "kafka");
    let ids: Vec<&Value> = kafka["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter(|e| e["name"] == "KAFKA_NODE_ID")
        .collect();
    assert_eq!(ids, [&json!({"name": "KAFKA_NODE_ID", "value": "0"})]);
    for term in pod["spec"]["affinity"]["nodeAffinity"][REQUIRED]["nodeSelectorTerms"]
        .as_array()
        .expect("terms")
    {
        assert_eq!(term["matchExpressions"].as_array().map(Vec::len), Some(2));
    }
}

#[test]
fn megabyte_strings_are_quoted_in_part() {
    let (admission, _dir) = admission();
    // A name kpool would render into env and the sidecar several times.
    let body = long_string("/request/object/metadata/name", "kafka-", "-0");
    let reply = answer(&admission, "long pod name", &body);
    denied(&reply, "broker pod name is ");

    // No broker container: the denial lists the containers there are.
    let (body, n) = just_under_3mib(
        |_| {},
        "/request/object/spec/containers",
        |i| format!(r#"{{"name":"c{i}-{}","image":"x"}}"#, "y".repeat(200)),
    );
    assert!(n > 10_000);
    let reply = answer(&admission, "no broker container", &body);
    let message = denied(&reply, "broker pod has no container named \"kafka\"");
    assert!(message.ends_with("more bytes not shown)"), "{message:.100}");

    // A parser's error quotes the value it could not read.
    let body = long_string("/request/object/spec/containers", "", "");
    let reply = answer(&admission, "unreadable object", &body);
    let r = response(&reply);
    assert_eq!(r["status"]["code"], 400);
    assert!(
        r["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("request.object is not a readable Pod: request.object.spec.containers: invalid type: string"),
        "{r:.300}"
    );

    // Not a broker, with a label value of megabytes: allowed, small.
    let body = long_string(
        "/request/object/metadata/labels/app.kubernetes.io~1component",
        "",
        "",
    );
    let r = response(&answer(&admission, "long label value", &body));
    assert_eq!(r["allowed"], true);

    // A non-broker toleration of the pool quoted by the guard.
    let mut review = common::fixture("003-create-sneaky-batch-dryrun.json");
    review["request"]["object"]["spec"]["tolerations"] =
        json!([{"key": "dedicated", "operator": "Exists", "value": "@@FILL@@"}]);
    let text = review.to_string();
    let body = text.replacen(
        "@@FILL@@",
        &"\u{1}"
            .repeat((REQUEST_LIMIT - text.len()) / 6 - 16)
            .replace('\u{1}', "\\u0001"),
        1,
    );
    assert!(body.len() < REQUEST_LIMIT);
    let reply = admission.handle(Endpoint::Validate, body.as_bytes());
    assert!(reply.body.len() < 32 * 1024, "{}", reply.body.len());
    assert_eq!(response(&reply)["allowed"], false);

    // Envelope fields: a 400 whose reason is cut, or a uid kpool will not echo.
    for (pointer, want) in [
        ("/request/uid", "request.uid: expected at most 256 bytes"),
        (
            "/apiVersion",
            "apiVersion: expected \"admission.k8s.io/v1\", found \"xxx",
        ),
        ("/kind", "kind: expected \"AdmissionReview\", found \"xxx"),
        (
            "/request/dryRun",
            "body is not valid JSON for an AdmissionReview: invalid type: string \"xxx",
        ),
    ] {
        let body = long_string(pointer, "", "");
        for endpoint in [Endpoint::Mutate, Endpoint::Validate] {
            let reply = admission.handle(endpoint, &body);
            assert_eq!(reply.status, 400, "{pointer}");
            let text = String::from_utf8_lossy(&reply.body);
            assert!(
                reply.body.len() < 4 * 1024,
                "{pointer}: {} bytes",
                reply.body.len()
            );
            assert!(text.contains(want), "{pointer}: {text:.300}");
        }
    }
}

#[test]
fn many_warnings_are_cut_to_a_few() {
    use kpool_webhook::admission::review::{Answer, MAX_MESSAGE_BYTES, MAX_WARNINGS, encode};
    let answer = Answer {
        allowed: true,
        patch: None,
        status: Some((200, "\u{0}".repeat(10 * MAX_MESSAGE_BYTES))),
        warnings: vec!["\"".repeat(10 * MAX_MESSAGE_BYTES); 1000],
    };
    let out = encode("u", &answer);
    assert!(out.len() < 256 * 1024, "{}", out.len());
    let v: Value = serde_json::from_slice(&out).expect("JSON");
    let warnings = v["response"]["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), MAX_WARNINGS);
    assert_eq!(
        warnings[MAX_WARNINGS - 1],
        format!("kpool: {} more warnings not shown", 1000 - MAX_WARNINGS + 1)
    );
    assert!(
        v["response"]["status"]["message"]
            .as_str()
            .is_some_and(|m| m.ends_with(&format!(
                "... ({} more bytes not shown)",
                9 * MAX_MESSAGE_BYTES
            )))
    );
}

#[test]
fn a_patch_over_the_budget_is_denied_naming_it() {
    use kpool_webhook::admission::review::MAX_PATCH_BYTES;
    // Only a policy whose templates are this large gets here: the engine's own bounds keep
    // patches tens of kilobytes at most.
    let big = "x".repeat(MAX_PATCH_BYTES);
    let huge_sidecar = |mode: &str| {
        let yaml = kpool_policy::DEFAULT_POLICY_YAML
            .replacen(
                "      - {name: KPOOL_RACK, value: \"{rack}\"}",
                &format!("      - {{name: KPOOL_RACK, value: \"{{rack}}\"}}\n      - {{name: BIG, value: \"{big}\"}}"),
                1,
            )
            .replacen("mode: enforce", mode, 1);
        kpool_policy::Policy::from_yaml(&yaml, "test policy").expect("policy loads")
    };
    let body = common::fixture("000-create-kafka-0.json").to_string();
    for (mode, allowed) in [("mode: enforce", false), ("mode: audit", true)] {
        let (admission, _dir) = admission_with(huge_sidecar(mode));
        let reply = admission.handle(Endpoint::Mutate, body.as_bytes());
        assert!(reply.body.len() < 8 * 1024, "{} bytes", reply.body.len());
        let r = response(&reply);
        assert_eq!(r["allowed"], allowed, "{mode}: {r}");
        assert!(r.get("patch").is_none(), "{mode}");
        let text = if allowed {
            r["warnings"][0].as_str().unwrap_or_default().to_owned()
        } else {
            assert_eq!(r["status"]["code"], 403);
            r["status"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        };
        assert!(
            text.contains(&format!(
                "kpool answers with at most {MAX_PATCH_BYTES} bytes of patch: shrink the policy's sidecar templates"
            )),
            "{mode}: {text}"
        );
    }
}
