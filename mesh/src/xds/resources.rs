//! The xDS resources of one broker, built as Envoy's v3 protos: the same listener and mTLS
//! upstream as the static client bootstrap ([`crate::client::listener`],
//! [`crate::client::cluster`]), except that the cluster's endpoints come by EDS, so a broker
//! pod's new address changes only its ClusterLoadAssignment and never its listener (which
//! would drain the connections) or its cluster.
//!
//! The pieces shared with the static rendering (names, SDS files and secret names, SAN
//! matching) come from the same functions and constants; a test compares the two renderings
//! field by field so they cannot drift.

use std::net::{IpAddr, SocketAddr};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig,
};
use envoy_types::pb::envoy::config::core::v3::Address;
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, PathConfigSource, SocketAddress,
    TransportSocket, WatchedDirectory, address, transport_socket,
};
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::tcp_proxy::ClusterSpecifier;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::common_tls_context::{
    CombinedCertificateValidationContext, ValidationContextType,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::subject_alt_name_matcher::SanType;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::tls_parameters::TlsProtocol;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, SdsSecretConfig, SubjectAltNameMatcher,
    TlsParameters, UpstreamTlsContext,
};
use envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher;
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::google::protobuf::Duration;
use envoy_types::util::pack_any;
use kpool_policy::mesh::SanPattern;

use crate::client::BrokerRoute;
use crate::envoy::{
    CERTIFICATE_SDS_FILE, CERTIFICATE_SECRET, VALIDATION_SDS_FILE, VALIDATION_SECRET, san_type,
};

/// How long the client sidecar waits for a broker sidecar to accept a connection (as in the
/// static bootstrap).
pub const CONNECT_TIMEOUT_SECS: i64 = 5;

/// `address.socket_address{address, port_value}`.
pub fn socket_address(address: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: address.to_owned(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(port))),
            ..SocketAddress::default()
        })),
    }
}

/// The listener a client connects to for one broker: `mesh.address:basePort+id`, tcp_proxy
/// to the broker's cluster.
pub fn listener(r: &BrokerRoute) -> Listener {
    let name = r.name();
    let proxy = TcpProxy {
        stat_prefix: name.replace('-', "_"),
        cluster_specifier: Some(ClusterSpecifier::Cluster(name.clone())),
        ..TcpProxy::default()
    };
    Listener {
        address: Some(socket_address(&r.listen.ip().to_string(), r.listen.port())),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.tcp_proxy".to_owned(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(proxy))),
            }],
            ..FilterChain::default()
        }],
        name,
        ..Listener::default()
    }
}

/// The `ConfigSource` of resources that come over the ADS stream itself.
pub fn ads_config_source() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..ConfigSource::default()
    }
}

/// The cluster that reaches one broker's sidecar over mTLS, its endpoints by EDS: the
/// client certificate and the mesh CA by the same file-based SDS as the static bootstrap
/// (files in `config_dir`, watched), the brokers' identity required, TLS 1.2 or later, SNI
/// the broker's host name when it has one.
pub fn cluster(r: &BrokerRoute, config_dir: &str) -> Cluster {
    let name = r.name();
    let mut tls = UpstreamTlsContext {
        common_tls_context: Some(common_tls_context(
            config_dir,
            std::slice::from_ref(&r.broker_san),
        )),
        ..UpstreamTlsContext::default()
    };
    if r.upstream_host.parse::<IpAddr>().is_err() {
        tls.sni = r.upstream_host.clone();
    }
    Cluster {
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(ads_config_source()),
            service_name: String::new(),
        }),
        connect_timeout: Some(Duration {
            seconds: CONNECT_TIMEOUT_SECS,
            nanos: 0,
        }),
        transport_socket: Some(TransportSocket {
            name: "envoy.transport_sockets.tls".to_owned(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(tls))),
        }),
        name,
        ..Cluster::default()
    }
}

/// Where one broker's sidecar is reached right now: its cluster's only locality, one
/// endpoint per address (usually one). `hostname` keeps the name the addresses were
/// resolved from, for Envoy's admin output.
pub fn load_assignment(r: &BrokerRoute, addresses: &[SocketAddr]) -> ClusterLoadAssignment {
    let hostname = if r.upstream_host.parse::<IpAddr>().is_ok() {
        String::new()
    } else {
        r.upstream_host.clone()
    };
    ClusterLoadAssignment {
        cluster_name: r.name(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: addresses
                .iter()
                .map(|a| LbEndpoint {
                    host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                        address: Some(socket_address(&a.ip().to_string(), a.port())),
                        hostname: hostname.clone(),
                        ..Endpoint::default()
                    })),
                    ..LbEndpoint::default()
                })
                .collect(),
            ..LocalityLbEndpoints::default()
        }],
        ..ClusterLoadAssignment::default()
    }
}

/// An `SdsSecretConfig` for secret `name` read from `path`, reloaded when an entry is moved
/// into `watched_dir` ([`crate::envoy::sds_from_file`] as a proto).
fn sds_from_file(name: &str, path: &str, watched_dir: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.to_owned(),
        sds_config: Some(ConfigSource {
            resource_api_version: ApiVersion::V3 as i32,
            config_source_specifier: Some(ConfigSourceSpecifier::PathConfigSource(
                PathConfigSource {
                    path: path.to_owned(),
                    watched_directory: Some(WatchedDirectory {
                        path: watched_dir.to_owned(),
                        ..WatchedDirectory::default()
                    }),
                    ..PathConfigSource::default()
                },
            )),
            ..ConfigSource::default()
        }),
    }
}

/// [`crate::envoy::common_tls_context`] as a proto.
fn common_tls_context(config_dir: &str, peer_sans: &[String]) -> CommonTlsContext {
    let sds_path = |name: &str| format!("{config_dir}/{name}");
    CommonTlsContext {
        tls_params: Some(TlsParameters {
            tls_minimum_protocol_version: TlsProtocol::TlSv12 as i32,
            ..TlsParameters::default()
        }),
        tls_certificate_sds_secret_configs: vec![sds_from_file(
            CERTIFICATE_SECRET,
            &sds_path(CERTIFICATE_SDS_FILE),
            config_dir,
        )],
        validation_context_type: Some(ValidationContextType::CombinedValidationContext(
            CombinedCertificateValidationContext {
                default_validation_context: Some(CertificateValidationContext {
                    match_typed_subject_alt_names: peer_sans
                        .iter()
                        .map(|s| san_matcher(s))
                        .collect(),
                    ..CertificateValidationContext::default()
                }),
                validation_context_sds_secret_config: Some(sds_from_file(
                    VALIDATION_SECRET,
                    &sds_path(VALIDATION_SDS_FILE),
                    config_dir,
                )),
                ..CombinedCertificateValidationContext::default()
            },
        )),
        ..CommonTlsContext::default()
    }
}

/// One entry of `match_typed_subject_alt_names` ([`crate::envoy::san_matchers`] as a proto).
fn san_matcher(san: &str) -> SubjectAltNameMatcher {
    let (san_type, pattern) = match SanPattern::parse(san) {
        SanPattern::Exact(e) => (san_type_proto(e), MatchPattern::Exact(e.to_owned())),
        SanPattern::Prefix(p) => (SanType::Uri, MatchPattern::Prefix(p.to_owned())),
    };
    SubjectAltNameMatcher {
        san_type: san_type as i32,
        matcher: Some(StringMatcher {
            match_pattern: Some(pattern),
            ignore_case: false,
        }),
        oid: String::new(),
    }
}

fn san_type_proto(san: &str) -> SanType {
    match san_type(san) {
        "URI" => SanType::Uri,
        "EMAIL" => SanType::Email,
        "IP_ADDRESS" => SanType::IpAddress,
        _ => SanType::Dns,
    }
}
