//! One overhead sample (cgroup tree of 110 pods + sysinfo + the split), and one guard round's
//! decision over 110 pods. `cargo bench -p kpool-agent --bench overhead`; target: a sample
//! under 5 ms.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use kpool_agent::guard::{self, Guard, decide};
use kpool_agent::overhead::{Sampler, allocatable_of, cgroup};
use kpool_policy::Policy;
use kpool_policy::model::Mode;

#[path = "overhead_support.rs"]
mod support;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    support::cgroup_tree(dir.path());
    let node = support::node();
    let allocatable = allocatable_of(&node);
    let brokers = BTreeSet::from([support::uid(0)]);
    let mut sampler = Sampler::new(dir.path()).expect("sampler");
    let o = sampler.sample(&brokers, allocatable).expect("sample");
    assert_eq!(o.broker_pods + o.other_pod_count, support::PODS);

    let mut g = c.benchmark_group("overhead");
    g.sample_size(50);
    g.bench_function("sample/110-pods-systemd", |b| {
        b.iter(|| black_box(sampler.sample(&brokers, allocatable).expect("sample")));
    });
    g.bench_function("cgroup-scan/110-pods-systemd", |b| {
        b.iter(|| black_box(cgroup::scan(dir.path()).expect("scan")));
    });
    g.finish();

    let policy = Policy::builtin().expect("policy");
    let pods = support::pods();
    let node_facts = guard::node_facts(&node);
    let mut g = c.benchmark_group("guard");
    g.bench_function("round-decision/110-pods-compliant", |b| {
        let mut guard = Guard::new(Duration::from_secs(300));
        b.iter(|| {
            let facts: Vec<_> = pods
                .iter()
                .map(|p| guard::pod_facts(p, Some(true)))
                .collect();
            let found = decide::violations(&policy, &node_facts, &facts);
            black_box(guard.decide(Mode::Enforce, found, Instant::now()))
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
