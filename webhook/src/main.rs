//! kpool-webhook: parse the command line, set up logging, call the library.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use kpool_policy::Policy;
use kpool_webhook::offline;

/// kpool's admission webhook for Kafka broker pods on a dedicated Kubernetes pool.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Log format for diagnostics on stderr.
    #[arg(
        long,
        global = true,
        env = "KPOOL_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax, e.g. `info` or `kpool_webhook=debug`).
    #[arg(long, global = true, env = "KPOOL_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inject manifests offline and print the result, like `istioctl kube-inject`.
    ///
    /// Reads multi-document YAML (or JSON). Pods are injected as the webhook would at
    /// admission. A StatefulSet gets, in its pod template, what does not depend on the pod's
    /// ordinal; the per-pod parts (zone, rack, broker id, listener) are filled at admission,
    /// or previewed with --ordinal. Other kinds pass through unchanged. Notes go to stderr;
    /// if any document cannot be injected, nothing is printed and the exit code is 1.
    Inject {
        /// File to read, or `-` for stdin.
        #[arg(
            short = 'f',
            long = "filename",
            env = "KPOOL_INJECT_FILE",
            value_name = "FILE|-"
        )]
        file: String,
        /// Pool policy file; without it the built-in default (examples/policy.yaml) is used.
        #[arg(long, env = "KPOOL_POLICY", value_name = "FILE")]
        policy: Option<PathBuf>,
        /// Print StatefulSets as their pod N would be admitted.
        #[arg(long, env = "KPOOL_ORDINAL", value_name = "N")]
        ordinal: Option<u32>,
        /// Namespace for objects that have none (the webhook gets it from the request).
        #[arg(short = 'n', long, env = "KPOOL_NAMESPACE")]
        namespace: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format, &cli.log);
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kpool-webhook: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Inject {
            file,
            policy,
            ordinal,
            namespace,
        } => {
            let policy = match &policy {
                Some(path) => Policy::from_file(path)?,
                None => Policy::builtin()?,
            };
            let input = if file == "-" {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .context("cannot read stdin")?;
                s
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {file}"))?
            };
            let opts = offline::Options { ordinal, namespace };
            let report = offline::inject_stream(&input, &policy, &opts)?;
            for note in &report.notes {
                eprintln!("kpool: {note}");
            }
            print!("{}", report.to_yaml()?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn init_tracing(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
