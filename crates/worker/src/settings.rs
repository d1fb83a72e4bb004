//! The worker's settings: the common groups and its own (concurrency,
//! retries, receive wait, housekeeping, metrics address).

use hookline_settings::EmfSettings;
use hookline_settings::{CommonSettings, EventSettings, RouteSettings, TableSettings};

/// Settings of `hookline-worker` (environment variables or flags).
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "hookline-worker",
    version,
    args_override_self = true,
    about = "Consumes the queue and applies each Stripe event exactly once; retries with backoff and dead-letters what cannot succeed.",
    after_help = "Example:\n  WORKER_CONCURRENCY=16 hookline-worker --metrics-addr 127.0.0.1:9090\n\nWith QUEUE_URL unset it uses the embedded SQLite backend under DATA_DIR."
)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub common: CommonSettings,

    #[command(flatten)]
    pub tables: TableSettings,

    #[command(flatten)]
    pub events: EventSettings,

    #[command(flatten)]
    pub emf: EmfSettings,

    #[command(flatten)]
    pub routes: RouteSettings,

    /// Events processed at once.
    #[arg(long, env = "WORKER_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub worker_concurrency: u32,

    /// Backoff base: the n-th failed delivery waits a random delay in [0, min(max, base * 2^(n-1))].
    #[arg(long, env = "RETRY_BASE_SECS", default_value_t = 1)]
    pub retry_base_secs: u64,

    /// Backoff cap in seconds.
    #[arg(long, env = "RETRY_MAX_SECS", default_value_t = 300)]
    pub retry_max_secs: u64,

    /// Seconds in-flight events get to finish after SIGTERM.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 25)]
    pub shutdown_grace_secs: u64,

    /// Address of /metrics and /healthz.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: String,

    /// Seconds between housekeeping passes: purges of expired records on the embedded backend (ledger items past expiresAt, DLQ messages past 14 days) and, with ERASE_ON_DEAUTHORIZE_DAYS, erasures of accounts that left; 0 = never.
    #[arg(long, env = "HOUSEKEEPING_INTERVAL_SECS", default_value_t = 300)]
    pub housekeeping_interval_secs: u64,

    /// Days after account.application.deauthorized at which the worker erases that connected account's data (as `hookline erase --account ... --yes` does); unset = kept, marked deauthorized.
    #[arg(long, env = "ERASE_ON_DEAUTHORIZE_DAYS")]
    pub erase_on_deauthorize_days: Option<u32>,

    /// Long-poll wait of one receive, seconds (SQS allows up to 20).
    #[arg(long, env = "RECEIVE_WAIT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=20))]
    pub receive_wait_secs: u64,
}
