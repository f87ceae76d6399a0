//! Pieces of Envoy's v3 API in its JSON mapping, shared by the rendered configurations.

use std::net::IpAddr;

use kpool_policy::mesh::SanPattern;
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
