//! Removes what the backend's own retention would remove, and the data of
//! connected accounts that left the platform, on a timer.

use std::sync::Arc;
use std::time::Duration;

use hookline_core::clock::unix_secs;
use hookline_core::erase::erase;
use hookline_core::ports::{Queue, Store, Subject};
use tokio_util::sync::CancellationToken;

/// What one housekeeping pass reaches.
pub(crate) struct Housekeeping {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) queue: Arc<dyn Queue>,
    pub(crate) dlq: Arc<dyn Queue>,
    pub(crate) every: Duration,
    /// `ERASE_ON_DEAUTHORIZE_DAYS`, as a duration.
    pub(crate) erase_after: Option<Duration>,
}

impl Housekeeping {
    /// Removes what the backend's own retention would remove (the embedded
    /// backend's expired ledger items and old DLQ messages), in bounded
    /// passes, then erases the accounts deauthorized `erase_after` ago.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        loop {
            match self.store.housekeep(unix_secs()).await {
                Ok(0) => {}
                Ok(removed) => {
                    tracing::info!(message = "Housekeeping removed expired records.", removed)
                }
                Err(error) => {
                    tracing::warn!(message = "Housekeeping failed; trying again later.", %error)
                }
            }
            if let Some(after) = self.erase_after {
                self.erase_deauthorized(after).await;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.every) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Erases each account that deauthorized the platform at least `after`
    /// ago, through the same code path as `hookline erase --account`.
    async fn erase_deauthorized(&self, after: Duration) {
        let before = unix_secs().saturating_sub(i64::try_from(after.as_secs()).unwrap_or(i64::MAX));
        let accounts = match self.store.deauthorized(before).await {
            Ok(a) => a,
            Err(error) => {
                tracing::warn!(message = "Cannot list deauthorized accounts; trying again later.", %error);
                return;
            }
        };
        for account in accounts {
            let subject = Subject::Account(account.clone());
            match erase(
                &subject,
                self.store.as_ref(),
                self.queue.as_ref(),
                Some(self.dlq.as_ref()),
                true,
            )
            .await
            {
                Ok(found) => tracing::info!(
                    message = "Erased a connected account that deauthorized the platform.",
                    account = %account,
                    providers = found.items.providers.len(),
                    objects = found.items.objects.len(),
                    ledger_items = found.items.events.len(),
                    dlq_messages = found.dlq_messages.len(),
                ),
                Err(error) => tracing::warn!(
                    message = "Cannot erase a deauthorized account; trying again later.",
                    account = %account,
                    %error,
                ),
            }
        }
    }
}
