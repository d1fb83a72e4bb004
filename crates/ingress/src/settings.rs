//! The ingress's settings: the common groups and its own (listen
//! address, webhook path, body limits, timeouts, connection cap).

use hookline_settings::EmfSettings;
use hookline_settings::{CommonSettings, EventSettings, TableSettings, WebhookSecretSettings};

/// Settings of `hookline-ingress` (environment variables or flags).
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "hookline-ingress",
    version,
    args_override_self = true,
    about = "Receives Stripe webhooks: verifies the Stripe-Signature, enqueues the raw event durably, answers 200.",
    after_help = "Example:\n  STRIPE_WEBHOOK_SECRET=whsec_test_dev hookline-ingress --bind-addr 127.0.0.1:8080\n\nWith QUEUE_URL unset it uses the embedded SQLite backend under DATA_DIR."
)]
pub struct IngressArgs {
    #[command(flatten)]
    pub common: CommonSettings,

    #[command(flatten)]
    pub webhook: WebhookSecretSettings,

    #[command(flatten)]
    pub events: EventSettings,

    #[command(flatten)]
    pub tables: TableSettings,

    #[command(flatten)]
    pub emf: EmfSettings,

    /// Listen address.
    #[arg(long, env = "BIND_ADDR", default_value = "0.0.0.0:8080")]
    pub bind_addr: String,

    /// Webhook route.
    #[arg(long, env = "WEBHOOK_PATH", default_value = "/api/stripe-webhook")]
    pub webhook_path: String,

    /// A signature timestamp more than this many seconds from now fails.
    #[arg(long, env = "WEBHOOK_TOLERANCE_SECS", default_value_t = 300)]
    pub webhook_tolerance_secs: u64,

    /// Largest accepted body; a larger one gets 413.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 262_144)]
    pub max_body_bytes: usize,

    /// Seconds a request may take in all before it is answered 408.
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = 10)]
    pub request_timeout_secs: u64,

    /// Seconds a client may take to send a request's headers; a connection
    /// that sends part of them and then nothing is closed after this.
    #[arg(long, env = "HEADER_READ_TIMEOUT_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub header_read_timeout_secs: u64,

    /// Seconds a keep-alive connection may sit idle between requests before
    /// the ingress closes it. Keep it longer than the idle timeout of any load
    /// balancer in front (the stack's ALB: 30 s; AWS's default: 60 s), so the
    /// balancer closes first and never sends a request on a closing connection.
    #[arg(long, env = "KEEP_ALIVE_TIMEOUT_SECS", default_value_t = 75, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub keep_alive_timeout_secs: u64,

    /// Open connections at most; further clients wait in the listen backlog.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,

    /// Bytes of request bodies held in memory at once, across all requests
    /// (a request waits for room, within REQUEST_TIMEOUT_SECS).
    #[arg(long, env = "MAX_BODY_MEMORY_BYTES", default_value_t = 64 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..=4_294_967_295))]
    pub max_body_memory_bytes: u64,

    /// Event-loop threads (1 is enough for tens of thousands of requests a second; scale out with tasks).
    #[arg(long, env = "INGRESS_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub ingress_threads: u16,

    /// Milliseconds to wait for the queue to accept an event before answering 503.
    #[arg(long, env = "ENQUEUE_TIMEOUT_MS", default_value_t = 5_000)]
    pub enqueue_timeout_ms: u64,
}
