//! The gRPC shell around [`StreamState`]: tonic's `StreamAggregatedResources`, one task per
//! stream feeding the state machine with the client's requests and the published
//! snapshots, sending what it returns, and counting what happened.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::snapshot::Snapshot;
use super::stream::{Event, Step, StreamState};

/// The largest request accepted from a client (a DiscoveryRequest of
/// [`super::stream::MAX_RESOURCE_NAMES`] names of the longest length fits).
pub const MAX_REQUEST_BYTES: usize = 2 * 1024 * 1024;
/// Responses queued per stream: one is in flight at a time, so one more is only ever the
/// next; a bound keeps a client that does not read from holding more.
pub const RESPONSE_QUEUE: usize = 2;

/// The published snapshot; `None` until the first complete one (requests wait for it).
pub type Snapshots = watch::Receiver<Option<Arc<Snapshot>>>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabel {
    r#type: &'static str,
}

/// The control plane's protocol metrics.
#[derive(Debug, Default)]
pub struct XdsMetrics {
    streams: Gauge,
    pushes: Family<TypeLabel, Counter>,
    acks: Family<TypeLabel, Counter>,
    nacks: Family<TypeLabel, Counter>,
    stale: Counter,
    refused: Counter,
    in_sync: Gauge,
    change_to_ack_ms: Gauge,
    sync: Mutex<SyncTracker>,
}

/// Which streams have caught up with the current snapshot, and when the last did.
#[derive(Debug, Default)]
struct SyncTracker {
    current: Option<Instant>,
    synced: i64,
    last: Option<std::time::Duration>,
}

impl XdsMetrics {
    /// Registers the metrics under `kpool_mesh_xds_*`.
    pub fn register(self: &Arc<Self>, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("kpool_mesh_xds");
        r.register(
            "streams",
            "Connected ADS streams (client sidecars)",
            self.streams.clone(),
        );
        r.register(
            "pushes",
            "Responses sent, by type (cds, eds, lds)",
            self.pushes.clone(),
        );
        r.register("acks", "Responses ACKed, by type", self.acks.clone());
        r.register(
            "nacks",
            "Responses rejected by a client (NACK), by type; the client keeps its previous version",
            self.nacks.clone(),
        );
        r.register(
            "stale_requests",
            "Requests with an old nonce, ignored",
            self.stale.clone(),
        );
        r.register(
            "refused_streams",
            "Streams closed for a request past the per-stream bounds",
            self.refused.clone(),
        );
        r.register(
            "streams_in_sync",
            "Streams that have ACKed the current snapshot for every type they subscribe to",
            self.in_sync.clone(),
        );
        r.register(
            "change_to_last_ack_milliseconds",
            "From the current membership change to the last stream's ACK of it",
            self.change_to_ack_ms.clone(),
        );
    }

    /// Connected streams.
    pub fn streams(&self) -> i64 {
        self.streams.get()
    }

    /// NACKs received, by type (`cds`, `eds`, `lds`).
    pub fn nacks(&self, kind: &'static str) -> u64 {
        self.nacks.get_or_create(&TypeLabel { r#type: kind }).get()
    }

    /// Responses sent, by type.
    pub fn pushes(&self, kind: &'static str) -> u64 {
        self.pushes.get_or_create(&TypeLabel { r#type: kind }).get()
    }

    /// Streams in sync with the snapshot created at `created`, and the time from its
    /// creation to the last of them catching up.
    pub fn synced(&self, created: Instant) -> (i64, Option<std::time::Duration>) {
        let t = self.sync.lock().unwrap_or_else(|e| e.into_inner());
        if t.current == Some(created) {
            (t.synced, t.last)
        } else {
            (0, None)
        }
    }

    fn record_sync(&self, snapshot: &Snapshot) {
        let now = Instant::now();
        let mut t = self.sync.lock().unwrap_or_else(|e| e.into_inner());
        if t.current != Some(snapshot.created) {
            if t.current.is_some_and(|c| c > snapshot.created) {
                return;
            }
            *t = SyncTracker {
                current: Some(snapshot.created),
                ..SyncTracker::default()
            };
        }
        t.synced += 1;
        let took = now.saturating_duration_since(snapshot.created);
        t.last = Some(t.last.map_or(took, |l| l.max(took)));
        self.in_sync.set(t.synced);
        self.change_to_ack_ms
            .set(i64::try_from(took.as_millis()).unwrap_or(i64::MAX));
    }
}

/// The ADS service: every stream serves the latest published snapshot.
#[derive(Debug, Clone)]
pub struct AdsService {
    snapshots: Snapshots,
    metrics: Arc<XdsMetrics>,
}

impl AdsService {
    pub fn new(snapshots: Snapshots, metrics: Arc<XdsMetrics>) -> Self {
        Self { snapshots, metrics }
    }

    /// The tonic service, with the request size bound.
    pub fn into_server(self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self).max_decoding_message_size(MAX_REQUEST_BYTES)
    }
}

/// Decrements the stream gauge when the stream's task ends, however it ends.
struct Connected(Arc<XdsMetrics>);

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.streams.dec();
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsService {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let peer = request.remote_addr();
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(RESPONSE_QUEUE);
        self.metrics.streams.inc();
        let connected = Connected(self.metrics.clone());
        tokio::spawn(run_stream(
            inbound,
            tx,
            self.snapshots.clone(),
            self.metrics.clone(),
            connected,
            peer,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented(
            "kpool-mesh serves state-of-the-world ADS (StreamAggregatedResources); configure the client with api_type GRPC, not DELTA_GRPC",
        ))
    }
}

async fn run_stream(
    mut inbound: Streaming<DiscoveryRequest>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    mut snapshots: Snapshots,
    metrics: Arc<XdsMetrics>,
    _connected: Connected,
    peer: Option<std::net::SocketAddr>,
) {
    let mut state = StreamState::new(snapshots.borrow_and_update().clone());
    let mut synced: Option<Instant> = None;
    loop {
        let step = tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(req)) => match state.on_request(req) {
                    Ok(step) => step,
                    Err(e) => {
                        metrics.refused.inc();
                        tracing::warn!(?peer, node = state.node(), error = %e, "ADS stream refused");
                        let _ = tx.send(Err(Status::invalid_argument(e.to_string()))).await;
                        return;
                    }
                },
                Ok(None) => {
                    tracing::debug!(?peer, node = state.node(), "ADS stream closed by the client");
                    return;
                }
                Err(status) => {
                    tracing::debug!(?peer, node = state.node(), %status, "ADS stream broken");
                    return;
                }
            },
            changed = snapshots.changed() => {
                if changed.is_err() {
                    // The publisher is gone: the server is stopping.
                    return;
                }
                let Some(s) = snapshots.borrow_and_update().clone() else { continue };
                state.on_snapshot(s)
            }
            () = tx.closed() => return,
        };
        observe(&step, &state, &metrics, peer);
        if state.in_sync()
            && let Some(s) = snapshots.borrow().clone()
            && synced != Some(s.created)
        {
            synced = Some(s.created);
            metrics.record_sync(&s);
        }
        for r in step.responses {
            if tx.send(Ok(r)).await.is_err() {
                return;
            }
        }
    }
}

fn observe(
    step: &Step,
    state: &StreamState,
    metrics: &XdsMetrics,
    peer: Option<std::net::SocketAddr>,
) {
    let node = state.node();
    for e in &step.events {
        match e {
            Event::Sent { kind, version } => {
                metrics
                    .pushes
                    .get_or_create(&TypeLabel {
                        r#type: kind.as_str(),
                    })
                    .inc();
                tracing::debug!(?peer, node, %kind, version, "pushed");
            }
            Event::Acked { kind, version } => {
                metrics
                    .acks
                    .get_or_create(&TypeLabel {
                        r#type: kind.as_str(),
                    })
                    .inc();
                tracing::debug!(?peer, node, %kind, version, "ACK");
            }
            Event::Nacked {
                kind,
                version,
                kept,
                detail,
            } => {
                metrics
                    .nacks
                    .get_or_create(&TypeLabel {
                        r#type: kind.as_str(),
                    })
                    .inc();
                tracing::warn!(
                    ?peer,
                    node,
                    %kind,
                    rejected = version,
                    kept,
                    error_detail = detail,
                    "a client sidecar rejected a configuration (NACK); it keeps its previous version, and this one is not sent again"
                );
            }
            Event::Stale { kind, nonce } => {
                metrics.stale.inc();
                tracing::debug!(?peer, node, %kind, nonce, "stale nonce ignored");
            }
            Event::UnknownType { type_url } => {
                tracing::debug!(
                    ?peer,
                    node,
                    type_url,
                    "request for a type not served, ignored"
                );
            }
        }
    }
}

/// Serves ADS on `listener` (TLS when `tls` is given) behind kpool's hardened accept loop
/// (`kpool-serve`, shared with the webhook and the agent): at most
/// `limits.max_connections` sidecars at once, a TLS handshake and a first request bounded in
/// time, a connection with no stream closed when idle, HTTP/2 pings finding a sidecar that
/// vanished with its stream open (its stream's memory is then freed), and a bounded number
/// of streams per connection. A stream itself lives as long as the sidecar keeps it.
pub fn spawn(
    listener: tokio::net::TcpListener,
    service: AdsService,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: kpool_serve::Limits,
    metrics: &kpool_serve::ListenerMetrics,
) -> kpool_serve::Serving {
    let router = tonic::service::Routes::new(service.into_server()).into_axum_router();
    kpool_serve::spawn("ads", listener, tls, router, limits, metrics)
}

/// The ADS listener's bounds: many sidecars (each one long-lived connection with one
/// stream), which must start their stream soon after connecting.
pub fn ads_limits(max_connections: usize) -> kpool_serve::Limits {
    kpool_serve::Limits {
        max_connections,
        handshake_timeout: std::time::Duration::from_secs(10),
        header_timeout: std::time::Duration::from_secs(10),
        idle_timeout: std::time::Duration::from_secs(90),
        request_timeout: std::time::Duration::from_secs(10),
        max_h2_streams: 8,
    }
}
