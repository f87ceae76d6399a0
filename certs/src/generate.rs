//! Key and certificate generation with rcgen: an ECDSA P-256 CA, serving certificates it
//! signs for a Kubernetes Service, and leaf certificates for other names and uses (the mesh's
//! URI identities, client certificates).

use std::fmt;
use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::inspect::{CertInfo, hex, spki_of};
use crate::{CertError, pemio};

/// How far in the past `notBefore` is put, so that a peer whose clock runs a little behind
/// (the kube-apiserver on another node) does not see a certificate that is "not yet valid".
pub const NOT_BEFORE_BACKDATE: time::Duration = time::Duration::minutes(5);

/// The DNS names under which a Service is reached from inside the cluster, in the order
/// Kubernetes clients use them: `svc`, `svc.ns`, `svc.ns.svc`, `svc.ns.svc.cluster.local`.
/// The kube-apiserver calls webhooks at `svc.ns.svc`.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// Whether `s` is an RFC 1123 DNS label (what Service and namespace names must be).
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Whether `s` is a DNS name usable as a SAN (labels, optionally a leading `*.` wildcard).
pub fn is_dns_name(s: &str) -> bool {
    let rest = s.strip_prefix("*.").unwrap_or(s);
    !rest.is_empty()
        && s.len() <= 253
        && rest.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// A CA: its certificate and signing key.
#[derive(Debug)]
pub struct Ca {
    cert: CertificateDer<'static>,
    key: KeyPair,
    info: CertInfo,
}

impl Ca {
    /// Generates a new self-signed ECDSA P-256 CA valid for `days` from `now`.
    ///
    /// The common name carries a short key id (`kpool-certs CA 1a2b3c4d`) so that during a
    /// rotation, when old and new CA sit in one bundle, they have different subjects and
    /// every verifier (webpki, Go's crypto/x509) picks the right one by name.
    pub fn generate(days: u32, now: OffsetDateTime) -> Result<Self, CertError> {
        Self::generate_named(CA_NAME, days, now)
    }

    /// [`Ca::generate`] with another common name before the key id (`kpool mesh CA 1a2b3c4d`),
    /// so CAs for different purposes tell apart at a glance.
    pub fn generate_named(name: &str, days: u32, now: OffsetDateTime) -> Result<Self, CertError> {
        if days == 0 {
            return Err(CertError::Invalid(
                "CA validity must be at least 1 day".to_owned(),
            ));
        }
        let key = KeyPair::generate().map_err(CertError::generate("CA key"))?;
        let id = hex(&Sha256::digest(key.subject_public_key_info())[..4]);
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "kpool");
        dn.push(DnType::CommonName, format!("{name} {id}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - NOT_BEFORE_BACKDATE;
        params.not_after = now + time::Duration::days(i64::from(days));
        let cert = params
            .self_signed(&key)
            .map_err(CertError::generate("CA certificate"))?;
        let cert = cert.der().clone();
        let info = CertInfo::from_der("generated CA", &cert)?;
        Ok(Ca { cert, key, info })
    }

    /// Loads a CA from PEM: the first certificate of `cert_pem` and the PKCS#8 key in
    /// `key_pem`. Errors if the certificate is not a CA or the key does not match it.
    pub fn from_pem(
        cert_origin: &str,
        cert_pem: &[u8],
        key_origin: &str,
        key_pem: &[u8],
    ) -> Result<Self, CertError> {
        let cert = pemio::parse_certificates(cert_origin, cert_pem)?.remove(0);
        let info = CertInfo::from_der(cert_origin, &cert)?;
        if !info.is_ca {
            return Err(CertError::Verify {
                origin: cert_origin.to_owned(),
                detail: format!(
                    "expected a CA certificate (basicConstraints CA:TRUE), found {} which is not a CA",
                    info.subject
                ),
            });
        }
        let key = load_key_pair(key_origin, key_pem)?;
        if key.subject_public_key_info() != spki_of(cert_origin, &cert)? {
            return Err(CertError::KeyMismatch {
                cert_origin: cert_origin.to_owned(),
                key_origin: key_origin.to_owned(),
            });
        }
        Ok(Ca { cert, key, info })
    }

    /// The CA certificate (DER).
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The CA certificate as PEM.
    pub fn cert_pem(&self) -> String {
        pemio::encode_certificates([&self.cert])
    }

    /// The CA private key as PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        pemio::encode_pkcs8_key(self.key.serialized_der())
    }

    /// The facts of the CA certificate.
    pub fn info(&self) -> &CertInfo {
        &self.info
    }

    /// Issues a serving certificate for `req` valid from now (backdated) for `req.days`, but
    /// never past the CA's own `notAfter` (a leaf outliving its CA is unverifiable anyway).
    pub fn issue_serving(
        &self,
        req: &ServingRequest,
        now: OffsetDateTime,
    ) -> Result<ServingPair, CertError> {
        req.validate()?;
        let leaf = LeafRequest {
            common_name: format!("{}.{}.svc", req.service, req.namespace),
            organizational_unit: None,
            sans: req
                .dns_names()
                .into_iter()
                .map(San::Dns)
                .chain(req.ips.iter().copied().map(San::Ip))
                .collect(),
            usage: Usage::Server,
            days: req.days,
        };
        self.issue_leaf("serving certificate", &leaf, now)
    }

    /// Issues a leaf certificate for `req` (`what` names it in errors): valid from now
    /// (backdated) for `req.days` but never past the CA's `notAfter`, not a CA, key usage
    /// digitalSignature, the extended key usage of `req.usage`, with an authority key id.
    pub fn issue_leaf(
        &self,
        what: &'static str,
        req: &LeafRequest,
        now: OffsetDateTime,
    ) -> Result<ServingPair, CertError> {
        if req.days == 0 {
            return Err(CertError::Invalid(format!(
                "{what}: validity must be at least 1 day"
            )));
        }
        let issuer = Issuer::from_ca_cert_der(&self.cert, &self.key)
            .map_err(CertError::generate("issuer from CA certificate"))?;
        let key = KeyPair::generate().map_err(CertError::generate("leaf key"))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "kpool");
        if let Some(ou) = &req.organizational_unit {
            dn.push(DnType::OrganizationalUnitName, ou.as_str());
        }
        dn.push(DnType::CommonName, req.common_name.as_str());
        params.distinguished_name = dn;
        params.subject_alt_names = req
            .sans
            .iter()
            .map(San::to_rcgen)
            .collect::<Result<Vec<_>, _>>()?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match req.usage {
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::ServerAndClient => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        };
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - NOT_BEFORE_BACKDATE;
        params.not_after =
            (now + time::Duration::days(i64::from(req.days))).min(self.info.not_after);
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(CertError::generate(what))?;
        let cert = cert.der().clone();
        let info = CertInfo::from_der(what, &cert)?;
        Ok(ServingPair {
            cert,
            key_pkcs8: key.serialize_der(),
            info,
        })
    }
}

/// The common name of [`Ca::generate`]'s CAs, before the key id.
pub const CA_NAME: &str = "kpool-certs CA";

/// A subject alternative name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum San {
    /// A DNS name.
    Dns(String),
    /// An IP address.
    Ip(IpAddr),
    /// A URI, such as the SPIFFE id `spiffe://kpool.io/kafka/stretch/broker`.
    Uri(String),
}

impl San {
    /// Reads a SAN written as text the way the mesh policy writes one: a URI when it has a
    /// scheme (`://`), else a DNS name (lowercased). Nothing is checked here; [`San::check`]
    /// does.
    pub fn uri_or_dns(s: &str) -> Self {
        if s.contains("://") {
            San::Uri(s.to_owned())
        } else {
            San::Dns(s.to_ascii_lowercase())
        }
    }

    /// Whether the SAN can go into a certificate: a DNS name as [`is_dns_name`] says, or a URI
    /// of printable ASCII without spaces and with a scheme and something after `://`.
    pub fn check(&self) -> Result<(), String> {
        match self {
            San::Dns(d) if !is_dns_name(d) => Err(format!("{d:?}: expected a DNS name")),
            San::Uri(u) => {
                let ok = u.bytes().all(|b| b.is_ascii_graphic())
                    && u.split_once("://").is_some_and(|(scheme, rest)| {
                        !rest.is_empty()
                            && scheme.bytes().enumerate().all(|(i, b)| {
                                b.is_ascii_alphabetic()
                                    || (i > 0 && (b.is_ascii_digit() || b"+-.".contains(&b)))
                            })
                            && !scheme.is_empty()
                    });
                if ok {
                    Ok(())
                } else {
                    Err(format!(
                        "{u:?}: expected a URI (scheme://..., printable ASCII without spaces)"
                    ))
                }
            }
            _ => Ok(()),
        }
    }

    /// Every SAN of a certificate, sorted.
    pub fn of(info: &CertInfo) -> Vec<San> {
        let mut sans: Vec<San> = info
            .dns_names
            .iter()
            .map(|d| San::Dns(d.to_ascii_lowercase()))
            .chain(info.ip_addresses.iter().copied().map(San::Ip))
            .chain(info.uris.iter().cloned().map(San::Uri))
            .collect();
        sans.sort();
        sans
    }

    fn to_rcgen(&self) -> Result<SanType, CertError> {
        let bad = |e: rcgen::Error| CertError::Invalid(format!("SAN {self}: {e}"));
        Ok(match self {
            San::Dns(d) => SanType::DnsName(d.clone().try_into().map_err(bad)?),
            San::Ip(ip) => SanType::IpAddress(*ip),
            San::Uri(u) => SanType::URI(u.clone().try_into().map_err(bad)?),
        })
    }
}

impl fmt::Display for San {
    /// As OpenSSL prints SANs: `DNS:name`, `IP Address:addr`, `URI:uri`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            San::Dns(d) => write!(f, "DNS:{d}"),
            San::Ip(ip) => write!(f, "IP Address:{ip}"),
            San::Uri(u) => write!(f, "URI:{u}"),
        }
    }
}

/// The extended key usage of a leaf certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// TLS server authentication (serverAuth).
    Server,
    /// TLS client authentication (clientAuth).
    Client,
    /// Both: a sidecar that accepts connections and may also be checked as a peer.
    ServerAndClient,
}

/// A leaf certificate to issue with [`Ca::issue_leaf`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafRequest {
    /// Subject common name (subject `O=kpool[, OU=...], CN=...`).
    pub common_name: String,
    /// Subject organizational unit, if any.
    pub organizational_unit: Option<String>,
    /// Subject alternative names.
    pub sans: Vec<San>,
    /// Extended key usage.
    pub usage: Usage,
    /// Validity in days.
    pub days: u32,
}

/// Parses a PEM private key into an rcgen key pair (for signing).
pub(crate) fn load_key_pair(origin: &str, key_pem: &[u8]) -> Result<KeyPair, CertError> {
    let key = pemio::parse_private_key(origin, key_pem)?;
    let key_der: PrivateKeyDer<'_> = match key {
        PrivateKeyDer::Pkcs8(k) => PrivateKeyDer::Pkcs8(k),
        other => {
            return Err(CertError::Key {
                origin: origin.to_owned(),
                detail: format!(
                    "a {} key (convert it with `openssl pkcs8 -topk8 -nocrypt`)",
                    match other {
                        PrivateKeyDer::Sec1(_) => "SEC1 \"EC PRIVATE KEY\"",
                        PrivateKeyDer::Pkcs1(_) => "PKCS#1 \"RSA PRIVATE KEY\"",
                        _ => "non-PKCS#8",
                    }
                ),
            });
        }
    };
    KeyPair::try_from(&key_der).map_err(|e| CertError::Key {
        origin: origin.to_owned(),
        detail: format!("a key rcgen cannot sign with ({e})"),
    })
}

/// What a serving certificate must cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingRequest {
    /// Service name (a DNS label).
    pub service: String,
    /// Namespace (a DNS label).
    pub namespace: String,
    /// Extra DNS SANs beyond the Service names.
    pub dns: Vec<String>,
    /// IP SANs.
    pub ips: Vec<IpAddr>,
    /// Validity in days.
    pub days: u32,
}

impl ServingRequest {
    /// Checks names and validity.
    pub fn validate(&self) -> Result<(), CertError> {
        if !is_dns_label(&self.service) {
            return Err(CertError::Invalid(format!(
                "service {:?}: expected a DNS label (lowercase letters, digits, '-', at most 63)",
                self.service
            )));
        }
        if !is_dns_label(&self.namespace) {
            return Err(CertError::Invalid(format!(
                "namespace {:?}: expected a DNS label (lowercase letters, digits, '-', at most 63)",
                self.namespace
            )));
        }
        if let Some(bad) = self.dns.iter().find(|d| !is_dns_name(d)) {
            return Err(CertError::Invalid(format!(
                "--dns {bad:?}: expected a DNS name"
            )));
        }
        if self.days == 0 {
            return Err(CertError::Invalid(
                "validity must be at least 1 day".to_owned(),
            ));
        }
        Ok(())
    }

    /// Every DNS SAN the certificate must carry: the Service names, then the extra names
    /// (duplicates dropped, order kept).
    pub fn dns_names(&self) -> Vec<String> {
        let mut names = service_dns_names(&self.service, &self.namespace);
        for d in &self.dns {
            let d = d.to_ascii_lowercase();
            if !names.contains(&d) {
                names.push(d);
            }
        }
        names
    }

    /// Whether a certificate's SANs are exactly what this request asks for (as sets).
    pub fn matches(&self, info: &CertInfo) -> bool {
        let mut want_dns = self.dns_names();
        let mut have_dns: Vec<String> = info
            .dns_names
            .iter()
            .map(|d| d.to_ascii_lowercase())
            .collect();
        want_dns.sort();
        want_dns.dedup();
        have_dns.sort();
        have_dns.dedup();
        let mut want_ip = self.ips.clone();
        let mut have_ip = info.ip_addresses.clone();
        want_ip.sort();
        want_ip.dedup();
        have_ip.sort();
        have_ip.dedup();
        want_dns == have_dns && want_ip == have_ip
    }
}

/// A serving certificate and its key.
#[derive(Debug, Clone)]
pub struct ServingPair {
    cert: CertificateDer<'static>,
    key_pkcs8: Vec<u8>,
    info: CertInfo,
}

impl ServingPair {
    /// The certificate (DER).
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The certificate as PEM (the leaf only; the CA travels separately as `ca.crt`).
    pub fn cert_pem(&self) -> String {
        pemio::encode_certificates([&self.cert])
    }

    /// The private key as PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        pemio::encode_pkcs8_key(&self.key_pkcs8)
    }

    /// The private key as DER.
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivatePkcs8KeyDer::from(self.key_pkcs8.clone()).into()
    }

    /// The facts of the certificate.
    pub fn info(&self) -> &CertInfo {
        &self.info
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::verify_chain;

    fn req() -> ServingRequest {
        ServingRequest {
            service: "kpool-webhook".into(),
            namespace: "kpool-system".into(),
            dns: vec!["webhook.example.com".into()],
            ips: vec!["127.0.0.1".parse().expect("ip")],
            days: 30,
        }
    }

    #[test]
    fn chain_verifies_for_every_service_name_and_fails_for_others() {
        let now = OffsetDateTime::now_utc();
        let ca = Ca::generate(365, now).expect("ca");
        let leaf = ca.issue_serving(&req(), now).expect("leaf");
        let chain = [leaf.cert_der().clone()];
        let cas = [ca.cert_der().clone()];
        for name in [
            "kpool-webhook",
            "kpool-webhook.kpool-system",
            "kpool-webhook.kpool-system.svc",
            "kpool-webhook.kpool-system.svc.cluster.local",
            "webhook.example.com",
            "127.0.0.1",
        ] {
            verify_chain("leaf", &chain, &cas, Some(name), now)
                .unwrap_or_else(|e| panic!("{name} should verify: {e}"));
        }
        for name in [
            "other",
            "kpool-webhook.default.svc",
            "kpool-webhook.kpool-system.svc.cluster",
            "evil.kpool-webhook.kpool-system.svc",
            "127.0.0.2",
        ] {
            let e = verify_chain("leaf", &chain, &cas, Some(name), now).expect_err(name);
            assert!(
                e.to_string().contains(&format!("not valid for {name}")),
                "{e}"
            );
        }
        // Another CA does not verify it.
        let other = Ca::generate(365, now).expect("other ca");
        let e = verify_chain("leaf", &chain, &[other.cert_der().clone()], None, now)
            .expect_err("foreign CA");
        assert!(e.to_string().contains("does not chain"), "{e}");
        assert_ne!(
            other.info().subject,
            ca.info().subject,
            "CA subjects are unique"
        );
    }

    #[test]
    fn validity_is_backdated_and_capped_by_the_ca() {
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).expect("ns");
        let ca = Ca::generate(10, now).expect("ca");
        let leaf = ca
            .issue_serving(&ServingRequest { days: 400, ..req() }, now)
            .expect("leaf");
        assert_eq!(leaf.info().not_before, now - NOT_BEFORE_BACKDATE);
        assert_eq!(leaf.info().not_after, ca.info().not_after);
        assert!(ca.info().is_ca);
        assert!(!leaf.info().is_ca);
        assert_eq!(leaf.info().issuer, ca.info().subject);
        assert!(req().matches(leaf.info()));
        assert!(
            !ServingRequest {
                dns: vec![],
                ..req()
            }
            .matches(leaf.info())
        );
    }

    #[test]
    fn ca_round_trips_through_pem_and_rejects_a_foreign_key() {
        let now = OffsetDateTime::now_utc();
        let ca = Ca::generate(10, now).expect("ca");
        let again = Ca::from_pem(
            "ca.crt",
            ca.cert_pem().as_bytes(),
            "ca.key",
            ca.key_pem().as_bytes(),
        )
        .expect("reload");
        assert_eq!(again.cert_der(), ca.cert_der());
        let other = Ca::generate(10, now).expect("other");
        let e = Ca::from_pem(
            "ca.crt",
            ca.cert_pem().as_bytes(),
            "ca.key",
            other.key_pem().as_bytes(),
        )
        .expect_err("mismatch");
        assert_eq!(
            e.to_string(),
            "private key ca.key does not match the certificate in ca.crt \
             (the certificate's public key belongs to another key pair)"
        );
        let leaf = ca.issue_serving(&req(), now).expect("leaf");
        let e = Ca::from_pem(
            "tls.crt",
            leaf.cert_pem().as_bytes(),
            "tls.key",
            leaf.key_pem().as_bytes(),
        )
        .expect_err("not a CA");
        assert!(e.to_string().contains("expected a CA certificate"), "{e}");
    }

    #[test]
    fn bad_names_are_refused() {
        for (r, what) in [
            (
                ServingRequest {
                    service: "Bad_Name".into(),
                    ..req()
                },
                "service",
            ),
            (
                ServingRequest {
                    namespace: "".into(),
                    ..req()
                },
                "namespace",
            ),
            (
                ServingRequest {
                    dns: vec!["a..b".into()],
                    ..req()
                },
                "--dns",
            ),
            (ServingRequest { days: 0, ..req() }, "at least 1 day"),
        ] {
            let e = r.validate().expect_err(what);
            assert!(e.to_string().contains(what), "{e}");
        }
    }
}
