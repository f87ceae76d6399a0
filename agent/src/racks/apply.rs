//! The executor's I/O shell, and `racks status` and `racks cancel`.
//!
//! [`apply`] loops: observe (a [`Snapshot`] for the replicas and the health engine's verdict
//! on offline and under-min-ISR partitions, ListPartitionReassignments from the controller),
//! let [`Executor::step`] decide, send what it decided (throttles first, the batch only if
//! they were all set, then the throttles to clear), report the answers back, and write a
//! progress line to stderr. It stops when the executor is finished (after the preferred
//! leader election) or at the timeout. A Kafka error is retried at the next poll; after
//! [`MAX_FAILURES`] polls in a row fail, the run gives up: re-running it is always safe,
//! since the executor takes its state from the cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::{Duration, Instant};

use kpool_policy::Policy;
use tracing::warn;

use super::execute::{
    Counts, Decision, ExecOptions, Executor, FOLLOWER_RATE, FOLLOWER_REPLICAS, LEADER_RATE,
    LEADER_REPLICAS, LeftAlone, Move, Observation,
};
use super::input;
use super::plan::Layout;
use crate::backoff::Backoff;
use crate::health::{self, DEFAULT_OFFENDERS, Health};
use crate::kafka::{
    ConfigAlteration, ConfigOp, ConfigResource, KafkaClient, KafkaError,
    NO_REASSIGNMENT_IN_PROGRESS, OngoingReassignment, Reassignment,
};
use crate::snapshot::Snapshot;

/// Polls in a row that may fail (Kafka unreachable, an error answer) before `apply` gives
/// up.
pub const MAX_FAILURES: u32 = 5;

/// How `apply` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyConfig {
    pub options: ExecOptions,
    /// Between polls.
    pub interval: Duration,
    /// Stop after this long (moves in flight carry on in Kafka); `None`: until done.
    pub timeout: Option<Duration>,
    /// A progress line at least this often (and whenever the counts change).
    pub progress_every: Duration,
}

impl Default for ApplyConfig {
    fn default() -> Self {
        Self {
            options: ExecOptions::default(),
            interval: Duration::from_secs(5),
            timeout: None,
            progress_every: Duration::from_secs(30),
        }
    }
}

/// How a run of `apply` ended, as its exit code says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyStatus {
    /// Every move is in place and leaders were elected.
    Done,
    /// Finished, but some moves were left alone or some leaders not elected.
    PartlyLeftAlone,
    /// Stopped at the timeout while paused (a partition offline or under min ISR).
    TimedOutPaused,
    /// Stopped at the timeout with moves in flight or pending.
    TimedOut,
}

impl ApplyStatus {
    /// The process exit code (see `racks apply --help`).
    pub fn code(self) -> u8 {
        match self {
            Self::Done => 0,
            Self::TimedOutPaused => 2,
            Self::TimedOut => 3,
            Self::PartlyLeftAlone => 4,
        }
    }
}

/// What a run of `apply` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    pub status: ApplyStatus,
    pub counts: Counts,
    pub total: usize,
    /// Moves not made, with why.
    pub left_alone: Vec<(String, LeftAlone)>,
    /// Partitions whose preferred leader could not be elected, with Kafka's answer.
    pub not_elected: Vec<(String, String)>,
    /// Partitions the final election was asked for.
    pub elected: usize,
    /// Why new moves were waiting when the run stopped.
    pub paused: Option<String>,
    /// Brokers whose throttles this run left set (moves still in flight at a timeout).
    pub throttled_brokers: Vec<i32>,
    pub elapsed: Duration,
}

/// `apply` could not go on.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Polls failed [`MAX_FAILURES`] times in a row.
    #[error(
        "{step} failed {attempts} polls in a row, giving up (moves in flight carry on; \
         a re-run continues from what the cluster reports): {source}"
    )]
    Kafka {
        /// What was being done: `reading the cluster`, `setting throttles`, ...
        step: &'static str,
        attempts: u32,
        #[source]
        source: KafkaError,
    },
    /// Kafka refused a throttle change (an error for a broker or topic resource).
    #[error(
        "cannot {what} the replication throttle: {detail} (no move is submitted unthrottled; \
         fix the cause and re-run, or run without --throttle)"
    )]
    Throttle { what: &'static str, detail: String },
    /// The cluster does not offer an API the run needs (checked before anything is sent).
    #[error(
        "Kafka at {addr} does not offer {api} (not in its ApiVersions), which racks apply \
         needs{why}; nothing was changed"
    )]
    Unsupported {
        addr: String,
        api: &'static str,
        /// ` for --throttle`, or empty.
        why: &'static str,
    },
    /// The progress writer failed.
    #[error("cannot write progress: {0}")]
    Progress(#[from] std::io::Error),
}

/// The reason no move may start now: partitions offline or under min ISR, named by the
/// health engine (the same counts the readiness verdict uses); `None` when there are none.
pub fn unsafe_reason(health: &Health) -> Option<String> {
    let s = &health.summary;
    let mut parts = Vec::new();
    if s.offline.count > 0 {
        parts.push(s.offline.describe("offline"));
    }
    if s.under_min_isr.count > 0 {
        parts.push(s.under_min_isr.describe("under min ISR"));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// One poll: the snapshot, the reassignments in flight (from the controller), and whether
/// moves may start.
async fn observe(
    client: &mut KafkaClient,
    policy: &Policy,
) -> Result<(Snapshot, Vec<OngoingReassignment>, Option<String>), KafkaError> {
    let snapshot = client.snapshot().await?;
    let ongoing = client.list_partition_reassignments().await?;
    let health = health::evaluate(&snapshot, policy, DEFAULT_OFFENDERS);
    let reason = unsafe_reason(&health);
    Ok((snapshot, ongoing, reason))
}

/// Applies `moves` (see the module docs), writing progress lines to `progress`.
pub async fn apply(
    client: &mut KafkaClient,
    policy: &Policy,
    moves: Vec<Move>,
    config: &ApplyConfig,
    progress: &mut (dyn Write + Send),
) -> Result<ApplyReport, ApplyError> {
    let start = Instant::now();
    let total = moves.len();
    preflight(client, config).await?;
    let mut exec = Executor::new(moves, config.options);
    let mut failures = 0;
    let mut backoff = Backoff::new(config.interval, Duration::from_secs(30));
    let mut last_line = String::new();
    let mut last_at = start;
    loop {
        let (snapshot, ongoing, reason) = match observe(client, policy).await {
            Ok(o) => o,
            Err(source) => {
                failures += 1;
                retry_or_fail(failures, "reading the cluster", source, progress)?;
                tokio::time::sleep(backoff.next()).await;
                continue;
            }
        };
        let decision = exec.step(&Observation {
            snapshot: &snapshot,
            ongoing: &ongoing,
            unsafe_reason: reason.as_deref(),
        });
        match act(client, &mut exec, &decision).await {
            Ok(()) => {
                failures = 0;
                backoff.reset();
            }
            Err(ActError::Kafka(step, source)) => {
                failures += 1;
                retry_or_fail(failures, step, source, progress)?;
            }
            Err(ActError::Throttle(what, detail)) => {
                return Err(ApplyError::Throttle { what, detail });
            }
        }
        let counts = exec.counts();
        let elapsed = start.elapsed();
        if decision.finished {
            writeln!(
                progress,
                "{}",
                line(&counts, total, decision.paused.as_deref())
            )?;
            let left_alone = exec.left_alone();
            let not_elected = exec.not_elected();
            return Ok(ApplyReport {
                status: if left_alone.is_empty() && not_elected.is_empty() {
                    ApplyStatus::Done
                } else {
                    ApplyStatus::PartlyLeftAlone
                },
                counts,
                total,
                left_alone,
                not_elected,
                elected: decision.elect.len(),
                paused: None,
                throttled_brokers: exec.throttled_brokers().iter().copied().collect(),
                elapsed,
            });
        }
        let text = line(&counts, total, decision.paused.as_deref());
        if text != last_line || last_at.elapsed() >= config.progress_every {
            writeln!(progress, "{text}, {} elapsed", human(elapsed))?;
            last_line = text;
            last_at = Instant::now();
        }
        if let Some(timeout) = config.timeout
            && elapsed + config.interval > timeout
        {
            return Ok(ApplyReport {
                status: if decision.paused.is_some() {
                    ApplyStatus::TimedOutPaused
                } else {
                    ApplyStatus::TimedOut
                },
                counts,
                total,
                left_alone: exec.left_alone(),
                not_elected: Vec::new(),
                elected: 0,
                paused: decision.paused,
                throttled_brokers: exec.throttled_brokers().iter().copied().collect(),
                elapsed,
            });
        }
        tokio::time::sleep(config.interval).await;
    }
}

/// Connects and checks the broker offers every API the run will send, so a cluster that
/// cannot reassign is told so before a throttle is set (tansu 0.6 offers
/// IncrementalAlterConfigs but not AlterPartitionReassignments).
async fn preflight(client: &mut KafkaClient, config: &ApplyConfig) -> Result<(), ApplyError> {
    let mut failures = 0;
    let versions = loop {
        match client.snapshot().await {
            Ok(_) => break client.negotiated(),
            Err(source) => {
                failures += 1;
                if failures >= MAX_FAILURES {
                    return Err(ApplyError::Kafka {
                        step: "connecting",
                        attempts: failures,
                        source,
                    });
                }
                tokio::time::sleep(config.interval).await;
            }
        }
    };
    let Some(v) = versions else {
        return Ok(());
    };
    let addr = client.connected_to().unwrap_or_default().to_owned();
    let needs = [
        (v.list_reassignments, "ListPartitionReassignments", ""),
        (v.alter_reassignments, "AlterPartitionReassignments", ""),
        (v.elect_leaders, "ElectLeaders", ""),
        (
            if config.options.throttle.is_some() {
                v.incremental_alter_configs
            } else {
                Some(0)
            },
            "IncrementalAlterConfigs",
            " for --throttle",
        ),
    ];
    match needs.into_iter().find(|(version, _, _)| version.is_none()) {
        Some((_, api, why)) => Err(ApplyError::Unsupported { addr, api, why }),
        None => Ok(()),
    }
}

fn retry_or_fail(
    failures: u32,
    step: &'static str,
    source: KafkaError,
    progress: &mut (dyn Write + Send),
) -> Result<(), ApplyError> {
    if failures >= MAX_FAILURES {
        return Err(ApplyError::Kafka {
            step,
            attempts: failures,
            source,
        });
    }
    warn!(step, error = %source, attempt = failures, "racks apply: Kafka error, retrying");
    writeln!(
        progress,
        "racks apply: {step} failed ({failures} of {MAX_FAILURES} in a row), retrying: {source}"
    )?;
    Ok(())
}

enum ActError {
    Kafka(&'static str, KafkaError),
    Throttle(&'static str, String),
}

/// Sends one decision (see [`Decision`] for the order) and reports the answers.
async fn act(
    client: &mut KafkaClient,
    exec: &mut Executor,
    decision: &Decision,
) -> Result<(), ActError> {
    if !decision.throttle.is_empty() {
        let outcomes = client
            .alter_configs(&decision.throttle)
            .await
            .map_err(|e| ActError::Kafka("setting throttles", e))?;
        exec.configs_applied(&decision.throttle, &outcomes);
        let errors: Vec<String> = outcomes
            .iter()
            .filter_map(|o| o.error.as_ref().map(ToString::to_string))
            .collect();
        if !errors.is_empty() {
            return Err(ActError::Throttle("set", errors.join("; ")));
        }
    }
    if !decision.submit.is_empty() {
        let outcomes = client
            .alter_partition_reassignments(&decision.submit)
            .await
            .map_err(|e| ActError::Kafka("submitting reassignments", e))?;
        exec.submitted(&outcomes);
    }
    if !decision.unthrottle.is_empty() {
        let outcomes = client
            .alter_configs(&decision.unthrottle)
            .await
            .map_err(|e| ActError::Kafka("clearing throttles", e))?;
        exec.configs_applied(&decision.unthrottle, &outcomes);
        for o in outcomes.iter().filter(|o| o.error.is_some()) {
            // Retried at the next poll (or the final clean-up); not worth stopping for.
            if let Some(e) = &o.error {
                warn!(resource = %o.resource, error = %e, "cannot clear a replication throttle");
            }
        }
    }
    if decision.finished && !decision.elect.is_empty() {
        let outcomes = client
            .elect_preferred_leaders(&decision.elect)
            .await
            .map_err(|e| ActError::Kafka("electing preferred leaders", e))?;
        exec.elected(&outcomes);
    }
    Ok(())
}

/// `racks apply: 3/10 done, 5 in flight (2 adopted), 2 pending, 0 left alone`.
fn line(c: &Counts, total: usize, paused: Option<&str>) -> String {
    let mut s = format!(
        "racks apply: {}/{total} done, {} in flight{}, {} pending, {} left alone",
        c.done,
        c.in_flight,
        if c.adopted > 0 {
            format!(" ({} adopted from an earlier run)", c.adopted)
        } else {
            String::new()
        },
        c.pending,
        c.left_alone
    );
    if let Some(reason) = paused {
        s.push_str(&format!("; paused, no new moves while {reason}"));
    }
    s
}

/// `1h02m03s`, `3m12s`, `12s`, `300ms`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        return format!("{}ms", d.as_millis());
    }
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, s) => format!("{h}h{m:02}m{s:02}s"),
    }
}

/// Whose a reassignment in flight is, for `status` and `cancel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Its target is the plan's for the partition (`-f PLAN`).
    Plan,
    /// No plan given: its target balances the partition over clusters and zones, as kpool's
    /// moves do.
    Balanced,
    /// Anything else: someone else's.
    Other,
}

/// Which in-flight reassignments are kpool's: with a plan, those moving to the plan's
/// target; without, those moving to a target that complies with the rack rule.
fn owners(
    ongoing: &[OngoingReassignment],
    plan: Option<&[Move]>,
    snapshot: &Snapshot,
    policy: &Policy,
) -> Vec<Owner> {
    let inputs = input::from_snapshot(snapshot);
    let layout = Layout::new(policy, &inputs.brokers, None);
    let targets: BTreeMap<(&str, i32), &[i32]> = plan
        .unwrap_or(&[])
        .iter()
        .map(|m| ((m.topic.as_str(), m.partition), m.to.as_slice()))
        .collect();
    ongoing
        .iter()
        .map(|o| {
            let target = o.target();
            match plan {
                Some(_) => match targets.get(&(o.topic.as_str(), o.partition)) {
                    Some(t) if *t == target.as_slice() => Owner::Plan,
                    _ => Owner::Other,
                },
                None if layout.complies(&target) => Owner::Balanced,
                None => Owner::Other,
            }
        })
        .collect()
}

/// What `racks status` found.
#[derive(Debug)]
pub struct StatusReport {
    /// Reassignments in flight, with whose they are.
    pub ongoing: Vec<(OngoingReassignment, Owner)>,
    /// Throttle configs set, per broker or topic that has any.
    pub throttles: Vec<(ConfigResource, BTreeMap<String, String>)>,
    /// Brokers whose configs could not be read, with the first error.
    pub unread: Vec<(ConfigResource, String)>,
}

impl StatusReport {
    /// 0 nothing in flight and no throttle set; 2 reassignments in flight; 3 none in
    /// flight, but throttles are still set.
    pub fn code(&self) -> u8 {
        if !self.ongoing.is_empty() {
            2
        } else if !self.throttles.is_empty() {
            3
        } else {
            0
        }
    }
}

/// A throttle rate of Long.MAX_VALUE, Kafka's default: replication is not throttled.
const UNTHROTTLED: &str = "9223372036854775807";

/// The throttle configs kpool sets.
const THROTTLE_KEYS: [&str; 4] = [
    LEADER_RATE,
    FOLLOWER_RATE,
    LEADER_REPLICAS,
    FOLLOWER_REPLICAS,
];

/// `racks status`: reassignments in flight and replication throttles set.
pub async fn status(
    client: &mut KafkaClient,
    policy: &Policy,
    plan: Option<&[Move]>,
) -> Result<StatusReport, KafkaError> {
    let snapshot = client.snapshot().await?;
    let ongoing = client.list_partition_reassignments().await?;
    let owners = owners(&ongoing, plan, &snapshot, policy);
    let mut resources: Vec<ConfigResource> = snapshot
        .brokers
        .iter()
        .map(|b| ConfigResource::Broker(b.id))
        .collect();
    resources.extend(
        snapshot
            .topics
            .iter()
            .map(|t| ConfigResource::Topic(t.name.clone())),
    );
    let read = client.describe_configs(&resources, &THROTTLE_KEYS).await?;
    let mut throttles = Vec::new();
    let mut unread = Vec::new();
    for (resource, result) in read {
        match result {
            Ok(mut configs) => {
                // Kafka reports an unset rate as its default, Long.MAX_VALUE: no throttle.
                configs.retain(|_, v| v.as_str() != UNTHROTTLED);
                if !configs.is_empty() {
                    throttles.push((resource, configs));
                }
            }
            Err(e) => unread.push((resource, e.to_string())),
        }
    }
    Ok(StatusReport {
        ongoing: ongoing.into_iter().zip(owners).collect(),
        throttles,
        unread,
    })
}

/// Writes a status report, one line per reassignment and per throttled resource.
pub fn write_status(r: &StatusReport, out: &mut dyn Write) -> std::io::Result<()> {
    let p = "racks status:";
    writeln!(out, "{p} {} reassignments in flight", r.ongoing.len())?;
    for (o, owner) in &r.ongoing {
        writeln!(
            out,
            "  {}: {:?} -> {:?}, adding {:?}, removing {:?} ({})",
            o.name(),
            o.original(),
            o.target(),
            o.adding,
            o.removing,
            match owner {
                Owner::Plan => "the plan's",
                Owner::Balanced => "toward a balanced target: kpool's, or like it",
                Owner::Other => "not kpool's: left alone by apply and cancel",
            }
        )?;
    }
    let brokers = r
        .throttles
        .iter()
        .filter(|(res, _)| matches!(res, ConfigResource::Broker(_)))
        .count();
    writeln!(
        out,
        "{p} replication throttles set on {brokers} brokers and {} topics",
        r.throttles.len() - brokers
    )?;
    for (resource, configs) in &r.throttles {
        let list: Vec<String> = configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        writeln!(out, "  {resource}: {}", list.join(", "))?;
    }
    if let Some((_, first)) = r.unread.first() {
        let names: Vec<String> = r.unread.iter().map(|(res, _)| res.to_string()).collect();
        writeln!(
            out,
            "{p} could not read the throttles of {} (a broker answers only for itself; \
             its advertised address may not be reachable from here): {first}",
            names.join(", ")
        )?;
    }
    Ok(())
}

/// What `racks cancel` did.
#[derive(Debug, Default)]
pub struct CancelReport {
    /// Partitions whose reassignment was cancelled (back to their original replicas).
    pub cancelled: Vec<String>,
    /// Partitions whose reassignment finished before the cancel reached it.
    pub finished: Vec<String>,
    /// Reassignments in flight that are not kpool's, left alone, with their target.
    pub left_alone: Vec<(String, Vec<i32>)>,
    /// Cancels or throttle clears Kafka refused.
    pub errors: Vec<String>,
    /// Config changes sent to clear throttles.
    pub cleared: usize,
}

impl CancelReport {
    /// 0 done; 1 some cancel or throttle clear failed; 4 done, but reassignments that are
    /// not kpool's were left alone.
    pub fn code(&self) -> u8 {
        if !self.errors.is_empty() {
            1
        } else if !self.left_alone.is_empty() {
            4
        } else {
            0
        }
    }
}

/// `racks cancel`: cancels kpool's reassignments in flight (see [`Owner`]) and clears the
/// throttles they (and, with a plan, any of its moves) can have set, except on brokers a
/// reassignment left in flight still involves.
pub async fn cancel(
    client: &mut KafkaClient,
    policy: &Policy,
    plan: Option<&[Move]>,
) -> Result<CancelReport, KafkaError> {
    let snapshot = client.snapshot().await?;
    let ongoing = client.list_partition_reassignments().await?;
    let owners = owners(&ongoing, plan, &snapshot, policy);
    let mut report = CancelReport::default();
    let mut ours: Vec<&OngoingReassignment> = Vec::new();
    let mut busy: BTreeSet<i32> = BTreeSet::new();
    for (o, owner) in ongoing.iter().zip(&owners) {
        if *owner == Owner::Other {
            report.left_alone.push((o.name(), o.target()));
            busy.extend(o.replicas.iter().copied());
        } else {
            ours.push(o);
        }
    }
    let requests: Vec<Reassignment> = ours
        .iter()
        .map(|o| Reassignment {
            topic: o.topic.clone(),
            partition: o.partition,
            replicas: None,
        })
        .collect();
    for outcome in client.alter_partition_reassignments(&requests).await? {
        let name = format!("{}-{}", outcome.topic, outcome.partition);
        match (outcome.code(), outcome.error) {
            (0, _) => report.cancelled.push(name),
            (NO_REASSIGNMENT_IN_PROGRESS, _) => report.finished.push(name),
            (_, Some(e)) => report.errors.push(e.to_string()),
            (_, None) => {}
        }
    }

    // Every entry a move of these partitions can have put in the lists, and every broker
    // it involves: the cancelled ones, and with a plan all of its moves.
    let mut entries: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut brokers: BTreeSet<i32> = BTreeSet::new();
    for o in &ours {
        for b in &o.replicas {
            entries
                .entry(&o.topic)
                .or_default()
                .insert(format!("{}:{b}", o.partition));
            brokers.insert(*b);
        }
    }
    let current: BTreeMap<(&str, i32), &[i32]> = snapshot
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| ((t.name.as_str(), p.index), p.replicas.as_slice()))
        })
        .collect();
    for m in plan.unwrap_or(&[]) {
        let now = current
            .get(&(m.topic.as_str(), m.partition))
            .copied()
            .unwrap_or(&[]);
        for b in m.to.iter().chain(now) {
            entries
                .entry(&m.topic)
                .or_default()
                .insert(format!("{}:{b}", m.partition));
            brokers.insert(*b);
        }
    }
    let mut changes: Vec<ConfigAlteration> = brokers
        .difference(&busy)
        .map(|&b| ConfigAlteration {
            resource: ConfigResource::Broker(b),
            changes: vec![
                (LEADER_RATE.to_owned(), ConfigOp::Delete),
                (FOLLOWER_RATE.to_owned(), ConfigOp::Delete),
            ],
        })
        .collect();
    let known: BTreeSet<&str> = snapshot.topics.iter().map(|t| t.name.as_str()).collect();
    changes.extend(
        entries
            .into_iter()
            .filter(|(t, _)| known.contains(t))
            .map(|(topic, list)| {
                let value = list.into_iter().collect::<Vec<_>>().join(",");
                ConfigAlteration {
                    resource: ConfigResource::Topic(topic.to_owned()),
                    changes: vec![
                        (
                            LEADER_REPLICAS.to_owned(),
                            ConfigOp::Subtract(value.clone()),
                        ),
                        (FOLLOWER_REPLICAS.to_owned(), ConfigOp::Subtract(value)),
                    ],
                }
            }),
    );
    report.cleared = changes.len();
    for o in client.alter_configs(&changes).await? {
        if let Some(e) = o.error {
            report.errors.push(e.to_string());
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_a_clock() {
        assert_eq!(human(Duration::from_millis(300)), "300ms");
        assert_eq!(human(Duration::from_secs(12)), "12s");
        assert_eq!(human(Duration::from_secs(192)), "3m12s");
        assert_eq!(human(Duration::from_secs(3723)), "1h02m03s");
    }

    #[test]
    fn progress_lines_count_every_state() {
        let c = Counts {
            done: 3,
            in_flight: 5,
            pending: 2,
            left_alone: 1,
            adopted: 2,
        };
        assert_eq!(
            line(&c, 11, Some("1 partition under min ISR: t-0")),
            "racks apply: 3/11 done, 5 in flight (2 adopted from an earlier run), 2 pending, \
             1 left alone; paused, no new moves while 1 partition under min ISR: t-0"
        );
    }

    #[test]
    fn exit_codes_are_distinct() {
        let codes: BTreeSet<u8> = [
            ApplyStatus::Done,
            ApplyStatus::PartlyLeftAlone,
            ApplyStatus::TimedOutPaused,
            ApplyStatus::TimedOut,
        ]
        .iter()
        .map(|s| s.code())
        .collect();
        assert_eq!(codes.len(), 4);
        assert!(!codes.contains(&1), "1 is an error");
    }
}
