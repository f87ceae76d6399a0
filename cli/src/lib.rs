//! What kpool's binaries (`kpool-webhook`, `kpool-agent`, `kpool-certs`) share at their
//! edge, so they behave alike: the logging flags and their setup ([`LogArgs`]), and how a
//! fatal error is printed ([`report::one_line`], [`exit_with`]).

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
