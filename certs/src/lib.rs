//! kpool-certs: the certificates of kpool's webhook and agent.
//!
//! - [`generate`]: an ECDSA P-256 CA and serving certificates for a Service (rcgen).
//! - [`create`]: the idempotent `create` command over a directory.
//! - [`mesh`]: the broker mesh's CA, broker and client certificates, and its identity scheme.
//! - [`inspect`]: facts about certificates, and chain verification with rustls' webpki.
//! - [`tls`]: a rustls `ServerConfig` with a certificate resolver that hot-reloads files,
//!   and a watcher for Kubernetes Secret volumes; the webhook serves with it (the agent
//!   serves plain HTTP and is a TLS client only, to Kafka).
//! - [`cluster`]: the serving Secret and the webhook configurations' `caBundle`, by
//!   server-side apply.
//! - [`rotate`]: zero-downtime CA rotation as a re-runnable state machine.
//!
//! `cluster` and `rotate` (and the kube client) come with the default `cluster` feature;
//! the servers build without it.
//! - [`pemio`]: PEM parsing and atomic file writes (keys 0600).

mod error;

#[cfg(feature = "cluster")]
pub mod cluster;
pub mod create;
pub mod generate;
pub mod inspect;
pub mod mesh;
pub mod pemio;
#[cfg(feature = "cluster")]
pub mod rotate;
pub mod tls;

pub use error::CertError;

/// The field manager of every server-side apply kpool-certs makes.
pub const FIELD_MANAGER: &str = "kpool-certs";
