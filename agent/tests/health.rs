//! The health engine against hand-built cluster states, and a brute-force recount over
//! random metadata.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use kpool_agent::health::{BrokerState, Inputs, VerdictMode, evaluate, verdict};
use kpool_agent::nodeview::Outage;
use kpool_agent::overrides::Override;
use kpool_agent::snapshot::{Broker, Partition, Snapshot, Topic};
use kpool_policy::Policy;
use proptest::prelude::*;

fn policy() -> Policy {
    Policy::builtin().expect("built-in policy")
}

/// 6 brokers: ids 0-2 in k8s-a, 100-102 in k8s-b, zones a,b,c.
fn brokers() -> Vec<Broker> {
    let zones = ["eu-west-1a", "eu-west-1b", "eu-west-1c"];
    [("k8s-a", 0), ("k8s-b", 100)]
        .iter()
        .flat_map(|(cluster, base)| {
            zones.iter().enumerate().map(move |(i, z)| Broker {
                id: base + i as i32,
                host: format!("b{}", base + i as i32),
                port: 9092,
                rack: Some(format!("{cluster}-{z}")),
            })
        })
        .collect()
}

const ALL: [i32; 6] = [0, 1, 2, 100, 101, 102];

fn partition(index: i32, leader: i32, replicas: &[i32], isr: &[i32]) -> Partition {
    Partition {
        index,
        leader,
        replicas: replicas.to_vec(),
        isr: isr.to_vec(),
        offline_replicas: vec![],
        adding_replicas: vec![],
    }
}

fn healthy() -> Snapshot {
    Snapshot {
        cluster_id: Some("c1".into()),
        controller_id: Some(0),
        brokers: brokers(),
        topics: vec![
            Topic {
                name: "orders".into(),
                internal: false,
                min_isr: Some(3),
                partitions: (0..8)
                    .map(|i| partition(i, ALL[i as usize % 6], &ALL, &ALL))
                    .collect(),
            },
            Topic {
                name: "payments".into(),
                internal: false,
                min_isr: None,
                partitions: vec![partition(0, 1, &ALL, &ALL)],
            },
        ],
        default_min_isr: Some(3),
    }
}

fn inputs<'a>(h: &'a kpool_agent::health::Health, id: i32) -> Inputs<'a> {
    Inputs {
        health: Some(h),
        age: Duration::from_secs(1),
        stale_after: Duration::from_secs(30),
        broker_id: id,
        mode: VerdictMode::Broker,
        state: None,
        active_override: None,
        pods_outage: None,
    }
}

#[test]
fn healthy_cluster_is_ready_and_restart_safe() {
    let h = evaluate(&healthy(), &policy(), 10);
    assert_eq!(h.summary.partitions, 9);
    assert_eq!(h.summary.under_replicated.count, 0);
    assert_eq!(h.summary.offline.count, 0);
    assert_eq!(h.summary.under_min_isr.count, 0);
    assert_eq!(h.summary.at_min_isr.count, 0);
    assert!(
        h.brokers
            .values()
            .all(|b| b.restart_safe && b.registered && b.replicas == 9)
    );
    assert_eq!(h.broker(0).leaders, 2);
    assert_eq!(h.racks.zone_skew.count, 0);
    assert_eq!(h.racks.cluster_skew.count, 0);
    assert_eq!(h.racks.clusters, ["k8s-a", "k8s-b"]);
    let v = verdict(inputs(&h, 101));
    assert!(v.ready, "{v:?}");
    assert!(
        v.reasons[0].starts_with("ready: broker 101 registered, its 9 replicas in sync"),
        "{v:?}"
    );
}

#[test]
fn a_reassignment_target_catching_up_is_neither_under_replication_nor_lagging() {
    // orders-0 moves from brokers 0,1,2 to 0,1,100: 100 is being added, not in the ISR yet.
    let mut s = healthy();
    let p = &mut s.topics[0].partitions[0];
    p.replicas = vec![0, 1, 2, 100];
    p.isr = vec![0, 1, 2];
    p.adding_replicas = vec![100];
    let h = evaluate(&s, &policy(), 10);
    assert_eq!(h.summary.under_replicated.count, 0);
    assert_eq!(h.broker(100).out_of_sync.count, 0);
    for mode in [VerdictMode::Broker, VerdictMode::Cluster] {
        let mut i = inputs(&h, 100);
        i.mode = mode;
        let v = verdict(i);
        assert!(v.ready, "{mode:?}: {v:?}");
    }
    // The same partition without the reassignment listing (a broker that refused it):
    // broker 100 looks like a lagging replica and the partition under-replicated.
    s.topics[0].partitions[0].adding_replicas.clear();
    let h = evaluate(&s, &policy(), 10);
    assert_eq!(h.summary.under_replicated.count, 1);
    assert_eq!(h.broker(100).out_of_sync.count, 1);
    assert!(!verdict(inputs(&h, 100)).ready);
}

#[test]
fn broker_down_makes_partitions_under_replicated_and_its_pod_not_ready() {
    let mut s = healthy();
    s.brokers.retain(|b| b.id != 2);
    for t in &mut s.topics {
        for p in &mut t.partitions {
            p.isr.retain(|id| *id != 2);
            if p.leader == 2 {
                p.leader = 0;
            }
        }
    }
    let h = evaluate(&s, &policy(), 3);
    assert_eq!(h.summary.under_replicated.count, 9);
    assert_eq!(
        h.summary.under_replicated.first,
        ["orders-0", "orders-1", "orders-2"]
    );
    assert_eq!(h.summary.under_min_isr.count, 0);
    let b2 = h.broker(2);
    assert!(!b2.registered);
    assert_eq!(b2.out_of_sync.count, 9);
    let v = verdict(inputs(&h, 2));
    assert!(!v.ready);
    assert_eq!(v.reasons[0], "broker 2 is not registered with the cluster");
    assert!(v.reasons[1].starts_with("broker 2 has 9 partitions with its replica outside the ISR: orders-0, orders-1, orders-2 (and 6 more)"), "{v:?}");
    // Other brokers stay ready in broker mode, not in cluster mode.
    assert!(verdict(inputs(&h, 1)).ready);
    let mut cluster = inputs(&h, 1);
    cluster.mode = VerdictMode::Cluster;
    let v = verdict(cluster);
    assert!(!v.ready);
    assert_eq!(
        v.reasons[0],
        "9 partitions under-replicated (verdict: cluster): orders-0, orders-1, orders-2 (and 6 more)"
    );
    // ISR 5 > min ISR 3: everyone may still restart.
    assert!(h.brokers.values().all(|b| b.restart_safe));
}

#[test]
fn under_min_isr_and_at_min_isr_and_restart_safety() {
    let mut s = healthy();
    // orders-4: ISR 2 < 3 — unsafe for every replica holder; orders-7: ISR == 3 — unsafe for ISR members.
    s.topics[0].partitions[4].isr = vec![0, 1];
    s.topics[0].partitions[4].leader = 0;
    s.topics[0].partitions[7].isr = vec![100, 101, 102];
    s.topics[0].partitions[7].leader = 100;
    let h = evaluate(&s, &policy(), 10);
    assert_eq!(h.summary.under_min_isr.first, ["orders-4"]);
    assert_eq!(h.summary.at_min_isr.first, ["orders-7"]);
    assert_eq!(h.broker(0).restart_blockers.first, ["orders-4"]);
    assert_eq!(
        h.broker(100).restart_blockers.first,
        ["orders-4", "orders-7"]
    );
    assert_eq!(h.broker(2).restart_blockers.first, ["orders-4"]);
    assert!(!h.broker(2).restart_safe);
    let v = verdict(inputs(&h, 101));
    assert!(!v.ready);
    assert!(
        v.reasons
            .contains(&"1 partition under min ISR: orders-4".to_owned()),
        "{v:?}"
    );
}

#[test]
fn partitions_with_rf_at_or_below_min_isr_never_block() {
    let mut s = healthy();
    s.topics.push(Topic {
        name: "tiny".into(),
        internal: false,
        min_isr: Some(3),
        partitions: vec![partition(0, 0, &[0, 1, 2], &[0, 1, 2])],
    });
    let h = evaluate(&s, &policy(), 10);
    assert_eq!(h.summary.at_min_isr.first, ["tiny-0"]);
    assert!(h.broker(0).restart_safe);
}

#[test]
fn offline_partition_no_leader_or_dead_leader() {
    let mut s = healthy();
    s.topics[0].partitions[3].leader = -1;
    s.topics[0].partitions[5].leader = 77;
    let h = evaluate(&s, &policy(), 10);
    assert_eq!(h.summary.offline.first, ["orders-3", "orders-5"]);
    assert_eq!(
        h.summary.under_min_isr.first,
        ["orders-3"],
        "no leader is under min ISR too"
    );
    let v = verdict(inputs(&h, 0));
    assert!(
        v.reasons
            .iter()
            .any(|r| r == "2 partitions offline: orders-3, orders-5"),
        "{v:?}"
    );
}

#[test]
fn topic_without_min_isr_uses_the_broker_default_then_kafkas() {
    let mut s = healthy();
    s.topics[1].partitions[0].isr = vec![1, 2];
    let h = evaluate(&s, &policy(), 10);
    assert_eq!(
        h.summary.under_min_isr.first,
        ["payments-0"],
        "broker default 3 applies"
    );
    s.default_min_isr = None;
    let h = evaluate(&s, &policy(), 10);
    assert_eq!(
        h.summary.under_min_isr.count, 0,
        "Kafka's default 1 applies"
    );
}

#[test]
fn rack_skew_is_named_per_dimension() {
    let mut s = healthy();
    // orders-0: 4 replicas in k8s-b (max 3); orders-1: 3 in zone b (max 2).
    s.brokers.push(Broker {
        id: 3,
        host: "b3".into(),
        port: 9092,
        rack: Some("k8s-b-eu-west-1b".into()),
    });
    s.topics[0].partitions[0].replicas = vec![100, 101, 102, 3, 0, 2];
    s.topics[0].partitions[1].replicas = vec![1, 101, 3, 0, 2, 100];
    s.brokers.push(Broker {
        id: 4,
        host: "b4".into(),
        port: 9092,
        rack: Some("nonsense".into()),
    });
    let h = evaluate(&s, &policy(), 10);
    assert_eq!(
        h.racks.cluster_skew.first,
        ["orders-0: 4 of 6 replicas in cluster k8s-b (the rule allows 3)"]
    );
    assert_eq!(
        h.racks.zone_skew.first,
        ["orders-1: 3 of 6 replicas in zone eu-west-1b (the rule allows 2)"]
    );
    assert_eq!(h.racks.unknown_rack_brokers, [4]);
}

#[test]
fn the_report_judges_by_the_planners_rule_floor_and_cells_included() {
    let mut s = healthy();
    // RF 4 as (2, 2, 0) over the zones: no zone over ceil(4/3) = 2, but zone c under
    // floor 1; the clusters hold 2 + 2, fine.
    s.topics[0].partitions[2].replicas = vec![0, 1, 100, 101];
    // RF 6 as 3 per cluster and 2 per zone, but (2,1,0)/(0,1,2) over the cells: fine per
    // dimension, an offender per cell.
    s.brokers.push(Broker {
        id: 3,
        host: "b3".into(),
        port: 9092,
        rack: Some("k8s-a-eu-west-1a".into()),
    });
    s.brokers.push(Broker {
        id: 103,
        host: "b103".into(),
        port: 9092,
        rack: Some("k8s-b-eu-west-1c".into()),
    });
    s.topics[0].partitions[3].replicas = vec![0, 3, 1, 101, 102, 103];
    let h = evaluate(&s, &policy(), 10);
    assert_eq!(
        h.racks.zone_skew.first,
        ["orders-2: 0 of 4 replicas in zone eu-west-1c (the rule allows 1-2)"]
    );
    assert_eq!(h.racks.cluster_skew.count, 0);
    assert_eq!(h.racks.cell_skew.count, 0, "perDimension: cells are free");
    let per_cell = Policy::from_yaml(
        &kpool_policy::DEFAULT_POLICY_YAML.replacen("rule: perDimension", "rule: perCell", 1),
        "p",
    )
    .expect("valid");
    let h = evaluate(&s, &per_cell, 10);
    assert_eq!(
        h.racks.cell_skew.first,
        ["orders-3: 2 of 6 replicas in cell k8s-b/eu-west-1c (the rule allows 1)"],
        "orders-2 holds at most 1 per cell (RF 4 over 6 cells: 0-1)"
    );
    // A replica on a broker gone from Metadata: judged on over-full values only.
    s.topics[0].partitions[2].replicas = vec![0, 1, 100, 999];
    let h = evaluate(&s, &policy(), 10);
    assert_eq!(h.racks.zone_skew.count, 0, "{:?}", h.racks.zone_skew);
}

#[test]
fn stale_missing_state_and_override() {
    let h = evaluate(&healthy(), &policy(), 10);
    let mut i = inputs(&h, 0);
    i.age = Duration::from_secs(45);
    let v = verdict(i);
    assert!(!v.ready);
    assert_eq!(
        v.reasons,
        ["stale: last successful Kafka poll 45s ago (bound 30s)"]
    );
    let mut i = inputs(&h, 0);
    i.health = None;
    assert_eq!(verdict(i).reasons, ["stale: no successful Kafka poll yet"]);
    let mut i = inputs(&h, 0);
    i.state = Some(BrokerState::from_code(2));
    let v = verdict(i);
    assert_eq!(
        v.reasons,
        ["broker 0 is recovering its logs (BrokerState 2)"]
    );
    let o = Override {
        until: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        until_text: "2026-11-21T13:00:00Z".into(),
        reason: "INC-42".into(),
    };
    i.active_override = Some(&o);
    let v = verdict(i);
    assert!(v.ready);
    assert_eq!(v.reasons, ["override until 2026-11-21T13:00:00Z: INC-42"]);
    assert!(!v.without_override.as_ref().expect("kept").ready);
    let mut i = inputs(&h, 0);
    i.state = Some(BrokerState::Running);
    assert!(verdict(i).reasons[0].starts_with("ready: broker 0 registered and running"));
}

#[test]
fn kubernetes_outage_keeps_the_verdict_within_the_bound_then_is_stale_even_with_an_override() {
    let h = evaluate(&healthy(), &policy(), 10);
    let o = Override {
        until: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        until_text: "2026-11-21T13:00:00Z".into(),
        reason: "INC-42".into(),
    };
    let short = Outage {
        duration: Duration::from_secs(29),
        last_error: "connection refused".into(),
        failures: 3,
    };
    let mut i = inputs(&h, 0);
    i.pods_outage = Some(&short);
    assert!(verdict(i).ready, "within the bound the last verdict stands");
    i.active_override = Some(&o);
    assert_eq!(
        verdict(i).override_until.as_deref(),
        Some("2026-11-21T13:00:00Z")
    );

    let long = Outage {
        duration: Duration::from_secs(31),
        ..short.clone()
    };
    let mut i = inputs(&h, 0);
    i.pods_outage = Some(&long);
    i.active_override = Some(&o);
    let v = verdict(i);
    assert!(!v.ready);
    assert_eq!(v.override_until, None);
    assert_eq!(
        v.reasons,
        [
            "stale: no contact with the Kubernetes API for 31s (bound 30s; 3 failed attempts, last: connection refused)"
        ]
    );
}

// ---- brute-force recount ----

prop_compose! {
    fn random_snapshot()(
        broker_ids in prop::collection::btree_set(0i32..12, 1..10),
        topics in prop::collection::vec((prop::option::of(1i32..5), prop::collection::vec((prop::collection::vec(0i32..14, 1..7), any::<u64>(), -2i32..14, any::<u64>()), 1..12)), 1..5),
        default_min in prop::option::of(1i32..4),
    ) -> Snapshot {
        let zones = ["eu-west-1a", "eu-west-1b", "eu-west-1c"];
        let brokers: Vec<Broker> = broker_ids.iter().map(|id| Broker {
            id: *id, host: "h".into(), port: 1,
            rack: Some(format!("{}-{}", if id % 2 == 0 { "k8s-a" } else { "k8s-b" }, zones[(*id as usize) % 3])),
        }).collect();
        let topics = topics.into_iter().enumerate().map(|(ti, (min_isr, parts))| Topic {
            name: format!("t{ti}"),
            internal: false,
            min_isr,
            partitions: parts.into_iter().enumerate().map(|(pi, (mut replicas, isr_mask, leader, adding_mask))| {
                replicas.sort_unstable();
                replicas.dedup();
                let isr: Vec<i32> = replicas.iter().enumerate().filter(|(i, _)| isr_mask >> i & 1 == 1).map(|(_, r)| *r).collect();
                // About one replica in four is being added by a reassignment.
                let adding_mask = adding_mask & (adding_mask >> 8);
                let adding_replicas: Vec<i32> = replicas.iter().enumerate().filter(|(i, _)| adding_mask >> i & 1 == 1).map(|(_, r)| *r).collect();
                Partition { index: pi as i32, leader: if leader < 0 { -1 } else { leader }, replicas, isr, offline_replicas: vec![], adding_replicas }
            }).collect(),
        }).collect();
        Snapshot { cluster_id: None, controller_id: None, brokers, topics, default_min_isr: default_min }
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Recount {
    urp: usize,
    offline: usize,
    under_min: usize,
    at_min: usize,
    per_broker: BTreeMap<i32, (usize, usize, usize, usize)>, // replicas, out of sync, leaders, blockers
    zone_skew: usize,
    cluster_skew: usize,
}

fn recount(s: &Snapshot, policy: &Policy) -> Recount {
    let live: HashSet<i32> = s.brokers.iter().map(|b| b.id).collect();
    let rack_of = |id: i32| {
        s.brokers
            .iter()
            .find(|b| b.id == id)
            .and_then(|b| b.rack.clone())
            .and_then(|r| {
                policy
                    .parse_rack(&r)
                    .map(|(c, z)| (c.to_owned(), z.to_owned()))
            })
    };
    let clusters: HashSet<String> = s
        .brokers
        .iter()
        .filter_map(|b| rack_of(b.id))
        .map(|(c, _)| c)
        .collect();
    let mut r = Recount::default();
    for t in &s.topics {
        let min = t.min_isr.or(s.default_min_isr).unwrap_or(1);
        for p in &t.partitions {
            let isr = p.isr.len() as i32;
            let settled = p
                .replicas
                .iter()
                .filter(|b| !p.adding_replicas.contains(b))
                .count();
            if p.isr.len() < settled {
                r.urp += 1;
            }
            if p.leader == -1 || !live.contains(&p.leader) {
                r.offline += 1;
            }
            if p.leader == -1 || isr < min {
                r.under_min += 1;
            }
            if isr == min {
                r.at_min += 1;
            }
            if p.leader >= 0 {
                r.per_broker.entry(p.leader).or_default().2 += 1;
            }
            for b in &p.replicas {
                let e = r.per_broker.entry(*b).or_default();
                e.0 += 1;
                if !p.isr.contains(b) && !p.adding_replicas.contains(b) {
                    e.1 += 1;
                }
                if p.replicas.len() as i32 > min && (isr < min || (isr == min && p.isr.contains(b)))
                {
                    e.3 += 1;
                }
            }
            let rf = p.replicas.len();
            let zones: Vec<usize> = policy
                .spec()
                .zones
                .iter()
                .map(|z| {
                    p.replicas
                        .iter()
                        .filter(|b| rack_of(**b).is_some_and(|(_, rz)| &rz == z))
                        .count()
                })
                .collect();
            // The rule: within floor/ceil of rf over the values; a partition with a replica
            // on an unplaced broker is judged on over-full values only.
            let placed = p.replicas.iter().all(|b| rack_of(*b).is_some());
            let off = |counts: &[usize]| {
                let (lo, hi) = (rf / counts.len(), rf.div_ceil(counts.len()));
                counts.iter().any(|n| *n > hi || (placed && *n < lo))
            };
            if off(&zones) {
                r.zone_skew += 1;
            }
            let cl: Vec<usize> = clusters
                .iter()
                .map(|c| {
                    p.replicas
                        .iter()
                        .filter(|b| rack_of(**b).is_some_and(|(rc, _)| &rc == c))
                        .count()
                })
                .collect();
            if !cl.is_empty() && off(&cl) {
                r.cluster_skew += 1;
            }
        }
    }
    for id in &live {
        r.per_broker.entry(*id).or_default();
    }
    r
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn counts_match_a_brute_force_recount(s in random_snapshot()) {
        let policy = policy();
        let h = evaluate(&s, &policy, 3);
        let want = recount(&s, &policy);
        let got = Recount {
            urp: h.summary.under_replicated.count,
            offline: h.summary.offline.count,
            under_min: h.summary.under_min_isr.count,
            at_min: h.summary.at_min_isr.count,
            per_broker: h.brokers.values().map(|b| (b.id, (b.replicas, b.out_of_sync.count, b.leaders, b.restart_blockers.count))).collect(),
            zone_skew: h.racks.zone_skew.count,
            cluster_skew: h.racks.cluster_skew.count,
        };
        prop_assert_eq!(got, want);
        for b in h.brokers.values() {
            prop_assert_eq!(b.restart_safe, b.restart_blockers.count == 0);
            prop_assert!(b.out_of_sync.first.len() <= 3);
        }
    }
}
