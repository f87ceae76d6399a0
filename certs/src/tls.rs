//! Serving TLS from files that change under the server: a rustls certificate resolver that
//! re-reads `tls.crt`/`tls.key`, and a watcher that notices when they change.
//!
//! A new pair is only ever swapped in whole and after it passed every check (parses, key
//! matches certificate, not expired); anything else leaves the pair being served untouched,
//! so a half-written or broken Secret update never takes the webhook off the air.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::inspect::{CertInfo, spki_of};
use crate::{CertError, pemio};

pub use kpool_cli::install_crypto_provider;

/// Builds a rustls `CertifiedKey` from a chain and a key, refusing a key that does not belong
/// to the first certificate (rustls would otherwise fail every handshake with a confusing
/// signature error).
pub fn certified_key(
    cert_origin: &str,
    chain: Vec<CertificateDer<'static>>,
    key_origin: &str,
    key: &PrivateKeyDer<'_>,
) -> Result<CertifiedKey, CertError> {
    let signing =
        rustls::crypto::ring::sign::any_supported_type(key).map_err(|e| CertError::Key {
            origin: key_origin.to_owned(),
            detail: e.to_string(),
        })?;
    let Some(leaf) = chain.first() else {
        return Err(CertError::Pem {
            origin: cert_origin.to_owned(),
            expected: "one or more PEM CERTIFICATE blocks",
            found: "none".to_owned(),
        });
    };
    let cert_spki = spki_of(cert_origin, leaf)?;
    match signing.public_key() {
        Some(key_spki) if *key_spki != *cert_spki => {
            return Err(CertError::KeyMismatch {
                cert_origin: cert_origin.to_owned(),
                key_origin: key_origin.to_owned(),
            });
        }
        _ => {}
    }
    Ok(CertifiedKey::new(chain, signing))
}

/// Whether a reload changed what is served.
// One short-lived value per reload: boxing the facts would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The files hold the pair already served.
    Unchanged,
    /// A new pair is now served; its facts.
    Reloaded(CertInfo),
}

/// What the watcher reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadEvent {
    /// A new pair is now served.
    Reloaded(CertInfo),
    /// The files changed but could not be used; the previous pair is still served.
    Failed(String),
}

type Fingerprint = [u8; 32];

struct Served {
    key: Arc<CertifiedKey>,
    info: CertInfo,
    fingerprint: Fingerprint,
}

/// A rustls server certificate resolver serving the pair in two files, which can be re-read
/// while handshakes are in flight. Handshakes take a cheap `Arc` clone under a read lock, so a
/// reload never blocks or breaks them.
pub struct ReloadingResolver {
    cert_path: PathBuf,
    key_path: PathBuf,
    served: RwLock<Served>,
    /// Serialises reloads, so two concurrent reloads cannot interleave their reads and swaps.
    reloading: Mutex<()>,
}

impl fmt::Debug for ReloadingResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingResolver")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .field("current", &self.current().subject)
            .finish()
    }
}

/// Both files as read, plus a fingerprint of their bytes.
struct Snapshot {
    cert: Vec<u8>,
    key: Vec<u8>,
    fingerprint: Fingerprint,
}

fn read_snapshot(cert_path: &Path, key_path: &Path) -> Result<Snapshot, CertError> {
    // Kubernetes swaps a Secret volume by re-pointing the `..data` symlink, atomically for both
    // files; but our two reads are not atomic together. Re-read the certificate after the key
    // and retry if it moved, so a swap between the reads is not mistaken for a key mismatch.
    let mut attempt = 0;
    loop {
        let cert = pemio::read_file(cert_path)?;
        let key = pemio::read_file(key_path)?;
        let again = pemio::read_file(cert_path)?;
        attempt += 1;
        if again == cert || attempt >= 3 {
            let mut h = Sha256::new();
            h.update((cert.len() as u64).to_le_bytes());
            h.update(&cert);
            h.update(&key);
            return Ok(Snapshot {
                cert,
                key,
                fingerprint: h.finalize().into(),
            });
        }
    }
}

fn build(cert_path: &Path, key_path: &Path, snap: &Snapshot) -> Result<Served, CertError> {
    let cert_origin = pemio::origin_of(cert_path);
    let key_origin = pemio::origin_of(key_path);
    let chain = pemio::parse_certificates(&cert_origin, &snap.cert)?;
    let info = CertInfo::from_der(&cert_origin, &chain[0])?;
    info.check_not_expired(&cert_origin, OffsetDateTime::now_utc())?;
    let key = pemio::parse_private_key(&key_origin, &snap.key)?;
    let key = certified_key(&cert_origin, chain, &key_origin, &key)?;
    Ok(Served {
        key: Arc::new(key),
        info,
        fingerprint: snap.fingerprint,
    })
}

impl ReloadingResolver {
    /// Loads the pair at start-up. Errors (naming the file) if either file is unreadable or
    /// invalid, the key does not match, or the certificate has expired.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, CertError> {
        let snap = read_snapshot(cert, key)?;
        let served = build(cert, key, &snap)?;
        Ok(Arc::new(ReloadingResolver {
            cert_path: cert.to_owned(),
            key_path: key.to_owned(),
            served: RwLock::new(served),
            reloading: Mutex::new(()),
        }))
    }

    /// Re-reads the files. Unchanged bytes give [`ReloadOutcome::Unchanged`]; a valid new pair
    /// is swapped in and gives [`ReloadOutcome::Reloaded`]; anything else is an error and the
    /// pair already served keeps being served. Blocking (two small file reads): call it from
    /// `spawn_blocking` in async code, as [`spawn_watcher`] does.
    pub fn reload(&self) -> Result<ReloadOutcome, CertError> {
        self.reload_tracked().1
    }

    /// Like [`reload`](Self::reload), also returning the fingerprint of what was read (when
    /// it could be read) so the watcher reports a broken update once, not on every poll.
    fn reload_tracked(&self) -> (Option<Fingerprint>, Result<ReloadOutcome, CertError>) {
        let _guard = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let snap = match read_snapshot(&self.cert_path, &self.key_path) {
            Ok(s) => s,
            Err(e) => return (None, Err(e)),
        };
        if snap.fingerprint == self.read_served(|s| s.fingerprint) {
            return (Some(snap.fingerprint), Ok(ReloadOutcome::Unchanged));
        }
        match build(&self.cert_path, &self.key_path, &snap) {
            Ok(served) => {
                let info = served.info.clone();
                *self.served.write().unwrap_or_else(PoisonError::into_inner) = served;
                (Some(snap.fingerprint), Ok(ReloadOutcome::Reloaded(info)))
            }
            Err(e) => (Some(snap.fingerprint), Err(e)),
        }
    }

    fn read_served<T>(&self, f: impl FnOnce(&Served) -> T) -> T {
        f(&self.served.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The facts of the pair now served.
    pub fn current(&self) -> CertInfo {
        self.read_served(|s| s.info.clone())
    }

    /// The certificate file this resolver serves.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The key file this resolver serves.
    pub fn key_path(&self) -> &Path {
        &self.key_path
    }
}

impl ResolvesServerCert for ReloadingResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.read_served(|s| Arc::clone(&s.key)))
    }
}

/// A rustls server configuration serving the resolver's pair: TLS 1.3 and 1.2 (nothing
/// older), no client authentication, ALPN `h2` then `http/1.1`. Installs the ring provider
/// as process default if none is.
pub fn server_config(resolver: Arc<ReloadingResolver>) -> ServerConfig {
    install_crypto_provider();
    let mut config = ServerConfig::builder_with_protocol_versions(&[
        &rustls::version::TLS13,
        &rustls::version::TLS12,
    ])
    .with_no_client_auth()
    .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

/// A rustls client configuration that trusts only the CA certificates in `ca_file` (PEM,
/// as `kpool-certs create` writes `ca.crt`) and offers `alpn`: how a client that holds the
/// webhook's `caBundle` (the API server, a test, a load generator) reaches a kpool server.
/// Installs the ring provider as process default if none is.
pub fn client_config(ca_file: &Path, alpn: &[&[u8]]) -> Result<rustls::ClientConfig, CertError> {
    install_crypto_provider();
    let origin = pemio::origin_of(ca_file);
    let cas = pemio::parse_certificates(&origin, &pemio::read_file(ca_file)?)?;
    let mut roots = rustls::RootCertStore::empty();
    for (i, ca) in cas.into_iter().enumerate() {
        roots.add(ca).map_err(|e| CertError::Certificate {
            origin: origin.clone(),
            index: i + 1,
            detail: format!("not usable as a trust anchor: {e}"),
        })?;
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// Polls the files every `interval` and reloads when their content changes; calls `on_event`
/// for each reload and for each failed reload (once per distinct broken content, not on every
/// poll). Each poll reads both files and compares a SHA-256 fingerprint of their bytes, which
/// sees a Kubernetes Secret volume's `..data` symlink swap as well as a plain in-place rewrite,
/// even one that keeps size and modification time; the files are a few KB, so this is cheap.
/// The task runs until aborted (dropping the handle does not stop it). Must be called from
/// within a Tokio runtime.
pub fn spawn_watcher(
    resolver: Arc<ReloadingResolver>,
    interval: Duration,
    on_event: impl Fn(ReloadEvent) + Send + Sync + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(1)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await; // the first tick is immediate; the pair was just loaded
        let mut last_failure: Option<(Option<Fingerprint>, String)> = None;
        loop {
            ticker.tick().await;
            let r = Arc::clone(&resolver);
            let Ok((fingerprint, outcome)) =
                tokio::task::spawn_blocking(move || r.reload_tracked()).await
            else {
                continue; // the blocking task panicked; try again next tick
            };
            match outcome {
                Ok(ReloadOutcome::Unchanged) => last_failure = None,
                Ok(ReloadOutcome::Reloaded(info)) => {
                    last_failure = None;
                    on_event(ReloadEvent::Reloaded(info));
                }
                Err(e) => {
                    let msg = e.to_string();
                    let key = (fingerprint, msg.clone());
                    // Unreadable files have no fingerprint: dedupe those by message.
                    if last_failure.as_ref() != Some(&key) {
                        last_failure = Some(key);
                        on_event(ReloadEvent::Failed(msg));
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_config_names_an_unusable_ca_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.crt");
        let err = client_config(&missing, &[b"h2"]).expect_err("no file");
        assert!(err.to_string().contains("missing.crt"), "{err}");
        let garbage = dir.path().join("ca.crt");
        std::fs::write(&garbage, "not a certificate").expect("write");
        let err = client_config(&garbage, &[b"h2"]).expect_err("no PEM");
        assert!(
            err.to_string().contains("ca.crt") && err.to_string().contains("CERTIFICATE"),
            "{err}"
        );
    }

    #[test]
    fn client_config_trusts_the_created_ca_and_offers_the_alpn() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = crate::create::CreateOptions::new("kpool-webhook", "kpool-system", dir.path());
        crate::create::create(&opts).expect("create");
        let config =
            client_config(&dir.path().join("ca.crt"), &[b"h2", b"http/1.1"]).expect("config");
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }
}
