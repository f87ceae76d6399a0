//! Hardened HTTP serving for kpool's listeners (the webhook's admission and operations
//! ports, the agent's hostPort): one accept loop that a hostile or careless client cannot
//! stall or exhaust.
//!
//! Every connection is bounded:
//! - **count**: at most [`Limits::max_connections`] are open; past it the listener stops
//!   accepting (new clients wait in the kernel's backlog) and [`Stats::saturated`] says so;
//! - **TLS handshake**: it must finish within [`Limits::handshake_timeout`];
//! - **first request**: a new connection must start a request within
//!   [`Limits::header_timeout`] (hyper's own HTTP/1 header timeout also applies; the
//!   HTTP/1-or-2 detection that precedes it has none, so this watchdog is the real bound);
//! - **idle**: a connection with no request in flight (a request is in flight until its
//!   answer's body ends, so a long-lived stream is not idle) is closed once no request has
//!   started or finished for [`Limits::idle_timeout`]; bytes that start no request (a header
//!   dripped byte by byte, HTTP/2 pings) do not keep it open; HTTP/2 connections are pinged,
//!   so a peer that vanished with a stream open is found;
//! - **request**: from its headers to its answer's headers (the request body included, since
//!   handlers read it inside the service future; a streaming handler answers at once and
//!   streams after) a request has [`Limits::request_timeout`], then gets 408;
//! - **HTTP/2**: at most [`Limits::max_h2_streams`] concurrent streams per connection, and a
//!   bounded header list.
//!
//! Memory is then bounded by `max_connections` x (TLS and hyper buffers, ~20 KiB) plus what
//! the handlers keep; request bodies are the handlers' business (see the webhook's body
//! budget).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http::{Request, Response, StatusCode, header};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt as _;

/// The bounds every connection of one listener lives within.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections open at once; past it the listener stops accepting.
    pub max_connections: usize,
    /// A TLS handshake must finish within this time (ignored for plain HTTP).
    pub handshake_timeout: Duration,
    /// A new connection must start its first request (send its headers) within this time.
    pub header_timeout: Duration,
    /// A connection with no request in flight is closed after this long without one.
    pub idle_timeout: Duration,
    /// One request, from its headers to its answer (body read included).
    pub request_timeout: Duration,
    /// Concurrent HTTP/2 streams per connection.
    pub max_h2_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 512,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            request_timeout: Duration::from_secs(10),
            max_h2_streams: 32,
        }
    }
}

/// An HTTP/2 header list larger than this is refused (the API server sends a few hundred
/// bytes).
const MAX_H2_HEADER_LIST: u32 = 64 * 1024;
/// How often an HTTP/2 connection is pinged, and how long its answer may take.
const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection told to close (idle, or at shutdown past its grace) may take.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClosedLabel {
    listener: &'static str,
    reason: &'static str,
}

/// Connection metrics of every listener of one process, labelled by listener name:
/// `connections_open`, `connections_max`, `connections_closed_total{reason}`,
/// `requests_timed_out_total`. Register once, share with each [`spawn`].
#[derive(Debug, Clone, Default)]
pub struct ListenerMetrics {
    open: Family<ListenerLabel, Gauge>,
    max: Family<ListenerLabel, Gauge>,
    closed: Family<ClosedLabel, Counter>,
    timed_out: Family<ListenerLabel, Counter>,
}

impl ListenerMetrics {
    /// Adds the families to `registry` (under its prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "connections_open",
            "Connections open now, per listener",
            self.open.clone(),
        );
        registry.register(
            "connections_max",
            "Connection cap per listener (past it the listener stops accepting)",
            self.max.clone(),
        );
        registry.register(
            "connections_closed",
            "Connections closed by the server, per listener and reason (handshake-failed, handshake-timeout, no-request, idle, shutdown)",
            self.closed.clone(),
        );
        registry.register(
            "requests_timed_out",
            "Requests answered 408 because they did not complete (body included) in time",
            self.timed_out.clone(),
        );
    }
}

/// What one listener is doing now; cheap to read (atomics).
#[derive(Debug)]
pub struct Stats {
    name: &'static str,
    cap: usize,
    open: AtomicUsize,
    timed_out: AtomicU64,
    closed_idle: AtomicU64,
    metrics: ListenerMetrics,
}

impl Stats {
    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// The connection cap.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// True while every connection slot is taken: a new client is not served until one
    /// closes.
    pub fn saturated(&self) -> bool {
        self.open() >= self.cap
    }

    /// Requests answered 408 so far.
    pub fn timed_out(&self) -> u64 {
        self.timed_out.load(Ordering::Relaxed)
    }

    /// Connections closed for idleness (or for never starting a request) so far.
    pub fn closed_idle(&self) -> u64 {
        self.closed_idle.load(Ordering::Relaxed)
    }

    fn label(&self) -> ListenerLabel {
        ListenerLabel {
            listener: self.name,
        }
    }

    fn closed(&self, reason: &'static str) {
        self.metrics
            .closed
            .get_or_create(&ClosedLabel {
                listener: self.name,
                reason,
            })
            .inc();
    }

    fn opened(self: &Arc<Self>) -> OpenGuard {
        self.open.fetch_add(1, Ordering::AcqRel);
        self.metrics.open.get_or_create(&self.label()).inc();
        OpenGuard(self.clone())
    }
}

struct OpenGuard(Arc<Stats>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.open.get_or_create(&self.0.label()).dec();
    }
}

/// A listener being served.
#[derive(Debug)]
pub struct Serving {
    addr: SocketAddr,
    stats: Arc<Stats>,
    stop: watch::Sender<Option<Duration>>,
    task: tokio::task::JoinHandle<()>,
}

impl Serving {
    /// Where the listener is bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its live numbers.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Stops accepting, lets open connections finish their requests for up to `grace`
    /// (idle ones close at once), then drops whatever is left.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(Some(grace));
        if let Err(e) = self.task.await {
            tracing::error!(listener = self.stats.name, error = %e, "listener task failed");
        }
    }
}

/// Serves `app` on `listener`, over TLS when `tls` is given, within `limits`. `name` labels
/// logs and metrics. Must be called within a Tokio runtime.
pub fn spawn(
    name: &'static str,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    limits: Limits,
    metrics: &ListenerMetrics,
) -> Serving {
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let limits = Limits {
        max_connections: limits.max_connections.max(1),
        ..limits
    };
    let stats = Arc::new(Stats {
        name,
        cap: limits.max_connections,
        open: AtomicUsize::new(0),
        timed_out: AtomicU64::new(0),
        closed_idle: AtomicU64::new(0),
        metrics: metrics.clone(),
    });
    metrics
        .max
        .get_or_create(&stats.label())
        .set(i64::try_from(limits.max_connections).unwrap_or(i64::MAX));
    let (stop, stop_rx) = watch::channel(None);
    let limits_for_builder = limits.clone();
    let shared = Arc::new(Shared {
        app,
        limits,
        tls: tls.map(tokio_rustls::TlsAcceptor::from),
        stats: stats.clone(),
        http: http_builder(&limits_for_builder),
    });
    let task = tokio::spawn(accept_loop(listener, shared, stop_rx));
    Serving {
        addr,
        stats,
        stop,
        task,
    }
}

struct Shared {
    app: Router,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stats: Arc<Stats>,
    http: auto::Builder<TokioExecutor>,
}

fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_h2_streams)
        .max_header_list_size(MAX_H2_HEADER_LIST)
        // PINGs find a peer that vanished with a stream open (no FIN), which the idle
        // watchdog leaves alone while a request is in flight; they start no request, so
        // they never keep an idle connection open.
        .keep_alive_interval(Some(H2_KEEPALIVE_INTERVAL))
        .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT);
    b
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<Option<Duration>>,
) {
    let slots = Arc::new(Semaphore::new(shared.limits.max_connections));
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut last_accept_warning: Option<Instant> = None;
    let grace = loop {
        // Take a slot before accepting: at the cap, clients wait in the backlog rather than
        // being accepted and starved.
        let permit = tokio::select! {
            g = stop.changed() => break grace_of(g, &stop),
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break Duration::ZERO,
            },
        };
        let accepted = tokio::select! {
            g = stop.changed() => break grace_of(g, &stop),
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let open = shared.stats.opened();
                let shared = shared.clone();
                let closing = closing_rx.clone();
                conns.spawn(async move {
                    connection(stream, peer, &shared, closing).await;
                    drop(open);
                    drop(permit);
                });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning; warn at most every 10 s.
                let now = Instant::now();
                if last_accept_warning.is_none_or(|t| now - t > Duration::from_secs(10)) {
                    tracing::warn!(listener = shared.stats.name, error = %e, open = shared.stats.open(), "cannot accept a connection");
                    last_accept_warning = Some(now);
                }
                drop(permit);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    drop(listener);
    let _ = closing_tx.send(true);
    let deadline = Instant::now() + grace;
    while !conns.is_empty() {
        match tokio::time::timeout_at(deadline, conns.join_next()).await {
            Ok(_) => {}
            Err(_) => {
                tracing::warn!(
                    listener = shared.stats.name,
                    left = conns.len(),
                    "connections still open after the shutdown grace; closing them"
                );
                conns.abort_all();
                while conns.join_next().await.is_some() {}
            }
        }
    }
}

fn grace_of(
    changed: Result<(), watch::error::RecvError>,
    stop: &watch::Receiver<Option<Duration>>,
) -> Duration {
    match changed {
        Ok(()) => stop.borrow().unwrap_or(Duration::ZERO),
        Err(_) => Duration::ZERO,
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    closing: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    match &shared.tls {
        None => drive(TokioIo::new(stream), shared, closing).await,
        Some(acceptor) => {
            match tokio::time::timeout(shared.limits.handshake_timeout, acceptor.accept(stream))
                .await
            {
                Ok(Ok(tls)) => drive(TokioIo::new(tls), shared, closing).await,
                Ok(Err(e)) => {
                    shared.stats.closed("handshake-failed");
                    tracing::debug!(listener = shared.stats.name, %peer, error = %e, "TLS handshake failed");
                }
                Err(_) => {
                    shared.stats.closed("handshake-timeout");
                    tracing::debug!(listener = shared.stats.name, %peer, "TLS handshake not finished in time");
                }
            }
        }
    }
}

/// Requests of one connection: how many are in flight, and when one last started or ended.
#[derive(Debug)]
struct Activity {
    in_flight: AtomicUsize,
    started: AtomicU64,
    last: Mutex<Instant>,
}

impl Activity {
    fn touch(&self) {
        if let Ok(mut last) = self.last.lock() {
            *last = Instant::now();
        }
    }

    fn last(&self) -> Instant {
        self.last.lock().map_or_else(|_| Instant::now(), |l| *l)
    }

    /// When the watchdog looks again, and whether the connection is past its bound now.
    fn check(&self, limits: &Limits) -> (Instant, bool) {
        let now = Instant::now();
        if self.in_flight.load(Ordering::Acquire) > 0 {
            // Each request is bounded by its own timeout; look again after it.
            return (now + limits.request_timeout, false);
        }
        let bound = if self.started.load(Ordering::Acquire) == 0 {
            limits.header_timeout
        } else {
            limits.idle_timeout
        };
        let deadline = self.last() + bound;
        (deadline, now >= deadline)
    }
}

struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn drive<I>(io: TokioIo<I>, shared: &Arc<Shared>, mut closing: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity {
        in_flight: AtomicUsize::new(0),
        started: AtomicU64::new(0),
        last: Mutex::new(Instant::now()),
    });
    let service = {
        let activity = activity.clone();
        let shared = shared.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            activity.in_flight.fetch_add(1, Ordering::AcqRel);
            activity.started.fetch_add(1, Ordering::AcqRel);
            activity.touch();
            let guard = InFlight(activity.clone());
            let shared = shared.clone();
            async move {
                let resp = answer(&shared, req).await;
                // A request is in flight until its answer's body ends: a streamed answer
                // (a gRPC stream) keeps its connection from being closed as idle.
                Ok::<_, Infallible>(resp.map(|body| {
                    Body::new(body.map_frame(move |frame| {
                        let _in_flight = &guard;
                        frame
                    }))
                }))
            }
        })
    };
    let conn = shared.http.serve_connection(io, service);
    tokio::pin!(conn);
    let mut closing_seen = *closing.borrow();
    if closing_seen {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        let (deadline, expired) = activity.check(&shared.limits);
        if expired {
            let reason = if activity.started.load(Ordering::Acquire) == 0 {
                "no-request"
            } else {
                "idle"
            };
            shared.stats.closed(reason);
            shared.stats.closed_idle.fetch_add(1, Ordering::Relaxed);
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(CLOSE_GRACE, conn.as_mut()).await;
            return;
        }
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(listener = shared.stats.name, error = %e, "connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep_until(deadline) => {}
            c = closing.changed(), if !closing_seen => {
                closing_seen = true;
                if c.is_err() || *closing.borrow() {
                    shared.stats.closed("shutdown");
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

async fn answer(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    let http1 = req.version() < http::Version::HTTP_2;
    match tokio::time::timeout(
        shared.limits.request_timeout,
        shared.app.clone().oneshot(req),
    )
    .await
    {
        Ok(Ok(resp)) => resp,
        Ok(Err(never)) => match never {},
        Err(_) => {
            shared.stats.timed_out.fetch_add(1, Ordering::Relaxed);
            shared
                .stats
                .metrics
                .timed_out
                .get_or_create(&shared.stats.label())
                .inc();
            tracing::debug!(
                listener = shared.stats.name,
                timeout = ?shared.limits.request_timeout,
                "request not completed in time"
            );
            let mut resp = Response::new(Body::from(format!(
                "kpool: request not completed within {:?} (body included)\n",
                shared.limits.request_timeout
            )));
            *resp.status_mut() = StatusCode::REQUEST_TIMEOUT;
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            if http1 {
                // The unread rest of the body makes the connection useless anyway.
                resp.headers_mut().insert(
                    header::CONNECTION,
                    header::HeaderValue::from_static("close"),
                );
            }
            resp
        }
    }
}

/// The process's soft limit on open file descriptors (`/proc/self/limits`), if known.
pub fn fd_soft_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        return Some(u64::MAX);
    }
    soft.parse().ok()
}

/// Lowers `caps` (the connection caps of a process's listeners, in order of priority: the
/// first is lowered first) so that together with `reserve` descriptors (files, Kafka and API
/// connections, certificate reloads) they fit under the descriptor limit `soft`. Returns
/// the caps as they are now, and whether any was lowered.
pub fn fit_caps(caps: &mut [usize], reserve: u64, soft: u64) -> bool {
    let budget = soft.saturating_sub(reserve);
    let total: u64 = caps.iter().map(|&c| c as u64).sum();
    if total <= budget {
        return false;
    }
    let mut excess = total - budget;
    for cap in caps.iter_mut() {
        // Every listener keeps at least a few connections.
        let floor = 4u64;
        let room = (*cap as u64).saturating_sub(floor);
        let cut = room.min(excess);
        *cap -= usize::try_from(cut).unwrap_or(0);
        excess -= cut;
        if excess == 0 {
            break;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::fit_caps;

    #[test]
    fn caps_fit_under_the_descriptor_limit() {
        let mut caps = [512, 64];
        assert!(!fit_caps(&mut caps, 128, 1_048_576));
        assert_eq!(caps, [512, 64]);
        assert!(fit_caps(&mut caps, 128, 256));
        assert_eq!(caps, [64, 64]);
        let mut caps = [512, 64];
        assert!(fit_caps(&mut caps, 128, 100));
        assert_eq!(caps, [4, 4], "floors kept even when nothing fits");
    }
}
