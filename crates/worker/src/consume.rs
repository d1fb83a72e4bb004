//! One delivery's life in the worker: process it (with a visibility
//! heartbeat), act on the decision (the queue calls), record the outcome;
//! and the circuit breaker's trip and prober.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hookline_core::clock::{unix_millis, unix_secs};
use hookline_core::coalescer::{DeleteCoalescer, SendCoalescer};
use hookline_core::message::attr;
use hookline_core::ports::{Delivery, PortError, Queue};
use tokio_util::sync::CancellationToken;

use crate::breaker::Breaker;
use crate::decide::{Cause, Decision};
use crate::info::EventInfo;
use crate::metrics::{Dependency, WorkerMetrics};
use crate::outcome::Handled;
use crate::process::Processor;

pub(crate) struct Consumer {
    pub(crate) queue: Arc<dyn Queue>,
    pub(crate) processor: Processor,
    pub(crate) metrics: Arc<WorkerMetrics>,
    pub(crate) visibility: Duration,
    /// Deletes of completed messages, batched.
    pub(crate) acks: DeleteCoalescer,
    /// Requeued copies, to the queue.
    pub(crate) sends: SendCoalescer,
    /// Dead-lettered copies, to the DLQ.
    pub(crate) dead_letters: SendCoalescer,
    pub(crate) breaker: Arc<Breaker>,
}

impl Consumer {
    /// A dependency failed for a reason that is not the event's: open the
    /// circuit breaker (no new message is taken until a probe succeeds).
    pub(crate) fn trip(&self, part: Dependency, error: &hookline_core::ports::PortError) {
        if self.breaker.trip(part, error) {
            self.metrics.circuit_opened.inc();
            self.metrics.mark_unavailable(Some(part));
            tracing::error!(
                message = "Circuit open: a dependency fails; no new message is taken until it answers. Events wait on the queue and are not dead-lettered for it.",
                dependency = part.as_str(),
                error_kind = error.kind().as_str(),
                %error
            );
        }
    }

    /// Processes one delivery and acts on it; `true` when the message is
    /// gone from the queue's view for good (completed or dead-lettered), so
    /// the next message of its FIFO group may follow.
    pub(crate) async fn handle(&self, delivery: Delivery) -> bool {
        use tracing::Instrument;
        // One span from receive to delete, opened and filled in here.
        let span = tracing::info_span!(
            "delivery",
            message_id = %delivery.message_id,
            receive_count = delivery.receive_count,
            event_id = tracing::field::Empty,
            event_type = tracing::field::Empty,
        );
        let logged = span.clone();
        async {
            // The trace's span (a `debug` span, disabled unless exported).
            let process = crate::trace::process_span(&delivery, self.queue.system());
            let traced = process.clone();
            async {
                self.metrics.in_flight.add(1);
                let start = Instant::now();
                let receive = hookline_telemetry::step("receive");
                if !receive.is_disabled() {
                    let waited = unix_millis().saturating_sub(delivery.sent_at_ms).max(0);
                    receive.record("hookline.outcome", "received");
                    receive.record("hookline.queue_wait_ms", waited);
                }
                drop(receive);
                let (decision, info) = self.process_with_heartbeat(&delivery).await;
                if let Some(id) = &info.event_id {
                    logged.record("event_id", id.as_str());
                }
                if let Some(t) = &info.event_type {
                    logged.record("event_type", t.as_str());
                }
                self.metrics.handler_latency.observe(start.elapsed());
                let handled = self.act(&delivery, decision).await;
                crate::trace::delivered(&traced, &info, &handled);
                handled.record(&delivery, &info, &self.metrics);
                self.metrics.in_flight.add(-1);
                matches!(
                    handled,
                    Handled::Completed(_) | Handled::DeadLettered { .. }
                )
            }
            .instrument(process)
            .await
        }
        .instrument(span)
        .await
    }

    /// Processes while extending the message's visibility every half
    /// timeout, so a slow event is not delivered to another worker meanwhile.
    async fn process_with_heartbeat(&self, delivery: &Delivery) -> (Decision, EventInfo) {
        let work = self
            .processor
            .process(delivery, unix_secs(), fastrand::f64());
        tokio::pin!(work);
        let period = (self.visibility / 2).max(Duration::from_millis(500));
        let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = beat.tick() => {
                    if let Err(error) = self.queue.set_visibility(&delivery.receipt, self.visibility).await {
                        tracing::warn!(message = "Visibility heartbeat failed.", message_id = %delivery.message_id, %error);
                    }
                }
            }
        }
    }

    /// The queue calls a decision needs; what became of the delivery.
    async fn act(&self, delivery: &Delivery, decision: Decision) -> Handled {
        match decision {
            Decision::Done(done) => {
                self.delete(delivery).await;
                Handled::Completed(done)
            }
            Decision::RetryLater {
                delay,
                error,
                cause,
            } => {
                if cause == Cause::Store {
                    self.trip(Dependency::Store, &error);
                }
                // If this fails too, the visibility timeout brings it back.
                let _ = self.queue.set_visibility(&delivery.receipt, delay).await;
                Handled::RetryLater {
                    delay,
                    error,
                    cause,
                }
            }
            Decision::Requeue { error, cause } => {
                if cause == Cause::Store {
                    self.trip(Dependency::Store, &error);
                }
                self.requeue(delivery, error).await
            }
            Decision::Busy { delay } => {
                let _ = self.queue.set_visibility(&delivery.receipt, delay).await;
                Handled::Postponed { delay }
            }
            Decision::DeadLetter { reason } => self.dead_letter(delivery, reason).await,
        }
    }

    /// Puts the message's delete in line (batched by the delete
    /// coalescer); its answer is awaited off the delivery's path.
    async fn delete(&self, delivery: &Delivery) {
        let message_id = delivery.message_id.clone();
        match self.acks.enqueue(delivery.receipt.clone()).await {
            Ok(answer) => {
                tokio::spawn(async move {
                    if let Err(error) = answer.result().await {
                        // The event is COMPLETED: a redelivery completes as a duplicate.
                        tracing::warn!(message = "Delete failed; the message will come back as a duplicate.", %message_id, %error);
                    }
                });
            }
            Err(error) => {
                tracing::warn!(message = "Delete not queued; the message will come back as a duplicate.", %message_id, %error);
            }
        }
    }

    /// A fresh copy (its own deduplication id, the same group) goes on the
    /// queue, whose deliveries start again; then this message goes.
    async fn requeue(&self, delivery: &Delivery, error: PortError) -> Handled {
        let mut copy = delivery.to_outbound().as_copy();
        crate::trace::carry(&mut copy);
        match self.sends.send(copy).await {
            Ok(()) => {
                self.delete(delivery).await;
                Handled::Requeued { error }
            }
            other => {
                let later = self.processor.backoff.max.min(self.visibility);
                let _ = self.queue.set_visibility(&delivery.receipt, later).await;
                Handled::RequeueFailed {
                    error,
                    send: send_error(other),
                }
            }
        }
    }

    /// A copy with the reason goes to the DLQ; then this message goes. If
    /// the DLQ does not take it, the message comes back on the backoff.
    async fn dead_letter(&self, delivery: &Delivery, reason: String) -> Handled {
        let mut copy = delivery.to_outbound();
        copy.attributes
            .insert(attr::ERROR.to_owned(), truncate(&reason, 1024));
        crate::trace::carry(&mut copy);
        match self.dead_letters.send(copy).await {
            Ok(()) => {
                self.delete(delivery).await;
                Handled::DeadLettered { reason }
            }
            other => {
                let delay = self
                    .processor
                    .backoff
                    .delay(delivery.receive_count, fastrand::f64());
                let _ = self.queue.set_visibility(&delivery.receipt, delay).await;
                Handled::DeadLetterFailed {
                    reason,
                    send: send_error(other),
                }
            }
        }
    }
}

fn send_error(result: Result<(), PortError>) -> String {
    match result {
        Err(e) => e.to_string(),
        Ok(()) => "no result".to_owned(),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// While the circuit breaker is open, probes the failing dependency on its
/// backoff and closes the breaker at the first answer.
pub(crate) async fn probe_while_open(ctx: Arc<Consumer>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = ctx.breaker.opened() => {}
            _ = shutdown.cancelled() => return,
        }
        while let Some((part, delay)) = ctx.breaker.state().next_probe() {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return,
            }
            let answered = match part {
                Dependency::Store => ctx.processor.store.ping().await,
                Dependency::Queue => ctx.queue.ping().await,
            };
            match answered {
                Ok(()) => {
                    ctx.metrics.mark_success(part);
                    if ctx.breaker.probe_succeeded() {
                        ctx.metrics.mark_unavailable(None);
                        tracing::info!(
                            message = "Dependency answers again: taking messages again.",
                            dependency = part.as_str()
                        );
                    }
                }
                Err(error) => {
                    if error.is_configuration() {
                        ctx.metrics.mark_configuration_error(part);
                    }
                    ctx.breaker.probe_failed(&error);
                    tracing::error!(
                        message = "Dependency still fails: no message is taken; events wait on the queue.",
                        dependency = part.as_str(),
                        error_kind = error.kind().as_str(),
                        %error
                    );
                }
            }
        }
    }
}
