//! The routed destinations, targets of a route beside the projections
//! (HTTP, EventBridge, a custom worker's handlers): one try of one event
//! at one destination, through the destination's own breaker
//! ([`crate::held`]), as a span of the event's trace, timed into its
//! metrics.

use std::sync::Arc;
use std::time::Instant;

use hookline_core::ports::{DeliveryError, Destination, Outgoing};
use hookline_core::records::DestinationState;

use crate::held::{Admit, DestinationBreaker};
use crate::ledger::Attempt;
use crate::metrics::DestinationMetrics;

/// A destination with its breaker and its metrics.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) destination: Arc<dyn Destination>,
    pub(crate) metrics: Arc<DestinationMetrics>,
    breaker: Arc<DestinationBreaker>,
}

impl Target {
    pub(crate) fn new(destination: Arc<dyn Destination>) -> Self {
        Self {
            destination,
            metrics: Arc::default(),
            breaker: Arc::default(),
        }
    }

    pub(crate) fn name(&self) -> &str {
        self.destination.name()
    }

    /// One try of the event at this destination, `state` being its state
    /// before. With its breaker open nothing is sent (`not_sent`).
    pub(crate) async fn send(
        &self,
        a: &Attempt<'_>,
        state: &DestinationState,
        body: &bytes::Bytes,
    ) -> Result<(), DeliveryError> {
        let admit = self.breaker.admit();
        if let Admit::Wait(wait) = admit {
            return Err(DeliveryError::not_sent(
                "its breaker is open: not sent",
                wait,
            ));
        }
        let started = Instant::now();
        let outgoing = Outgoing {
            event_id: a.id.as_str(),
            event_type: a.event_type,
            body,
            attempt: state.attempts + 1,
            now: a.now,
            redelivery: state.redelivery.as_deref(),
        };
        let span = hookline_telemetry::span::destination(self.name(), state.attempts + 1);
        let result = hookline_telemetry::in_span(span, self.destination.deliver(outgoing), |r| {
            r.as_ref()
                .map(|()| "delivered")
                .map_err(|e| e.kind.as_str())
        })
        .await;
        self.breaker
            .record(self.name(), &result, admit == Admit::Probe);
        self.metrics
            .breaker_open
            .set(i64::from(self.breaker.is_open()));
        if !result.as_ref().is_err_and(|e| e.not_sent) {
            self.metrics.latency.observe(started.elapsed());
        }
        result
    }
}

/// `part` as a view of `whole` when it lies within it (no copy), else a
/// copy: the event's bytes within the delivery's body, shared by every
/// destination.
pub(crate) fn slice_within(whole: &bytes::Bytes, part: &[u8]) -> bytes::Bytes {
    let range = whole.as_ptr_range();
    let inside = range.start <= part.as_ptr() && part.as_ptr_range().end <= range.end;
    if inside && !part.is_empty() {
        whole.slice_ref(part)
    } else {
        bytes::Bytes::copy_from_slice(part)
    }
}
