//! `kpool-agent racks ...`: the command line of the rack planner and executor. `racks plan`
//! reads the cluster (or a `--from` file), plans, prints the plan as
//! kafka-reassign-partitions JSON on stdout and a summary on stderr; `racks apply` carries a
//! plan out, `racks status` shows reassignments in flight and throttles, `racks cancel`
//! stops kpool's moves. Each says in its exit code what a script should do.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use kpool_policy::Policy;
use regex::Regex;

use super::apply::{self, ApplyConfig, ApplyReport, ApplyStatus};
use super::execute::{DEFAULT_MAX_PER_BROKER, ExecOptions, Move};
use super::input::{self, Inputs};
use super::plan::{Layout, Plan, PlanOptions, plan_selected};
use super::reassignment;
use crate::kafka::{KafkaClient, KafkaConfig, TlsSettings, parse_bootstrap};

/// Exit codes of `racks plan`, for `--help`.
const PLAN_EXIT_CODES: &str = "\
Exit codes:
  0  nothing to do: every partition checked complies (an empty plan is printed)
  1  error (usage, policy, input file, Kafka), nothing printed on stdout
  2  plan printed: moves are needed
  3  some partitions are infeasible (named on stderr); the plan for the rest is printed";

/// Exit codes of `racks apply`, for `--help`.
const APPLY_EXIT_CODES: &str = "\
Exit codes:
  0  done: every move of the plan is in place and preferred leaders were elected
  1  error (usage, plan file, Kafka, a throttle Kafka refused); moves already in flight carry
     on in Kafka, and a re-run continues from what the cluster reports
  2  stopped at --timeout while paused: a partition was offline or under min ISR (named on
     stderr); re-run once the cluster is whole
  3  stopped at --timeout with moves still in flight or waiting; re-run to continue
  4  finished, but some moves were left alone (another reassignment in flight, replicas
     changed since the plan, refused by Kafka) or a preferred leader could not be elected;
     each named on stderr with the reason";

/// Exit codes of `racks status`, for `--help`.
const STATUS_EXIT_CODES: &str = "\
Exit codes:
  0  no reassignment in flight and no replication throttle set
  1  error (usage, Kafka)
  2  reassignments in flight (listed)
  3  no reassignment in flight, but replication throttles are still set (racks cancel
     clears them)";

/// Exit codes of `racks cancel`, for `--help`.
const CANCEL_EXIT_CODES: &str = "\
Exit codes:
  0  kpool's reassignments in flight cancelled (or none were) and their throttles cleared
  1  error (usage, plan file, Kafka, or a cancel or throttle clear Kafka refused, named on
     stderr)
  4  done, but reassignments in flight that are not kpool's were left alone (named on
     stderr)";

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
    /// Carry out a plan (kafka-reassign-partitions JSON, as racks plan prints it): submit
    /// the moves in batches of at most --max-per-broker moves in or out per broker, with
    /// replication throttles when --throttle is given (set before a move starts, cleared as
    /// brokers finish), no new move while a partition is offline or under min ISR, and a
    /// preferred leader election at the end so the first replica of each moved partition
    /// leads. Progress on stderr. Safe to re-run after a crash or a timeout: moves in
    /// flight toward the plan's targets are adopted, never submitted twice, and partitions
    /// someone else is moving are left alone.
    #[command(after_help = APPLY_EXIT_CODES)]
    Apply(ApplyArgs),
    /// Show the reassignments in flight (whose they are) and the replication throttles set
    /// on brokers and topics, on stdout.
    #[command(after_help = STATUS_EXIT_CODES)]
    Status(StatusArgs),
    /// Cancel kpool's reassignments in flight (with -f, those moving to the plan's
    /// targets; without, those moving to a target balanced over clusters and zones) and
    /// clear their replication throttles. Other reassignments are left alone.
    #[command(after_help = CANCEL_EXIT_CODES)]
    Cancel(StatusArgs),
}

/// How to reach Kafka, for `apply`, `status` and `cancel` (the same variables as `run`).
#[derive(Debug, Args)]
pub struct KafkaArgs {
    /// Kafka brokers to bootstrap from, comma-separated host:port.
    #[arg(long, env = "KPOOL_KAFKA_BOOTSTRAP", value_name = "HOST:PORT,...")]
    pub kafka_bootstrap: String,
    /// Timeout of each Kafka request.
    #[arg(long, env = "KPOOL_KAFKA_TIMEOUT", default_value = "10s", value_parser = kpool_cli::duration::parse_duration)]
    pub kafka_timeout: Duration,
    /// Talk TLS to Kafka, trusting this CA (PEM).
    #[arg(long, env = "KPOOL_KAFKA_TLS_CA", value_name = "FILE")]
    pub kafka_tls_ca: Option<PathBuf>,
    /// Client certificate for Kafka mTLS (PEM).
    #[arg(
        long,
        env = "KPOOL_KAFKA_TLS_CERT",
        value_name = "FILE",
        requires = "kafka_tls_key"
    )]
    pub kafka_tls_cert: Option<PathBuf>,
    /// Client key for Kafka mTLS (PEM).
    #[arg(
        long,
        env = "KPOOL_KAFKA_TLS_KEY",
        value_name = "FILE",
        requires = "kafka_tls_cert"
    )]
    pub kafka_tls_key: Option<PathBuf>,
    /// Name to verify the brokers' certificates against (default: the host dialled).
    #[arg(long, env = "KPOOL_KAFKA_TLS_SERVER_NAME")]
    pub kafka_tls_server_name: Option<String>,
    /// Pool policy file (zones and rackFormat); without it the built-in default.
    #[arg(long, env = "KPOOL_POLICY", value_name = "FILE")]
    pub policy: Option<PathBuf>,
}

impl KafkaArgs {
    fn client(&self) -> anyhow::Result<KafkaClient> {
        let tls =
            (self.kafka_tls_ca.is_some() || self.kafka_tls_cert.is_some()).then(|| TlsSettings {
                ca_file: self.kafka_tls_ca.clone(),
                client_cert: self.kafka_tls_cert.clone(),
                client_key: self.kafka_tls_key.clone(),
                server_name: self.kafka_tls_server_name.clone(),
            });
        let config = KafkaConfig {
            bootstrap: parse_bootstrap(&self.kafka_bootstrap).context("--kafka-bootstrap")?,
            timeout: self.kafka_timeout,
            tls,
            ..KafkaConfig::default()
        };
        Ok(KafkaClient::new(config)?)
    }

    fn policy(&self) -> anyhow::Result<Policy> {
        Ok(match &self.policy {
            Some(path) => Policy::from_file(path)?,
            None => Policy::builtin()?,
        })
    }
}

/// `racks apply` arguments.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The plan: kafka-reassign-partitions JSON (version 1), as racks plan prints it; `-`
    /// reads stdin.
    #[arg(
        short = 'f',
        long = "file",
        env = "KPOOL_RACKS_PLAN",
        value_name = "PLAN"
    )]
    pub file: PathBuf,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Throttle replication of the moves to this rate (bytes per second; suffixes KB, MB,
    /// GB, KiB, MiB, GiB, an optional /s): set on every broker a move involves, for its
    /// replicas only, and cleared as they finish. Without it nothing is throttled.
    #[arg(long, env = "KPOOL_RACKS_THROTTLE", value_name = "BYTES/S", value_parser = parse_rate)]
    pub throttle: Option<u64>,
    /// At most this many moves in or out of each broker at once (reassignments someone
    /// else has in flight count too).
    #[arg(long, env = "KPOOL_RACKS_MAX_PER_BROKER", value_name = "N", default_value_t = DEFAULT_MAX_PER_BROKER, value_parser = parse_positive)]
    pub max_per_broker: usize,
    /// Stop after this long (e.g. 30m, 2h); moves in flight carry on in Kafka, and a re-run
    /// continues. Default: until done.
    #[arg(long, env = "KPOOL_RACKS_TIMEOUT", value_name = "DURATION", value_parser = kpool_cli::duration::parse_duration)]
    pub timeout: Option<Duration>,
    /// How often to poll the cluster for progress.
    #[arg(long, env = "KPOOL_RACKS_POLL_INTERVAL", value_name = "DURATION", default_value = "5s", value_parser = kpool_cli::duration::parse_duration)]
    pub poll_interval: Duration,
}

/// `racks status` and `racks cancel` arguments.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The plan kpool is applying (kafka-reassign-partitions JSON): its moves are kpool's.
    /// Without it, a reassignment toward a target balanced over clusters and zones counts
    /// as kpool's.
    #[arg(
        short = 'f',
        long = "file",
        env = "KPOOL_RACKS_PLAN",
        value_name = "PLAN"
    )]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

/// A count of at least 1.
fn parse_positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("expected at least 1, found 0".to_owned()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!(
            "expected a whole number of at least 1, found {s:?}"
        )),
    }
}

/// `--throttle`: bytes per second, with an optional unit and `/s`.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t).trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let n: u64 = number.parse().map_err(|_| {
        format!("expected bytes per second such as 10485760, 10MiB or 50MB/s, found {s:?}")
    })?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?}: expected B, KB, MB, GB, KiB, MiB or GiB"
            ));
        }
    };
    match n.checked_mul(scale) {
        Some(0) => Err(format!(
            "a throttle of 0 stops replication altogether; expected a positive rate, found {s:?}"
        )),
        Some(v) => Ok(v),
        None => Err(format!("{s:?} is too large")),
    }
}

fn read_plan(path: &std::path::Path) -> anyhow::Result<Vec<Move>> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("cannot read the plan from stdin")?;
        return Ok(reassignment::parse(&text, "stdin")?);
    }
    Ok(reassignment::read(path)?)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Runs `racks apply`: progress and the outcome on `err`.
pub fn run_apply(args: &ApplyArgs, err: &mut (dyn Write + Send)) -> anyhow::Result<ApplyStatus> {
    let moves = read_plan(&args.file)?;
    let policy = args.kafka.policy()?;
    let mut client = args.kafka.client()?;
    let config = ApplyConfig {
        options: ExecOptions {
            max_per_broker: args.max_per_broker,
            throttle: args.throttle,
        },
        interval: args.poll_interval,
        timeout: args.timeout,
        ..ApplyConfig::default()
    };
    let report = runtime()?.block_on(apply::apply(&mut client, &policy, moves, &config, err))?;
    write_apply_report(&report, args.timeout, err).context("cannot write to stderr")?;
    Ok(report.status)
}

/// The end of `racks apply`'s stderr: what was left alone and why, what a script or an
/// operator should do next.
pub fn write_apply_report(
    r: &ApplyReport,
    timeout: Option<Duration>,
    err: &mut dyn Write,
) -> std::io::Result<()> {
    let p = "racks apply:";
    let c = &r.counts;
    match r.status {
        ApplyStatus::Done | ApplyStatus::PartlyLeftAlone => writeln!(
            err,
            "{p} finished in {}: {} of {} moves in place ({} adopted from an earlier run), \
             {} left alone; preferred leader election asked for {} partitions",
            apply::human(r.elapsed),
            c.done,
            r.total,
            c.adopted,
            c.left_alone,
            r.elected
        )?,
        ApplyStatus::TimedOut | ApplyStatus::TimedOutPaused => writeln!(
            err,
            "{p} stopped at --timeout {}: {} of {} moves in place, {} in flight (they carry \
             on in Kafka), {} not started; re-run to continue, or racks cancel to stop them",
            timeout.map(apply::human).unwrap_or_default(),
            c.done,
            r.total,
            c.in_flight,
            c.pending
        )?,
    }
    if let Some(reason) = &r.paused {
        writeln!(err, "{p} paused: no new move while {reason}")?;
    }
    for (partition, why) in &r.left_alone {
        writeln!(err, "{p} left alone {partition}: {why}")?;
    }
    for (partition, why) in &r.not_elected {
        writeln!(
            err,
            "{p} preferred leader of {partition} not elected: {why}"
        )?;
    }
    if !r.throttled_brokers.is_empty() {
        let list: Vec<String> = r
            .throttled_brokers
            .iter()
            .map(ToString::to_string)
            .collect();
        writeln!(
            err,
            "{p} replication throttles stay set on brokers {} while their moves run (a re-run \
             or racks cancel clears them)",
            names(&list)
        )?;
    }
    Ok(())
}

/// Runs `racks status`: the report on `out`; returns the exit code.
pub fn run_status(args: &StatusArgs, out: &mut dyn Write) -> anyhow::Result<u8> {
    let plan = args.file.as_deref().map(read_plan).transpose()?;
    let policy = args.kafka.policy()?;
    let mut client = args.kafka.client()?;
    let report = runtime()?.block_on(apply::status(&mut client, &policy, plan.as_deref()))?;
    apply::write_status(&report, out).context("cannot write to stdout")?;
    Ok(report.code())
}

/// Runs `racks cancel`: what was done on `err`; returns the exit code.
pub fn run_cancel(args: &StatusArgs, err: &mut dyn Write) -> anyhow::Result<u8> {
    let plan = args.file.as_deref().map(read_plan).transpose()?;
    let policy = args.kafka.policy()?;
    let mut client = args.kafka.client()?;
    let r = runtime()?.block_on(apply::cancel(&mut client, &policy, plan.as_deref()))?;
    let p = "racks cancel:";
    let w = |err: &mut dyn Write| -> std::io::Result<()> {
        writeln!(
            err,
            "{p} cancelled {} reassignments{}; {} finished before the cancel reached them; \
             {} throttle changes sent",
            r.cancelled.len(),
            if r.cancelled.is_empty() {
                String::new()
            } else {
                format!(" ({})", names(&r.cancelled))
            },
            r.finished.len(),
            r.cleared
        )?;
        for (partition, target) in &r.left_alone {
            writeln!(
                err,
                "{p} left alone {partition}: not kpool's (moving to {target:?})"
            )?;
        }
        for e in &r.errors {
            writeln!(err, "{p} error: {e}")?;
        }
        Ok(())
    };
    w(err).context("cannot write to stderr")?;
    Ok(r.code())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_rates_take_units() {
        assert_eq!(parse_rate("10485760"), Ok(10_485_760));
        assert_eq!(parse_rate("10MiB"), Ok(10 << 20));
        assert_eq!(parse_rate("50MB/s"), Ok(50_000_000));
        assert_eq!(parse_rate(" 2 GiB/s "), Ok(2 << 30));
        assert_eq!(parse_rate("512KB"), Ok(512_000));
        assert!(
            parse_rate("0")
                .expect_err("zero")
                .contains("stops replication")
        );
        assert!(
            parse_rate("5 furlongs")
                .expect_err("unit")
                .contains("\"furlongs\"")
        );
        assert!(parse_rate("fast").expect_err("number").contains("10MiB"));
        assert!(
            parse_rate("99999999999GiB")
                .expect_err("big")
                .contains("too large")
        );
        assert_eq!(parse_positive("5"), Ok(5));
        assert!(parse_positive("0").is_err());
    }
}
