//! Facts about certificates: subject, SANs, validity, remaining lifetime, and whether a leaf
//! chains to a CA (checked with rustls' webpki verifier, the same code that serves TLS).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rustls::RootCertStore;
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::server::ParsedCertificate;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;

use crate::{CertError, pemio};

/// The facts of one certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    /// Subject distinguished name, RFC 4514 style (`CN=...`).
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Serial number, hex bytes separated by colons.
    pub serial: String,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// IP subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
    /// URI subject alternative names (the mesh's SPIFFE ids); left out of JSON when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub uris: Vec<String>,
    /// Start of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// End of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// Whether basic constraints say CA:TRUE.
    pub is_ca: bool,
    /// SHA-256 of the DER certificate, lowercase hex; what `openssl x509 -fingerprint -sha256` shows.
    pub sha256: String,
}

impl CertInfo {
    /// Parses the facts out of a DER certificate; `origin` names it in errors.
    pub fn from_der(origin: &str, der: &[u8]) -> Result<Self, CertError> {
        let bad = |detail: String| CertError::Certificate {
            origin: origin.to_owned(),
            index: 1,
            detail,
        };
        let (_, x509) = x509_parser::parse_x509_certificate(der).map_err(|e| bad(e.to_string()))?;
        let mut dns_names = Vec::new();
        let mut ip_addresses = Vec::new();
        let mut uris = Vec::new();
        if let Some(san) = x509
            .subject_alternative_name()
            .map_err(|e| bad(e.to_string()))?
        {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => dns_names.push((*d).to_owned()),
                    GeneralName::URI(u) => uris.push((*u).to_owned()),
                    GeneralName::IPAddress(b) => {
                        if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                            ip_addresses.push(IpAddr::from(v4));
                        } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                            ip_addresses.push(IpAddr::from(v6));
                        }
                    }
                    _ => {}
                }
            }
        }
        let validity = x509.validity();
        Ok(CertInfo {
            subject: x509.subject().to_string(),
            issuer: x509.issuer().to_string(),
            serial: x509.raw_serial_as_string(),
            dns_names,
            ip_addresses,
            uris,
            not_before: validity.not_before.to_datetime(),
            not_after: validity.not_after.to_datetime(),
            is_ca: x509.is_ca(),
            sha256: hex(&Sha256::digest(der)),
        })
    }

    /// `notAfter` as seconds since the Unix epoch.
    pub fn not_after_unix(&self) -> i64 {
        self.not_after.unix_timestamp()
    }

    /// Lifetime left at `now`; negative once expired.
    pub fn remaining(&self, now: OffsetDateTime) -> time::Duration {
        self.not_after - now
    }

    /// Total validity period.
    pub fn lifetime(&self) -> time::Duration {
        self.not_after - self.not_before
    }

    /// Whether less than `fraction` of the lifetime is left at `now` (so it should be renewed).
    pub fn renewal_due(&self, now: OffsetDateTime, fraction: f64) -> bool {
        self.remaining(now) < self.lifetime() * fraction
    }

    /// Whether the certificate is past its `notAfter` at `now`.
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        now > self.not_after
    }

    /// Errors with [`CertError::Expired`] when expired at `now`.
    pub fn check_not_expired(&self, origin: &str, now: OffsetDateTime) -> Result<(), CertError> {
        if self.is_expired(now) {
            return Err(CertError::Expired {
                origin: origin.to_owned(),
                subject: self.subject.clone(),
                not_after: self.not_after,
                now,
            });
        }
        Ok(())
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The DER SubjectPublicKeyInfo of a certificate (to compare with a key's public half).
pub(crate) fn spki_of(origin: &str, der: &[u8]) -> Result<Vec<u8>, CertError> {
    let (_, x509) =
        x509_parser::parse_x509_certificate(der).map_err(|e| CertError::Certificate {
            origin: origin.to_owned(),
            index: 1,
            detail: e.to_string(),
        })?;
    Ok(x509.tbs_certificate.subject_pki.raw.to_vec())
}

fn unix_time(now: OffsetDateTime) -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(now.unix_timestamp()).unwrap_or(0),
    ))
}

fn roots_of(cas: &[CertificateDer<'_>]) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    // A CA that webpki cannot use as an anchor simply never matches; callers see UnknownIssuer.
    let _ = roots.add_parsable_certificates(cas.iter().map(|c| c.clone().into_owned()));
    roots
}

/// Verifies that `chain[0]` (with `chain[1..]` as intermediates) chains to one of `cas` at
/// `now` for server authentication, and, when `name` is given, is valid for that DNS name or
/// IP address. This is the verification a rustls client (and, equivalently, the kube-apiserver)
/// performs, so "it verifies here" means "the webhook call will not fail on TLS".
pub fn verify_chain(
    origin: &str,
    chain: &[CertificateDer<'_>],
    cas: &[CertificateDer<'_>],
    name: Option<&str>,
    now: OffsetDateTime,
) -> Result<(), CertError> {
    let fail = verify_failure(origin);
    let leaf = chain
        .first()
        .ok_or_else(|| fail("expected a certificate chain, found none".to_owned()))?;
    let parsed = ParsedCertificate::try_from(leaf).map_err(|e| fail(e.to_string()))?;
    let algs = rustls::crypto::ring::default_provider().signature_verification_algorithms;
    verify_server_cert_signed_by_trust_anchor(
        &parsed,
        &roots_of(cas),
        &chain[1..],
        unix_time(now),
        algs.all,
    )
    .map_err(|e| fail(format!("does not chain to the given CA(s): {e}")))?;
    if let Some(name) = name {
        let server_name = ServerName::try_from(name.to_owned())
            .map_err(|e| fail(format!("{name:?} is not a DNS name or IP address: {e}")))?;
        rustls::client::verify_server_name(&parsed, &server_name)
            .map_err(|e| fail(format!("not valid for {name}: {e}")))?;
    }
    Ok(())
}

/// Verifies that `chain[0]` (with `chain[1..]` as intermediates) chains to one of `cas` at
/// `now` as a TLS client certificate: what a rustls server requiring client certificates
/// checks (webpki, extended key usage clientAuth), as Envoy's `require_client_certificate`
/// does. Names are not checked (URI SANs are matched by the peer's own rules).
pub fn verify_client_chain(
    origin: &str,
    chain: &[CertificateDer<'_>],
    cas: &[CertificateDer<'_>],
    now: OffsetDateTime,
) -> Result<(), CertError> {
    let fail = verify_failure(origin);
    let leaf = chain
        .first()
        .ok_or_else(|| fail("expected a certificate chain, found none".to_owned()))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        std::sync::Arc::new(roots_of(cas)),
        provider,
    )
    .build()
    .map_err(|e| fail(format!("does not chain to the given CA(s): {e}")))?;
    verifier
        .verify_client_cert(leaf, &chain[1..], unix_time(now))
        .map_err(|e| fail(format!("does not chain to the given CA(s): {e}")))?;
    Ok(())
}

/// How a verification of `origin` that failed is reported: `detail` says why.
fn verify_failure(origin: &str) -> impl Fn(String) -> CertError + '_ {
    move |detail| CertError::Verify {
        origin: origin.to_owned(),
        detail,
    }
}

/// What `kpool-certs inspect` reports for one certificate.
#[derive(Debug, Clone, Serialize)]
pub struct InspectedCert {
    /// The facts.
    #[serde(flatten)]
    pub info: CertInfo,
    /// Seconds of lifetime left at the time of inspection (negative once expired).
    pub remaining_seconds: i64,
    /// Whether it was expired at the time of inspection.
    pub expired: bool,
    /// For a leaf: the subject of the first inspected CA it chains to, if any.
    pub chains_to: Option<String>,
    /// For a leaf when CAs were inspected too and none verifies it: why.
    pub chain_error: Option<String>,
}

/// What `kpool-certs inspect` reports for one file.
#[derive(Debug, Clone, Serialize)]
pub struct InspectedFile {
    /// The file.
    pub path: PathBuf,
    /// Its certificates, in file order (empty for a key file).
    pub certificates: Vec<InspectedCert>,
    /// For a private key file: the certificate subjects (among the inspected files) it belongs to.
    pub key_for: Option<Vec<String>>,
}

/// Inspects certificate and key files together: every leaf is checked against every CA found
/// in any of the files (so `inspect ca.crt tls.crt` tells whether the pair belongs together;
/// as a server certificate, or failing that as a client certificate), and every key is
/// matched against the certificates.
pub fn inspect_files(
    paths: &[PathBuf],
    now: OffsetDateTime,
) -> Result<Vec<InspectedFile>, CertError> {
    enum Content {
        Certs(Vec<CertificateDer<'static>>),
        Key(Vec<u8>),
    }
    let mut loaded = Vec::new();
    for path in paths {
        let origin = pemio::origin_of(path);
        let text = pemio::read_file(path)?;
        // A file with keys and no certificate is a key file; anything else is read as
        // certificates, whose parser gives the precise error for what it holds.
        let tags: Vec<String> = pem::parse_many(&text)
            .map(|b| b.iter().map(|b| b.tag().to_owned()).collect())
            .unwrap_or_default();
        let is_key = tags.iter().any(|t| t.ends_with("PRIVATE KEY"))
            && !tags.iter().any(|t| t == "CERTIFICATE");
        let content = if is_key {
            let key = pemio::parse_private_key(&origin, &text)?;
            let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| {
                CertError::Key {
                    origin: origin.clone(),
                    detail: e.to_string(),
                }
            })?;
            let spki = signing.public_key().map(|s| s.to_vec()).unwrap_or_default();
            Content::Key(spki)
        } else {
            Content::Certs(pemio::parse_certificates(&origin, &text)?)
        };
        loaded.push((path.clone(), content));
    }
    let mut cas: Vec<(CertificateDer<'static>, String)> = Vec::new();
    for (path, content) in &loaded {
        if let Content::Certs(certs) = content {
            for c in certs {
                let info = CertInfo::from_der(&pemio::origin_of(path), c)?;
                if info.is_ca {
                    cas.push((c.clone(), info.subject));
                }
            }
        }
    }
    let mut out = Vec::new();
    for (path, content) in &loaded {
        let origin = pemio::origin_of(path);
        match content {
            Content::Certs(certs) => {
                let mut inspected = Vec::new();
                for (i, c) in certs.iter().enumerate() {
                    let info = CertInfo::from_der(&origin, c)?;
                    let (mut chains_to, mut chain_error) = (None, None);
                    if !info.is_ca && !cas.is_empty() {
                        for (ca, subject) in &cas {
                            let cas = std::slice::from_ref(ca);
                            // A client certificate (the mesh's) chains as a client.
                            match verify_chain(&origin, &certs[i..], cas, None, now).or_else(|e| {
                                verify_client_chain(&origin, &certs[i..], cas, now).map_err(|_| e)
                            }) {
                                Ok(()) => {
                                    chains_to = Some(subject.clone());
                                    break;
                                }
                                Err(e) => chain_error = Some(e.to_string()),
                            }
                        }
                        if chains_to.is_some() {
                            chain_error = None;
                        }
                    }
                    inspected.push(InspectedCert {
                        remaining_seconds: info.remaining(now).whole_seconds(),
                        expired: info.is_expired(now),
                        info,
                        chains_to,
                        chain_error,
                    });
                }
                out.push(InspectedFile {
                    path: path.clone(),
                    certificates: inspected,
                    key_for: None,
                });
            }
            Content::Key(spki) => {
                let mut matches = Vec::new();
                for (p, c) in &loaded {
                    if let Content::Certs(certs) = c {
                        for cert in certs {
                            if spki_of(&pemio::origin_of(p), cert)? == *spki {
                                matches
                                    .push(CertInfo::from_der(&pemio::origin_of(p), cert)?.subject);
                            }
                        }
                    }
                }
                out.push(InspectedFile {
                    path: path.clone(),
                    certificates: Vec::new(),
                    key_for: Some(matches),
                });
            }
        }
    }
    Ok(out)
}

/// Renders the inspection for people.
pub fn render_human(files: &[InspectedFile]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for f in files {
        let _ = writeln!(s, "{}:", f.path.display());
        if let Some(key_for) = &f.key_for {
            if key_for.is_empty() {
                let _ = writeln!(
                    s,
                    "  private key; matches none of the inspected certificates"
                );
            } else {
                let _ = writeln!(s, "  private key for: {}", key_for.join("; "));
            }
        }
        for (i, c) in f.certificates.iter().enumerate() {
            let info = &c.info;
            let _ = writeln!(
                s,
                "  certificate #{}{}",
                i + 1,
                if info.is_ca { " (CA)" } else { "" }
            );
            let _ = writeln!(s, "    subject:     {}", info.subject);
            let _ = writeln!(s, "    issuer:      {}", info.issuer);
            if !info.dns_names.is_empty() {
                let _ = writeln!(s, "    dns names:   {}", info.dns_names.join(", "));
            }
            if !info.ip_addresses.is_empty() {
                let ips: Vec<String> = info.ip_addresses.iter().map(ToString::to_string).collect();
                let _ = writeln!(s, "    ip addresses: {}", ips.join(", "));
            }
            if !info.uris.is_empty() {
                let _ = writeln!(s, "    uris:        {}", info.uris.join(", "));
            }
            let _ = writeln!(s, "    not before:  {}", rfc3339(info.not_before));
            let _ = writeln!(s, "    not after:   {}", rfc3339(info.not_after));
            let remaining = if c.expired {
                format!("EXPIRED {} ago", human_duration(-c.remaining_seconds))
            } else {
                human_duration(c.remaining_seconds)
            };
            let _ = writeln!(s, "    remaining:   {remaining}");
            let _ = writeln!(s, "    serial:      {}", info.serial);
            let _ = writeln!(s, "    sha256:      {}", info.sha256);
            if let Some(ca) = &c.chains_to {
                let _ = writeln!(s, "    chains to:   {ca}");
            } else if let Some(e) = &c.chain_error {
                let _ = writeln!(s, "    chains to:   NONE of the inspected CAs ({e})");
            }
        }
    }
    s
}

/// RFC 3339 text of a time (falls back to the default format, which never happens for X.509 times).
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

fn human_duration(secs: i64) -> String {
    let days = secs / 86_400;
    let hours = (secs % 86_400) / 3600;
    let mins = (secs % 3600) / 60;
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {mins}m")
    } else {
        format!("{mins}m {}s", secs % 60)
    }
}

/// Reads a certificate file and returns its parsed chain (errors name the file).
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    pemio::parse_certificates(&pemio::origin_of(path), &pemio::read_file(path)?)
}
