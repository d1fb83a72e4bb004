//! The composition root of the ports: reads the backend settings once and
//! hands out `Arc<dyn Queue>` / `Arc<dyn Store>` / `Arc<dyn SecretSource>`,
//! and the optional capabilities a backend has (native redrive), so the
//! binaries never name an adapter. `QUEUE_URL` unset selects the embedded
//! SQLite backend under `DATA_DIR`; set, it selects SQS and DynamoDB.
//!
//! Architecture invariant: the only crate that names an adapter crate.

use std::sync::Arc;
use std::time::Duration;

use hookline_aws::{AwsClients, DynamoStore, SecretsReader, SqsQueue, SqsRedrive, Tables};

mod provision;
mod refresh;

use hookline_core::coalescer::CoalescerConfig;
use hookline_core::loaded_secrets::LoadedSecrets;
use hookline_core::ports::{Destination, NativeRedrive, PortError, Queue, Store, StripeApi};
use hookline_core::refresh::Refreshing;
use hookline_core::routes::{Kind, Routes, Signing};
use hookline_core::secrets::{ResolveError, SecretRuleError, SecretSetting, SecretSource};
use hookline_settings::{CommonSettings, TableSettings};
pub use provision::provision_aws;
use secrecy::SecretString;

/// Why the backend cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Embedded(#[from] hookline_embedded::OpenError),
    #[error(transparent)]
    Rule(#[from] SecretRuleError),
    #[error(transparent)]
    Secret(#[from] ResolveError),
    #[error("cannot create the queues and tables: {0}")]
    Provision(#[source] PortError),
    #[error(transparent)]
    StripeClient(#[from] hookline_stripe::BuildError),
    #[error(transparent)]
    Destination(#[from] hookline_destinations::BuildError),
    #[error("destination {name}: cannot read its signing secret {id}: {source}")]
    DestinationSecret {
        name: String,
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
    /// SQS's native redrive, on the AWS backend with a DLQ.
    native_redrive: Option<Arc<dyn NativeRedrive>>,
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
            native_redrive: dlq.map(|dlq| {
                Arc::new(SqsRedrive {
                    dlq,
                    queue: queue.clone(),
                }) as Arc<dyn NativeRedrive>
            }),
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
        native_redrive: None,
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
            native_redrive: None,
            aws: None,
        }
    }

    /// SQS's whole-queue redrive, where the backend has one.
    pub fn native_redrive(&self) -> Option<Arc<dyn NativeRedrive>> {
        self.native_redrive.clone()
    }

    /// The secrets port: Secrets Manager through the AWS backend's clients,
    /// or the standard SDK chain on the embedded backend.
    pub async fn secrets(&self) -> Arc<dyn SecretSource> {
        match &self.aws {
            Some(c) => Arc::new(SecretsReader::new(c.secrets.clone())),
            None => Arc::new(SecretsReader::from_env().await),
        }
    }

    /// The Stripe API key, from Secrets Manager (`STRIPE_SECRET_KEY_ID`,
    /// which wins) or `STRIPE_SECRET_KEY`, checked against the key-mode
    /// rules: a binary given a key of the wrong mode refuses to start.
    pub async fn api_key(
        &self,
        common: &CommonSettings,
    ) -> Result<Option<SecretString>, BackendError> {
        let setting = SecretSetting::of(&common.stripe_secret_key_id, &common.stripe_secret_key);
        if let SecretSetting::Unset = setting {
            return Ok(None);
        }
        let source = self.secrets().await;
        Ok(hookline_core::secrets::api_key(common.app_env, setting, source.as_ref()).await?)
    }

    /// The destinations of a routes document: `http` ones
    /// (`hookline-destinations`) with their signing secrets, written in the
    /// document or read from Secrets Manager (`signing_secret_id`), and
    /// `eventbridge` ones (`hookline-aws`). With `refresh`, a secret read
    /// from Secrets Manager is read again at that interval, as the webhook
    /// secret is: a rotated destination secret needs no restart.
    pub async fn destinations(
        &self,
        routes: &Routes,
        refresh: Option<Duration>,
    ) -> Result<Vec<Arc<dyn Destination>>, BackendError> {
        let mut built: Vec<Arc<dyn Destination>> = Vec::new();
        for d in routes.destinations() {
            match &d.kind {
                Kind::Http(http) => {
                    let secret = match &http.signing {
                        Signing::Inline(s) => Refreshing::fixed(s.clone()),
                        Signing::SecretId(id) => {
                            let source = self.secrets().await;
                            crate::refresh::signing_secret(&d.name, source, id, refresh).await?
                        }
                    };
                    built.push(Arc::new(hookline_destinations::HttpDestination::new(
                        &d.name, http, secret,
                    )?));
                }
                Kind::EventBridge(settings) => {
                    let destination = match &self.aws {
                        Some(c) => hookline_aws::EventBridgeDestination::new(
                            &d.name,
                            settings,
                            c.eventbridge.clone(),
                        ),
                        None => {
                            hookline_aws::EventBridgeDestination::from_env(&d.name, settings).await
                        }
                    };
                    built.push(Arc::new(destination));
                }
                Kind::Projections | Kind::Handler => {}
            }
        }
        Ok(built)
    }

    /// The Stripe API client (`hookline-stripe`) with the key above, at
    /// `STRIPE_API_BASE`, `STRIPE_API_RPS` (default by the key's mode) and
    /// `STRIPE_API_TIMEOUT_SECS`; `None` without a key.
    pub async fn stripe_api(
        &self,
        common: &CommonSettings,
    ) -> Result<Option<Arc<dyn StripeApi>>, BackendError> {
        let Some(key) = self.api_key(common).await? else {
            return Ok(None);
        };
        Ok(Some(Arc::new(stripe_client(
            common,
            Refreshing::fixed(key),
        )?)))
    }

    /// The same client for a service that runs for days: the key's version
    /// and mode are recorded in `loaded` (what `/metrics` tells `hookline
    /// keys status`), and a key read from Secrets Manager is read again
    /// every `SECRET_REFRESH_SECS`, so a rolled key needs no restart. A
    /// read that fails, or a key of the wrong mode, keeps the last good key.
    pub async fn stripe_api_kept_fresh(
        &self,
        common: &CommonSettings,
        loaded: Arc<LoadedSecrets>,
    ) -> Result<Option<Arc<dyn StripeApi>>, BackendError> {
        let setting = SecretSetting::of(&common.stripe_secret_key_id, &common.stripe_secret_key);
        let key = match setting {
            SecretSetting::Unset => return Ok(None),
            SecretSetting::Plain(key) => {
                hookline_core::secrets::check_key_mode(common.app_env, key)?;
                loaded.record(crate::refresh::api_key_loaded(None, None, key));
                Refreshing::fixed(key.clone())
            }
            SecretSetting::Stored(id) => {
                let every = Duration::from_secs(common.secret_refresh_secs.max(1));
                let source = self.secrets().await;
                crate::refresh::api_key(source, id, common.app_env, every, loaded).await?
            }
        };
        Ok(Some(Arc::new(stripe_client(common, key)?)))
    }
}

fn stripe_client(
    common: &CommonSettings,
    key: Refreshing<SecretString>,
) -> Result<hookline_stripe::StripeClient, BackendError> {
    use secrecy::ExposeSecret;
    let rps = hookline_stripe::Config::default_rps(key.current().expose_secret());
    let config = hookline_stripe::Config {
        base: common.stripe_api_base.clone(),
        rps: common.stripe_api_rps.unwrap_or(rps),
        timeout: Duration::from_secs(common.stripe_api_timeout_secs),
    };
    Ok(hookline_stripe::StripeClient::new(config, key)?)
}
