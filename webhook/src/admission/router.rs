//! axum routers: the admission endpoints (served over TLS) and the operations endpoints
//! (plain HTTP: health, readiness, metrics).
//!
//! An admission request holds nothing shared until its body is in: the body is read into
//! the process-wide body budget (bytes, taken as they arrive, so a client that sends nothing
//! holds nothing), and only then does it wait for one of the `max_concurrency` slots that
//! run the engine. The listener (`kpool-serve`) bounds the whole exchange in time. The
//! engine runs synchronously on a runtime worker, so at most one review per worker thread
//! (one per CPU the process may use) is being decoded at once, each building a few MiB at
//! most (the pod view's item budget, [`crate::inject::MAX_POD_ITEMS`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{Admission, Endpoint, Reply};

/// The API server never sends more than 3 MiB; anything larger gets 413.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// A readiness check fails when every admission slot has been busy this long with no
/// answer given.
const STALL: Duration = Duration::from_secs(5);

/// How much admission work may be under way at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// Requests whose body is in that the engine answers at once; more wait their turn.
    pub max_concurrency: usize,
    /// Bytes of request bodies held in memory at once, over all requests being read.
    pub body_budget_bytes: usize,
}

impl Default for AdmissionLimits {
    fn default() -> Self {
        Self {
            max_concurrency: 64,
            body_budget_bytes: 32 * 1024 * 1024,
        }
    }
}

/// Shared by every request.
#[derive(Debug)]
pub struct AppState {
    pub admission: Admission,
    /// True once the TLS listener is bound and the policy loaded; false again at shutdown.
    pub ready: AtomicBool,
    limits: AdmissionLimits,
    slots: Semaphore,
    body_budget: Arc<Semaphore>,
    born: Instant,
    /// Milliseconds since `born` at which the engine last finished an answer.
    last_answer_ms: AtomicU64,
    listener: OnceLock<Arc<kpool_serve::Stats>>,
}

impl AppState {
    /// State that is not ready yet, with the default limits.
    pub fn new(admission: Admission) -> Arc<Self> {
        Self::with_limits(admission, AdmissionLimits::default())
    }

    /// State that is not ready yet.
    pub fn with_limits(admission: Admission, limits: AdmissionLimits) -> Arc<Self> {
        let limits = AdmissionLimits {
            max_concurrency: limits.max_concurrency.max(1),
            // At least one whole body fits, or nothing could ever be read.
            body_budget_bytes: limits.body_budget_bytes.max(MAX_BODY_BYTES),
        };
        Arc::new(Self {
            admission,
            ready: AtomicBool::new(false),
            limits,
            slots: Semaphore::new(limits.max_concurrency),
            body_budget: Arc::new(Semaphore::new(limits.body_budget_bytes)),
            born: Instant::now(),
            last_answer_ms: AtomicU64::new(0),
            listener: OnceLock::new(),
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> AdmissionLimits {
        self.limits
    }

    /// Lets readiness see the admission listener's connections (set once, at start).
    pub fn watch_listener(&self, stats: Arc<kpool_serve::Stats>) {
        let _ = self.listener.set(stats);
    }

    /// Whether a new admission request would be answered now, and if not, why.
    pub fn readiness(&self) -> Result<(), String> {
        if !self.ready.load(Ordering::Acquire) {
            return Err("not serving (starting or shutting down)".to_owned());
        }
        if let Some(stats) = self.listener.get()
            && stats.saturated()
        {
            return Err(format!(
                "admission listener at its connection cap ({}): new clients are not served until one closes",
                stats.cap()
            ));
        }
        if self.slots.available_permits() == 0 {
            let idle = self
                .ms_now()
                .saturating_sub(self.last_answer_ms.load(Ordering::Relaxed));
            if idle >= STALL.as_millis() as u64 {
                return Err(format!(
                    "all {} admission slots busy and no answer for {} ms",
                    self.limits.max_concurrency, idle
                ));
            }
        }
        if self.body_budget.available_permits() < MAX_BODY_BYTES {
            return Err(format!(
                "request body budget ({} bytes) nearly exhausted: a large review would wait",
                self.limits.body_budget_bytes
            ));
        }
        Ok(())
    }

    fn ms_now(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// `POST /mutate` and `POST /validate`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/validate", post(validate))
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// `/healthz`, `/readyz`, `/metrics`.
pub fn ops_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn mutate(State(state): State<Arc<AppState>>, req: Request) -> Response {
    answer(&state, Endpoint::Mutate, req).await
}

async fn validate(State(state): State<Arc<AppState>>, req: Request) -> Response {
    answer(&state, Endpoint::Validate, req).await
}

async fn answer(state: &AppState, endpoint: Endpoint, req: Request) -> Response {
    let in_flight = &state.admission.metrics().in_flight;
    in_flight.inc();
    // Read the body here rather than with an extractor, so an oversized one is counted and
    // audited like every other answer.
    let reply = match read_body(state, req).await {
        Ok((bytes, _budget)) => match state.slots.acquire().await {
            Ok(_slot) => {
                let reply = state.admission.handle(endpoint, &bytes);
                state
                    .last_answer_ms
                    .store(state.ms_now(), Ordering::Relaxed);
                reply
            }
            Err(_) => unavailable(),
        },
        Err(BodyError::TooLarge) => state.admission.too_large(endpoint),
        Err(BodyError::Read(e)) => {
            tracing::debug!(error = %e, "cannot read request body");
            Reply {
                status: 400,
                content_type: "text/plain; charset=utf-8",
                body: format!("kpool: cannot read request body: {e}\n").into_bytes(),
            }
        }
        Err(BodyError::Closed) => unavailable(),
    };
    in_flight.dec();
    let Reply {
        status,
        content_type,
        body,
    } = reply;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn unavailable() -> Reply {
    Reply {
        status: 503,
        content_type: "text/plain; charset=utf-8",
        body: b"kpool: shutting down\n".to_vec(),
    }
}

enum BodyError {
    TooLarge,
    Read(axum::Error),
    Closed,
}

/// The whole body, and the share of the body budget it holds until dropped. A declared
/// Content-Length over the limit is refused before a byte is read.
async fn read_body(
    state: &AppState,
    req: Request,
) -> Result<(Vec<u8>, Option<OwnedSemaphorePermit>), BodyError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = req.into_body();
    // The budget accounts for the buffer's capacity, taken before it grows: nothing is
    // allocated for a declared length that never arrives.
    let mut bytes: Vec<u8> = Vec::new();
    let mut held: Option<OwnedSemaphorePermit> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BodyError::Read)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        let needed = bytes.len() + data.len();
        if needed > MAX_BODY_BYTES {
            return Err(BodyError::TooLarge);
        }
        if needed > bytes.capacity() {
            let target = needed.max((bytes.capacity() * 2).min(MAX_BODY_BYTES));
            let grow = u32::try_from(target - bytes.capacity()).map_err(|_| BodyError::TooLarge)?;
            let permit = state
                .body_budget
                .clone()
                .acquire_many_owned(grow)
                .await
                .map_err(|_| BodyError::Closed)?;
            match &mut held {
                Some(h) => h.merge(permit),
                None => held = Some(permit),
            }
            bytes.reserve_exact(target - bytes.len());
        }
        bytes.extend_from_slice(&data);
    }
    Ok((bytes, held))
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.admission.metrics().encode(),
    )
        .into_response()
}
