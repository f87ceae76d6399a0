//! Shared test support. `mod support;` in a test crate brings in the agent harness
//! (`support::harness`) and, from `kpool-testkit`, the scripted Kafka server
//! (`support::kafka_server`) and the fake Kubernetes API server (`support::fake_api`).
#![allow(dead_code)]

pub mod harness;
// Each test crate uses its own share of these.
#[allow(unused_imports)]
pub use kpool_testkit::{fake_api, kafka_server};
