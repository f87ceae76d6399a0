//! The broker sidecar: mTLS in, plaintext to the broker on loopback.
//!
//! In the pod: the ConfigMap with the bootstrap and the two SDS files is mounted at the
//! config directory (`/etc/kpool-proxy`, the policy's sidecar mounts), the mesh Secret at
//! `mesh.tls.dir`. Both are watched: Kubernetes updates a mounted volume by swapping its
//! `..data` symlink, which `watched_directory` sees as a move.

use std::path::PathBuf;

use kpool_policy::Policy;
use serde_json::json;

use crate::MeshError;
use crate::bundle::{Bundle, certs_dir, dir_string};
pub use crate::envoy::{
    CERTIFICATE_SDS_FILE, CERTIFICATE_SECRET, VALIDATION_SDS_FILE, VALIDATION_SECRET,
};
use crate::envoy::{DOWNSTREAM_TLS, common_tls_context, sds_files, socket_address, tcp_proxy};

/// The broker sidecar's files (the bootstrap and the SDS files it reads).
pub type BrokerBundle = Bundle;

/// Where the sidecar's ConfigMap is mounted (the policy's example sidecar mounts
/// `kpool-proxy-config` there and runs `--config-path=/etc/kpool-proxy/envoy.yaml`).
pub const DEFAULT_CONFIG_DIR: &str = "/etc/kpool-proxy";
/// The bootstrap's file name in the config directory (without extension).
pub const BOOTSTRAP_STEM: &str = "envoy";
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

/// Renders the broker sidecar's configuration from the policy's `mesh` section.
pub fn render(policy: &Policy, options: &BrokerOptions) -> Result<Bundle, MeshError> {
    let spec = policy.spec();
    let mesh = &spec.mesh;
    let config_dir = dir_string("--config-dir", &options.config_dir)?;
    let certs_dir = certs_dir(&mesh.tls, options.certs_dir.as_deref())?;
    let tls = json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": DOWNSTREAM_TLS,
            "require_client_certificate": true,
            "common_tls_context": common_tls_context(&config_dir, &mesh.allowed_sans),
        },
    });

    let listener = json!({
        "name": LISTENER_NAME,
        "address": socket_address("0.0.0.0", mesh.mtls_port),
        "filter_chains": [{
            "filters": tcp_proxy(LISTENER_NAME, BROKER_CLUSTER),
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
    Ok(Bundle {
        bootstrap,
        sds_files: sds_files(&mesh.tls, &certs_dir),
    })
}
