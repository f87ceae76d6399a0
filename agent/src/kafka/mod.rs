//! Kafka admin client on the kafka-protocol crate: just enough of the protocol to take a
//! [`Snapshot`](crate::snapshot::Snapshot) of the cluster for the health engine, and the
//! admin requests the rack executor sends (`admin.rs`: reassignments, replication
//! throttles, preferred-leader elections; routed to the controller).
//!
//! One connection to one bootstrap broker at a time (any broker answers Metadata,
//! DescribeConfigs for topics and DescribeCluster). Per connection: ApiVersions once, then
//! per snapshot Metadata (all topics), DescribeConfigs (`min.insync.replicas` of every topic
//! and of the connected broker), and DescribeCluster and ListPartitionReassignments (the
//! replicas a reassignment is adding) when the broker supports them. Every
//! step is bounded by the configured timeout; any failure drops the connection so the next
//! snapshot reconnects, trying the bootstrap addresses in turn.

mod admin;
mod client;
mod conn;
mod decode;
mod error;
mod tls;
mod wire;

use std::path::PathBuf;
use std::time::Duration;

pub use admin::{
    ADMIN_ATTEMPTS, ConfigAlteration, ConfigOp, ConfigResource, ELECTION_NOT_NEEDED,
    NO_REASSIGNMENT_IN_PROGRESS, NOT_CONTROLLER, OngoingReassignment,
    PREFERRED_LEADER_NOT_AVAILABLE, PartitionOutcome, Reassignment, ResourceOutcome,
    UNREACHABLE_ENOUGH,
};
pub use client::{KafkaClient, NegotiatedVersions};
pub use conn::MAX_FRAME_BYTES;
pub use decode::{DecodeError, Response, decode_response, supported};
pub use error::{ErrorCode, KafkaError, error_name};

/// How to reach the Kafka cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// Bootstrap brokers as `host:port` (see [`parse_bootstrap`]); tried in turn.
    pub bootstrap: Vec<String>,
    /// The bound on every network step: connect, TLS handshake, each request/response.
    pub timeout: Duration,
    /// TLS to the brokers; plaintext when `None`.
    pub tls: Option<TlsSettings>,
    /// The client id sent in every request header (shows in broker request logs/quotas).
    pub client_id: String,
}

impl Default for KafkaConfig {
    /// No bootstrap (must be filled in), 5 s timeout, plaintext, client id `kpool-agent`.
    fn default() -> Self {
        Self {
            bootstrap: Vec::new(),
            timeout: Duration::from_secs(5),
            tls: None,
            client_id: "kpool-agent".to_owned(),
        }
    }
}

/// TLS settings for broker connections (PEM files).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// CA bundle to verify brokers with; the system roots when `None`.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain for mutual TLS (requires `client_key`).
    pub client_cert: Option<PathBuf>,
    /// Private key of `client_cert` (PKCS#8, PKCS#1 or SEC1).
    pub client_key: Option<PathBuf>,
    /// Name to verify broker certificates against instead of the dialled host (e.g. when
    /// connecting by IP to brokers whose certificates carry DNS names).
    pub server_name: Option<String>,
}

/// Parse a comma-separated bootstrap list (`host:port,host:port`, IPv6 as `[::1]:9092`).
/// Whitespace around entries is ignored; errors name the offending entry.
pub fn parse_bootstrap(s: &str) -> Result<Vec<String>, KafkaError> {
    if s.trim().is_empty() {
        return Err(KafkaError::NoBootstrap);
    }
    let entries: Vec<&str> = s.split(',').map(str::trim).collect();
    let mut out = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        if entry.is_empty() {
            return Err(KafkaError::InvalidBootstrap {
                entry: String::new(),
                reason: format!("entry {} of {s:?} is empty", i + 1),
            });
        }
        validate_addr(entry)?;
        out.push((*entry).to_owned());
    }
    Ok(out)
}

/// Check one `host:port` address.
fn validate_addr(entry: &str) -> Result<(), KafkaError> {
    let bad = |reason: &str| KafkaError::InvalidBootstrap {
        entry: entry.to_owned(),
        reason: reason.to_owned(),
    };
    if entry.contains("://") {
        return Err(bad(
            "expected host:port without a scheme (drop the tcp:// or similar prefix)",
        ));
    }
    let Some((host, port)) = split_host_port(entry) else {
        return Err(bad("expected host:port, found no port"));
    };
    if host.is_empty() || host == "[]" {
        return Err(bad("expected host:port, found an empty host"));
    }
    if host
        .chars()
        .any(|c| c.is_whitespace() || c == '/' || c == ',')
    {
        return Err(bad("the host contains whitespace, '/' or ','"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(bad("an IPv6 host must be in brackets, e.g. [::1]:9092"));
    }
    match port.parse::<u16>() {
        Ok(0) => Err(bad("port 0 is not a usable port")),
        Ok(_) => Ok(()),
        Err(_) => Err(bad(&format!(
            "expected a port number 1-65535 after the last ':', found {port:?}"
        ))),
    }
}

/// Split `host:port` at the last colon (so `[::1]:9092` works).
pub(crate) fn split_host_port(addr: &str) -> Option<(&str, &str)> {
    addr.rsplit_once(':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_lists_parse() {
        assert_eq!(
            parse_bootstrap("k1:9092, k2:9093 ,[::1]:9094").expect("valid"),
            ["k1:9092", "k2:9093", "[::1]:9094"]
        );
        assert_eq!(
            parse_bootstrap("127.0.0.5:9091").expect("valid"),
            ["127.0.0.5:9091"]
        );
    }

    #[test]
    fn bootstrap_errors_name_the_entry() {
        assert!(matches!(parse_bootstrap(""), Err(KafkaError::NoBootstrap)));
        assert!(matches!(
            parse_bootstrap("  "),
            Err(KafkaError::NoBootstrap)
        ));
        let cases = [
            ("k1:9092,k2", "k2", "no port"),
            ("k1:9092,k2:x", "k2:x", "found \"x\""),
            ("k1:0", "k1:0", "port 0"),
            ("k1:70000", "k1:70000", "1-65535"),
            (":9092", ":9092", "empty host"),
            ("tcp://k1:9092", "tcp://k1:9092", "scheme"),
            ("::1:9092", "::1:9092", "brackets"),
            ("k 1:9092", "k 1:9092", "whitespace"),
        ];
        for (input, entry, reason) in cases {
            match parse_bootstrap(input) {
                Err(KafkaError::InvalidBootstrap {
                    entry: e,
                    reason: r,
                }) => {
                    assert_eq!(e, entry, "{input}");
                    assert!(r.contains(reason), "{input}: {r}");
                }
                other => panic!("{input}: expected InvalidBootstrap, got {other:?}"),
            }
        }
        let err = parse_bootstrap("k1:9092,,k2:9092").expect_err("empty entry");
        assert!(err.to_string().contains("entry 2"), "{err}");
    }
}
