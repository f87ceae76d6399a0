//! The rack executor's decisions: pure, a plan and what the cluster says at each poll in,
//! what to send next out. The I/O shell ([`super::apply`]) observes, calls
//! [`Executor::step`], sends what it returns and reports the answers back; every rule is
//! here, where a unit test can reach it.
//!
//! **State comes from the cluster.** Each poll, every move's state is read from Metadata
//! (the replicas now) and ListPartitionReassignments (what is in flight): a partition
//! already at its target is done, one in flight toward the same target is ours (submitted
//! by this run, or *adopted*: submitted by a run that crashed), one in flight toward
//! anything else is someone else's and left alone, as is one whose replicas changed since
//! the plan. So a re-run after a crash continues where the cluster is, and never sends a
//! second copy of a move: nothing already in flight is submitted again.
//!
//! **Batches.** A pending move is submitted when every broker it adds a replica to or
//! removes one from has fewer than `max_per_broker` moves in or out in flight (counting
//! every reassignment in flight, someone else's too), in plan order (the planner puts
//! partitions with offline replicas first); a move that does not fit waits for the next
//! poll while later ones that fit go. No move is submitted while any partition is offline
//! or under min ISR: the executor pauses, and resumes once the health engine says the
//! cluster is whole again (moves already in flight carry on; Kafka cannot pause them).
//!
//! **Throttles** (with a rate): before a move is submitted, `leader.` and
//! `follower.replication.throttled.rate` are set on every broker it involves, its
//! pre-existing replicas are added to the topic's `leader.replication.throttled.replicas`
//! and its new ones to `follower.replication.throttled.replicas` (APPEND, so entries other
//! tools set stay). Throttles are cleared as moves finish: a move's entries leave the lists
//! (SUBTRACT) when it is done, a broker's rates are deleted when no move of this run in
//! flight involves it. At the end every throttle a run of this plan can have set is
//! cleared again (idempotent: what a crashed run left behind goes too).
//!
//! **The end.** When no move is pending or in flight, a PREFERRED leader election for the
//! moved partitions whose leader is not their first replica returns leadership to the
//! replica the plan put first.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde::Serialize;

use super::plan::PartitionMove;
use crate::kafka::{
    ConfigAlteration, ConfigOp, ConfigResource, OngoingReassignment, PartitionOutcome,
    Reassignment, ResourceOutcome,
};
use crate::snapshot::Snapshot;

/// Moves in or out per broker at once, unless told otherwise (Cruise Control's
/// `num.concurrent.partition.movements.per.broker`).
pub const DEFAULT_MAX_PER_BROKER: usize = 5;

/// Polls a submitted move may be neither listed in flight nor at its target (Metadata from
/// a broker can lag the controller) before it counts as cancelled by someone else.
pub const GRACE_POLLS: u32 = 3;

/// The broker config: replication bytes/s a leader sends for throttled replicas.
pub const LEADER_RATE: &str = "leader.replication.throttled.rate";
/// The broker config: replication bytes/s a follower fetches for throttled replicas.
pub const FOLLOWER_RATE: &str = "follower.replication.throttled.rate";
/// The topic config: `partition:broker` replicas throttled as leaders.
pub const LEADER_REPLICAS: &str = "leader.replication.throttled.replicas";
/// The topic config: `partition:broker` replicas throttled as followers.
pub const FOLLOWER_REPLICAS: &str = "follower.replication.throttled.replicas";

/// One partition to move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub topic: String,
    pub partition: i32,
    /// The replicas the plan was made from; `None` (a kafka-reassign-partitions file) takes
    /// the replicas the executor first sees.
    pub from: Option<Vec<i32>>,
    /// The target replicas, the preferred leader first.
    pub to: Vec<i32>,
}

impl Move {
    /// `topic-partition`.
    pub fn name(&self) -> String {
        format!("{}-{}", self.topic, self.partition)
    }
}

impl From<&PartitionMove> for Move {
    fn from(m: &PartitionMove) -> Self {
        Self {
            topic: m.topic.clone(),
            partition: m.partition,
            from: Some(m.from.clone()),
            to: m.to.clone(),
        }
    }
}

/// How the executor may go about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecOptions {
    /// Moves in or out per broker at once.
    pub max_per_broker: usize,
    /// Replication throttle in bytes/s; `None` sets no throttle.
    pub throttle: Option<u64>,
}

impl Default for ExecOptions {
    fn default() -> Self {
        Self {
            max_per_broker: DEFAULT_MAX_PER_BROKER,
            throttle: None,
        }
    }
}

/// What the cluster says at one poll.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// Metadata: the replicas and leader of every partition, the live brokers.
    pub snapshot: &'a Snapshot,
    /// ListPartitionReassignments: every reassignment in flight.
    pub ongoing: &'a [OngoingReassignment],
    /// Why no move may start now (partitions offline or under min ISR, as the health
    /// engine names them); `None` when the cluster is whole.
    pub unsafe_reason: Option<&'a str>,
}

/// Why a move of the plan was not made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum LeftAlone {
    /// Someone else's reassignment of the partition is in flight toward another target.
    OtherReassignment { target: Vec<i32> },
    /// The partition's replicas changed since the plan was made.
    Changed { from: Vec<i32>, now: Vec<i32> },
    /// The reassignment this run made (or adopted) vanished before reaching its target:
    /// cancelled, or replaced and finished, by someone else.
    Vanished { now: Vec<i32> },
    /// Kafka refused the reassignment.
    Refused { error: String },
    /// The partition does not exist (any more).
    Missing,
    /// The target has another number of replicas: rack moves never change it.
    ReplicationFactor { from: usize, to: usize },
    /// A target broker is not live (not in Metadata).
    TargetNotLive { broker: i32 },
}

impl fmt::Display for LeftAlone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OtherReassignment { target } => write!(
                f,
                "another reassignment is in flight, toward {target:?} (not this plan's)"
            ),
            Self::Changed { from, now } => write!(
                f,
                "replicas changed since the plan: planned from {from:?}, now {now:?}"
            ),
            Self::Vanished { now } => write!(
                f,
                "the reassignment vanished before reaching its target (cancelled or replaced \
                 by someone else); replicas now {now:?}"
            ),
            Self::Refused { error } => write!(f, "Kafka refused it: {error}"),
            Self::Missing => write!(f, "the partition does not exist"),
            Self::ReplicationFactor { from, to } => write!(
                f,
                "the target changes the replication factor from {from} to {to}"
            ),
            Self::TargetNotLive { broker } => {
                write!(f, "target broker {broker} is not live (not in Metadata)")
            }
        }
    }
}

/// Where one move stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoveState {
    /// Not submitted yet.
    Pending,
    /// Submitted by this run, not seen in flight yet (polls since, while unsettled).
    Submitted { unsettled: u32 },
    /// In flight toward this move's target; `adopted` when a previous run submitted it.
    InFlight { adopted: bool, unsettled: u32 },
    /// The partition is at its target.
    Done,
    /// Not made, and why.
    LeftAlone(LeftAlone),
}

impl MoveState {
    fn active(&self) -> bool {
        matches!(self, Self::Submitted { .. } | Self::InFlight { .. })
    }
}

/// Moves per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub done: usize,
    pub in_flight: usize,
    pub pending: usize,
    pub left_alone: usize,
    /// In flight when first seen: submitted by an earlier run.
    pub adopted: usize,
}

/// What to send after one poll, in this order: `throttle` (then report with
/// [`Executor::configs_applied`]), `submit` only if the throttles were all set (then
/// [`Executor::submitted`]), `unthrottle` (then [`Executor::configs_applied`]), and when
/// `finished`, `elect` (then [`Executor::elected`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    pub throttle: Vec<ConfigAlteration>,
    pub submit: Vec<Reassignment>,
    pub unthrottle: Vec<ConfigAlteration>,
    pub elect: Vec<(String, i32)>,
    /// New moves wait: the reason from the observation.
    pub paused: Option<String>,
    /// No move is pending or in flight: this is the last decision.
    pub finished: bool,
}

#[derive(Debug, Clone)]
struct Tracked {
    mv: Move,
    /// The replicas before the move (the plan's, or as first seen).
    from: Option<Vec<i32>>,
    state: MoveState,
    /// Whether it was in flight before this run submitted anything.
    adopted: bool,
}

impl Tracked {
    /// Brokers a replica is added to or removed from.
    fn involved(&self) -> BTreeSet<i32> {
        let from = self.from.as_deref().unwrap_or(&[]);
        let to = &self.mv.to;
        from.iter()
            .filter(|b| !to.contains(b))
            .chain(to.iter().filter(|b| !from.contains(b)))
            .copied()
            .collect()
    }

    /// Every broker holding a replica before or after.
    fn brokers(&self) -> BTreeSet<i32> {
        self.from
            .iter()
            .flatten()
            .chain(&self.mv.to)
            .copied()
            .collect()
    }

    /// The throttled-replica entries of this move: leaders on the pre-existing replicas,
    /// followers on the new ones.
    fn entries(&self) -> (Vec<String>, Vec<String>) {
        let p = self.mv.partition;
        let from = self.from.as_deref().unwrap_or(&[]);
        let leaders = from.iter().map(|b| format!("{p}:{b}")).collect();
        let followers = self
            .mv
            .to
            .iter()
            .filter(|b| !from.contains(b))
            .map(|b| format!("{p}:{b}"))
            .collect();
        (leaders, followers)
    }
}

/// A throttle entry list: `(topic, list config)` → entries.
type Entries = BTreeMap<(String, &'static str), BTreeSet<String>>;

/// The executor: the plan's moves and the throttles this run has set.
#[derive(Debug, Clone)]
pub struct Executor {
    moves: Vec<Tracked>,
    index: HashMap<(String, i32), usize>,
    options: ExecOptions,
    /// Brokers whose rates this run set (and Kafka accepted).
    rated: BTreeSet<i32>,
    /// Entries this run appended (and Kafka accepted).
    entries: Entries,
    /// Election outcomes, once run: partition → error, if any.
    elections: Vec<(String, Option<String>)>,
}

impl Executor {
    /// An executor for `moves` (in the order to submit them; a partition listed twice
    /// keeps its first move).
    pub fn new(moves: Vec<Move>, options: ExecOptions) -> Self {
        let mut index = HashMap::with_capacity(moves.len());
        let mut tracked = Vec::with_capacity(moves.len());
        for mv in moves {
            let key = (mv.topic.clone(), mv.partition);
            if index.contains_key(&key) {
                continue;
            }
            index.insert(key, tracked.len());
            tracked.push(Tracked {
                from: mv.from.clone(),
                mv,
                state: MoveState::Pending,
                adopted: false,
            });
        }
        Self {
            moves: tracked,
            index,
            options: ExecOptions {
                max_per_broker: options.max_per_broker.max(1),
                ..options
            },
            rated: BTreeSet::new(),
            entries: BTreeMap::new(),
            elections: Vec::new(),
        }
    }

    /// Reads the cluster, then decides what to send (see [`Decision`]).
    pub fn step(&mut self, obs: &Observation<'_>) -> Decision {
        self.observe(obs);
        let mut decision = Decision {
            paused: obs.unsafe_reason.map(str::to_owned),
            ..Decision::default()
        };
        let live: BTreeSet<i32> = obs.snapshot.brokers.iter().map(|b| b.id).collect();
        let admitted = if decision.paused.is_none() {
            self.admit(obs, &live)
        } else {
            Vec::new()
        };

        // Throttles wanted now: for every move in flight and every move about to be.
        if self.options.throttle.is_some() {
            let mut want_brokers = BTreeSet::new();
            let mut want: Entries = BTreeMap::new();
            for (i, t) in self.moves.iter().enumerate() {
                if t.state.active() || admitted.contains(&i) {
                    want_brokers.extend(t.brokers());
                    add_entries(&mut want, t);
                }
            }
            decision.throttle = self.throttle_changes(&want_brokers, &want);
            decision.unthrottle = self.unthrottle_changes(&want_brokers, &want);
        }
        decision.submit = admitted
            .iter()
            .map(|&i| Reassignment {
                topic: self.moves[i].mv.topic.clone(),
                partition: self.moves[i].mv.partition,
                replicas: Some(self.moves[i].mv.to.clone()),
            })
            .collect();

        let counts = self.counts();
        if counts.pending == 0 && counts.in_flight == 0 && admitted.is_empty() {
            decision.finished = true;
            if self.options.throttle.is_some() {
                decision.unthrottle = self.final_cleanup(obs);
            }
            decision.elect = self.to_elect(obs.snapshot);
        }
        decision
    }

    /// Records what AlterPartitionReassignments answered for the batch submitted.
    pub fn submitted(&mut self, outcomes: &[PartitionOutcome]) {
        for o in outcomes {
            let Some(&i) = self.index.get(&(o.topic.clone(), o.partition)) else {
                continue;
            };
            self.moves[i].state = match &o.error {
                None => MoveState::Submitted { unsettled: 0 },
                Some(e) => MoveState::LeftAlone(LeftAlone::Refused {
                    error: e.to_string(),
                }),
            };
        }
    }

    /// Records which config changes Kafka accepted (outcomes in the order of
    /// `alterations`), so throttles are set once and cleared once.
    pub fn configs_applied(
        &mut self,
        alterations: &[ConfigAlteration],
        outcomes: &[ResourceOutcome],
    ) {
        for (a, o) in alterations.iter().zip(outcomes) {
            if o.error.is_some() {
                continue;
            }
            for (name, op) in &a.changes {
                match (&a.resource, name.as_str(), op) {
                    (ConfigResource::Broker(id), LEADER_RATE, ConfigOp::Set(_)) => {
                        self.rated.insert(*id);
                    }
                    (ConfigResource::Broker(id), LEADER_RATE, ConfigOp::Delete) => {
                        self.rated.remove(id);
                    }
                    (ConfigResource::Topic(t), list, ConfigOp::Append(v))
                        if list == LEADER_REPLICAS || list == FOLLOWER_REPLICAS =>
                    {
                        let key = (t.clone(), list_name(list));
                        self.entries
                            .entry(key)
                            .or_default()
                            .extend(v.split(',').map(str::to_owned));
                    }
                    (ConfigResource::Topic(t), list, ConfigOp::Subtract(v))
                        if list == LEADER_REPLICAS || list == FOLLOWER_REPLICAS =>
                    {
                        let key = (t.clone(), list_name(list));
                        if let Some(set) = self.entries.get_mut(&key) {
                            for e in v.split(',') {
                                set.remove(e);
                            }
                            if set.is_empty() {
                                self.entries.remove(&key);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Records the preferred-leader election's answers (ELECTION_NOT_NEEDED counts as
    /// done).
    pub fn elected(&mut self, outcomes: &[PartitionOutcome]) {
        self.elections = outcomes
            .iter()
            .map(|o| {
                let error = match o.code() {
                    0 | crate::kafka::ELECTION_NOT_NEEDED => None,
                    _ => o.error.as_ref().map(ToString::to_string),
                };
                (format!("{}-{}", o.topic, o.partition), error)
            })
            .collect();
    }

    /// Moves per state.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for t in &self.moves {
            match t.state {
                MoveState::Pending => c.pending += 1,
                MoveState::Submitted { .. } | MoveState::InFlight { .. } => c.in_flight += 1,
                MoveState::Done => c.done += 1,
                MoveState::LeftAlone(_) => c.left_alone += 1,
            }
            if t.adopted {
                c.adopted += 1;
            }
        }
        c
    }

    /// Every move with its state, in plan order.
    pub fn moves(&self) -> impl Iterator<Item = (&Move, &MoveState)> {
        self.moves.iter().map(|t| (&t.mv, &t.state))
    }

    /// The moves left alone, with why.
    pub fn left_alone(&self) -> Vec<(String, LeftAlone)> {
        self.moves
            .iter()
            .filter_map(|t| match &t.state {
                MoveState::LeftAlone(why) => Some((t.mv.name(), why.clone())),
                _ => None,
            })
            .collect()
    }

    /// Partitions whose preferred leader could not be elected, with Kafka's answer.
    pub fn not_elected(&self) -> Vec<(String, String)> {
        self.elections
            .iter()
            .filter_map(|(p, e)| e.clone().map(|e| (p.clone(), e)))
            .collect()
    }

    /// Brokers whose throttle rates this run has set and not cleared yet.
    pub fn throttled_brokers(&self) -> &BTreeSet<i32> {
        &self.rated
    }

    /// Updates every move's state from the cluster.
    fn observe(&mut self, obs: &Observation<'_>) {
        let mut current: HashMap<(&str, i32), &[i32]> = HashMap::new();
        for t in &obs.snapshot.topics {
            for p in &t.partitions {
                current.insert((t.name.as_str(), p.index), &p.replicas);
            }
        }
        let ongoing: HashMap<(&str, i32), &OngoingReassignment> = obs
            .ongoing
            .iter()
            .map(|o| ((o.topic.as_str(), o.partition), o))
            .collect();
        for t in &mut self.moves {
            let key = (t.mv.topic.as_str(), t.mv.partition);
            let now = current.get(&key).copied();
            let flight = ongoing.get(&key).copied();
            t.state = next_state(t, now, flight);
        }
    }

    /// Pending moves to submit now: plan order, per-broker limits.
    fn admit(&mut self, obs: &Observation<'_>, live: &BTreeSet<i32>) -> Vec<usize> {
        let max = self.options.max_per_broker;
        let mut load: BTreeMap<i32, usize> = BTreeMap::new();
        let mut counted: BTreeSet<(&str, i32)> = BTreeSet::new();
        for o in obs.ongoing {
            counted.insert((o.topic.as_str(), o.partition));
            for b in o.adding.iter().chain(&o.removing) {
                *load.entry(*b).or_default() += 1;
            }
        }
        // Moves submitted but not listed yet count too.
        for t in &self.moves {
            if matches!(t.state, MoveState::Submitted { .. })
                && !counted.contains(&(t.mv.topic.as_str(), t.mv.partition))
            {
                for b in t.involved() {
                    *load.entry(b).or_default() += 1;
                }
            }
        }
        let mut admitted = Vec::new();
        for (i, t) in self.moves.iter_mut().enumerate() {
            if t.state != MoveState::Pending {
                continue;
            }
            if let Some(&broker) = t.mv.to.iter().find(|b| !live.contains(b)) {
                t.state = MoveState::LeftAlone(LeftAlone::TargetNotLive { broker });
                continue;
            }
            let involved = t.involved();
            if involved
                .iter()
                .all(|b| load.get(b).copied().unwrap_or(0) < max)
            {
                for b in involved {
                    *load.entry(b).or_default() += 1;
                }
                admitted.push(i);
            }
        }
        admitted
    }

    fn throttle_changes(
        &self,
        want_brokers: &BTreeSet<i32>,
        want: &Entries,
    ) -> Vec<ConfigAlteration> {
        let Some(rate) = self.options.throttle else {
            return Vec::new();
        };
        let mut out: Vec<ConfigAlteration> = want_brokers
            .difference(&self.rated)
            .map(|&b| ConfigAlteration {
                resource: ConfigResource::Broker(b),
                changes: vec![
                    (LEADER_RATE.to_owned(), ConfigOp::Set(rate.to_string())),
                    (FOLLOWER_RATE.to_owned(), ConfigOp::Set(rate.to_string())),
                ],
            })
            .collect();
        out.extend(list_changes(want, &self.entries, ConfigOp::Append));
        out
    }

    fn unthrottle_changes(
        &self,
        want_brokers: &BTreeSet<i32>,
        want: &Entries,
    ) -> Vec<ConfigAlteration> {
        let mut out: Vec<ConfigAlteration> = self
            .rated
            .difference(want_brokers)
            .map(|&b| delete_rates(b))
            .collect();
        out.extend(list_changes(&self.entries, want, ConfigOp::Subtract));
        out
    }

    /// At the end: every throttle a run of this plan may have set, cleared (SUBTRACT and
    /// DELETE of what is not there change nothing, so a crashed run's leftovers go too),
    /// except on brokers someone else's reassignment in flight still involves.
    fn final_cleanup(&self, obs: &Observation<'_>) -> Vec<ConfigAlteration> {
        let busy: BTreeSet<i32> = obs
            .ongoing
            .iter()
            .flat_map(|o| o.replicas.iter().copied())
            .collect();
        let mut brokers: BTreeSet<i32> = self.rated.clone();
        let mut entries: Entries = self.entries.clone();
        for t in &self.moves {
            if !matches!(t.state, MoveState::Done) {
                continue;
            }
            brokers.extend(t.brokers());
            // Both lists, every replica before or after: whichever a run set.
            let all: Vec<String> = t
                .brokers()
                .iter()
                .map(|b| format!("{}:{b}", t.mv.partition))
                .collect();
            for list in [LEADER_REPLICAS, FOLLOWER_REPLICAS] {
                entries
                    .entry((t.mv.topic.clone(), list))
                    .or_default()
                    .extend(all.iter().cloned());
            }
        }
        let mut out: Vec<ConfigAlteration> = brokers
            .difference(&busy)
            .map(|&b| delete_rates(b))
            .collect();
        out.extend(list_changes(&entries, &BTreeMap::new(), ConfigOp::Subtract));
        out
    }

    /// Moved partitions whose leader is not the first replica of their target.
    fn to_elect(&self, snapshot: &Snapshot) -> Vec<(String, i32)> {
        let mut leaders: HashMap<(&str, i32), i32> = HashMap::new();
        for t in &snapshot.topics {
            for p in &t.partitions {
                leaders.insert((t.name.as_str(), p.index), p.leader);
            }
        }
        self.moves
            .iter()
            .filter(|t| t.state == MoveState::Done)
            .filter(|t| {
                let leader = leaders.get(&(t.mv.topic.as_str(), t.mv.partition));
                leader.copied() != t.mv.to.first().copied()
            })
            .map(|t| (t.mv.topic.clone(), t.mv.partition))
            .collect()
    }
}

/// One move's next state from the replicas now (`None`: no such partition) and the
/// reassignment in flight for its partition, if any.
fn next_state(
    t: &mut Tracked,
    now: Option<&[i32]>,
    flight: Option<&OngoingReassignment>,
) -> MoveState {
    let state = t.state.clone();
    if matches!(state, MoveState::Done | MoveState::LeftAlone(_)) {
        return state;
    }
    let Some(now) = now else {
        return MoveState::LeftAlone(LeftAlone::Missing);
    };
    let unsettled = match state {
        MoveState::Submitted { unsettled } | MoveState::InFlight { unsettled, .. } => unsettled,
        _ => 0,
    };
    if let Some(f) = flight {
        if f.target() == t.mv.to {
            if t.from.is_none() {
                t.from = Some(f.original());
            }
            let adopted = match state {
                MoveState::Pending => {
                    t.adopted = true;
                    true
                }
                MoveState::InFlight { adopted, .. } => adopted,
                _ => false,
            };
            return MoveState::InFlight {
                adopted,
                unsettled: 0,
            };
        }
        return MoveState::LeftAlone(LeftAlone::OtherReassignment { target: f.target() });
    }
    if now == t.mv.to.as_slice() {
        if t.from.is_none() {
            t.from = Some(now.to_vec());
        }
        return MoveState::Done;
    }
    match state {
        MoveState::Pending => {
            let from = t.from.get_or_insert_with(|| now.to_vec());
            if !same_set(from, now) {
                return MoveState::LeftAlone(LeftAlone::Changed {
                    from: from.clone(),
                    now: now.to_vec(),
                });
            }
            if from.len() != t.mv.to.len() {
                return MoveState::LeftAlone(LeftAlone::ReplicationFactor {
                    from: from.len(),
                    to: t.mv.to.len(),
                });
            }
            MoveState::Pending
        }
        // Submitted or in flight, now neither listed nor at the target: Metadata may lag
        // the controller for a moment; past the grace, someone else ended it.
        MoveState::Submitted { .. } | MoveState::InFlight { .. } => {
            if unsettled + 1 >= GRACE_POLLS {
                return MoveState::LeftAlone(LeftAlone::Vanished { now: now.to_vec() });
            }
            match state {
                MoveState::InFlight { adopted, .. } => MoveState::InFlight {
                    adopted,
                    unsettled: unsettled + 1,
                },
                _ => MoveState::Submitted {
                    unsettled: unsettled + 1,
                },
            }
        }
        other => other,
    }
}

fn same_set(a: &[i32], b: &[i32]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x))
}

fn list_name(list: &str) -> &'static str {
    if list == LEADER_REPLICAS {
        LEADER_REPLICAS
    } else {
        FOLLOWER_REPLICAS
    }
}

fn add_entries(want: &mut Entries, t: &Tracked) {
    let (leaders, followers) = t.entries();
    want.entry((t.mv.topic.clone(), LEADER_REPLICAS))
        .or_default()
        .extend(leaders);
    if !followers.is_empty() {
        want.entry((t.mv.topic.clone(), FOLLOWER_REPLICAS))
            .or_default()
            .extend(followers);
    }
}

fn delete_rates(broker: i32) -> ConfigAlteration {
    ConfigAlteration {
        resource: ConfigResource::Broker(broker),
        changes: vec![
            (LEADER_RATE.to_owned(), ConfigOp::Delete),
            (FOLLOWER_RATE.to_owned(), ConfigOp::Delete),
        ],
    }
}

/// One alteration per topic for the entries in `a` and not in `b`, with `op`.
fn list_changes(a: &Entries, b: &Entries, op: fn(String) -> ConfigOp) -> Vec<ConfigAlteration> {
    let mut per_topic: BTreeMap<&str, Vec<(String, ConfigOp)>> = BTreeMap::new();
    for ((topic, list), entries) in a {
        let other = b.get(&(topic.clone(), *list));
        let diff: Vec<&str> = entries
            .iter()
            .filter(|e| other.is_none_or(|o| !o.contains(*e)))
            .map(String::as_str)
            .collect();
        if !diff.is_empty() {
            per_topic
                .entry(topic)
                .or_default()
                .push(((*list).to_owned(), op(diff.join(","))));
        }
    }
    per_topic
        .into_iter()
        .map(|(topic, changes)| ConfigAlteration {
            resource: ConfigResource::Topic(topic.to_owned()),
            changes,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::KafkaError;
    use crate::snapshot::{Broker, Partition, Topic};

    /// Brokers 0..10, topic `t` with the given partitions `(replicas, leader)`.
    fn snapshot(parts: &[(&[i32], i32)]) -> Snapshot {
        Snapshot {
            brokers: (0..10)
                .map(|id| Broker {
                    id,
                    host: format!("b{id}"),
                    port: 9092,
                    rack: None,
                })
                .collect(),
            topics: vec![Topic {
                name: "t".into(),
                internal: false,
                min_isr: None,
                partitions: parts
                    .iter()
                    .enumerate()
                    .map(|(i, (replicas, leader))| Partition {
                        index: i32::try_from(i).expect("small"),
                        leader: *leader,
                        replicas: replicas.to_vec(),
                        isr: replicas.to_vec(),
                        offline_replicas: vec![],
                        adding_replicas: vec![],
                    })
                    .collect(),
            }],
            ..Snapshot::default()
        }
    }

    fn mv(p: i32, from: &[i32], to: &[i32]) -> Move {
        Move {
            topic: "t".into(),
            partition: p,
            from: Some(from.to_vec()),
            to: to.to_vec(),
        }
    }

    fn ongoing(p: i32, from: &[i32], to: &[i32]) -> OngoingReassignment {
        let removing: Vec<i32> = from.iter().copied().filter(|b| !to.contains(b)).collect();
        OngoingReassignment {
            topic: "t".into(),
            partition: p,
            replicas: to.iter().chain(&removing).copied().collect(),
            adding: to.iter().copied().filter(|b| !from.contains(b)).collect(),
            removing,
        }
    }

    fn obs<'a>(s: &'a Snapshot, o: &'a [OngoingReassignment]) -> Observation<'a> {
        Observation {
            snapshot: s,
            ongoing: o,
            unsafe_reason: None,
        }
    }

    fn ok(d: &Decision) -> Vec<PartitionOutcome> {
        d.submit
            .iter()
            .map(|r| PartitionOutcome {
                topic: r.topic.clone(),
                partition: r.partition,
                error: None,
            })
            .collect()
    }

    fn submitted(d: &Decision) -> Vec<i32> {
        d.submit.iter().map(|r| r.partition).collect()
    }

    /// `(from, to)` per partition.
    type Pairs = Vec<(Vec<i32>, Vec<i32>)>;

    /// Eight partitions each moving one replica onto broker 9.
    fn onto_nine() -> (Vec<Move>, Pairs) {
        let pairs: Pairs = (0..8)
            .map(|p| {
                let from = vec![p % 8, (p + 1) % 8, (p + 2) % 8];
                let mut to = from.clone();
                to[2] = 9;
                (from, to)
            })
            .collect();
        let moves = pairs
            .iter()
            .enumerate()
            .map(|(p, (f, t))| mv(i32::try_from(p).expect("small"), f, t))
            .collect();
        (moves, pairs)
    }

    #[test]
    fn batches_respect_the_per_broker_limit_and_refill_as_moves_finish() {
        let (moves, pairs) = onto_nine();
        let mut exec = Executor::new(moves, ExecOptions::default());
        let before: Vec<(&[i32], i32)> = pairs.iter().map(|(f, _)| (f.as_slice(), f[0])).collect();
        let s = snapshot(&before);
        let d = exec.step(&obs(&s, &[]));
        assert_eq!(
            submitted(&d),
            [0, 1, 2, 3, 4],
            "5 moves into broker 9 at once"
        );
        assert!(!d.finished);
        exec.submitted(&ok(&d));
        // The controller lists them; nothing more fits.
        let flight: Vec<OngoingReassignment> = (0..5)
            .map(|p| ongoing(p, &pairs[p as usize].0, &pairs[p as usize].1))
            .collect();
        let d = exec.step(&obs(&s, &flight));
        assert!(d.submit.is_empty());
        assert_eq!(exec.counts().in_flight, 5);
        // Two finish: two more go.
        let mut now: Vec<(&[i32], i32)> = before.clone();
        now[0] = (&pairs[0].1, pairs[0].1[0]);
        now[1] = (&pairs[1].1, pairs[1].1[0]);
        let s = snapshot(&now);
        let d = exec.step(&obs(&s, &flight[2..]));
        assert_eq!(submitted(&d), [5, 6]);
        assert_eq!(exec.counts().done, 2);
    }

    #[test]
    fn others_reassignments_count_against_the_limit_and_are_left_alone() {
        let (moves, pairs) = onto_nine();
        let mut exec = Executor::new(
            moves,
            ExecOptions {
                max_per_broker: 2,
                throttle: None,
            },
        );
        let before: Vec<(&[i32], i32)> = pairs.iter().map(|(f, _)| (f.as_slice(), f[0])).collect();
        let s = snapshot(&before);
        // Partition 0 is being moved elsewhere by someone else, onto broker 9 too.
        let other = [
            ongoing(0, &pairs[0].0, &[0, 1, 8]),
            ongoing(7, &[7, 0, 1], &[7, 0, 9]),
        ];
        let d = exec.step(&obs(&s, &other));
        assert_eq!(
            exec.left_alone(),
            [(
                "t-0".to_owned(),
                LeftAlone::OtherReassignment {
                    target: vec![0, 1, 8]
                }
            ),]
        );
        // Broker 9 has one move in (partition 7, which is ours: adopted), so one more fits.
        assert_eq!(submitted(&d), [1]);
        assert_eq!(exec.counts().adopted, 1);
        assert_eq!(exec.counts().in_flight, 1);
    }

    #[test]
    fn a_re_run_adopts_what_is_in_flight_and_never_submits_it_again() {
        let (moves, pairs) = onto_nine();
        let before: Vec<(&[i32], i32)> = pairs.iter().map(|(f, _)| (f.as_slice(), f[0])).collect();
        let s = snapshot(&before);
        let mut first = Executor::new(moves.clone(), ExecOptions::default());
        let d = first.step(&obs(&s, &[]));
        let flight: Vec<OngoingReassignment> = d
            .submit
            .iter()
            .map(|r| {
                let p = r.partition as usize;
                ongoing(r.partition, &pairs[p].0, &pairs[p].1)
            })
            .collect();
        drop(first); // crashed
        // The plan file gives no `from`: the re-run takes the cluster's.
        let moves: Vec<Move> = moves
            .into_iter()
            .map(|m| Move { from: None, ..m })
            .collect();
        let mut again = Executor::new(moves, ExecOptions::default());
        let d = again.step(&obs(&s, &flight));
        assert!(d.submit.is_empty(), "{:?}", d.submit);
        assert_eq!(again.counts().adopted, 5);
        assert_eq!(again.counts().in_flight, 5);
        assert_eq!(again.counts().pending, 3);
    }

    #[test]
    fn no_move_starts_while_the_cluster_is_unsafe() {
        let (moves, pairs) = onto_nine();
        let before: Vec<(&[i32], i32)> = pairs.iter().map(|(f, _)| (f.as_slice(), f[0])).collect();
        let s = snapshot(&before);
        let mut exec = Executor::new(moves, ExecOptions::default());
        let reason = "1 partition under min ISR: t-3";
        let d = exec.step(&Observation {
            snapshot: &s,
            ongoing: &[],
            unsafe_reason: Some(reason),
        });
        assert!(d.submit.is_empty());
        assert_eq!(d.paused.as_deref(), Some(reason));
        assert!(!d.finished);
        let d = exec.step(&obs(&s, &[]));
        assert_eq!(d.submit.len(), 5, "resumed");
        assert_eq!(d.paused, None);
    }

    #[test]
    fn throttles_are_set_before_and_cleared_as_moves_finish() {
        let moves = vec![mv(0, &[0, 1, 2], &[0, 1, 3]), mv(1, &[4, 5, 6], &[4, 5, 7])];
        let mut exec = Executor::new(
            moves,
            ExecOptions {
                max_per_broker: 5,
                throttle: Some(1000),
            },
        );
        let s = snapshot(&[(&[0, 1, 2], 0), (&[4, 5, 6], 4)]);
        let d = exec.step(&obs(&s, &[]));
        let rated: Vec<i32> = d
            .throttle
            .iter()
            .filter_map(|a| match (&a.resource, a.changes.first()) {
                (ConfigResource::Broker(b), Some((name, ConfigOp::Set(v))))
                    if name == LEADER_RATE && v == "1000" =>
                {
                    Some(*b)
                }
                _ => None,
            })
            .collect();
        assert_eq!(rated, [0, 1, 2, 3, 4, 5, 6, 7]);
        let topic = d
            .throttle
            .iter()
            .find(|a| a.resource == ConfigResource::Topic("t".into()))
            .expect("replica lists");
        assert_eq!(
            topic.changes,
            [
                (
                    FOLLOWER_REPLICAS.to_owned(),
                    ConfigOp::Append("0:3,1:7".into())
                ),
                (
                    LEADER_REPLICAS.to_owned(),
                    ConfigOp::Append("0:0,0:1,0:2,1:4,1:5,1:6".into())
                ),
            ]
        );
        let outcomes: Vec<ResourceOutcome> = d
            .throttle
            .iter()
            .map(|a| ResourceOutcome {
                resource: a.resource.clone(),
                error: None,
            })
            .collect();
        exec.configs_applied(&d.throttle, &outcomes);
        exec.submitted(&ok(&d));
        // Partition 0 done, partition 1 in flight: 0's entries and brokers 0-3 cleared.
        let s = snapshot(&[(&[0, 1, 3], 0), (&[4, 5, 6], 4)]);
        let flight = [ongoing(1, &[4, 5, 6], &[4, 5, 7])];
        let d = exec.step(&obs(&s, &flight));
        assert!(d.throttle.is_empty(), "already set: {:?}", d.throttle);
        let cleared: Vec<&ConfigResource> = d.unthrottle.iter().map(|a| &a.resource).collect();
        assert_eq!(
            cleared,
            [
                &ConfigResource::Broker(0),
                &ConfigResource::Broker(1),
                &ConfigResource::Broker(2),
                &ConfigResource::Broker(3),
                &ConfigResource::Topic("t".into()),
            ]
        );
        assert_eq!(
            d.unthrottle[4].changes,
            [
                (
                    FOLLOWER_REPLICAS.to_owned(),
                    ConfigOp::Subtract("0:3".into())
                ),
                (
                    LEADER_REPLICAS.to_owned(),
                    ConfigOp::Subtract("0:0,0:1,0:2".into())
                ),
            ]
        );
        let outcomes: Vec<ResourceOutcome> = d
            .unthrottle
            .iter()
            .map(|a| ResourceOutcome {
                resource: a.resource.clone(),
                error: None,
            })
            .collect();
        exec.configs_applied(&d.unthrottle, &outcomes);
        assert_eq!(
            exec.throttled_brokers().iter().copied().collect::<Vec<_>>(),
            [4, 5, 6, 7]
        );
        // All done: the final cleanup clears everything either move could have set.
        let s = snapshot(&[(&[0, 1, 3], 0), (&[4, 5, 7], 4)]);
        let d = exec.step(&obs(&s, &[]));
        assert!(d.finished);
        let brokers: Vec<&ConfigResource> = d
            .unthrottle
            .iter()
            .map(|a| &a.resource)
            .filter(|r| matches!(r, ConfigResource::Broker(_)))
            .collect();
        assert_eq!(brokers.len(), 8, "{:?}", d.unthrottle);
        assert!(d.elect.is_empty(), "leaders are first already");
    }

    #[test]
    fn the_end_elects_moved_partitions_whose_leader_is_not_first() {
        let moves = vec![mv(0, &[0, 1, 2], &[3, 1, 2]), mv(1, &[4, 5, 6], &[4, 5, 7])];
        let mut exec = Executor::new(moves, ExecOptions::default());
        // Both already at their targets; partition 0 led by 1 (its leader moved away).
        let s = snapshot(&[(&[3, 1, 2], 1), (&[4, 5, 7], 4)]);
        let d = exec.step(&obs(&s, &[]));
        assert!(d.finished);
        assert_eq!(d.elect, [("t".to_owned(), 0)]);
        exec.elected(&[PartitionOutcome {
            topic: "t".into(),
            partition: 0,
            error: Some(KafkaError::BrokerError {
                addr: "k:1".into(),
                api: "ElectLeaders v2 (partition t-0)".into(),
                code: crate::kafka::PREFERRED_LEADER_NOT_AVAILABLE,
                message: None,
            }),
        }]);
        let not = exec.not_elected();
        assert_eq!(not.len(), 1);
        assert!(
            not[0].1.contains("PREFERRED_LEADER_NOT_AVAILABLE (80)"),
            "{not:?}"
        );
    }

    #[test]
    fn changed_refused_vanished_resized_and_dead_targets_are_left_alone() {
        let moves = vec![
            mv(0, &[0, 1, 2], &[0, 1, 3]),    // changed since the plan
            mv(1, &[1, 2, 3], &[1, 2, 4]),    // refused by Kafka
            mv(2, &[2, 3, 4], &[2, 3, 5]),    // vanishes after submission
            mv(3, &[3, 4, 5], &[3, 4, 5, 6]), // RF change
            mv(4, &[4, 5, 6], &[4, 5, 42]),   // broker 42 is not live
        ];
        let mut exec = Executor::new(moves, ExecOptions::default());
        let parts: [(&[i32], i32); 5] = [
            (&[0, 1, 8], 0),
            (&[1, 2, 3], 1),
            (&[2, 3, 4], 2),
            (&[3, 4, 5], 3),
            (&[4, 5, 6], 4),
        ];
        let s = snapshot(&parts);
        let d = exec.step(&obs(&s, &[]));
        assert_eq!(submitted(&d), [1, 2]);
        let mut out = ok(&d);
        out[0].error = Some(KafkaError::BrokerError {
            addr: "k:1".into(),
            api: "AlterPartitionReassignments v1 (partition t-1)".into(),
            code: 39,
            message: None,
        });
        exec.submitted(&out);
        for _ in 0..GRACE_POLLS {
            let d = exec.step(&obs(&s, &[]));
            assert!(d.submit.is_empty());
        }
        let why: Vec<String> = exec
            .left_alone()
            .iter()
            .map(|(p, w)| format!("{p}: {w}"))
            .collect();
        assert_eq!(
            why,
            [
                "t-0: replicas changed since the plan: planned from [0, 1, 2], now [0, 1, 8]",
                "t-1: Kafka refused it: Kafka broker k:1 answered AlterPartitionReassignments v1 \
                 (partition t-1) with INVALID_REPLICA_ASSIGNMENT (39)",
                "t-2: the reassignment vanished before reaching its target (cancelled or \
                 replaced by someone else); replicas now [2, 3, 4]",
                "t-3: the target changes the replication factor from 3 to 4",
                "t-4: target broker 42 is not live (not in Metadata)",
            ]
        );
        assert!(exec.step(&obs(&s, &[])).finished);
    }

    #[test]
    fn a_partition_that_disappeared_is_missing() {
        let mut exec = Executor::new(vec![mv(5, &[0, 1, 2], &[0, 1, 3])], ExecOptions::default());
        let s = snapshot(&[(&[0, 1, 2], 0)]);
        let d = exec.step(&obs(&s, &[]));
        assert!(d.finished);
        assert_eq!(exec.left_alone(), [("t-5".to_owned(), LeftAlone::Missing)]);
    }
}
