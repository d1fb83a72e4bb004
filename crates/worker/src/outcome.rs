//! What became of one delivery, and of each destination's try of its event,
//! as values that record themselves: one log line and the metrics of each
//! outcome, in this one place. The worker acts on a
//! [`Decision`](crate::decide::Decision) (the queue calls), and the result is
//! one [`Handled`]; a routed destination's try ends in a
//! [`DestinationOutcome`].

use std::time::Duration;

use hookline_core::clock::unix_secs;
use hookline_core::ports::{Delivery, PortError, Tie};

use hookline_core::envelope::EventId;
use hookline_core::ports::DeliveryError;
use hookline_core::records::Completion;

use crate::decide::{Cause, DestinationOutcome};
use crate::info::EventInfo;
use crate::metrics::{Dependency, DestinationMetrics, WorkerMetrics};

/// One delivery's end.
#[derive(Debug)]
pub enum Handled {
    /// Completed (or a duplicate of a completed event); its delete is queued.
    Completed(Completion),
    /// A dependency failed: visible again after `delay`.
    RetryLater {
        delay: Duration,
        error: PortError,
        cause: Cause,
    },
    /// A dependency failed on the last allowed delivery: a fresh copy is on
    /// the queue, this message's delete is queued.
    Requeued { error: PortError },
    /// The requeue's send failed: the message stays, visible again later.
    RequeueFailed { error: PortError, send: String },
    /// Another worker holds the event's lease: visible again after `delay`.
    Postponed { delay: Duration },
    /// Copied to the DLQ with `reason`; its delete is queued.
    DeadLettered { reason: String },
    /// The DLQ did not take the copy: the message stays, visible again later.
    DeadLetterFailed { reason: String, send: String },
}

/// What a log line says of the delivery and its event.
struct Fields<'a> {
    event_id: &'a str,
    event_type: &'a str,
    receive_count: u32,
}

impl Handled {
    /// The one log line and the metrics of this outcome.
    pub fn record(&self, delivery: &Delivery, info: &EventInfo, metrics: &WorkerMetrics) {
        let f = Fields {
            event_id: info.event_id.as_deref().unwrap_or("?"),
            event_type: info.event_type.as_deref().unwrap_or("?"),
            receive_count: delivery.receive_count,
        };
        match self {
            Self::Completed(done) => completed(*done, info, &f, metrics),
            Self::RetryLater {
                delay,
                error,
                cause,
            } => retry_later(*delay, error, *cause, &f, metrics),
            Self::Requeued { error } => {
                metrics.retries.inc();
                tracing::warn!(
                    message = "Dependency failure on the last allowed delivery: the event is requeued, not dead-lettered.",
                    event_id = f.event_id,
                    event_type = f.event_type,
                    receive_count = f.receive_count,
                    %error,
                );
            }
            Self::RequeueFailed { error, send } => {
                metrics.retries.inc();
                tracing::error!(message = "Cannot requeue; the message stays in the queue.", event_id = f.event_id, %error, send_error = %send);
            }
            Self::Postponed { .. } => {
                metrics.busy.inc();
                tracing::debug!(
                    message = "Event leased by another worker.",
                    event_id = f.event_id
                );
            }
            Self::DeadLettered { reason } => {
                metrics.dead_lettered.inc();
                tracing::error!(
                    message = "Event dead-lettered.",
                    event_id = f.event_id,
                    event_type = f.event_type,
                    receive_count = f.receive_count,
                    reason = %reason,
                );
            }
            Self::DeadLetterFailed { reason, send } => {
                tracing::error!(message = "Cannot dead-letter; the message stays in the queue.", event_id = f.event_id, reason = %reason, error = %send);
            }
        }
    }
}

fn completed(done: Completion, info: &EventInfo, f: &Fields<'_>, metrics: &WorkerMetrics) {
    metrics.done(done);
    if info.tie == Some(Tie::Unresolved) {
        metrics.same_second_unresolved.inc();
        tracing::warn!(
            message = "Two events of one object in the same second, and nothing orders them: the later write was kept. A Stripe API key lets the worker fetch the current state instead.",
            event_id = f.event_id,
            event_type = f.event_type,
        );
    }
    metrics.mark_success(Dependency::Store);
    if let (Completion::Completed(_), Some(created)) = (done, info.created) {
        let age = unix_secs().saturating_sub(created);
        metrics.event_age.observe_secs(age as f64);
    }
    tracing::info!(
        message = "Event completed.",
        event_id = f.event_id,
        event_type = f.event_type,
        source = info.source.map(|s| s.as_str()),
        outcome = done.label(),
        reason = info.ignored.map(|i| i.reason()),
        attempts = info.attempts,
        receive_count = f.receive_count,
    );
}

fn retry_later(
    delay: Duration,
    error: &PortError,
    cause: Cause,
    f: &Fields<'_>,
    metrics: &WorkerMetrics,
) {
    metrics.retries.inc();
    let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    if error.is_configuration() {
        if cause == Cause::Store {
            metrics.mark_configuration_error(Dependency::Store);
        }
        tracing::error!(
            message = "Configuration error: the event waits in the queue until an operator fixes it.",
            event_id = f.event_id,
            event_type = f.event_type,
            receive_count = f.receive_count,
            delay_ms,
            %error,
        );
    } else if cause == Cause::Held {
        tracing::debug!(
            message = "Destination held back; the event waits on the queue.",
            event_id = f.event_id,
            event_type = f.event_type,
            delay_ms,
            %error,
        );
    } else {
        tracing::warn!(
            message = "Transient failure; retrying later.",
            event_id = f.event_id,
            event_type = f.event_type,
            receive_count = f.receive_count,
            delay_ms,
            %error,
        );
    }
}

impl DestinationOutcome {
    /// The destination's log line and metrics for this try; `attempts` is
    /// its count after the try, `error` what it answered. A delivery not
    /// sent counts nothing (the event's own line says it waits).
    pub(crate) fn record(
        &self,
        destination: &str,
        event_id: &EventId,
        attempts: u32,
        error: Option<&DeliveryError>,
        metrics: Option<&DestinationMetrics>,
    ) {
        let count = |f: fn(&DestinationMetrics)| metrics.into_iter().for_each(f);
        match self {
            Self::Delivered => {
                count(|m| m.delivered.inc());
                tracing::debug!(message = "Delivered.", event_id = %event_id, destination, attempts);
                return;
            }
            Self::Held { .. } => return,
            Self::Retry { .. } => count(|m| m.retried.inc()),
            Self::GiveUp { .. } => count(|m| m.failed.inc()),
        }
        if let Some(error) = error {
            tracing::warn!(message = "Destination did not take the event.", event_id = %event_id, destination, attempts, error_kind = error.kind.as_str(), %error);
        }
    }
}
