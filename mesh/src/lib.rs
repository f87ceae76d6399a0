//! The kpool broker mesh: Envoy configurations rendered from the pool policy's `mesh`
//! section.
//!
//! [`broker::render`] gives the broker sidecar's bootstrap: a listener on `mesh.mtlsPort`
//! that requires a client certificate from the mesh CA carrying one of `mesh.allowedSans`,
//! and forwards the bytes to the broker's plaintext listener on `127.0.0.1:mesh.brokerPort`.
//! Certificates come from file-based SDS with watched directories, so a rotated Kubernetes
//! Secret (its `..data` symlink swap) applies to new connections without a restart.
//!
//! The configurations are built as JSON values (Envoy's v3 API in its JSON mapping) and
//! printed as YAML or JSON, both of which Envoy reads.

pub mod apply;
pub mod broker;
pub mod bundle;
pub mod client;
pub mod envoy;
pub mod serve;
pub mod xds;

pub use broker::{BrokerBundle, BrokerOptions, render as render_broker};
pub use bundle::Bundle;

/// Why a configuration cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// `--certs-dir` lacks files the policy names.
    #[error("--certs-dir {dir}: missing {}", missing.iter().map(|(f, field)| format!("{f} ({field})")).collect::<Vec<_>>().join(", "))]
    MissingCertFiles {
        dir: String,
        /// File name and the policy field that names it.
        missing: Vec<(String, &'static str)>,
    },
    /// A directory option that is not usable as given.
    #[error("{flag} {dir:?}: {reason}")]
    BadDir {
        flag: &'static str,
        dir: String,
        reason: String,
    },
    /// Flags that cannot be rendered as given (the message names the flag).
    #[error("{0}")]
    Usage(String),
    /// Two policies that cannot serve side by side.
    #[error("policies {a} and {b}: {reason}")]
    Policies {
        a: String,
        b: String,
        reason: String,
    },
    /// Serialising the configuration failed.
    #[error("cannot print the configuration as {format}: {reason}")]
    Serialize {
        format: &'static str,
        reason: String,
    },
}

/// How a configuration is printed (Envoy reads both; it picks the parser by file extension,
/// and YAML also reads JSON).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Yaml,
    Json,
}

impl Format {
    /// The file extension Envoy expects for this format.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Yaml => "yaml",
            Self::Json => "json",
        }
    }

    /// Prints `value` in this format, ending with a newline.
    pub fn print(self, value: &serde_json::Value) -> Result<String, MeshError> {
        match self {
            Self::Json => serde_json::to_string_pretty(value)
                .map(|mut s| {
                    s.push('\n');
                    s
                })
                .map_err(|e| MeshError::Serialize {
                    format: "JSON",
                    reason: e.to_string(),
                }),
            // Plain scalars only: a long @type folded over two lines reads badly.
            Self::Yaml => serde_saphyr::to_string_with_options(
                value,
                serde_saphyr::ser_options! { prefer_block_scalars: false },
            )
            .map_err(|e| MeshError::Serialize {
                format: "YAML",
                reason: e.to_string(),
            }),
        }
    }
}
