//! What kpool's binaries (`kpool-webhook`, `kpool-agent`, `kpool-certs`) share at their
//! edge, so they behave alike: the logging flags and their setup ([`LogArgs`]), how a
//! fatal error is printed ([`report::one_line`], [`exit_with`]), durations on the command
//! line ([`duration::parse_duration`]), the TLS crypto provider
//! ([`install_crypto_provider`]), the signals that stop a server ([`shutdown_signal`]),
//! and the audit line every decision is written as ([`audit::AuditRecord`], stamped by
//! [`clock::now_rfc3339`]); the Kafka TLS flags ([`kafka::KafkaTlsArgs`]).

pub mod audit;
pub mod clock;
pub mod duration;
pub mod kafka;
pub mod report;

use std::process::ExitCode;

use clap::{Args, ValueEnum};

/// Diagnostics on stderr (audit lines, where a binary writes them, go elsewhere).
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log format for diagnostics on stderr.
    #[arg(
        long,
        global = true,
        env = "KPOOL_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax, e.g. `info`, `warn,kpool_agent=debug`).
    #[arg(long, global = true, env = "KPOOL_LOG", default_value = "info")]
    pub log: String,
}

/// How diagnostics are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A `--log` filter that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("--log (KPOOL_LOG): invalid filter {filter:?}: {reason}")]
pub struct BadFilter {
    pub filter: String,
    pub reason: String,
}

impl LogArgs {
    /// Installs the global subscriber on stderr.
    pub fn init(&self) -> Result<(), BadFilter> {
        let filter = tracing_subscriber::EnvFilter::try_new(&self.log).map_err(|e| BadFilter {
            filter: self.log.clone(),
            reason: e.to_string(),
        })?;
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        match self.log_format {
            LogFormat::Text => builder.init(),
            LogFormat::Json => builder.json().init(),
        }
        Ok(())
    }
}

/// Prints `error` as `BIN: error: <one line>` on stderr and gives the failure exit code.
pub fn exit_with(bin: &str, error: &(dyn std::error::Error + 'static)) -> ExitCode {
    eprintln!("{bin}: error: {}", report::one_line(error));
    ExitCode::FAILURE
}

/// Installs ring as the process's rustls crypto provider, unless one is already installed
/// (kube's client and every rustls config built without an explicit provider need one).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Resolves on SIGTERM (what Kubernetes sends) or an interrupt, saying which in the log.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; stopping on interrupt only");
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("interrupt received");
        }
    }
}
