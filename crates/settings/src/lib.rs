//! How the binaries read their settings: environment variables and
//! `--kebab-case` flags (clap), loaded once at start, with the contract's exit
//! codes; and the logging set-up. Each binary flattens the groups it uses.
//! The values they carry (`AppEnv`, `EventFilter`) are the domain's, in
//! `hookline-core`.

use std::path::PathBuf;

use hookline_core::secrets::{check_key_mode, SecretRuleError, SecretSetting};
use hookline_core::settings::{AppEnv, EventFilter};
use secrecy::SecretString;

/// Parses a binary's settings from its flags and environment, as the contract
/// wants its exit codes: a settings value that fails validation (an unknown
/// `APP_ENV`, `MAX_RECEIVES=0`, a number that does not parse), whether from
/// the environment or a flag, exits 1; a command-line usage error (an
/// unknown flag or command, a missing argument) exits 2; `--help` and
/// `--version` exit 0.
pub fn parse_or_exit<T: clap::Parser>() -> T {
    match T::try_parse() {
        Ok(settings) => settings,
        Err(error) => {
            use clap::error::ErrorKind;
            let code = match error.kind() {
                ErrorKind::InvalidValue | ErrorKind::ValueValidation | ErrorKind::InvalidUtf8 => 1,
                _ => error.exit_code(),
            };
            let _ = error.print();
            std::process::exit(code)
        }
    }
}

/// `LOG_FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// Settings every binary reads: environment, logging, backend selection.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonSettings {
    /// `development` or `production`.
    #[arg(long, env = "APP_ENV", default_value = "development")]
    pub app_env: AppEnv,

    /// Log lines on stderr; `json` in production, else `text`.
    #[arg(long, env = "LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// SQS queue URL; unset selects the embedded SQLite backend.
    #[arg(long, env = "QUEUE_URL")]
    pub queue_url: Option<String>,

    /// SQS dead-letter queue URL (required with QUEUE_URL by the worker and `dlq` commands).
    #[arg(long, env = "DLQ_URL")]
    pub dlq_url: Option<String>,

    /// Embedded backend location.
    #[arg(long, env = "DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Deliveries before a message goes to the DLQ.
    #[arg(long, env = "MAX_RECEIVES", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_receives: u32,

    /// Seconds a received message stays hidden before another worker may take it.
    #[arg(long, env = "VISIBILITY_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=43_200))]
    pub visibility_timeout_secs: u64,

    /// Stripe API key (optional; `backfill`, thin events and same-second
    /// events need it; a restricted `rk_` key with read access is enough).
    /// Never printed.
    #[arg(long, env = "STRIPE_SECRET_KEY", hide_env_values = true)]
    pub stripe_secret_key: Option<SecretString>,

    /// Secrets Manager id of the Stripe API key; wins over STRIPE_SECRET_KEY.
    #[arg(long, env = "STRIPE_SECRET_KEY_ID")]
    pub stripe_secret_key_id: Option<String>,

    /// Stripe API base URL (a stand-in or a private proxy).
    #[arg(
        long,
        env = "STRIPE_API_BASE",
        default_value = "https://api.stripe.com"
    )]
    pub stripe_api_base: String,

    /// Stripe API requests per second for this process; default 20 with a
    /// live key, 10 with a test key.
    #[arg(long, env = "STRIPE_API_RPS", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub stripe_api_rps: Option<u32>,

    /// Seconds before a Stripe API request is given up.
    #[arg(long, env = "STRIPE_API_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub stripe_api_timeout_secs: u64,

    /// Embedded backend: milliseconds to wait for another process's write lock.
    #[arg(long, env = "EMBEDDED_BUSY_TIMEOUT_MS", default_value_t = 5_000)]
    pub embedded_busy_timeout_ms: u64,

    /// Seconds between re-reads of secrets held in Secrets Manager.
    #[arg(long, env = "SECRET_REFRESH_SECS", default_value_t = 300)]
    pub secret_refresh_secs: u64,
}

impl CommonSettings {
    pub fn log_format(&self) -> LogFormat {
        self.log_format.unwrap_or(match self.app_env {
            AppEnv::Production => LogFormat::Json,
            AppEnv::Development => LogFormat::Text,
        })
    }
    /// Whether the AWS backend is selected.
    pub fn uses_aws(&self) -> bool {
        self.queue_url.is_some()
    }

    /// The key-mode rule for a plain `STRIPE_SECRET_KEY`, checked at start
    /// by every binary. A Secrets Manager id wins over the plain value, and
    /// is checked once the backend has read it.
    pub fn check_plain_key(&self) -> Result<(), SecretRuleError> {
        match SecretSetting::of(&self.stripe_secret_key_id, &self.stripe_secret_key) {
            SecretSetting::Plain(key) => check_key_mode(self.app_env, key),
            SecretSetting::Stored(_) | SecretSetting::Unset => Ok(()),
        }
    }

    /// `DLQ_URL` goes with `QUEUE_URL`: the worker and the `dlq` commands
    /// need it.
    pub fn check_dlq(&self) -> Result<(), MissingDlq> {
        if self.queue_url.is_some() && self.dlq_url.is_none() {
            return Err(MissingDlq);
        }
        Ok(())
    }
}

/// `QUEUE_URL` is set and `DLQ_URL` is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("DLQ_URL is required when QUEUE_URL is set")]
pub struct MissingDlq;

/// Table names of the store.
#[derive(Debug, Clone, clap::Args)]
pub struct TableSettings {
    /// Idempotency ledger (DynamoDB).
    #[arg(long, env = "EVENTS_TABLE_NAME", default_value = "hookline-events")]
    pub events_table_name: String,
    /// Latest state of payment intents, payouts, disputes.
    #[arg(long, env = "OBJECTS_TABLE_NAME", default_value = "hookline-objects")]
    pub objects_table_name: String,
    /// Connected-account (provider) onboarding state.
    #[arg(long, env = "PROVIDER_TABLE_NAME", default_value = "Provider")]
    pub provider_table_name: String,
}

/// Webhook secret settings (ingress, `config check`, `dev send`).
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookSecretSettings {
    /// One or more whsec_ secrets, comma-separated. Never printed.
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
    pub stripe_webhook_secret: Option<SecretString>,
    /// Secrets Manager id or ARN holding the webhook secret(s); wins over STRIPE_WEBHOOK_SECRET.
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET_ID")]
    pub stripe_webhook_secret_id: Option<String>,
}

/// `ROUTES_FILE` / `ROUTES`: the routes document (see
/// [`hookline_core::routes`]), read by the worker and `config check`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RouteSettings {
    /// Path of the routes document (TOML): which event types go to which
    /// destination. Unset (and ROUTES unset): every type to the built-in projections.
    #[arg(long, env = "ROUTES_FILE")]
    pub routes_file: Option<PathBuf>,

    /// The routes document inline (what an ECS task definition can carry).
    #[arg(long, env = "ROUTES", conflicts_with = "routes_file")]
    pub routes: Option<String>,
}

/// Why the routes document cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RoutesLoadError {
    #[error("cannot read ROUTES_FILE {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid routes document ({origin}), {error}")]
    Invalid {
        origin: String,
        error: hookline_core::routes::RoutesError,
    },
}

impl RouteSettings {
    /// The checked document, or today's routing when none is given.
    pub fn load(
        &self,
        enabled: &EventFilter,
        env: AppEnv,
    ) -> Result<hookline_core::routes::Routes, RoutesLoadError> {
        let (origin, text) = match (&self.routes_file, &self.routes) {
            (Some(path), _) => (
                format!("ROUTES_FILE {}", path.display()),
                std::fs::read_to_string(path).map_err(|source| RoutesLoadError::Read {
                    path: path.clone(),
                    source,
                })?,
            ),
            (None, Some(inline)) => ("ROUTES".to_owned(), inline.clone()),
            (None, None) => return Ok(hookline_core::routes::Routes::projections_only()),
        };
        hookline_core::routes::Routes::parse(&text, enabled, env)
            .map_err(|error| RoutesLoadError::Invalid { origin, error })
    }
}

/// The `ENABLED_EVENTS` flag, shared by the ingress and the worker.
#[derive(Debug, Clone, clap::Args)]
pub struct EventSettings {
    /// Comma-separated event types to process; `*` = all.
    #[arg(long, env = "ENABLED_EVENTS", default_value_t = EventFilter::default())]
    pub enabled_events: EventFilter,
}

/// `EMF_NAMESPACE`, `EMF_INTERVAL_SECS`.
#[derive(Debug, Clone, clap::Args)]
pub struct EmfSettings {
    /// CloudWatch namespace: when set, metrics are also written as Embedded
    /// Metric Format lines on stdout.
    #[arg(long, env = "EMF_NAMESPACE")]
    pub emf_namespace: Option<String>,
    /// Seconds between EMF lines (counters are deltas since the last one).
    #[arg(long, env = "EMF_INTERVAL_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub emf_interval_secs: u64,
}

/// Logging: `tracing` to stderr, text or JSON, filtered by `RUST_LOG`
/// (default `info`). Log statements use key/value fields and never carry a
/// secret: secrets are `SecretString`, whose `Debug` is redacted. With an
/// OTLP endpoint set (`OTEL_EXPORTER_OTLP_ENDPOINT`), spans are exported
/// too, as `service` unless `OTEL_SERVICE_NAME` names it (see
/// `hookline_telemetry`); [`run_service`] exports what is left at exit.
/// Installs the global subscriber once; later calls are ignored. Exits 1
/// (a settings error) when the OpenTelemetry settings cannot be used.
pub fn init_logging(service: &'static str, format: LogFormat) {
    let logs = match format {
        LogFormat::Json => hookline_telemetry::Logs::Json,
        LogFormat::Text => hookline_telemetry::Logs::Text,
    };
    if let Err(error) = hookline_telemetry::init(service, logs) {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}

/// Runs a service binary's `main` future on `threads` event-loop threads
/// (1: a current-thread runtime) and turns its result into the exit code:
/// 0, or 1 with the error logged and printed. An abandoned call may still
/// sit on a blocking thread when the future returns (a database that never
/// answers): the process exits without waiting for it.
pub fn run_service<F, E>(name: &str, threads: usize, main: F) -> std::process::ExitCode
where
    F: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Debug + std::fmt::Display,
{
    let runtime = match threads {
        0 | 1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(main);
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    hookline_telemetry::shutdown();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(
                message = "Service failed.",
                service = name,
                error = format!("{error:#}")
            );
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
