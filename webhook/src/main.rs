//! kpool-webhook: parse the command line, set up logging, call the library.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kpool_policy::Policy;
use kpool_webhook::offline;

/// kpool's admission webhook for Kafka broker pods on a dedicated Kubernetes pool.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    logging: kpool_cli::LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the admission webhook: POST /mutate and /validate over HTTPS; /healthz, /readyz
    /// and /metrics over plain HTTP on --metrics-listen.
    ///
    /// Certificates are re-read when their files change (Kubernetes Secret volumes included);
    /// a bad pair is refused and the previous one keeps serving. On SIGTERM, /readyz turns
    /// false, in-flight requests finish, then the process exits.
    Serve(Box<ServeArgs>),
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
    if let Err(e) = cli.logging.init() {
        return kpool_cli::exit_with("kpool-webhook", &e);
    }
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => kpool_cli::exit_with("kpool-webhook", e.as_ref()),
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => serve::run(*args),
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

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address of the admission (HTTPS) listener.
    #[arg(long, env = "KPOOL_LISTEN", default_value = "0.0.0.0:8443")]
    listen: std::net::SocketAddr,
    /// Serving certificate (PEM, leaf first); required unless --self-signed.
    #[arg(
        long,
        env = "KPOOL_TLS_CERT",
        required_unless_present = "self_signed",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// Serving key (PEM).
    #[arg(long, env = "KPOOL_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Local run: create a CA and a serving certificate for localhost in DIR (kept if still
    /// valid), serve with them, and print a curl command that posts an example review.
    #[arg(long, env = "KPOOL_SELF_SIGNED", value_name = "DIR", conflicts_with_all = ["tls_cert", "tls_key"])]
    self_signed: Option<PathBuf>,
    /// Pool policy file; without it the built-in default (examples/policy.yaml).
    #[arg(long, env = "KPOOL_POLICY", value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Address of the plain-HTTP listener for /healthz, /readyz and /metrics.
    #[arg(long, env = "KPOOL_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    metrics_listen: std::net::SocketAddr,
    /// Audit log: `-` for stdout, or a file (appended, flushed per line, rotated by size).
    #[arg(
        long,
        env = "KPOOL_AUDIT_LOG",
        default_value = "-",
        value_name = "PATH|-"
    )]
    audit_log: String,
    /// Rotate the audit log file when it reaches this many MiB.
    #[arg(long, env = "KPOOL_AUDIT_LOG_MAX_SIZE_MIB", default_value_t = 100)]
    audit_log_max_size_mib: u64,
    /// Rotated audit log files to keep.
    #[arg(long, env = "KPOOL_AUDIT_LOG_MAX_FILES", default_value_t = 5)]
    audit_log_max_files: u32,
    /// Admission requests the engine answers at once, counted once their body is in; more
    /// wait their turn.
    #[arg(long, env = "KPOOL_MAX_CONCURRENCY", default_value_t = 64)]
    max_concurrency: usize,
    /// Request bodies held in memory at once, over all requests being read (MiB; at least
    /// one 3 MiB body). A client holds only what it has sent.
    #[arg(long, env = "KPOOL_BODY_BUDGET_MIB", default_value_t = 32)]
    body_budget_mib: usize,
    /// Admission connections open at once; past it new clients wait in the backlog and
    /// /readyz says so. Lowered at start to fit the open-file limit.
    #[arg(long, env = "KPOOL_MAX_CONNECTIONS", default_value_t = 512)]
    max_connections: usize,
    /// A TLS handshake must finish within this time.
    #[arg(long, env = "KPOOL_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = serve::parse_duration)]
    tls_handshake_timeout: std::time::Duration,
    /// A new connection must send its first request's headers within this time (e.g. 10s,
    /// 500ms).
    #[arg(long, env = "KPOOL_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = serve::parse_duration)]
    header_read_timeout: std::time::Duration,
    /// A connection with no request in flight is closed after this long without one.
    #[arg(long, env = "KPOOL_IDLE_TIMEOUT", default_value = "90s", value_parser = serve::parse_duration)]
    idle_timeout: std::time::Duration,
    /// One request, from its headers to its answer (body included); past it, 408.
    #[arg(long, env = "KPOOL_REQUEST_TIMEOUT", default_value = "10s", value_parser = serve::parse_duration)]
    request_timeout: std::time::Duration,
    /// Concurrent HTTP/2 streams per connection.
    #[arg(long, env = "KPOOL_MAX_HTTP2_STREAMS", default_value_t = 32)]
    max_http2_streams: u32,
    /// How often the certificate files are checked for changes.
    #[arg(long, env = "KPOOL_CERT_RELOAD_INTERVAL", default_value = "5s", value_parser = serve::parse_duration)]
    cert_reload_interval: std::time::Duration,
    /// At shutdown, how long /readyz reports not-ready before the listener closes.
    #[arg(long, env = "KPOOL_SHUTDOWN_DELAY", default_value = "5s", value_parser = serve::parse_duration)]
    shutdown_delay: std::time::Duration,
    /// At shutdown, how long in-flight requests may take to finish.
    #[arg(long, env = "KPOOL_SHUTDOWN_GRACE", default_value = "20s", value_parser = serve::parse_duration)]
    shutdown_grace: std::time::Duration,
}

mod serve {
    use std::path::{Path, PathBuf};
    use std::process::ExitCode;
    use std::sync::Arc;

    use anyhow::Context as _;
    use kpool_policy::Policy;
    use kpool_serve::Limits;
    use kpool_webhook::admission::AdmissionLimits;
    use kpool_webhook::audit::AuditTarget;
    use kpool_webhook::server::{ServeConfig, start};

    use super::ServeArgs;

    /// The example AdmissionReview `--self-signed` writes for the printed curl command.
    const EXAMPLE_REVIEW: &str =
        include_str!("../../tests/fixtures/admission/000-create-kafka-0.json");

    pub use kpool_cli::duration::parse_duration;

    pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
        let policy = Arc::new(match &args.policy {
            Some(path) => Policy::from_file(path)?,
            None => Policy::builtin()?,
        });
        let (tls_cert, tls_key) = match (&args.self_signed, args.tls_cert, args.tls_key) {
            (Some(dir), _, _) => self_signed(dir, args.listen.port())?,
            (None, Some(c), Some(k)) => (c, k),
            _ => anyhow::bail!("--tls-cert and --tls-key (or --self-signed DIR) are required"),
        };
        let audit = if args.audit_log == "-" {
            AuditTarget::Stdout
        } else {
            AuditTarget::File {
                path: PathBuf::from(&args.audit_log),
                max_bytes: args.audit_log_max_size_mib.saturating_mul(1024 * 1024),
                max_files: args.audit_log_max_files,
            }
        };
        let cfg = ServeConfig {
            listen: args.listen,
            metrics_listen: args.metrics_listen,
            tls_cert,
            tls_key,
            policy,
            audit,
            admission: AdmissionLimits {
                max_concurrency: args.max_concurrency,
                body_budget_bytes: args.body_budget_mib.saturating_mul(1024 * 1024),
            },
            limits: Limits {
                max_connections: args.max_connections,
                handshake_timeout: args.tls_handshake_timeout,
                header_timeout: args.header_read_timeout,
                idle_timeout: args.idle_timeout,
                request_timeout: args.request_timeout,
                max_h2_streams: args.max_http2_streams,
            },
            reload_interval: args.cert_reload_interval,
            shutdown_delay: args.shutdown_delay,
            shutdown_grace: args.shutdown_grace,
        };
        let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
        runtime.block_on(async move {
            let running = start(cfg).await?;
            kpool_cli::shutdown_signal().await;
            running.shutdown().await;
            anyhow::Ok(())
        })?;
        Ok(ExitCode::SUCCESS)
    }

    fn self_signed(dir: &Path, port: u16) -> anyhow::Result<(PathBuf, PathBuf)> {
        let mut opts =
            kpool_certs::create::CreateOptions::new("kpool-webhook", "kpool-system", dir);
        opts.dns = vec!["localhost".to_owned()];
        opts.ips = vec!["127.0.0.1".parse()?, "::1".parse()?];
        opts.days = 30;
        opts.ca_days = 30;
        let report = kpool_certs::create::create(&opts).with_context(|| {
            format!(
                "cannot create self-signed certificates in {}",
                dir.display()
            )
        })?;
        tracing::info!(ca = ?report.ca, serving = ?report.serving, dir = %dir.display(), "self-signed certificates ready");
        let example = dir.join("example-review.json");
        std::fs::write(&example, EXAMPLE_REVIEW)
            .with_context(|| format!("cannot write {}", example.display()))?;
        eprintln!(
            "kpool-webhook: self-signed certificates in {dir}; try:\n  curl --cacert {dir}/ca.crt -H 'Content-Type: application/json' --data @{example} https://localhost:{port}/mutate",
            dir = dir.display(),
            example = example.display(),
        );
        Ok((dir.join("tls.crt"), dir.join("tls.key")))
    }
}
