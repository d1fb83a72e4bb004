//! The spans of an event's trace, made in one place: a step of a service
//! ([`step`]) and the calls it makes ([`send`], [`process`],
//! [`destination`], [`store`]). They are `debug` spans: without an OTLP
//! endpoint the log filter leaves them disabled and recording on them
//! returns at once.
//!
//! A step runs through [`in_step`] (sync) or [`in_step_async`]: the span is
//! opened, the work runs inside it, and the work's result is judged into
//! the span's outcome or failure ([`Verdict`]) in one call.

use std::future::Future;

use tracing::field::Empty;
use tracing::{Instrument, Span};

/// How a step ended, for its span: `Ok(outcome)` is recorded as
/// `hookline.outcome`, `Err(kind)` marks the span failed with `error.type`.
pub type Verdict = Result<&'static str, &'static str>;

/// A step of an event's trace (`verify`, `unwrap`, `admit`, …).
pub fn step(name: &'static str) -> Span {
    tracing::debug_span!(
        "step",
        otel.name = name,
        otel.status_code = Empty,
        hookline.outcome = Empty,
        hookline.queue_wait_ms = Empty,
        error.type = Empty,
    )
}

/// Runs `work` as the step `name`, and records `verdict` of its result.
pub fn in_step<T>(
    name: &'static str,
    work: impl FnOnce() -> T,
    verdict: impl FnOnce(&T) -> Verdict,
) -> T {
    let span = step(name);
    let result = span.in_scope(work);
    judge(&span, verdict(&result));
    result
}

/// [`in_step`] of a future.
pub async fn in_step_async<T>(
    name: &'static str,
    work: impl Future<Output = T>,
    verdict: impl FnOnce(&T) -> Verdict,
) -> T {
    in_span(step(name), work, verdict).await
}

/// Runs `work` inside `span`, and records `verdict` of its result.
pub async fn in_span<T>(
    span: Span,
    work: impl Future<Output = T>,
    verdict: impl FnOnce(&T) -> Verdict,
) -> T {
    let result = work.instrument(span.clone()).await;
    judge(&span, verdict(&result));
    result
}

/// Records a verdict on `span`.
pub fn judge(span: &Span, verdict: Verdict) {
    match verdict {
        Ok(label) => outcome(span, label),
        Err(kind) => failed(span, kind),
    }
}

/// Records `outcome` (`hookline.outcome`) on `span`.
pub fn outcome(span: &Span, outcome: &str) {
    if !span.is_disabled() {
        span.record("hookline.outcome", outcome);
    }
}

/// Marks `span` failed: status ERROR, `error.type` = `kind`.
pub fn failed(span: &Span, kind: &str) {
    if !span.is_disabled() {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", kind);
        span.record("hookline.outcome", "failed");
    }
}

/// The ingress's send of an event to the queue (a producer span).
pub fn send(system: &'static str, event_id: &str) -> Span {
    tracing::debug_span!(
        "enqueue",
        otel.name = "send",
        otel.kind = "producer",
        otel.status_code = Empty,
        messaging.system = system,
        messaging.operation.type = "send",
        messaging.operation.name = "send",
        stripe.event_id = event_id,
        hookline.outcome = Empty,
        error.type = Empty,
    )
}

/// The worker's processing of one delivery (a consumer span); the caller
/// continues it from the message's trace header.
pub fn process(system: &'static str, message_id: &str, receive_count: u32) -> Span {
    tracing::debug_span!(
        "process",
        otel.name = "process",
        otel.kind = "consumer",
        otel.status_code = Empty,
        messaging.system = system,
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.message.id = message_id,
        messaging.message.delivery_count = i64::from(receive_count),
        stripe.event_id = Empty,
        stripe.event_type = Empty,
        hookline.outcome = Empty,
        error.type = Empty,
    )
}

/// One delivery to a routed destination (a client span).
pub fn destination(name: &str, attempt: u32) -> Span {
    tracing::debug_span!(
        "destination",
        otel.name = %format_args!("deliver {name}"),
        otel.kind = "client",
        otel.status_code = Empty,
        hookline.destination = name,
        hookline.attempt = i64::from(attempt),
        hookline.outcome = Empty,
        error.type = Empty,
    )
}

/// One store write (a client span).
pub fn store(system: &'static str, operation: &'static str) -> Span {
    tracing::debug_span!(
        "store",
        otel.name = %format_args!("store.{operation}"),
        otel.kind = "client",
        otel.status_code = Empty,
        db.system.name = system,
        db.operation.name = operation,
        hookline.outcome = Empty,
        error.type = Empty,
    )
}
