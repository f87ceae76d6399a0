//! The admin requests of `racks apply`, `racks status` and `racks cancel`:
//! AlterPartitionReassignments, ListPartitionReassignments, IncrementalAlterConfigs,
//! ElectLeaders, and DescribeConfigs of named configs.
//!
//! **Where they go.** Like Kafka's own Admin client: reassignments, elections and topic
//! configs go to the controller named by Metadata, a broker's own configs to that broker.
//! The connection is opened to the address the broker advertises; when that cannot be
//! reached (advertised listeners are often in-cluster names, and an operator may reach the
//! cluster through one port-forward), the request goes over the bootstrap connection
//! instead, since a KRaft broker forwards these requests to the active controller; after
//! [`UNREACHABLE_ENOUGH`] brokers failed so, no other advertised address is tried until
//! Metadata is read again. A
//! NOT_CONTROLLER answer (a ZooKeeper-mode controller moved, or the forwarding broker saw
//! a new one) refreshes Metadata and retries with backoff, [`ADMIN_ATTEMPTS`] times at most;
//! every request kpool sends is idempotent (the same target, the same config values), so a
//! retry never doubles anything.
//!
//! **Errors** are the client's: every network step bounded by the configured timeout, any
//! transport failure drops that connection (the next call reconnects), and broker error
//! codes are [`KafkaError::BrokerError`] naming the API, its version, and the partition or
//! config resource, with Kafka's name for the code.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, ApiKey, BrokerId,
    DescribeConfigsRequest, DescribeConfigsResponse, ElectLeadersRequest, ElectLeadersResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, MetadataRequest,
    MetadataResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tracing::{debug, warn};

use super::KafkaError;
use super::client::{KafkaClient, Live, NegotiatedVersions, broker_of, identify, message, range};
use super::conn::label;
use super::decode::{
    ALTER_REASSIGNMENTS_RANGE, DESCRIBE_CONFIGS_RANGE, ELECT_LEADERS_RANGE,
    INCREMENTAL_ALTER_CONFIGS_RANGE, LIST_REASSIGNMENTS_RANGE,
};
use super::wire::{self, Schema};
use crate::backoff::Backoff;
use crate::snapshot::Broker;

/// How many times an admin request is sent while the answer is NOT_CONTROLLER (Metadata
/// refreshed in between, with backoff from `RETRY_INITIAL` doubling up to `RETRY_MAX`).
pub const ADMIN_ATTEMPTS: u32 = 5;
/// The first wait before retrying after NOT_CONTROLLER.
pub const RETRY_INITIAL: Duration = Duration::from_millis(100);
/// The longest wait between NOT_CONTROLLER retries.
pub const RETRY_MAX: Duration = Duration::from_secs(2);

/// Brokers whose advertised address failed, since the last Metadata, after which no other
/// broker's is tried: advertised listeners are then not reachable from here (a
/// port-forward, in-cluster names), and trying each of 60 brokers could cost a connect
/// timeout apiece.
pub const UNREACHABLE_ENOUGH: usize = 2;

/// Kafka error codes the admin requests handle.
pub const NOT_CONTROLLER: i16 = 41;
/// Cancelling a partition that is not being reassigned.
pub const NO_REASSIGNMENT_IN_PROGRESS: i16 = 85;
/// ElectLeaders: the preferred replica already leads.
pub const ELECTION_NOT_NEEDED: i16 = 84;
/// ElectLeaders: the preferred replica is not in the ISR (or not alive).
pub const PREFERRED_LEADER_NOT_AVAILABLE: i16 = 80;

/// DescribeConfigs / IncrementalAlterConfigs resource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// One partition's reassignment in flight, as ListPartitionReassignments reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OngoingReassignment {
    pub topic: String,
    pub partition: i32,
    /// The replica list now: the target, then the replicas being removed.
    pub replicas: Vec<i32>,
    /// Replicas being added (not in the original assignment).
    pub adding: Vec<i32>,
    /// Replicas being removed (not in the target).
    pub removing: Vec<i32>,
}

impl OngoingReassignment {
    /// The replicas the reassignment moves to, in order: `replicas` without those being
    /// removed.
    pub fn target(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.removing.contains(r))
            .collect()
    }

    /// The replicas before it started: `replicas` without those being added (cancelling
    /// returns the partition to these).
    pub fn original(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.adding.contains(r))
            .collect()
    }

    /// `topic-partition`.
    pub fn name(&self) -> String {
        format!("{}-{}", self.topic, self.partition)
    }
}

/// One partition of an AlterPartitionReassignments request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reassignment {
    pub topic: String,
    pub partition: i32,
    /// The target replicas, the preferred leader first; `None` cancels the reassignment in
    /// flight (the partition returns to its original replicas).
    pub replicas: Option<Vec<i32>>,
}

/// What a broker answered for one partition.
#[derive(Debug)]
pub struct PartitionOutcome {
    pub topic: String,
    pub partition: i32,
    /// `None` when the partition succeeded; else the error (a [`KafkaError::BrokerError`]
    /// naming the API and the partition, or a `Decode` error when the answer left the
    /// partition out).
    pub error: Option<KafkaError>,
}

impl PartitionOutcome {
    /// The Kafka error code: 0 on success, -1 when the error is not a broker's code.
    pub fn code(&self) -> i16 {
        match &self.error {
            None => 0,
            Some(KafkaError::BrokerError { code, .. }) => *code,
            Some(_) => -1,
        }
    }
}

/// A config resource: a broker's own configs or a topic's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfigResource {
    Broker(i32),
    Topic(String),
}

impl ConfigResource {
    fn kind(&self) -> i8 {
        match self {
            Self::Broker(_) => RESOURCE_BROKER,
            Self::Topic(_) => RESOURCE_TOPIC,
        }
    }

    fn name(&self) -> String {
        match self {
            Self::Broker(id) => id.to_string(),
            Self::Topic(t) => t.clone(),
        }
    }

    /// The broker that must receive requests about this resource, `None` for the
    /// controller (a broker answers DescribeConfigs only for its own id).
    fn owner(&self) -> Option<i32> {
        match self {
            Self::Broker(id) => Some(*id),
            Self::Topic(_) => None,
        }
    }

    fn matches(&self, kind: i8, name: &str) -> bool {
        kind == self.kind() && name == self.name()
    }
}

impl fmt::Display for ConfigResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Broker(id) => write!(f, "broker {id}"),
            Self::Topic(t) => write!(f, "topic {t}"),
        }
    }
}

/// One IncrementalAlterConfigs operation on a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOp {
    /// Set the value.
    Set(String),
    /// Remove the setting (back to the default).
    Delete,
    /// Add entries to a list config (comma-separated; entries already there are kept once).
    Append(String),
    /// Remove entries from a list config.
    Subtract(String),
}

impl ConfigOp {
    fn code(&self) -> i8 {
        match self {
            Self::Set(_) => 0,
            Self::Delete => 1,
            Self::Append(_) => 2,
            Self::Subtract(_) => 3,
        }
    }

    fn value(&self) -> Option<&str> {
        match self {
            Self::Set(v) | Self::Append(v) | Self::Subtract(v) => Some(v),
            Self::Delete => None,
        }
    }
}

/// The config changes of one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigAlteration {
    pub resource: ConfigResource,
    /// `(config name, operation)`, applied in one request.
    pub changes: Vec<(String, ConfigOp)>,
}

/// What a broker answered for one config resource.
#[derive(Debug)]
pub struct ResourceOutcome {
    pub resource: ConfigResource,
    /// `None` on success.
    pub error: Option<KafkaError>,
}

/// Where admin requests go, learned from Metadata (`refresh` when stale).
#[derive(Debug, Default)]
pub(super) struct Routes {
    /// Metadata was read since the last NOT_CONTROLLER or failure.
    fresh: bool,
    controller: Option<i32>,
    /// Advertised `host:port` of each registered broker.
    addrs: BTreeMap<i32, String>,
    /// Connections to brokers other than the bootstrap one.
    peers: BTreeMap<i32, Live>,
    /// Brokers whose advertised address could not be reached since the last refresh:
    /// their requests go over the bootstrap connection.
    unreachable: BTreeSet<i32>,
    /// Whether the fallback to the bootstrap connection was warned about (once per client:
    /// behind a port-forward every broker is unreachable, one line says it).
    warned: bool,
}

/// The connection a request goes over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Bootstrap,
    Peer(i32),
}

/// One admin API: its key, name, the client's version range and the negotiated version.
struct Api {
    key: ApiKey,
    name: &'static str,
    ours: (i16, i16),
    pick: fn(&NegotiatedVersions) -> Option<i16>,
    schema: &'static Schema,
}

const ALTER_REASSIGNMENTS: Api = Api {
    key: ApiKey::AlterPartitionReassignments,
    name: "AlterPartitionReassignments",
    ours: ALTER_REASSIGNMENTS_RANGE,
    pick: |n| n.alter_reassignments,
    schema: &wire::ALTER_REASSIGNMENTS,
};
const LIST_REASSIGNMENTS: Api = Api {
    key: ApiKey::ListPartitionReassignments,
    name: "ListPartitionReassignments",
    ours: LIST_REASSIGNMENTS_RANGE,
    pick: |n| n.list_reassignments,
    schema: &wire::LIST_REASSIGNMENTS,
};
const INCREMENTAL_ALTER_CONFIGS: Api = Api {
    key: ApiKey::IncrementalAlterConfigs,
    name: "IncrementalAlterConfigs",
    ours: INCREMENTAL_ALTER_CONFIGS_RANGE,
    pick: |n| n.incremental_alter_configs,
    schema: &wire::INCREMENTAL_ALTER_CONFIGS,
};
const ELECT_LEADERS: Api = Api {
    key: ApiKey::ElectLeaders,
    name: "ElectLeaders",
    ours: ELECT_LEADERS_RANGE,
    pick: |n| n.elect_leaders,
    schema: &wire::ELECT_LEADERS,
};
const DESCRIBE_CONFIGS: Api = Api {
    key: ApiKey::DescribeConfigs,
    name: "DescribeConfigs",
    ours: DESCRIBE_CONFIGS_RANGE,
    pick: |n| Some(n.describe_configs),
    schema: &wire::DESCRIBE_CONFIGS,
};

/// A response and where it came from.
struct Answered<R> {
    resp: R,
    version: i16,
    addr: String,
}

impl<R> Answered<R> {
    fn api(&self, api: &Api) -> String {
        label(api.key, self.version)
    }

    fn error(&self, api: &Api, what: Option<&str>, code: i16, msg: Option<String>) -> KafkaError {
        KafkaError::BrokerError {
            addr: self.addr.clone(),
            api: match what {
                Some(w) => format!("{} ({w})", self.api(api)),
                None => self.api(api),
            },
            code,
            message: msg,
        }
    }
}

/// The `timeout_ms` to put in requests a broker forwards to the controller: a little less
/// than the client's own deadline, so a slow controller comes back as an error code rather
/// than a lost connection.
fn server_timeout_ms(timeout: Duration) -> i32 {
    i32::try_from(timeout.as_millis() * 4 / 5).unwrap_or(i32::MAX)
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

/// Groups `(topic, item)` pairs by topic, topics in first-seen order.
fn by_topic<T>(items: impl IntoIterator<Item = (String, T)>) -> Vec<(String, Vec<T>)> {
    let mut out: Vec<(String, Vec<T>)> = Vec::new();
    for (topic, item) in items {
        match out.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, v)) => v.push(item),
            None => out.push((topic, vec![item])),
        }
    }
    out
}

impl KafkaClient {
    /// Submits reassignments (or cancels them, `replicas: None`) to the controller; one
    /// outcome per item, in order. The request says the replication factor must not change
    /// (v1+), so a target of another size is refused by Kafka rather than applied.
    pub async fn alter_partition_reassignments(
        &mut self,
        items: &[Reassignment],
    ) -> Result<Vec<PartitionOutcome>, KafkaError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let timeout_ms = server_timeout_ms(self.config.timeout);
        let build = |v: i16| {
            let topics = by_topic(items.iter().map(|i| {
                (
                    i.topic.clone(),
                    ReassignablePartition::default()
                        .with_partition_index(i.partition)
                        .with_replicas(
                            i.replicas
                                .as_ref()
                                .map(|r| r.iter().copied().map(BrokerId).collect()),
                        ),
                )
            }))
            .into_iter()
            .map(|(t, partitions)| {
                ReassignableTopic::default()
                    .with_name(TopicName(s(&t)))
                    .with_partitions(partitions)
            })
            .collect();
            let mut req = AlterPartitionReassignmentsRequest::default()
                .with_timeout_ms(timeout_ms)
                .with_topics(topics);
            if v >= 1 {
                req.allow_replication_factor_change = false;
            }
            req
        };
        let api = &ALTER_REASSIGNMENTS;
        let answered: Answered<AlterPartitionReassignmentsResponse> = self
            .admin_call(
                None,
                api,
                build,
                |r: &AlterPartitionReassignmentsResponse| r.error_code == NOT_CONTROLLER,
            )
            .await?;
        let resp = &answered.resp;
        if resp.error_code != 0 {
            return Err(answered.error(
                api,
                None,
                resp.error_code,
                message(resp.error_message.as_ref()),
            ));
        }
        let mut results: BTreeMap<(&str, i32), (i16, Option<String>)> = BTreeMap::new();
        for t in &resp.responses {
            for p in &t.partitions {
                results.insert(
                    (t.name.0.as_str(), p.partition_index),
                    (p.error_code, message(p.error_message.as_ref())),
                );
            }
        }
        Ok(items
            .iter()
            .map(|i| {
                let what = format!("partition {}-{}", i.topic, i.partition);
                let error = match results.get(&(i.topic.as_str(), i.partition)) {
                    Some((0, _)) => None,
                    Some((code, msg)) => Some(answered.error(api, Some(&what), *code, msg.clone())),
                    None => Some(missing(&answered, api, &what)),
                };
                PartitionOutcome {
                    topic: i.topic.clone(),
                    partition: i.partition,
                    error,
                }
            })
            .collect())
    }

    /// Every reassignment in flight, from the controller, sorted by topic and partition.
    /// Entries adding and removing nothing are left out: Kafka never reports one (such a
    /// reassignment completes at once), and tansu 0.6 lists every partition that way.
    pub async fn list_partition_reassignments(
        &mut self,
    ) -> Result<Vec<OngoingReassignment>, KafkaError> {
        let timeout_ms = server_timeout_ms(self.config.timeout);
        let api = &LIST_REASSIGNMENTS;
        let answered: Answered<ListPartitionReassignmentsResponse> = self
            .admin_call(
                None,
                api,
                |_| {
                    ListPartitionReassignmentsRequest::default()
                        .with_timeout_ms(timeout_ms)
                        .with_topics(None)
                },
                |r: &ListPartitionReassignmentsResponse| r.error_code == NOT_CONTROLLER,
            )
            .await?;
        let resp = answered.resp;
        if resp.error_code != 0 {
            return Err(KafkaError::BrokerError {
                addr: answered.addr,
                api: label(api.key, answered.version),
                code: resp.error_code,
                message: message(resp.error_message.as_ref()),
            });
        }
        let ids = |v: Vec<BrokerId>| v.into_iter().map(|b| b.0).collect::<Vec<i32>>();
        let mut out: Vec<OngoingReassignment> = resp
            .topics
            .into_iter()
            .flat_map(|t| {
                let topic = t.name.0.to_string();
                t.partitions
                    .into_iter()
                    .filter(|p| !p.adding_replicas.is_empty() || !p.removing_replicas.is_empty())
                    .map(move |p| OngoingReassignment {
                        topic: topic.clone(),
                        partition: p.partition_index,
                        replicas: ids(p.replicas),
                        adding: ids(p.adding_replicas),
                        removing: ids(p.removing_replicas),
                    })
            })
            .collect();
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(out)
    }

    /// Applies config changes: a broker's to that broker, topics' to the controller (one
    /// request per destination); one outcome per alteration, in order.
    pub async fn alter_configs(
        &mut self,
        alterations: &[ConfigAlteration],
    ) -> Result<Vec<ResourceOutcome>, KafkaError> {
        let mut groups: BTreeMap<Option<i32>, Vec<usize>> = BTreeMap::new();
        for (i, a) in alterations.iter().enumerate() {
            groups.entry(a.resource.owner()).or_default().push(i);
        }
        let mut outcomes: Vec<Option<ResourceOutcome>> = alterations.iter().map(|_| None).collect();
        let api = &INCREMENTAL_ALTER_CONFIGS;
        for (owner, indices) in groups {
            let build = |_: i16| {
                let resources = indices
                    .iter()
                    .map(|&i| {
                        let a = &alterations[i];
                        AlterConfigsResource::default()
                            .with_resource_type(a.resource.kind())
                            .with_resource_name(s(&a.resource.name()))
                            .with_configs(
                                a.changes
                                    .iter()
                                    .map(|(name, op)| {
                                        AlterableConfig::default()
                                            .with_name(s(name))
                                            .with_config_operation(op.code())
                                            .with_value(op.value().map(s))
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                IncrementalAlterConfigsRequest::default().with_resources(resources)
            };
            let answered: Answered<IncrementalAlterConfigsResponse> = self
                .admin_call(owner, api, build, |r: &IncrementalAlterConfigsResponse| {
                    r.responses.iter().any(|x| x.error_code == NOT_CONTROLLER)
                })
                .await?;
            for &i in &indices {
                let resource = &alterations[i].resource;
                let what = resource.to_string();
                let found = answered
                    .resp
                    .responses
                    .iter()
                    .find(|r| resource.matches(r.resource_type, r.resource_name.as_str()));
                let error = match found {
                    Some(r) if r.error_code == 0 => None,
                    Some(r) => Some(answered.error(
                        api,
                        Some(&what),
                        r.error_code,
                        message(r.error_message.as_ref()),
                    )),
                    None => Some(missing(&answered, api, &what)),
                };
                outcomes[i] = Some(ResourceOutcome {
                    resource: resource.clone(),
                    error,
                });
            }
        }
        Ok(outcomes.into_iter().flatten().collect())
    }

    /// Elects the preferred (first) replica leader of each partition, at the controller;
    /// one outcome per partition, in order. ELECTION_NOT_NEEDED means it already leads.
    pub async fn elect_preferred_leaders(
        &mut self,
        partitions: &[(String, i32)],
    ) -> Result<Vec<PartitionOutcome>, KafkaError> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let timeout_ms = server_timeout_ms(self.config.timeout);
        let build = |v: i16| {
            let topics = by_topic(partitions.iter().cloned())
                .into_iter()
                .map(|(t, ps)| {
                    TopicPartitions::default()
                        .with_topic(TopicName(s(&t)))
                        .with_partitions(ps)
                })
                .collect();
            let mut req = ElectLeadersRequest::default()
                .with_topic_partitions(Some(topics))
                .with_timeout_ms(timeout_ms);
            if v >= 1 {
                // PREFERRED; v0 knows no other kind.
                req.election_type = 0;
            }
            req
        };
        let api = &ELECT_LEADERS;
        let answered: Answered<ElectLeadersResponse> = self
            .admin_call(None, api, build, |r: &ElectLeadersResponse| {
                r.error_code == NOT_CONTROLLER
                    || r.replica_election_results.iter().any(|t| {
                        t.partition_result
                            .iter()
                            .any(|p| p.error_code == NOT_CONTROLLER)
                    })
            })
            .await?;
        let resp = &answered.resp;
        if resp.error_code != 0 {
            return Err(answered.error(api, None, resp.error_code, None));
        }
        let mut results: BTreeMap<(&str, i32), (i16, Option<String>)> = BTreeMap::new();
        for t in &resp.replica_election_results {
            for p in &t.partition_result {
                results.insert(
                    (t.topic.0.as_str(), p.partition_id),
                    (p.error_code, message(p.error_message.as_ref())),
                );
            }
        }
        Ok(partitions
            .iter()
            .map(|(topic, partition)| {
                let what = format!("partition {topic}-{partition}");
                let error = match results.get(&(topic.as_str(), *partition)) {
                    Some((0, _)) => None,
                    Some((code, msg)) => Some(answered.error(api, Some(&what), *code, msg.clone())),
                    None => Some(missing(&answered, api, &what)),
                };
                PartitionOutcome {
                    topic: topic.clone(),
                    partition: *partition,
                    error,
                }
            })
            .collect())
    }

    /// The values of `keys` on each resource as the broker reports them, empty values left
    /// out. Kafka's built-in defaults are included (whatever their source: tansu reports the
    /// configs set on a topic as defaults), so a caller tells "not set" by value. Topics are
    /// asked in one request to any broker, each broker's own configs from that broker; one
    /// result per resource, in order.
    pub async fn describe_configs(
        &mut self,
        resources: &[ConfigResource],
        keys: &[&str],
    ) -> Result<Vec<(ConfigResource, Result<BTreeMap<String, String>, KafkaError>)>, KafkaError>
    {
        let mut groups: BTreeMap<Option<i32>, Vec<usize>> = BTreeMap::new();
        for (i, r) in resources.iter().enumerate() {
            groups.entry(r.owner()).or_default().push(i);
        }
        // Null asks for every config, for brokers that cannot parse named keys (tansu 0.6
        // closes the connection; a snapshot learns that first).
        let names: Option<Vec<StrBytes>> = self
            .send_config_keys
            .then(|| keys.iter().map(|k| s(k)).collect());
        let mut out: Vec<Option<Result<BTreeMap<String, String>, KafkaError>>> =
            resources.iter().map(|_| None).collect();
        let api = &DESCRIBE_CONFIGS;
        for (owner, indices) in groups {
            let build = |_: i16| {
                DescribeConfigsRequest::default().with_resources(
                    indices
                        .iter()
                        .map(|&i| {
                            DescribeConfigsResource::default()
                                .with_resource_type(resources[i].kind())
                                .with_resource_name(s(&resources[i].name()))
                                .with_configuration_keys(names.clone())
                        })
                        .collect(),
                )
            };
            // Topics need no controller: any broker answers them (-1: the bootstrap one).
            let route = owner.or(Some(-1));
            let answered: Answered<DescribeConfigsResponse> =
                self.admin_call(route, api, build, |_| false).await?;
            for &i in &indices {
                let resource = &resources[i];
                let found = answered
                    .resp
                    .results
                    .iter()
                    .find(|r| resource.matches(r.resource_type, r.resource_name.as_str()));
                out[i] = Some(match found {
                    None => Err(missing(&answered, api, &resource.to_string())),
                    Some(r) if r.error_code != 0 => Err(answered.error(
                        api,
                        Some(&resource.to_string()),
                        r.error_code,
                        message(r.error_message.as_ref()),
                    )),
                    Some(r) => Ok(r
                        .configs
                        .iter()
                        // Filter by name too: some brokers (tansu) ignore the keys asked.
                        .filter(|c| keys.contains(&c.name.as_str()))
                        .filter_map(|c| {
                            let v = c.value.as_ref()?.trim();
                            (!v.is_empty()).then(|| (c.name.to_string(), v.to_owned()))
                        })
                        .collect()),
                });
            }
        }
        Ok(resources
            .iter()
            .cloned()
            .zip(out)
            .filter_map(|(r, o)| Some((r, o?)))
            .collect())
    }

    /// Sends one admin request to `broker` (`None`: the controller), retrying while the
    /// answer is NOT_CONTROLLER (`not_controller` says so) after refreshing Metadata.
    async fn admin_call<Req: Encodable, Resp: Decodable>(
        &mut self,
        broker: Option<i32>,
        api: &Api,
        build: impl Fn(i16) -> Req,
        not_controller: impl Fn(&Resp) -> bool,
    ) -> Result<Answered<Resp>, KafkaError> {
        let mut backoff = Backoff::new(RETRY_INITIAL, RETRY_MAX);
        let mut attempt = 1;
        loop {
            let via = self.route(broker).await?;
            let Some(live) = self.live_mut(via) else {
                // route() just made this connection; reaching here is a bug, not a panic.
                return Err(KafkaError::InvalidConfig {
                    field: "admin route",
                    reason: format!("the connection for {via:?} vanished"),
                });
            };
            let addr = live.conn.addr().to_owned();
            let Some(version) = (api.pick)(&live.versions) else {
                return Err(KafkaError::UnsupportedApi {
                    addr,
                    api: api.name,
                    client: range(api.ours),
                    broker: live.advertised.get(&(api.key as i16)).map(|&r| range(r)),
                });
            };
            let request = build(version);
            let result: Result<Resp, KafkaError> =
                live.conn.call(api.key, version, &request, api.schema).await;
            let resp = match result {
                Ok(resp) => resp,
                Err(e) => {
                    self.drop_connection(via);
                    return Err(e);
                }
            };
            if !not_controller(&resp) {
                return Ok(Answered {
                    resp,
                    version,
                    addr,
                });
            }
            // The controller moved: read Metadata again before the next attempt.
            self.routes.fresh = false;
            if attempt >= ADMIN_ATTEMPTS {
                return Err(KafkaError::BrokerError {
                    addr,
                    api: label(api.key, version),
                    code: NOT_CONTROLLER,
                    message: Some(format!(
                        "still not the controller after {ADMIN_ATTEMPTS} attempts, Metadata \
                         refreshed before each"
                    )),
                });
            }
            let delay = backoff.next();
            debug!(
                api = api.name,
                attempt,
                ?delay,
                "NOT_CONTROLLER; refreshing Metadata and retrying"
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// The connection for requests meant for `broker` (`None`: the controller; `Some(-1)`:
    /// any broker), opening it if needed.
    async fn route(&mut self, broker: Option<i32>) -> Result<Via, KafkaError> {
        if !self.routes.fresh || self.live.is_none() {
            self.refresh_routes().await?;
        }
        let Some(id) = broker.or(self.routes.controller) else {
            return Ok(Via::Bootstrap);
        };
        if id < 0 || self.live.as_ref().and_then(|l| l.self_id) == Some(id) {
            return Ok(Via::Bootstrap);
        }
        if self.routes.peers.contains_key(&id) {
            return Ok(Via::Peer(id));
        }
        // A broker that is down (not in Metadata) or unreachable from here: any broker
        // forwards the request to the controller.
        let Some(addr) = self.routes.addrs.get(&id).cloned() else {
            return Ok(Via::Bootstrap);
        };
        if self.routes.unreachable.contains(&id)
            || self.routes.unreachable.len() >= UNREACHABLE_ENOUGH
            || self.connected_to() == Some(addr.as_str())
        {
            return Ok(Via::Bootstrap);
        }
        match self.open(&addr).await {
            Ok((conn, versions, advertised)) => {
                debug!(broker = id, addr, "connected to broker for admin requests");
                self.routes.peers.insert(
                    id,
                    Live {
                        conn,
                        index: 0,
                        versions,
                        advertised,
                        self_id: Some(id),
                        reassignments_refused: false,
                    },
                );
                Ok(Via::Peer(id))
            }
            Err(e) => {
                if std::mem::replace(&mut self.routes.warned, true) {
                    debug!(broker = id, addr, error = %e, "broker unreachable, using bootstrap");
                } else {
                    warn!(
                        broker = id,
                        addr,
                        error = %e,
                        "cannot reach a broker at its advertised address; sending admin \
                         requests for brokers not reachable from here over the bootstrap \
                         connection (KRaft brokers forward them to the controller; further \
                         unreachable brokers are logged at debug level)"
                    );
                }
                self.routes.unreachable.insert(id);
                Ok(Via::Bootstrap)
            }
        }
    }

    /// Reads the brokers and the controller from Metadata (no topics) on the bootstrap
    /// connection, connecting first if needed.
    async fn refresh_routes(&mut self) -> Result<(), KafkaError> {
        let mut live = match self.live.take() {
            Some(live) => live,
            None => self.connect().await?,
        };
        let v = live.versions.metadata;
        let request = MetadataRequest::default()
            .with_topics(Some(Vec::new()))
            .with_allow_auto_topic_creation(v < 4);
        let result: Result<MetadataResponse, KafkaError> = live
            .conn
            .call(ApiKey::Metadata, v, &request, &wire::METADATA)
            .await;
        let metadata = match result {
            Ok(m) => m,
            Err(e) => {
                self.next_bootstrap = (live.index + 1) % self.config.bootstrap.len();
                return Err(e);
            }
        };
        if metadata.error_code != 0 {
            let e = KafkaError::BrokerError {
                addr: live.conn.addr().to_owned(),
                api: label(ApiKey::Metadata, v),
                code: metadata.error_code,
                message: None,
            };
            self.live = Some(live);
            return Err(e);
        }
        let brokers: Vec<Broker> = metadata.brokers.iter().map(broker_of).collect();
        if live.self_id.is_none() {
            live.self_id = identify(live.conn.addr(), live.conn.peer, &brokers);
        }
        let addrs: BTreeMap<i32, String> = brokers
            .iter()
            .map(|b| {
                let host = if b.host.contains(':') && !b.host.starts_with('[') {
                    format!("[{}]", b.host)
                } else {
                    b.host.clone()
                };
                (b.id, format!("{host}:{}", b.port))
            })
            .collect();
        // Keep connections to brokers still advertised at the same address.
        self.routes
            .peers
            .retain(|id, peer| addrs.get(id).map(String::as_str) == Some(peer.conn.addr()));
        self.routes.controller =
            (metadata.controller_id.0 >= 0).then_some(metadata.controller_id.0);
        self.routes.addrs = addrs;
        self.routes.unreachable.clear();
        self.routes.fresh = true;
        self.live = Some(live);
        Ok(())
    }

    fn live_mut(&mut self, via: Via) -> Option<&mut Live> {
        match via {
            Via::Bootstrap => self.live.as_mut(),
            Via::Peer(id) => self.routes.peers.get_mut(&id),
        }
    }

    /// After a transport failure: the connection may hold half a response, drop it.
    fn drop_connection(&mut self, via: Via) {
        match via {
            Via::Bootstrap => {
                if let Some(live) = self.live.take() {
                    self.next_bootstrap = (live.index + 1) % self.config.bootstrap.len();
                }
            }
            Via::Peer(id) => {
                self.routes.peers.remove(&id);
            }
        }
        self.routes.fresh = false;
    }
}

/// The error for an answer that leaves out an item the request named.
fn missing<R>(answered: &Answered<R>, api: &Api, what: &str) -> KafkaError {
    KafkaError::Decode {
        addr: answered.addr.clone(),
        api: answered.api(api),
        detail: format!("expected a result for {what}, found none"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ongoing_reassignment_target_and_original() {
        let r = OngoingReassignment {
            topic: "t".into(),
            partition: 1,
            replicas: vec![4, 1, 5, 2, 3],
            adding: vec![4, 5],
            removing: vec![2, 3],
        };
        assert_eq!(r.target(), [4, 1, 5]);
        assert_eq!(r.original(), [1, 2, 3]);
        assert_eq!(r.name(), "t-1");
    }

    #[test]
    fn topics_group_in_first_seen_order() {
        let grouped = by_topic([
            ("b".to_owned(), 1),
            ("a".to_owned(), 2),
            ("b".to_owned(), 3),
        ]);
        assert_eq!(
            grouped,
            [("b".to_owned(), vec![1, 3]), ("a".to_owned(), vec![2])]
        );
    }

    #[test]
    fn config_resources_name_themselves() {
        assert_eq!(ConfigResource::Broker(3).to_string(), "broker 3");
        assert_eq!(ConfigResource::Topic("t".into()).to_string(), "topic t");
        assert!(ConfigResource::Broker(3).matches(RESOURCE_BROKER, "3"));
        assert!(!ConfigResource::Broker(3).matches(RESOURCE_TOPIC, "3"));
        assert_eq!(ConfigOp::Subtract("0:1".into()).code(), 3);
        assert_eq!(ConfigOp::Delete.value(), None);
    }

    #[test]
    fn partition_outcome_codes() {
        let ok = PartitionOutcome {
            topic: "t".into(),
            partition: 0,
            error: None,
        };
        assert_eq!(ok.code(), 0);
        let refused = PartitionOutcome {
            error: Some(KafkaError::BrokerError {
                addr: "k:9092".into(),
                api: "AlterPartitionReassignments v1 (partition t-0)".into(),
                code: NO_REASSIGNMENT_IN_PROGRESS,
                message: None,
            }),
            ..ok
        };
        assert_eq!(refused.code(), NO_REASSIGNMENT_IN_PROGRESS);
        assert_eq!(
            refused.error.map(|e| e.to_string()).unwrap_or_default(),
            "Kafka broker k:9092 answered AlterPartitionReassignments v1 (partition t-0) with \
             NO_REASSIGNMENT_IN_PROGRESS (85)"
        );
    }
}
