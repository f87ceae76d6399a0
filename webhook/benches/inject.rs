//! Injection cost, from pod JSON text to patch bytes.
//!
//! `cargo bench -p kpool-webhook --bench inject`. Target: median under 50 µs for a ~10 KB
//! broker pod on a 2-core machine (BENCHMARKS.md has the figures).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use kpool_policy::Policy;
use kpool_webhook::inject::{Context, Injector};

const BROKER_POD: &str = include_str!("fixtures/broker-pod.json");

fn bench(c: &mut Criterion) {
    let policy = Policy::builtin().expect("built-in policy");
    let injector = Injector::new(std::sync::Arc::new(policy.clone()));
    let captured: serde_json::Value = serde_json::from_str(include_str!(
        "../../tests/fixtures/admission/000-create-kafka-0.json"
    ))
    .expect("fixture");
    let captured_pod = captured["request"]["object"].to_string();

    // Sanity: both pods really get injected, so the benchmark measures the full path.
    for pod in [BROKER_POD, captured_pod.as_str()] {
        let out = injector.inject_json(pod, Context::POD).expect("readable");
        assert!(
            !out.patch.is_empty(),
            "benchmark pod is not injected: {:?}",
            out.decision
        );
    }

    let mut g = c.benchmark_group("inject");
    g.bench_function("broker-pod-10k/text-to-patch-bytes", |b| {
        b.iter(|| {
            let out = injector
                .inject_json(black_box(BROKER_POD), Context::POD)
                .expect("readable");
            black_box(out.patch_json())
        });
    });
    g.bench_function("broker-pod-10k/full-value-parse-then-patch", |b| {
        b.iter(|| {
            let v: serde_json::Value = serde_json::from_str(black_box(BROKER_POD)).expect("json");
            let out = injector.inject(&v, Context::POD).expect("readable");
            black_box(out.patch_json())
        });
    });
    g.bench_function("captured-kafka-0/text-to-patch-bytes", |b| {
        b.iter(|| {
            let out = injector
                .inject_json(black_box(&captured_pod), Context::POD)
                .expect("readable");
            black_box(out.patch_json())
        });
    });
    let injected = {
        let mut v: serde_json::Value = serde_json::from_str(BROKER_POD).expect("json");
        let out = injector.inject(&v, Context::POD).expect("readable");
        kpool_webhook::offline::apply_patch(&mut v, &out.patch).expect("applies");
        v.to_string()
    };
    g.bench_function("broker-pod-10k/already-injected", |b| {
        b.iter(|| {
            let out = injector
                .inject_json(black_box(&injected), Context::POD)
                .expect("readable");
            black_box(out.patch_json())
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
