//! What the xDS tests share: a client that behaves as Envoy does on an ADS stream (ACKs,
//! EDS subscriptions following its clusters, NACKs on demand), usable against the pure
//! state machine or over real gRPC; and members built from the example policy.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc::Status;
use kpool_mesh::client::{self, ClientOptions, Endpoint};
use kpool_mesh::xds::{Member, ResourceType, Snapshot};
use kpool_policy::{DEFAULT_POLICY_YAML, Policy};
use prost::Message;
use tokio::sync::mpsc;

pub const CONFIG_DIR: &str = "/etc/kpool-proxy";

/// Members for brokers `ids` of the example policy, each reached at 10.0.0.<id>:9443.
pub fn members(ids: &[i32]) -> Vec<Member> {
    members_at(ids, |id| format!("10.0.0.{id}:9443").parse().expect("addr"))
}

/// Members for brokers `ids`, each reached at `addr(id)`.
pub fn members_at(ids: &[i32], addr: impl Fn(i32) -> SocketAddr) -> Vec<Member> {
    let policy = Policy::from_yaml(DEFAULT_POLICY_YAML, "policy.yaml").expect("policy");
    let options = ClientOptions {
        brokers: ids.to_vec(),
        ..ClientOptions::default()
    };
    client::routes(&[policy], &options)
        .expect("routes")
        .into_iter()
        .map(|route| Member {
            addresses: vec![addr(route.broker_id)],
            route,
        })
        .collect()
}

/// Members pinned to an endpoint each (`ClientOptions::endpoints`).
pub fn pinned(policy: &Policy, pins: &[(i32, SocketAddr)]) -> Vec<Member> {
    let mut options = ClientOptions {
        brokers: pins.iter().map(|(id, _)| *id).collect(),
        ..ClientOptions::default()
    };
    for (id, a) in pins {
        options.endpoints.insert(
            *id,
            Endpoint {
                host: a.ip().to_string(),
                port: a.port(),
            },
        );
    }
    client::routes(std::slice::from_ref(policy), &options)
        .expect("routes")
        .into_iter()
        .zip(pins)
        .map(|(route, (_, a))| Member {
            route,
            addresses: vec![*a],
        })
        .collect()
}

pub fn snapshot(ids: &[i32]) -> Arc<Snapshot> {
    Arc::new(Snapshot::build(members(ids), CONFIG_DIR).expect("snapshot"))
}

/// What a client sidecar has applied, and the requests it sends, as Envoy does: wildcard
/// CDS and LDS; after each cluster update, an EDS request naming exactly its clusters; an
/// ACK (or a NACK, for a type in `reject`) echoing each response's nonce.
#[derive(Debug, Default)]
pub struct FakeEnvoy {
    pub clusters: BTreeMap<String, Cluster>,
    pub endpoints: BTreeMap<String, ClusterLoadAssignment>,
    pub listeners: BTreeMap<String, Listener>,
    /// Per type: the version applied and the latest nonce received.
    pub versions: BTreeMap<ResourceType, String>,
    pub nonces: BTreeMap<ResourceType, String>,
    pub eds_names: Vec<String>,
    /// Responses of these types are rejected (NACK with an error_detail).
    pub reject: Vec<ResourceType>,
    /// Every response received: (type, version, resource count).
    pub received: Vec<(ResourceType, String, usize)>,
    pub node_id: String,
}

impl FakeEnvoy {
    pub fn new(node_id: &str) -> Self {
        Self {
            node_id: node_id.to_owned(),
            ..Self::default()
        }
    }

    fn request(&self, kind: ResourceType, names: Vec<String>) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: self.versions.get(&kind).cloned().unwrap_or_default(),
            node: Some(Node {
                id: self.node_id.clone(),
                cluster: "test".to_owned(),
                ..Node::default()
            }),
            resource_names: names,
            type_url: kind.type_url().to_owned(),
            response_nonce: self.nonces.get(&kind).cloned().unwrap_or_default(),
            ..DiscoveryRequest::default()
        }
    }

    /// The first requests on a stream: clusters and listeners (Envoy asks for listeners
    /// once its clusters are ready; asking at once checks the server holds them back).
    pub fn initial(&self) -> Vec<DiscoveryRequest> {
        vec![
            self.request(ResourceType::Cluster, Vec::new()),
            self.request(ResourceType::Listener, Vec::new()),
        ]
    }

    /// Applies a response; returns the requests Envoy would send.
    pub fn on_response(&mut self, r: &DiscoveryResponse) -> Vec<DiscoveryRequest> {
        let kind = ResourceType::from_type_url(&r.type_url).expect("a served type");
        self.received
            .push((kind, r.version_info.clone(), r.resources.len()));
        self.nonces.insert(kind, r.nonce.clone());
        if self.reject.contains(&kind) {
            let mut nack = self.request(kind, self.names(kind));
            nack.error_detail = Some(Status {
                code: 3,
                message: format!("rejected {kind} version {}", r.version_info),
                details: Vec::new(),
            });
            return vec![nack];
        }
        let mut out = Vec::new();
        match kind {
            ResourceType::Cluster => {
                self.clusters = r
                    .resources
                    .iter()
                    .map(|a| Cluster::decode(a.value.as_slice()).expect("cluster"))
                    .map(|c| (c.name.clone(), c))
                    .collect();
                self.endpoints.retain(|n, _| self.clusters.contains_key(n));
                let names: Vec<String> = self.clusters.keys().cloned().collect();
                if names != self.eds_names {
                    self.eds_names = names.clone();
                    // Envoy resubscribes EDS when its clusters change, before it ACKs.
                    out.push(self.request(ResourceType::Endpoint, names));
                }
            }
            ResourceType::Endpoint => {
                for a in &r.resources {
                    let cla = ClusterLoadAssignment::decode(a.value.as_slice()).expect("cla");
                    self.endpoints.insert(cla.cluster_name.clone(), cla);
                }
            }
            ResourceType::Listener => {
                self.listeners = r
                    .resources
                    .iter()
                    .map(|a| Listener::decode(a.value.as_slice()).expect("listener"))
                    .map(|l| (l.name.clone(), l))
                    .collect();
            }
        }
        self.versions.insert(kind, r.version_info.clone());
        out.push(self.request(kind, self.names(kind)));
        out
    }

    fn names(&self, kind: ResourceType) -> Vec<String> {
        if kind == ResourceType::Endpoint {
            self.eds_names.clone()
        } else {
            Vec::new()
        }
    }

    /// The port each listener listens on, by name.
    pub fn listener_ports(&self) -> BTreeMap<String, u32> {
        use envoy_types::pb::envoy::config::core::v3::address;
        use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
        self.listeners
            .iter()
            .map(|(n, l)| {
                let port = match l.address.as_ref().and_then(|a| a.address.as_ref()) {
                    Some(address::Address::SocketAddress(s)) => match s.port_specifier {
                        Some(PortSpecifier::PortValue(p)) => p,
                        _ => 0,
                    },
                    _ => 0,
                };
                (n.clone(), port)
            })
            .collect()
    }

    /// Each cluster's endpoint addresses as `ip:port`, by cluster name.
    pub fn endpoint_addrs(&self) -> BTreeMap<String, Vec<String>> {
        use envoy_types::pb::envoy::config::core::v3::address;
        use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
        use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
        self.endpoints
            .iter()
            .map(|(n, cla)| {
                let addrs = cla
                    .endpoints
                    .iter()
                    .flat_map(|l| &l.lb_endpoints)
                    .filter_map(|e| match &e.host_identifier {
                        Some(HostIdentifier::Endpoint(e)) => e.address.clone(),
                        _ => None,
                    })
                    .filter_map(|a| match a.address {
                        Some(address::Address::SocketAddress(s)) => {
                            let port = match s.port_specifier {
                                Some(PortSpecifier::PortValue(p)) => p,
                                _ => 0,
                            };
                            Some(format!("{}:{port}", s.address))
                        }
                        _ => None,
                    })
                    .collect();
                (n.clone(), addrs)
            })
            .collect()
    }
}

/// A [`FakeEnvoy`] on a real gRPC stream: a task applies every response and sends its
/// requests; the state is shared for the test to look at.
pub struct GrpcEnvoy {
    pub state: Arc<std::sync::Mutex<FakeEnvoy>>,
    task: tokio::task::JoinHandle<()>,
    /// Responses as they arrive: (type, version).
    pub seen: tokio::sync::broadcast::Sender<(ResourceType, String)>,
}

impl GrpcEnvoy {
    pub async fn connect(addr: SocketAddr, envoy: FakeEnvoy) -> Self {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect to the xDS server");
        Self::on(channel, envoy).await
    }

    /// Over TLS to `addr`, trusting `ca_pem` and requiring `host` in the server's
    /// certificate, as a sidecar bootstrapped with `client-config --xds-ca` does.
    pub async fn connect_tls(
        addr: SocketAddr,
        host: &str,
        ca_pem: &str,
        envoy: FakeEnvoy,
    ) -> Result<Self, tonic::transport::Error> {
        let channel = tls_channel(addr, host, ca_pem).await?;
        Ok(Self::on(channel, envoy).await)
    }

    async fn on(channel: tonic::transport::Channel, envoy: FakeEnvoy) -> Self {
        let mut client = AggregatedDiscoveryServiceClient::new(channel);
        let (tx, rx) = mpsc::channel::<DiscoveryRequest>(16);
        for r in envoy.initial() {
            tx.send(r).await.expect("queue");
        }
        let mut responses = client
            .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("ADS stream")
            .into_inner();
        let state = Arc::new(std::sync::Mutex::new(envoy));
        let (seen, _) = tokio::sync::broadcast::channel(1024);
        let task = {
            let state = state.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                while let Ok(Some(r)) = responses.message().await {
                    let kind = ResourceType::from_type_url(&r.type_url).expect("served type");
                    let requests = state.lock().expect("state").on_response(&r);
                    let _ = seen.send((kind, r.version_info.clone()));
                    for q in requests {
                        if tx.send(q).await.is_err() {
                            return;
                        }
                    }
                }
            })
        };
        Self { state, task, seen }
    }

    /// Waits (10 s at most) until `f` holds of the client's state.
    pub async fn wait(&self, what: &str, f: impl Fn(&FakeEnvoy) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if f(&self.state.lock().expect("state")) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what} within 10s: {:#?}",
                self.state.lock().expect("state").received
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Drops the stream as a sidecar that goes away does.
    pub fn disconnect(self) {
        self.task.abort();
    }
}

/// A TLS channel to `addr` trusting `ca_pem`, checking the certificate for `host`.
pub async fn tls_channel(
    addr: SocketAddr,
    host: &str,
    ca_pem: &str,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem))
        .domain_name(host);
    tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .expect("endpoint")
        .tls_config(tls)?
        .connect()
        .await
}

/// A CA and the control plane's serving certificate for `host` (a DNS name or an IP, as
/// the SAN `client-config --xds` requires), written as a TLS Secret mounts them:
/// `dir/{tls.crt,tls.key,ca.crt}`. Returns the CA's PEM.
pub fn server_certs(dir: &std::path::Path, host: &str) -> String {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
        SanType,
    };
    let named = |cn: &str| {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        dn
    };
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::default();
    // Its own name: a leaf whose issuer equals its subject looks self-signed to BoringSSL.
    ca.distinguished_name = named("kpool-mesh test xDS CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let ca_cert = ca.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::from_ca_cert_der(ca_cert.der(), ca_key).expect("issuer");
    let key = KeyPair::generate().expect("key");
    let mut leaf = CertificateParams::default();
    leaf.distinguished_name = named(host);
    leaf.subject_alt_names = vec![match host.parse::<std::net::IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(host.try_into().expect("DNS SAN")),
    }];
    let cert = leaf.signed_by(&key, &issuer).expect("leaf");
    std::fs::create_dir_all(dir).expect("certs dir");
    std::fs::write(dir.join("tls.crt"), cert.pem()).expect("tls.crt");
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).expect("tls.key");
    std::fs::write(dir.join("ca.crt"), ca_cert.pem()).expect("ca.crt");
    ca_cert.pem()
}
