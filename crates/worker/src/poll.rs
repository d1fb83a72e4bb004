//! The receive loops: each waits for the circuit breaker to be closed and
//! for its share of free slots, receives, and starts one task a message.

use std::sync::Arc;
use std::time::Duration;

use hookline_core::ports::{Delivery, Queue};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::consume::Consumer;
use crate::metrics::Dependency;

/// One receive loop; several share the slots.
#[derive(Clone)]
pub(crate) struct Poll {
    pub(crate) ctx: Arc<Consumer>,
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
        ctx: Arc<Consumer>,
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

    /// Loops over [`Poll::once`] until shutdown.
    pub(crate) async fn run(self) {
        while !self.shutdown.is_cancelled() {
            if self.once().await == Turn::Stop {
                break;
            }
        }
    }

    /// One turn: wait for the breaker and for free slots, receive, start a
    /// task per message (or, shutting down, hand them back).
    pub(crate) async fn once(&self) -> Turn {
        if self.shutdown.is_cancelled() {
            return Turn::Stop;
        }
        // While a dependency fails, take nothing: the events wait on the
        // queue instead of spending their deliveries.
        tokio::select! {
            biased;
            () = self.ctx.breaker.closed() => {}
            _ = self.shutdown.cancelled() => return Turn::Stop,
        }
        let Some(permits) = self.free_slots().await else {
            return Turn::Stop;
        };
        let deliveries = match self.receive(permits.len()).await {
            Received::Messages(d) => d,
            Received::Failed => return Turn::Again,
            Received::Abandoned => return Turn::Stop,
        };
        if self.shutdown.is_cancelled() && !deliveries.is_empty() {
            // Handed back together, at once.
            hand_back_all(&self.ctx.queue, deliveries).await;
            return Turn::Stop;
        }
        self.start(deliveries, permits).await;
        Turn::Again
    }

    /// Waits until this poller's share of slots (at most ten, what one
    /// receive can return) is free, so that receives come back full instead
    /// of one message per freed slot; one permit per message, each released
    /// when its event is done. `None` at shutdown.
    async fn free_slots(&self) -> Option<Vec<OwnedSemaphorePermit>> {
        let share = u32::try_from(self.batch).ok()?;
        let mut share = tokio::select! {
            p = Arc::clone(&self.slots).acquire_many_owned(share) => p.ok()?,
            _ = self.shutdown.cancelled() => return None,
        };
        let mut permits = Vec::with_capacity(self.batch);
        while share.num_permits() > 1 {
            match share.split(1) {
                Some(one) => permits.push(one),
                None => break,
            }
        }
        permits.push(share);
        Some(permits)
    }

    /// One receive. At shutdown a long poll is let return (its wait is
    /// within the grace): an abandoned SQS poll can still take messages out
    /// of sight; what it brought is handed back by the caller. A receive
    /// that takes nothing when dropped gets a moment (a call already under
    /// way finishes, and what it took is handed back), then is dropped.
    async fn receive(&self, max: usize) -> Received {
        let receive = self
            .ctx
            .queue
            .receive(max, self.receive_wait, self.visibility);
        tokio::pin!(receive);
        let received = tokio::select! {
            r = &mut receive => r,
            _ = self.shutdown.cancelled() => {
                let wait = if self.ctx.queue.receive_is_cancel_safe() {
                    Duration::from_millis(200)
                } else {
                    self.receive_wait + Duration::from_secs(1)
                };
                match tokio::time::timeout(wait, &mut receive).await {
                    Ok(r) => r,
                    Err(_) => return Received::Abandoned,
                }
            }
        };
        match received {
            Ok(d) => {
                self.ctx.metrics.mark_success(Dependency::Queue);
                Received::Messages(d)
            }
            Err(error) => {
                self.ctx.metrics.receive_errors.inc();
                if error.is_configuration() {
                    self.ctx.metrics.mark_configuration_error(Dependency::Queue);
                    tracing::error!(message = "Receive failed: configuration error.", %error);
                } else {
                    tracing::warn!(message = "Receive failed.", %error);
                }
                self.ctx.trip(Dependency::Queue, &error);
                Received::Failed
            }
        }
    }

    /// A task per message, each holding one permit; a message without a
    /// permit (more than asked for, or shutting down) is handed back. The
    /// messages of one FIFO group share a task that takes them in order:
    /// once one of them is not done (it will be retried), the rest are
    /// handed back untouched, and the queue keeps them behind it.
    async fn start(&self, deliveries: Vec<Delivery>, mut permits: Vec<OwnedSemaphorePermit>) {
        for run in in_groups(deliveries) {
            let mut held = Vec::with_capacity(run.len());
            for delivery in run {
                match permits.pop() {
                    Some(p) if !self.shutdown.is_cancelled() => held.push((delivery, p)),
                    _ => {
                        let _ = tokio::time::timeout(
                            Duration::from_secs(1),
                            hand_back(self.ctx.queue.as_ref(), &delivery),
                        )
                        .await;
                    }
                }
            }
            if held.is_empty() {
                continue;
            }
            let ctx = Arc::clone(&self.ctx);
            self.tasks.spawn(async move {
                let mut held = held.into_iter();
                while let Some((delivery, permit)) = held.next() {
                    let done = crate::slot::holding(permit, ctx.handle(delivery)).await;
                    if !done {
                        for (later, permit) in held.by_ref() {
                            hand_back(ctx.queue.as_ref(), &later).await;
                            drop(permit);
                        }
                    }
                }
            });
        }
    }
}

/// A receive's messages as runs to process: each message of no group on
/// its own, and the messages of one group together, in the order received.
fn in_groups(deliveries: Vec<Delivery>) -> Vec<Vec<Delivery>> {
    let mut runs: Vec<Vec<Delivery>> = Vec::new();
    let mut by_group: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for d in deliveries {
        match d.group_id.clone() {
            Some(g) => match by_group.get(&g) {
                Some(&i) => runs[i].push(d),
                None => {
                    by_group.insert(g, runs.len());
                    runs.push(vec![d]);
                }
            },
            None => runs.push(vec![d]),
        }
    }
    runs
}

/// Whether a poller goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Turn {
    Again,
    Stop,
}

/// What one receive gave.
enum Received {
    Messages(Vec<Delivery>),
    /// Failed (the breaker is tripped): try again once it closes.
    Failed,
    /// Given up on at shutdown.
    Abandoned,
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hookline_core::message::OutboundMessage;
    use hookline_core::ports::{PortError, Store};

    use super::*;
    use crate::breaker::Breaker;
    use crate::metrics::WorkerMetrics;
    use crate::process::Processor;
    use hookline_core::coalescer::{DeleteCoalescer, SendCoalescer};

    #[test]
    fn a_groups_messages_run_together_in_the_order_received() {
        let d = |id: &str, group: Option<&str>| Delivery {
            message_id: id.to_owned(),
            receipt: id.to_owned(),
            body: bytes::Bytes::new(),
            attributes: Default::default(),
            receive_count: 1,
            sent_at_ms: 0,
            group_id: group.map(str::to_owned),
        };
        let runs = in_groups(vec![
            d("1", Some("po_a")),
            d("2", None),
            d("3", Some("po_b")),
            d("4", Some("po_a")),
            d("5", None),
        ]);
        let ids: Vec<Vec<&str>> = runs
            .iter()
            .map(|r| r.iter().map(|d| d.message_id.as_str()).collect())
            .collect();
        assert_eq!(ids, [vec!["1", "4"], vec!["2"], vec!["3"], vec!["5"]]);
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        queue: Arc<dyn Queue>,
        store: Arc<dyn Store>,
        poll: Poll,
    }

    /// A poller on a fresh embedded backend holding `n` payout events.
    async fn bench(n: usize) -> Fixture {
        let dir = tempfile::tempdir().expect("tmp");
        let e = hookline_embedded::open(dir.path(), hookline_embedded::Options::default())
            .expect("open");
        let (queue, store): (Arc<dyn Queue>, Arc<dyn Store>) = (e.queue, e.store);
        let fixture = include_str!("../../../testdata/stripe-events/payout.created.json");
        let messages: Vec<OutboundMessage> = (0..n)
            .map(|i| {
                let mut v: serde_json::Value = serde_json::from_str(fixture).expect("json");
                v["id"] = format!("evt_test_poll_{i}").into();
                v["data"]["object"]["id"] = format!("po_test_poll_{i}").into();
                let body = v.to_string();
                let env = hookline_core::envelope::Envelope::parse(body.as_bytes()).expect("event");
                OutboundMessage::for_event(&env, bytes::Bytes::from(body), 1_700_000_000)
            })
            .collect();
        assert!(queue.send_batch(&messages).await.iter().all(Result::is_ok));
        let local = hookline_core::coalescer::CoalescerConfig::local();
        let ctx = Arc::new(Consumer {
            queue: Arc::clone(&queue),
            processor: Processor::with_defaults(Arc::clone(&store)),
            metrics: Arc::new(WorkerMetrics::default()),
            visibility: Duration::from_secs(30),
            acks: DeleteCoalescer::spawn(Arc::clone(&queue), local),
            sends: SendCoalescer::spawn(Arc::clone(&queue), local),
            dead_letters: SendCoalescer::spawn(Arc::clone(&queue), local),
            breaker: Arc::new(Breaker::default()),
        });
        let poll = Poll {
            ctx,
            batch: 10,
            slots: Arc::new(Semaphore::new(10)),
            tasks: TaskTracker::new(),
            receive_wait: Duration::from_millis(100),
            visibility: Duration::from_secs(30),
            shutdown: CancellationToken::new(),
        };
        Fixture {
            _dir: dir,
            queue,
            store,
            poll,
        }
    }

    async fn waiting(q: &dyn Queue) -> u64 {
        q.counts().await.expect("counts").waiting
    }

    /// A turn takes up to its share, processes each in a task, and queues
    /// each one's delete once it is completed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_turn_takes_its_share_and_acks_what_completed() {
        let b = bench(12).await;
        assert_eq!(b.poll.once().await, Turn::Again);
        b.poll.tasks.close();
        b.poll.tasks.wait().await;
        assert_eq!(waiting(b.queue.as_ref()).await, 2, "ten taken, two left");
        b.poll.ctx.acks.finish().await;
        let c = b.queue.counts().await.expect("counts");
        assert_eq!(c.in_flight, 0, "each completed event's message deleted");
        assert_eq!(b.poll.ctx.acks.stats().messages.get(), 10);
        let rec = b.store.event("evt_test_poll_0").await.expect("read");
        assert!(rec.is_some_and(|r| r.status == hookline_core::records::EventStatus::Completed));
    }

    /// While the breaker is open, a turn takes nothing; it goes on once a
    /// probe closes it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_open_breaker_takes_nothing_until_it_closes() {
        let b = bench(3).await;
        let down = PortError::transient("connection refused".to_owned());
        b.poll
            .ctx
            .breaker
            .trip(crate::metrics::Dependency::Store, &down);
        let waited = tokio::time::timeout(Duration::from_millis(300), b.poll.once()).await;
        assert!(waited.is_err(), "the turn waits for the breaker");
        assert_eq!(waiting(b.queue.as_ref()).await, 3, "nothing taken");
        b.poll.ctx.breaker.probe_succeeded();
        assert_eq!(b.poll.once().await, Turn::Again);
        b.poll.tasks.close();
        b.poll.tasks.wait().await;
        assert_eq!(waiting(b.queue.as_ref()).await, 0);
    }

    /// Once shutdown fires, a turn stops without taking anything.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_shutdown_a_turn_stops_and_takes_nothing() {
        let b = bench(3).await;
        b.poll.shutdown.cancel();
        assert_eq!(b.poll.once().await, Turn::Stop);
        assert_eq!(waiting(b.queue.as_ref()).await, 3);
        let c = b.queue.counts().await.expect("counts");
        assert_eq!(c.in_flight, 0, "nothing hidden");
    }
}
