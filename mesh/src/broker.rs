//! The broker sidecar: mTLS in, plaintext to the broker on loopback.
//!
//! In the pod: the ConfigMap with the bootstrap and the two SDS files is mounted at the
//! config directory (`/etc/kpool-proxy`, the policy's sidecar mounts), the mesh Secret at
//! `mesh.tls.dir`. Both are watched: Kubernetes updates a mounted volume by swapping its
//! `..data` symlink, which `watched_directory` sees as a move.

use std::path::{Path, PathBuf};

use kpool_policy::Policy;
use kpool_policy::model::Mesh;
use serde_json::{Value, json};

use crate::envoy::{
    DOWNSTREAM_TLS, SECRET, TCP_PROXY, san_matchers, sds_file, sds_from_file, socket_address,
};
use crate::{Format, MeshError};

/// Where the sidecar's ConfigMap is mounted (the policy's example sidecar mounts
/// `kpool-proxy-config` there and runs `--config-path=/etc/kpool-proxy/envoy.yaml`).
pub const DEFAULT_CONFIG_DIR: &str = "/etc/kpool-proxy";
/// The bootstrap's file name in the config directory (without extension).
pub const BOOTSTRAP_STEM: &str = "envoy";
/// The SDS file holding the broker's certificate and key.
pub const CERTIFICATE_SDS_FILE: &str = "sds-certificate.yaml";
/// The SDS file holding the mesh CA.
pub const VALIDATION_SDS_FILE: &str = "sds-validation.yaml";
/// SDS secret names.
pub const CERTIFICATE_SECRET: &str = "kpool-mesh-certificate";
pub const VALIDATION_SECRET: &str = "kpool-mesh-ca";
/// The listener, its stats prefix, and the cluster of the broker's plaintext listener.
pub const LISTENER_NAME: &str = "kpool-mesh-broker";
pub const BROKER_CLUSTER: &str = "kafka-broker";

/// Rendering options.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// Where the bootstrap and SDS files live when Envoy runs (absolute).
    pub config_dir: PathBuf,
    /// Read the certificates from here instead of `mesh.tls.dir`; the files must exist.
    pub certs_dir: Option<PathBuf>,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        Self {
            config_dir: PathBuf::from(DEFAULT_CONFIG_DIR),
            certs_dir: None,
        }
    }
}

/// The broker sidecar's files: the bootstrap and the SDS files it reads.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerBundle {
    /// The Envoy bootstrap.
    pub bootstrap: Value,
    /// The SDS files, by file name in the config directory.
    pub sds_files: Vec<(&'static str, Value)>,
}

impl BrokerBundle {
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

/// Renders the broker sidecar's configuration from the policy's `mesh` section.
pub fn render(policy: &Policy, options: &BrokerOptions) -> Result<BrokerBundle, MeshError> {
    let spec = policy.spec();
    let mesh = &spec.mesh;
    let config_dir = dir_string("--config-dir", &options.config_dir)?;
    let certs_dir = match &options.certs_dir {
        None => mesh.tls.dir.clone(),
        Some(dir) => {
            let abs = std::path::absolute(dir).map_err(|e| MeshError::BadDir {
                flag: "--certs-dir",
                dir: dir.display().to_string(),
                reason: e.to_string(),
            })?;
            check_cert_files(mesh, &abs)?;
            dir_string("--certs-dir", &abs)?
        }
    };
    let cert_file = |name: &str| format!("{certs_dir}/{name}");
    let sds_path = |name: &str| format!("{config_dir}/{name}");

    let certificate = json!({
        "@type": SECRET,
        "name": CERTIFICATE_SECRET,
        "tls_certificate": {
            "certificate_chain": {"filename": cert_file(&mesh.tls.certificate)},
            "private_key": {"filename": cert_file(&mesh.tls.private_key)},
            "watched_directory": {"path": certs_dir},
        },
    });
    let validation = json!({
        "@type": SECRET,
        "name": VALIDATION_SECRET,
        "validation_context": {
            "trusted_ca": {"filename": cert_file(&mesh.tls.ca)},
            "watched_directory": {"path": certs_dir},
        },
    });

    let tls = json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": DOWNSTREAM_TLS,
            "require_client_certificate": true,
            "common_tls_context": {
                "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
                "tls_certificate_sds_secret_configs": [
                    sds_from_file(CERTIFICATE_SECRET, &sds_path(CERTIFICATE_SDS_FILE), &config_dir),
                ],
                "combined_validation_context": {
                    "default_validation_context": {
                        "match_typed_subject_alt_names": san_matchers(&mesh.allowed_sans),
                    },
                    "validation_context_sds_secret_config":
                        sds_from_file(VALIDATION_SECRET, &sds_path(VALIDATION_SDS_FILE), &config_dir),
                },
            },
        },
    });

    let listener = json!({
        "name": LISTENER_NAME,
        "address": socket_address("0.0.0.0", mesh.mtls_port),
        "filter_chains": [{
            "filters": [{
                "name": "envoy.filters.network.tcp_proxy",
                "typed_config": {
                    "@type": TCP_PROXY,
                    "stat_prefix": LISTENER_NAME.replace('-', "_"),
                    "cluster": BROKER_CLUSTER,
                },
            }],
            "transport_socket": tls,
        }],
    });
    let cluster = json!({
        "name": BROKER_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "5s",
        "load_assignment": {
            "cluster_name": BROKER_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": socket_address("127.0.0.1", mesh.broker_port),
            }}]}],
        },
    });
    let bootstrap = json!({
        // The sidecar's --service-node/--service-cluster (the pod, the Kubernetes cluster)
        // override these; file-based SDS needs both set.
        "node": {
            "id": format!("kpool-mesh-broker.{}", mesh.kafka_cluster),
            "cluster": mesh.kafka_cluster,
        },
        "admin": {"address": socket_address("127.0.0.1", mesh.admin_port)},
        "static_resources": {"listeners": [listener], "clusters": [cluster]},
    });
    Ok(BrokerBundle {
        bootstrap,
        sds_files: vec![
            (CERTIFICATE_SDS_FILE, sds_file(certificate)),
            (VALIDATION_SDS_FILE, sds_file(validation)),
        ],
    })
}

fn check_cert_files(mesh: &Mesh, dir: &Path) -> Result<(), MeshError> {
    let missing: Vec<(String, &'static str)> = [
        (&mesh.tls.certificate, "mesh.tls.certificate"),
        (&mesh.tls.private_key, "mesh.tls.privateKey"),
        (&mesh.tls.ca, "mesh.tls.ca"),
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

fn dir_string(flag: &'static str, dir: &Path) -> Result<String, MeshError> {
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
