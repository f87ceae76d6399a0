//! Prometheus metrics (text exposition from prometheus-client), names prefixed `kpool_`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of one admission request outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: &'static str,
    pub decision: &'static str,
    pub reason: &'static str,
}

/// An endpoint label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    pub endpoint: &'static str,
}

/// `success` or `failure`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

type HistogramFamily = Family<EndpointLabel, Histogram, fn() -> Histogram>;

/// Latency buckets from 10 µs to 1 s, in seconds.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The webhook's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: HistogramFamily,
    pub in_flight: Gauge,
    pub cert_not_after: Gauge,
    pub cert_reloads: Family<ResultLabel, Counter>,
    pub audit_failures: Counter,
    pub audit_dropped: Counter,
    pub audit_reopens: Counter,
    /// Connections of both listeners (open, cap, closed by reason, requests timed out).
    pub listeners: kpool_serve::ListenerMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kpool_webhook");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "admission_requests",
            "Admission requests by endpoint, decision and reason code",
            requests.clone(),
        );
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "admission_duration",
            "Time to answer an admission request, from body received to response encoded",
            prometheus_client::registry::Unit::Seconds,
            latency.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "in_flight_requests",
            "Admission requests being answered",
            in_flight.clone(),
        );
        let cert_not_after = Gauge::default();
        registry.register(
            "serving_certificate_not_after_seconds",
            "Unix time at which the serving certificate expires",
            cert_not_after.clone(),
        );
        let cert_reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "certificate_reloads",
            "Serving certificate reloads by result (a failed reload keeps the old pair)",
            cert_reloads.clone(),
        );
        let audit_failures = Counter::default();
        registry.register(
            "audit_write_failures",
            "Audit lines that could not be written (the decision was still answered)",
            audit_failures.clone(),
        );
        let audit_dropped = Counter::default();
        registry.register(
            "audit_lines_dropped",
            "Audit lines dropped because the writer fell behind",
            audit_dropped.clone(),
        );
        let audit_reopens = Counter::default();
        registry.register(
            "audit_reopens",
            "Audit log file reopened because its path no longer named the open file (removed, renamed or replaced, or its folder removed)",
            audit_reopens.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "Build information", build);
        let listeners = kpool_serve::ListenerMetrics::default();
        listeners.register(&mut registry);
        Self {
            registry,
            requests,
            latency,
            in_flight,
            cert_not_after,
            cert_reloads,
            audit_failures,
            audit_dropped,
            audit_reopens,
            listeners,
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
