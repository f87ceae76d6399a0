//! TLS material for broker connections: loaded once, when the client is built, so a bad
//! path or a key that does not match fails at start-up rather than at the first poll.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use super::{KafkaError, TlsSettings};

/// A ready TLS connector plus the optional fixed server name.
#[derive(Clone)]
pub(crate) struct Tls {
    pub(crate) connector: TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsSettings {
    /// The settings the `--kafka-tls-*` flags ask for ([`kpool_cli::kafka::KafkaTlsArgs`],
    /// shared by every binary that talks to Kafka); `None`: plaintext.
    pub fn from_args(args: &kpool_cli::kafka::KafkaTlsArgs) -> Option<Self> {
        args.enabled().then(|| Self {
            ca_file: args.kafka_tls_ca.clone(),
            client_cert: args.kafka_tls_cert.clone(),
            client_key: args.kafka_tls_key.clone(),
            server_name: args.kafka_tls_server_name.clone(),
        })
    }
}

fn tls_err(what: &'static str, path: Option<&Path>, detail: impl ToString) -> KafkaError {
    KafkaError::Tls {
        what,
        path: path.map(Path::to_path_buf),
        detail: detail.to_string(),
    }
}

fn read(what: &'static str, path: &PathBuf) -> Result<Vec<u8>, KafkaError> {
    std::fs::read(path).map_err(|e| tls_err(what, Some(path), e))
}

impl Tls {
    /// Load CA, client certificate and key, and build the rustls client configuration on
    /// the ring provider (explicitly, so it works whether or not a process-wide default
    /// provider was installed).
    pub(crate) fn load(settings: &TlsSettings) -> Result<Self, KafkaError> {
        let mut roots = RootCertStore::empty();
        match &settings.ca_file {
            Some(path) => {
                let pem = read("CA bundle", path)?;
                let mut n = 0;
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|e| tls_err("CA bundle", Some(path), e))?;
                    roots
                        .add(cert)
                        .map_err(|e| tls_err("CA bundle", Some(path), e))?;
                    n += 1;
                }
                if n == 0 {
                    return Err(tls_err(
                        "CA bundle",
                        Some(path),
                        "expected at least one PEM CERTIFICATE block, found none",
                    ));
                }
            }
            None => {
                // No CA given: trust the system's roots, as other Kafka clients do.
                let native = rustls_native_certs::load_native_certs();
                let (added, _ignored) = roots.add_parsable_certificates(native.certs);
                if added == 0 {
                    return Err(tls_err(
                        "CA bundle",
                        None,
                        format!(
                            "no ca_file set and no system root certificates found{}",
                            native
                                .errors
                                .first()
                                .map(|e| format!(" ({e})"))
                                .unwrap_or_default()
                        ),
                    ));
                }
            }
        }

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err("protocol versions", None, e))?
            .with_root_certificates(roots);

        let config = match (&settings.client_cert, &settings.client_key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(_), None) => {
                return Err(tls_err(
                    "client key",
                    None,
                    "client_cert is set but client_key is not; both or neither",
                ));
            }
            (None, Some(_)) => {
                return Err(tls_err(
                    "client certificate",
                    None,
                    "client_key is set but client_cert is not; both or neither",
                ));
            }
            (Some(cert_path), Some(key_path)) => {
                let pem = read("client certificate", cert_path)?;
                let chain = CertificateDer::pem_slice_iter(&pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| tls_err("client certificate", Some(cert_path), e))?;
                if chain.is_empty() {
                    return Err(tls_err(
                        "client certificate",
                        Some(cert_path),
                        "expected at least one PEM CERTIFICATE block, found none",
                    ));
                }
                let pem = read("client key", key_path)?;
                let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
                    tls_err(
                        "client key",
                        Some(key_path),
                        format!("expected a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
                    )
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| tls_err("client certificate and key", Some(cert_path), e))?
            }
        };

        let server_name = match &settings.server_name {
            Some(name) => Some(ServerName::try_from(name.clone()).map_err(|e| {
                tls_err(
                    "server name",
                    None,
                    format!("{name:?} is not a DNS name or IP: {e}"),
                )
            })?),
            None => None,
        };

        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// The name to verify the broker's certificate against: the configured one, else the
    /// host part of the address being dialled.
    pub(crate) fn server_name_for(&self, addr: &str) -> Result<ServerName<'static>, KafkaError> {
        if let Some(name) = &self.server_name {
            return Ok(name.clone());
        }
        let host = super::split_host_port(addr)
            .map(|(h, _)| h)
            .unwrap_or(addr)
            .trim_start_matches('[')
            .trim_end_matches(']');
        ServerName::try_from(host.to_owned()).map_err(|e| {
            tls_err(
                "server name",
                None,
                format!(
                    "broker host {host:?} is not a valid TLS server name ({e}); set server_name"
                ),
            )
        })
    }
}
