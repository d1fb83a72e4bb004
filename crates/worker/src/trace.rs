//! The worker's part of an event's trace: the `process` span of a delivery
//! continues the trace the message's `AWSTraceHeader` carries, ends with
//! what became of the delivery, and a copy it sends on (dead-lettered,
//! requeued) carries it further. The span makers and the step combinator
//! are `hookline_telemetry::span`'s; store writes are spans through
//! [`crate::traced_store`].

use hookline_core::message::{attr, OutboundMessage};
use hookline_core::ports::Delivery;
use hookline_core::records::Completion;
use hookline_telemetry::{failed, outcome, TraceHeader};
use tracing::Span;

use crate::info::EventInfo;
use crate::outcome::Handled;

/// The trace header a delivery carries, when it carries a valid one.
pub(crate) fn header_of(delivery: &Delivery) -> Option<TraceHeader> {
    delivery
        .attributes
        .get(attr::TRACE_HEADER)
        .and_then(|h| TraceHeader::parse(h))
}

/// The span of one delivery's processing, a child of the span that sent
/// the message.
pub(crate) fn process_span(delivery: &Delivery, system: &'static str) -> Span {
    let span =
        hookline_telemetry::span::process(system, &delivery.message_id, delivery.receive_count);
    if span.is_disabled() {
        return span;
    }
    if let Some(header) = header_of(delivery) {
        hookline_telemetry::continue_from(&span, &header);
    }
    span
}

/// Records what became of the delivery on its `process` span.
pub(crate) fn delivered(span: &Span, info: &EventInfo, handled: &Handled) {
    if span.is_disabled() {
        return;
    }
    if let Some(id) = &info.event_id {
        span.record("stripe.event_id", id.as_str());
    }
    if let Some(t) = &info.event_type {
        span.record("stripe.event_type", t.as_str());
    }
    match handled {
        Handled::Completed(c) => outcome(span, completion_label(c)),
        Handled::Postponed { .. } => outcome(span, "postponed"),
        Handled::RetryLater { error, .. } => {
            failed(span, error.kind().as_str());
            outcome(span, "retry_later");
        }
        Handled::Requeued { error } => {
            failed(span, error.kind().as_str());
            outcome(span, "requeued");
        }
        Handled::DeadLettered { .. } => {
            failed(span, "permanent");
            outcome(span, "dead_lettered");
        }
        Handled::RequeueFailed { .. } | Handled::DeadLetterFailed { .. } => {
            failed(span, "send_failed");
        }
    }
}

/// Points a copy's trace header (dead-lettered, requeued) at the current
/// span: the copy keeps the trace id, and its next reader continues from
/// this delivery. Without an exporter the header it had stays.
pub(crate) fn carry(copy: &mut OutboundMessage) {
    if let Some(header) = hookline_telemetry::xray_header(&Span::current()) {
        copy.attributes
            .insert(attr::TRACE_HEADER.to_owned(), header);
    }
}

/// The outcome label of a completion.
pub(crate) fn completion_label(c: &Completion) -> &'static str {
    match c {
        Completion::Completed(outcome) => outcome.as_str(),
        Completion::Duplicate => "duplicate",
        Completion::Tied => "tied",
    }
}
