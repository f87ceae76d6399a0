//! Errors of the Kafka client, and Kafka error codes by name.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use kafka_protocol::ResponseError;

/// Everything that can go wrong talking to Kafka. Each variant says where (which broker
/// address, which API and version) and what was expected versus what was found, because
/// these messages end up verbatim in readiness reasons and logs.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// The bootstrap list is empty.
    #[error("no Kafka bootstrap address given (expected at least one host:port)")]
    NoBootstrap,

    /// One entry of the bootstrap list is not `host:port`.
    #[error("bootstrap entry {entry:?} is invalid: {reason}")]
    InvalidBootstrap {
        /// The entry as given.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A configuration value outside the TLS settings is unusable.
    #[error("invalid Kafka client setting {field}: {reason}")]
    InvalidConfig {
        /// The setting (e.g. `timeout`).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// TLS material could not be loaded or does not fit together.
    #[error("Kafka TLS setup: {what}{}: {detail}", path.as_ref().map(|p| format!(" ({})", p.display())).unwrap_or_default())]
    Tls {
        /// Which piece (CA bundle, client certificate, client key, server name, ...).
        what: &'static str,
        /// The file involved, if any.
        path: Option<PathBuf>,
        /// What went wrong.
        detail: String,
    },

    /// The TCP connection could not be opened.
    #[error("cannot connect to Kafka broker {addr}: {source}")]
    Connect {
        /// The broker address (`host:port`).
        addr: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The TLS handshake failed.
    #[error("TLS handshake with Kafka broker {addr} failed: {source}")]
    TlsHandshake {
        /// The broker address.
        addr: String,
        /// The error rustls reported.
        #[source]
        source: std::io::Error,
    },

    /// A step did not finish within the configured timeout.
    #[error("Kafka broker {addr} did not complete {api} within {after:?}")]
    Timeout {
        /// The broker address.
        addr: String,
        /// The step: `connect`, `TLS handshake` or a request such as `Metadata v12`.
        api: String,
        /// The timeout that expired.
        after: Duration,
    },

    /// Reading or writing the connection failed.
    #[error("I/O error on {api} with Kafka broker {addr}: {source}")]
    Io {
        /// The broker address.
        addr: String,
        /// The request in flight, e.g. `Metadata v12`.
        api: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The broker closed the connection before the whole response arrived.
    #[error("Kafka broker {addr} closed the connection {detail} (waiting for the {api} response)")]
    Closed {
        /// The broker address.
        addr: String,
        /// The request in flight.
        api: String,
        /// How far the response got, e.g. `before answering` or `after 10 of 120 bytes`.
        detail: String,
    },

    /// The response frame announced a size beyond the cap (or a negative one).
    #[error(
        "Kafka broker {addr} answered {api} with a frame of {size} bytes (expected 4..={max}): \
         not a Kafka response, or a corrupt stream"
    )]
    FrameSize {
        /// The broker address.
        addr: String,
        /// The request in flight.
        api: String,
        /// The size the frame announced.
        size: i64,
        /// The largest frame accepted.
        max: usize,
    },

    /// The response bytes do not decode as the expected message.
    #[error("cannot decode the {api} response from Kafka broker {addr}: {detail}")]
    Decode {
        /// The broker address.
        addr: String,
        /// The response being decoded, e.g. `Metadata v12`.
        api: String,
        /// What was expected and what was found.
        detail: String,
    },

    /// The broker answered with a Kafka error code.
    #[error(
        "Kafka broker {addr} answered {api} with {}{}",
        ErrorCode(*code),
        message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
    )]
    BrokerError {
        /// The broker address.
        addr: String,
        /// The request, e.g. `DescribeConfigs v4` (and the resource, when the error is one).
        api: String,
        /// The Kafka error code.
        code: i16,
        /// The error message the broker sent, if any.
        message: Option<String>,
    },

    /// The broker supports no version of an API the client needs.
    #[error(
        "Kafka broker {addr} does not support {api} in a version this client speaks \
         (client {client}, broker {})",
        broker.as_deref().unwrap_or("none")
    )]
    UnsupportedApi {
        /// The broker address.
        addr: String,
        /// The API name.
        api: &'static str,
        /// The client's version range, e.g. `1..=13`.
        client: String,
        /// The broker's advertised range, if it advertised the API at all.
        broker: Option<String>,
    },

    /// Every bootstrap address failed; one error per address, in the order tried.
    #[error("no Kafka bootstrap broker reachable: {}", join(errors))]
    Unreachable {
        /// The error of each attempt.
        errors: Vec<KafkaError>,
    },

    /// Building a request failed (a bug in this client, reported rather than panicking).
    #[error("cannot encode the {api} request: {detail}")]
    Encode {
        /// The request.
        api: String,
        /// The encoder's complaint.
        detail: String,
    },
}

fn join(errors: &[KafkaError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A Kafka error code that displays as Kafka's own name plus the number, e.g.
/// `UNKNOWN_TOPIC_OR_PARTITION (3)`, so messages match what Kafka's tools print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode(pub i16);

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", error_name(self.0), self.0)
    }
}

/// Kafka's name for an error code (`NONE` for 0, `UNKNOWN_ERROR_CODE` for codes this
/// protocol version does not define).
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "NONE".to_owned(),
        Some(ResponseError::Unknown(_)) => "UNKNOWN_ERROR_CODE".to_owned(),
        // kafka-protocol names its variants in CamelCase after Kafka's Errors.java
        // constants; turning them back into SCREAMING_SNAKE_CASE gives Kafka's names.
        Some(known) => screaming_snake(&format!("{known:?}")),
    }
}

fn screaming_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_display_as_kafka_names() {
        assert_eq!(ErrorCode(3).to_string(), "UNKNOWN_TOPIC_OR_PARTITION (3)");
        assert_eq!(ErrorCode(-1).to_string(), "UNKNOWN_SERVER_ERROR (-1)");
        assert_eq!(ErrorCode(35).to_string(), "UNSUPPORTED_VERSION (35)");
        assert_eq!(ErrorCode(0).to_string(), "NONE (0)");
        assert_eq!(ErrorCode(9999).to_string(), "UNKNOWN_ERROR_CODE (9999)");
        assert_eq!(error_name(6), "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(error_name(29), "TOPIC_AUTHORIZATION_FAILED");
    }

    #[test]
    fn broker_error_message_names_code_api_and_address() {
        let e = KafkaError::BrokerError {
            addr: "k1:9092".into(),
            api: "DescribeConfigs v4 (topic orders)".into(),
            code: 29,
            message: Some("denied".into()),
        };
        assert_eq!(
            e.to_string(),
            "Kafka broker k1:9092 answered DescribeConfigs v4 (topic orders) with \
             TOPIC_AUTHORIZATION_FAILED (29): denied"
        );
    }
}
