//! Shared test support. `mod support;` in a test crate brings in the scripted Kafka
//! server (`support::kafka_server`), the agent harness (`support::harness`) and the fake
//! Kubernetes API server (`support::fake_api`).
#![allow(dead_code)]

pub mod fake_api;
pub mod harness;
pub mod kafka_server;
