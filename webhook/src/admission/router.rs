//! axum routers: the admission endpoints (served over TLS) and the operations endpoints
//! (plain HTTP: health, readiness, metrics).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Body;
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
        .layer(DefaultBodyLimit::disable())
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

async fn mutate(State(state): State<Arc<AppState>>, body: Body) -> Response {
    answer(&state, Endpoint::Mutate, body).await
}

async fn validate(State(state): State<Arc<AppState>>, body: Body) -> Response {
    answer(&state, Endpoint::Validate, body).await
}

async fn answer(state: &AppState, endpoint: Endpoint, body: Body) -> Response {
    let in_flight = &state.admission.metrics().in_flight;
    in_flight.inc();
    // Read the body here rather than with an extractor, so an oversized one is counted and
    // audited like every other answer.
    let reply = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => state.admission.handle(endpoint, &bytes),
        Err(e) if is_length_limit(&e) => state.admission.too_large(endpoint),
        Err(e) => {
            tracing::debug!(error = %e, "cannot read request body");
            Reply {
                status: 400,
                content_type: "text/plain; charset=utf-8",
                body: format!("kpool: cannot read request body: {e}\n").into_bytes(),
            }
        }
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

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
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
