//! Batching, in one place: many concurrent queue calls, few batched ones.
//!
//! Every batched queue call goes through a [`Coalescer`]: sends
//! ([`SendCoalescer`]: the ingress, `backfill`, the worker's dead-letter and
//! requeue copies, `dlq replay`'s copies) and deletes ([`DeleteCoalescer`]:
//! the worker's acks, `dlq replay`'s removal of what it copied). A caller
//! hands in one entry and is answered with the result of that entry alone.
//!
//! Entries wait in a channel; a collector takes the first, gathers more
//! until the batch is full (the backend's [`BatchLimits`]: entries, and
//! bytes for sends) or `linger` has passed, and hands the batch to a flush
//! task. At most `max_in_flight` flushes run at once, so while they are busy
//! new entries pile up and the next batch is larger: on SQS this is
//! `SendMessageBatch` / `DeleteMessageBatch`; on SQLite one transaction per
//! batch. A failed batch fails exactly its entries.
//!
//! The adapters take a batch as the port's contract says (at most
//! [`Queue::batch_limits`]) and split nothing themselves. The embedded
//! writer's group commit is not batching of calls but of transactions:
//! concurrent calls share one commit.

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::time::Instant;

use crate::message::OutboundMessage;
use crate::ports::{BatchLimits, PortError, Queue};

/// Tuning of a [`Coalescer`].
#[derive(Debug, Clone, Copy)]
pub struct CoalescerConfig {
    /// How long a batch may wait for more entries after its first one.
    pub linger: Duration,
    /// Batches being sent at once.
    pub max_in_flight: usize,
    /// Entries that may wait in line before callers are pushed back.
    pub queue_depth: usize,
}

impl CoalescerConfig {
    /// For a local backend with one writer: no linger (batches form while the
    /// previous commit runs), one flush at a time.
    pub fn local() -> Self {
        Self {
            linger: Duration::ZERO,
            max_in_flight: 1,
            queue_depth: 8192,
        }
    }
    /// For a remote queue with per-call latency: a short linger and several
    /// batches in flight.
    pub fn remote() -> Self {
        Self {
            linger: Duration::from_millis(2),
            max_in_flight: 32,
            queue_depth: 8192,
        }
    }
    /// For deletes of completed messages: off the latency path (the event
    /// is committed), so a batch may wait up to a second to fill (SQS's
    /// batches of 10 even at tens of events a second; far inside the
    /// visibility timeout; a crash meanwhile only redelivers duplicates).
    pub fn deletes() -> Self {
        Self {
            linger: Duration::from_secs(1),
            max_in_flight: 4,
            queue_depth: 8192,
        }
    }
}

/// One kind of batched call: its entries, their size, the call itself.
#[async_trait]
pub trait Batched: Send + Sync + 'static {
    type Entry: Send + Sync + 'static;
    /// The backend's limits for one call.
    fn limits(&self) -> BatchLimits;
    /// An entry's share of [`BatchLimits::max_bytes`].
    fn size(entry: &Self::Entry) -> usize;
    /// The batched call: one result per entry, in order.
    async fn call(&self, batch: &[Self::Entry]) -> Vec<Result<(), PortError>>;
}

/// Sends to a queue (`send_batch`).
#[derive(Debug)]
pub struct Sends(pub Arc<dyn Queue>);

#[async_trait]
impl Batched for Sends {
    type Entry = OutboundMessage;
    fn limits(&self) -> BatchLimits {
        self.0.batch_limits()
    }
    fn size(entry: &OutboundMessage) -> usize {
        entry.wire_size()
    }
    async fn call(&self, batch: &[OutboundMessage]) -> Vec<Result<(), PortError>> {
        self.0.send_batch(batch).await
    }
}

/// Deletes from a queue by receipt (`delete_batch`).
#[derive(Debug)]
pub struct Deletes(pub Arc<dyn Queue>);

#[async_trait]
impl Batched for Deletes {
    type Entry = String;
    fn limits(&self) -> BatchLimits {
        BatchLimits {
            max_bytes: usize::MAX,
            ..self.0.batch_limits()
        }
    }
    fn size(_: &String) -> usize {
        0
    }
    async fn call(&self, batch: &[String]) -> Vec<Result<(), PortError>> {
        self.0.delete_batch(batch).await
    }
}

struct Pending<E> {
    entry: E,
    done: oneshot::Sender<Result<(), PortError>>,
}

/// Counts of what the coalescer did, for tests and benchmarks.
#[derive(Debug, Default)]
pub struct CoalescerStats {
    pub batches: crate::metrics::Counter,
    pub messages: crate::metrics::Counter,
}

/// Cheap to clone; all clones feed one collector.
pub struct Coalescer<B: Batched> {
    tx: mpsc::Sender<Pending<B::Entry>>,
    stats: Arc<CoalescerStats>,
    stop: Arc<watch::Sender<bool>>,
    collector: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
    _batched: PhantomData<fn() -> B>,
}

impl<B: Batched> Clone for Coalescer<B> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            stats: Arc::clone(&self.stats),
            stop: Arc::clone(&self.stop),
            collector: Arc::clone(&self.collector),
            _batched: PhantomData,
        }
    }
}

impl<B: Batched> std::fmt::Debug for Coalescer<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer")
            .field("batches", &self.stats.batches.get())
            .finish_non_exhaustive()
    }
}

/// Sends through one collector: `send`.
pub type SendCoalescer = Coalescer<Sends>;
/// Deletes through one collector: `delete`.
pub type DeleteCoalescer = Coalescer<Deletes>;

impl SendCoalescer {
    /// Starts a send collector for `queue` on the current tokio runtime.
    pub fn spawn(queue: Arc<dyn Queue>, config: CoalescerConfig) -> Self {
        Self::start(Sends(queue), config)
    }
    /// Sends one message; returns once the queue holds it (or failed to).
    pub async fn send(&self, message: OutboundMessage) -> Result<(), PortError> {
        self.submit(message).await
    }
}

impl DeleteCoalescer {
    /// Starts a delete collector for `queue` on the current tokio runtime.
    pub fn spawn(queue: Arc<dyn Queue>, config: CoalescerConfig) -> Self {
        Self::start(Deletes(queue), config)
    }
    /// Deletes one message by its receipt.
    pub async fn delete(&self, receipt: String) -> Result<(), PortError> {
        self.submit(receipt).await
    }
}

impl<B: Batched> Coalescer<B> {
    /// Starts the collector on the current tokio runtime. It ends when every
    /// clone is dropped, or after [`Coalescer::stop`], once it has flushed
    /// what it holds.
    pub fn start(batched: B, config: CoalescerConfig) -> Self {
        let (tx, rx) = mpsc::channel(config.queue_depth.max(1));
        let stats = Arc::new(CoalescerStats::default());
        let (stop, stopped) = watch::channel(false);
        let collector = tokio::spawn(collect(
            Arc::new(batched),
            config,
            rx,
            Arc::clone(&stats),
            stopped,
        ));
        Self {
            tx,
            stats,
            stop: Arc::new(stop),
            collector: Arc::new(Mutex::new(Some(collector))),
            _batched: PhantomData,
        }
    }

    /// Hands in one entry; returns the result of its batched call.
    pub async fn submit(&self, entry: B::Entry) -> Result<(), PortError> {
        self.enqueue(entry).await?.result().await
    }

    /// Puts one entry in line and returns at once with what will answer
    /// it: for a caller that does not wait for the call (the worker's
    /// acks), while a stop still flushes what is in line.
    pub async fn enqueue(&self, entry: B::Entry) -> Result<Answer, PortError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Pending { entry, done })
            .await
            .map_err(|_| PortError::transient("coalescer stopped".to_owned()))?;
        Ok(Answer(wait))
    }

    /// Stops lingering: what is in line is flushed at once, and the
    /// collector ends when the line is empty and its flushes are done.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// [`Coalescer::stop`], then waits for the collector to end.
    pub async fn finish(&self) {
        self.stop();
        let handle = self
            .collector
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(h) = handle {
            let _ = h.await;
        }
    }

    pub fn stats(&self) -> &CoalescerStats {
        &self.stats
    }
}

/// The result of one entry's batched call, to come.
#[derive(Debug)]
pub struct Answer(oneshot::Receiver<Result<(), PortError>>);

impl Answer {
    pub async fn result(self) -> Result<(), PortError> {
        self.0
            .await
            .map_err(|_| PortError::transient("batched call abandoned".to_owned()))?
    }
}

/// How long [`next`] may wait for an entry.
#[derive(Clone, Copy)]
enum Wait {
    Forever,
    Until(Instant),
    No,
}

/// The next entry in line, waiting as `wait` allows; once stopped, only
/// what is already in line.
async fn next<E>(
    rx: &mut mpsc::Receiver<Pending<E>>,
    stopped: &mut watch::Receiver<bool>,
    wait: Wait,
) -> Option<Pending<E>> {
    if let Ok(p) = rx.try_recv() {
        return Some(p);
    }
    if *stopped.borrow() {
        return None;
    }
    let recv = async {
        match wait {
            Wait::Forever => rx.recv().await,
            Wait::Until(deadline) => tokio::time::timeout_at(deadline, rx.recv())
                .await
                .ok()
                .flatten(),
            Wait::No => None,
        }
    };
    tokio::select! {
        p = recv => p,
        _ = stopped.wait_for(|s| *s) => None,
    }
}

async fn collect<B: Batched>(
    batched: Arc<B>,
    config: CoalescerConfig,
    mut rx: mpsc::Receiver<Pending<B::Entry>>,
    stats: Arc<CoalescerStats>,
    mut stopped: watch::Receiver<bool>,
) {
    let limits = batched.limits();
    let slots = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
    let mut carry: Option<Pending<B::Entry>> = None;
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let first = match carry.take() {
            Some(p) => p,
            None => match next(&mut rx, &mut stopped, Wait::Forever).await {
                Some(p) => p,
                None => break,
            },
        };
        let mut bytes = B::size(&first.entry);
        let mut batch = vec![first];
        let wait = if config.linger.is_zero() {
            Wait::No
        } else {
            Wait::Until(Instant::now() + config.linger)
        };
        while batch.len() < limits.max_entries.max(1) {
            let Some(p) = next(&mut rx, &mut stopped, wait).await else {
                break;
            };
            let size = B::size(&p.entry);
            if bytes.saturating_add(size) > limits.max_bytes {
                carry = Some(p);
                break;
            }
            bytes += size;
            batch.push(p);
        }
        stats.batches.inc();
        stats.messages.add(batch.len() as u64);
        let batched = Arc::clone(&batched);
        tokio::spawn(async move {
            flush(batched.as_ref(), batch).await;
            drop(permit);
        });
    }
    // Wait for the flushes still running before the collector ends.
    let _ = slots
        .acquire_many(u32::try_from(config.max_in_flight.max(1)).unwrap_or(1))
        .await;
}

async fn flush<B: Batched>(batched: &B, batch: Vec<Pending<B::Entry>>) {
    let (entries, waiters): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.entry, p.done)).unzip();
    let mut results = batched.call(&entries).await.into_iter();
    for done in waiters {
        let result = results.next().unwrap_or_else(|| {
            Err(PortError::transient(
                "queue returned fewer results than entries".to_owned(),
            ))
        });
        // The caller may have timed out and gone; its entry was still sent.
        let _ = done.send(result);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use async_trait::async_trait;
    use bytes::Bytes;

    use super::*;
    use crate::ports::{BatchLimits, Delivery, QueueCounts};

    /// A queue that records each batch it is handed and fails every batch
    /// holding a message whose body is `fail`.
    #[derive(Debug, Default)]
    struct Recorder {
        batches: Mutex<Vec<Vec<String>>>,
        limits: Option<BatchLimits>,
    }

    #[async_trait]
    impl Queue for Recorder {
        fn batch_limits(&self) -> BatchLimits {
            self.limits.unwrap_or(BatchLimits {
                max_entries: 3,
                max_bytes: 1000,
            })
        }
        async fn send_batch(&self, batch: &[OutboundMessage]) -> Vec<Result<(), PortError>> {
            let bodies: Vec<String> = batch
                .iter()
                .map(|m| String::from_utf8_lossy(&m.body).into_owned())
                .collect();
            let fail = bodies.iter().any(|b| b == "fail");
            self.batches.lock().expect("lock").push(bodies);
            batch
                .iter()
                .map(|_| {
                    if fail {
                        Err(PortError::transient("batch refused".to_owned()))
                    } else {
                        Ok(())
                    }
                })
                .collect()
        }
        async fn receive(
            &self,
            _: usize,
            _: Duration,
            _: Duration,
        ) -> Result<Vec<Delivery>, PortError> {
            Ok(Vec::new())
        }
        async fn delete_batch(&self, r: &[String]) -> Vec<Result<(), PortError>> {
            r.iter().map(|_| Ok(())).collect()
        }
        async fn set_visibility(&self, _: &str, _: Duration) -> Result<(), PortError> {
            Ok(())
        }
        async fn counts(&self) -> Result<QueueCounts, PortError> {
            Ok(QueueCounts::default())
        }
    }

    fn message(body: &str) -> OutboundMessage {
        OutboundMessage {
            body: Bytes::from(body.to_owned()),
            attributes: BTreeMap::new(),
            group_id: "g".to_owned(),
            dedup_id: body.to_owned(),
        }
    }

    /// Sends all bodies at once through one coalescer whose single flush
    /// slot is held until every request is in line, so batches form from
    /// the full line.
    async fn send_all(queue: Arc<Recorder>, bodies: &[&str]) -> Vec<Result<(), PortError>> {
        let config = CoalescerConfig {
            linger: Duration::from_millis(50),
            max_in_flight: 1,
            queue_depth: 64,
        };
        let coalescer = SendCoalescer::spawn(queue, config);
        let sends: Vec<_> = bodies
            .iter()
            .map(|b| {
                let c = coalescer.clone();
                let m = message(b);
                tokio::spawn(async move { c.send(m).await })
            })
            .collect();
        let mut out = Vec::new();
        for s in sends {
            out.push(s.await.expect("joined"));
        }
        out
    }

    #[tokio::test]
    async fn batches_respect_the_entry_limit() {
        let queue = Arc::new(Recorder::default());
        let results = send_all(Arc::clone(&queue), &["a", "b", "c", "d", "e", "f", "g"]).await;
        assert!(results.iter().all(Result::is_ok));
        let batches = queue.batches.lock().expect("lock").clone();
        assert!(batches.iter().all(|b| b.len() <= 3), "{batches:?}");
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 7);
    }

    #[tokio::test]
    async fn a_message_that_would_overflow_the_bytes_is_carried_to_the_next_batch() {
        let queue = Arc::new(Recorder {
            limits: Some(BatchLimits {
                max_entries: 10,
                max_bytes: 250,
            }),
            ..Default::default()
        });
        let big = "x".repeat(100);
        let bodies = [big.as_str(), big.as_str(), big.as_str()];
        let results = send_all(Arc::clone(&queue), &bodies).await;
        assert!(results.iter().all(Result::is_ok));
        let batches = queue.batches.lock().expect("lock").clone();
        // Each message is 100 bytes plus its attributes (none): two fit in 250.
        assert_eq!(
            batches.iter().map(Vec::len).collect::<Vec<_>>(),
            [2, 1],
            "{batches:?}"
        );
    }

    #[tokio::test]
    async fn a_failed_batch_fails_exactly_its_callers() {
        let queue = Arc::new(Recorder::default());
        let results = send_all(Arc::clone(&queue), &["a", "b", "fail", "c", "d", "e"]).await;
        let batches = queue.batches.lock().expect("lock").clone();
        let failed_batch = batches
            .iter()
            .find(|b| b.iter().any(|m| m == "fail"))
            .expect("the batch with the failing message");
        for (body, result) in ["a", "b", "fail", "c", "d", "e"].iter().zip(&results) {
            assert_eq!(
                result.is_err(),
                failed_batch.iter().any(|m| m == body),
                "{body}: {result:?} in {batches:?}"
            );
        }
    }

    #[tokio::test]
    async fn deletes_batch_by_the_entry_limit_and_stopping_flushes_at_once() {
        let queue = Arc::new(Recorder::default());
        let config = CoalescerConfig {
            linger: Duration::from_secs(3600),
            max_in_flight: 1,
            queue_depth: 64,
        };
        let deletes = DeleteCoalescer::spawn(Arc::clone(&queue) as Arc<dyn Queue>, config);
        let mut answers = Vec::new();
        for i in 0..7 {
            answers.push(deletes.enqueue(format!("r{i}")).await.expect("in line"));
        }
        // Two full batches of 3 go at once; the seventh lingers for more
        // until stopping flushes it without waiting out the hour.
        tokio::time::timeout(Duration::from_secs(5), deletes.finish())
            .await
            .expect("stopping does not linger");
        for a in answers {
            assert!(a.result().await.is_ok());
        }
        assert_eq!(deletes.stats().messages.get(), 7);
        assert_eq!(deletes.stats().batches.get(), 3);
        assert!(deletes.delete("late".to_owned()).await.is_err(), "stopped");
    }
}
