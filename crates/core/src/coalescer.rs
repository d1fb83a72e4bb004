//! The send coalescer: many concurrent sends, few batched queue calls.
//!
//! Every backend sits behind one. Requests wait in a channel; a collector
//! takes the first, gathers more until the batch is full (entries or bytes
//! of the backend's [`BatchLimits`]) or `linger` has passed, and hands the
//! batch to a flush task. At most `max_in_flight` flushes run at once, so
//! while they are busy new requests pile up and the next batch is larger:
//! on SQLite this is group commit (one transaction and one fsync per batch),
//! on SQS it is `SendMessageBatch`. Each caller is answered only with the
//! result of its own message; a failed batch fails exactly its requests.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::message::OutboundMessage;
use crate::ports::{PortError, Queue};

/// Tuning of a [`SendCoalescer`].
#[derive(Debug, Clone, Copy)]
pub struct CoalescerConfig {
    /// How long a batch may wait for more messages after its first one.
    pub linger: Duration,
    /// Batches being sent at once.
    pub max_in_flight: usize,
    /// Requests that may wait in line before senders are pushed back.
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
}

struct Pending {
    message: OutboundMessage,
    done: oneshot::Sender<Result<(), PortError>>,
}

/// Counts of what the coalescer did, for tests and benchmarks.
#[derive(Debug, Default)]
pub struct CoalescerStats {
    pub batches: crate::metrics::Counter,
    pub messages: crate::metrics::Counter,
}

/// Cheap to clone; all clones feed one collector.
#[derive(Debug, Clone)]
pub struct SendCoalescer {
    tx: mpsc::Sender<Pending>,
    stats: Arc<CoalescerStats>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").finish_non_exhaustive()
    }
}

impl SendCoalescer {
    /// Starts the collector on the current tokio runtime. It stops when every
    /// clone of the coalescer is dropped, after flushing what it holds.
    pub fn spawn(queue: Arc<dyn Queue>, config: CoalescerConfig) -> Self {
        let (tx, rx) = mpsc::channel(config.queue_depth.max(1));
        let stats = Arc::new(CoalescerStats::default());
        tokio::spawn(collect(queue, config, rx, Arc::clone(&stats)));
        Self { tx, stats }
    }

    /// Sends one message; returns once the queue holds it (or failed to).
    pub async fn send(&self, message: OutboundMessage) -> Result<(), PortError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Pending { message, done })
            .await
            .map_err(|_| PortError::Transient("send coalescer stopped".to_owned()))?;
        wait.await
            .map_err(|_| PortError::Transient("send abandoned".to_owned()))?
    }

    pub fn stats(&self) -> &CoalescerStats {
        &self.stats
    }
}

async fn collect(
    queue: Arc<dyn Queue>,
    config: CoalescerConfig,
    mut rx: mpsc::Receiver<Pending>,
    stats: Arc<CoalescerStats>,
) {
    let limits = queue.batch_limits();
    let slots = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
    let mut carry: Option<Pending> = None;
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => break,
            },
        };
        let mut bytes = first.message.wire_size();
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + config.linger;
        while batch.len() < limits.max_entries {
            let next = match rx.try_recv() {
                Ok(p) => Some(p),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) if config.linger.is_zero() => None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    tokio::time::timeout_at(deadline, rx.recv())
                        .await
                        .ok()
                        .flatten()
                }
            };
            let Some(p) = next else { break };
            let size = p.message.wire_size();
            if bytes + size > limits.max_bytes {
                carry = Some(p);
                break;
            }
            bytes += size;
            batch.push(p);
        }
        stats.batches.inc();
        stats.messages.add(batch.len() as u64);
        let queue = Arc::clone(&queue);
        tokio::spawn(async move {
            flush(queue.as_ref(), batch).await;
            drop(permit);
        });
    }
    // Wait for the flushes still running before the collector ends.
    let _ = slots
        .acquire_many(u32::try_from(config.max_in_flight.max(1)).unwrap_or(1))
        .await;
}

async fn flush(queue: &dyn Queue, batch: Vec<Pending>) {
    let (messages, waiters): (Vec<_>, Vec<_>) =
        batch.into_iter().map(|p| (p.message, p.done)).unzip();
    let mut results = queue.send_batch(&messages).await.into_iter();
    for done in waiters {
        let result = results.next().unwrap_or_else(|| {
            Err(PortError::Transient(
                "queue returned fewer results than messages".to_owned(),
            ))
        });
        // The caller may have timed out and gone; its message is still sent.
        let _ = done.send(result);
    }
}
