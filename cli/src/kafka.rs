//! The Kafka connection flags every binary that talks to Kafka takes alike (`kpool-mesh
//! serve` today; the agent's `--kafka-tls-*` are the same flags and can flatten this), with
//! the agent's environment variable names, so one Secret's mount configures both.
//! `kpool_agent::kafka::TlsSettings::from_args` turns them into the Kafka client's settings.

use std::path::PathBuf;

use clap::Args;

/// `--kafka-tls-ca`, `--kafka-tls-cert`, `--kafka-tls-key`, `--kafka-tls-server-name`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct KafkaTlsArgs {
    /// Talk TLS to Kafka, trusting this CA (PEM).
    #[arg(long, env = "KPOOL_KAFKA_TLS_CA")]
    pub kafka_tls_ca: Option<PathBuf>,
    /// Client certificate for Kafka mTLS (PEM); TLS with the system's roots unless
    /// --kafka-tls-ca.
    #[arg(long, env = "KPOOL_KAFKA_TLS_CERT", requires = "kafka_tls_key")]
    pub kafka_tls_cert: Option<PathBuf>,
    /// Client key for Kafka mTLS (PEM).
    #[arg(long, env = "KPOOL_KAFKA_TLS_KEY", requires = "kafka_tls_cert")]
    pub kafka_tls_key: Option<PathBuf>,
    /// Name to verify the brokers' certificates against (default: the host dialled).
    #[arg(long, env = "KPOOL_KAFKA_TLS_SERVER_NAME")]
    pub kafka_tls_server_name: Option<String>,
}

impl KafkaTlsArgs {
    /// Whether TLS was asked for: a CA or a client certificate given. (A server name alone
    /// changes nothing on a plaintext connection.)
    pub fn enabled(&self) -> bool {
        self.kafka_tls_ca.is_some() || self.kafka_tls_cert.is_some()
    }
}
