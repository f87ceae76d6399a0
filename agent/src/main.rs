//! kpool-agent: parse the command line, set up logging, run the agent.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kpool_agent::kafka::{TlsSettings, parse_bootstrap};
use kpool_agent::racks::cli::{
    RacksCommand, USAGE_ERROR_CODE, run_apply, run_cancel, run_plan, run_status,
};
use kpool_agent::start::{AgentConfig, Placement, api_limits, start};
use kpool_policy::Policy;

/// kpool's per-node agent: Kafka health and readiness verdicts for the broker pods on
/// this node, served to their readiness probe (kpool-probe).
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Diagnostics go to stderr; audit lines to stdout.
    #[command(flatten)]
    logging: kpool_cli::LogArgs,
    #[command(subcommand)]
    command: Command,
}

// Parsed once at startup: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Poll Kafka, keep the evaluated health, and answer readiness questions over HTTP:
    /// GET /v1/ready/{namespace}/{pod}, /v1/brokers/{id}/restart-safety, /v1/cluster,
    /// /v1/overhead, /metrics, /healthz. In a cluster, also guard this node (one broker,
    /// no foreign pods, compliant node, no rack drift) and sample resource overhead.
    Run(RunArgs),
    /// Replica placement over Kubernetes clusters x zones: plan the moves that balance it,
    /// apply a plan, show or cancel the moves in flight.
    Racks {
        #[command(subcommand)]
        command: RacksCommand,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// HTTP listen address (broker pods reach it at their node's IP).
    #[arg(long, env = "KPOOL_AGENT_LISTEN", default_value = "0.0.0.0:8475")]
    listen: SocketAddr,
    /// Kafka brokers to bootstrap from, comma-separated host:port (default: the policy's
    /// kafka.bootstrap).
    #[arg(long, env = "KPOOL_KAFKA_BOOTSTRAP", value_name = "HOST:PORT,...")]
    kafka_bootstrap: Option<String>,
    /// Pool policy file; without it the built-in default (examples/policy.yaml).
    #[arg(long, env = "KPOOL_POLICY", value_name = "FILE")]
    policy: Option<PathBuf>,
    /// No Kubernetes API: map pods to brokers by the ordinal in their name (no overrides).
    #[arg(long, env = "KPOOL_STANDALONE")]
    standalone: bool,
    /// This node (in a cluster; from the downward API's spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// kpool's namespace (from the downward API's metadata.namespace): where the racks
    /// Lease and its Events live, with racks.selfHealing.
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: Option<String>,
    /// How often to poll Kafka.
    #[arg(long, env = "KPOOL_POLL_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    poll_interval: Duration,
    /// Timeout of each Kafka request.
    #[arg(long, env = "KPOOL_KAFKA_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    kafka_timeout: Duration,
    /// Timeout of each JMX exporter read (readiness.brokerState).
    #[arg(long, env = "KPOOL_EXPORTER_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    exporter_timeout: Duration,
    /// Talk TLS to Kafka, trusting this CA (PEM).
    #[arg(long, env = "KPOOL_KAFKA_TLS_CA")]
    kafka_tls_ca: Option<PathBuf>,
    /// Client certificate for Kafka mTLS (PEM).
    #[arg(long, env = "KPOOL_KAFKA_TLS_CERT", requires = "kafka_tls_key")]
    kafka_tls_cert: Option<PathBuf>,
    /// Client key for Kafka mTLS (PEM).
    #[arg(long, env = "KPOOL_KAFKA_TLS_KEY", requires = "kafka_tls_cert")]
    kafka_tls_key: Option<PathBuf>,
    /// Name to verify the brokers' certificates against (default: the bootstrap host).
    #[arg(long, env = "KPOOL_KAFKA_TLS_SERVER_NAME")]
    kafka_tls_server_name: Option<String>,
    /// The cgroup v2 tree to read pod and daemon usage from (in a pod: the host's, mounted).
    #[arg(long, env = "KPOOL_CGROUP_ROOT", default_value = "/sys/fs/cgroup")]
    cgroup_root: PathBuf,
    /// How often to sample resource overhead.
    #[arg(long, env = "KPOOL_OVERHEAD_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    overhead_interval: Duration,
    /// How often the node guard checks the pods of this node.
    #[arg(long, env = "KPOOL_GUARD_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    guard_interval: Duration,
    /// The guard acts on a persisting violation (Event, eviction) at most once per window.
    #[arg(long, env = "KPOOL_GUARD_BACKOFF", default_value = "5m", value_parser = parse_duration)]
    guard_backoff: Duration,
    /// API connections open at once; past it new clients wait in the backlog. Lowered at
    /// start to fit the open-file limit.
    #[arg(long, env = "KPOOL_AGENT_MAX_CONNECTIONS", default_value_t = api_limits().max_connections)]
    max_connections: usize,
    /// A new API connection must send its request headers within this time.
    #[arg(long, env = "KPOOL_AGENT_HEADER_READ_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    header_read_timeout: Duration,
    /// An API connection with no request in flight is closed after this long without one.
    #[arg(long, env = "KPOOL_AGENT_IDLE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    idle_timeout: Duration,
}

use kpool_cli::duration::parse_duration;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    if let Err(e) = cli.logging.init() {
        return kpool_cli::exit_with("kpool-agent", &e);
    }
    match cli.command {
        Command::Run(args) => match run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => kpool_cli::exit_with("kpool-agent", e.as_ref()),
        },
        Command::Racks {
            command: RacksCommand::Plan(args),
        } => match run_plan(&args, &mut std::io::stdout(), &mut std::io::stderr()) {
            Ok(status) => ExitCode::from(status.code()),
            Err(e) => kpool_cli::exit_with("kpool-agent", e.as_ref()),
        },
        Command::Racks {
            command: RacksCommand::Apply(args),
        } => match run_apply(&args, &mut std::io::stderr()) {
            Ok(status) => ExitCode::from(status.code()),
            Err(e) => kpool_cli::exit_with("kpool-agent", e.as_ref()),
        },
        Command::Racks {
            command: RacksCommand::Status(args),
        } => match run_status(&args, &mut std::io::stdout()) {
            Ok(code) => ExitCode::from(code),
            Err(e) => kpool_cli::exit_with("kpool-agent", e.as_ref()),
        },
        Command::Racks {
            command: RacksCommand::Cancel(args),
        } => match run_cancel(&args, &mut std::io::stderr()) {
            Ok(code) => ExitCode::from(code),
            Err(e) => kpool_cli::exit_with("kpool-agent", e.as_ref()),
        },
    }
}

/// Prints a command-line error (or --help) the way clap does; usage errors of `racks`
/// exit 1, since 2 means "plan printed" (and, for apply, "paused") there.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::CommandFactory as _;
    let _ = e.print();
    if !e.use_stderr() {
        return ExitCode::SUCCESS;
    }
    let racks = Cli::command()
        .ignore_errors(true)
        .try_get_matches()
        .is_ok_and(|m| m.subcommand_name() == Some("racks"));
    ExitCode::from(if racks {
        USAGE_ERROR_CODE
    } else {
        u8::try_from(e.exit_code()).unwrap_or(2)
    })
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let policy = Arc::new(match &args.policy {
        Some(path) => Policy::from_file(path)?,
        None => Policy::builtin()?,
    });
    let bootstrap = match (&args.kafka_bootstrap, &policy.spec().kafka) {
        (Some(b), _) => parse_bootstrap(b)?,
        (None, Some(k)) => k.bootstrap.clone(),
        (None, None) => anyhow::bail!(
            "no Kafka bootstrap: pass --kafka-bootstrap HOST:PORT or set kafka.bootstrap in the policy"
        ),
    };
    let placement = if args.standalone {
        Placement::Standalone
    } else {
        Placement::Node(args.node_name.clone().context(
            "NODE_NAME is not set: in a cluster the agent watches the pods of its own node (set it from spec.nodeName in the DaemonSet), or run with --standalone",
        )?)
    };
    let kafka_tls =
        (args.kafka_tls_ca.is_some() || args.kafka_tls_cert.is_some()).then(|| TlsSettings {
            ca_file: args.kafka_tls_ca.clone(),
            client_cert: args.kafka_tls_cert.clone(),
            client_key: args.kafka_tls_key.clone(),
            server_name: args.kafka_tls_server_name.clone(),
        });
    let cfg = AgentConfig {
        policy,
        placement,
        listen: args.listen,
        limits: kpool_serve::Limits {
            max_connections: args.max_connections,
            header_timeout: args.header_read_timeout,
            idle_timeout: args.idle_timeout,
            ..api_limits()
        },
        bootstrap,
        kafka_tls,
        kafka_timeout: args.kafka_timeout,
        poll_interval: args.poll_interval,
        exporter_timeout: args.exporter_timeout,
        cgroup_root: args.cgroup_root,
        overhead_interval: args.overhead_interval,
        guard_interval: args.guard_interval,
        guard_backoff: args.guard_backoff,
        namespace: args.namespace,
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let running = start(cfg).await?;
        kpool_cli::shutdown_signal().await;
        running.shutdown().await;
        anyhow::Ok(())
    })
}
