//! The receive loops: each waits for the circuit breaker to be closed and
//! for its share of free slots, receives, and starts one task a message.

use std::sync::Arc;
use std::time::Duration;

use hookline_core::ports::{Delivery, Queue};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::context::Context;
use crate::metrics::Part;

/// One receive loop; several share the slots.
#[derive(Clone)]
pub(crate) struct Poll {
    pub(crate) ctx: Arc<Context>,
    /// Messages one receive asks for (this poller's share of the slots).
    pub(crate) batch: usize,
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) tasks: TaskTracker,
    pub(crate) receive_wait: Duration,
    pub(crate) visibility: Duration,
    pub(crate) shutdown: CancellationToken,
}

impl Poll {
    /// One receive loop per ten slots of `concurrency` (a receive returns
    /// at most ten messages), all sharing the slots, so receiving keeps up
    /// with processing when each call takes time.
    pub(crate) fn spawn_all(
        ctx: Arc<Context>,
        concurrency: usize,
        tasks: TaskTracker,
        receive_wait: Duration,
        visibility: Duration,
        shutdown: CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let pollers = concurrency.div_ceil(10).max(1);
        let poll = Poll {
            batch: concurrency.div_ceil(pollers).clamp(1, 10),
            ctx,
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            tasks,
            receive_wait,
            visibility,
            shutdown,
        };
        (0..pollers)
            .map(|_| tokio::spawn(poll.clone().run()))
            .collect()
    }

    pub(crate) async fn run(self) {
        while !self.shutdown.is_cancelled() {
            // While a dependency fails, take nothing: the events wait on the
            // queue instead of spending their deliveries.
            tokio::select! {
                () = self.ctx.breaker.closed() => {}
                _ = self.shutdown.cancelled() => break,
            }
            // Wait until this poller's share of slots (at most ten, what one
            // receive can return) is free, so that receives come back full
            // instead of one message per freed slot.
            let Ok(share) = u32::try_from(self.batch) else {
                break;
            };
            let mut share = tokio::select! {
                p = Arc::clone(&self.slots).acquire_many_owned(share) => match p { Ok(p) => p, Err(_) => break },
                _ = self.shutdown.cancelled() => break,
            };
            // One permit per message, each released when its event is done.
            let mut permits = Vec::with_capacity(self.batch);
            while share.num_permits() > 1 {
                match share.split(1) {
                    Some(one) => permits.push(one),
                    None => break,
                }
            }
            permits.push(share);
            let receive = self
                .ctx
                .queue
                .receive(permits.len(), self.receive_wait, self.visibility);
            tokio::pin!(receive);
            let received = tokio::select! {
                r = &mut receive => r,
                // At shutdown a long poll is let return (its wait is within
                // the grace): an abandoned SQS poll can still take messages
                // out of sight. What it brought is handed back below. A
                // receive that takes nothing when dropped is dropped.
                _ = self.shutdown.cancelled() => {
                    if self.ctx.queue.receive_is_cancel_safe() {
                        break;
                    }
                    match tokio::time::timeout(self.receive_wait + Duration::from_secs(1), &mut receive).await {
                        Ok(r) => r,
                        Err(_) => break,
                    }
                }
            };
            let deliveries = match received {
                Ok(d) => d,
                Err(error) => {
                    self.ctx.metrics.receive_errors.inc();
                    if error.is_configuration() {
                        self.ctx.metrics.mark_configuration_error(Part::Queue);
                        tracing::error!(message = "Receive failed: configuration error.", %error);
                    } else {
                        tracing::warn!(message = "Receive failed.", %error);
                    }
                    drop(permits);
                    self.ctx.trip(Part::Queue, &error);
                    continue;
                }
            };
            self.ctx.metrics.mark_success(Part::Queue);
            if self.shutdown.is_cancelled() && !deliveries.is_empty() {
                // Handed back together, at once.
                hand_back_all(&self.ctx.queue, deliveries).await;
                break;
            }
            for delivery in deliveries {
                let permit = match permits.pop() {
                    Some(p) if !self.shutdown.is_cancelled() => p,
                    // Shutting down (or more than asked for): not started, handed back.
                    _ => {
                        let _ = tokio::time::timeout(
                            Duration::from_secs(1),
                            hand_back(self.ctx.queue.as_ref(), &delivery),
                        )
                        .await;
                        continue;
                    }
                };
                let ctx = Arc::clone(&self.ctx);
                self.tasks.spawn(async move {
                    ctx.handle(delivery).await;
                    drop(permit);
                });
            }
        }
    }
}

/// Hands messages back concurrently, within a second in all.
async fn hand_back_all(queue: &Arc<dyn Queue>, deliveries: Vec<Delivery>) {
    let mut all = tokio::task::JoinSet::new();
    for delivery in deliveries {
        let queue = Arc::clone(queue);
        all.spawn(async move { hand_back(queue.as_ref(), &delivery).await });
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), all.join_all()).await;
}

pub(crate) async fn hand_back(queue: &dyn Queue, delivery: &Delivery) {
    if let Err(error) = queue
        .set_visibility(&delivery.receipt, Duration::ZERO)
        .await
    {
        tracing::warn!(message = "Cannot hand a message back.", message_id = %delivery.message_id, %error);
    }
}
