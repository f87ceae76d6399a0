//! kpool's test doubles, shared by the crates' tests, the end-to-end suite, the benches and
//! the fuzz targets (and, next, the mesh and rack tests):
//!
//! - [`kafka_server`]: a Kafka-protocol server built on kafka-protocol's own encoders that
//!   serves scripted cluster state and misbehaves on request;
//! - [`fake_api`] (feature `kube`): a fake Kubernetes API server behind kube-rs's
//!   `tower-test` mock service, so the production client code runs unchanged;
//! - [`fixtures`]: the AdmissionReviews captured from a real kube-apiserver;
//! - [`tansu`]: a real Kafka-compatible broker and a real Kafka client, when installed.

#[cfg(feature = "kube")]
pub mod fake_api;
pub mod fixtures;
pub mod kafka_server;
pub mod tansu;
