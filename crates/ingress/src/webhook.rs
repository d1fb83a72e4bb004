//! The webhook pipeline, in the contract's order: body size (413),
//! signature (400), payload (400), livemode and event type (200, not
//! enqueued), enqueue (200 or 503). Each step is a span of the event's
//! trace; the first step that ends the request gives its
//! [`WebhookOutcome`], which alone logs, counts and answers it.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hookline_core::clock::unix_secs;
use hookline_core::envelope::Envelope;
use hookline_core::inbound::{admit, Ignored};
use hookline_core::message::{attr, OutboundMessage};
use hookline_telemetry::in_step;

use crate::metrics::IngressMetrics;
use crate::startup::AppState;

const RECEIVED: &str = r#"{"received":true}"#;
const BAD_SIGNATURE: &str = r#"{"error":"Webhook signature verification failed"}"#;
const BAD_PAYLOAD: &str = r#"{"error":"Invalid event payload"}"#;
const TOO_LARGE: &str = r#"{"error":"Payload too large"}"#;
const QUEUE_UNAVAILABLE: &str = r#"{"error":"Queue unavailable"}"#;
const BUSY: &str = r#"{"error":"Server busy"}"#;

fn json(status: StatusCode, body: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub(crate) async fn webhook(
    State(app): State<Arc<AppState>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    use tracing::Instrument;
    let start = Instant::now();
    app.metrics.received.inc();
    // The trace of this event: a `debug` span, left disabled unless spans
    // are exported (see `hookline_telemetry`).
    let span = tracing::debug_span!(
        "webhook",
        otel.name = %format_args!("POST {}", uri.path()),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = "POST",
        url.path = uri.path(),
        http.route = uri.path(),
        http.response.status_code = tracing::field::Empty,
        stripe.event_id = tracing::field::Empty,
        stripe.event_type = tracing::field::Empty,
        hookline.outcome = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    let outcome = handle_webhook(&app, &headers, body)
        .instrument(span.clone())
        .await;
    outcome.trace(&span);
    outcome.record(&app.metrics);
    app.metrics.latency.observe(start.elapsed());
    let response = outcome.into_response();
    if !span.is_disabled() {
        span.record(
            "http.response.status_code",
            i64::from(response.status().as_u16()),
        );
        if response.status().is_server_error() {
            span.record("otel.status_code", "ERROR");
        }
    }
    response
}

/// What became of one webhook request. One place logs and counts it
/// ([`WebhookOutcome::record`]) and one place answers it (`IntoResponse`,
/// the contract's "Ingress HTTP" table).
#[derive(Debug)]
enum WebhookOutcome {
    TooLarge,
    /// The body-memory budget is spent by other requests' bodies.
    Busy,
    BodyUnreadable(axum::Error),
    BadSignature(hookline_signature::SignatureError),
    InvalidPayload(hookline_core::envelope::EnvelopeError),
    Ignored(Envelope, Ignored),
    Enqueued(Envelope),
    QueueUnavailable(Envelope, Option<hookline_core::ports::PortError>),
}

impl WebhookOutcome {
    /// The outcome as a span attribute (`hookline.outcome`).
    fn label(&self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::Busy => "busy",
            Self::BodyUnreadable(_) => "body_unreadable",
            Self::BadSignature(_) => "bad_signature",
            Self::InvalidPayload(_) => "invalid_payload",
            Self::Ignored(..) => "ignored",
            Self::Enqueued(_) => "enqueued",
            Self::QueueUnavailable(..) => "queue_unavailable",
        }
    }

    /// Records the outcome, the event and, for a failure, its kind on the
    /// request's (`webhook`) span.
    fn trace(&self, span: &tracing::Span) {
        if span.is_disabled() {
            return;
        }
        span.record("hookline.outcome", self.label());
        match self {
            Self::Ignored(envelope, _) | Self::Enqueued(envelope) => {
                span.record("stripe.event_id", envelope.id.as_str());
                span.record("stripe.event_type", envelope.event_type.as_str());
            }
            Self::QueueUnavailable(envelope, error) => {
                span.record("stripe.event_id", envelope.id.as_str());
                span.record("stripe.event_type", envelope.event_type.as_str());
                span.record(
                    "error.type",
                    error.as_ref().map_or("timeout", |e| e.kind().as_str()),
                );
            }
            other => {
                span.record("error.type", other.label());
            }
        }
    }

    /// Whether the request got as far as a verified signature.
    fn verified(&self) -> bool {
        !matches!(
            self,
            Self::TooLarge | Self::Busy | Self::BodyUnreadable(_) | Self::BadSignature(_)
        )
    }

    fn record(&self, metrics: &IngressMetrics) {
        if self.verified() {
            metrics.verified.inc();
        }
        match self {
            Self::TooLarge => metrics.too_large.inc(),
            Self::Busy => {
                metrics.busy.inc();
                tracing::warn!(
                    message = "Body refused: MAX_BODY_MEMORY_BYTES is held by bodies being read."
                );
            }
            Self::BodyUnreadable(error) => {
                tracing::debug!(message = "Cannot read request body.", %error);
            }
            Self::BadSignature(reason) => {
                metrics.signature_failures.inc();
                tracing::warn!(message = "Webhook signature verification failed.", %reason);
            }
            Self::InvalidPayload(error) => {
                metrics.invalid_payload.inc();
                tracing::warn!(message = "Signed body is not a Stripe event.", %error);
            }
            Self::Ignored(envelope, Ignored::Livemode { livemode, app_env }) => {
                metrics.ignored_livemode.inc();
                tracing::info!(
                    message = "Event ignored: livemode does not match APP_ENV.",
                    event_id = %envelope.id,
                    event_type = %envelope.event_type,
                    livemode,
                    app_env = app_env.as_str(),
                );
            }
            Self::Ignored(envelope, Ignored::Ping) => {
                tracing::info!(
                    message = "Event destination ping acknowledged.",
                    event_id = %envelope.id,
                    livemode = envelope.livemode,
                );
            }
            Self::Ignored(
                envelope,
                Ignored::TypeNotEnabled | Ignored::NoHandler | Ignored::NoRoute,
            ) => {
                metrics.ignored_event_type.inc();
                tracing::info!(
                    message = "Event ignored: type not enabled.",
                    event_id = %envelope.id,
                    event_type = %envelope.event_type,
                );
            }
            Self::Enqueued(envelope) => {
                metrics.enqueued.inc();
                tracing::debug!(
                    message = "Event enqueued.",
                    event_id = %envelope.id,
                    event_type = %envelope.event_type,
                );
            }
            Self::QueueUnavailable(envelope, Some(error)) => {
                metrics.enqueue_failures.inc();
                tracing::error!(message = "Enqueue failed.", event_id = %envelope.id, %error);
            }
            Self::QueueUnavailable(envelope, None) => {
                metrics.enqueue_failures.inc();
                tracing::error!(message = "Enqueue timed out.", event_id = %envelope.id);
            }
        }
    }
}

impl IntoResponse for WebhookOutcome {
    fn into_response(self) -> Response {
        match self {
            Self::TooLarge => json(StatusCode::PAYLOAD_TOO_LARGE, TOO_LARGE),
            // Stripe retries a 503; nothing was accepted.
            Self::Busy => json(StatusCode::SERVICE_UNAVAILABLE, BUSY),
            Self::BodyUnreadable(_) | Self::InvalidPayload(_) => {
                json(StatusCode::BAD_REQUEST, BAD_PAYLOAD)
            }
            Self::BadSignature(_) => json(StatusCode::BAD_REQUEST, BAD_SIGNATURE),
            // Skipped events are acknowledged: Stripe retries any non-2xx.
            Self::Ignored(..) | Self::Enqueued(_) => json(StatusCode::OK, RECEIVED),
            Self::QueueUnavailable(..) => json(StatusCode::SERVICE_UNAVAILABLE, QUEUE_UNAVAILABLE),
        }
    }
}

/// The contract's order: body size, signature, payload, livemode and type,
/// enqueue; the first step that ends the request gives its outcome. Each
/// step is a span of the webhook's trace.
async fn handle_webhook(app: &AppState, headers: &HeaderMap, body: Body) -> WebhookOutcome {
    let raw = match read_body(app, headers, body).await {
        Ok(raw) => raw,
        Err(outcome) => return outcome,
    };
    let now = unix_secs();
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let verified = in_step(
        "verify",
        || {
            app.verifier()
                .verify(signature, &raw, now, app.tolerance_secs)
        },
        |v| {
            v.as_ref()
                .map(|_| "verified")
                .map_err(|reason| reason.kind())
        },
    );
    if let Err(reason) = verified {
        return WebhookOutcome::BadSignature(reason);
    }
    let parsed = in_step(
        "parse",
        || Envelope::parse(&raw),
        |p| p.as_ref().map(|_| "parsed").map_err(|_| "invalid_payload"),
    );
    let envelope = match parsed {
        Ok(envelope) => envelope,
        Err(error) => return WebhookOutcome::InvalidPayload(error),
    };
    let admitted = in_step(
        "admit",
        || admit(&envelope, app.app_env, &app.enabled),
        |a| {
            Ok(a.as_ref()
                .map_or_else(|ignored| ignored.reason(), |()| "admitted"))
        },
    );
    if let Err(ignored) = admitted {
        return WebhookOutcome::Ignored(envelope, ignored);
    }
    enqueue(app, envelope, raw, now).await
}

/// Answers 200 only once the queue holds the message: the send, as the
/// producer span of the event's trace, whose header the message carries.
async fn enqueue(
    app: &AppState,
    envelope: Envelope,
    raw: bytes::Bytes,
    now: i64,
) -> WebhookOutcome {
    let mut message = OutboundMessage::for_event(&envelope, raw, now);
    let span = hookline_telemetry::span::send(app.queue.system(), envelope.id.as_str());
    if let Some(header) = hookline_telemetry::xray_header(&span) {
        message
            .attributes
            .insert(attr::TRACE_HEADER.to_owned(), header);
    }
    let sent = hookline_telemetry::in_span(
        span,
        tokio::time::timeout(app.enqueue_timeout, app.coalescer.send(message)),
        |sent| match sent {
            Ok(Ok(())) => Ok("sent"),
            Ok(Err(error)) => Err(error.kind().as_str()),
            Err(_) => Err("timeout"),
        },
    )
    .await;
    match sent {
        Ok(Ok(())) => WebhookOutcome::Enqueued(envelope),
        Ok(Err(error)) => WebhookOutcome::QueueUnavailable(envelope, Some(error)),
        Err(_) => WebhookOutcome::QueueUnavailable(envelope, None),
    }
}

/// Reads the body within `MAX_BODY_BYTES` and the shared body-memory budget.
///
/// The budget is taken as bytes arrive, not for the declared length up
/// front: a connection that declares 250 KB and trickles it holds only what
/// it has sent, so slow uploads cannot starve Stripe's small, fast
/// requests. When the budget is spent the request is answered 503 at once
/// (Stripe retries it) instead of queueing behind the slow ones.
async fn read_body(
    app: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<bytes::Bytes, WebhookOutcome> {
    use http_body_util::BodyExt;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > app.max_body_bytes as u64) {
        return Err(WebhookOutcome::TooLarge);
    }
    let mut body = body;
    let mut chunks: Vec<bytes::Bytes> = Vec::new();
    let mut len = 0usize;
    let mut held: Option<tokio::sync::SemaphorePermit<'_>> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(WebhookOutcome::BodyUnreadable)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        len += data.len();
        if len > app.max_body_bytes {
            return Err(WebhookOutcome::TooLarge);
        }
        let n = u32::try_from(data.len()).map_err(|_| WebhookOutcome::TooLarge)?;
        if n == 0 {
            continue;
        }
        let permit = app
            .body_memory
            .try_acquire_many(n)
            .map_err(|_| WebhookOutcome::Busy)?;
        match held.as_mut() {
            Some(h) => h.merge(permit),
            None => held = Some(permit),
        }
        chunks.push(data);
    }
    // One frame (the usual case) is used as it is, without a copy.
    Ok(match chunks.len() {
        0 => bytes::Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => chunks.concat().into(),
    })
}
