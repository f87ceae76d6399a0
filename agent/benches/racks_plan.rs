//! Rack planning over 100,000 partitions x RF 6 across 60 brokers (2 clusters x 3 zones x
//! 10), 10% of them offenders of four known kinds: a replica on a broker gone from
//! Metadata, a replica in the wrong cluster, two in the wrong cluster, a zone emptied.
//! `cargo bench -p kpool-agent --bench racks_plan`; targets: under 200 ms, under 64 MiB.
//!
//! The setup asserts that the plan's moves equal the lower bound each offender was built
//! with, that every planned list complies, and prints the process's peak RSS while planning
//! (input held), measured by resetting the kernel's high-water mark first.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use kpool_agent::racks::plan::{Assignment, BrokerInput, Layout, PlanOptions, plan};
use kpool_policy::Policy;

const ZONES: [&str; 3] = ["eu-west-1a", "eu-west-1b", "eu-west-1c"];

/// Broker `i` of cell (cluster, zone): ids 0-29 in k8s-a, 100-129 in k8s-b.
fn id(cluster: usize, zone: usize, i: usize) -> i32 {
    (cluster * 100 + zone * 10 + i) as i32
}

fn brokers() -> Vec<BrokerInput> {
    let mut v = Vec::new();
    for (c, cluster) in ["k8s-a", "k8s-b"].iter().enumerate() {
        for (z, zone) in ZONES.iter().enumerate() {
            for i in 0..10 {
                v.push(BrokerInput {
                    id: id(c, z, i),
                    rack: Some(format!("{cluster}-{zone}")),
                    alive: true,
                });
            }
        }
    }
    v
}

/// The partitions, and the moves the offenders need at least (their sum).
fn partitions() -> (Vec<Assignment>, usize) {
    let mut out = Vec::with_capacity(100_000);
    let mut lower_bound = 0;
    for t in 0..100 {
        for p in 0..1000 {
            let n = t * 1000 + p;
            let i = n % 10;
            // 5-7 brokers on from the cell's own: never a broker the partition holds
            let offset = 5 + (n / 10) % 3;
            // one replica per cell: (a,1a) (a,1b) (a,1c) (b,1a) (b,1b) (b,1c)
            let mut replicas: Vec<i32> = (0..6).map(|k| id(k / 3, k % 3, (i + k) % 10)).collect();
            let other = |c: usize, z: usize| id(c, z, (i + offset) % 10);
            if n % 10 == 3 {
                match (n / 10) % 4 {
                    0 => {
                        replicas[5] = 999; // a broker gone from Metadata
                        lower_bound += 1;
                    }
                    1 => {
                        replicas[3] = other(0, 0); // (b,1a) -> (a,1a): 4 in k8s-a
                        lower_bound += 1;
                    }
                    2 => {
                        replicas[3] = other(0, 0); // 5 in k8s-a
                        replicas[4] = other(0, 1);
                        lower_bound += 2;
                    }
                    _ => {
                        replicas[2] = other(0, 0); // zone 1c emptied
                        replicas[5] = other(1, 0);
                        lower_bound += 2;
                    }
                }
            }
            out.push(Assignment {
                topic: format!("topic-{t:03}"),
                partition: p as i32,
                replicas,
                leader: None,
            });
        }
    }
    (out, lower_bound)
}

/// `VmHWM` and `VmRSS` of this process, in MiB.
fn memory() -> Option<(f64, f64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

fn bench(c: &mut Criterion) {
    let policy = Policy::builtin().expect("policy");
    let brokers = brokers();
    let (partitions, lower_bound) = partitions();
    let before = memory();
    // Reset the peak to the current RSS, so the next high-water mark is the planning's.
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let layout = Layout::new(&policy, &brokers, None);
    let first = plan(&layout, &partitions, &PlanOptions::default());
    let after = memory();
    assert_eq!(first.summary.partitions_checked, 100_000);
    assert_eq!(first.summary.offenders, 10_000);
    assert_eq!(first.moves.len(), 10_000, "{:?}", first.infeasible.first());
    assert_eq!(
        first.summary.moves, lower_bound,
        "moves equal the lower bound"
    );
    assert!(first.moves.iter().all(|m| layout.complies(&m.to)));
    if let (Some((_, rss)), Some((peak, _))) = (before, after) {
        println!(
            "racks plan peak RSS: {peak:.1} MiB while planning ({rss:.1} MiB before, input held){}",
            if reset {
                ""
            } else {
                "; peak not reset: the whole run's"
            }
        );
    }
    println!(
        "racks plan: {} offenders, {} moves = lower bound",
        first.summary.offenders, first.summary.moves
    );
    let mut g = c.benchmark_group("racks");
    g.sample_size(20);
    g.bench_function("plan/100k-partitions-rf6-60-brokers-10pct-offenders", |b| {
        b.iter(|| {
            let layout = Layout::new(&policy, black_box(&brokers), None);
            black_box(plan(
                &layout,
                black_box(&partitions),
                &PlanOptions::default(),
            ))
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
