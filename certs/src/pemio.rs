//! PEM parsing and encoding, and the file IO around it.
//!
//! Parsing takes an `origin` (a file path or `Secret ns/name key tls.crt`) so that every error
//! names where the bad bytes came from. Writing is atomic (temporary file, fsync, rename) so a
//! crash never leaves half a key behind, and key files are created 0600 from the start rather
//! than chmod-ed after the secret is already on disk.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rustls_pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};

use crate::CertError;

const CERTIFICATE: &str = "CERTIFICATE";
const PKCS8_KEY: &str = "PRIVATE KEY";
const SEC1_KEY: &str = "EC PRIVATE KEY";
const PKCS1_KEY: &str = "RSA PRIVATE KEY";

/// Renders a path the way errors name a source.
pub fn origin_of(path: &Path) -> String {
    path.display().to_string()
}

fn blocks(origin: &str, text: &[u8], expected: &'static str) -> Result<Vec<pem::Pem>, CertError> {
    pem::parse_many(text).map_err(|e| CertError::Pem {
        origin: origin.to_owned(),
        expected,
        found: format!("malformed PEM ({e})"),
    })
}

/// Describes what a source holds when it holds nothing of the expected kind.
fn describe(text: &[u8], blocks: &[pem::Pem]) -> String {
    if text.iter().all(u8::is_ascii_whitespace) {
        return "an empty file".to_owned();
    }
    if blocks.is_empty() {
        return "no PEM block (is this DER or some other format?)".to_owned();
    }
    let tags: Vec<String> = blocks.iter().map(|b| b.tag().to_owned()).collect();
    format!("only {} block(s)", tags.join(", "))
}

/// Parses every `CERTIFICATE` block; at least one must be present and each must be X.509.
pub fn parse_certificates(
    origin: &str,
    text: &[u8],
) -> Result<Vec<CertificateDer<'static>>, CertError> {
    const EXPECTED: &str = "one or more PEM CERTIFICATE blocks";
    let all = blocks(origin, text, EXPECTED)?;
    let certs: Vec<CertificateDer<'static>> = all
        .iter()
        .filter(|b| b.tag() == CERTIFICATE)
        .map(|b| CertificateDer::from(b.contents().to_vec()))
        .collect();
    if certs.is_empty() {
        return Err(CertError::Pem {
            origin: origin.to_owned(),
            expected: EXPECTED,
            found: describe(text, &all),
        });
    }
    for (i, der) in certs.iter().enumerate() {
        x509_parser::parse_x509_certificate(der).map_err(|e| CertError::Certificate {
            origin: origin.to_owned(),
            index: i + 1,
            detail: e.to_string(),
        })?;
    }
    Ok(certs)
}

/// Parses exactly one private key block (PKCS#8, SEC1 or PKCS#1).
pub fn parse_private_key(origin: &str, text: &[u8]) -> Result<PrivateKeyDer<'static>, CertError> {
    const EXPECTED: &str = "exactly one PEM PRIVATE KEY block";
    let all = blocks(origin, text, EXPECTED)?;
    let mut keys: Vec<PrivateKeyDer<'static>> = Vec::new();
    for b in &all {
        let der = b.contents().to_vec();
        match b.tag() {
            PKCS8_KEY => keys.push(PrivatePkcs8KeyDer::from(der).into()),
            SEC1_KEY => keys.push(PrivateSec1KeyDer::from(der).into()),
            PKCS1_KEY => keys.push(PrivatePkcs1KeyDer::from(der).into()),
            _ => {}
        }
    }
    match keys.len() {
        1 => Ok(keys.remove(0)),
        0 => Err(CertError::Pem {
            origin: origin.to_owned(),
            expected: EXPECTED,
            found: describe(text, &all),
        }),
        n => Err(CertError::Pem {
            origin: origin.to_owned(),
            expected: EXPECTED,
            found: format!("{n} private keys"),
        }),
    }
}

fn lf() -> pem::EncodeConfig {
    pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF)
}

/// Encodes certificates as concatenated PEM blocks (LF line endings).
pub fn encode_certificates<'a>(certs: impl IntoIterator<Item = &'a CertificateDer<'a>>) -> String {
    certs
        .into_iter()
        .map(|c| pem::encode_config(&pem::Pem::new(CERTIFICATE, c.to_vec()), lf()))
        .collect()
}

/// Encodes a PKCS#8 private key as one PEM block.
pub fn encode_pkcs8_key(pkcs8_der: &[u8]) -> String {
    pem::encode_config(&pem::Pem::new(PKCS8_KEY, pkcs8_der.to_vec()), lf())
}

/// Reads a whole file, naming it in the error.
pub fn read_file(path: &Path) -> Result<Vec<u8>, CertError> {
    fs::read(path).map_err(|source| CertError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads a file, or `None` when it does not exist (any other IO error is an error).
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, CertError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CertError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Whether a file holds a secret (mode 0600) or public material (mode 0644).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sensitivity {
    /// Certificates: world-readable is fine.
    Public,
    /// Private keys: owner only.
    Secret,
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, created with
/// the final mode, fsync-ed, then renamed over the target (and the directory fsync-ed).
pub fn write_atomic(path: &Path, bytes: &[u8], sensitivity: Sensitivity) -> Result<(), CertError> {
    let err = |p: &Path| {
        let p: PathBuf = p.to_owned();
        move |source| CertError::Write { path: p, source }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(match sensitivity {
            Sensitivity::Secret => 0o600,
            Sensitivity::Public => 0o644,
        });
    }
    let result = (|| {
        let mut f = opts.open(&tmp).map_err(err(&tmp))?;
        // The mode given to open() is filtered by the umask; set it explicitly so a key is
        // never looser than 0600 and a certificate is readable by the server's user.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = match sensitivity {
                Sensitivity::Secret => 0o600,
                Sensitivity::Public => 0o644,
            };
            f.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(err(&tmp))?;
        }
        f.write_all(bytes).map_err(err(&tmp))?;
        f.sync_all().map_err(err(&tmp))?;
        fs::rename(&tmp, path).map_err(err(path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    // Make the rename itself durable; failure here is not worth failing the write for.
    if let Ok(d) = fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_wrong_kind_are_described() {
        let e = parse_certificates("x.crt", b"  \n").expect_err("empty");
        assert_eq!(
            e.to_string(),
            "x.crt: expected one or more PEM CERTIFICATE blocks, found an empty file"
        );
        let key = encode_pkcs8_key(&[1, 2, 3]);
        let e = parse_certificates("x.crt", key.as_bytes()).expect_err("key only");
        assert!(
            e.to_string().contains("found only PRIVATE KEY block(s)"),
            "{e}"
        );
        let e = parse_private_key("k.pem", b"hello").expect_err("not pem");
        assert!(
            e.to_string()
                .contains("k.pem: expected exactly one PEM PRIVATE KEY block"),
            "{e}"
        );
        assert!(e.to_string().contains("no PEM block"), "{e}");
    }

    #[test]
    fn garbage_inside_a_certificate_block_names_the_index() {
        let text = encode_certificates([&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])]);
        let e = parse_certificates("bad.crt", text.as_bytes()).expect_err("not x509");
        assert!(
            e.to_string()
                .starts_with("bad.crt: certificate #1 is not a valid X.509 certificate"),
            "{e}"
        );
    }

    #[test]
    fn atomic_write_sets_modes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("k");
        let crt = dir.path().join("c");
        write_atomic(&key, b"secret", Sensitivity::Secret).expect("write key");
        write_atomic(&crt, b"public", Sensitivity::Public).expect("write cert");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
            assert_eq!(mode(&key), 0o600);
            assert_eq!(mode(&crt), 0o644);
            // Overwriting a key that was made world-readable tightens it again.
            fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).expect("chmod");
            write_atomic(&key, b"secret2", Sensitivity::Secret).expect("rewrite");
            assert_eq!(mode(&key), 0o600);
        }
        assert_eq!(fs::read(&key).expect("read"), b"secret2");
        assert_eq!(
            fs::read_dir(dir.path()).expect("ls").count(),
            2,
            "no temp files left"
        );
    }
}
