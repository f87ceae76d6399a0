//! kpool-agent: Kafka health and readiness verdicts for the brokers on this node.
//!
//! - `kafka/`: the protocol client that takes a [`snapshot::Snapshot`] of the cluster.
//! - `health/`: the pure engine (partition states, restart safety, racks, verdicts).
//! - `service`: the cache of the last evaluated poll and the poll loop.
//! - `api`: the read-only HTTP API the probe asks.
//! - `pods`, `overrides`, `jmx`: pod → broker mapping, the operator override, BrokerState.

pub mod api;
pub mod health;
pub mod jmx;
pub mod kafka;
pub mod metrics;
pub mod overrides;
pub mod pods;
pub mod service;
pub mod snapshot;
