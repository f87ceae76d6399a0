//! The client: connection management, version negotiation, and turning Metadata,
//! DescribeConfigs, DescribeCluster and ListPartitionReassignments responses into a
//! [`Snapshot`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::metadata_response::MetadataResponseBroker;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, DescribeClusterRequest,
    DescribeClusterResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, MetadataRequest,
    MetadataResponse,
};
use kafka_protocol::protocol::StrBytes;
use tracing::{debug, warn};

use super::conn::{Connection, label};
use super::error::ErrorCode;
use super::tls::Tls;
use super::{KafkaConfig, KafkaError, validate_addr, wire};
use crate::snapshot::{Broker, Partition, Snapshot, Topic};

// Version ranges this client implements, per API (in `decode`, shared with the public
// decoder). Metadata starts at v1 (v0 has no controller, racks or "all topics" null list);
// DescribeConfigs at v1 (v0 has no config source).
use super::decode::{
    ALTER_REASSIGNMENTS_RANGE, API_VERSIONS_RANGE, DESCRIBE_CLUSTER_RANGE, DESCRIBE_CONFIGS_RANGE,
    ELECT_LEADERS_RANGE, INCREMENTAL_ALTER_CONFIGS_RANGE, LIST_REASSIGNMENTS_RANGE, METADATA_RANGE,
};

const MIN_ISR_KEY: &str = "min.insync.replicas";
/// DescribeConfigs resource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// DescribeConfigs config sources that mean "inherited from the broker level": dynamic
/// per-broker, dynamic cluster default, static server.properties. A topic entry from one of
/// these is not the topic's own setting, but its value is the broker's default.
/// DEFAULT_CONFIG (5) is deliberately not among them: real Kafka reports Kafka's built-in
/// default (1) with it, which gives the same effective value whichever way it is read,
/// while tansu labels the configs explicitly set on a topic with it.
const INHERITED_SOURCES: [i8; 3] = [2, 3, 4];

/// Kafka error codes the client treats specially.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const UNSUPPORTED_VERSION: i16 = 35;

/// The versions negotiated with the connected broker: the highest each side supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NegotiatedVersions {
    /// The ApiVersions version the broker answered.
    pub api_versions: i16,
    /// Metadata.
    pub metadata: i16,
    /// DescribeConfigs.
    pub describe_configs: i16,
    /// DescribeCluster, `None` when the broker does not support it (Kafka before 2.8).
    pub describe_cluster: Option<i16>,
    /// ListPartitionReassignments, `None` when the broker does not support it (Kafka
    /// before 2.4).
    pub list_reassignments: Option<i16>,
    /// AlterPartitionReassignments (Kafka 2.4+), for `racks apply` and `racks cancel`.
    pub alter_reassignments: Option<i16>,
    /// IncrementalAlterConfigs (Kafka 2.3+), for replication throttles.
    pub incremental_alter_configs: Option<i16>,
    /// ElectLeaders (Kafka 2.2+), for the preferred-leader election after a move.
    pub elect_leaders: Option<i16>,
}

/// A Kafka admin client holding one connection, reconnecting when it breaks.
#[derive(Debug)]
pub struct KafkaClient {
    pub(super) config: KafkaConfig,
    pub(super) tls: Option<Tls>,
    pub(super) live: Option<Live>,
    /// The bootstrap index to try first on the next connect.
    pub(super) next_bootstrap: usize,
    /// Where admin requests go: the controller and brokers from Metadata, and the
    /// connections opened to them (`admin.rs`).
    pub(super) routes: super::admin::Routes,
    /// Whether DescribeConfigs names the one key wanted. Brokers that cannot parse
    /// configuration keys (tansu 0.6 closes the connection) get null = all configs.
    pub(super) send_config_keys: bool,
    /// Consecutive keyed DescribeConfigs the broker hung up on.
    keys_rejected: u8,
}

/// Why a poll failed.
enum PollError {
    /// The broker closed the connection instead of answering a DescribeConfigs that named
    /// configuration keys: either it cannot parse them, or it went away at that moment.
    KeysRejected(KafkaError),
    /// Anything else.
    Failed(KafkaError),
}

impl From<KafkaError> for PollError {
    fn from(e: KafkaError) -> Self {
        PollError::Failed(e)
    }
}

/// Keyed DescribeConfigs rejections, in a row and each on a fresh connection, after which
/// the client stops naming keys. Two tell "cannot parse" from "broker restarting".
const KEY_REJECTIONS_TO_GIVE_UP: u8 = 2;

#[derive(Debug)]
pub(super) struct Live {
    pub(super) conn: Connection,
    pub(super) index: usize,
    pub(super) versions: NegotiatedVersions,
    /// Every API the broker advertised with its version range, for error messages.
    pub(super) advertised: BTreeMap<i16, (i16, i16)>,
    /// The id of the broker at the other end, once known; its broker resource holds the
    /// broker default of `min.insync.replicas` (Kafka answers a broker resource only for
    /// itself).
    pub(super) self_id: Option<i32>,
    /// ListPartitionReassignments was refused on this connection and said so in a warning
    /// (a ZooKeeper-mode broker that is not the controller refuses it on every poll).
    pub(super) reassignments_refused: bool,
}

impl KafkaClient {
    /// Validate the configuration and load TLS material. Does not connect.
    pub fn new(config: KafkaConfig) -> Result<Self, KafkaError> {
        if config.bootstrap.is_empty() {
            return Err(KafkaError::NoBootstrap);
        }
        for addr in &config.bootstrap {
            validate_addr(addr)?;
        }
        if config.timeout.is_zero() {
            return Err(KafkaError::InvalidConfig {
                field: "timeout",
                reason: "expected a positive duration, found 0".to_owned(),
            });
        }
        let tls = config.tls.as_ref().map(Tls::load).transpose()?;
        Ok(Self {
            config,
            tls,
            live: None,
            next_bootstrap: 0,
            routes: super::admin::Routes::default(),
            send_config_keys: true,
            keys_rejected: 0,
        })
    }

    /// The configuration the client was built with.
    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    /// The bootstrap address of the open connection, if any.
    pub fn connected_to(&self) -> Option<&str> {
        self.live.as_ref().map(|l| l.conn.addr())
    }

    /// The versions negotiated on the open connection, if any.
    pub fn negotiated(&self) -> Option<NegotiatedVersions> {
        self.live.as_ref().map(|l| l.versions)
    }

    /// Drop the connection; the next snapshot reconnects.
    pub fn disconnect(&mut self) {
        self.live = None;
        self.routes = super::admin::Routes::default();
    }

    /// Take one snapshot of the cluster: Metadata for all topics, `min.insync.replicas` of
    /// every topic and the broker default, cluster id and controller. Connects first if
    /// needed. On any error the connection is dropped and the next call reconnects,
    /// starting with the bootstrap address after the one that failed.
    ///
    /// Each network step is bounded by the configured timeout, so a call takes at most
    /// `(4 × bootstrap addresses + 4) × timeout` (connect, TLS handshake and up to two
    /// ApiVersions per address tried, then up to four requests). Cancel-safe: dropping the
    /// future mid-call drops the connection, so a half-read response is never reused.
    pub async fn snapshot(&mut self) -> Result<Snapshot, KafkaError> {
        let mut retries = 0;
        loop {
            let mut live = match self.live.take() {
                Some(live) => live,
                None => self.connect().await?,
            };
            match poll(&mut live, self.send_config_keys).await {
                Ok(snapshot) => {
                    self.live = Some(live);
                    if self.send_config_keys {
                        self.keys_rejected = 0;
                    }
                    return Ok(snapshot);
                }
                // Retry on a fresh connection to the same broker: once with keys (a
                // broker that was merely restarting answers now), then without.
                Err(PollError::KeysRejected(e)) if retries < KEY_REJECTIONS_TO_GIVE_UP => {
                    retries += 1;
                    self.keys_rejected += 1;
                    if self.keys_rejected >= KEY_REJECTIONS_TO_GIVE_UP {
                        self.send_config_keys = false;
                        warn!(
                            addr = live.conn.addr(),
                            error = %e,
                            "broker closes the connection on DescribeConfigs naming \
                             configuration keys; asking for all configs from now on"
                        );
                    }
                    self.next_bootstrap = live.index;
                }
                Err(PollError::KeysRejected(e) | PollError::Failed(e)) => {
                    self.next_bootstrap = (live.index + 1) % self.config.bootstrap.len();
                    return Err(e);
                }
            }
        }
    }

    /// Connect to the first bootstrap address that answers ApiVersions, in turn.
    pub(super) async fn connect(&mut self) -> Result<Live, KafkaError> {
        let n = self.config.bootstrap.len();
        let mut errors = Vec::new();
        for k in 0..n {
            let index = (self.next_bootstrap + k) % n;
            let addr = &self.config.bootstrap[index];
            match self.open(addr).await {
                Ok((conn, versions, advertised)) => {
                    debug!(addr, ?versions, "connected to Kafka");
                    self.next_bootstrap = index;
                    return Ok(Live {
                        conn,
                        index,
                        versions,
                        advertised,
                        self_id: None,
                        reassignments_refused: false,
                    });
                }
                Err(e) => {
                    if n > 1 {
                        warn!(addr, error = %e, "Kafka bootstrap broker failed, trying the next");
                    }
                    errors.push(e);
                }
            }
        }
        self.next_bootstrap = (self.next_bootstrap + 1) % n;
        // One address: its own error reads better than a list of one.
        if errors.len() == 1
            && let Some(e) = errors.pop()
        {
            return Err(e);
        }
        Err(KafkaError::Unreachable { errors })
    }

    /// Opens a connection to `addr` and negotiates versions on it.
    pub(super) async fn open(&self, addr: &str) -> Result<Opened, KafkaError> {
        let mut conn = Connection::open(
            addr,
            self.config.timeout,
            self.tls.as_ref(),
            &self.config.client_id,
        )
        .await?;
        let (versions, advertised) = negotiate(&mut conn).await?;
        Ok((conn, versions, advertised))
    }
}

/// A connection just opened: the versions negotiated and every API the broker advertised.
pub(super) type Opened = (Connection, NegotiatedVersions, BTreeMap<i16, (i16, i16)>);

/// ApiVersions, then the highest common version of each API the client implements.
async fn negotiate(
    conn: &mut Connection,
) -> Result<(NegotiatedVersions, BTreeMap<i16, (i16, i16)>), KafkaError> {
    let mut version = API_VERSIONS_RANGE.1;
    let mut retried = false;
    loop {
        let request = if version >= 3 {
            ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("kpool-agent"))
                .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")))
        } else {
            ApiVersionsRequest::default()
        };
        let body = conn
            .exchange(ApiKey::ApiVersions, version, &request)
            .await?;
        // The error code leads every ApiVersions version. A broker that does not speak
        // the requested version answers UNSUPPORTED_VERSION in v0, listing its own range
        // of ApiVersions so the client can retry within it.
        let code = match body.get(..2) {
            Some(b) => i16::from_be_bytes([b[0], b[1]]),
            None => 0,
        };
        if code == UNSUPPORTED_VERSION && !retried {
            retried = true;
            let resp: ApiVersionsResponse =
                conn.decode(ApiKey::ApiVersions, 0, &wire::API_VERSIONS, body)?;
            let theirs = resp
                .api_keys
                .iter()
                .find(|k| k.api_key == ApiKey::ApiVersions as i16);
            let next = theirs.map_or(0, |k| k.max_version.min(API_VERSIONS_RANGE.1));
            if next >= version || next < API_VERSIONS_RANGE.0 {
                return Err(KafkaError::UnsupportedApi {
                    addr: conn.addr().to_owned(),
                    api: "ApiVersions",
                    client: range(API_VERSIONS_RANGE),
                    broker: theirs.map(|k| range((k.min_version, k.max_version))),
                });
            }
            debug!(
                addr = conn.addr(),
                from = version,
                to = next,
                "broker does not support ApiVersions v{version}, retrying"
            );
            version = next;
            continue;
        }
        let resp: ApiVersionsResponse =
            conn.decode(ApiKey::ApiVersions, version, &wire::API_VERSIONS, body)?;
        if resp.error_code != 0 {
            return Err(KafkaError::BrokerError {
                addr: conn.addr().to_owned(),
                api: label(ApiKey::ApiVersions, version),
                code: resp.error_code,
                message: None,
            });
        }
        let broker: BTreeMap<i16, (i16, i16)> = resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        let pick = |key: ApiKey, ours: (i16, i16)| -> Option<i16> {
            let &(min, max) = broker.get(&(key as i16))?;
            let v = max.min(ours.1);
            (v >= min.max(ours.0)).then_some(v)
        };
        let required = |key: ApiKey, name: &'static str, ours: (i16, i16)| {
            pick(key, ours).ok_or_else(|| KafkaError::UnsupportedApi {
                addr: conn.addr().to_owned(),
                api: name,
                client: range(ours),
                broker: broker.get(&(key as i16)).map(|&r| range(r)),
            })
        };
        let versions = NegotiatedVersions {
            api_versions: version,
            metadata: required(ApiKey::Metadata, "Metadata", METADATA_RANGE)?,
            describe_configs: required(
                ApiKey::DescribeConfigs,
                "DescribeConfigs",
                DESCRIBE_CONFIGS_RANGE,
            )?,
            describe_cluster: pick(ApiKey::DescribeCluster, DESCRIBE_CLUSTER_RANGE),
            list_reassignments: pick(ApiKey::ListPartitionReassignments, LIST_REASSIGNMENTS_RANGE),
            alter_reassignments: pick(
                ApiKey::AlterPartitionReassignments,
                ALTER_REASSIGNMENTS_RANGE,
            ),
            incremental_alter_configs: pick(
                ApiKey::IncrementalAlterConfigs,
                INCREMENTAL_ALTER_CONFIGS_RANGE,
            ),
            elect_leaders: pick(ApiKey::ElectLeaders, ELECT_LEADERS_RANGE),
        };
        return Ok((versions, broker));
    }
}

pub(super) fn range((min, max): (i16, i16)) -> String {
    format!("{min}..={max}")
}

/// One snapshot over an open connection.
async fn poll(live: &mut Live, send_config_keys: bool) -> Result<Snapshot, PollError> {
    let versions = live.versions;
    let conn = &mut live.conn;

    let v = versions.metadata;
    let request = MetadataRequest::default()
        .with_topics(None)
        // Versions before 4 cannot say "no auto-creation" (the field is implied true);
        // with a null topic list nothing is created either way.
        .with_allow_auto_topic_creation(v < 4);
    let metadata: MetadataResponse = conn
        .call(ApiKey::Metadata, v, &request, &wire::METADATA)
        .await?;
    if metadata.error_code != 0 {
        return Err(KafkaError::BrokerError {
            addr: conn.addr().to_owned(),
            api: label(ApiKey::Metadata, v),
            code: metadata.error_code,
            message: None,
        }
        .into());
    }
    let mut snapshot = from_metadata(metadata);

    if live.self_id.is_none() {
        live.self_id = identify(conn.addr(), conn.peer, &snapshot.brokers);
    }
    let broker_ids: Vec<i32> = match live.self_id {
        Some(id) => vec![id],
        // Unknown which broker this is: ask all of them in one request; Kafka answers
        // only for itself and returns INVALID_REQUEST for the others.
        None => snapshot.brokers.iter().map(|b| b.id).collect(),
    };
    let configs = describe_configs(
        conn,
        versions.describe_configs,
        &snapshot,
        &broker_ids,
        send_config_keys,
    )
    .await
    .map_err(|e| match e {
        KafkaError::Closed { .. } if send_config_keys => PollError::KeysRejected(e),
        e => PollError::Failed(e),
    })?;
    let answered = apply_configs(
        &mut snapshot,
        configs,
        conn.addr(),
        versions.describe_configs,
    )?;
    if broker_ids.len() > 1 {
        // Exactly one broker resource answered: that is the broker at the other end.
        live.self_id = answered;
    }

    if let Some(v) = versions.describe_cluster {
        let request = DescribeClusterRequest::default();
        let cluster: DescribeClusterResponse = live
            .conn
            .call(
                ApiKey::DescribeCluster,
                v,
                &request,
                &wire::DESCRIBE_CLUSTER,
            )
            .await?;
        if cluster.error_code == 0 {
            if !cluster.cluster_id.is_empty() {
                snapshot.cluster_id = Some(cluster.cluster_id.to_string());
            }
            snapshot.controller_id =
                (cluster.controller_id.0 >= 0).then_some(cluster.controller_id.0);
        } else {
            // Cluster id and controller are informational and Metadata has them too.
            warn!(
                addr = live.conn.addr(),
                error = %ErrorCode(cluster.error_code),
                message = cluster.error_message.as_deref().unwrap_or(""),
                "DescribeCluster failed; using cluster id and controller from Metadata"
            );
        }
    }

    if let Some(v) = versions.list_reassignments {
        // The broker may forward this to the controller and wait up to `timeout_ms`; ask
        // it to give up first, so a slow controller is an error code, not a lost connection.
        let timeout_ms = i32::try_from(live.conn.timeout().as_millis() * 4 / 5).unwrap_or(i32::MAX);
        let request = ListPartitionReassignmentsRequest::default()
            .with_timeout_ms(timeout_ms)
            .with_topics(None);
        let ongoing: ListPartitionReassignmentsResponse = live
            .conn
            .call(
                ApiKey::ListPartitionReassignments,
                v,
                &request,
                &wire::LIST_REASSIGNMENTS,
            )
            .await?;
        if ongoing.error_code == 0 {
            live.reassignments_refused = false;
            apply_reassignments(&mut snapshot, ongoing);
        } else if !live.reassignments_refused {
            // Without it a reassignment's new replicas count as missing from the ISR, so
            // partitions being moved show as under-replicated until they catch up.
            live.reassignments_refused = true;
            warn!(
                addr = live.conn.addr(),
                error = %ErrorCode(ongoing.error_code),
                message = ongoing.error_message.as_deref().unwrap_or(""),
                "ListPartitionReassignments refused; replicas being added by a reassignment \
                 count as under-replicated until this broker answers it"
            );
        }
    }
    Ok(snapshot)
}

/// Records the replicas each ongoing reassignment is adding on the snapshot's partitions
/// (topics and partitions the snapshot does not have are ignored: Metadata is the list).
fn apply_reassignments(snapshot: &mut Snapshot, ongoing: ListPartitionReassignmentsResponse) {
    for t in ongoing.topics {
        let Ok(ti) = snapshot
            .topics
            .binary_search_by(|topic| topic.name.as_str().cmp(t.name.0.as_str()))
        else {
            continue;
        };
        let topic = &mut snapshot.topics[ti];
        for p in t.partitions {
            if let Ok(pi) = topic
                .partitions
                .binary_search_by_key(&p.partition_index, |x| x.index)
            {
                topic.partitions[pi].adding_replicas =
                    p.adding_replicas.into_iter().map(|b| b.0).collect();
            }
        }
    }
}

/// A broker as Metadata describes it.
pub(super) fn broker_of(b: &MetadataResponseBroker) -> Broker {
    Broker {
        id: b.node_id.0,
        host: b.host.to_string(),
        port: b.port,
        rack: b.rack.as_ref().map(|r| r.to_string()),
    }
}

/// Brokers, topics and partitions from Metadata; topics with a topic-level error are
/// skipped (and logged), partitions are kept whatever their error code, because Kafka
/// reports offline partitions with LEADER_NOT_AVAILABLE and they are exactly what the
/// health engine must see.
fn from_metadata(metadata: MetadataResponse) -> Snapshot {
    let mut brokers: Vec<Broker> = metadata.brokers.iter().map(broker_of).collect();
    brokers.sort_by_key(|b| b.id);

    let mut topics = Vec::with_capacity(metadata.topics.len());
    for t in metadata.topics {
        let Some(name) = t.name.map(|n| n.0.to_string()) else {
            warn!(
                error = %ErrorCode(t.error_code),
                "Metadata returned a topic without a name; skipping it"
            );
            continue;
        };
        if t.error_code != 0 {
            warn!(topic = name, error = %ErrorCode(t.error_code), "skipping topic: Metadata error");
            continue;
        }
        let mut partitions: Vec<Partition> = t
            .partitions
            .into_iter()
            .map(|p| {
                if p.error_code != 0 {
                    debug!(
                        topic = name,
                        partition = p.partition_index,
                        error = %ErrorCode(p.error_code),
                        "partition reported with an error code"
                    );
                }
                Partition {
                    index: p.partition_index,
                    leader: p.leader_id.0,
                    replicas: p.replica_nodes.into_iter().map(|b| b.0).collect(),
                    isr: p.isr_nodes.into_iter().map(|b| b.0).collect(),
                    offline_replicas: p.offline_replicas.into_iter().map(|b| b.0).collect(),
                    adding_replicas: Vec::new(),
                }
            })
            .collect();
        partitions.sort_by_key(|p| p.index);
        topics.push(Topic {
            name,
            internal: t.is_internal,
            min_isr: None,
            partitions,
        });
    }
    topics.sort_by(|a, b| a.name.cmp(&b.name));

    Snapshot {
        cluster_id: metadata.cluster_id.map(|c| c.to_string()),
        controller_id: (metadata.controller_id.0 >= 0).then_some(metadata.controller_id.0),
        brokers,
        topics,
        default_min_isr: None,
    }
}

/// Which registered broker the connection reaches: the one advertising the dialled
/// `host:port`, or the socket's peer address. `None` if not exactly one matches.
pub(super) fn identify(addr: &str, peer: Option<SocketAddr>, brokers: &[Broker]) -> Option<i32> {
    let (host, port) = super::split_host_port(addr)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: i32 = port.parse().ok()?;
    let matches: BTreeSet<i32> = brokers
        .iter()
        .filter(|b| {
            let by_name = b.port == port && b.host.eq_ignore_ascii_case(host);
            let by_peer = peer.is_some_and(|p| {
                i32::from(p.port()) == b.port && b.host.parse::<IpAddr>().ok() == Some(p.ip())
            });
            by_name || by_peer
        })
        .map(|b| b.id)
        .collect();
    match matches.len() {
        1 => matches.into_iter().next(),
        _ => None,
    }
}

async fn describe_configs(
    conn: &mut Connection,
    v: i16,
    snapshot: &Snapshot,
    broker_ids: &[i32],
    send_keys: bool,
) -> Result<Option<DescribeConfigsResponse>, KafkaError> {
    // Null asks for every config; the one key wanted is filtered out of the answer anyway.
    let keys = send_keys.then(|| vec![StrBytes::from_static_str(MIN_ISR_KEY)]);
    let mut resources: Vec<DescribeConfigsResource> = snapshot
        .topics
        .iter()
        .map(|t| {
            DescribeConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(StrBytes::from_string(t.name.clone()))
                .with_configuration_keys(keys.clone())
        })
        .collect();
    resources.extend(broker_ids.iter().map(|id| {
        DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_BROKER)
            .with_resource_name(StrBytes::from_string(id.to_string()))
            .with_configuration_keys(keys.clone())
    }));
    if resources.is_empty() {
        return Ok(None);
    }
    let request = DescribeConfigsRequest::default().with_resources(resources);
    conn.call(
        ApiKey::DescribeConfigs,
        v,
        &request,
        &wire::DESCRIBE_CONFIGS,
    )
    .await
    .map(Some)
}

/// A broker's error message, `None` when absent or empty.
pub(super) fn message(m: Option<&StrBytes>) -> Option<String> {
    m.map(|m| m.trim().to_owned()).filter(|m| !m.is_empty())
}

/// Parse a `min.insync.replicas` value.
fn parse_min_isr(
    value: Option<&StrBytes>,
    addr: &str,
    v: i16,
    resource: &str,
) -> Result<Option<i32>, KafkaError> {
    let Some(value) = value else {
        // Null: sensitive or unknown; treat as not set.
        return Ok(None);
    };
    match value.trim().parse::<i32>() {
        Ok(n) if n >= 1 => Ok(Some(n)),
        _ => Err(KafkaError::Decode {
            addr: addr.to_owned(),
            api: label(ApiKey::DescribeConfigs, v),
            detail: format!(
                "{resource}: {MIN_ISR_KEY} = {:?}, expected an integer >= 1",
                value.as_str()
            ),
        }),
    }
}

/// Put the topics' own `min.insync.replicas` and the broker default into the snapshot.
/// Returns the broker id that answered its broker resource when exactly one did (so later
/// snapshots ask only that one).
///
/// A topic resource error fails the snapshot (a min ISR that cannot be read must not
/// silently become the more permissive default), except UNKNOWN_TOPIC_OR_PARTITION: the
/// topic was deleted since Metadata, and is dropped. Broker resource errors are expected
/// for the brokers this connection is not, and only matter if no broker answered.
fn apply_configs(
    snapshot: &mut Snapshot,
    configs: Option<DescribeConfigsResponse>,
    addr: &str,
    v: i16,
) -> Result<Option<i32>, KafkaError> {
    let Some(configs) = configs else {
        return Ok(None);
    };
    let mut own: BTreeMap<String, Option<i32>> = BTreeMap::new();
    let mut vanished: BTreeSet<String> = BTreeSet::new();
    let mut inherited: Option<i32> = None;
    let mut broker_default: Option<i32> = None;
    let mut answered: Vec<i32> = Vec::new();
    let mut broker_errors: Vec<String> = Vec::new();

    for result in configs.results {
        let name = result.resource_name.to_string();
        match result.resource_type {
            RESOURCE_TOPIC => {
                if result.error_code == UNKNOWN_TOPIC_OR_PARTITION {
                    warn!(
                        topic = name,
                        "topic vanished between Metadata and DescribeConfigs; skipping it"
                    );
                    vanished.insert(name);
                    continue;
                }
                if result.error_code != 0 {
                    return Err(KafkaError::BrokerError {
                        addr: addr.to_owned(),
                        api: format!("{} (topic {name})", label(ApiKey::DescribeConfigs, v)),
                        code: result.error_code,
                        message: message(result.error_message.as_ref()),
                    });
                }
                let what = format!("topic {name}");
                let mut value = None;
                // Filter by name: some brokers (tansu) ignore the requested keys.
                for entry in result
                    .configs
                    .iter()
                    .filter(|c| c.name.as_str() == MIN_ISR_KEY)
                {
                    let parsed = parse_min_isr(entry.value.as_ref(), addr, v, &what)?;
                    if INHERITED_SOURCES.contains(&entry.config_source) {
                        inherited = inherited.or(parsed);
                    } else {
                        value = parsed.or(value);
                    }
                }
                own.insert(name, value);
            }
            RESOURCE_BROKER => {
                if result.error_code != 0 {
                    broker_errors.push(format!(
                        "broker {name}: {}{}",
                        ErrorCode(result.error_code),
                        message(result.error_message.as_ref())
                            .map(|m| format!(" ({m})"))
                            .unwrap_or_default()
                    ));
                    continue;
                }
                if let Ok(id) = name.parse::<i32>() {
                    answered.push(id);
                }
                let what = format!("broker {name}");
                for entry in result
                    .configs
                    .iter()
                    .filter(|c| c.name.as_str() == MIN_ISR_KEY)
                {
                    if let Some(n) = parse_min_isr(entry.value.as_ref(), addr, v, &what)? {
                        broker_default.get_or_insert(n);
                    }
                }
            }
            other => debug!(
                resource_type = other,
                name, "unexpected DescribeConfigs result"
            ),
        }
    }

    snapshot.topics.retain(|t| !vanished.contains(&t.name));
    for topic in &mut snapshot.topics {
        match own.get(&topic.name) {
            Some(value) => topic.min_isr = *value,
            None => warn!(
                topic = topic.name,
                "DescribeConfigs returned no result for the topic; using the broker default"
            ),
        }
    }
    snapshot.default_min_isr = broker_default.or(inherited);
    if answered.is_empty() && !broker_errors.is_empty() && snapshot.default_min_isr.is_none() {
        warn!(
            addr,
            errors = broker_errors.join("; "),
            "could not read the broker default of min.insync.replicas"
        );
    }
    Ok(match answered.as_slice() {
        [one] => Some(*one),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::describe_configs_response::{
        DescribeConfigsResourceResult, DescribeConfigsResult,
    };

    fn broker(id: i32, host: &str, port: i32) -> Broker {
        Broker {
            id,
            host: host.to_owned(),
            port,
            rack: None,
        }
    }

    #[test]
    fn identifies_the_connected_broker_by_name_or_peer() {
        let brokers = [
            broker(1, "k1.example", 9092),
            broker(2, "10.0.0.2", 9092),
            broker(3, "K3.example", 9093),
        ];
        assert_eq!(identify("k1.example:9092", None, &brokers), Some(1));
        assert_eq!(identify("k3.EXAMPLE:9093", None, &brokers), Some(3));
        let peer: SocketAddr = "10.0.0.2:9092".parse().expect("addr");
        assert_eq!(
            identify("bootstrap.example:9092", Some(peer), &brokers),
            Some(2)
        );
        assert_eq!(identify("elsewhere:9092", None, &brokers), None);
        assert_eq!(identify("k1.example:9093", None, &brokers), None);
    }

    fn configs(results: Vec<DescribeConfigsResult>) -> Option<DescribeConfigsResponse> {
        Some(DescribeConfigsResponse::default().with_results(results))
    }

    fn result(
        kind: i8,
        name: &str,
        code: i16,
        entries: &[(&str, &str, i8)],
    ) -> DescribeConfigsResult {
        DescribeConfigsResult::default()
            .with_resource_type(kind)
            .with_resource_name(StrBytes::from_string(name.to_owned()))
            .with_error_code(code)
            .with_configs(
                entries
                    .iter()
                    .map(|(k, v, source)| {
                        DescribeConfigsResourceResult::default()
                            .with_name(StrBytes::from_string((*k).to_owned()))
                            .with_value(Some(StrBytes::from_string((*v).to_owned())))
                            .with_config_source(*source)
                    })
                    .collect(),
            )
    }

    fn snapshot_with(topics: &[&str]) -> Snapshot {
        Snapshot {
            topics: topics
                .iter()
                .map(|n| Topic {
                    name: (*n).to_owned(),
                    internal: false,
                    min_isr: None,
                    partitions: vec![],
                })
                .collect(),
            ..Snapshot::default()
        }
    }

    #[test]
    fn config_sources_decide_own_versus_inherited() {
        let mut s = snapshot_with(&[
            "own",
            "inherited",
            "kafka-default",
            "tansu-explicit",
            "none",
        ]);
        let learned = apply_configs(
            &mut s,
            configs(vec![
                result(RESOURCE_TOPIC, "own", 0, &[(MIN_ISR_KEY, "4", 1)]),
                result(RESOURCE_TOPIC, "inherited", 0, &[(MIN_ISR_KEY, "3", 4)]),
                result(RESOURCE_TOPIC, "kafka-default", 0, &[(MIN_ISR_KEY, "1", 5)]),
                // tansu ignores the requested keys and labels explicit configs DEFAULT_CONFIG.
                result(
                    RESOURCE_TOPIC,
                    "tansu-explicit",
                    0,
                    &[("cleanup.policy", "delete", 5), (MIN_ISR_KEY, "2", 5)],
                ),
                result(RESOURCE_TOPIC, "none", 0, &[("retention.ms", "1000", 5)]),
                result(RESOURCE_BROKER, "1", 42, &[]),
                result(RESOURCE_BROKER, "2", 0, &[(MIN_ISR_KEY, "3", 4)]),
            ]),
            "k:9092",
            4,
        )
        .expect("apply");
        let got: Vec<(&str, Option<i32>)> = s
            .topics
            .iter()
            .map(|t| (t.name.as_str(), t.min_isr))
            .collect();
        assert_eq!(
            got,
            [
                ("own", Some(4)),
                ("inherited", None),
                ("kafka-default", Some(1)),
                ("tansu-explicit", Some(2)),
                ("none", None),
            ]
        );
        assert_eq!(s.default_min_isr, Some(3));
        assert_eq!(learned, Some(2), "the one broker that answered");
    }

    #[test]
    fn inherited_values_stand_in_for_an_unanswered_broker_resource() {
        let mut s = snapshot_with(&["a"]);
        let learned = apply_configs(
            &mut s,
            configs(vec![
                result(RESOURCE_TOPIC, "a", 0, &[(MIN_ISR_KEY, "2", 3)]),
                result(RESOURCE_BROKER, "7", 42, &[]),
            ]),
            "k:9092",
            4,
        )
        .expect("apply");
        assert_eq!((s.default_min_isr, learned), (Some(2), None));
    }

    #[test]
    fn vanished_topics_are_dropped_other_topic_errors_fail() {
        let mut s = snapshot_with(&["a", "gone"]);
        apply_configs(
            &mut s,
            configs(vec![
                result(RESOURCE_TOPIC, "a", 0, &[]),
                result(RESOURCE_TOPIC, "gone", UNKNOWN_TOPIC_OR_PARTITION, &[]),
            ]),
            "k:9092",
            4,
        )
        .expect("apply");
        let names: Vec<&str> = s.topics.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a"]);

        let mut s = snapshot_with(&["a"]);
        let err = apply_configs(
            &mut s,
            configs(vec![result(RESOURCE_TOPIC, "a", 29, &[])]),
            "k:9092",
            4,
        )
        .expect_err("authorization error");
        assert_eq!(
            err.to_string(),
            "Kafka broker k:9092 answered DescribeConfigs v4 (topic a) with \
             TOPIC_AUTHORIZATION_FAILED (29)"
        );

        let err = apply_configs(
            &mut snapshot_with(&["a"]),
            configs(vec![result(
                RESOURCE_TOPIC,
                "a",
                0,
                &[(MIN_ISR_KEY, "three", 1)],
            )]),
            "k:9092",
            4,
        )
        .expect_err("garbage value");
        assert!(
            err.to_string()
                .contains("topic a: min.insync.replicas = \"three\""),
            "{err}"
        );
    }

    #[test]
    fn min_isr_values_must_be_positive_integers() {
        let v = |s: &'static str| StrBytes::from_static_str(s);
        assert_eq!(
            parse_min_isr(Some(&v("3")), "a:1", 4, "t").ok(),
            Some(Some(3))
        );
        assert_eq!(parse_min_isr(None, "a:1", 4, "t").ok(), Some(None));
        for bad in ["0", "-1", "x", ""] {
            let err = parse_min_isr(Some(&v(bad)), "a:1", 4, "topic t").expect_err(bad);
            assert!(err.to_string().contains("topic t"), "{err}");
        }
    }
}
