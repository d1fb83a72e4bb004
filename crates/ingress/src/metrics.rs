//! What the ingress counts, and `/metrics`, which serves it with the
//! versions of the secrets it loaded.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use hookline_core::metrics::{Counter, Exposition, Histogram, LATENCY_BUCKETS};

use crate::startup::AppState;

/// What the ingress counts. `hookline_webhook_signature_failures_total`
/// feeds the `StripeWebhookAuthFailures` alarm.
#[derive(Debug)]
pub struct IngressMetrics {
    pub received: Counter,
    pub verified: Counter,
    pub signature_failures: Counter,
    pub invalid_payload: Counter,
    pub too_large: Counter,
    pub busy: Counter,
    pub ignored_event_type: Counter,
    pub ignored_livemode: Counter,
    pub enqueued: Counter,
    pub enqueue_failures: Counter,
    pub latency: Histogram,
}

impl Default for IngressMetrics {
    fn default() -> Self {
        Self {
            received: Counter::default(),
            verified: Counter::default(),
            signature_failures: Counter::default(),
            invalid_payload: Counter::default(),
            too_large: Counter::default(),
            busy: Counter::default(),
            ignored_event_type: Counter::default(),
            ignored_livemode: Counter::default(),
            enqueued: Counter::default(),
            enqueue_failures: Counter::default(),
            latency: Histogram::new(LATENCY_BUCKETS),
        }
    }
}

impl IngressMetrics {
    /// The readings written as EMF lines (`EMF_NAMESPACE`).
    pub fn emf_samples(&self) -> Vec<hookline_core::emf::Sample> {
        use hookline_core::emf::Reading;
        vec![
            ("WebhooksReceived", Reading::counter(&self.received)),
            ("WebhooksVerified", Reading::counter(&self.verified)),
            (
                "SignatureFailures",
                Reading::counter(&self.signature_failures),
            ),
            ("InvalidPayloads", Reading::counter(&self.invalid_payload)),
            ("PayloadsTooLarge", Reading::counter(&self.too_large)),
            ("BodyMemoryRefusals", Reading::counter(&self.busy)),
            (
                "WebhooksIgnored",
                Reading::Count(self.ignored_event_type.get() + self.ignored_livemode.get()),
            ),
            ("WebhooksEnqueued", Reading::counter(&self.enqueued)),
            ("EnqueueFailures", Reading::counter(&self.enqueue_failures)),
            ("WebhookLatency", Reading::histogram(&self.latency)),
        ]
    }

    pub fn render(&self) -> String {
        let mut e = Exposition::new();
        e.counter(
            "hookline_webhooks_received_total",
            "Webhook requests received.",
            &self.received,
        )
        .counter(
            "hookline_webhooks_verified_total",
            "Webhooks whose Stripe-Signature verified.",
            &self.verified,
        )
        .counter(
            "hookline_webhook_signature_failures_total",
            "Webhooks refused for a missing, malformed, wrong or expired Stripe-Signature.",
            &self.signature_failures,
        )
        .counter(
            "hookline_webhook_invalid_payload_total",
            "Signed bodies that are not a Stripe event.",
            &self.invalid_payload,
        )
        .counter(
            "hookline_webhook_too_large_total",
            "Bodies over MAX_BODY_BYTES.",
            &self.too_large,
        )
        .counter(
            "hookline_webhook_body_memory_refusals_total",
            "Requests answered 503 because MAX_BODY_MEMORY_BYTES was held by bodies being read.",
            &self.busy,
        )
        .counters(
            "hookline_webhooks_ignored_total",
            "Verified events acknowledged but not enqueued.",
            "reason",
            &[
                ("event_type", &self.ignored_event_type),
                ("livemode", &self.ignored_livemode),
            ],
        )
        .counter(
            "hookline_webhooks_enqueued_total",
            "Events the queue durably accepted.",
            &self.enqueued,
        )
        .counter(
            "hookline_enqueue_failures_total",
            "Events answered 503 because the queue did not accept them.",
            &self.enqueue_failures,
        )
        .histogram(
            "hookline_webhook_duration_seconds",
            "Time from request to answer on the webhook route.",
            &self.latency,
        );
        e.finish()
    }
}

/// `/metrics`: Prometheus text.
pub(crate) async fn serve(State(app): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render() + &app.loaded.render(),
    )
        .into_response()
}
