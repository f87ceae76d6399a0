//! Self-healing the rack distribution (`racks.selfHealing`): one agent at a time (the
//! [`Lease`](crate::lease)) plans the fewest moves that put every partition back in the
//! rule and applies them with the executor, for offenders that persist across polls
//! ([`persist`]) and within a per-run move budget.
//!
//! Each round: hold the Lease (or do nothing), read the cluster, plan, decide ([`choose`],
//! pure), then per reassignment an audit line, an Event on the Lease and a metric, and the
//! executor's run, during which the Lease is renewed; losing it stops the run (moves in
//! flight carry on in Kafka, and the next holder's executor adopts them, since it takes its
//! state from the cluster). Healing waits while any replica is on a broker that is down:
//! with a zone or a whole Kubernetes cluster away, moving its replicas elsewhere would break
//! the rule on purpose and copy data that is about to come back.

pub mod persist;

use std::sync::Arc;
use std::time::Duration;

use kpool_cli::audit::{Action, AuditRecord, Decision, Subject};
use kpool_policy::Policy;
use kpool_policy::model::{Mode, Racks};
use tokio::sync::watch;

use crate::guard::Target;
use crate::guard::act::Actor;
use crate::kafka::KafkaClient;
use crate::lease::{Held, LeaseLock};
use crate::racks::apply::{ApplyConfig, ApplyStatus, apply};
use crate::racks::execute::{ExecOptions, Move};
use crate::racks::input;
use crate::racks::plan::{Layout, PartitionMove, Plan, PlanOptions, plan_selected};
use crate::service::Agent;
pub use persist::Persistence;

/// The Lease healing agents share, in kpool's namespace.
pub const LEASE_NAME: &str = "kpool-racks";
/// The Event reason of a reassignment.
pub const EVENT_REASON: &str = "RackReassignment";

/// What one round does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Round {
    /// No partition is due.
    Nothing,
    /// Partitions offend, but healing waits (the reason).
    Wait(String),
    /// Reassign these (`mode: enforce`).
    Apply(Vec<PartitionMove>),
    /// These are due, but `mode: audit` only reports them.
    Report(Vec<PartitionMove>),
}

/// The pure decision of a round: `plan` is the planner's over the whole cluster (partitions
/// already being reassigned left out), `persistence` counts offenders across rounds.
pub fn choose(plan: &Plan, persistence: &mut Persistence, racks: &Racks, mode: Mode) -> Round {
    let offline: usize = plan.moves.iter().map(|m| m.offline).sum();
    if offline > 0 {
        // Not counted: the count starts again once the cluster is whole.
        persistence.observe([]);
        return Round::Wait(format!(
            "{offline} replicas are on brokers that are down or unknown: healing waits until \
             every broker is back"
        ));
    }
    let due = persistence.observe(
        plan.moves
            .iter()
            .map(|m| (m.topic.as_str(), m.partition, m.from.as_slice())),
    );
    if due.is_empty() {
        return if plan.moves.is_empty() {
            Round::Nothing
        } else {
            Round::Wait(format!(
                "{} offending partitions, none yet in {} polls in a row",
                plan.moves.len(),
                racks.persist_polls
            ))
        };
    }
    let due: std::collections::HashSet<(&str, i32)> =
        due.iter().map(|(t, p)| (t.as_str(), *p)).collect();
    let budget = usize::try_from(racks.moves_per_run).unwrap_or(usize::MAX);
    let mut used = 0;
    let mut chosen = Vec::new();
    for m in &plan.moves {
        if due.contains(&(m.topic.as_str(), m.partition)) && used + m.moves <= budget {
            used += m.moves;
            chosen.push(m.clone());
        }
    }
    if chosen.is_empty() {
        return Round::Wait(format!(
            "every due partition needs more than racks.movesPerRun ({budget}) moves"
        ));
    }
    match mode {
        Mode::Enforce => Round::Apply(chosen),
        Mode::Audit => Round::Report(chosen),
    }
}

/// Where the healer's audit records go (stdout in the agent; collected in tests).
pub type AuditSink = Arc<dyn Fn(&AuditRecord) + Send + Sync>;

/// What the healing loop needs.
pub struct Healer {
    pub agent: Arc<Agent>,
    pub policy: Arc<Policy>,
    pub kafka: KafkaClient,
    pub lease: LeaseLock,
    /// Where Events go (the Lease's namespace), if any.
    pub events: Option<(Actor, String)>,
    /// Between rounds.
    pub interval: Duration,
    /// The executor's poll interval, and how long one run may take.
    pub apply: ApplyConfig,
    pub audit: AuditSink,
}

impl std::fmt::Debug for Healer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Healer")
            .field("lease", &self.lease)
            .field("interval", &self.interval)
            .field("apply", &self.apply)
            .finish_non_exhaustive()
    }
}

impl Healer {
    /// Rounds every `interval` until `stop`; gives the Lease up on the way out.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut persistence = Persistence::new(self.policy.spec().racks.persist_polls);
        loop {
            self.round(&mut persistence, &mut stop).await;
            if crate::backoff::sleep_or_stop(self.interval, &mut stop).await {
                break;
            }
        }
        if let Err(e) = self.lease.release().await {
            tracing::warn!(error = %e, "cannot release the racks Lease");
        }
        self.agent.metrics().racks_leader.set(0);
    }

    /// One round (see the module docs).
    pub async fn round(&mut self, persistence: &mut Persistence, stop: &mut watch::Receiver<bool>) {
        let metrics = self.agent.metrics();
        match self.lease.try_acquire_or_renew().await {
            Ok(Held::Leading) => {
                metrics.racks_leader.set(1);
            }
            Ok(Held::Following { .. }) => {
                metrics.racks_leader.set(0);
                // Another agent heals; a count kept here would be stale when this one leads.
                persistence.observe([]);
                return;
            }
            Err(e) => {
                metrics.racks_leader.set(0);
                tracing::warn!(error = %e, "racks healing: cannot read the Lease; skipping this round");
                return;
            }
        }
        let snapshot = match self.kafka.snapshot().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "racks healing: cannot read the cluster; skipping this round");
                return;
            }
        };
        let inputs = input::from_snapshot(&snapshot);
        let layout = Layout::new(&self.policy, &inputs.brokers, None);
        let reassigning: std::collections::HashSet<usize> =
            inputs.reassigning.iter().copied().collect();
        let plan = plan_selected(
            &layout,
            &inputs.partitions,
            |i, _| !reassigning.contains(&i),
            &PlanOptions::default(),
        );
        let spec = self.policy.spec();
        let round = choose(&plan, persistence, &spec.racks, spec.mode);
        metrics.racks_due.set(match &round {
            Round::Apply(m) | Round::Report(m) => i64::try_from(m.len()).unwrap_or(i64::MAX),
            _ => 0,
        });
        match round {
            Round::Nothing => {}
            Round::Wait(reason) => tracing::info!(%reason, "racks healing waits"),
            Round::Report(moves) => {
                for m in &moves {
                    self.record(m, Action::ReportedAuditMode, "").await;
                }
            }
            Round::Apply(moves) => self.heal(moves, persistence, stop).await,
        }
    }

    async fn heal(
        &mut self,
        moves: Vec<PartitionMove>,
        persistence: &mut Persistence,
        stop: &mut watch::Receiver<bool>,
    ) {
        for m in &moves {
            self.record(m, Action::ReassignmentSubmitted, "").await;
        }
        let racks = &self.policy.spec().racks;
        let mut config = self.apply;
        config.options = ExecOptions {
            max_per_broker: usize::try_from(racks.max_moves_per_broker).unwrap_or(usize::MAX),
            throttle: (racks.throttle_bytes_per_second > 0)
                .then_some(racks.throttle_bytes_per_second),
        };
        let exec_moves: Vec<Move> = moves.iter().map(Move::from).collect();
        let mut progress = ProgressLog::default();
        let renew_every = self.lease_renewal();
        let policy = self.policy.clone();
        let outcome = {
            let run = apply(&mut self.kafka, &policy, exec_moves, &config, &mut progress);
            tokio::pin!(run);
            let mut renew = tokio::time::interval(renew_every);
            renew.tick().await;
            loop {
                tokio::select! {
                    r = &mut run => break Some(r),
                    _ = renew.tick() => {
                        match self.lease.try_acquire_or_renew().await {
                            Ok(Held::Leading) => {}
                            other => {
                                tracing::warn!(?other, "racks healing: the Lease is lost; stopping the run (moves in flight carry on in Kafka)");
                                break None;
                            }
                        }
                    }
                    _ = stop.changed() => break None,
                }
            }
        };
        let metrics = self.agent.metrics();
        let Some(outcome) = outcome else {
            metrics.racks_runs(RunResult::Stopped);
            return;
        };
        match outcome {
            Ok(report) => {
                let left: std::collections::HashMap<&str, String> = report
                    .left_alone
                    .iter()
                    .map(|(name, why)| (name.as_str(), why.to_string()))
                    .collect();
                for m in &moves {
                    let name = format!("{}-{}", m.topic, m.partition);
                    if let Some(why) = left.get(name.as_str()) {
                        self.record(m, Action::ReassignmentLeftAlone, why).await;
                    } else if report.status != ApplyStatus::TimedOut
                        && report.status != ApplyStatus::TimedOutPaused
                    {
                        persistence.forget(&m.topic, m.partition);
                        metrics.racks_reassignments("reassignment-done");
                    }
                }
                metrics.racks_runs(match report.status {
                    ApplyStatus::Done => RunResult::Done,
                    ApplyStatus::PartlyLeftAlone => RunResult::PartlyLeftAlone,
                    ApplyStatus::TimedOut | ApplyStatus::TimedOutPaused => RunResult::TimedOut,
                });
                tracing::info!(
                    status = ?report.status,
                    moves = report.total,
                    left_alone = report.left_alone.len(),
                    elapsed = ?report.elapsed,
                    "racks healing run ended"
                );
            }
            Err(e) => {
                metrics.racks_runs(RunResult::Failed);
                tracing::warn!(error = %e, "racks healing run failed; the next round continues from what the cluster reports");
            }
        }
    }

    fn lease_renewal(&self) -> Duration {
        (self.interval / 3).max(Duration::from_millis(10))
    }

    /// The audit line, the Event and the metric of one reassignment.
    async fn record(&self, m: &PartitionMove, action: Action, why: &str) {
        let name = format!("{}-{}", m.topic, m.partition);
        let change = format!("replicas {:?} -> {:?} ({} moved)", m.from, m.to, m.moves);
        let reason = if why.is_empty() {
            change.clone()
        } else {
            format!("{change}: {why}")
        };
        let spec = self.policy.spec();
        (self.audit)(&AuditRecord {
            time: kpool_cli::clock::now_rfc3339(),
            component: "agent",
            decision: Decision::RackReassignment,
            subject: Subject {
                namespace: String::new(),
                name: name.clone(),
                uid: String::new(),
            },
            reason: reason.clone(),
            reason_code: "rack-rule".to_owned(),
            policy_hash: self.policy.hash().to_owned(),
            action,
            mode: spec.mode,
            admission: None,
        });
        self.agent.metrics().racks_reassignments(action.as_str());
        if let Some((actor, namespace)) = &self.events {
            let target = Target::Lease {
                namespace: namespace.clone(),
                name: LEASE_NAME.to_owned(),
            };
            let note = format!("{name}: {reason}");
            if let Err(e) = actor
                .event(&target, EVENT_REASON, action.as_str(), &note)
                .await
            {
                tracing::warn!(error = %e, "cannot record a rack reassignment Event");
            }
        }
    }
}

/// How a healing run ended, as `kpool_agent_racks_runs_total{result}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunResult {
    Done,
    PartlyLeftAlone,
    TimedOut,
    Failed,
    /// The Lease was lost or the agent stopped.
    Stopped,
}

impl RunResult {
    pub const ALL: [Self; 5] = [
        Self::Done,
        Self::PartlyLeftAlone,
        Self::TimedOut,
        Self::Failed,
        Self::Stopped,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::PartlyLeftAlone => "partly-left-alone",
            Self::TimedOut => "timed-out",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
        }
    }
}

/// The executor's progress lines, logged.
#[derive(Default)]
struct ProgressLog(Vec<u8>);

impl std::io::Write for ProgressLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        while let Some(end) = self.0.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.0.drain(..=end).collect();
            tracing::info!(progress = %String::from_utf8_lossy(&line).trim_end(), "racks healing");
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
