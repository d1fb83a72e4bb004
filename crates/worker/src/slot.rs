//! The worker slot (one of `WORKER_CONCURRENCY`) a delivery holds while it
//! is processed, carried in a task-local so that the routed path can give
//! it back while it waits on destinations ([`release_worker_slot`]).

use std::future::Future;
use std::sync::Mutex;

use tokio::sync::OwnedSemaphorePermit;

tokio::task_local! {
    /// The slot of the delivery this task is processing.
    static SLOT: WorkerSlot;
}

/// One of the worker's shared slots, held while a delivery is processed,
/// unless it is given back early.
struct WorkerSlot(Mutex<Option<OwnedSemaphorePermit>>);

/// Runs `work` (one delivery's processing) holding `permit`, which is
/// released when `work` ends or when it gives it back.
pub(crate) async fn holding<F: Future>(permit: OwnedSemaphorePermit, work: F) -> F::Output {
    SLOT.scope(WorkerSlot(Mutex::new(Some(permit))), work).await
}

/// Gives the current delivery's worker slot back for the rest of its
/// processing: what it waits on now is a destination, whose own limits
/// (`max_concurrency`, its timeout, its breaker) bound it, so a destination
/// that hangs holds none of the slots other events need. Nothing happens
/// outside [`holding`].
pub(crate) fn release_worker_slot() {
    let _ = SLOT.try_with(|slot| {
        slot.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    });
}
