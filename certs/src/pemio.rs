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

/// The largest PEM file kpool-certs reads, in bytes (1 MiB). A CA, a key and a serving
/// certificate are about 2 KiB together, and a bundle of a hundred CAs is still far below this;
/// anything larger is not what the tool was pointed at (`/dev/zero`, a log file, a disk image).
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// What a non-regular file is, for errors.
fn file_kind(t: fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

fn read_error(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Read {
        path: path.to_owned(),
        source,
    }
}

/// The one way kpool-certs reads a file: only a regular file (symbolic links are followed, as
/// Kubernetes Secret volumes are made of them), and at most [`MAX_PEM_BYTES`].
///
/// The type and size are checked from the path's metadata before the file is opened, so a FIFO
/// is refused instead of blocking the open, and a device such as `/dev/zero` is refused instead
/// of read without end. The opened handle is checked again (the path may have been replaced in
/// between) and read through `take(MAX_PEM_BYTES + 1)`, so a file that grows while it is read,
/// or a special file that reports size 0 (`/proc`), still cannot exceed the cap.
fn read_bounded(path: &Path) -> Result<Vec<u8>, CertError> {
    use std::io::Read;
    let check = |meta: &fs::Metadata| -> Result<(), CertError> {
        if !meta.is_file() {
            return Err(CertError::NotRegularFile {
                path: path.to_owned(),
                found: file_kind(meta.file_type()),
            });
        }
        if meta.len() > MAX_PEM_BYTES {
            return Err(CertError::TooLarge {
                path: path.to_owned(),
                limit: MAX_PEM_BYTES,
                found: format!("{} bytes", meta.len()),
            });
        }
        Ok(())
    };
    check(&fs::metadata(path).map_err(read_error(path))?)?;
    let file = fs::File::open(path).map_err(read_error(path))?;
    check(&file.metadata().map_err(read_error(path))?)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error(path))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(CertError::TooLarge {
            path: path.to_owned(),
            limit: MAX_PEM_BYTES,
            found: "more than that while it was read (a file that grows)".to_owned(),
        });
    }
    Ok(bytes)
}

/// Reads a whole PEM file, naming it in the error; only a regular file of at most
/// [`MAX_PEM_BYTES`] (see [`read_bounded`]).
pub fn read_file(path: &Path) -> Result<Vec<u8>, CertError> {
    read_bounded(path)
}

/// [`read_file`], or `None` when the file does not exist (any other problem is an error).
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, CertError> {
    match read_bounded(path) {
        Ok(b) => Ok(Some(b)),
        Err(CertError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The permission bits of `path` when it grants anything to group or others (`None` when it
/// does not, when it cannot be read, or off Unix): what a private key file must not have.
pub fn group_or_other_mode(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path).ok()?.permissions().mode() & 0o7777;
        (mode & 0o077 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
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

    /// Runs `f` on a thread and fails the test if it has not returned within 20 s (a read
    /// that blocks on a FIFO would otherwise hang the whole test run).
    fn within_20s<T: Send + 'static>(
        what: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        match rx.recv_timeout(std::time::Duration::from_secs(20)) {
            Ok(v) => Some(v),
            Err(_) => {
                eprintln!("{what}: still blocked after 20 s");
                None
            }
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("ca.crt");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("run mkfifo");
        assert!(status.success(), "mkfifo failed");
        let path = fifo.clone();
        let result = within_20s("read_file on a FIFO", move || {
            read_file(&path).map_err(|e| e.to_string())
        });
        let Some(result) = result else {
            // Unblock the reader (opening for writing pairs with the blocked open) and fail.
            let _ = fs::OpenOptions::new().write(true).open(&fifo);
            panic!("read_file blocked on a FIFO instead of refusing it");
        };
        assert_eq!(
            result.expect_err("a FIFO is not a PEM file"),
            format!(
                "cannot read {}: expected a regular PEM file, found a FIFO (named pipe)",
                fifo.display()
            )
        );
        let e = read_optional(&fifo).expect_err("read_optional refuses it too");
        assert!(e.to_string().contains("found a FIFO"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn devices_and_directories_are_refused() {
        // /dev/null, not /dev/zero: before the check, reading /dev/zero here would eat memory
        // until the machine gives out (the CLI test covers /dev/zero under a memory limit).
        let e = read_file(Path::new("/dev/null")).expect_err("device");
        assert_eq!(
            e.to_string(),
            "cannot read /dev/null: expected a regular PEM file, found a character device"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let e = read_file(dir.path()).expect_err("directory");
        assert!(
            e.to_string()
                .ends_with("expected a regular PEM file, found a directory"),
            "{e}"
        );
    }

    #[test]
    fn the_size_cap_is_exact_and_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let at_cap = dir.path().join("at-cap.pem");
        let over = dir.path().join("over.pem");
        let cap = usize::try_from(MAX_PEM_BYTES).expect("cap fits");
        fs::write(&at_cap, vec![b'\n'; cap]).expect("write");
        fs::write(&over, vec![b'\n'; cap + 1]).expect("write");
        assert_eq!(read_file(&at_cap).expect("at the cap").len(), cap);
        let e = read_file(&over).expect_err("over the cap");
        assert_eq!(
            e.to_string(),
            format!(
                "cannot read {}: expected a PEM file of at most 1048576 bytes (1 MiB), \
                 found 1048577 bytes",
                over.display()
            )
        );
        assert!(read_optional(&over).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_to_files_are_followed_and_missing_files_are_none() {
        // Kubernetes Secret volumes: tls.crt -> ..data/tls.crt.
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("real.crt");
        fs::write(&real, b"pem").expect("write");
        let link = dir.path().join("tls.crt");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        assert_eq!(read_file(&link).expect("through the link"), b"pem");
        assert_eq!(read_optional(&dir.path().join("none")).expect("ok"), None);
        let e = read_file(&dir.path().join("none")).expect_err("missing");
        assert!(e.to_string().starts_with("cannot read "), "{e}");
    }

    /// The rule exists once: no other module of the crate reads a file by itself.
    #[test]
    fn every_file_read_goes_through_read_bounded() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut checked = 0;
        for entry in fs::read_dir(&src).expect("list src") {
            let path = entry.expect("entry").path();
            let name = path.display().to_string();
            if path.extension().is_none_or(|e| e != "rs") || path.ends_with("pemio.rs") {
                continue;
            }
            let source = fs::read_to_string(&path).expect("read source");
            checked += 1;
            let code = source.split("#[cfg(test)]").next().unwrap_or(&source);
            for needle in [
                "fs::read(",
                "read_to_end",
                "read_to_string",
                "File::open",
                "io::Read",
            ] {
                assert!(
                    !code.contains(needle),
                    "{name} uses {needle}; read PEM files with pemio::read_file"
                );
            }
        }
        assert!(
            checked >= 8,
            "only {checked} modules found in {}",
            src.display()
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
