//! The worker's HTTP side: `/healthz`, `/readyz` and `/metrics` on
//! `METRICS_ADDR`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Dependency, WorkerMetrics};

/// Serves the metrics endpoints until `shutdown` fires.
pub(crate) fn spawn(
    listener: TcpListener,
    metrics: Arc<WorkerMetrics>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(metrics);
    tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(error) = served {
            tracing::error!(message = "Metrics server failed.", %error);
        }
    })
}

/// Ready unless the circuit breaker is open (a dependency fails and no
/// message is taken), or the last store or queue failure was a
/// configuration error that no success has followed. The detail (with the
/// AWS error text) is in the error log, never in this answer.
async fn readyz(State(m): State<Arc<WorkerMetrics>>) -> impl IntoResponse {
    let unavailable = axum::http::StatusCode::SERVICE_UNAVAILABLE;
    if m.configuration_broken() {
        (
            unavailable,
            "not ready: configuration error (a missing table or queue, access denied, a KMS key or credentials); the worker's error log names the resource and action",
        )
    } else if let Some(part) = m.unavailable() {
        (
            unavailable,
            match part {
                Dependency::Store => "not ready: the store fails; no message is taken until it answers (events wait on the queue); the worker's error log says what fails",
                Dependency::Queue => "not ready: the queue fails; the worker's error log says what fails",
            },
        )
    } else {
        (axum::http::StatusCode::OK, "ready")
    }
}

async fn render_metrics(State(m): State<Arc<WorkerMetrics>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        m.render(),
    )
}
