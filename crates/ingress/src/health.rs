//! Health: `/healthz` answers while the process runs; `/readyz` while the
//! queue answers and a webhook secret is loaded (it says so when the
//! secrets' refresh fails and the last good value serves).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::startup::AppState;

pub(crate) async fn healthz() -> &'static str {
    "ok"
}

pub(crate) async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    let secrets = app.verifier().secret_count();
    let queue = tokio::time::timeout(Duration::from_secs(2), app.queue.counts()).await;
    let unavailable = |text: String| (StatusCode::SERVICE_UNAVAILABLE, text).into_response();
    match (secrets, queue) {
        (0, _) => unavailable(format!(
            "not ready: no webhook secret loaded ({})",
            app.refresh_error().unwrap_or("none configured")
        )),
        (_, Ok(Ok(_))) => match app.refresh_error() {
            None => (StatusCode::OK, "ready").into_response(),
            Some(problem) => (
                StatusCode::OK,
                format!("ready (webhook secret refresh failing: {problem}; serving the last good value)"),
            )
                .into_response(),
        },
        (_, Ok(Err(error))) => {
            tracing::warn!(message = "Readiness: queue unreachable.", %error);
            unavailable("not ready: the queue does not answer".to_owned())
        }
        (_, Err(_)) => unavailable("not ready: the queue check timed out".to_owned()),
    }
}
