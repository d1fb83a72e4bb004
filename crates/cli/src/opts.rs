//! Settings every operator command reads, loaded as the services load them.

use anyhow::Context;
use hookline_backend::{Backend, Tuning};
use hookline_core::ports::Queue;
use hookline_settings::{CommonSettings, TableSettings};
use std::sync::Arc;

/// The backend settings (`QUEUE_URL`, `DLQ_URL`, `DATA_DIR`, tables, …).
#[derive(Debug, Clone, clap::Args)]
pub struct BackendOpts {
    #[command(flatten)]
    pub common: CommonSettings,
    #[command(flatten)]
    pub tables: TableSettings,
}

impl BackendOpts {
    /// Opens the backend and applies the key-mode rules, as the services do.
    pub async fn open(&self) -> anyhow::Result<Backend> {
        let backend = hookline_backend::open(&self.common, &self.tables, Tuning::default())
            .await
            .context("cannot open the backend")?;
        backend.api_key(&self.common).await?;
        Ok(backend)
    }

    /// The backend plus its dead-letter queue, which `dlq` commands need.
    pub async fn open_with_dlq(&self) -> anyhow::Result<(Backend, Arc<dyn Queue>)> {
        self.common.check_dlq()?;
        let backend = self.open().await?;
        let dlq = backend.dlq.clone().ok_or(hookline_settings::MissingDlq)?;
        Ok((backend, dlq))
    }
}
