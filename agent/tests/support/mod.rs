//! Shared test support. `mod support;` in a test crate brings in the scripted Kafka
//! server as `support::kafka_server`.
#![allow(dead_code)]

pub mod harness;
pub mod kafka_server;
