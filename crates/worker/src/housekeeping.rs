//! Removes what the backend's own retention would remove, on a timer.

use std::sync::Arc;
use std::time::Duration;

use hookline_core::clock::unix_secs;
use hookline_core::ports::Store;
use tokio_util::sync::CancellationToken;

/// Removes what the backend's own retention would remove (the embedded
/// backend's expired ledger items and old DLQ messages), in bounded passes.
pub(crate) async fn housekeep(store: Arc<dyn Store>, every: Duration, shutdown: CancellationToken) {
    loop {
        match store.housekeep(unix_secs()).await {
            Ok(0) => {}
            Ok(removed) => {
                tracing::info!(message = "Housekeeping removed expired records.", removed)
            }
            Err(error) => {
                tracing::warn!(message = "Housekeeping failed; trying again later.", %error)
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
