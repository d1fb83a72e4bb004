//! The worker's part of an event's trace: a `process` span per delivery
//! (continuing the trace the message's `AWSTraceHeader` carries), its steps
//! (`receive`, `unwrap`, `admit`, `handle`, each destination call) and one
//! span per store write ([`TracedStore`]). They are `debug` spans: without
//! an OTLP endpoint the log filter leaves them disabled, and the store is
//! not wrapped at all.

use std::collections::BTreeMap;

use async_trait::async_trait;
use hookline_core::envelope::EventId;
use hookline_core::message::{attr, OutboundMessage};
use hookline_core::ports::{
    Applied, Change, Claim, Delivery, Holdings, Lease, Origin, PortError, RecentActivity, Store,
    Subject, Tried,
};
use hookline_core::records::{Completion, DestinationState, EventRecord, StoredItem};
use hookline_telemetry::TraceHeader;
pub(crate) use hookline_telemetry::{failed, outcome, step};
use tracing::field::Empty;

use crate::outcome::Handled;
use crate::process::EventInfo;
use tracing::Span;

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
    let span = tracing::debug_span!(
        "process",
        otel.name = "process",
        otel.kind = "consumer",
        otel.status_code = Empty,
        messaging.system = system,
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.message.id = delivery.message_id.as_str(),
        messaging.message.delivery_count = i64::from(delivery.receive_count),
        stripe.event_id = Empty,
        stripe.event_type = Empty,
        hookline.outcome = Empty,
        error.type = Empty,
    );
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

/// A store whose writes are spans of the current trace: `claim`,
/// `complete`, `apply`, `fail` and `record_destination`, each with
/// `db.system.name`, `db.operation.name`, its outcome and error kind.
#[derive(Debug)]
pub(crate) struct TracedStore {
    inner: std::sync::Arc<dyn Store>,
}

impl TracedStore {
    pub(crate) fn new(inner: std::sync::Arc<dyn Store>) -> Self {
        Self { inner }
    }

    fn span(&self, operation: &'static str) -> Span {
        tracing::debug_span!(
            "store",
            otel.name = %format_args!("store.{operation}"),
            otel.kind = "client",
            otel.status_code = Empty,
            db.system.name = self.inner.system(),
            db.operation.name = operation,
            hookline.outcome = Empty,
            error.type = Empty,
        )
    }

    async fn traced<T, F>(
        &self,
        operation: &'static str,
        label: fn(&T) -> &'static str,
        f: F,
    ) -> Result<T, PortError>
    where
        F: std::future::Future<Output = Result<T, PortError>>,
    {
        use tracing::Instrument;
        let span = self.span(operation);
        let result = f.instrument(span.clone()).await;
        match &result {
            Ok(value) => outcome(&span, label(value)),
            Err(error) => failed(&span, error.kind().as_str()),
        }
        result
    }
}

fn completion_label(c: &Completion) -> &'static str {
    match c {
        Completion::Completed(outcome) => outcome.as_str(),
        Completion::Duplicate => "duplicate",
        Completion::Tied => "tied",
    }
}

#[async_trait]
impl Store for TracedStore {
    fn system(&self) -> &'static str {
        self.inner.system()
    }

    async fn claim(
        &self,
        event_id: &EventId,
        event_type: &str,
        lease: Lease<'_>,
    ) -> Result<Claim, PortError> {
        let label = |c: &Claim| match c {
            Claim::Started { .. } => "claimed",
            Claim::Busy { .. } => "busy",
            Claim::Completed => "duplicate",
        };
        self.traced(
            "claim",
            label,
            self.inner.claim(event_id, event_type, lease),
        )
        .await
    }

    async fn complete(
        &self,
        event_id: &EventId,
        event_type: &str,
        change: Change<'_>,
        now: i64,
    ) -> Result<Completion, PortError> {
        self.traced(
            "complete",
            completion_label,
            self.inner.complete(event_id, event_type, change, now),
        )
        .await
    }

    async fn apply(
        &self,
        event_id: &EventId,
        event_type: &str,
        change: Change<'_>,
        origin: Origin<'_>,
        now: i64,
    ) -> Result<Applied, PortError> {
        self.traced(
            "apply",
            |a: &Applied| completion_label(&a.completion),
            self.inner.apply(event_id, event_type, change, origin, now),
        )
        .await
    }

    async fn fail(
        &self,
        event_id: &EventId,
        event_type: &str,
        origin: Origin<'_>,
        error: &str,
        now: i64,
        tried: Tried,
    ) -> Result<(), PortError> {
        self.traced(
            "fail",
            |_| "recorded",
            self.inner
                .fail(event_id, event_type, origin, error, now, tried),
        )
        .await
    }

    async fn record_destination(
        &self,
        event_id: &EventId,
        event_type: &str,
        origin: Origin<'_>,
        destination: &str,
        state: &DestinationState,
        now: i64,
    ) -> Result<(), PortError> {
        self.traced(
            "record_destination",
            |_| "recorded",
            self.inner
                .record_destination(event_id, event_type, origin, destination, state, now),
        )
        .await
    }

    async fn event(&self, event_id: &str) -> Result<Option<EventRecord>, PortError> {
        self.inner.event(event_id).await
    }

    async fn destinations(
        &self,
        event_id: &str,
    ) -> Result<BTreeMap<String, DestinationState>, PortError> {
        self.inner.destinations(event_id).await
    }

    async fn item(&self, id: &str) -> Result<Option<StoredItem>, PortError> {
        self.inner.item(id).await
    }

    async fn ping(&self) -> Result<(), PortError> {
        self.inner.ping().await
    }

    async fn recent(&self, since: i64) -> Result<Option<RecentActivity>, PortError> {
        self.inner.recent(since).await
    }

    async fn housekeep(&self, now: i64) -> Result<u64, PortError> {
        self.inner.housekeep(now).await
    }

    async fn holdings(&self, subject: &Subject) -> Result<Holdings, PortError> {
        self.inner.holdings(subject).await
    }

    async fn deauthorized(&self, before: i64) -> Result<Vec<String>, PortError> {
        self.inner.deauthorized(before).await
    }

    async fn erase(&self, holdings: &Holdings) -> Result<Holdings, PortError> {
        self.inner.erase(holdings).await
    }
}
