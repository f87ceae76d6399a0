//! What every rendered sidecar configuration is made of: a bootstrap and its SDS files, and
//! where those files say the certificates are.

use std::path::{Path, PathBuf};

use kpool_policy::model::MeshTls;
use serde_json::Value;

use crate::broker::BOOTSTRAP_STEM;
use crate::{Format, MeshError};

/// A sidecar's files: the bootstrap and the SDS files it reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    /// The Envoy bootstrap.
    pub bootstrap: Value,
    /// The SDS files, by file name in the config directory.
    pub sds_files: Vec<(&'static str, Value)>,
}

impl Bundle {
    /// The file name of the bootstrap in `format`.
    pub fn bootstrap_file(format: Format) -> String {
        format!("{BOOTSTRAP_STEM}.{}", format.extension())
    }

    /// Every file as (name, text): the bootstrap in `format`, the SDS files as YAML (their
    /// names, which the bootstrap holds, end in `.yaml`).
    pub fn files(&self, format: Format) -> Result<Vec<(String, String)>, MeshError> {
        let mut out = vec![(Self::bootstrap_file(format), format.print(&self.bootstrap)?)];
        for (name, v) in &self.sds_files {
            out.push(((*name).to_owned(), Format::Yaml.print(v)?));
        }
        Ok(out)
    }

    /// Writes every file into `dir` (created if missing).
    pub fn write_to(&self, dir: &Path, format: Format) -> Result<Vec<PathBuf>, anyhow::Error> {
        use anyhow::Context as _;
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let mut written = Vec::new();
        for (name, text) in self.files(format)? {
            let path = dir.join(name);
            std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
            written.push(path);
        }
        Ok(written)
    }
}

/// The certificate directory the SDS files name: `--certs-dir` (made absolute; every file
/// `tls` names must be there) or, without it, the policy's `mesh.tls.dir` in the pod.
pub(crate) fn certs_dir(tls: &MeshTls, flag: Option<&Path>) -> Result<String, MeshError> {
    match flag {
        None => Ok(tls.dir.clone()),
        Some(dir) => {
            let abs = std::path::absolute(dir).map_err(|e| MeshError::BadDir {
                flag: "--certs-dir",
                dir: dir.display().to_string(),
                reason: e.to_string(),
            })?;
            check_cert_files(tls, &abs)?;
            dir_string("--certs-dir", &abs)
        }
    }
}

fn check_cert_files(tls: &MeshTls, dir: &Path) -> Result<(), MeshError> {
    let missing: Vec<(String, &'static str)> = [
        (&tls.certificate, "mesh.tls.certificate"),
        (&tls.private_key, "mesh.tls.privateKey"),
        (&tls.ca, "mesh.tls.ca"),
    ]
    .into_iter()
    .filter(|(name, _)| !dir.join(name).is_file())
    .map(|(name, field)| (name.clone(), field))
    .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(MeshError::MissingCertFiles {
            dir: dir.display().to_string(),
            missing,
        })
    }
}

pub(crate) fn dir_string(flag: &'static str, dir: &Path) -> Result<String, MeshError> {
    let bad = |reason: &str| MeshError::BadDir {
        flag,
        dir: dir.display().to_string(),
        reason: reason.to_owned(),
    };
    if !dir.is_absolute() {
        return Err(bad("expected an absolute path (where Envoy reads it)"));
    }
    let s = dir.to_str().ok_or_else(|| bad("not UTF-8"))?;
    let trimmed = s.trim_end_matches('/');
    Ok(if trimmed.is_empty() { s } else { trimmed }.to_owned())
}
