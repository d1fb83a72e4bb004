//! Deletes of completed messages, batched: the ack side of the loop.

use std::sync::Arc;
use std::time::Duration;

use hookline_core::ports::Queue;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Collects receipts of completed messages and deletes them in batches of
/// the backend's batch size, as fast as they come, with a few batches in
/// flight; waits for all of them once the channel closes or `stop` fires.
pub(crate) async fn delete_in_batches(
    queue: Arc<dyn Queue>,
    mut rx: mpsc::Receiver<String>,
    stop: CancellationToken,
) {
    const IN_FLIGHT: usize = 4;
    // Deletes are off the latency path (the event is committed); waiting up
    // to a second fills SQS's batches of 10 even at tens of events a
    // second (a delete is a request like any other), and is far inside the
    // visibility timeout. A crash meanwhile only redelivers duplicates.
    const DELETE_LINGER: Duration = Duration::from_secs(1);
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let running = TaskTracker::new();
    // The backend's batch size: SQS takes 10, the embedded queue deletes
    // many in one transaction.
    let max_batch = queue.batch_limits().max_entries.max(1);
    loop {
        let first = tokio::select! {
            r = rx.recv() => r,
            // Shutting down: take what is already queued, no more lingering.
            _ = stop.cancelled() => rx.try_recv().ok(),
        };
        let Some(first) = first else { break };
        let mut batch = Vec::with_capacity(max_batch);
        batch.push(first);
        let deadline = tokio::time::Instant::now() + DELETE_LINGER;
        while batch.len() < max_batch {
            if stop.is_cancelled() {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
                continue;
            }
            // Shutting down ends the wait at once (the loop's top then
            // takes only what is already queued).
            tokio::select! {
                r = tokio::time::timeout_at(deadline, rx.recv()) => match r {
                    Ok(Some(r)) => batch.push(r),
                    Ok(None) | Err(_) => break,
                },
                _ = stop.cancelled() => {}
            }
        }
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
