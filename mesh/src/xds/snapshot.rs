//! A consistent, versioned set of every resource the client sidecars get: one Listener,
//! one Cluster and one ClusterLoadAssignment per broker.
//!
//! Versions are per resource type and are a hash of that type's encoded resources, so a
//! type's version changes exactly when its resources do (a broker moving changes only the
//! EDS version) and every replica of the control plane computes the same versions from the
//! same membership: a sidecar that reconnects to another replica is not sent what it has.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;
use sha2::{Digest, Sha256};

use crate::client::BrokerRoute;
use crate::xds::resources;

/// The resource types the control plane serves, in the order a change is pushed on one
/// stream (make before break: clusters, then their endpoints, then the listeners that use
/// them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    Cluster,
    Endpoint,
    Listener,
}

impl ResourceType {
    /// Every type, in push order.
    pub const ALL: [Self; 3] = [Self::Cluster, Self::Endpoint, Self::Listener];

    /// The `type_url` of requests and responses of this type.
    pub const fn type_url(self) -> &'static str {
        match self {
            Self::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            Self::Endpoint => "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            Self::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
        }
    }

    /// The type a `type_url` names, if it is one served here.
    pub fn from_type_url(url: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// The short name used in logs and metric labels: `cds`, `eds`, `lds`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Cluster => "cds",
            Self::Endpoint => "eds",
            Self::Listener => "lds",
        }
    }

    pub(crate) const fn index(self) -> usize {
        match self {
            Self::Cluster => 0,
            Self::Endpoint => 1,
            Self::Listener => 2,
        }
    }
}

impl std::fmt::Display for ResourceType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The resources of one type, by name, and their version.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Resources {
    version: String,
    items: BTreeMap<String, Any>,
}

impl Resources {
    /// Versions the resources by the hash of their names and encoded bytes, in name order.
    pub fn new(items: BTreeMap<String, Any>) -> Self {
        let version = version_of(items.iter());
        Self { version, items }
    }

    /// The hash of the resources (16 hex digits; `empty` for none, which Envoy accepts as a
    /// version like any other).
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn items(&self) -> &BTreeMap<String, Any> {
        &self.items
    }

    pub fn get(&self, name: &str) -> Option<&Any> {
        self.items.get(name)
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// The version of a set of named resources: a hash of each name, type URL and encoding.
pub(crate) fn version_of<'a>(items: impl Iterator<Item = (&'a String, &'a Any)>) -> String {
    let mut hash = Sha256::new();
    let mut any = false;
    for (name, item) in items {
        any = true;
        for part in [name.as_bytes(), item.type_url.as_bytes(), &item.value] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
    }
    if !any {
        return "empty".to_owned();
    }
    hash.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One broker of the Kafka cluster as the control plane serves it: its route (listener,
/// identity, the host its endpoints come from) and the addresses its sidecar is reached at
/// right now (none while its host does not resolve: the cluster exists, with no endpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub route: BrokerRoute,
    pub addresses: Vec<SocketAddr>,
}

/// Why a set of members makes no snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Two members would make resources of the same name.
    #[error("brokers {first} and {second} both make {kind} {name:?}; expected one per name")]
    DuplicateName {
        kind: ResourceType,
        name: String,
        first: i32,
        second: i32,
    },
    /// Two members would listen on the same address.
    #[error(
        "brokers {first} and {second} both listen on {listen}; expected one listener per address"
    )]
    DuplicateListen {
        listen: std::net::SocketAddrV4,
        first: i32,
        second: i32,
    },
    /// A resource names another that the snapshot lacks.
    #[error(
        "{kind} {name:?} refers to cluster {cluster:?}, which is not in the snapshot's clusters"
    )]
    Inconsistent {
        kind: ResourceType,
        name: String,
        cluster: String,
    },
}

/// Every resource served at one moment; consistent (every EDS name and every listener's
/// cluster is a CDS cluster, every cluster has its endpoints).
#[derive(Debug, Clone)]
pub struct Snapshot {
    clusters: Resources,
    endpoints: Resources,
    listeners: Resources,
    members: Vec<Member>,
    /// When the membership this snapshot holds was seen (the start of the
    /// change-to-last-ACK time).
    pub created: Instant,
}

impl PartialEq for Snapshot {
    /// Equal when they serve the same resources (whenever they were made).
    fn eq(&self, other: &Self) -> bool {
        self.clusters == other.clusters
            && self.endpoints == other.endpoints
            && self.listeners == other.listeners
    }
}

impl Snapshot {
    /// The snapshot serving `members`, whose clusters read the client certificate and the
    /// mesh CA from the SDS files in `config_dir`.
    pub fn build(members: Vec<Member>, config_dir: &str) -> Result<Self, SnapshotError> {
        let mut members = members;
        members.sort_by_key(|m| m.route.broker_id);
        let mut clusters = BTreeMap::new();
        let mut endpoints = BTreeMap::new();
        let mut listeners = BTreeMap::new();
        let mut owners: BTreeMap<String, i32> = BTreeMap::new();
        let mut listens: BTreeMap<std::net::SocketAddrV4, i32> = BTreeMap::new();
        for m in &members {
            let r = &m.route;
            let name = r.name();
            if let Some(&first) = owners.get(&name) {
                return Err(SnapshotError::DuplicateName {
                    kind: ResourceType::Cluster,
                    name,
                    first,
                    second: r.broker_id,
                });
            }
            if let Some(&first) = listens.get(&r.listen) {
                return Err(SnapshotError::DuplicateListen {
                    listen: r.listen,
                    first,
                    second: r.broker_id,
                });
            }
            owners.insert(name.clone(), r.broker_id);
            listens.insert(r.listen, r.broker_id);
            clusters.insert(name.clone(), pack_any(resources::cluster(r, config_dir)));
            endpoints.insert(
                name.clone(),
                pack_any(resources::load_assignment(r, &m.addresses)),
            );
            listeners.insert(name, pack_any(resources::listener(r)));
        }
        let snapshot = Self {
            clusters: Resources::new(clusters),
            endpoints: Resources::new(endpoints),
            listeners: Resources::new(listeners),
            members,
            created: Instant::now(),
        };
        snapshot.check_consistent()?;
        Ok(snapshot)
    }

    /// An empty snapshot (no broker known).
    pub fn empty() -> Self {
        Self {
            clusters: Resources::new(BTreeMap::new()),
            endpoints: Resources::new(BTreeMap::new()),
            listeners: Resources::new(BTreeMap::new()),
            members: Vec::new(),
            created: Instant::now(),
        }
    }

    /// Every EDS name and every listener's cluster is a CDS cluster, and every cluster has
    /// its ClusterLoadAssignment (an EDS cluster without one never warms).
    pub fn check_consistent(&self) -> Result<(), SnapshotError> {
        for name in self.endpoints.items.keys() {
            if !self.clusters.items.contains_key(name) {
                return Err(SnapshotError::Inconsistent {
                    kind: ResourceType::Endpoint,
                    name: name.clone(),
                    cluster: name.clone(),
                });
            }
        }
        for name in self.clusters.items.keys() {
            if !self.endpoints.items.contains_key(name) {
                return Err(SnapshotError::Inconsistent {
                    kind: ResourceType::Cluster,
                    name: name.clone(),
                    cluster: name.clone(),
                });
            }
        }
        for (name, any) in &self.listeners.items {
            for cluster in listener_clusters(any) {
                if !self.clusters.items.contains_key(&cluster) {
                    return Err(SnapshotError::Inconsistent {
                        kind: ResourceType::Listener,
                        name: name.clone(),
                        cluster,
                    });
                }
            }
        }
        Ok(())
    }

    /// The resources of type `t`.
    pub fn resources(&self, t: ResourceType) -> &Resources {
        match t {
            ResourceType::Cluster => &self.clusters,
            ResourceType::Endpoint => &self.endpoints,
            ResourceType::Listener => &self.listeners,
        }
    }

    /// The version of type `t`.
    pub fn version(&self, t: ResourceType) -> &str {
        self.resources(t).version()
    }

    /// The members it was built from, by broker id.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// `cds=…,eds=…,lds=…`: the versions in one string, for logs and audit lines.
    pub fn versions(&self) -> String {
        ResourceType::ALL
            .iter()
            .map(|t| format!("{t}={}", self.version(*t)))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The clusters a listener's tcp_proxy filters send to (a listener that does not decode
/// names none it could send to, and is caught by Envoy's own validation).
fn listener_clusters(any: &Any) -> Vec<String> {
    use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::tcp_proxy::ClusterSpecifier;
    use prost::Message;
    let Ok(listener) = Listener::decode(any.value.as_slice()) else {
        return Vec::new();
    };
    listener
        .filter_chains
        .iter()
        .flat_map(|c| &c.filters)
        .filter_map(|f| match &f.config_type {
            Some(filter::ConfigType::TypedConfig(t)) => TcpProxy::decode(t.value.as_slice()).ok(),
            _ => None,
        })
        .filter_map(|p| match p.cluster_specifier {
            Some(ClusterSpecifier::Cluster(c)) => Some(c),
            _ => None,
        })
        .collect()
}
