//! The client sidecar's bootstrap when `kpool-mesh serve` configures it
//! (`kpool-mesh client-config --xds ADDR`): no broker in it, only the way to the control
//! plane. Listeners and clusters come by ADS (LDS and CDS, endpoints by EDS on the same
//! stream); the certificates stay file-based SDS, as in the static bootstrap, so a rotated
//! Secret needs no control plane.

use std::net::IpAddr;
use std::path::PathBuf;

use kpool_policy::Policy;
use serde_json::{Value, json};

use crate::MeshError;
use crate::bundle::{Bundle, certs_dir, dir_string};
use crate::client::{DEFAULT_CONFIG_DIR, Endpoint};
use crate::envoy::{UPSTREAM_TLS, san_type, sds_files, socket_address};

/// The bootstrap's static cluster that reaches the control plane.
pub const XDS_CLUSTER: &str = "kpool-mesh-xds";
/// `@type` of the HTTP protocol options that make the xDS cluster speak HTTP/2 (gRPC).
pub const HTTP_PROTOCOL_OPTIONS: &str =
    "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// Rendering options.
#[derive(Debug, Clone)]
pub struct XdsBootstrapOptions {
    /// The control plane: `kpool-mesh serve --listen` as the sidecar reaches it (the
    /// Service's host name and port in a cluster).
    pub xds: Endpoint,
    /// The CA that signed the control plane's certificate, as a path in the sidecar;
    /// `None`: plaintext gRPC (loopback, tests, a mesh that already encrypts).
    pub xds_ca: Option<String>,
    /// Where Envoy finds the SDS files (the sidecar's ConfigMap mount).
    pub config_dir: PathBuf,
    /// Read the client certificate from here instead of `mesh.tls.dir`; the files must exist.
    pub certs_dir: Option<PathBuf>,
}

impl Default for XdsBootstrapOptions {
    fn default() -> Self {
        Self {
            xds: Endpoint {
                host: "127.0.0.1".to_owned(),
                port: 18000,
            },
            xds_ca: None,
            config_dir: PathBuf::from(DEFAULT_CONFIG_DIR),
            certs_dir: None,
        }
    }
}

/// Renders the client sidecar's ADS bootstrap and its SDS files. The node's cluster names
/// the Kafka clusters of `policies`; the admin port and certificate file names come from
/// the first.
pub fn render(policies: &[Policy], options: &XdsBootstrapOptions) -> Result<Bundle, MeshError> {
    let Some(first) = policies.first().map(Policy::spec) else {
        return Err(MeshError::Usage(
            "at least one --policy is needed".to_owned(),
        ));
    };
    // The SDS files are named by the clusters the control plane serves (its --config-dir);
    // here only checked, so both commands are given the same absolute directory.
    dir_string("--config-dir", &options.config_dir)?;
    let certs_dir = certs_dir(&first.mesh.tls, options.certs_dir.as_deref())?;
    let mut kafka_clusters: Vec<&str> = policies
        .iter()
        .map(|p| p.spec().mesh.kafka_cluster.as_str())
        .collect();
    kafka_clusters.sort_unstable();
    kafka_clusters.dedup();
    let ads = json!({"ads": {}, "resource_api_version": "V3"});
    let bootstrap = json!({
        // The sidecar's --service-node (the pod name) overrides the id, so the control
        // plane's logs name the pod; file-based SDS needs both set.
        "node": {
            "id": format!("kpool-mesh-client.{}", kafka_clusters.join("+")),
            "cluster": kafka_clusters.join("+"),
        },
        "admin": {"address": socket_address("127.0.0.1", first.mesh.admin_port)},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
                "set_node_on_first_message_only": true,
            },
            "cds_config": ads.clone(),
            "lds_config": ads,
        },
        "static_resources": {"clusters": [xds_cluster(&options.xds, options.xds_ca.as_deref())]},
    });
    Ok(Bundle {
        bootstrap,
        sds_files: sds_files(&first.mesh.tls, &certs_dir),
    })
}

/// The static cluster of the control plane: HTTP/2 with keepalive pings (a control plane
/// replica that vanished is noticed and another one reached through the Service); TLS
/// checking the server's certificate against `ca` and its name (DNS or IP SAN) when a CA
/// is given.
fn xds_cluster(xds: &Endpoint, ca: Option<&str>) -> Value {
    let is_ip = xds.host.parse::<IpAddr>().is_ok();
    let mut cluster = json!({
        "name": XDS_CLUSTER,
        "type": if is_ip { "STATIC" } else { "STRICT_DNS" },
        "connect_timeout": "5s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": HTTP_PROTOCOL_OPTIONS,
                "explicit_http_config": {"http2_protocol_options": {
                    "connection_keepalive": {"interval": "30s", "timeout": "10s"},
                }},
            },
        },
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": socket_address(&xds.host, xds.port),
            }}]}],
        },
    });
    if let Some(ca) = ca {
        let mut tls = json!({
            "@type": UPSTREAM_TLS,
            "common_tls_context": {
                "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
                "alpn_protocols": ["h2"],
                "validation_context": {
                    "trusted_ca": {"filename": ca},
                    "match_typed_subject_alt_names": [{
                        "san_type": san_type(&xds.host),
                        "matcher": {"exact": xds.host},
                    }],
                },
            },
        });
        if !is_ip {
            tls["sni"] = json!(xds.host);
        }
        cluster["transport_socket"] = json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": tls,
        });
    }
    cluster
}
