//! axum routers: the admission endpoints (served over TLS) and the operations endpoints
//! (plain HTTP: health, readiness, metrics).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower::limit::GlobalConcurrencyLimitLayer;

use super::{Admission, Endpoint, Reply};

/// The API server never sends more than 3 MiB; anything larger gets 413.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Shared by every request.
#[derive(Debug)]
pub struct AppState {
    pub admission: Admission,
    /// True once the TLS listener is bound and the policy loaded; false again at shutdown.
    pub ready: AtomicBool,
}

impl AppState {
    /// State that is not ready yet.
    pub fn new(admission: Admission) -> Arc<Self> {
        Arc::new(Self {
            admission,
            ready: AtomicBool::new(false),
        })
    }
}

/// `POST /mutate` and `POST /validate`, at most `max_concurrency` requests at a time
/// (more wait their turn).
pub fn router(state: Arc<AppState>, max_concurrency: usize) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/validate", post(validate))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(GlobalConcurrencyLimitLayer::new(max_concurrency.max(1)))
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

async fn mutate(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    answer(&state, Endpoint::Mutate, &body)
}

async fn validate(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    answer(&state, Endpoint::Validate, &body)
}

fn answer(state: &AppState, endpoint: Endpoint, body: &[u8]) -> Response {
    let in_flight = &state.admission.metrics().in_flight;
    in_flight.inc();
    let Reply {
        status,
        content_type,
        body,
    } = state.admission.handle(endpoint, body);
    in_flight.dec();
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
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
