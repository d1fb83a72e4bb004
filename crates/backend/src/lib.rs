//! The composition root of the ports: reads the backend settings once and
//! hands out `Arc<dyn Queue>` / `Arc<dyn Store>`, so the binaries never name
//! an adapter. `QUEUE_URL` unset selects the embedded SQLite backend under
//! `DATA_DIR`; set, it selects SQS and DynamoDB.

use std::sync::Arc;

/// The AWS adapter types callers may need by name (secrets, native redrive).
pub mod aws {
    pub use hookline_aws::{SecretsReader, SqsQueue};
}
use std::time::Duration;

use hookline_aws::{AwsClients, DynamoStore, SecretsReader, SqsQueue, Tables};
use hookline_core::coalescer::CoalescerConfig;
use hookline_core::ports::{PortError, Queue, Store};
use hookline_core::secrets::{check_key_mode, SecretRuleError};
use hookline_core::settings::{CommonSettings, TableSettings};
use secrecy::SecretString;

/// Why the backend cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Embedded(#[from] hookline_embedded::OpenError),
    #[error(transparent)]
    Rule(#[from] SecretRuleError),
    #[error("cannot read secret {id} from Secrets Manager: {source}")]
    Secret {
        id: String,
        #[source]
        source: PortError,
    },
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
    /// `None` on AWS when `DLQ_URL` is not set (the ingress does not need it).
    pub dlq: Option<Arc<dyn Queue>>,
    pub store: Arc<dyn Store>,
    /// How the ingress's send coalescer should batch for this backend.
    pub coalescer: CoalescerConfig,
    /// The SQS adapters, for SQS-only operations (native redrive).
    pub sqs: Option<(SqsQueue, Option<SqsQueue>)>,
    aws: Option<AwsClients>,
}

/// Extra knobs tests and benchmarks use; defaults for production.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tuning {
    /// Embedded: how long to wait for another process's write lock
    /// (overrides `EMBEDDED_BUSY_TIMEOUT_MS`).
    pub busy_timeout: Option<Duration>,
}

/// Opens the backend the settings select.
pub async fn open(
    common: &CommonSettings,
    tables: &TableSettings,
    tuning: Tuning,
) -> Result<Backend, BackendError> {
    if let Some(queue_url) = &common.queue_url {
        let clients = AwsClients::load().await;
        let queue = SqsQueue::new(clients.sqs.clone(), queue_url);
        let dlq = common
            .dlq_url
            .as_ref()
            .map(|u| SqsQueue::new(clients.sqs.clone(), u));
        let store = DynamoStore::new(
            clients.dynamodb.clone(),
            Tables {
                events: tables.events_table_name.clone(),
                objects: tables.objects_table_name.clone(),
                provider: tables.provider_table_name.clone(),
            },
        );
        return Ok(Backend {
            kind: BackendKind::Aws {
                queue_url: queue_url.clone(),
            },
            queue: Arc::new(queue.clone()),
            dlq: dlq.clone().map(|d| Arc::new(d) as Arc<dyn Queue>),
            store: Arc::new(store),
            coalescer: CoalescerConfig::remote(),
            sqs: Some((queue, dlq)),
            aws: Some(clients),
        });
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
        dlq: Some(e.dlq),
        store: e.store,
        coalescer: CoalescerConfig::local(),
        sqs: None,
        aws: None,
    })
}

impl Backend {
    /// A backend from ports built elsewhere (benchmarks wrap the real
    /// adapters in decorators this way).
    pub fn from_parts(
        kind: BackendKind,
        queue: Arc<dyn Queue>,
        dlq: Option<Arc<dyn Queue>>,
        store: Arc<dyn Store>,
        coalescer: CoalescerConfig,
    ) -> Self {
        Self {
            kind,
            queue,
            dlq,
            store,
            coalescer,
            sqs: None,
            aws: None,
        }
    }

    /// A Secrets Manager reader (the AWS backend's clients, or the standard
    /// SDK chain on the embedded backend).
    pub async fn secrets(&self) -> SecretsReader {
        match &self.aws {
            Some(c) => SecretsReader::new(c.secrets.clone()),
            None => SecretsReader::from_env().await,
        }
    }

    /// The Stripe API key, from Secrets Manager (`STRIPE_SECRET_KEY_ID`,
    /// which wins) or `STRIPE_SECRET_KEY`, checked against the key-mode
    /// rules: a binary given a key of the wrong mode refuses to start.
    pub async fn api_key(
        &self,
        common: &CommonSettings,
    ) -> Result<Option<SecretString>, BackendError> {
        let key = match &common.stripe_secret_key_id {
            Some(id) => Some(self.secrets().await.fetch(id).await.map_err(|source| {
                BackendError::Secret {
                    id: id.clone(),
                    source,
                }
            })?),
            None => common.stripe_secret_key.clone(),
        };
        if let Some(k) = &key {
            check_key_mode(common.app_env, k)?;
        }
        Ok(key)
    }
}
