//! The xDS control plane without sockets: the proto resources agree with the static client
//! bootstrap, snapshots are versioned per type, and one stream's protocol (ACK, NACK, stale
//! nonces, make-before-break ordering) driven through the pure state machine by a client
//! that behaves as Envoy does.

mod xds_support;

use std::collections::VecDeque;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::transport_socket;
use envoy_types::pb::envoy::config::core::v3::{Address, ApiVersion, ConfigSource, address};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::tcp_proxy::ClusterSpecifier;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::common_tls_context::ValidationContextType;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::subject_alt_name_matcher::SanType;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::tls_parameters::TlsProtocol;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    SdsSecretConfig, UpstreamTlsContext,
};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use kpool_mesh::client::{self, BrokerRoute, ClientOptions, Endpoint};
use kpool_mesh::envoy::UPSTREAM_TLS;
use kpool_mesh::xds::resources;
use kpool_mesh::xds::stream::{Event, MAX_RESOURCE_NAMES, StreamError};
use kpool_mesh::xds::{Member, ResourceType, Snapshot, SnapshotError, StreamState};
use kpool_policy::{DEFAULT_POLICY_YAML, Policy};
use prost::Message;
use serde_json::{Value, json};
use xds_support::{CONFIG_DIR, FakeEnvoy, members, members_at, snapshot};

const K8S_B: &str = include_str!("../../examples/policy-k8s-b.yaml");

// ---- the proto resources, seen in part I's JSON shape ----

fn socket_json(a: &Address) -> Value {
    match &a.address {
        Some(address::Address::SocketAddress(s)) => {
            let port = match s.port_specifier {
                Some(PortSpecifier::PortValue(p)) => p,
                ref other => panic!("port {other:?}"),
            };
            json!({"socket_address": {"address": s.address, "port_value": port}})
        }
        other => panic!("address {other:?}"),
    }
}

fn api_version(c: &ConfigSource) -> &'static str {
    ApiVersion::try_from(c.resource_api_version)
        .expect("api version")
        .as_str_name()
}

fn sds_json(s: &SdsSecretConfig) -> Value {
    let source = s.sds_config.as_ref().expect("sds_config");
    let Some(ConfigSourceSpecifier::PathConfigSource(p)) = &source.config_source_specifier else {
        panic!("SDS from a file expected: {source:?}")
    };
    json!({
        "name": s.name,
        "sds_config": {
            "path_config_source": {
                "path": p.path,
                "watched_directory": {"path": p.watched_directory.as_ref().expect("watched").path},
            },
            "resource_api_version": api_version(source),
        },
    })
}

fn tls_json(t: &UpstreamTlsContext) -> Value {
    let c = t.common_tls_context.as_ref().expect("common_tls_context");
    let Some(ValidationContextType::CombinedValidationContext(v)) = &c.validation_context_type
    else {
        panic!("a combined validation context expected")
    };
    let sans: Vec<Value> = v
        .default_validation_context
        .as_ref()
        .expect("default validation context")
        .match_typed_subject_alt_names
        .iter()
        .map(|m| {
            let matcher = match &m.matcher.as_ref().expect("matcher").match_pattern {
                Some(MatchPattern::Exact(e)) => json!({"exact": e}),
                Some(MatchPattern::Prefix(p)) => json!({"prefix": p}),
                other => panic!("matcher {other:?}"),
            };
            json!({
                "san_type": SanType::try_from(m.san_type).expect("san type").as_str_name(),
                "matcher": matcher,
            })
        })
        .collect();
    let params = c.tls_params.as_ref().expect("tls_params");
    let mut out = json!({
        "@type": UPSTREAM_TLS,
        "common_tls_context": {
            "tls_params": {
                "tls_minimum_protocol_version": TlsProtocol::try_from(params.tls_minimum_protocol_version)
                    .expect("tls version")
                    .as_str_name(),
            },
            "tls_certificate_sds_secret_configs":
                c.tls_certificate_sds_secret_configs.iter().map(sds_json).collect::<Vec<_>>(),
            "combined_validation_context": {
                "default_validation_context": {"match_typed_subject_alt_names": sans},
                "validation_context_sds_secret_config":
                    sds_json(v.validation_context_sds_secret_config.as_ref().expect("CA by SDS")),
            },
        },
    });
    if !t.sni.is_empty() {
        out["sni"] = json!(t.sni);
    }
    out
}

fn listener_json(l: &Listener) -> Value {
    let filters: Vec<Value> = l
        .filter_chains
        .iter()
        .flat_map(|c| &c.filters)
        .map(|f| {
            let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                panic!("typed config expected")
            };
            let proxy = TcpProxy::decode(any.value.as_slice()).expect("tcp_proxy");
            let Some(ClusterSpecifier::Cluster(cluster)) = proxy.cluster_specifier else {
                panic!("a cluster expected")
            };
            json!({
                "name": f.name,
                "typed_config": {"@type": any.type_url, "stat_prefix": proxy.stat_prefix, "cluster": cluster},
            })
        })
        .collect();
    json!({
        "name": l.name,
        "address": socket_json(l.address.as_ref().expect("address")),
        "filter_chains": [{"filters": filters}],
    })
}

fn routes_of(policies: &[Policy], options: &ClientOptions) -> Vec<BrokerRoute> {
    client::routes(policies, options).expect("routes")
}

/// Every field that decides where bytes go and whom they trust is the same in the xDS
/// resources as in the static bootstrap: listen address and port, stat prefix and cluster,
/// the TLS context whole (SDS names, files and watched directories, SANs, TLS version, SNI),
/// the connect timeout, and the upstream's host and port.
#[test]
fn proto_resources_agree_with_the_static_client_bootstrap() {
    let policies = vec![
        Policy::from_yaml(DEFAULT_POLICY_YAML, "policy.yaml").expect("policy"),
        Policy::from_yaml(K8S_B, "policy-k8s-b.yaml").expect("policy"),
    ];
    let mut options = ClientOptions {
        brokers: vec![0, 1, 100, 102],
        ..ClientOptions::default()
    };
    options.endpoints.insert(
        102,
        Endpoint {
            host: "192.0.2.7".to_owned(),
            port: 19443,
        },
    );
    let routes = routes_of(&policies, &options);
    assert_eq!(routes.len(), 4);
    for r in &routes {
        let listener = resources::listener(r);
        assert_eq!(
            listener_json(&listener),
            client::listener(r),
            "broker {}",
            r.broker_id
        );

        let static_cluster = client::cluster(r, CONFIG_DIR);
        let cluster = resources::cluster(r, CONFIG_DIR);
        assert_eq!(json!(cluster.name), static_cluster["name"]);
        assert_eq!(
            cluster
                .connect_timeout
                .as_ref()
                .map(|d| format!("{}s", d.seconds)),
            static_cluster["connect_timeout"]
                .as_str()
                .map(str::to_owned)
        );
        let socket = cluster.transport_socket.as_ref().expect("transport socket");
        assert_eq!(
            json!(socket.name),
            static_cluster["transport_socket"]["name"]
        );
        let Some(transport_socket::ConfigType::TypedConfig(any)) = &socket.config_type else {
            panic!("typed config expected")
        };
        assert_eq!(any.type_url, UPSTREAM_TLS);
        let tls = UpstreamTlsContext::decode(any.value.as_slice()).expect("tls");
        assert_eq!(
            tls_json(&tls),
            static_cluster["transport_socket"]["typed_config"],
            "broker {}",
            r.broker_id
        );
        // Endpoints by EDS from this stream, not DNS.
        let Some(ConfigSourceSpecifier::Ads(_)) = cluster
            .eds_cluster_config
            .as_ref()
            .and_then(|e| e.eds_config.as_ref())
            .and_then(|c| c.config_source_specifier.as_ref())
        else {
            panic!("EDS over ADS expected")
        };

        // The upstream: the same port; the host is the address itself or the name the
        // address was resolved from.
        let upstream = &static_cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
            ["address"]["socket_address"];
        let resolved: std::net::SocketAddr =
            format!("198.51.100.{}:{}", r.broker_id % 200, r.upstream_port)
                .parse()
                .expect("addr");
        let ip_upstream = r.upstream_host.parse::<std::net::IpAddr>().ok();
        let address = match ip_upstream {
            Some(ip) => std::net::SocketAddr::new(ip, r.upstream_port),
            None => resolved,
        };
        let cla = resources::load_assignment(r, &[address]);
        assert_eq!(cla.cluster_name, cluster.name);
        let HostIdentifier::Endpoint(e) = cla.endpoints[0].lb_endpoints[0]
            .host_identifier
            .clone()
            .expect("endpoint")
        else {
            panic!("an endpoint expected")
        };
        let got = socket_json(e.address.as_ref().expect("address"));
        assert_eq!(got["socket_address"]["port_value"], upstream["port_value"]);
        match ip_upstream {
            Some(_) => {
                assert_eq!(got["socket_address"]["address"], upstream["address"]);
                assert_eq!(e.hostname, "");
            }
            None => assert_eq!(json!(e.hostname), upstream["address"]),
        }
    }
}

// ---- snapshots ----

#[test]
fn versions_change_per_type_and_replicas_agree() {
    let a = snapshot(&[0, 1, 2]);
    let again = snapshot(&[0, 1, 2]);
    assert_eq!(
        a.versions(),
        again.versions(),
        "the same membership, the same versions"
    );
    let moved = Snapshot::build(
        members_at(&[0, 1, 2], |id| {
            format!("10.0.{}.{id}:9443", u8::from(id == 1))
                .parse()
                .expect("addr")
        }),
        CONFIG_DIR,
    )
    .expect("snapshot");
    for t in ResourceType::ALL {
        let changed = a.version(t) != moved.version(t);
        assert_eq!(
            changed,
            t == ResourceType::Endpoint,
            "{t}: a broker moving changes only EDS"
        );
    }
    let added = snapshot(&[0, 1, 2, 3]);
    for t in ResourceType::ALL {
        assert_ne!(
            a.version(t),
            added.version(t),
            "{t}: a broker added changes every type"
        );
    }
    assert_eq!(added.resources(ResourceType::Listener).len(), 4);
    assert_eq!(Snapshot::empty().version(ResourceType::Cluster), "empty");
}

#[test]
fn a_snapshot_is_consistent_or_refused() {
    let s = snapshot(&[0, 1, 2]);
    s.check_consistent().expect("consistent");
    let clusters = s.resources(ResourceType::Cluster);
    for name in s.resources(ResourceType::Endpoint).items().keys() {
        assert!(clusters.get(name).is_some(), "EDS {name} is a CDS cluster");
    }
    let mut twice = members(&[0, 1]);
    twice.push(twice[0].clone());
    match Snapshot::build(twice, CONFIG_DIR) {
        Err(SnapshotError::DuplicateName {
            name,
            first,
            second,
            ..
        }) => {
            assert_eq!((name.as_str(), first, second), ("kafka-stretch-0", 0, 0));
        }
        other => panic!("expected DuplicateName, got {other:?}"),
    }
}

// ---- one stream's protocol ----

/// Feeds `requests` (and the responses they cause, answered by `envoy`) through `state`
/// until nothing more is sent; returns the responses as (type, resource count), checking
/// after each that the client's listeners only use clusters it has.
fn run(
    state: &mut StreamState,
    envoy: &mut FakeEnvoy,
    requests: Vec<DiscoveryRequest>,
    first: Vec<DiscoveryResponse>,
) -> (Vec<(ResourceType, usize)>, Vec<Event>) {
    let mut queue: VecDeque<DiscoveryRequest> = requests.into();
    let mut pushed = Vec::new();
    let mut events = Vec::new();
    let mut apply = |r: DiscoveryResponse, envoy: &mut FakeEnvoy, queue: &mut VecDeque<_>| {
        let kind = ResourceType::from_type_url(&r.type_url).expect("type");
        pushed.push((kind, r.resources.len()));
        queue.extend(envoy.on_response(&r));
        for l in envoy.listeners.values() {
            let cluster = &l.name;
            assert!(
                envoy.clusters.contains_key(cluster),
                "listener {cluster} without its cluster after {kind}: make before break"
            );
        }
    };
    for r in first {
        apply(r, envoy, &mut queue);
    }
    let mut rounds = 0;
    while let Some(req) = queue.pop_front() {
        rounds += 1;
        assert!(rounds < 100, "the stream does not settle");
        let step = state.on_request(req).expect("request accepted");
        events.extend(step.events);
        for r in step.responses {
            apply(r, envoy, &mut queue);
        }
    }
    (pushed, events)
}

fn synced(ids: &[i32]) -> (StreamState, FakeEnvoy) {
    let mut state = StreamState::new(Some(snapshot(ids)));
    let mut envoy = FakeEnvoy::new("sidecar-1");
    let initial = envoy.initial();
    let (pushed, _) = run(&mut state, &mut envoy, initial, Vec::new());
    let n = ids.len();
    assert_eq!(
        pushed,
        [
            (ResourceType::Cluster, n),
            (ResourceType::Endpoint, n),
            (ResourceType::Listener, n)
        ]
    );
    assert!(state.in_sync());
    (state, envoy)
}

fn change(
    state: &mut StreamState,
    envoy: &mut FakeEnvoy,
    s: Arc<Snapshot>,
) -> (Vec<(ResourceType, usize)>, Vec<Event>) {
    let step = state.on_snapshot(s);
    run(state, envoy, Vec::new(), step.responses)
}

#[test]
fn initial_sync_is_clusters_then_endpoints_then_listeners() {
    let (state, envoy) = synced(&[0, 1, 2]);
    assert_eq!(
        envoy.listener_ports().into_iter().collect::<Vec<_>>(),
        [
            ("kafka-stretch-0".to_owned(), 9091),
            ("kafka-stretch-1".to_owned(), 9092),
            ("kafka-stretch-2".to_owned(), 9093)
        ]
    );
    assert_eq!(envoy.endpoint_addrs()["kafka-stretch-1"], ["10.0.0.1:9443"]);
    assert_eq!(state.node(), Some("sidecar-1/test"));
    assert_eq!(state.in_flight(), None);
}

#[test]
fn requests_before_the_first_snapshot_wait_for_it() {
    let mut state = StreamState::new(None);
    let mut envoy = FakeEnvoy::new("early");
    let initial = envoy.initial();
    let (pushed, _) = run(&mut state, &mut envoy, initial, Vec::new());
    assert!(pushed.is_empty(), "nothing to serve yet: {pushed:?}");
    let (pushed, _) = change(&mut state, &mut envoy, snapshot(&[0]));
    assert_eq!(
        pushed,
        [
            (ResourceType::Cluster, 1),
            (ResourceType::Endpoint, 1),
            (ResourceType::Listener, 1)
        ]
    );
}

#[test]
fn a_broker_moving_pushes_only_its_endpoints() {
    let (mut state, mut envoy) = synced(&[0, 1, 2]);
    let before = envoy.versions.clone();
    let moved = Arc::new(
        Snapshot::build(
            members_at(&[0, 1, 2], |id| {
                let host = if id == 1 { "10.9.9.9" } else { "10.0.0.0" };
                format!("{host}:{}", 9443 + id).parse().expect("addr")
            }),
            CONFIG_DIR,
        )
        .expect("snapshot"),
    );
    let (pushed, _) = change(&mut state, &mut envoy, moved);
    assert_eq!(pushed, [(ResourceType::Endpoint, 3)]);
    assert_eq!(envoy.endpoint_addrs()["kafka-stretch-1"], ["10.9.9.9:9444"]);
    assert_eq!(
        envoy.versions[&ResourceType::Cluster],
        before[&ResourceType::Cluster]
    );
    assert_eq!(
        envoy.versions[&ResourceType::Listener],
        before[&ResourceType::Listener]
    );
    // The same snapshot again sends nothing.
    let (pushed, _) = change(
        &mut state,
        &mut envoy,
        Arc::new(Snapshot::clone(&snapshot(&[0, 1, 2]))),
    );
    assert_eq!(
        pushed,
        [(ResourceType::Endpoint, 3)],
        "back to the first addresses"
    );
    let (pushed, _) = change(&mut state, &mut envoy, snapshot(&[0, 1, 2]));
    assert!(
        pushed.is_empty(),
        "unchanged resources are not resent: {pushed:?}"
    );
}

#[test]
fn a_broker_added_comes_as_cluster_then_endpoints_then_listener() {
    let (mut state, mut envoy) = synced(&[0, 1, 2]);
    let (pushed, _) = change(&mut state, &mut envoy, snapshot(&[0, 1, 2, 3]));
    assert_eq!(
        pushed,
        [
            (ResourceType::Cluster, 4),
            (ResourceType::Endpoint, 4),
            (ResourceType::Listener, 4)
        ]
    );
    assert_eq!(envoy.listener_ports()["kafka-stretch-3"], 9094);
    assert!(state.in_sync());
}

#[test]
fn a_broker_removed_loses_its_listener_before_its_cluster() {
    let (mut state, mut envoy) = synced(&[0, 1, 2]);
    let (pushed, _) = change(&mut state, &mut envoy, snapshot(&[0, 1]));
    // Endpoints of the remaining brokers (the cluster set with broker 2 is unchanged), the
    // listeners without broker 2, then the clusters without it, then the client's smaller
    // EDS subscription answered.
    assert_eq!(
        pushed,
        [
            (ResourceType::Endpoint, 2),
            (ResourceType::Listener, 2),
            (ResourceType::Cluster, 2),
            (ResourceType::Endpoint, 2)
        ]
    );
    assert!(!envoy.clusters.contains_key("kafka-stretch-2"));
    assert!(state.in_sync());
}

#[test]
fn a_nack_keeps_the_previous_version_and_is_not_retried() {
    let (mut state, mut envoy) = synced(&[0, 1, 2]);
    envoy.reject = vec![ResourceType::Cluster];
    let (pushed, events) = change(&mut state, &mut envoy, snapshot(&[0, 1, 2, 3]));
    assert_eq!(pushed, [(ResourceType::Cluster, 4)], "sent once, not again");
    let nack = events
        .iter()
        .find_map(|e| match e {
            Event::Nacked {
                kind, detail, kept, ..
            } => Some((*kind, detail.clone(), kept.clone())),
            _ => None,
        })
        .expect("a NACK event");
    assert_eq!(nack.0, ResourceType::Cluster);
    assert!(nack.1.starts_with("rejected cds version"), "{}", nack.1);
    assert_eq!(
        nack.2,
        envoy.versions[&ResourceType::Cluster],
        "the client keeps its version"
    );
    assert_eq!(envoy.clusters.len(), 3);
    assert!(!state.in_sync());
    // The same content again is not sent; the listeners wait for clusters the client has.
    let (pushed, _) = change(&mut state, &mut envoy, snapshot(&[0, 1, 2, 3]));
    assert!(
        pushed.is_empty(),
        "a rejected version is not resent: {pushed:?}"
    );
    // A new snapshot is tried.
    envoy.reject.clear();
    let (pushed, _) = change(&mut state, &mut envoy, snapshot(&[0, 1, 2, 3, 4]));
    assert_eq!(
        pushed,
        [
            (ResourceType::Cluster, 5),
            (ResourceType::Endpoint, 5),
            (ResourceType::Listener, 5)
        ]
    );
    assert!(state.in_sync());
}

#[test]
fn a_stale_nonce_is_ignored() {
    let (mut state, envoy) = synced(&[0, 1, 2]);
    let mut late = DiscoveryRequest {
        type_url: ResourceType::Endpoint.type_url().to_owned(),
        version_info: "old".to_owned(),
        response_nonce: "1".to_owned(),
        ..DiscoveryRequest::default()
    };
    late.error_detail = Some(envoy_types::pb::google::rpc::Status {
        code: 3,
        message: "late".to_owned(),
        details: Vec::new(),
    });
    // Nonce 1 was the CDS response, never an EDS one.
    assert_eq!(envoy.nonces[&ResourceType::Cluster], "1");
    assert_ne!(envoy.nonces[&ResourceType::Endpoint], "1");
    let step = state.on_request(late).expect("accepted");
    assert!(step.responses.is_empty());
    assert!(matches!(
        step.events.as_slice(),
        [Event::Stale {
            kind: ResourceType::Endpoint,
            ..
        }]
    ));
    assert!(state.in_sync(), "a stale NACK changes nothing");
}

#[test]
fn a_client_resuming_with_the_current_versions_is_sent_nothing() {
    let (_, first) = synced(&[0, 1, 2]);
    let mut state = StreamState::new(Some(snapshot(&[0, 1, 2])));
    let mut resumed = FakeEnvoy::new("sidecar-1");
    resumed.versions = first.versions.clone();
    resumed.eds_names = first.eds_names.clone();
    let mut requests = resumed.initial();
    requests.push(DiscoveryRequest {
        version_info: first.versions[&ResourceType::Endpoint].clone(),
        resource_names: first.eds_names.clone(),
        type_url: ResourceType::Endpoint.type_url().to_owned(),
        ..DiscoveryRequest::default()
    });
    let (pushed, _) = run(&mut state, &mut resumed, requests, Vec::new());
    assert!(pushed.is_empty(), "{pushed:?}");
    assert!(state.in_sync());
}

#[test]
fn a_request_past_the_per_stream_bounds_is_refused() {
    let mut state = StreamState::new(Some(snapshot(&[0])));
    let req = DiscoveryRequest {
        type_url: ResourceType::Endpoint.type_url().to_owned(),
        resource_names: (0..=MAX_RESOURCE_NAMES).map(|i| format!("c{i}")).collect(),
        ..DiscoveryRequest::default()
    };
    match state.on_request(req) {
        Err(e @ StreamError::TooManyNames { .. }) => {
            assert!(
                e.to_string()
                    .contains(&format!("expected at most {MAX_RESOURCE_NAMES}")),
                "{e}"
            );
        }
        other => panic!("expected TooManyNames, got {other:?}"),
    }
    let unknown = DiscoveryRequest {
        type_url: "type.googleapis.com/envoy.config.route.v3.RouteConfiguration".to_owned(),
        ..DiscoveryRequest::default()
    };
    let step = state.on_request(unknown).expect("accepted");
    assert!(step.responses.is_empty());
    assert!(matches!(
        step.events.as_slice(),
        [Event::UnknownType { .. }]
    ));
}

#[test]
fn decoded_resources_are_what_was_built() {
    let s = snapshot(&[7]);
    let any = s
        .resources(ResourceType::Endpoint)
        .get("kafka-stretch-7")
        .expect("cla");
    let cla = ClusterLoadAssignment::decode(any.value.as_slice()).expect("decode");
    assert_eq!(cla.cluster_name, "kafka-stretch-7");
    let any = s
        .resources(ResourceType::Cluster)
        .get("kafka-stretch-7")
        .expect("cluster");
    let c = Cluster::decode(any.value.as_slice()).expect("decode");
    assert_eq!(c.name, "kafka-stretch-7");
    let _: Vec<Member> = s.members().to_vec();
}
