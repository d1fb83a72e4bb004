//! Typed settings, loaded once at start from environment variables and
//! `--kebab-case` flags (clap). Each binary flattens the groups it uses.

use std::collections::BTreeSet;
use std::path::PathBuf;

use secrecy::SecretString;

/// Parses a binary's settings from its flags and environment, as the SPEC
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

/// Event types processed when `ENABLED_EVENTS` is not set.
pub const DEFAULT_ENABLED_EVENTS: [&str; 6] = [
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "account.updated",
    "charge.dispute.created",
    "payout.created",
    "payout.updated",
];

/// `APP_ENV`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AppEnv {
    Development,
    Production,
}

impl AppEnv {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Production => "production",
        }
    }
    /// Whether an event's `livemode` belongs in this environment.
    pub fn accepts_livemode(self, livemode: bool) -> bool {
        livemode == (self == Self::Production)
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
    #[arg(long, env = "APP_ENV", value_enum, default_value = "development")]
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

    /// Stripe API key (optional; `backfill` needs it). Never printed.
    #[arg(long, env = "STRIPE_SECRET_KEY", hide_env_values = true)]
    pub stripe_secret_key: Option<SecretString>,

    /// Secrets Manager id of the Stripe API key; wins over STRIPE_SECRET_KEY.
    #[arg(long, env = "STRIPE_SECRET_KEY_ID")]
    pub stripe_secret_key_id: Option<String>,

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
}

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

/// `ENABLED_EVENTS`: which event types are processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventFilter {
    All,
    Only(BTreeSet<String>),
}

impl EventFilter {
    pub fn allows(&self, event_type: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(set) => set.contains(event_type),
        }
    }
}

impl Default for EventFilter {
    fn default() -> Self {
        Self::Only(
            DEFAULT_ENABLED_EVENTS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        )
    }
}

impl std::str::FromStr for EventFilter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let items: BTreeSet<String> = s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if items.contains("*") {
            return Ok(Self::All);
        }
        if items.is_empty() {
            return Err("ENABLED_EVENTS lists no event type (use * for all)".to_owned());
        }
        Ok(Self::Only(items))
    }
}

impl std::fmt::Display for EventFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::All => f.write_str("*"),
            Self::Only(set) => {
                let v: Vec<&str> = set.iter().map(String::as_str).collect();
                f.write_str(&v.join(","))
            }
        }
    }
}

/// The `ENABLED_EVENTS` flag, shared by the ingress and the worker.
#[derive(Debug, Clone, clap::Args)]
pub struct EventSettings {
    /// Comma-separated event types to process; `*` = all.
    #[arg(long, env = "ENABLED_EVENTS", default_value_t = EventFilter::default())]
    pub enabled_events: EventFilter,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_filter_parses() {
        let all: EventFilter = "payout.created, *".parse().expect("parses");
        assert_eq!(all, EventFilter::All);
        let some: EventFilter = " payout.created ,account.updated".parse().expect("parses");
        assert!(some.allows("account.updated"));
        assert!(!some.allows("payout.updated"));
        assert!(" , ".parse::<EventFilter>().is_err());
        assert!(EventFilter::default().allows("charge.dispute.created"));
    }

    #[test]
    fn livemode_matches_env() {
        assert!(AppEnv::Development.accepts_livemode(false));
        assert!(!AppEnv::Development.accepts_livemode(true));
        assert!(AppEnv::Production.accepts_livemode(true));
        assert!(!AppEnv::Production.accepts_livemode(false));
    }
}
