//! Pieces of Envoy's v3 API in its JSON mapping, shared by the rendered configurations.

use std::net::IpAddr;

use kpool_policy::mesh::SanPattern;
use kpool_policy::model::MeshTls;
use serde_json::{Value, json};

/// `@type` of the tcp_proxy network filter.
pub const TCP_PROXY: &str =
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
/// `@type` of a listener's TLS transport socket.
pub const DOWNSTREAM_TLS: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
/// `@type` of a cluster's TLS transport socket.
pub const UPSTREAM_TLS: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
/// `@type` of an SDS secret.
pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// `{"socket_address": {"address", "port_value"}}`.
pub fn socket_address(address: &str, port: u16) -> Value {
    json!({"socket_address": {"address": address, "port_value": port}})
}

/// The `san_type` Envoy matches a subject alternative name as: a URI when it has `://`
/// (SPIFFE ids), an e-mail when it has `@`, an IP address when it parses as one, else DNS.
pub fn san_type(san: &str) -> &'static str {
    if san.contains("://") {
        "URI"
    } else if san.contains('@') {
        "EMAIL"
    } else if san.parse::<IpAddr>().is_ok() {
        "IP_ADDRESS"
    } else {
        "DNS"
    }
}

/// `match_typed_subject_alt_names`: any one of `sans`, each matched exactly, or by prefix
/// when it is a URI ending in `/*` (the policy's [`SanPattern`]).
pub fn san_matchers(sans: &[String]) -> Value {
    Value::Array(
        sans.iter()
            .map(|s| match SanPattern::parse(s) {
                SanPattern::Exact(e) => json!({"san_type": san_type(e), "matcher": {"exact": e}}),
                SanPattern::Prefix(p) => json!({"san_type": "URI", "matcher": {"prefix": p}}),
            })
            .collect(),
    )
}

/// An `SdsSecretConfig` for secret `name` read from the file `path`, reloaded when an entry
/// is moved into `watched_dir` (a Kubernetes volume's `..data` swap).
pub fn sds_from_file(name: &str, path: &str, watched_dir: &str) -> Value {
    json!({
        "name": name,
        "sds_config": {
            "path_config_source": {"path": path, "watched_directory": {"path": watched_dir}},
            "resource_api_version": "V3",
        },
    })
}

/// The content of a file-based SDS file: a discovery response holding `secret`.
pub fn sds_file(secret: Value) -> Value {
    json!({"resources": [secret]})
}

/// The SDS file holding the sidecar's own certificate and key.
pub const CERTIFICATE_SDS_FILE: &str = "sds-certificate.yaml";
/// The SDS file holding the mesh CA.
pub const VALIDATION_SDS_FILE: &str = "sds-validation.yaml";
/// SDS secret names.
pub const CERTIFICATE_SECRET: &str = "kpool-mesh-certificate";
pub const VALIDATION_SECRET: &str = "kpool-mesh-ca";

/// The two file-based SDS files every sidecar reads (its certificate and key; the mesh CA),
/// by file name, for certificates in `certs_dir` (watched: a rotated Secret's `..data` swap
/// applies to new connections).
pub fn sds_files(tls: &MeshTls, certs_dir: &str) -> Vec<(&'static str, Value)> {
    let cert_file = |name: &str| format!("{certs_dir}/{name}");
    let certificate = json!({
        "@type": SECRET,
        "name": CERTIFICATE_SECRET,
        "tls_certificate": {
            "certificate_chain": {"filename": cert_file(&tls.certificate)},
            "private_key": {"filename": cert_file(&tls.private_key)},
            "watched_directory": {"path": certs_dir},
        },
    });
    let validation = json!({
        "@type": SECRET,
        "name": VALIDATION_SECRET,
        "validation_context": {
            "trusted_ca": {"filename": cert_file(&tls.ca)},
            "watched_directory": {"path": certs_dir},
        },
    });
    vec![
        (CERTIFICATE_SDS_FILE, sds_file(certificate)),
        (VALIDATION_SDS_FILE, sds_file(validation)),
    ]
}

/// A `CommonTlsContext` presenting the sidecar's certificate and requiring a peer that
/// chains to the mesh CA and carries one of `peer_sans`; TLS 1.2 or later.
pub fn common_tls_context(config_dir: &str, peer_sans: &[String]) -> Value {
    let sds_path = |name: &str| format!("{config_dir}/{name}");
    json!({
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
        "tls_certificate_sds_secret_configs": [
            sds_from_file(CERTIFICATE_SECRET, &sds_path(CERTIFICATE_SDS_FILE), config_dir),
        ],
        "combined_validation_context": {
            "default_validation_context": {
                "match_typed_subject_alt_names": san_matchers(peer_sans),
            },
            "validation_context_sds_secret_config":
                sds_from_file(VALIDATION_SECRET, &sds_path(VALIDATION_SDS_FILE), config_dir),
        },
    })
}

/// A tcp_proxy filter chain's filter list sending every connection to `cluster`.
pub fn tcp_proxy(stat_prefix: &str, cluster: &str) -> Value {
    json!([{
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": {
            "@type": TCP_PROXY,
            "stat_prefix": stat_prefix.replace('-', "_"),
            "cluster": cluster,
        },
    }])
}
