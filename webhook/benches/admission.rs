//! Cost of one admission answer in process, and of its parts.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use kpool_policy::Policy;
use kpool_webhook::admission::{Admission, Endpoint, review};
use kpool_webhook::audit::{AuditLog, AuditTarget};
use kpool_webhook::inject::{Context, Injector, PodView};
use kpool_webhook::metrics::Metrics;

const REVIEW: &[u8] = include_bytes!("../../tests/fixtures/admission/000-create-kafka-0.json");

fn bench(c: &mut Criterion) {
    let policy = Arc::new(Policy::builtin().expect("built-in policy"));
    let metrics = Arc::new(Metrics::new());
    let dir = tempfile::tempdir().expect("tempdir");
    let audit = AuditLog::start(
        AuditTarget::File {
            path: dir.path().join("audit.jsonl"),
            max_bytes: 64 << 20,
            max_files: 1,
        },
        metrics.clone(),
    )
    .expect("audit");
    let admission = Admission::new(policy.clone(), metrics, audit);
    let injector = Injector::new(policy);
    let mut g = c.benchmark_group("admission");
    g.bench_function("handle", |b| {
        b.iter(|| black_box(admission.handle(Endpoint::Mutate, black_box(REVIEW))))
    });
    g.bench_function("decode", |b| {
        b.iter(|| black_box(review::decode(black_box(REVIEW)).is_ok()))
    });
    let obj =
        serde_json::from_slice::<serde_json::Value>(REVIEW).expect("review")["request"]["object"]
            .to_string();
    let obj = obj.as_str();
    g.bench_function("podview", |b| {
        b.iter(|| black_box(PodView::from_json(black_box(obj)).is_ok()))
    });
    let pod = PodView::from_json(obj).expect("pod");
    g.bench_function("plan", |b| {
        b.iter(|| black_box(injector.plan(black_box(&pod), Context::POD)))
    });
    let out = injector.plan(&pod, Context::POD);
    g.bench_function("patch_json", |b| b.iter(|| black_box(out.patch_json())));
    let answer = review::Answer {
        allowed: true,
        patch: Some(out.patch_json()),
        ..Default::default()
    };
    g.bench_function("encode", |b| {
        b.iter(|| black_box(review::encode("abc", black_box(&answer))))
    });
    admission.audit().sync();
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
