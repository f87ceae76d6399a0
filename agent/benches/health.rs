//! Health evaluation over 100,000 partitions x RF 6 across 60 brokers.
//! `cargo bench -p kpool-agent --bench health`; target: under 20 ms on one core.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use kpool_agent::health::evaluate;
use kpool_policy::Policy;

#[path = "support.rs"]
mod support;

fn bench(c: &mut Criterion) {
    let policy = Policy::builtin().expect("policy");
    let snapshot = support::big_snapshot();
    let h = evaluate(&snapshot, &policy, 10);
    assert_eq!(h.summary.partitions, 100_000);
    assert!(h.summary.under_replicated.count > 0 && h.racks.zone_skew.count == 0);
    let mut g = c.benchmark_group("health");
    g.sample_size(30);
    g.bench_function("evaluate/100k-partitions-rf6-60-brokers", |b| {
        b.iter(|| black_box(evaluate(black_box(&snapshot), &policy, 10)));
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
