//! kpool-agent: Kafka health and readiness verdicts for the brokers on this node.
//!
//! - `kafka/`: the protocol client that takes a [`snapshot::Snapshot`] of the cluster.
//! - `health/`: the pure engine (partition states, restart safety, racks, verdicts).
//! - `service`: the cache of the last evaluated poll and the poll loop.
//! - `api`: the read-only HTTP API the probe asks.
//! - `pods`, `overrides`, `jmx`: pod → broker mapping, the operator override, BrokerState.
//! - `pool`: the pool rules' view of Pod objects, and whether the controllers pods name are real.
//! - `nodeview`: this node's pods and Node from Kubernetes watches, and their contact.
//! - `racks/`: the rack planner (fewest moves to balance partitions over clusters x zones).
//! - `guard/`: one broker per node, no foreign pods, node compliance, rack drift.
//! - `overhead/`: how much of the node Kubernetes itself takes (cgroup v2 + sysinfo).
//! - `heal/`: racks self-healing (one agent at a time, offenders that persist, a move budget).
//! - `lease`: one agent at a time for cluster-wide work (a Kubernetes Lease).
//! - `backoff`: exponential backoff and the wait a shutdown cuts short, for every loop.
//! - `start`: every part started together, the API behind `kpool-serve`'s bounds.

pub mod api;
pub mod audit;
pub mod backoff;
pub mod guard;
pub mod heal;
pub mod health;
pub mod jmx;
pub mod kafka;
pub mod lease;
pub mod metrics;
pub mod nodeview;
pub mod overhead;
pub mod overrides;
pub mod pods;
pub mod pool;
pub mod racks;
pub mod service;
pub mod snapshot;
pub mod start;
