//! One ADS stream's protocol, as a pure state machine: a request or a new snapshot in,
//! the responses to send out. No sockets, no clock: the tonic shell ([`super::server`])
//! feeds it and sends what it returns, and the tests drive it directly.
//!
//! The rules it keeps (state of the world, one stream carrying every type):
//! - **Nonces per stream.** Every response carries a fresh nonce. A request whose
//!   `response_nonce` is not the latest sent for its type is stale and ignored.
//! - **ACK/NACK.** A request echoing the latest nonce acknowledges that response, or rejects
//!   it when it carries `error_detail`: the client keeps its previous version, the rejected
//!   version is remembered and not sent again (a change of the snapshot brings a new one).
//! - **One response in flight.** Nothing more is sent on the stream while a response is
//!   unanswered, so responses are applied in the order sent.
//! - **Make before break.** Types are pushed in the order clusters, endpoints, listeners.
//!   Listeners change only once the client has ACKed the clusters they use and the
//!   endpoints of those clusters (an EDS cluster warms until its endpoints arrive). A
//!   cluster whose listener the client still has stays in the cluster set (the union of the
//!   old and new sets is sent) until the client ACKs the listeners without it: removals
//!   come last.
//! - **Full sets, no resends.** LDS and CDS responses hold every resource; EDS ones every
//!   requested name the snapshot has, versioned by the hash of exactly those. A type is sent
//!   only when that version (or, for EDS, the requested names) differs from what the client
//!   has.
//!
//! Memory per stream: the subscription and the last sent and ACKed EDS name lists (each at
//! most [`MAX_RESOURCE_NAMES`] names of at most [`MAX_NAME_LEN`] bytes; a request past
//! either is refused), three versions per type, and references to the shared snapshots the
//! client's ACKed listeners came from. Resources are shared by every stream until a
//! response is built.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::Any;

use super::snapshot::{ResourceType, Snapshot, version_of};

/// The most resource names one request may subscribe to.
pub const MAX_RESOURCE_NAMES: usize = 4096;
/// The longest resource name accepted (the served names are `kafka-<cluster>-<id>`).
pub const MAX_NAME_LEN: usize = 253;
/// The longest `error_detail` message kept from a NACK (for the log).
pub const MAX_DETAIL_LEN: usize = 1024;

/// What happened while handling an input, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A response was sent.
    Sent { kind: ResourceType, version: String },
    /// The client applied a response.
    Acked { kind: ResourceType, version: String },
    /// The client rejected a response and keeps `kept`.
    Nacked {
        kind: ResourceType,
        version: String,
        kept: String,
        detail: String,
    },
    /// A request with an old nonce, ignored.
    Stale { kind: ResourceType, nonce: String },
    /// A request for a type this server does not serve, ignored.
    UnknownType { type_url: String },
}

/// A request the stream refuses (the stream is closed with this).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("{type_url}: {count} resource names requested; expected at most {MAX_RESOURCE_NAMES}")]
    TooManyNames { type_url: String, count: usize },
    #[error("{type_url}: a resource name of {len} bytes; expected at most {MAX_NAME_LEN}")]
    NameTooLong { type_url: String, len: usize },
}

/// The outcome of one input.
#[derive(Debug, Default)]
pub struct Step {
    pub responses: Vec<DiscoveryResponse>,
    pub events: Vec<Event>,
}

/// A response the client has (ACKed) or is applying (in flight).
#[derive(Debug, Clone)]
struct Sent {
    version: String,
    /// EDS: the names the response covered.
    names: Vec<String>,
    /// The snapshot the response was built from (for listeners: which clusters they use).
    snapshot: Option<Arc<Snapshot>>,
}

#[derive(Debug, Default)]
struct TypeState {
    subscribed: bool,
    /// The requested names (EDS), sorted; empty for the wildcard types.
    names: Vec<String>,
    /// The nonce of the latest response of this type (0: none yet).
    last_nonce: u64,
    in_flight: Option<Sent>,
    acked: Option<Sent>,
    /// The latest rejected response (version and names), not to be sent again.
    nacked: Option<(String, Vec<String>)>,
}

/// The protocol state of one ADS stream.
#[derive(Debug, Default)]
pub struct StreamState {
    snapshot: Option<Arc<Snapshot>>,
    types: [TypeState; 3],
    next_nonce: u64,
    node: Option<String>,
}

/// What would be sent for one type now.
struct Desired {
    version: String,
    names: Vec<String>,
    resources: Vec<Any>,
}

impl StreamState {
    /// A stream serving `snapshot` (none yet: requests wait for the first one).
    pub fn new(snapshot: Option<Arc<Snapshot>>) -> Self {
        Self {
            snapshot,
            ..Self::default()
        }
    }

    /// The client's node id (`id/cluster`), once a request carried it.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// Handles one request from the client.
    pub fn on_request(&mut self, req: DiscoveryRequest) -> Result<Step, StreamError> {
        let mut step = Step::default();
        if self.node.is_none()
            && let Some(n) = &req.node
        {
            let mut node = format!("{}/{}", n.id, n.cluster);
            node.truncate(2 * MAX_NAME_LEN);
            self.node = Some(node);
        }
        let Some(kind) = ResourceType::from_type_url(&req.type_url) else {
            let mut type_url = req.type_url;
            type_url.truncate(MAX_NAME_LEN);
            step.events.push(Event::UnknownType { type_url });
            return Ok(step);
        };
        if req.resource_names.len() > MAX_RESOURCE_NAMES {
            return Err(StreamError::TooManyNames {
                type_url: req.type_url,
                count: req.resource_names.len(),
            });
        }
        if let Some(n) = req.resource_names.iter().find(|n| n.len() > MAX_NAME_LEN) {
            return Err(StreamError::NameTooLong {
                type_url: req.type_url.clone(),
                len: n.len(),
            });
        }
        let mut names = req.resource_names;
        names.sort();
        names.dedup();
        let st = &mut self.types[kind.index()];

        if req.response_nonce.is_empty() {
            // The first request of this type on the stream. A client resuming from another
            // stream says what it has; versions are content hashes, so that is exact.
            if !st.subscribed && !req.version_info.is_empty() {
                st.acked = Some(Sent {
                    version: req.version_info.clone(),
                    names: names.clone(),
                    snapshot: None,
                });
            }
            st.subscribed = true;
            st.names = if kind == ResourceType::Endpoint {
                names
            } else {
                Vec::new()
            };
        } else {
            let nonce = req.response_nonce.parse::<u64>().ok();
            if nonce != Some(st.last_nonce) || st.last_nonce == 0 {
                step.events.push(Event::Stale {
                    kind,
                    nonce: req.response_nonce.chars().take(32).collect(),
                });
                return Ok(step);
            }
            st.subscribed = true;
            if kind == ResourceType::Endpoint {
                st.names = names;
            }
            if let Some(sent) = st.in_flight.take() {
                match req.error_detail {
                    Some(status) => {
                        let mut detail = status.message;
                        if detail.len() > MAX_DETAIL_LEN {
                            let mut cut = MAX_DETAIL_LEN;
                            while !detail.is_char_boundary(cut) {
                                cut -= 1;
                            }
                            detail.truncate(cut);
                        }
                        step.events.push(Event::Nacked {
                            kind,
                            version: sent.version.clone(),
                            kept: req.version_info,
                            detail,
                        });
                        st.nacked = Some((sent.version, sent.names));
                    }
                    None => {
                        step.events.push(Event::Acked {
                            kind,
                            version: sent.version.clone(),
                        });
                        st.acked = Some(sent);
                    }
                }
            }
        }
        self.pump(&mut step);
        Ok(step)
    }

    /// Takes a new snapshot and sends what changed.
    pub fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> Step {
        self.snapshot = Some(snapshot);
        let mut step = Step::default();
        self.pump(&mut step);
        step
    }

    /// Whether the client has ACKed the current snapshot for every type it subscribed to
    /// (and nothing is in flight).
    pub fn in_sync(&self) -> bool {
        let Some(s) = &self.snapshot else {
            return false;
        };
        ResourceType::ALL.iter().all(|&t| {
            let st = &self.types[t.index()];
            !st.subscribed
                || (st.in_flight.is_none()
                    && st.acked.as_ref().is_some_and(|a| match t {
                        ResourceType::Cluster => a.version == s.version(t),
                        _ => {
                            let d = self.desired(t, s);
                            a.version == d.version && a.names == d.names
                        }
                    }))
        })
    }

    /// Whether a response is awaiting the client's answer.
    pub fn in_flight(&self) -> Option<ResourceType> {
        ResourceType::ALL
            .into_iter()
            .find(|t| self.types[t.index()].in_flight.is_some())
    }

    /// Sends the first type (in push order) whose client is behind, if nothing is in flight.
    fn pump(&mut self, step: &mut Step) {
        let Some(s) = self.snapshot.clone() else {
            return;
        };
        if self.in_flight().is_some() {
            return;
        }
        for kind in ResourceType::ALL {
            let st = &self.types[kind.index()];
            if !st.subscribed {
                continue;
            }
            if kind == ResourceType::Listener && !self.clusters_ready(&s) {
                return;
            }
            let desired = self.desired(kind, &s);
            let st = &self.types[kind.index()];
            let has = |v: &str, n: &[String]| {
                desired.version == v && (kind != ResourceType::Endpoint || desired.names == n)
            };
            if st.acked.as_ref().is_some_and(|a| has(&a.version, &a.names))
                || st.nacked.as_ref().is_some_and(|(v, n)| has(v, n))
            {
                continue;
            }
            self.next_nonce += 1;
            let nonce = self.next_nonce;
            step.events.push(Event::Sent {
                kind,
                version: desired.version.clone(),
            });
            step.responses.push(DiscoveryResponse {
                version_info: desired.version.clone(),
                resources: desired.resources,
                type_url: kind.type_url().to_owned(),
                nonce: nonce.to_string(),
                ..DiscoveryResponse::default()
            });
            let st = &mut self.types[kind.index()];
            st.last_nonce = nonce;
            st.in_flight = Some(Sent {
                version: desired.version,
                names: desired.names,
                // Only listeners need it: which clusters the client's listeners use.
                snapshot: (kind == ResourceType::Listener).then(|| s.clone()),
            });
            return;
        }
    }

    /// Listeners may change once the client has the clusters they will use: it ACKed the
    /// cluster set it is to have now, and the endpoints of every cluster of the snapshot
    /// (when it subscribes to endpoints at all).
    fn clusters_ready(&self, s: &Arc<Snapshot>) -> bool {
        let cds = &self.types[ResourceType::Cluster.index()];
        if cds.subscribed {
            let want = self.desired_cluster_version(s);
            if cds.acked.as_ref().is_none_or(|a| a.version != want) {
                return false;
            }
        }
        let eds = &self.types[ResourceType::Endpoint.index()];
        if eds.subscribed {
            let Some(acked) = &eds.acked else {
                return false;
            };
            return s
                .resources(ResourceType::Cluster)
                .items()
                .keys()
                .all(|c| acked.names.binary_search(c).is_ok());
        }
        true
    }

    /// The snapshots of listeners the client has or is applying, other than `s`: their
    /// clusters must stay until listeners without them are ACKed.
    fn held_listener_snapshots(&self, s: &Arc<Snapshot>) -> Vec<Arc<Snapshot>> {
        let lds = &self.types[ResourceType::Listener.index()];
        [&lds.acked, &lds.in_flight]
            .into_iter()
            .flatten()
            .filter(|sent| sent.version != s.version(ResourceType::Listener))
            .filter_map(|sent| sent.snapshot.clone())
            .collect()
    }

    /// The clusters the client is to have now: the snapshot's, plus those that listeners it
    /// still has use (removed only once it ACKs listeners without them).
    fn desired_clusters(&self, s: &Arc<Snapshot>) -> BTreeMap<String, Any> {
        let mut set = s.resources(ResourceType::Cluster).items().clone();
        for held in self.held_listener_snapshots(s) {
            for (name, c) in held.resources(ResourceType::Cluster).items() {
                set.entry(name.clone()).or_insert_with(|| c.clone());
            }
        }
        set
    }

    fn desired_cluster_version(&self, s: &Arc<Snapshot>) -> String {
        let held = self.held_listener_snapshots(s);
        let own = s.resources(ResourceType::Cluster);
        let extra = held.iter().any(|h| {
            h.resources(ResourceType::Cluster)
                .items()
                .keys()
                .any(|n| own.get(n).is_none())
        });
        if extra {
            version_of(self.desired_clusters(s).iter())
        } else {
            own.version().to_owned()
        }
    }

    fn desired(&self, kind: ResourceType, s: &Arc<Snapshot>) -> Desired {
        match kind {
            ResourceType::Cluster => {
                let set = self.desired_clusters(s);
                Desired {
                    version: self.desired_cluster_version(s),
                    names: Vec::new(),
                    resources: set.into_values().collect(),
                }
            }
            ResourceType::Endpoint => {
                // The version of what this client gets (the requested names the snapshot
                // has), so a change to endpoints it does not ask for sends it nothing.
                let all = s.resources(kind);
                let names = self.types[kind.index()].names.clone();
                let subset: Vec<(&String, &Any)> = names
                    .iter()
                    .filter_map(|n| all.items().get_key_value(n))
                    .collect();
                let version = if subset.len() == all.len() {
                    all.version().to_owned()
                } else {
                    version_of(subset.iter().copied())
                };
                Desired {
                    version,
                    resources: subset.into_iter().map(|(_, a)| a.clone()).collect(),
                    names,
                }
            }
            ResourceType::Listener => {
                let all = s.resources(kind);
                Desired {
                    version: all.version().to_owned(),
                    names: Vec::new(),
                    resources: all.items().values().cloned().collect(),
                }
            }
        }
    }
}
