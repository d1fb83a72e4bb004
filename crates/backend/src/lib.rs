//! The composition root of the ports: reads the backend settings once and
//! hands out `Arc<dyn Queue>` / `Arc<dyn Store>`, so the binaries never name
//! an adapter. `QUEUE_URL` unset selects the embedded SQLite backend under
//! `DATA_DIR`; set, it selects SQS and DynamoDB.

use std::sync::Arc;
use std::time::Duration;

use hookline_core::coalescer::CoalescerConfig;
use hookline_core::ports::{Queue, Store};
use hookline_core::settings::{CommonSettings, TableSettings};

/// Why the backend cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Embedded(#[from] hookline_embedded::OpenError),
    #[error("QUEUE_URL is set, but this build of Hookline has no AWS backend; unset QUEUE_URL to use the embedded backend")]
    AwsUnavailable,
    #[error("{0} is required when QUEUE_URL is set")]
    Missing(&'static str),
}

/// Which backend is in use, for logs and `config check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendKind {
    Embedded { path: std::path::PathBuf },
    Aws { queue_url: String },
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Embedded { path } => write!(f, "embedded SQLite at {}", path.display()),
            Self::Aws { queue_url } => write!(f, "AWS (SQS {queue_url}, DynamoDB)"),
        }
    }
}

/// The queue, dead-letter queue and store of one process.
#[derive(Debug, Clone)]
pub struct Backend {
    pub kind: BackendKind,
    pub queue: Arc<dyn Queue>,
    pub dlq: Arc<dyn Queue>,
    pub store: Arc<dyn Store>,
    /// How the ingress's send coalescer should batch for this backend.
    pub coalescer: CoalescerConfig,
}

/// Extra knobs tests and benchmarks use; defaults for production.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tuning {
    /// Embedded: how long to wait for another process's write lock.
    pub busy_timeout: Option<Duration>,
}

/// Opens the backend the settings select.
pub fn open(
    common: &CommonSettings,
    _tables: &TableSettings,
    tuning: Tuning,
) -> Result<Backend, BackendError> {
    if common.queue_url.is_some() {
        return Err(BackendError::AwsUnavailable);
    }
    let mut options = hookline_embedded::Options {
        max_receives: common.max_receives,
        busy_timeout: Duration::from_millis(common.embedded_busy_timeout_ms),
        ..Default::default()
    };
    if let Some(t) = tuning.busy_timeout {
        options.busy_timeout = t;
    }
    let e = hookline_embedded::open(&common.data_dir, options)?;
    Ok(Backend {
        kind: BackendKind::Embedded {
            path: hookline_embedded::db_path(&common.data_dir),
        },
        queue: e.queue,
        dlq: e.dlq,
        store: e.store,
        coalescer: CoalescerConfig::local(),
    })
}
