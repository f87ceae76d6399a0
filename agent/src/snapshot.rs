//! What the agent knows about the Kafka cluster after one poll: plain data, produced by
//! the protocol client and consumed by the pure health engine.

use serde::Serialize;

/// One poll's view of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// From DescribeCluster or Metadata, when the broker reports it.
    pub cluster_id: Option<String>,
    /// The active controller, when known (`-1` from Kafka means unknown → `None`).
    pub controller_id: Option<i32>,
    /// Brokers registered with the cluster (the Metadata broker list: the live ones).
    pub brokers: Vec<Broker>,
    pub topics: Vec<Topic>,
    /// The brokers' `min.insync.replicas` default, used for topics that set none.
    /// `None` when the broker config could not be read (then Kafka's own default, 1).
    pub default_min_isr: Option<i32>,
}

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Broker {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

/// A topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Topic {
    pub name: String,
    pub internal: bool,
    /// `min.insync.replicas` set explicitly on the topic (DescribeConfigs), if any.
    pub min_isr: Option<i32>,
    pub partitions: Vec<Partition>,
}

/// A partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Partition {
    pub index: i32,
    /// `-1` when there is no leader.
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline_replicas: Vec<i32>,
    /// Replicas a reassignment in progress is adding (ListPartitionReassignments; empty
    /// when none is, or when the cluster cannot say). Metadata lists them among `replicas`,
    /// but they do not make a partition under-replicated.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub adding_replicas: Vec<i32>,
}

/// Kafka's default for `min.insync.replicas` when nothing sets it.
pub const KAFKA_DEFAULT_MIN_ISR: i32 = 1;

impl Snapshot {
    /// The effective `min.insync.replicas` of `topic`: the topic's, else the broker default,
    /// else Kafka's.
    pub fn min_isr(&self, topic: &Topic) -> i32 {
        topic
            .min_isr
            .or(self.default_min_isr)
            .unwrap_or(KAFKA_DEFAULT_MIN_ISR)
    }
}
