//! The send coalescer: many concurrent sends, few batched queue calls.
//!
//! The ingress and `backfill` send through one (the worker's dead-letter
//! and requeue sends and replay's batches do not). Requests wait in a
//! channel; a collector
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
            .map_err(|_| PortError::transient("send coalescer stopped".to_owned()))?;
        wait.await
            .map_err(|_| PortError::transient("send abandoned".to_owned()))?
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
            Err(PortError::transient(
                "queue returned fewer results than messages".to_owned(),
            ))
        });
        // The caller may have timed out and gone; its message is still sent.
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
}
