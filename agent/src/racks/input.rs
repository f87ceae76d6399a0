//! The planner's inputs: brokers and partitions, from a `--from` JSON file (a plan checked
//! without a cluster) or from a Kafka [`Snapshot`].
//!
//! The file is read strictly: unknown keys are errors, and every error names the JSON path
//! of the bad field (`partitions[3].replicas[1]: broker 99 is not in brokers`), because a
//! hand-written or exported file is where typos happen.

use std::collections::HashMap;
use std::path::Path;

use kpool_policy::Policy;
use serde::Deserialize;

use super::RackPlacer;
use super::json_file::{self, JsonFileError};
use super::plan::{Assignment, BrokerInput};
use crate::snapshot::Snapshot;

/// Brokers and partitions to plan over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inputs {
    pub brokers: Vec<BrokerInput>,
    /// Every partition (the planner counts their load, even those it does not plan).
    pub partitions: Vec<Assignment>,
    /// Indices into `partitions` of those a reassignment is already moving: left alone.
    pub reassigning: Vec<usize>,
}

/// A `--from` file that cannot be used.
pub type InputError = JsonFileError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    brokers: Vec<FileBroker>,
    partitions: Vec<FilePartition>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBroker {
    id: i32,
    #[serde(default)]
    rack: Option<String>,
    #[serde(default = "yes")]
    alive: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePartition {
    topic: String,
    partition: i32,
    replicas: Vec<i32>,
}

/// Reads a `--from` file (see [`parse_file`]).
pub fn read_file(path: &Path, policy: &Policy) -> Result<Inputs, InputError> {
    json_file::read(path, |text, origin| parse_file(text, origin, policy))
}

/// Parses `{"brokers":[{"id":0,"rack":"k8s-a-eu-west-1a","alive":true},..],
/// "partitions":[{"topic":"t","partition":0,"replicas":[0,3,..]},..]}`: the first replica
/// is the leader; `alive` defaults to true; a broker without `rack` is never a destination.
/// Checked: ids are unique and not negative, racks parse with the policy's `rackFormat`,
/// every replica names a listed broker once, each (topic, partition) appears once.
pub fn parse_file(text: &str, origin: &str, policy: &Policy) -> Result<Inputs, InputError> {
    let invalid = |path, message| InputError::invalid(origin, path, message);
    let doc: FileDoc = json_file::parse(text, origin)?;

    let mut placer = RackPlacer::new(policy);
    let mut seen: HashMap<i32, usize> = HashMap::with_capacity(doc.brokers.len());
    for (i, b) in doc.brokers.iter().enumerate() {
        if b.id < 0 {
            return Err(invalid(
                format!("brokers[{i}].id"),
                format!("expected a broker id of 0 or more, found {}", b.id),
            ));
        }
        if let Some(first) = seen.insert(b.id, i) {
            return Err(invalid(
                format!("brokers[{i}].id"),
                format!("broker {} is listed twice (also brokers[{first}])", b.id),
            ));
        }
        if let Some(rack) = &b.rack
            && placer.place(rack).is_none()
        {
            return Err(invalid(
                format!("brokers[{i}].rack"),
                format!(
                    "{rack:?} does not parse with the policy's rackFormat {:?} (zones {})",
                    policy.spec().rack_format,
                    policy.spec().zones.join(", ")
                ),
            ));
        }
    }
    let mut names: HashMap<(&str, i32), usize> = HashMap::with_capacity(doc.partitions.len());
    for (i, p) in doc.partitions.iter().enumerate() {
        if p.topic.is_empty() {
            return Err(invalid(
                format!("partitions[{i}].topic"),
                "expected a topic name, found an empty string".to_owned(),
            ));
        }
        if p.partition < 0 {
            return Err(invalid(
                format!("partitions[{i}].partition"),
                format!("expected a partition of 0 or more, found {}", p.partition),
            ));
        }
        if let Some(first) = names.insert((&p.topic, p.partition), i) {
            return Err(invalid(
                format!("partitions[{i}]"),
                format!(
                    "{}-{} is listed twice (also partitions[{first}])",
                    p.topic, p.partition
                ),
            ));
        }
        if p.replicas.is_empty() {
            return Err(invalid(
                format!("partitions[{i}].replicas"),
                "expected at least one replica, found none".to_owned(),
            ));
        }
        for (j, r) in p.replicas.iter().enumerate() {
            if !seen.contains_key(r) {
                return Err(invalid(
                    format!("partitions[{i}].replicas[{j}]"),
                    format!("broker {r} is not in brokers"),
                ));
            }
            if let Some(first) = p.replicas[..j].iter().position(|x| x == r) {
                return Err(invalid(
                    format!("partitions[{i}].replicas[{j}]"),
                    format!("broker {r} is listed twice (also replicas[{first}])"),
                ));
            }
        }
    }
    Ok(Inputs {
        brokers: doc
            .brokers
            .into_iter()
            .map(|b| BrokerInput {
                id: b.id,
                rack: b.rack,
                alive: b.alive,
            })
            .collect(),
        partitions: doc
            .partitions
            .into_iter()
            .map(|p| Assignment {
                topic: p.topic,
                partition: p.partition,
                replicas: p.replicas,
                leader: None,
            })
            .collect(),
        reassigning: Vec::new(),
    })
}

/// The inputs a Kafka snapshot gives: the brokers in Metadata are the live ones (a replica
/// on any other broker is offline), the leader is Metadata's when it is a replica, and
/// partitions a reassignment is adding replicas to are marked as in flight.
pub fn from_snapshot(snapshot: &Snapshot) -> Inputs {
    let brokers = snapshot
        .brokers
        .iter()
        .map(|b| BrokerInput {
            id: b.id,
            rack: b.rack.clone(),
            alive: true,
        })
        .collect();
    let mut partitions = Vec::new();
    let mut reassigning = Vec::new();
    for t in &snapshot.topics {
        for p in &t.partitions {
            if !p.adding_replicas.is_empty() {
                reassigning.push(partitions.len());
            }
            partitions.push(Assignment {
                topic: t.name.clone(),
                partition: p.index,
                replicas: p.replicas.clone(),
                leader: (p.leader >= 0).then_some(p.leader),
            });
        }
    }
    Inputs {
        brokers,
        partitions,
        reassigning,
    }
}
