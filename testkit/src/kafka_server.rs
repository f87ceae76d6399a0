//! A scripted Kafka-protocol test server for tests (`kpool_testkit::kafka_server`).
//!
//! It listens on a loopback port, in plaintext or over TLS ([`TestKafka::start_tls`], with
//! or without client certificates), decodes real requests (header and body, with
//! kafka-protocol's decoders) and answers ApiVersions, Metadata, DescribeConfigs,
//! DescribeCluster and ListPartitionReassignments (the replicas a reassignment is adding,
//! [`ClusterState::reassigning`]) with kafka-protocol's encoders, from a [`ClusterState`]
//! that tests can replace at any time ([`TestKafka::set_state`]). [`Behaviour`] makes it
//! misbehave: garbage bytes, silence, closing, truncated or corrupt frames, Kafka error
//! codes, delays.
//!
//! What it emulates, to the extent the client can observe it:
//! - ApiVersions at a version it does not support is answered in v0 with
//!   UNSUPPORTED_VERSION and its own ApiVersions range (as Kafka does); any other request
//!   at a version it did not advertise closes the connection (as Kafka does).
//! - Partitions without a leader carry LEADER_NOT_AVAILABLE, as in Kafka's Metadata.
//! - DescribeConfigs in [`ConfigStyle::Kafka`] reports every topic's effective
//!   `min.insync.replicas` with its source (1 topic, 4 static broker config, 5 Kafka
//!   default) and answers a broker resource only for its own id ([`ClusterState::self_id`]),
//!   INVALID_REQUEST for other ids; in [`ConfigStyle::Tansu`] it reports only configs set
//!   explicitly on a topic (labelled source 5, as tansu does) and empty broker configs;
//!   like tansu 0.6 it also closes the connection on a DescribeConfigs that names
//!   configuration keys ([`ClusterState::rejects_config_keys`]). Configs set with
//!   IncrementalAlterConfigs are reported too (source 1 on topics, 2 on brokers).
//!
//! The admin requests of `racks apply` are answered with a KRaft controller's semantics:
//! - AlterPartitionReassignments: the replica list becomes the target followed by the
//!   replicas being removed, the added ones listed as adding (outside the ISR); after the
//!   catch-up ([`ClusterState::catch_up`]: a number of Metadata requests, or a delay) the
//!   added replicas on live brokers join the ISR, the removed ones leave, and the
//!   reassignment completes: the leader stays if it is in the target, else the first target
//!   replica in the ISR leads. An added replica on a broker that is down never catches up.
//!   A target of another size is refused (INVALID_REPLICATION_FACTOR) when the request says
//!   the replication factor may not change, unregistered brokers with
//!   INVALID_REPLICA_ASSIGNMENT. `Replicas: null` cancels: the original replicas come back
//!   (NO_REASSIGNMENT_IN_PROGRESS when none is in flight). A new target for a partition in
//!   flight replaces the old one, as KRaft does.
//! - ListPartitionReassignments reports every reassignment in flight (replicas, adding,
//!   removing), those of [`ClusterState::reassigning`] too, which never complete by
//!   themselves (someone else's move, stuck).
//! - IncrementalAlterConfigs records SET, DELETE, APPEND and SUBTRACT (list configs,
//!   comma-separated, APPEND keeping entries once) on brokers and topics
//!   ([`ClusterState::configs`], [`ClusterState::broker_config`],
//!   [`ClusterState::topic_config`]); every change is also kept in [`Seen`].
//! - ElectLeaders (PREFERRED): the first replica leads when it is live and in the ISR
//!   (ELECTION_NOT_NEEDED when it already does, PREFERRED_LEADER_NOT_AVAILABLE otherwise).
//! - Scripted failures: NOT_CONTROLLER on the next N requests of these four APIs
//!   ([`ClusterState::not_controller_for`]); a broker dying mid-move
//!   ([`ClusterState::broker_down`]: its replicas leave the ISR) and coming back
//!   ([`ClusterState::broker_up`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, ApiVersionsRequest,
    ApiVersionsResponse, BrokerId, DescribeClusterRequest, DescribeClusterResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, ElectLeadersRequest, ElectLeadersResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, MetadataRequest,
    MetadataResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes, decode_request_header_from_buffer};
use kpool_agent::snapshot::{Broker, Partition, Snapshot, Topic};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::{JoinHandle, JoinSet};

pub use kafka_protocol::messages::ApiKey;

/// Kafka error codes used by the server.
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const LEADER_NOT_AVAILABLE: i16 = 5;
pub const UNSUPPORTED_VERSION: i16 = 35;
pub const INVALID_REPLICATION_FACTOR: i16 = 38;
pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
pub const INVALID_CONFIG: i16 = 40;
pub const NOT_CONTROLLER: i16 = 41;
pub const INVALID_REQUEST: i16 = 42;
pub const PREFERRED_LEADER_NOT_AVAILABLE: i16 = 80;
pub const ELECTION_NOT_NEEDED: i16 = 84;
pub const NO_REASSIGNMENT_IN_PROGRESS: i16 = 85;

/// DescribeConfigs resource types and config sources.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DYNAMIC_BROKER: i8 = 2;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;
const MIN_ISR: &str = "min.insync.replicas";

/// How DescribeConfigs answers (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigStyle {
    /// Like Apache Kafka: effective values with their source.
    Kafka,
    /// Like tansu: only explicitly set topic configs, empty broker configs.
    Tansu,
}

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerSpec {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

/// A partition as Metadata reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSpec {
    pub index: i32,
    /// -1 for no leader.
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline_replicas: Vec<i32>,
    /// Replicas an ongoing reassignment is adding (listed among `replicas` too, as Kafka
    /// does); a non-empty list makes the partition show in ListPartitionReassignments.
    pub adding_replicas: Vec<i32>,
    /// Replicas an ongoing reassignment is removing (listed last among `replicas`).
    pub removing_replicas: Vec<i32>,
    /// When the reassignment's added replicas catch up: `Some` for reassignments submitted
    /// with AlterPartitionReassignments, `None` for those scripted with
    /// [`ClusterState::reassigning`] (they never complete by themselves).
    pub catch_up: Option<CatchUpClock>,
}

impl PartitionSpec {
    /// Whether a reassignment is in flight.
    pub fn reassigning(&self) -> bool {
        !self.adding_replicas.is_empty() || !self.removing_replicas.is_empty()
    }

    /// The replicas a reassignment in flight moves to (the replicas when none is).
    pub fn target(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.removing_replicas.contains(r))
            .collect()
    }

    /// The replicas before the reassignment in flight (the replicas when none is).
    pub fn original(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.adding_replicas.contains(r))
            .collect()
    }
}

/// How long the replicas a reassignment adds take to catch up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    /// After this many Metadata requests (every snapshot starts with one), counted from
    /// the submission: deterministic, for tests that step through a move.
    Polls(u32),
    /// After this much time.
    After(Duration),
}

/// A reassignment's progress towards catching up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatchUpClock {
    /// Metadata requests still to come (with [`CatchUp::Polls`]).
    pub polls_left: u32,
    /// When it is due (with [`CatchUp::After`]).
    pub due: Option<Instant>,
}

/// A config set with IncrementalAlterConfigs, as [`Seen`] records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenConfigChange {
    /// `broker 3` or `topic orders`.
    pub resource: String,
    pub name: String,
    /// 0 SET, 1 DELETE, 2 APPEND, 3 SUBTRACT.
    pub op: i8,
    pub value: Option<String>,
}

/// A topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub internal: bool,
    /// `min.insync.replicas` set on the topic.
    pub min_isr: Option<i32>,
    /// A topic-level error code in Metadata (0 = none).
    pub error_code: i16,
    pub partitions: Vec<PartitionSpec>,
}

/// The cluster the server pretends to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterState {
    pub cluster_id: Option<String>,
    /// -1 for unknown.
    pub controller_id: i32,
    /// The live (registered) brokers.
    pub brokers: Vec<BrokerSpec>,
    pub topics: Vec<TopicSpec>,
    /// The brokers' `min.insync.replicas` (static config); `None` = not set (Kafka's 1).
    pub broker_min_isr: Option<i32>,
    pub config_style: ConfigStyle,
    /// The broker id this server is (answers its broker config resource); `None` answers
    /// for any id.
    pub self_id: Option<i32>,
    /// Advertised version ranges by API key; requests for APIs not listed are refused.
    pub versions: BTreeMap<i16, (i16, i16)>,
    /// Close the connection on a DescribeConfigs naming configuration keys (tansu 0.6
    /// cannot parse them).
    pub rejects_config_keys: bool,
    /// How long reassignments take to catch up (default: 2 Metadata requests).
    pub catch_up: CatchUp,
    /// The next this many requests of AlterPartitionReassignments,
    /// ListPartitionReassignments, IncrementalAlterConfigs and ElectLeaders answer
    /// NOT_CONTROLLER (and change nothing).
    pub not_controller: usize,
    /// Configs set with IncrementalAlterConfigs: by (resource type 2 topic / 4 broker,
    /// resource name), name → value.
    pub configs: BTreeMap<(i8, String), BTreeMap<String, String>>,
    /// Brokers taken down with [`ClusterState::broker_down`], for
    /// [`ClusterState::broker_up`].
    pub down_brokers: Vec<BrokerSpec>,
    /// The most reassignments in flight that added a replica to or removed one from each
    /// broker at once, as seen after every AlterPartitionReassignments: what a limit on
    /// moves per broker must keep down.
    pub peak_in_flight: BTreeMap<i32, usize>,
}

fn full_versions() -> BTreeMap<i16, (i16, i16)> {
    [
        ApiKey::ApiVersions,
        ApiKey::Metadata,
        ApiKey::DescribeConfigs,
        ApiKey::DescribeCluster,
        ApiKey::ListPartitionReassignments,
        ApiKey::AlterPartitionReassignments,
        ApiKey::IncrementalAlterConfigs,
        ApiKey::ElectLeaders,
    ]
    .into_iter()
    .map(|k| {
        let r = k.valid_versions();
        (k as i16, (r.min, r.max))
    })
    .collect()
}

impl Default for ClusterState {
    fn default() -> Self {
        Self::empty()
    }
}

/// The example policy's six racks, 2 Kubernetes clusters x 3 zones, cluster by cluster:
/// with [`ClusterState::healthy`], broker `i` is in `RACKS[i % 6]`.
pub const RACKS: [&str; 6] = [
    "k8s-a-eu-west-1a",
    "k8s-a-eu-west-1b",
    "k8s-a-eu-west-1c",
    "k8s-b-eu-west-1a",
    "k8s-b-eu-west-1b",
    "k8s-b-eu-west-1c",
];

/// An address nothing listens on (a port free right now on 127.0.0.1), for
/// [`ClusterState::advertise_unreachable`].
pub fn closed_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], crate::tansu::free_port()))
}

impl ClusterState {
    /// No brokers, no topics, every API at kafka-protocol's full version range, Kafka
    /// config style, broker default `min.insync.replicas` unset.
    pub fn empty() -> Self {
        Self {
            cluster_id: Some("kpool-test-cluster".to_owned()),
            controller_id: -1,
            brokers: Vec::new(),
            topics: Vec::new(),
            broker_min_isr: None,
            config_style: ConfigStyle::Kafka,
            self_id: None,
            versions: full_versions(),
            rejects_config_keys: false,
            catch_up: CatchUp::Polls(2),
            not_controller: 0,
            configs: BTreeMap::new(),
            down_brokers: Vec::new(),
            peak_in_flight: BTreeMap::new(),
        }
    }

    /// The rack planner's skewed cluster: 12 brokers over [`RACKS`] (two per cell);
    /// `orders` (8 partitions, RF 6) with three offenders: orders-1 has two replicas in
    /// k8s-a/1a and none in k8s-b/1a (one move), orders-2 is all in k8s-a and orders-4
    /// all in k8s-b (three moves each). Reassignments catch up after two polls.
    pub fn skewed() -> Self {
        Self::healthy(12, &RACKS, &[("orders", 8, 6)])
            .assign("orders", 1, &[0, 6, 1, 2, 4, 5])
            .assign("orders", 2, &[2, 8, 1, 7, 0, 6])
            .assign("orders", 4, &[4, 10, 5, 11, 3, 9])
            .catch_up(CatchUp::Polls(2))
    }

    /// A healthy cluster: brokers `0..brokers` at `broker-<id>.kafka.test:9092`, broker `i`
    /// in rack `racks[i % racks.len()]` (no racks if empty), broker 0 the controller and
    /// this server's own id. Each topic `(name, partitions, rf)` gets partition `p` on
    /// brokers `p, p+1, .. p+rf-1` (mod brokers), leader first, ISR = replicas, so
    /// consecutive racks spread evenly. Broker default `min.insync.replicas` is 2; no
    /// topic sets its own.
    pub fn healthy(brokers: usize, racks: &[&str], topics: &[(&str, i32, usize)]) -> Self {
        let n = i32::try_from(brokers).expect("broker count");
        let mut state = Self::empty();
        state.brokers = (0..n)
            .map(|id| BrokerSpec {
                id,
                host: format!("broker-{id}.kafka.test"),
                port: 9092,
                rack: (!racks.is_empty()).then(|| racks[id as usize % racks.len()].to_owned()),
            })
            .collect();
        state.controller_id = if n > 0 { 0 } else { -1 };
        state.self_id = (n > 0).then_some(0);
        state.broker_min_isr = Some(2);
        for &(name, partitions, rf) in topics {
            state = state.add_topic(name, partitions, rf);
        }
        state
    }

    /// Add a topic laid out as in [`ClusterState::healthy`] over the current brokers.
    pub fn add_topic(mut self, name: &str, partitions: i32, rf: usize) -> Self {
        let ids: Vec<i32> = self.brokers.iter().map(|b| b.id).collect();
        assert!(
            rf <= ids.len(),
            "topic {name}: replication factor {rf} exceeds {} brokers",
            ids.len()
        );
        let partitions = (0..partitions)
            .map(|p| {
                let replicas: Vec<i32> =
                    (0..rf).map(|i| ids[(p as usize + i) % ids.len()]).collect();
                PartitionSpec {
                    index: p,
                    leader: replicas[0],
                    isr: replicas.clone(),
                    replicas,
                    offline_replicas: Vec::new(),
                    adding_replicas: Vec::new(),
                    removing_replicas: Vec::new(),
                    catch_up: None,
                }
            })
            .collect();
        self.topics.push(TopicSpec {
            name: name.to_owned(),
            internal: false,
            min_isr: None,
            error_code: 0,
            partitions,
        });
        self
    }

    /// Add an internal topic (like `__consumer_offsets`).
    pub fn add_internal_topic(self, name: &str, partitions: i32, rf: usize) -> Self {
        let mut s = self.add_topic(name, partitions, rf);
        if let Some(t) = s.topics.last_mut() {
            t.internal = true;
        }
        s
    }

    fn topic_mut(&mut self, topic: &str) -> &mut TopicSpec {
        self.topics
            .iter_mut()
            .find(|t| t.name == topic)
            .unwrap_or_else(|| panic!("no topic {topic} in the test cluster"))
    }

    fn partition_mut_opt(&mut self, topic: &str, partition: i32) -> Option<&mut PartitionSpec> {
        self.topics
            .iter_mut()
            .find(|t| t.name == topic)?
            .partitions
            .iter_mut()
            .find(|p| p.index == partition)
    }

    fn partition_mut(&mut self, topic: &str, partition: i32) -> &mut PartitionSpec {
        self.topic_mut(topic)
            .partitions
            .iter_mut()
            .find(|p| p.index == partition)
            .unwrap_or_else(|| panic!("no partition {topic}-{partition} in the test cluster"))
    }

    /// Take broker `id` down as KRaft reports it: it leaves the broker list and every ISR
    /// (except that an ISR never becomes empty: its last member stays and the partition
    /// loses its leader), its replicas are listed as offline, and partitions it led move to
    /// the first remaining ISR member.
    pub fn broker_down(mut self, id: i32) -> Self {
        let (down, up): (Vec<BrokerSpec>, Vec<BrokerSpec>) = std::mem::take(&mut self.brokers)
            .into_iter()
            .partition(|b| b.id == id);
        self.brokers = up;
        self.down_brokers.extend(down);
        if self.controller_id == id {
            self.controller_id = self.brokers.first().map_or(-1, |b| b.id);
        }
        for t in &mut self.topics {
            for p in &mut t.partitions {
                if !p.replicas.contains(&id) {
                    continue;
                }
                if !p.offline_replicas.contains(&id) {
                    p.offline_replicas.push(id);
                }
                if p.isr.len() > 1 || !p.isr.contains(&id) {
                    p.isr.retain(|&r| r != id);
                }
                if p.leader == id {
                    p.leader = p.isr.iter().copied().find(|&r| r != id).unwrap_or(-1);
                }
            }
        }
        self
    }

    /// Bring broker `id` back after [`ClusterState::broker_down`]: registered again, its
    /// replicas no longer offline and back in their ISR (except replicas a reassignment is
    /// still adding: they catch up as usual), leaderless partitions led by their first
    /// live ISR member.
    pub fn broker_up(mut self, id: i32) -> Self {
        let Some(i) = self.down_brokers.iter().position(|b| b.id == id) else {
            panic!("broker {id} was not taken down with broker_down");
        };
        let spec = self.down_brokers.remove(i);
        self.brokers.push(spec);
        self.brokers.sort_by_key(|b| b.id);
        if self.controller_id < 0 {
            self.controller_id = id;
        }
        for t in &mut self.topics {
            for p in &mut t.partitions {
                if !p.replicas.contains(&id) {
                    continue;
                }
                p.offline_replicas.retain(|&r| r != id);
                if !p.isr.contains(&id) && !p.adding_replicas.contains(&id) {
                    p.isr.push(id);
                }
                if p.leader < 0 {
                    p.leader = p.isr.first().copied().unwrap_or(-1);
                }
            }
        }
        self
    }

    /// How long reassignments take to catch up.
    pub fn catch_up(mut self, catch_up: CatchUp) -> Self {
        self.catch_up = catch_up;
        self
    }

    /// Answer NOT_CONTROLLER to the next `n` admin requests (see
    /// [`ClusterState::not_controller`]).
    pub fn not_controller_for(mut self, n: usize) -> Self {
        self.not_controller = n;
        self
    }

    /// Advertise every broker at `addr` and answer broker config resources for any id, so
    /// a client reaching brokers by their advertised address reaches this server.
    pub fn advertise_all(mut self, addr: SocketAddr) -> Self {
        for b in &mut self.brokers {
            b.host = addr.ip().to_string();
            b.port = i32::from(addr.port());
        }
        self.self_id = None;
        self
    }

    /// Advertise every broker at `addr` where nothing listens (connections are refused at
    /// once, unlike a name that does not resolve, which can wait on a DNS timeout).
    pub fn advertise_unreachable(mut self, addr: SocketAddr) -> Self {
        for b in &mut self.brokers {
            b.host = addr.ip().to_string();
            b.port = i32::from(addr.port());
        }
        self
    }

    /// A config set on broker `id` with IncrementalAlterConfigs.
    pub fn broker_config(&self, id: i32, name: &str) -> Option<&str> {
        self.configs
            .get(&(RESOURCE_BROKER, id.to_string()))?
            .get(name)
            .map(String::as_str)
    }

    /// A config set on `topic` with IncrementalAlterConfigs.
    pub fn topic_config(&self, topic: &str, name: &str) -> Option<&str> {
        self.configs
            .get(&(RESOURCE_TOPIC, topic.to_owned()))?
            .get(name)
            .map(String::as_str)
    }

    /// `topic-partition`, if it exists.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionSpec> {
        self.topics
            .iter()
            .find(|t| t.name == topic)?
            .partitions
            .iter()
            .find(|p| p.index == partition)
    }

    /// Set the ISR of `topic-partition`; the leader moves to the first ISR member if it is
    /// not in the new ISR (or to -1 for an empty ISR).
    pub fn set_isr(mut self, topic: &str, partition: i32, isr: &[i32]) -> Self {
        let p = self.partition_mut(topic, partition);
        p.isr = isr.to_vec();
        if !p.isr.contains(&p.leader) {
            p.leader = p.isr.first().copied().unwrap_or(-1);
        }
        self
    }

    /// Keep only the first `keep` ISR members of `topic-partition` (e.g. below min ISR).
    pub fn shrink_isr(self, topic: &str, partition: i32, keep: usize) -> Self {
        let mut s = self;
        let isr: Vec<i32> = s
            .partition_mut(topic, partition)
            .isr
            .iter()
            .copied()
            .take(keep)
            .collect();
        s = s.set_isr(topic, partition, &isr);
        s
    }

    /// Make `topic-partition` offline: no leader (Metadata then reports
    /// LEADER_NOT_AVAILABLE for it). ISR and replicas stay as they are.
    pub fn offline(mut self, topic: &str, partition: i32) -> Self {
        self.partition_mut(topic, partition).leader = -1;
        self
    }

    /// Place `topic-partition` on `replicas` (leader first, ISR = replicas).
    pub fn assign(mut self, topic: &str, partition: i32, replicas: &[i32]) -> Self {
        let p = self.partition_mut(topic, partition);
        p.replicas = replicas.to_vec();
        p.isr = replicas.to_vec();
        p.leader = replicas.first().copied().unwrap_or(-1);
        p.offline_replicas.clear();
        p.adding_replicas.clear();
        p.removing_replicas.clear();
        p.catch_up = None;
        self
    }

    /// Start a reassignment of `topic-partition` that adds `adding` (appended to the
    /// replicas, not in the ISR yet), as Kafka shows one mid-way.
    pub fn reassigning(mut self, topic: &str, partition: i32, adding: &[i32]) -> Self {
        let p = self.partition_mut(topic, partition);
        for id in adding {
            if !p.replicas.contains(id) {
                p.replicas.push(*id);
            }
        }
        p.adding_replicas = adding.to_vec();
        self
    }

    /// Set `min.insync.replicas` on a topic.
    pub fn topic_min_isr(mut self, topic: &str, min_isr: i32) -> Self {
        self.topic_mut(topic).min_isr = Some(min_isr);
        self
    }

    /// Set (or unset) the brokers' default `min.insync.replicas`.
    pub fn broker_default_min_isr(mut self, min_isr: Option<i32>) -> Self {
        self.broker_min_isr = min_isr;
        self
    }

    /// Give a topic a topic-level Metadata error code.
    pub fn topic_error(mut self, topic: &str, code: i16) -> Self {
        self.topic_mut(topic).error_code = code;
        self
    }

    /// Reassign racks: broker at position `i` gets `racks[i % racks.len()]` (skew them by
    /// repeating a rack).
    pub fn with_racks(mut self, racks: &[&str]) -> Self {
        for (i, b) in self.brokers.iter_mut().enumerate() {
            b.rack = (!racks.is_empty()).then(|| racks[i % racks.len()].to_owned());
        }
        self
    }

    /// Set one broker's rack.
    pub fn rack(mut self, id: i32, rack: Option<&str>) -> Self {
        for b in self.brokers.iter_mut().filter(|b| b.id == id) {
            b.rack = rack.map(str::to_owned);
        }
        self
    }

    /// Renumber brokers to start at `base` (replicas, ISRs, leaders, controller, self id
    /// follow).
    pub fn with_broker_id_base(mut self, base: i32) -> Self {
        let shift = |id: i32| if id >= 0 { id + base } else { id };
        for b in &mut self.brokers {
            b.id = shift(b.id);
            b.host = format!("broker-{}.kafka.test", b.id);
        }
        for t in &mut self.topics {
            for p in &mut t.partitions {
                p.leader = shift(p.leader);
                for v in [&mut p.replicas, &mut p.isr, &mut p.offline_replicas] {
                    v.iter_mut().for_each(|r| *r = shift(*r));
                }
            }
        }
        self.controller_id = shift(self.controller_id);
        self.self_id = self.self_id.map(shift);
        self
    }

    /// Advertise broker `id` at `addr` (e.g. the server's own address, so the client can
    /// recognise which broker it is connected to).
    pub fn advertise(mut self, id: i32, addr: SocketAddr) -> Self {
        for b in self.brokers.iter_mut().filter(|b| b.id == id) {
            b.host = addr.ip().to_string();
            b.port = i32::from(addr.port());
        }
        self
    }

    /// Answer DescribeConfigs the way tansu 0.6 does (including closing the connection
    /// when configuration keys are named).
    pub fn tansu_style(mut self) -> Self {
        self.config_style = ConfigStyle::Tansu;
        self.rejects_config_keys = true;
        self
    }

    /// Advertise `api` with versions `min..=max`.
    pub fn api_versions(mut self, api: ApiKey, min: i16, max: i16) -> Self {
        self.versions.insert(api as i16, (min, max));
        self
    }

    /// Do not advertise (nor answer) `api`.
    pub fn without_api(mut self, api: ApiKey) -> Self {
        self.versions.remove(&(api as i16));
        self
    }

    /// The snapshot a correct client takes of this state (with [`Behaviour::Normal`], and
    /// Metadata at v2 or later so the cluster id is reported).
    pub fn expected_snapshot(&self) -> Snapshot {
        let mut brokers: Vec<Broker> = self
            .brokers
            .iter()
            .map(|b| Broker {
                id: b.id,
                host: b.host.clone(),
                port: b.port,
                rack: b.rack.clone(),
            })
            .collect();
        brokers.sort_by_key(|b| b.id);
        let mut topics: Vec<Topic> = self
            .topics
            .iter()
            .filter(|t| t.error_code == 0)
            .map(|t| {
                let mut partitions: Vec<Partition> = t
                    .partitions
                    .iter()
                    .map(|p| Partition {
                        index: p.index,
                        leader: p.leader,
                        replicas: p.replicas.clone(),
                        isr: p.isr.clone(),
                        offline_replicas: p.offline_replicas.clone(),
                        adding_replicas: if self
                            .versions
                            .contains_key(&(ApiKey::ListPartitionReassignments as i16))
                        {
                            p.adding_replicas.clone()
                        } else {
                            Vec::new()
                        },
                    })
                    .collect();
                partitions.sort_by_key(|p| p.index);
                let min_isr = match (self.config_style, t.min_isr, self.broker_min_isr) {
                    (_, Some(own), _) => Some(own),
                    (ConfigStyle::Tansu, None, _) => None,
                    // Inherited from the static broker config: not the topic's own.
                    (ConfigStyle::Kafka, None, Some(_)) => None,
                    // Kafka's built-in default, reported with source DEFAULT_CONFIG, which
                    // the client reads as the topic's value (same effective min ISR).
                    (ConfigStyle::Kafka, None, None) => Some(1),
                };
                Topic {
                    name: t.name.clone(),
                    internal: t.internal,
                    min_isr,
                    partitions,
                }
            })
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        let self_registered = match self.self_id {
            None => !self.brokers.is_empty(),
            Some(id) => self.brokers.iter().any(|b| b.id == id),
        };
        let default_min_isr = match self.config_style {
            ConfigStyle::Tansu => None,
            ConfigStyle::Kafka if self_registered => Some(self.broker_min_isr.unwrap_or(1)),
            // Nobody answers the broker resource: the client falls back to the value
            // topics inherit, if any topic inherits one.
            ConfigStyle::Kafka => self
                .broker_min_isr
                .filter(|_| topics.iter().any(|t| t.min_isr.is_none())),
        };
        Snapshot {
            cluster_id: self.cluster_id.clone(),
            controller_id: (self.controller_id >= 0).then_some(self.controller_id),
            brokers,
            topics,
            default_min_isr,
        }
    }
}

/// One way to misbehave when answering a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Read the request and never answer (the connection stays open).
    Silent,
    /// Close the connection instead of answering.
    Close,
    /// Write these raw bytes instead of a response (no framing).
    Garbage(Vec<u8>),
    /// A well-framed response with the right correlation id, and this body.
    CorruptBody(Vec<u8>),
    /// Announce the full response, send half of it, close.
    Truncated,
    /// Answer with this Kafka error code (ApiVersions, DescribeCluster, Metadata v13+,
    /// ListPartitionReassignments, AlterPartitionReassignments and ElectLeaders v1+: the
    /// top-level code; Metadata before v13: every topic; DescribeConfigs and
    /// IncrementalAlterConfigs: every resource; ElectLeaders v0: every partition). Admin
    /// requests answered with an error change nothing.
    ErrorCode(i16),
    /// Answer correctly after this delay.
    Delay(Duration),
}

/// How the server behaves; can be changed while it runs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Behaviour {
    /// Answer every request from the cluster state.
    #[default]
    Normal,
    /// Close every connection right after accepting it.
    CloseOnAccept,
    /// Apply `fault` to requests for `api` (every request when `None`).
    Fault { api: Option<ApiKey>, fault: Fault },
}

impl Behaviour {
    /// `fault` on every request.
    pub fn always(fault: Fault) -> Self {
        Behaviour::Fault { api: None, fault }
    }

    /// `fault` on requests for `api` only.
    pub fn on(api: ApiKey, fault: Fault) -> Self {
        Behaviour::Fault {
            api: Some(api),
            fault,
        }
    }

    /// Answer everything with an HTTP error (a non-Kafka peer): its first four bytes make
    /// a frame length of about 1.2 GB.
    pub fn garbage() -> Self {
        Self::always(Fault::Garbage(
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n".to_vec(),
        ))
    }

    /// Accept, read, never answer.
    pub fn silent() -> Self {
        Self::always(Fault::Silent)
    }

    /// Answer `api` with error `code`.
    pub fn error_on(api: ApiKey, code: i16) -> Self {
        Self::on(api, Fault::ErrorCode(code))
    }
}

/// A request the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub api: ApiKey,
    pub version: i16,
    pub client_id: Option<String>,
    /// DescribeConfigs and IncrementalAlterConfigs: the `(resource type, name)` pairs.
    pub config_resources: Vec<(i8, String)>,
    /// DescribeConfigs: whether any resource named configuration keys.
    pub named_config_keys: bool,
    /// AlterPartitionReassignments: `(topic, partition, target or None to cancel)`.
    pub reassignments: Vec<(String, i32, Option<Vec<i32>>)>,
    /// IncrementalAlterConfigs: every change asked.
    pub config_changes: Vec<SeenConfigChange>,
    /// ElectLeaders: the partitions asked (empty for all).
    pub elections: Vec<(String, i32)>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<ClusterState>,
    behaviour: Mutex<Behaviour>,
    /// How many more requests the current faulty behaviour applies to (`None`: all).
    budget: Mutex<Option<usize>>,
    seen: Mutex<Vec<Seen>>,
    accepted: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking connection task must not wedge the test that inspects the state.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The running server. Dropping it stops it.
pub struct TestKafka {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for TestKafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestKafka")
            .field("addr", &self.addr)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl TestKafka {
    /// Start on a free loopback port.
    pub async fn start(state: ClusterState) -> Self {
        Self::launch(loopback_any(), state, None).await
    }

    /// Start on a free loopback port, speaking TLS with `acceptor`.
    pub async fn start_tls(state: ClusterState, acceptor: tokio_rustls::TlsAcceptor) -> Self {
        Self::launch(loopback_any(), state, Some(acceptor)).await
    }

    async fn launch(
        addr: SocketAddr,
        state: ClusterState,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            ..Shared::default()
        });
        let mut server = Self {
            addr,
            shared,
            tls,
            task: None,
        };
        server.listen().await;
        server
    }

    async fn listen(&mut self) {
        let socket = TcpSocket::new_v4().expect("socket");
        // Rebinding the same port after a stop must not wait for TIME_WAIT.
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket.bind(self.addr).expect("bind loopback");
        let listener = socket.listen(64).expect("listen");
        self.addr = listener.local_addr().expect("local addr");
        let shared = self.shared.clone();
        let tls = self.tls.clone();
        self.task = Some(tokio::spawn(accept_loop(listener, shared, tls)));
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address as a bootstrap entry (`127.0.0.1:PORT`).
    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// The agent's Kafka client bootstrapping from this server, 2 s per network step.
    pub fn client(&self) -> kpool_agent::kafka::KafkaClient {
        kpool_agent::kafka::KafkaClient::new(kpool_agent::kafka::KafkaConfig {
            bootstrap: vec![self.bootstrap()],
            timeout: Duration::from_secs(2),
            ..kpool_agent::kafka::KafkaConfig::default()
        })
        .expect("valid config")
    }

    /// Replace the cluster state; the next request sees it.
    pub fn set_state(&self, state: ClusterState) {
        *lock(&self.shared.state) = state;
    }

    /// Change the cluster state in place.
    pub fn update_state(&self, f: impl FnOnce(ClusterState) -> ClusterState) {
        let mut guard = lock(&self.shared.state);
        let current = std::mem::take(&mut *guard);
        *guard = f(current);
    }

    /// The current cluster state.
    pub fn state(&self) -> ClusterState {
        lock(&self.shared.state).clone()
    }

    /// Change how the server behaves; applies to the next request (and next accept).
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *lock(&self.shared.budget) = None;
        *lock(&self.shared.behaviour) = behaviour;
    }

    /// Misbehave for the next `times` requests the fault applies to, then go back to
    /// [`Behaviour::Normal`].
    pub fn set_behaviour_times(&self, behaviour: Behaviour, times: usize) {
        *lock(&self.shared.budget) = Some(times);
        *lock(&self.shared.behaviour) = behaviour;
    }

    /// The requests received so far, in order.
    pub fn requests(&self) -> Vec<Seen> {
        lock(&self.shared.seen).clone()
    }

    /// Forget the requests received so far.
    pub fn clear_requests(&self) {
        lock(&self.shared.seen).clear();
    }

    /// How many connections were accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Stop listening and drop every open connection (the port is released).
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Stop, then listen again on the same port with the same state and behaviour (like
    /// a broker restart: clients see their connections drop).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.listen().await;
    }
}

impl Drop for TestKafka {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn loopback_any() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    // Connection tasks live in this set: aborting the accept loop drops the set, which
    // aborts them and closes their sockets.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((socket, _)) = accepted else { continue };
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                if *lock(&shared.behaviour) == Behaviour::CloseOnAccept {
                    drop(socket);
                    continue;
                }
                let _ = socket.set_nodelay(true);
                let shared = shared.clone();
                let tls = tls.clone();
                connections.spawn(async move {
                    match tls {
                        None => serve(socket, shared).await,
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(socket).await {
                                serve(stream, shared).await;
                            }
                        }
                    }
                });
            }
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Read one size-prefixed frame; `None` on EOF, error or an absurd size.
async fn read_frame<S: AsyncRead + Unpin>(s: &mut S) -> Option<Vec<u8>> {
    let size = s.read_i32().await.ok()?;
    if !(0..=64 * 1024 * 1024).contains(&size) {
        return None;
    }
    let mut buf = vec![0; size as usize];
    s.read_exact(&mut buf).await.ok()?;
    Some(buf)
}

fn frame(header: &ResponseHeader, header_version: i16, body: &[u8]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    header
        .encode(&mut buf, header_version)
        .expect("encode response header");
    buf.put_slice(body);
    let size = i32::try_from(buf.len() - 4).expect("frame size");
    buf[..4].copy_from_slice(&size.to_be_bytes());
    buf.to_vec()
}

fn encode_body<M: Encodable>(m: &M, version: i16) -> Vec<u8> {
    let mut buf = BytesMut::new();
    m.encode(&mut buf, version)
        .unwrap_or_else(|e| panic!("test server cannot encode v{version}: {e:#}"));
    buf.to_vec()
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

/// A decoded request. Every body is decoded with kafka-protocol's decoder, so a request the
/// real broker could not parse is refused here too, even where the answer does not depend
/// on its fields.
#[allow(dead_code)]
enum Request {
    ApiVersions(ApiVersionsRequest),
    Metadata(MetadataRequest),
    DescribeConfigs(DescribeConfigsRequest),
    DescribeCluster(DescribeClusterRequest),
    ListPartitionReassignments(ListPartitionReassignmentsRequest),
    AlterPartitionReassignments(AlterPartitionReassignmentsRequest),
    IncrementalAlterConfigs(IncrementalAlterConfigsRequest),
    ElectLeaders(ElectLeadersRequest),
}

impl Request {
    /// The APIs a KRaft broker forwards to the controller (NOT_CONTROLLER can answer them).
    fn for_controller(&self) -> bool {
        matches!(
            self,
            Request::ListPartitionReassignments(_)
                | Request::AlterPartitionReassignments(_)
                | Request::IncrementalAlterConfigs(_)
                | Request::ElectLeaders(_)
        )
    }
}

fn decode_request(key: ApiKey, v: i16, buf: &mut Bytes) -> Option<Request> {
    Some(match key {
        ApiKey::ApiVersions => Request::ApiVersions(ApiVersionsRequest::decode(buf, v).ok()?),
        ApiKey::Metadata => Request::Metadata(MetadataRequest::decode(buf, v).ok()?),
        ApiKey::DescribeConfigs => {
            Request::DescribeConfigs(DescribeConfigsRequest::decode(buf, v).ok()?)
        }
        ApiKey::DescribeCluster => {
            Request::DescribeCluster(DescribeClusterRequest::decode(buf, v).ok()?)
        }
        ApiKey::ListPartitionReassignments => Request::ListPartitionReassignments(
            ListPartitionReassignmentsRequest::decode(buf, v).ok()?,
        ),
        ApiKey::AlterPartitionReassignments => Request::AlterPartitionReassignments(
            AlterPartitionReassignmentsRequest::decode(buf, v).ok()?,
        ),
        ApiKey::IncrementalAlterConfigs => {
            Request::IncrementalAlterConfigs(IncrementalAlterConfigsRequest::decode(buf, v).ok()?)
        }
        ApiKey::ElectLeaders => Request::ElectLeaders(ElectLeadersRequest::decode(buf, v).ok()?),
        _ => return None,
    })
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, shared: Arc<Shared>) {
    loop {
        let Some(frame_bytes) = read_frame(&mut stream).await else {
            return;
        };
        // decode_request_header_from_buffer peeks at the first 4 bytes unchecked.
        if frame_bytes.len() < 8 {
            return;
        }
        let mut buf = Bytes::from(frame_bytes);
        let Ok(header) = decode_request_header_from_buffer(&mut buf) else {
            return;
        };
        let Some(reply) = handle(&shared, &header, &mut buf).await else {
            return;
        };
        match reply {
            Reply::Bytes(bytes) => {
                if stream.write_all(&bytes).await.is_err() || stream.flush().await.is_err() {
                    return;
                }
            }
            Reply::Partial(bytes) => {
                let _ = stream.write_all(&bytes).await;
                let _ = stream.flush().await;
                let _ = stream.shutdown().await;
                return;
            }
            Reply::Never => std::future::pending::<()>().await,
            Reply::Close => return,
        }
    }
}

enum Reply {
    Bytes(Vec<u8>),
    /// Write, then close.
    Partial(Vec<u8>),
    Never,
    Close,
}

async fn handle(shared: &Shared, header: &RequestHeader, buf: &mut Bytes) -> Option<Reply> {
    let key = ApiKey::try_from(header.request_api_key).ok()?;
    let v = header.request_api_version;
    let (advertised, rejects_config_keys, api_keys) = {
        let state = lock(&shared.state);
        (
            state.versions.get(&(key as i16)).copied(),
            state.rejects_config_keys,
            api_keys(&state),
        )
    };
    let supported = advertised.is_some_and(|(min, max)| (min..=max).contains(&v));

    // ApiVersions at an unsupported version: answer in v0 with the error and our range,
    // before trying to decode a body we may not understand.
    if key == ApiKey::ApiVersions && !supported {
        record(shared, key, v, header, None);
        let resp = ApiVersionsResponse::default()
            .with_error_code(UNSUPPORTED_VERSION)
            .with_api_keys(api_keys);
        let header = ResponseHeader::default().with_correlation_id(header.correlation_id);
        return Some(Reply::Bytes(frame(&header, 0, &encode_body(&resp, 0))));
    }
    if !supported {
        record(shared, key, v, header, None);
        return Some(Reply::Close);
    }
    let request = decode_request(key, v, buf)?;
    record(shared, key, v, header, Some(&request));

    if let Request::DescribeConfigs(r) = &request
        && rejects_config_keys
        && named_keys(r)
    {
        return Some(Reply::Close);
    }

    let fault = {
        let mut behaviour = lock(&shared.behaviour);
        let fault = match &*behaviour {
            Behaviour::Fault { api, fault } if api.is_none_or(|a| a == key) => Some(fault.clone()),
            _ => None,
        };
        if fault.is_some() {
            let mut budget = lock(&shared.budget);
            if let Some(left) = budget.as_mut() {
                *left = left.saturating_sub(1);
                if *left == 0 {
                    *behaviour = Behaviour::Normal;
                    *budget = None;
                }
            }
        }
        fault
    };
    let response_header = ResponseHeader::default().with_correlation_id(header.correlation_id);
    let header_version = key.response_header_version(v);
    let mut error = match &fault {
        Some(Fault::ErrorCode(code)) => Some(*code),
        _ => None,
    };
    match fault {
        Some(Fault::Silent) => return Some(Reply::Never),
        Some(Fault::Close) => return Some(Reply::Close),
        Some(Fault::Garbage(bytes)) => return Some(Reply::Bytes(bytes)),
        Some(Fault::CorruptBody(body)) => {
            return Some(Reply::Bytes(frame(&response_header, header_version, &body)));
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(Fault::Truncated) | Some(Fault::ErrorCode(_)) | None => {}
    }
    // The controller's clock moves on every request; answering (and applying admin
    // requests) happens under the state lock, so concurrent connections see one history.
    let body = {
        let mut state = lock(&shared.state);
        advance(&mut state, key == ApiKey::Metadata, Instant::now());
        if error.is_none() && request.for_controller() && state.not_controller > 0 {
            state.not_controller -= 1;
            error = Some(NOT_CONTROLLER);
        }
        respond(&mut state, v, request, error)
    };
    let bytes = frame(&response_header, header_version, &body);
    if fault == Some(Fault::Truncated) {
        let half = bytes.len() / 2;
        return Some(Reply::Partial(bytes[..half.max(5)].to_vec()));
    }
    Some(Reply::Bytes(bytes))
}

/// Moves reassignments in flight along: with `metadata`, one poll passes; any reassignment
/// whose catch-up is due has its added replicas on live brokers join the ISR, and
/// completes once all of them are in.
fn advance(state: &mut ClusterState, metadata: bool, now: Instant) {
    let live: Vec<i32> = state.brokers.iter().map(|b| b.id).collect();
    for t in &mut state.topics {
        for p in &mut t.partitions {
            let Some(clock) = p.catch_up.as_mut() else {
                continue;
            };
            if metadata {
                clock.polls_left = clock.polls_left.saturating_sub(1);
            }
            let due = clock.polls_left == 0 && clock.due.is_none_or(|d| now >= d);
            if !due || p.leader < 0 {
                continue;
            }
            for r in &p.adding_replicas {
                if live.contains(r) && !p.isr.contains(r) {
                    p.isr.push(*r);
                }
            }
            if p.adding_replicas.iter().all(|r| p.isr.contains(r)) {
                complete(p);
            }
        }
    }
}

/// Ends a reassignment: the replicas become the target, the removed ones leave the ISR,
/// the leader stays if it is in the target, else the first target replica in the ISR.
fn complete(p: &mut PartitionSpec) {
    let target = p.target();
    p.isr.retain(|r| target.contains(r));
    p.offline_replicas.retain(|r| target.contains(r));
    if !target.contains(&p.leader) {
        p.leader = target
            .iter()
            .copied()
            .find(|r| p.isr.contains(r))
            .unwrap_or(-1);
    }
    p.replicas = target;
    p.adding_replicas.clear();
    p.removing_replicas.clear();
    p.catch_up = None;
}

fn record(
    shared: &Shared,
    api: ApiKey,
    version: i16,
    header: &RequestHeader,
    request: Option<&Request>,
) {
    let mut seen = Seen {
        api,
        version,
        client_id: header.client_id.as_ref().map(|c| c.to_string()),
        config_resources: Vec::new(),
        named_config_keys: false,
        reassignments: Vec::new(),
        config_changes: Vec::new(),
        elections: Vec::new(),
    };
    match request {
        Some(Request::DescribeConfigs(r)) => {
            seen.config_resources = r
                .resources
                .iter()
                .map(|res| (res.resource_type, res.resource_name.to_string()))
                .collect();
            seen.named_config_keys = named_keys(r);
        }
        Some(Request::AlterPartitionReassignments(r)) => {
            for t in &r.topics {
                for p in &t.partitions {
                    seen.reassignments.push((
                        t.name.0.to_string(),
                        p.partition_index,
                        p.replicas
                            .as_ref()
                            .map(|rs| rs.iter().map(|b| b.0).collect()),
                    ));
                }
            }
        }
        Some(Request::IncrementalAlterConfigs(r)) => {
            for res in &r.resources {
                seen.config_resources
                    .push((res.resource_type, res.resource_name.to_string()));
                for c in &res.configs {
                    seen.config_changes.push(SeenConfigChange {
                        resource: resource_label(res.resource_type, res.resource_name.as_str()),
                        name: c.name.to_string(),
                        op: c.config_operation,
                        value: c.value.as_ref().map(|v| v.to_string()),
                    });
                }
            }
        }
        Some(Request::ElectLeaders(r)) => {
            for t in r.topic_partitions.iter().flatten() {
                for p in &t.partitions {
                    seen.elections.push((t.topic.0.to_string(), *p));
                }
            }
        }
        _ => {}
    }
    lock(&shared.seen).push(seen);
}

fn resource_label(kind: i8, name: &str) -> String {
    match kind {
        RESOURCE_BROKER => format!("broker {name}"),
        RESOURCE_TOPIC => format!("topic {name}"),
        other => format!("resource type {other} {name}"),
    }
}

fn named_keys(r: &DescribeConfigsRequest) -> bool {
    r.resources.iter().any(|res| {
        res.configuration_keys
            .as_ref()
            .is_some_and(|k| !k.is_empty())
    })
}

fn api_keys(state: &ClusterState) -> Vec<ApiVersion> {
    state
        .versions
        .iter()
        .map(|(&key, &(min, max))| {
            ApiVersion::default()
                .with_api_key(key)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect()
}

/// The body (no frame, no header) this server answers a typical request of `key` at `v`
/// with: ApiVersions; Metadata for all topics; DescribeConfigs of `min.insync.replicas` for
/// every topic and the broker; DescribeCluster; ListPartitionReassignments;
/// AlterPartitionReassignments moving each topic's partition 0 and cancelling partition 1;
/// IncrementalAlterConfigs of a broker throttle and each topic's throttled replicas;
/// ElectLeaders of every partition. Admin requests are answered against a copy of `state`.
/// For decoder tests and fuzz seeds.
pub fn typical_response(state: &ClusterState, key: ApiKey, v: i16) -> Option<Vec<u8>> {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    let min_isr = Some(vec![s("min.insync.replicas")]);
    let request = match key {
        ApiKey::ApiVersions => Request::ApiVersions(ApiVersionsRequest::default()),
        ApiKey::Metadata => Request::Metadata(MetadataRequest::default().with_topics(None)),
        ApiKey::DescribeConfigs => {
            let mut resources: Vec<DescribeConfigsResource> = state
                .topics
                .iter()
                .map(|t| {
                    DescribeConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(s(&t.name))
                        .with_configuration_keys(min_isr.clone())
                })
                .collect();
            resources.push(
                DescribeConfigsResource::default()
                    .with_resource_type(4)
                    .with_resource_name(s(&state.self_id.unwrap_or(0).to_string()))
                    .with_configuration_keys(min_isr),
            );
            Request::DescribeConfigs(DescribeConfigsRequest::default().with_resources(resources))
        }
        ApiKey::DescribeCluster => Request::DescribeCluster(DescribeClusterRequest::default()),
        ApiKey::ListPartitionReassignments => {
            Request::ListPartitionReassignments(ListPartitionReassignmentsRequest::default())
        }
        ApiKey::AlterPartitionReassignments => {
            use kafka_protocol::messages::alter_partition_reassignments_request::{
                ReassignablePartition, ReassignableTopic,
            };
            // Move each topic's partition 0 to its replicas reversed, and cancel partition 1.
            let topics = state
                .topics
                .iter()
                .map(|t| {
                    let mut partitions = Vec::new();
                    if let Some(p) = t.partitions.first() {
                        partitions.push(
                            ReassignablePartition::default()
                                .with_partition_index(p.index)
                                .with_replicas(Some(
                                    p.replicas.iter().rev().copied().map(BrokerId).collect(),
                                )),
                        );
                    }
                    partitions.push(
                        ReassignablePartition::default()
                            .with_partition_index(1)
                            .with_replicas(None),
                    );
                    ReassignableTopic::default()
                        .with_name(TopicName(s(&t.name)))
                        .with_partitions(partitions)
                })
                .collect();
            Request::AlterPartitionReassignments(
                AlterPartitionReassignmentsRequest::default().with_topics(topics),
            )
        }
        ApiKey::IncrementalAlterConfigs => {
            use kafka_protocol::messages::incremental_alter_configs_request::{
                AlterConfigsResource, AlterableConfig,
            };
            let mut resources: Vec<AlterConfigsResource> = vec![
                AlterConfigsResource::default()
                    .with_resource_type(RESOURCE_BROKER)
                    .with_resource_name(s(&state.self_id.unwrap_or(0).to_string()))
                    .with_configs(vec![
                        AlterableConfig::default()
                            .with_name(s("leader.replication.throttled.rate"))
                            .with_value(Some(s("10485760"))),
                    ]),
            ];
            resources.extend(state.topics.iter().map(|t| {
                AlterConfigsResource::default()
                    .with_resource_type(RESOURCE_TOPIC)
                    .with_resource_name(s(&t.name))
                    .with_configs(vec![
                        AlterableConfig::default()
                            .with_name(s("follower.replication.throttled.replicas"))
                            .with_config_operation(2)
                            .with_value(Some(s("0:1"))),
                    ])
            }));
            Request::IncrementalAlterConfigs(
                IncrementalAlterConfigsRequest::default().with_resources(resources),
            )
        }
        ApiKey::ElectLeaders => {
            Request::ElectLeaders(ElectLeadersRequest::default().with_topic_partitions(None))
        }
        _ => return None,
    };
    let mut state = state.clone();
    Some(respond(&mut state, v, request, None))
}

fn respond(state: &mut ClusterState, v: i16, request: Request, error: Option<i16>) -> Vec<u8> {
    match request {
        Request::ApiVersions(_) => {
            let resp = ApiVersionsResponse::default()
                .with_error_code(error.unwrap_or(0))
                .with_api_keys(if error.is_some() {
                    Vec::new()
                } else {
                    api_keys(state)
                });
            encode_body(&resp, v)
        }
        Request::Metadata(req) => encode_body(&metadata(state, v, &req, error), v),
        Request::DescribeConfigs(req) => encode_body(&describe_configs(state, v, &req, error), v),
        Request::DescribeCluster(_) => encode_body(&describe_cluster(state, v, error), v),
        Request::ListPartitionReassignments(_) => encode_body(&list_reassignments(state, error), v),
        Request::AlterPartitionReassignments(req) => {
            encode_body(&alter_reassignments(state, v, &req, error), v)
        }
        Request::IncrementalAlterConfigs(req) => {
            encode_body(&incremental_alter_configs(state, &req, error), v)
        }
        Request::ElectLeaders(req) => encode_body(&elect_leaders(state, v, &req, error), v),
    }
}

/// AlterPartitionReassignments with a KRaft controller's semantics (see the module docs).
fn alter_reassignments(
    state: &mut ClusterState,
    v: i16,
    req: &AlterPartitionReassignmentsRequest,
    error: Option<i16>,
) -> AlterPartitionReassignmentsResponse {
    use kafka_protocol::messages::alter_partition_reassignments_response::{
        ReassignablePartitionResponse, ReassignableTopicResponse,
    };
    let mut resp = AlterPartitionReassignmentsResponse::default().with_error_message(None);
    if v >= 1 {
        resp.allow_replication_factor_change = req.allow_replication_factor_change;
    }
    if let Some(code) = error {
        resp.error_code = code;
        resp.error_message = Some(s("injected by the test server"));
        return resp;
    }
    let registered: Vec<i32> = state
        .brokers
        .iter()
        .chain(&state.down_brokers)
        .map(|b| b.id)
        .collect();
    let catch_up = state.catch_up;
    resp.responses = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|rp| {
                    let target: Option<Vec<i32>> = rp
                        .replicas
                        .as_ref()
                        .map(|r| r.iter().map(|b| b.0).collect());
                    let (code, message) = match state
                        .topics
                        .iter_mut()
                        .find(|x| x.name == t.name.0.as_str())
                        .and_then(|x| {
                            x.partitions
                                .iter_mut()
                                .find(|p| p.index == rp.partition_index)
                        }) {
                        None => (
                            UNKNOWN_TOPIC_OR_PARTITION,
                            Some("This server does not host this topic-partition.".to_owned()),
                        ),
                        Some(p) => match target {
                            None => cancel_reassignment(p),
                            Some(target) => start_reassignment(
                                p,
                                &target,
                                &registered,
                                v >= 1 && !req.allow_replication_factor_change,
                                catch_up,
                            ),
                        },
                    };
                    ReassignablePartitionResponse::default()
                        .with_partition_index(rp.partition_index)
                        .with_error_code(code)
                        .with_error_message(message.map(|m| s(&m)))
                })
                .collect();
            ReassignableTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    let mut now: BTreeMap<i32, usize> = BTreeMap::new();
    for p in state.topics.iter().flat_map(|t| &t.partitions) {
        for b in p.adding_replicas.iter().chain(&p.removing_replicas) {
            *now.entry(*b).or_default() += 1;
        }
    }
    for (b, n) in now {
        let peak = state.peak_in_flight.entry(b).or_default();
        *peak = (*peak).max(n);
    }
    resp
}

fn start_reassignment(
    p: &mut PartitionSpec,
    target: &[i32],
    registered: &[i32],
    keep_rf: bool,
    catch_up: CatchUp,
) -> (i16, Option<String>) {
    if target.is_empty() {
        return (
            INVALID_REPLICA_ASSIGNMENT,
            Some("The target replica list is empty.".to_owned()),
        );
    }
    if let Some(dup) = target
        .iter()
        .enumerate()
        .find(|(i, r)| target[..*i].contains(r))
    {
        return (
            INVALID_REPLICA_ASSIGNMENT,
            Some(format!("Duplicate replica {} in the target.", dup.1)),
        );
    }
    if let Some(unknown) = target.iter().find(|r| !registered.contains(r)) {
        return (
            INVALID_REPLICA_ASSIGNMENT,
            Some(format!(
                "The target replica {unknown} is not a registered broker."
            )),
        );
    }
    let original = p.original();
    if keep_rf && target.len() != original.len() {
        return (
            INVALID_REPLICATION_FACTOR,
            Some(format!(
                "The replication factor is changed from {} to {} but \
                 allowReplicationFactorChange is false",
                original.len(),
                target.len()
            )),
        );
    }
    let adding: Vec<i32> = target
        .iter()
        .copied()
        .filter(|r| !original.contains(r))
        .collect();
    let removing: Vec<i32> = original
        .iter()
        .copied()
        .filter(|r| !target.contains(r))
        .collect();
    // Replicas a replaced reassignment was adding and this one does not keep leave now.
    p.isr.retain(|r| original.contains(r) || target.contains(r));
    p.replicas = target.iter().chain(&removing).copied().collect();
    p.adding_replicas = adding;
    p.removing_replicas = removing;
    if p.adding_replicas.is_empty() {
        // Nothing to copy (a reorder, or only removals): done at once.
        complete(p);
    } else {
        p.catch_up = Some(match catch_up {
            CatchUp::Polls(n) => CatchUpClock {
                polls_left: n,
                due: None,
            },
            CatchUp::After(d) => CatchUpClock {
                polls_left: 0,
                due: Some(Instant::now() + d),
            },
        });
    }
    (0, None)
}

fn cancel_reassignment(p: &mut PartitionSpec) -> (i16, Option<String>) {
    if !p.reassigning() {
        return (
            NO_REASSIGNMENT_IN_PROGRESS,
            Some("No reassignment is in progress for this partition.".to_owned()),
        );
    }
    let original = p.original();
    p.isr.retain(|r| original.contains(r));
    p.offline_replicas.retain(|r| original.contains(r));
    if !original.contains(&p.leader) {
        p.leader = original
            .iter()
            .copied()
            .find(|r| p.isr.contains(r))
            .unwrap_or(-1);
    }
    p.replicas = original;
    p.adding_replicas.clear();
    p.removing_replicas.clear();
    p.catch_up = None;
    (0, None)
}

/// IncrementalAlterConfigs: records the changes per resource.
fn incremental_alter_configs(
    state: &mut ClusterState,
    req: &IncrementalAlterConfigsRequest,
    error: Option<i16>,
) -> IncrementalAlterConfigsResponse {
    use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
    let responses =
        req.resources
            .iter()
            .map(|res| {
                let name = res.resource_name.to_string();
                let base = AlterConfigsResourceResponse::default()
                    .with_resource_type(res.resource_type)
                    .with_resource_name(res.resource_name.clone());
                let fail = |code: i16, msg: &str| {
                    base.clone()
                        .with_error_code(code)
                        .with_error_message(Some(s(msg)))
                };
                if let Some(code) = error {
                    return fail(code, "injected by the test server");
                }
                match res.resource_type {
                    RESOURCE_TOPIC if !state.topics.iter().any(|t| t.name == name) => {
                        return fail(UNKNOWN_TOPIC_OR_PARTITION, "unknown topic");
                    }
                    RESOURCE_TOPIC => {}
                    RESOURCE_BROKER if name.is_empty() || name.parse::<i32>().is_ok() => {}
                    _ => return fail(INVALID_REQUEST, "unsupported resource"),
                }
                if let Some(bad) = res.configs.iter().find(|c| {
                    c.config_operation > 3 || (c.config_operation != 1 && c.value.is_none())
                }) {
                    return fail(
                        INVALID_CONFIG,
                        &format!(
                            "bad operation {} on {}",
                            bad.config_operation,
                            bad.name.as_str()
                        ),
                    );
                }
                if req.validate_only {
                    return base;
                }
                let configs = state.configs.entry((res.resource_type, name)).or_default();
                for c in &res.configs {
                    let key = c.name.to_string();
                    let value = c.value.as_ref().map(|v| v.to_string()).unwrap_or_default();
                    let list = |v: Option<&String>| -> Vec<String> {
                        v.map(|v| {
                            v.split(',')
                                .map(str::trim)
                                .filter(|e| !e.is_empty())
                                .map(str::to_owned)
                                .collect()
                        })
                        .unwrap_or_default()
                    };
                    match c.config_operation {
                        0 => {
                            configs.insert(key, value);
                        }
                        1 => {
                            configs.remove(&key);
                        }
                        op => {
                            let mut entries = list(configs.get(&key));
                            for e in list(Some(&value)) {
                                if op == 2 && !entries.contains(&e) {
                                    entries.push(e);
                                } else if op == 3 {
                                    entries.retain(|x| *x != e);
                                }
                            }
                            if entries.is_empty() {
                                configs.remove(&key);
                            } else {
                                configs.insert(key, entries.join(","));
                            }
                        }
                    }
                }
                base
            })
            .collect();
    state.configs.retain(|_, c| !c.is_empty());
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// ElectLeaders (PREFERRED): the first replica leads if it is live and in the ISR.
fn elect_leaders(
    state: &mut ClusterState,
    v: i16,
    req: &ElectLeadersRequest,
    error: Option<i16>,
) -> ElectLeadersResponse {
    use kafka_protocol::messages::elect_leaders_response::{
        PartitionResult, ReplicaElectionResult,
    };
    let mut resp = ElectLeadersResponse::default();
    if let Some(code) = error
        && v >= 1
    {
        resp.error_code = code;
        return resp;
    }
    let wanted: Vec<(String, Vec<i32>)> = match &req.topic_partitions {
        Some(tps) => tps
            .iter()
            .map(|t| (t.topic.0.to_string(), t.partitions.clone()))
            .collect(),
        None => state
            .topics
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    t.partitions.iter().map(|p| p.index).collect(),
                )
            })
            .collect(),
    };
    let live: Vec<i32> = state.brokers.iter().map(|b| b.id).collect();
    resp.replica_election_results = wanted
        .into_iter()
        .map(|(topic, partitions)| {
            let results = partitions
                .into_iter()
                .map(|index| {
                    let (code, msg) = match (error, state.partition_mut_opt(&topic, index)) {
                        (Some(code), _) => (code, "injected by the test server"),
                        (None, None) => (UNKNOWN_TOPIC_OR_PARTITION, "unknown topic-partition"),
                        (None, Some(p)) => match p.replicas.first().copied() {
                            Some(first) if first == p.leader => {
                                (ELECTION_NOT_NEEDED, "Leader election not needed")
                            }
                            Some(first) if p.isr.contains(&first) && live.contains(&first) => {
                                p.leader = first;
                                (0, "")
                            }
                            _ => (
                                PREFERRED_LEADER_NOT_AVAILABLE,
                                "The preferred leader is not in the ISR",
                            ),
                        },
                    };
                    PartitionResult::default()
                        .with_partition_id(index)
                        .with_error_code(code)
                        .with_error_message((code != 0).then(|| s(msg)))
                })
                .collect();
            ReplicaElectionResult::default()
                .with_topic(TopicName(s(&topic)))
                .with_partition_result(results)
        })
        .collect();
    resp
}

fn list_reassignments(
    state: &ClusterState,
    error: Option<i16>,
) -> ListPartitionReassignmentsResponse {
    use kafka_protocol::messages::list_partition_reassignments_response::{
        OngoingPartitionReassignment, OngoingTopicReassignment,
    };
    let ids = |v: &[i32]| v.iter().copied().map(BrokerId).collect::<Vec<_>>();
    let mut resp = ListPartitionReassignmentsResponse::default();
    if let Some(code) = error {
        resp.error_code = code;
        resp.error_message = Some(s("injected by the test server"));
        return resp;
    }
    resp.topics = state
        .topics
        .iter()
        .filter(|t| t.partitions.iter().any(PartitionSpec::reassigning))
        .map(|t| {
            OngoingTopicReassignment::default()
                .with_name(TopicName(s(&t.name)))
                .with_partitions(
                    t.partitions
                        .iter()
                        .filter(|p| p.reassigning())
                        .map(|p| {
                            OngoingPartitionReassignment::default()
                                .with_partition_index(p.index)
                                .with_replicas(ids(&p.replicas))
                                .with_adding_replicas(ids(&p.adding_replicas))
                                .with_removing_replicas(ids(&p.removing_replicas))
                        })
                        .collect(),
                )
        })
        .collect();
    resp
}

fn metadata(
    state: &ClusterState,
    v: i16,
    req: &MetadataRequest,
    error: Option<i16>,
) -> MetadataResponse {
    let mut resp = MetadataResponse::default();
    resp.brokers = state
        .brokers
        .iter()
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.id))
                .with_host(s(&b.host))
                .with_port(b.port)
                .with_rack(if v >= 1 {
                    b.rack.as_deref().map(s)
                } else {
                    None
                })
        })
        .collect();
    if v >= 2 {
        resp.cluster_id = state.cluster_id.as_deref().map(s);
    }
    if v >= 1 {
        resp.controller_id = BrokerId(state.controller_id);
    }
    let topic_error = match error {
        Some(code) if v >= 13 => {
            resp.error_code = code;
            None
        }
        other => other,
    };
    let all = match &req.topics {
        None => true,
        Some(t) => v == 0 && t.is_empty(),
    };
    let wanted: Vec<String> = match &req.topics {
        Some(topics) if !all => topics
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
            .collect(),
        _ => state.topics.iter().map(|t| t.name.clone()).collect(),
    };
    resp.topics = wanted
        .iter()
        .map(|name| match state.topics.iter().find(|t| &t.name == name) {
            None => MetadataResponseTopic::default()
                .with_error_code(UNKNOWN_TOPIC_OR_PARTITION)
                .with_name(Some(TopicName(s(name)))),
            Some(t) => MetadataResponseTopic::default()
                .with_error_code(topic_error.unwrap_or(t.error_code))
                .with_name(Some(TopicName(s(&t.name))))
                .with_is_internal(v >= 1 && t.internal)
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            let mut mp = MetadataResponsePartition::default()
                                .with_error_code(if p.leader < 0 {
                                    LEADER_NOT_AVAILABLE
                                } else {
                                    0
                                })
                                .with_partition_index(p.index)
                                .with_leader_id(BrokerId(p.leader))
                                .with_replica_nodes(
                                    p.replicas.iter().copied().map(BrokerId).collect(),
                                )
                                .with_isr_nodes(p.isr.iter().copied().map(BrokerId).collect());
                            if v >= 5 {
                                mp.offline_replicas =
                                    p.offline_replicas.iter().copied().map(BrokerId).collect();
                            }
                            if v >= 7 {
                                mp.leader_epoch = 0;
                            }
                            mp
                        })
                        .collect(),
                ),
        })
        .collect();
    resp
}

fn config_entry(v: i16, name: &str, value: &str, source: i8) -> DescribeConfigsResourceResult {
    let mut e = DescribeConfigsResourceResult::default()
        .with_name(s(name))
        .with_value(Some(s(value)))
        .with_read_only(false)
        .with_config_source(source)
        .with_is_sensitive(false);
    if v >= 3 {
        // INT for min.insync.replicas, STRING otherwise.
        e.config_type = if name == MIN_ISR { 3 } else { 2 };
    }
    e
}

/// The configs set with IncrementalAlterConfigs on a resource.
fn dynamic<'a>(
    state: &'a ClusterState,
    kind: i8,
    name: &str,
) -> impl Iterator<Item = (&'a str, &'a str)> {
    state
        .configs
        .get(&(kind, name.to_owned()))
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.as_str()))
}

fn describe_configs(
    state: &ClusterState,
    v: i16,
    req: &DescribeConfigsRequest,
    error: Option<i16>,
) -> DescribeConfigsResponse {
    let results = req
        .resources
        .iter()
        .map(|res| {
            let name = res.resource_name.to_string();
            let base = DescribeConfigsResult::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            if let Some(code) = error {
                return base
                    .with_error_code(code)
                    .with_error_message(Some(s("injected by the test server")));
            }
            let wants = |key: &str| {
                res.configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.iter().any(|k| k.as_str() == key))
            };
            match (state.config_style, res.resource_type) {
                (style, RESOURCE_TOPIC) => {
                    let Some(topic) = state.topics.iter().find(|t| t.name == name) else {
                        return match style {
                            ConfigStyle::Kafka => base
                                .with_error_code(UNKNOWN_TOPIC_OR_PARTITION)
                                .with_error_message(Some(s(
                                    "This server does not host this topic-partition.",
                                ))),
                            // tansu answers an unknown topic with no error and no configs.
                            ConfigStyle::Tansu => base,
                        };
                    };
                    let mut configs = Vec::new();
                    match style {
                        ConfigStyle::Kafka => {
                            if wants(MIN_ISR) {
                                configs.push(match (topic.min_isr, state.broker_min_isr) {
                                    (Some(own), _) => {
                                        config_entry(v, MIN_ISR, &own.to_string(), SOURCE_TOPIC)
                                    }
                                    (None, Some(d)) => config_entry(
                                        v,
                                        MIN_ISR,
                                        &d.to_string(),
                                        SOURCE_STATIC_BROKER,
                                    ),
                                    (None, None) => config_entry(v, MIN_ISR, "1", SOURCE_DEFAULT),
                                });
                            }
                            if wants("cleanup.policy") {
                                configs.push(config_entry(
                                    v,
                                    "cleanup.policy",
                                    "delete",
                                    SOURCE_DEFAULT,
                                ));
                            }
                        }
                        ConfigStyle::Tansu => {
                            // Every explicit config, whatever was asked for.
                            configs.push(config_entry(v, "cleanup.policy", "delete", SOURCE_DEFAULT));
                            if let Some(own) = topic.min_isr {
                                configs.push(config_entry(
                                    v,
                                    MIN_ISR,
                                    &own.to_string(),
                                    SOURCE_DEFAULT,
                                ));
                            }
                        }
                    }
                    for (k, value) in dynamic(state, RESOURCE_TOPIC, &name) {
                        if wants(k) {
                            configs.push(config_entry(v, k, value, SOURCE_TOPIC));
                        }
                    }
                    base.with_configs(configs)
                }
                (ConfigStyle::Tansu, RESOURCE_BROKER) => base,
                (ConfigStyle::Kafka, RESOURCE_BROKER) => {
                    if name.is_empty() {
                        // Cluster-wide dynamic defaults: none set.
                        return base;
                    }
                    let is_self = match (state.self_id, name.parse::<i32>()) {
                        (None, Ok(_)) => true,
                        (Some(me), Ok(id)) => me == id,
                        (_, Err(_)) => false,
                    };
                    if !is_self {
                        return base.with_error_code(INVALID_REQUEST).with_error_message(Some(s(
                            &format!(
                                "Unexpected broker id, expected {} or empty string, but received {name}",
                                state.self_id.unwrap_or(-1)
                            ),
                        )));
                    }
                    let mut configs = Vec::new();
                    if wants(MIN_ISR) {
                        configs.push(match state.broker_min_isr {
                            Some(d) => config_entry(v, MIN_ISR, &d.to_string(), SOURCE_STATIC_BROKER),
                            None => config_entry(v, MIN_ISR, "1", SOURCE_DEFAULT),
                        });
                    }
                    for (k, value) in dynamic(state, RESOURCE_BROKER, &name) {
                        if wants(k) {
                            configs.push(config_entry(v, k, value, SOURCE_DYNAMIC_BROKER));
                        }
                    }
                    base.with_configs(configs)
                }
                _ => base
                    .with_error_code(INVALID_REQUEST)
                    .with_error_message(Some(s("unsupported resource type"))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn describe_cluster(state: &ClusterState, v: i16, error: Option<i16>) -> DescribeClusterResponse {
    let mut resp = DescribeClusterResponse::default()
        .with_cluster_id(s(state.cluster_id.as_deref().unwrap_or("")))
        .with_controller_id(BrokerId(state.controller_id))
        .with_brokers(
            state
                .brokers
                .iter()
                .map(|b| {
                    DescribeClusterBroker::default()
                        .with_broker_id(BrokerId(b.id))
                        .with_host(s(&b.host))
                        .with_port(b.port)
                        .with_rack(b.rack.as_deref().map(s))
                })
                .collect(),
        );
    if let Some(code) = error {
        resp.error_code = code;
        resp.error_message = Some(s("injected by the test server"));
        resp.cluster_id = s("");
        resp.controller_id = BrokerId(-1);
        resp.brokers.clear();
    }
    let _ = v;
    resp
}

/// rustls configurations for a TLS test server and its clients, from a fresh CA.
pub mod tls {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, SanType,
    };
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::server::WebPkiClientVerifier;

    /// PEM files of a CA, a server certificate for `localhost`/127.0.0.1 and a client
    /// certificate, written to `dir`.
    #[derive(Debug)]
    pub struct Material {
        pub ca: PathBuf,
        pub server_cert: PathBuf,
        pub server_key: PathBuf,
        pub client_cert: PathBuf,
        pub client_key: PathBuf,
    }

    fn write(dir: &Path, name: &str, pem: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, pem).expect("write PEM");
        path
    }

    /// Generate the material into `dir`.
    pub fn generate(dir: &Path) -> Material {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::default();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "kpool test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
        let issuer = Issuer::from_ca_cert_der(ca_cert.der(), &ca_key).expect("issuer");

        let leaf = |cn: &str, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().expect("leaf key");
            let mut params = CertificateParams::default();
            params.distinguished_name.push(DnType::CommonName, cn);
            params.subject_alt_names = vec![
                SanType::DnsName("localhost".try_into().expect("dns")),
                SanType::IpAddress([127, 0, 0, 1].into()),
            ];
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &issuer).expect("leaf cert");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf("localhost", ExtendedKeyUsagePurpose::ServerAuth);
        let (client_cert, client_key) = leaf("kpool-agent", ExtendedKeyUsagePurpose::ClientAuth);
        Material {
            ca: write(dir, "ca.pem", &ca_cert.pem()),
            server_cert: write(dir, "server.pem", &server_cert),
            server_key: write(dir, "server-key.pem", &server_key),
            client_cert: write(dir, "client.pem", &client_cert),
            client_key: write(dir, "client-key.pem", &client_key),
        }
    }

    /// A TLS acceptor serving the server certificate; with `require_client_cert`, clients
    /// must present a certificate signed by the CA.
    pub fn acceptor(m: &Material, require_client_cert: bool) -> tokio_rustls::TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&m.server_cert)
            .expect("server cert")
            .collect::<Result<_, _>>()
            .expect("server cert PEM");
        let key = PrivateKeyDer::from_pem_file(&m.server_key).expect("server key");
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("protocol versions");
        let builder = if require_client_cert {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(&m.ca).expect("ca") {
                roots.add(cert.expect("ca PEM")).expect("add ca");
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let config = builder.with_single_cert(chain, key).expect("server config");
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}
