//! Deletes of completed messages, batched: the ack side of the loop.

use std::sync::Arc;
use std::time::Duration;

use hookline_core::ports::Queue;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Deletes in flight at once.
const IN_FLIGHT: usize = 4;
/// Deletes are off the latency path (the event is committed); waiting up to
/// a second fills SQS's batches of 10 even at tens of events a second (a
/// delete is a request like any other), and is far inside the visibility
/// timeout. A crash meanwhile only redelivers duplicates.
pub(crate) const DELETE_LINGER: Duration = Duration::from_secs(1);

/// Collects receipts of completed messages and deletes them in batches of
/// the backend's batch size, as fast as they come, with a few batches in
/// flight; waits for all of them once the channel closes or `stop` fires.
pub(crate) async fn delete_in_batches(
    queue: Arc<dyn Queue>,
    mut rx: mpsc::Receiver<String>,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let running = TaskTracker::new();
    // The backend's batch size: SQS takes 10, the embedded queue deletes
    // many in one transaction.
    let max_batch = queue.batch_limits().max_entries.max(1);
    while let Some(batch) = next_batch(&mut rx, max_batch, DELETE_LINGER, &stop).await {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let queue = Arc::clone(&queue);
        running.spawn(async move {
            for (receipt, result) in batch.iter().zip(queue.delete_batch(&batch).await) {
                if let Err(error) = result {
                    // The event is COMPLETED: a redelivery completes as a duplicate.
                    tracing::warn!(message = "Delete failed; the message will come back as a duplicate.", receipt = %receipt, %error);
                }
            }
            drop(permit);
        });
    }
    running.close();
    running.wait().await;
}

/// The next batch: the first receipt, then more until `max` or `linger`
/// has passed since the first. Once `stop` fires only what is already
/// queued is taken, without waiting. `None` when nothing is left.
pub(crate) async fn next_batch(
    rx: &mut mpsc::Receiver<String>,
    max: usize,
    linger: Duration,
    stop: &CancellationToken,
) -> Option<Vec<String>> {
    let first = tokio::select! {
        r = rx.recv() => r,
        _ = stop.cancelled() => rx.try_recv().ok(),
    }?;
    let mut batch = Vec::with_capacity(max);
    batch.push(first);
    let deadline = tokio::time::Instant::now() + linger;
    while batch.len() < max {
        if stop.is_cancelled() {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
            continue;
        }
        // Shutting down ends the wait at once.
        tokio::select! {
            r = tokio::time::timeout_at(deadline, rx.recv()) => match r {
                Ok(Some(r)) => batch.push(r),
                Ok(None) | Err(_) => break,
            },
            _ = stop.cancelled() => {}
        }
    }
    Some(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn filled(n: usize) -> mpsc::Receiver<String> {
        let (tx, rx) = mpsc::channel(64);
        for i in 0..n {
            tx.send(format!("r{i}")).await.expect("send");
        }
        rx
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_fills_up_to_the_backends_size() {
        let mut rx = filled(25).await;
        let stop = CancellationToken::new();
        let sizes = [
            next_batch(&mut rx, 10, DELETE_LINGER, &stop)
                .await
                .map(|b| b.len()),
            next_batch(&mut rx, 10, DELETE_LINGER, &stop)
                .await
                .map(|b| b.len()),
        ];
        assert_eq!(sizes, [Some(10), Some(10)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_batch_waits_for_the_linger_then_goes() {
        let (tx, mut rx) = mpsc::channel(8);
        tx.send("a".to_owned()).await.expect("send");
        let stop = CancellationToken::new();
        let started = tokio::time::Instant::now();
        let batch = next_batch(&mut rx, 10, DELETE_LINGER, &stop).await;
        assert_eq!(batch, Some(vec!["a".to_owned()]));
        assert_eq!(started.elapsed(), DELETE_LINGER, "lingered for more");
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_takes_what_is_queued_without_waiting() {
        let (tx, mut rx) = mpsc::channel(8);
        for r in ["a", "b", "c"] {
            tx.send(r.to_owned()).await.expect("send");
        }
        let stop = CancellationToken::new();
        stop.cancel();
        let started = tokio::time::Instant::now();
        let batch = next_batch(&mut rx, 10, DELETE_LINGER, &stop).await;
        assert_eq!(batch.map(|b| b.len()), Some(3));
        assert_eq!(started.elapsed(), Duration::ZERO, "no linger once stopping");
        assert_eq!(next_batch(&mut rx, 10, DELETE_LINGER, &stop).await, None);
        drop(tx);
    }
}
