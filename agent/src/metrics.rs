//! The agent's Prometheus metrics, names prefixed `kpool_agent_`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::health::Health;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BrokerLabel {
    pub broker: i32,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PodLabels {
    pub namespace: String,
    pub pod: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DimensionLabel {
    pub dimension: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartLabel {
    pub part: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabel {
    pub resource: &'static str,
}

/// The agent's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub partitions: Family<StateLabel, Gauge>,
    pub broker_registered: Family<BrokerLabel, Gauge>,
    pub broker_state: Family<BrokerLabel, Gauge>,
    pub restart_safe: Family<BrokerLabel, Gauge>,
    pub pod_ready: Family<PodLabels, Gauge>,
    pub rack_offenders: Family<DimensionLabel, Gauge>,
    pub poll_duration: Histogram,
    pub poll_errors: Counter,
    pub last_success: Gauge,
    /// Seconds the Kubernetes pod watch has been out of contact (0 when in contact).
    pub kube_watch_outage: Gauge,
    pub active_overrides: Gauge,
    /// Violations acted on (Event, audit line, eviction when enforcing), by kind.
    pub guard_violations_total: Family<KindLabel, Counter>,
    /// Violations present at the last guard round, by kind.
    pub guard_violations: Family<KindLabel, Gauge>,
    /// Evictions by result (evicted, eviction-blocked, eviction-failed, already-gone).
    pub guard_evictions: Family<ResultLabel, Counter>,
    /// Evictions of foreign pods refused by a PodDisruptionBudget (each a PoolBreached Event).
    pub guard_eviction_refusals: Counter,
    /// Foreign pods on the node whose eviction a PodDisruptionBudget refused at the last
    /// attempt: the pool is breached and the agent cannot remove them.
    pub pool_breached: Gauge,
    /// Deletions of foreign pods after `guard.deleteAfterRefusals` refusals, by result
    /// (deleted, delete-failed, already-gone).
    pub guard_deletions: Family<ResultLabel, Counter>,
    /// CPU cores used, by part (node, brokers, other_pods, kubernetes, rest, reserved).
    pub overhead_cpu: Family<PartLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Memory bytes, by part (node, brokers, other_pods, kubernetes, rest, reserved).
    pub overhead_memory: Family<PartLabel, Gauge>,
    /// Share of used resources not used by brokers, by resource.
    pub overhead_ratio: Family<ResourceLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Share of capacity withheld from pods (kube/system reserved, eviction thresholds).
    pub reserved_share: Family<ResourceLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Node capacity in CPU cores as the OS sees it.
    pub node_cpu_cores: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub overhead_sample_errors: Counter,
    /// The API listener's connections (open, cap, closed by reason, requests timed out).
    pub listeners: kpool_serve::ListenerMetrics,
    /// 1 while this agent holds the racks Lease (it alone heals).
    pub racks_leader: Gauge,
    /// Partitions due for reassignment at the last healing round.
    pub racks_due: Gauge,
    /// Rack reassignments by result (reassignment-submitted, reassignment-done,
    /// reassignment-left-alone, reported-audit-mode).
    pub racks_reassignments_total: Family<ResultLabel, Counter>,
    /// Healing runs by how they ended.
    pub racks_runs_total: Family<ResultLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("kpool_agent");
        let partitions = Family::<StateLabel, Gauge>::default();
        r.register(
            "partitions",
            "Partitions by state (total, under_replicated, offline, under_min_isr, at_min_isr)",
            partitions.clone(),
        );
        let broker_registered = Family::<BrokerLabel, Gauge>::default();
        r.register(
            "broker_registered",
            "1 when the broker is registered with the cluster",
            broker_registered.clone(),
        );
        let broker_state = Family::<BrokerLabel, Gauge>::default();
        r.register(
            "broker_state",
            "BrokerState from the JMX exporter (3 = running)",
            broker_state.clone(),
        );
        let restart_safe = Family::<BrokerLabel, Gauge>::default();
        r.register(
            "broker_restart_safe",
            "1 when restarting the broker keeps every partition at or above min ISR",
            restart_safe.clone(),
        );
        let pod_ready = Family::<PodLabels, Gauge>::default();
        r.register(
            "pod_ready",
            "Last readiness verdict of a broker pod (1 ready)",
            pod_ready.clone(),
        );
        let rack_offenders = Family::<DimensionLabel, Gauge>::default();
        r.register(
            "rack_distribution_offenders",
            "Partitions outside the rack rule, by dimension (zone, cluster; cell with racks.rule perCell)",
            rack_offenders.clone(),
        );
        let poll_duration = Histogram::new([
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]);
        r.register_with_unit(
            "kafka_poll_duration",
            "Time to poll Kafka and evaluate health",
            Unit::Seconds,
            poll_duration.clone(),
        );
        let poll_errors = Counter::default();
        r.register(
            "kafka_poll_errors",
            "Failed Kafka polls",
            poll_errors.clone(),
        );
        let last_success = Gauge::default();
        r.register(
            "kafka_last_successful_poll_timestamp_seconds",
            "Unix time of the last successful Kafka poll",
            last_success.clone(),
        );
        let kube_watch_outage = Gauge::default();
        r.register(
            "kube_pod_watch_outage_seconds",
            "How long the watch of this node's pods has been out of contact with the Kubernetes API (0: in contact); verdicts go stale past readiness.staleAfterSeconds",
            kube_watch_outage.clone(),
        );
        let active_overrides = Gauge::default();
        r.register(
            "active_readiness_overrides",
            "Broker pods whose readiness an operator override decides now",
            active_overrides.clone(),
        );
        let guard_violations_total = Family::<KindLabel, Counter>::default();
        r.register(
            "guard_violations",
            "Guard violations acted on (Event and audit line; eviction when enforcing), by kind",
            guard_violations_total.clone(),
        );
        let guard_violations = Family::<KindLabel, Gauge>::default();
        r.register(
            "guard_current_violations",
            "Guard violations present at the last round, by kind",
            guard_violations.clone(),
        );
        let guard_evictions = Family::<ResultLabel, Counter>::default();
        r.register(
            "guard_evictions",
            "Evictions requested by the guard, by result",
            guard_evictions.clone(),
        );
        let guard_eviction_refusals = Counter::default();
        r.register(
            "guard_eviction_refusals",
            "Evictions of foreign pods refused by a PodDisruptionBudget (HTTP 429), each reported as a PoolBreached Event",
            guard_eviction_refusals.clone(),
        );
        let pool_breached = Gauge::default();
        r.register(
            "pool_breached",
            "Foreign pods on this pool node whose eviction a PodDisruptionBudget refuses: the pool is breached",
            pool_breached.clone(),
        );
        let guard_deletions = Family::<ResultLabel, Counter>::default();
        r.register(
            "guard_deletions",
            "Foreign pods deleted after guard.deleteAfterRefusals refused evictions (enforce mode), by result",
            guard_deletions.clone(),
        );
        let overhead_cpu = Family::<PartLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        r.register(
            "overhead_cpu_cores",
            "CPU cores used on the node by part (node = all used, reserved = capacity - allocatable)",
            overhead_cpu.clone(),
        );
        let overhead_memory = Family::<PartLabel, Gauge>::default();
        r.register_with_unit(
            "overhead_memory",
            "Memory on the node by part (node = all used, reserved = capacity - allocatable)",
            Unit::Bytes,
            overhead_memory.clone(),
        );
        let overhead_ratio =
            Family::<ResourceLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        r.register(
            "overhead_ratio",
            "Share of the node's used resources not used by brokers (0..1)",
            overhead_ratio.clone(),
        );
        let reserved_share =
            Family::<ResourceLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        r.register(
            "reserved_share",
            "Share of node capacity withheld from pods (capacity - allocatable) / capacity",
            reserved_share.clone(),
        );
        let node_cpu_cores = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        r.register(
            "node_cpu_cores",
            "CPU cores of the node as the OS sees them",
            node_cpu_cores.clone(),
        );
        let overhead_sample_errors = Counter::default();
        r.register(
            "overhead_sample_errors",
            "Overhead samples that failed",
            overhead_sample_errors.clone(),
        );
        let listeners = kpool_serve::ListenerMetrics::default();
        listeners.register(&mut r);
        let racks_leader = Gauge::default();
        r.register(
            "racks_leader",
            "1 while this agent holds the racks Lease and heals the rack distribution",
            racks_leader.clone(),
        );
        let racks_due = Gauge::default();
        r.register(
            "racks_due",
            "Partitions due for reassignment at the last healing round",
            racks_due.clone(),
        );
        let racks_reassignments_total = Family::<ResultLabel, Counter>::default();
        r.register(
            "racks_reassignments",
            "Rack reassignments by result",
            racks_reassignments_total.clone(),
        );
        let racks_runs_total = Family::<ResultLabel, Counter>::default();
        r.register(
            "racks_runs",
            "Rack healing runs by how they ended",
            racks_runs_total.clone(),
        );
        for result in crate::heal::RunResult::ALL {
            let _ = racks_runs_total.get_or_create(&ResultLabel {
                result: result.as_str(),
            });
        }
        for kind in crate::guard::Kind::ALL {
            guard_violations
                .get_or_create(&KindLabel { kind: kind.code() })
                .set(0);
            let _ = guard_violations_total.get_or_create(&KindLabel { kind: kind.code() });
        }
        Self {
            guard_violations_total,
            guard_violations,
            guard_evictions,
            guard_eviction_refusals,
            pool_breached,
            guard_deletions,
            overhead_cpu,
            overhead_memory,
            overhead_ratio,
            reserved_share,
            node_cpu_cores,
            overhead_sample_errors,
            listeners,
            racks_leader,
            racks_due,
            racks_reassignments_total,
            racks_runs_total,
            registry: r,
            partitions,
            broker_registered,
            broker_state,
            restart_safe,
            pod_ready,
            rack_offenders,
            poll_duration,
            poll_errors,
            last_success,
            kube_watch_outage,
            active_overrides,
        }
    }

    /// Publishes one evaluation.
    pub fn record_health(&self, h: &Health) {
        let s = &h.summary;
        for (state, n) in [
            ("total", s.partitions),
            ("under_replicated", s.under_replicated.count),
            ("offline", s.offline.count),
            ("under_min_isr", s.under_min_isr.count),
            ("at_min_isr", s.at_min_isr.count),
        ] {
            self.partitions
                .get_or_create(&StateLabel { state })
                .set(gauge(n));
        }
        self.broker_registered.clear();
        self.restart_safe.clear();
        for b in h.brokers.values() {
            let l = BrokerLabel { broker: b.id };
            self.broker_registered
                .get_or_create(&l)
                .set(i64::from(b.registered));
            self.restart_safe
                .get_or_create(&l)
                .set(i64::from(b.restart_safe));
        }
        self.rack_offenders
            .get_or_create(&DimensionLabel { dimension: "zone" })
            .set(gauge(h.racks.zone_skew.count));
        self.rack_offenders
            .get_or_create(&DimensionLabel {
                dimension: "cluster",
            })
            .set(gauge(h.racks.cluster_skew.count));
        self.rack_offenders
            .get_or_create(&DimensionLabel { dimension: "cell" })
            .set(gauge(h.racks.cell_skew.count));
    }

    /// Publishes one overhead sample.
    pub fn record_overhead(&self, o: &crate::overhead::Overhead) {
        self.node_cpu_cores.set(o.node.cpu_cores);
        let reserved = o.reserved.unwrap_or_default();
        for (part, cpu, mem) in [
            ("node", o.node.cpu_used_cores, o.node.memory_used_bytes),
            ("brokers", o.brokers.cpu_cores, o.brokers.memory_bytes),
            (
                "other_pods",
                o.other_pods.cpu_cores,
                o.other_pods.memory_bytes,
            ),
            (
                "kubernetes",
                o.kubernetes.cpu_cores,
                o.kubernetes.memory_bytes,
            ),
            ("rest", o.rest.cpu_cores, o.rest.memory_bytes),
            ("reserved", reserved.cpu_cores, reserved.memory_bytes),
        ] {
            self.overhead_cpu
                .get_or_create(&PartLabel { part })
                .set(cpu);
            self.overhead_memory
                .get_or_create(&PartLabel { part })
                .set(i64::try_from(mem).unwrap_or(i64::MAX));
        }
        for (resource, ratio, share) in [
            ("cpu", o.overhead_ratio.cpu, reserved.cpu_share),
            ("memory", o.overhead_ratio.memory, reserved.memory_share),
        ] {
            self.overhead_ratio
                .get_or_create(&ResourceLabel { resource })
                .set(ratio);
            self.reserved_share
                .get_or_create(&ResourceLabel { resource })
                .set(share);
        }
    }

    /// The Prometheus text exposition.
    /// Counts a healing run's end.
    pub fn racks_runs(&self, result: crate::heal::RunResult) {
        self.racks_runs_total
            .get_or_create(&ResultLabel {
                result: result.as_str(),
            })
            .inc();
    }

    /// Counts a rack reassignment by result (an audit action's string, or
    /// `reassignment-done`).
    pub fn racks_reassignments(&self, result: &'static str) {
        self.racks_reassignments_total
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
