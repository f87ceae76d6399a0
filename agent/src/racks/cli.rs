//! `kpool-agent racks ...`: the command line of the rack planner. `racks plan` reads the
//! cluster (or a `--from` file), plans, prints the plan as kafka-reassign-partitions JSON
//! on stdout and a summary on stderr, and says in its exit code what a script should do.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use kpool_policy::Policy;
use regex::Regex;

use super::input::{self, Inputs};
use super::plan::{Layout, Plan, PlanOptions, plan_selected};
use crate::kafka::{KafkaClient, KafkaConfig, parse_bootstrap};

/// Exit codes of `racks plan`, for `--help`.
const PLAN_EXIT_CODES: &str = "\
Exit codes:
  0  nothing to do: every partition checked complies (an empty plan is printed)
  1  error (usage, policy, input file, Kafka), nothing printed on stdout
  2  plan printed: moves are needed
  3  some partitions are infeasible (named on stderr); the plan for the rest is printed";

/// The `racks` subcommands.
#[derive(Debug, Subcommand)]
pub enum RacksCommand {
    /// Plan the fewest replica moves that balance every partition over Kubernetes clusters
    /// and zones (RF 6 over 2 x 3: 3 per cluster, 2 per zone; floor/ceil of RF over the
    /// clusters and over the zones otherwise). Replicas on dead or unknown brokers always
    /// move, first; the current leader stays first and in place whenever a plan of as few
    /// moves allows. Prints kafka-reassign-partitions JSON on stdout and a summary on
    /// stderr.
    #[command(after_help = PLAN_EXIT_CODES)]
    Plan(PlanArgs),
}

/// `racks plan` arguments.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["from", "kafka_bootstrap"])))]
pub struct PlanArgs {
    /// Pool policy file (zones and rackFormat); without it the built-in default
    /// (examples/policy.yaml).
    #[arg(long, env = "KPOOL_POLICY", value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Plan offline from a JSON file: {"brokers":[{"id":0,"rack":"k8s-a-eu-west-1a",
    /// "alive":true},..],"partitions":[{"topic":"t","partition":0,"replicas":[0,3,..]},..]}
    /// (the first replica is the leader).
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
    /// Read brokers and partitions from Kafka (Metadata), comma-separated host:port.
    #[arg(long, value_name = "HOST:PORT,...")]
    pub kafka_bootstrap: Option<String>,
    /// Timeout of each Kafka request.
    #[arg(long, default_value = "10s", value_parser = kpool_cli::duration::parse_duration)]
    pub kafka_timeout: Duration,
    /// Only plan topics whose whole name matches this regular expression (Rust regex
    /// syntax); the others still count in brokers' loads.
    #[arg(long, value_name = "REGEX", value_parser = parse_topics)]
    pub topics: Option<Regex>,
    /// Plan at most N replica moves: whole partitions, those with replicas on dead or
    /// unknown brokers first; stderr says how many were left out.
    #[arg(long, value_name = "N")]
    pub max_moves: Option<usize>,
    /// The Kubernetes clusters to balance over, comma-separated (default: those named in
    /// the brokers' racks). Set it when a whole cluster may be down, so its replicas are
    /// not all planned into the others.
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    pub clusters: Vec<String>,
}

/// `--topics`: anchored, so `orders` does not also pick `orders-dlq`.
fn parse_topics(s: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{s})$")).map_err(|e| e.to_string())
}

/// What `racks plan` found, as its exit code says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanStatus {
    /// Every partition checked complies.
    NothingToDo,
    /// Moves are needed (plan printed).
    Planned,
    /// Some partitions cannot be fixed with the live brokers.
    Infeasible,
}

impl PlanStatus {
    /// The process exit code (see `racks plan --help`).
    pub fn code(self) -> u8 {
        match self {
            Self::NothingToDo => 0,
            Self::Planned => 2,
            Self::Infeasible => 3,
        }
    }

    fn of(plan: &Plan) -> Self {
        if plan.summary.infeasible > 0 {
            Self::Infeasible
        } else if plan.summary.offenders > 0 {
            Self::Planned
        } else {
            Self::NothingToDo
        }
    }
}

/// Usage errors of `racks` exit 1, not clap's 2, which means "plan printed" there.
pub const USAGE_ERROR_CODE: u8 = 1;

/// Runs `racks plan`: reads the inputs, plans, writes the JSON to `out` and the summary
/// to `err`.
pub fn run_plan(
    args: &PlanArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<PlanStatus> {
    let policy = match &args.policy {
        Some(path) => Policy::from_file(path)?,
        None => Policy::builtin()?,
    };
    let inputs = match (&args.from, &args.kafka_bootstrap) {
        (Some(path), _) => input::read_file(path, &policy)?,
        (None, Some(bootstrap)) => read_kafka(bootstrap, args.kafka_timeout)?,
        (None, None) => anyhow::bail!("no input: pass --from FILE or --kafka-bootstrap HOST:PORT"),
    };
    let clusters = (!args.clusters.is_empty()).then_some(args.clusters.as_slice());
    let layout = Layout::new(&policy, &inputs.brokers, clusters);
    let mut skip = vec![false; inputs.partitions.len()];
    for i in &inputs.reassigning {
        if let Some(s) = skip.get_mut(*i) {
            *s = true;
        }
    }
    let topics = args.topics.as_ref();
    let selected = |i: usize, topic: &str| !skip[i] && topics.is_none_or(|re| re.is_match(topic));
    let plan = plan_selected(
        &layout,
        &inputs.partitions,
        |i, a| selected(i, &a.topic),
        &PlanOptions {
            max_moves: args.max_moves,
        },
    );
    write_reassignment(&plan, out).context("cannot write the plan to stdout")?;
    write_summary(&plan, &layout, &inputs, &args.topics, args.max_moves, err)
        .context("cannot write the summary to stderr")?;
    Ok(PlanStatus::of(&plan))
}

fn read_kafka(bootstrap: &str, timeout: Duration) -> anyhow::Result<Inputs> {
    let config = KafkaConfig {
        bootstrap: parse_bootstrap(bootstrap).context("--kafka-bootstrap")?,
        timeout,
        ..KafkaConfig::default()
    };
    let mut client = KafkaClient::new(config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let snapshot = runtime
        .block_on(client.snapshot())
        .context("cannot read the cluster's brokers and partitions")?;
    Ok(input::from_snapshot(&snapshot))
}

/// The plan as kafka-reassign-partitions reads it (version 1), one partition per line.
pub fn write_reassignment(plan: &Plan, out: &mut dyn Write) -> std::io::Result<()> {
    #[derive(serde::Serialize)]
    struct Entry<'a> {
        topic: &'a str,
        partition: i32,
        replicas: &'a [i32],
        log_dirs: Vec<&'static str>,
    }
    out.write_all(b"{\"version\":1,\"partitions\":[")?;
    for (i, m) in plan.moves.iter().enumerate() {
        out.write_all(if i == 0 { b"\n" } else { b",\n" })?;
        let entry = Entry {
            topic: &m.topic,
            partition: m.partition,
            replicas: &m.to,
            log_dirs: vec!["any"; m.to.len()],
        };
        serde_json::to_writer(&mut *out, &entry)?;
    }
    out.write_all(if plan.moves.is_empty() {
        b"]}\n"
    } else {
        b"\n]}\n"
    })?;
    out.flush()
}

/// How many partitions a summary line names before "and N more".
const NAMED: usize = 10;

fn names(list: &[String]) -> String {
    let mut s = list
        .iter()
        .take(NAMED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if list.len() > NAMED {
        s.push_str(&format!(" (and {} more)", list.len() - NAMED));
    }
    s
}

fn write_summary(
    plan: &Plan,
    layout: &Layout,
    inputs: &Inputs,
    topics: &Option<Regex>,
    max_moves: Option<usize>,
    err: &mut dyn Write,
) -> std::io::Result<()> {
    let s = &plan.summary;
    let p = "racks plan:";
    writeln!(
        err,
        "{p} {} partitions checked{}, balanced over {} clusters ({}) x {} zones ({})",
        s.partitions_checked,
        topics
            .as_ref()
            .map(|re| format!(" (topics matching {})", re.as_str()))
            .unwrap_or_default(),
        layout.clusters().len(),
        layout.clusters().join(", "),
        layout.zones().len(),
        layout.zones().join(", "),
    )?;
    let planned = plan.moves.len();
    writeln!(
        err,
        "{p} {} offenders: {planned} planned with {} moves ({} replacing replicas on dead or unknown brokers), {} infeasible",
        s.offenders, s.moves, s.offline_moves, s.infeasible
    )?;
    let mut by_reason: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for i in &plan.infeasible {
        by_reason
            .entry(&i.reason)
            .or_default()
            .push(format!("{}-{}", i.topic, i.partition));
    }
    for (reason, parts) in &by_reason {
        writeln!(
            err,
            "{p} infeasible, {} partitions: {reason}: {}",
            parts.len(),
            names(parts)
        )?;
    }
    if s.left_out > 0 {
        writeln!(
            err,
            "{p} --max-moves {} left out {} partitions ({} moves); run again after this plan is applied",
            max_moves.unwrap_or(0),
            s.left_out,
            s.left_out_moves
        )?;
    }
    if !inputs.reassigning.is_empty() {
        let list: Vec<String> = inputs
            .reassigning
            .iter()
            .filter_map(|i| inputs.partitions.get(*i))
            .map(|a| format!("{}-{}", a.topic, a.partition))
            .collect();
        writeln!(
            err,
            "{p} left alone, a reassignment is in progress: {}",
            names(&list)
        )?;
    }
    if !layout.unplaced_brokers().is_empty() {
        let list: Vec<String> = layout
            .unplaced_brokers()
            .iter()
            .map(ToString::to_string)
            .collect();
        writeln!(
            err,
            "{p} brokers whose rack does not parse with the policy's rackFormat (their replicas move, none arrive): {}",
            names(&list)
        )?;
    }
    Ok(())
}
