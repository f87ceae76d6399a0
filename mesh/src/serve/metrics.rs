//! What `kpool-mesh serve` reports on `/metrics`: the xDS protocol's numbers
//! ([`XdsMetrics`]) and the membership's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::xds::XdsMetrics;

/// Every metric of one `kpool-mesh serve` process.
#[derive(Debug, Default)]
pub struct MeshMetrics {
    pub xds: Arc<XdsMetrics>,
    ready: Gauge,
    ready_flag: AtomicBool,
    stale: Gauge,
    brokers: Gauge,
    generation: Gauge,
    kafka_poll_failures: Counter,
    changes: Counter,
    pub listeners: kpool_serve::ListenerMetrics,
}

impl MeshMetrics {
    /// The registry holding every metric, prefixed `kpool_mesh_`.
    pub fn registry(self: &Arc<Self>) -> Registry {
        let mut registry = Registry::default();
        self.xds.register(&mut registry);
        let r = registry.sub_registry_with_prefix("kpool_mesh");
        r.register(
            "ready",
            "1 once the first complete snapshot is published (readiness)",
            self.ready.clone(),
        );
        r.register(
            "membership_stale",
            "1 while Kafka does not answer and the last known broker set is served",
            self.stale.clone(),
        );
        r.register(
            "membership_brokers",
            "Brokers in the served snapshot",
            self.brokers.clone(),
        );
        r.register(
            "snapshot_generation",
            "Snapshots published since start (the served snapshot's number)",
            self.generation.clone(),
        );
        r.register(
            "kafka_poll_failures",
            "Kafka Metadata polls that failed",
            self.kafka_poll_failures.clone(),
        );
        r.register(
            "membership_changes",
            "Snapshots published (membership changes, the first included)",
            self.changes.clone(),
        );
        self.listeners.register(&mut registry);
        registry
    }

    pub(crate) fn published(&self, generation: u64, brokers: usize) {
        self.generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
        self.brokers.set(i64::try_from(brokers).unwrap_or(i64::MAX));
        self.changes.inc();
        self.ready.set(1);
        self.ready_flag.store(true, Ordering::Relaxed);
    }

    pub(crate) fn kafka_poll_failed(&self) {
        self.kafka_poll_failures.inc();
    }

    pub(crate) fn set_stale(&self, stale: bool) {
        self.stale.set(i64::from(stale));
    }

    /// Whether the first complete snapshot is published.
    pub fn is_ready(&self) -> bool {
        self.ready_flag.load(Ordering::Relaxed)
    }

    /// Whether the served broker set is the last known one, Kafka not answering.
    pub fn is_stale(&self) -> bool {
        self.stale.get() == 1
    }

    /// Failed Kafka polls.
    pub fn kafka_poll_failures(&self) -> u64 {
        self.kafka_poll_failures.get()
    }
}
