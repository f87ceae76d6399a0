//! The planner against a brute-force search on small clusters, and its named behaviours.

use kpool_policy::Policy;
use proptest::prelude::*;

use super::plan::{Assignment, BrokerInput, Layout, Plan, PlanOptions, plan};

const ZONE_NAMES: [&str; 4] = ["za", "zb", "zc", "zd"];

/// The built-in policy with `zones` zones named za, zb, ...; racks are `{cluster}-{zone}`.
fn policy(zones: usize) -> Policy {
    policy_with(zones, false)
}

/// [`policy`], with `racks.rule: perCell` when `per_cell`.
fn policy_with(zones: usize, per_cell: bool) -> Policy {
    let yaml = kpool_policy::DEFAULT_POLICY_YAML.replace(
        "zones: [eu-west-1a, eu-west-1b, eu-west-1c]",
        &format!("zones: [{}]", ZONE_NAMES[..zones].join(", ")),
    );
    assert_ne!(
        yaml,
        kpool_policy::DEFAULT_POLICY_YAML,
        "the example changed"
    );
    let yaml = if per_cell {
        assert!(yaml.contains("rule: perDimension"), "the example changed");
        yaml.replacen("rule: perDimension", "rule: perCell", 1)
    } else {
        yaml
    };
    Policy::from_yaml(&yaml, "test").expect("policy")
}

fn broker(id: i32, cluster: usize, zone: usize, alive: bool) -> BrokerInput {
    BrokerInput {
        id,
        rack: Some(format!("c{cluster}-{}", ZONE_NAMES[zone])),
        alive,
    }
}

fn part(topic: &str, partition: i32, replicas: &[i32]) -> Assignment {
    Assignment {
        topic: topic.to_owned(),
        partition,
        replicas: replicas.to_vec(),
        leader: None,
    }
}

/// 2 clusters x 3 zones, `per_cell` brokers each: broker id = cluster*100 + zone*10 + i.
fn grid(per_cell: usize) -> Vec<BrokerInput> {
    let mut v = Vec::new();
    for c in 0..2 {
        for z in 0..3 {
            for i in 0..per_cell {
                v.push(broker((c * 100 + z * 10 + i) as i32, c, z, true));
            }
        }
    }
    v
}

/// A small cluster for the brute force: brokers with their cell, alive or not.
#[derive(Debug, Clone)]
struct Small {
    clusters: usize,
    zones: usize,
    /// (id, cluster, zone, alive)
    brokers: Vec<(i32, usize, usize, bool)>,
    partitions: Vec<Vec<i32>>,
    /// `racks.rule: perCell`: every cell bounded too.
    per_cell: bool,
}

impl Small {
    fn inputs(&self) -> Vec<BrokerInput> {
        self.brokers
            .iter()
            .map(|&(id, c, z, alive)| broker(id, c, z, alive))
            .collect()
    }

    fn cell(&self, id: i32) -> Option<(usize, usize, bool)> {
        self.brokers
            .iter()
            .find(|b| b.0 == id)
            .map(|&(_, c, z, a)| (c, z, a))
    }

    /// The rule, written out independently of the planner.
    fn complies(&self, replicas: &[i32]) -> bool {
        let rf = replicas.len();
        let mut rows = vec![0; self.clusters];
        let mut cols = vec![0; self.zones];
        let mut cells = vec![0; self.clusters * self.zones];
        for (i, id) in replicas.iter().enumerate() {
            if replicas[..i].contains(id) {
                return false;
            }
            match self.cell(*id) {
                Some((c, z, true)) => {
                    rows[c] += 1;
                    cols[z] += 1;
                    cells[c * self.zones + z] += 1;
                }
                _ => return false,
            }
        }
        let ok = |n: usize, parts: usize| n * parts >= rf - rf % parts && n <= rf.div_ceil(parts);
        rf > 0
            && rows.iter().all(|n| ok(*n, self.clusters))
            && cols.iter().all(|n| ok(*n, self.zones))
            && (!self.per_cell || cells.iter().all(|n| ok(*n, cells.len())))
    }

    /// Every valid replica set: (moves from `current`, whether it keeps `current[0]`);
    /// `None` when there is none.
    fn brute(&self, current: &[i32]) -> Option<(usize, bool)> {
        let live: Vec<i32> = self.brokers.iter().filter(|b| b.3).map(|b| b.0).collect();
        let rf = current.len();
        let mut best: Option<(usize, bool)> = None;
        let mut pick = Vec::with_capacity(rf);
        self.subsets(&live, 0, rf, &mut pick, &mut |set| {
            if !self.complies(set) {
                return;
            }
            let moves = set.iter().filter(|b| !current.contains(b)).count();
            let keeps = set.contains(&current[0]);
            best = Some(match best {
                None => (moves, keeps),
                Some((m, _)) if moves < m => (moves, keeps),
                Some((m, k)) if moves == m => (m, k || keeps),
                Some(b) => b,
            });
        });
        best
    }

    fn subsets(
        &self,
        live: &[i32],
        from: usize,
        left: usize,
        pick: &mut Vec<i32>,
        f: &mut dyn FnMut(&[i32]),
    ) {
        if left == 0 {
            f(pick);
            return;
        }
        for i in from..live.len() {
            if live.len() - i < left {
                break;
            }
            pick.push(live[i]);
            self.subsets(live, i + 1, left - 1, pick, f);
            pick.pop();
        }
    }
}

fn small() -> impl Strategy<Value = Small> {
    (1usize..=3, 2usize..=3)
        .prop_flat_map(|(clusters, zones)| {
            let cells = clusters * zones;
            (
                Just(clusters),
                Just(zones),
                prop::collection::vec(1usize..=3, cells),
                prop::collection::vec(prop::bool::weighted(0.8), cells * 3),
                2usize..=6,
            )
        })
        .prop_flat_map(|(clusters, zones, per_cell, alive, rf)| {
            let mut brokers = Vec::new();
            for (k, n) in per_cell.iter().enumerate() {
                for i in 0..*n {
                    let id = (k * 10 + i) as i32;
                    brokers.push((id, k / zones, k % zones, alive[k * 3 + i]));
                }
            }
            // Replicas drawn from every broker, plus id 999 that no broker list names.
            let mut pool: Vec<i32> = brokers.iter().map(|b| b.0).collect();
            pool.push(999);
            let rf = rf.min(pool.len());
            let partitions = prop::collection::vec(
                Just(pool.clone())
                    .prop_shuffle()
                    .prop_map(move |p| p[..rf].to_vec()),
                1..=4,
            );
            (
                Just(clusters),
                Just(zones),
                Just(brokers),
                partitions,
                any::<bool>(),
            )
        })
        .prop_map(|(clusters, zones, brokers, partitions, per_cell)| Small {
            clusters,
            zones,
            brokers,
            partitions,
            per_cell,
        })
}

fn find<'p>(plan: &'p Plan, topic: &str, partition: i32) -> Option<&'p super::plan::PartitionMove> {
    plan.moves
        .iter()
        .find(|m| m.topic == topic && m.partition == partition)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Against every replica set a brute force can list: the rule holds after the plan,
    /// moves are the minimum, the leader stays first when a minimal set keeps it, no
    /// duplicate or dead destination, RF preserved; infeasible exactly when no valid set exists.
    #[test]
    fn plans_match_the_brute_force(s in small()) {
        let policy = policy_with(s.zones, s.per_cell);
        let brokers = s.inputs();
        let layout = Layout::new(&policy, &brokers, None);
        let parts: Vec<Assignment> = s
            .partitions
            .iter()
            .enumerate()
            .map(|(i, r)| part("t", i as i32, r))
            .collect();
        let plan = plan(&layout, &parts, &PlanOptions::default());
        let mut moves = 0;
        for p in &parts {
            let brute = s.brute(&p.replicas);
            let planned = find(&plan, &p.topic, p.partition);
            let infeasible = plan.infeasible.iter().any(|i| i.partition == p.partition);
            match brute {
                None => prop_assert!(infeasible && planned.is_none(), "{p:?}: no valid set, planned {planned:?}"),
                Some((0, _)) => {
                    prop_assert!(s.complies(&p.replicas));
                    prop_assert!(planned.is_none() && !infeasible, "{p:?} complies, planned {planned:?}");
                }
                Some((min, keeps)) => {
                    prop_assert!(!infeasible, "{p:?}: feasible, reported infeasible: {:?}", plan.infeasible);
                    let m = planned.expect("an offender is planned");
                    prop_assert!(s.complies(&m.to), "{m:?} breaks the rule");
                    prop_assert_eq!(m.to.len(), p.replicas.len());
                    prop_assert_eq!(m.moves, min, "{:?}", m);
                    prop_assert_eq!(m.to.iter().filter(|b| !m.from.contains(b)).count(), min);
                    prop_assert!(m.to.iter().all(|b| s.cell(*b).is_some_and(|c| c.2)), "{m:?}: a dead destination");
                    prop_assert_eq!(&m.from, &p.replicas);
                    if keeps {
                        prop_assert_eq!(m.to[0], p.replicas[0], "{:?}: the leader moved", m);
                    }
                    moves += m.moves;
                }
            }
            prop_assert!(layout.complies(&p.replicas) == s.complies(&p.replicas));
        }
        prop_assert_eq!(plan.summary.moves, moves);
        prop_assert_eq!(plan.summary.partitions_checked, parts.len());
    }
}

#[test]
fn rf6_over_2x3_fixes_a_doubled_zone_with_one_move_keeping_the_leader() {
    let policy = policy(3);
    let layout = Layout::new(&policy, &grid(2), None);
    // Zone za twice in cluster 0, zone zc missing there: 3 per cluster but za has 3.
    let p = part("t", 0, &[0, 1, 10, 100, 110, 120]);
    let plan = plan(&layout, &[p], &PlanOptions::default());
    assert_eq!(plan.moves.len(), 1, "{plan:?}");
    let m = &plan.moves[0];
    assert_eq!(m.moves, 1);
    assert_eq!(m.to[0], 0, "the leader stays first");
    assert!(layout.complies(&m.to), "{m:?}");
    // broker 1 (not the leader) goes, to zone zc of cluster 0
    assert!(
        !m.to.contains(&1) && (m.to.contains(&20) || m.to.contains(&21)),
        "{m:?}"
    );
    assert_eq!(plan.summary.offenders, 1);
}

#[test]
fn a_compliant_cluster_plans_nothing() {
    let policy = policy(3);
    let layout = Layout::new(&policy, &grid(1), None);
    let parts = [
        part("t", 0, &[0, 10, 20, 100, 110, 120]),
        part("t", 1, &[120, 0, 110, 10, 100, 20]),
    ];
    let plan = plan(&layout, &parts, &PlanOptions::default());
    assert_eq!(
        plan,
        Plan {
            summary: super::plan::Summary {
                partitions_checked: 2,
                ..Default::default()
            },
            ..Default::default()
        }
    );
}

#[test]
fn offline_replicas_move_first_and_to_the_least_loaded_brokers() {
    let policy = policy(3);
    let mut brokers = grid(3);
    // broker 1 (cluster 0, zone za) is dead
    brokers[1].alive = false;
    let layout = Layout::new(&policy, &brokers, None);
    let mut parts = vec![
        // an offender without offline replicas first in the input
        part("t", 0, &[0, 2, 10, 100, 110, 120]),
    ];
    // ten partitions with a replica on dead broker 1: they go to brokers 0 and 2 of cell
    // (c0, za), alternating as loads change (broker 0 leads partition 0, 2 is in it).
    for i in 1..=10 {
        parts.push(part("t", i, &[1, 10, 20, 100, 110, 120]));
    }
    let plan = plan(&layout, &parts, &PlanOptions::default());
    assert_eq!(plan.moves.len(), 11);
    assert!(
        plan.moves[..10].iter().all(|m| m.offline == 1),
        "offline first: {plan:?}"
    );
    assert_eq!(plan.moves[10].partition, 0);
    let to0 = plan.moves[..10]
        .iter()
        .filter(|m| m.to.contains(&0))
        .count();
    let to2 = plan.moves[..10]
        .iter()
        .filter(|m| m.to.contains(&2))
        .count();
    assert_eq!((to0, to2), (5, 5), "destinations spread: {plan:?}");
    // the dead leader's partitions lead with a replica that stayed
    assert!(plan.moves[..10].iter().all(|m| m.to[0] == 10), "{plan:?}");
    assert_eq!(plan.summary.offline_moves, 10);
}

#[test]
fn the_metadata_leader_stays_first_when_it_is_not_the_first_replica() {
    let policy = policy(3);
    let layout = Layout::new(&policy, &grid(2), None);
    let mut p = part("t", 0, &[0, 1, 10, 100, 110, 120]);
    p.leader = Some(1);
    let plan = plan(&layout, &[p], &PlanOptions::default());
    let m = &plan.moves[0];
    assert_eq!(m.to[0], 1, "{m:?}");
    assert!(
        !m.to.contains(&0),
        "the other za replica of cluster 0 moved: {m:?}"
    );
}

#[test]
fn too_few_live_brokers_in_a_zone_is_infeasible_with_the_reason() {
    let policy = policy(3);
    let mut brokers = grid(2);
    // zone zc has one live broker left (cluster 1's 121); RF 6 needs 2 there
    for b in &mut brokers {
        if [20, 21, 120].contains(&b.id) {
            b.alive = false;
        }
    }
    let layout = Layout::new(&policy, &brokers, None);
    let plan = plan(
        &layout,
        &[part("t", 0, &[0, 10, 20, 100, 110, 120])],
        &PlanOptions::default(),
    );
    assert!(plan.moves.is_empty(), "not half-fixed: {plan:?}");
    assert_eq!(plan.infeasible.len(), 1);
    assert_eq!(
        plan.infeasible[0].reason,
        "zone zc has 1 live broker, the rule needs 2 replicas there (RF 6 over 3 zones)"
    );
}

#[test]
fn max_moves_takes_whole_partitions_in_plan_order() {
    let policy = policy(3);
    let layout = Layout::new(&policy, &grid(2), None);
    let parts = [
        part("t", 0, &[0, 1, 10, 11, 100, 110]),  // 2 moves
        part("t", 1, &[0, 1, 10, 100, 110, 120]), // 1 move
        part("t", 2, &[0, 1, 10, 100, 110, 120]), // 1 move
    ];
    let plan = plan(&layout, &parts, &PlanOptions { max_moves: Some(1) });
    assert_eq!(plan.moves.len(), 1);
    assert_eq!(plan.moves[0].partition, 1);
    assert_eq!((plan.summary.left_out, plan.summary.left_out_moves), (2, 3));
    assert_eq!(plan.summary.offenders, 3);
}

#[test]
fn fixed_clusters_keep_a_cluster_whose_brokers_are_gone() {
    let policy = policy(3);
    // only cluster c0's brokers are in the list: planning over c0 alone would pile all six
    // replicas there; with both clusters fixed it is infeasible instead
    let brokers: Vec<BrokerInput> = grid(2).into_iter().filter(|b| b.id < 100).collect();
    let parts = [part("t", 0, &[0, 10, 20, 100, 110, 120])];
    let alone = plan(
        &Layout::new(&policy, &brokers, None),
        &parts,
        &PlanOptions::default(),
    );
    assert_eq!(alone.summary.moves, 3, "{alone:?}");
    let fixed = ["c0".to_owned(), "c1".to_owned()];
    let layout = Layout::new(&policy, &brokers, Some(&fixed));
    let plan = plan(&layout, &parts, &PlanOptions::default());
    assert_eq!(plan.summary.infeasible, 1, "{plan:?}");
    assert!(
        plan.infeasible[0]
            .reason
            .contains("cluster c1 has 0 live brokers"),
        "{plan:?}"
    );
}

/// The bound documented in the module docs: targets and search steps for clusters <= 3,
/// zones <= 4, RF <= 8 when every cell holds enough live brokers.
#[test]
fn target_enumeration_stays_within_the_documented_bound() {
    let mut worst = (0, 0, 0, 0, 0);
    let mut most_steps = 0;
    for zones in 1..=4 {
        let policy = policy(zones);
        for clusters in 1..=3 {
            let mut brokers = Vec::new();
            for c in 0..clusters {
                for z in 0..zones {
                    for i in 0..8 {
                        brokers.push(broker((c * 100 + z * 10 + i) as i32, c, z, true));
                    }
                }
            }
            let layout = Layout::new(&policy, &brokers, None);
            for rf in 1..=8 {
                let (targets, steps) = layout.target_stats(rf);
                if targets > worst.0 {
                    worst = (targets, steps, clusters, zones, rf);
                }
                most_steps = most_steps.max(steps);
            }
        }
    }
    assert_eq!((worst.0, most_steps), (612, 3_999), "{worst:?}");
}

/// Fewest moves comes first: when only a target of more moves keeps the leader's cell, the
/// leader moves, and the first replica that stays leads the new list.
#[test]
fn fewest_moves_wins_over_keeping_the_leader() {
    let policy = policy(3);
    let layout = Layout::new(&policy, &grid(2), None);
    // c0: (0,0,2), c1: (1,2,1); the leader 120 is c1/zc's only replica. One move takes it
    // to c0/za; keeping it takes two (to all-ones: c0/zc -> c0/za, c1/zb -> c0/zb).
    let p = part("t", 0, &[120, 20, 21, 100, 110, 111]);
    let plan = plan(&layout, &[p], &PlanOptions::default());
    let m = &plan.moves[0];
    assert_eq!(m.moves, 1, "{m:?}");
    assert!(
        !m.to.contains(&120) && (m.to.contains(&0) || m.to.contains(&1)),
        "{m:?}"
    );
    assert_eq!(m.to[0], 20, "{m:?}");
    assert!(layout.complies(&m.to));
}

#[test]
fn per_cell_puts_one_replica_in_every_cell_at_rf_6() {
    // (2,1,0)/(0,1,2) keeps 2 per zone and 3 per cluster: fine per dimension, an offender
    // per cell, fixed with the fewest moves to one replica per cell.
    let brokers = grid(2);
    let replicas = [0, 1, 10, 110, 120, 121];
    let dimension = Layout::new(&policy(3), &brokers, None);
    assert!(dimension.complies(&replicas));
    let cell = Layout::new(&policy_with(3, true), &brokers, None);
    assert!(!cell.complies(&replicas));
    let p = plan(&cell, &[part("t", 0, &replicas)], &PlanOptions::default());
    let m = find(&p, "t", 0).expect("planned");
    assert_eq!(m.moves, 2, "{m:?}");
    assert!(cell.complies(&m.to), "{m:?}");
    assert_eq!(m.to[0], 0, "the leader stays first");
    // A cell with no live broker cannot hold its one replica: infeasible, named.
    let mut gone = grid(2);
    gone.retain(|b| b.id != 120 && b.id != 121);
    let layout = Layout::new(&policy_with(3, true), &gone, None);
    let p = plan(
        &layout,
        &[part("t", 0, &[0, 10, 20, 100, 110, 999])],
        &PlanOptions::default(),
    );
    assert_eq!(p.infeasible.len(), 1, "{p:?}");
    assert!(
        p.infeasible[0]
            .reason
            .contains("cell c1/zc has 0 live brokers, racks.rule perCell needs 1 replica there"),
        "{}",
        p.infeasible[0].reason
    );
}
