//! The one error type of the library.
//!
//! Every variant says what was expected, what was found, and where: a file path, or for
//! material read from Kubernetes, the object and key (`Secret ns/name key tls.crt`). The
//! "where" is carried as `origin`, already rendered, so file and cluster sources read alike.

use std::path::PathBuf;

use time::OffsetDateTime;

/// Errors of certificate generation, parsing, loading, and of the Kubernetes steps.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },

    /// A path given as a PEM file is not a regular file (a FIFO, a device, a directory).
    #[error("cannot read {}: expected a regular PEM file, found {found}", path.display())]
    NotRegularFile {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        found: &'static str,
    },

    /// A PEM file is larger than kpool-certs reads.
    #[error(
        "cannot read {}: expected a PEM file of at most {limit} bytes (1 MiB), found {found}",
        path.display()
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The cap, [`crate::pemio::MAX_PEM_BYTES`].
        limit: u64,
        /// How large it is.
        found: String,
    },

    /// A file or directory could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },

    /// The text is not PEM, or has no block of the expected kind.
    #[error("{origin}: expected {expected}, found {found}")]
    Pem {
        /// Where the text came from.
        origin: String,
        /// What was expected, for example `a PEM CERTIFICATE block`.
        expected: &'static str,
        /// What was there instead.
        found: String,
    },

    /// A PEM `CERTIFICATE` block does not hold a valid X.509 certificate.
    #[error("{origin}: certificate #{index} is not a valid X.509 certificate: {detail}")]
    Certificate {
        /// Where the text came from.
        origin: String,
        /// Position of the block among the certificates of the source, from 1.
        index: usize,
        /// The parser's words.
        detail: String,
    },

    /// A private key block could not be used (bad encoding or unsupported algorithm).
    #[error(
        "{origin}: expected a PKCS#8 ECDSA or Ed25519 private key usable for signing, found {detail}"
    )]
    Key {
        /// Where the key came from.
        origin: String,
        /// What was wrong.
        detail: String,
    },

    /// The private key does not belong to the certificate.
    #[error(
        "private key {key_origin} does not match the certificate in {cert_origin} \
         (the certificate's public key belongs to another key pair)"
    )]
    KeyMismatch {
        /// Where the certificate came from.
        cert_origin: String,
        /// Where the key came from.
        key_origin: String,
    },

    /// `create` (or `mesh`) found a CA certificate whose private key is missing or belongs to
    /// another key pair (or a CA key without its certificate), and does not replace the CA
    /// without `--force`: whoever trusts the CA would stop verifying what it signed.
    #[error(
        "refusing to replace the CA without --force: expected {expected}, found {found}; {advice}"
    )]
    CaReplacementRefused {
        /// What should have been there, naming both files.
        expected: String,
        /// What was there.
        found: String,
        /// Who trusts the CA, and what `--force` would do.
        advice: String,
    },

    /// The certificate is past its `notAfter`.
    #[error("{origin}: certificate {subject} expired at {not_after} (now {now}); renew it")]
    Expired {
        /// Where the certificate came from.
        origin: String,
        /// Its subject.
        subject: String,
        /// When it expired.
        not_after: OffsetDateTime,
        /// The time of the check.
        now: OffsetDateTime,
    },

    /// A certificate does not chain to the expected CA, or is not valid for a name.
    #[error("{origin}: {detail}")]
    Verify {
        /// Where the certificate came from.
        origin: String,
        /// What the verifier said.
        detail: String,
    },

    /// Options or arguments that cannot work.
    #[error("invalid options: {0}")]
    Invalid(String),

    /// rcgen could not build a key or certificate.
    #[error("cannot generate {what}: {source}")]
    Generate {
        /// What was being generated.
        what: &'static str,
        /// rcgen's error.
        source: rcgen::Error,
    },

    /// A Kubernetes object lacks a key, or a key has an unusable value.
    #[error("{object}: expected {expected}, found {found}")]
    Object {
        /// The object, as `Kind ns/name`.
        object: String,
        /// What was expected.
        expected: String,
        /// What was there.
        found: String,
    },

    /// A Kubernetes API call failed.
    #[cfg(feature = "cluster")]
    #[error("{action}: {source}")]
    Kube {
        /// What was being done, naming the object.
        action: String,
        /// kube's error.
        source: Box<kube::Error>,
    },
}

impl CertError {
    /// Wraps a kube error with the action that failed.
    #[cfg(feature = "cluster")]
    pub(crate) fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        CertError::Kube {
            action: action.into(),
            source: Box::new(source),
        }
    }

    /// Wraps an rcgen error with what was being generated.
    pub(crate) fn generate(what: &'static str) -> impl FnOnce(rcgen::Error) -> Self {
        move |source| CertError::Generate { what, source }
    }
}
