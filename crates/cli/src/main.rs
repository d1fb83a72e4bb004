//! `hookline`: the operator tool.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use hookline_cli::opts::BackendOpts;
use hookline_cli::{backfill, config_check, dev, dlq, show};

#[derive(Debug, Parser)]
#[command(
    name = "hookline",
    version,
    args_override_self = true,
    about = "Hookline operator tool: inspect, export and replay the dead-letter queue; look up events and objects; check the configuration.",
    after_help = "Examples:\n  hookline dlq stats\n  hookline dlq list --limit 20\n  hookline dlq replay --event-type payout.updated --dry-run\n  hookline events show evt_1QhLsDExampleEvent06\n  hookline config check\n\nThe backend comes from the same settings as the services (QUEUE_URL, DLQ_URL, DATA_DIR, …)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The dead-letter queue.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Events-table (idempotency ledger) items.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Objects-table and provider-table items.
    #[command(subcommand)]
    Objects(ObjectsCommand),
    /// The configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Enqueue events from the Stripe Events API, for outages longer than Stripe retries.
    #[command(
        after_help = "Examples:\n  hookline backfill --since 6h --dry-run\n  hookline backfill --since 2026-11-27T10:00:00Z --event-type payout.updated --undelivered-only"
    )]
    Backfill(backfill::BackfillArgs),
    /// Developer helpers.
    #[command(subcommand)]
    Dev(DevCommand),
    /// A web page for incident recovery: counts, the DLQ by reason and type, event lookup, filtered replay, export.
    #[command(
        after_help = "Examples:\n  hookline console                      (http://127.0.0.1:8090/)\n  CONSOLE_ADDR=0.0.0.0:8090 CONSOLE_TOKEN=... hookline console"
    )]
    Console(Box<hookline_cli::console::ConsoleArgs>),
    /// A deletion request: what Hookline holds of an account, an object or an event (counted; removed with --yes, with a receipt).
    #[command(
        after_help = "Examples:\n  hookline erase --account acct_1QhLnKExample0001            (counts only)\n  hookline erase --account acct_1QhLnKExample0001 --yes      (removes, prints the receipt)\n  hookline erase --event evt_1QhLsDExampleEvent06 --yes --json"
    )]
    Erase(Box<hookline_cli::erase::EraseArgs>),
    /// The webhook secret and the Stripe API key: current versions, what each running service loaded, live or test, and whether Stripe accepts the key.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Secrets Manager's current versions against what each service reports on /metrics; exits 1 when a service is stale or unreachable or Stripe refuses the key.
    #[command(
        after_help = "Examples:\n  hookline keys status\n  hookline keys status --service http://10.0.1.12:8080 --service http://10.0.2.31:9090\n  HOOKLINE_SERVICES=http://10.0.1.12:8080,http://10.0.2.31:9090 hookline keys status --json"
    )]
    Status(Box<hookline_cli::keys::KeysStatusArgs>),
}

#[derive(Debug, Args)]
struct JsonFlag {
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// Messages waiting and in flight on the queue, and dead-lettered.
    #[command(after_help = "Example:\n  hookline dlq stats --json")]
    Stats {
        #[command(flatten)]
        out: JsonFlag,
        #[command(flatten)]
        backend: BackendOpts,
    },
    /// DLQ messages (nothing is removed): event id, type, age, receive count, reason.
    #[command(after_help = "Example:\n  hookline dlq list --limit 50")]
    List {
        /// Show at most N messages.
        #[arg(long)]
        limit: Option<usize>,
        /// How long messages stay hidden while held (released when the command ends; a killed run releases them after this).
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        hold: Duration,
        #[command(flatten)]
        out: JsonFlag,
        #[command(flatten)]
        backend: BackendOpts,
    },
    /// Every DLQ message as JSON lines, with body and attributes; nothing is removed.
    #[command(after_help = "Example:\n  hookline dlq export --out dlq-$(date +%F).jsonl")]
    Export {
        /// File to write.
        #[arg(long)]
        out: std::path::PathBuf,
        /// How long messages stay hidden while held (released when the command ends; a killed run releases them after this).
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        hold: Duration,
        #[command(flatten)]
        backend: BackendOpts,
    },
    /// Move matching DLQ messages back to the queue (each leaves the DLQ only after the queue accepted its copy).
    #[command(
        after_help = "Examples:\n  hookline dlq replay --event-type payout.updated --older-than 1h --dry-run\n  hookline dlq replay --event-id evt_123 --event-id evt_456\n  hookline dlq replay --rate 50 --limit 1000\n  hookline dlq replay --all --native      (SQS: whole-queue redrive with StartMessageMoveTask)"
    )]
    Replay(ReplayArgs),
}

#[derive(Debug, Args)]
struct ReplayArgs {
    /// Only this event type (repeatable).
    #[arg(long = "event-type")]
    event_types: Vec<String>,
    /// Only this event id (repeatable).
    #[arg(long = "event-id")]
    event_ids: Vec<String>,
    /// Only events received longer ago than this (30m, 2h, 1d).
    #[arg(long, value_parser = humantime::parse_duration)]
    older_than: Option<Duration>,
    /// Only events received within this (30m, 2h, 1d).
    #[arg(long, value_parser = humantime::parse_duration)]
    newer_than: Option<Duration>,
    /// Move at most N messages.
    #[arg(long)]
    limit: Option<u64>,
    /// At most N messages per second.
    #[arg(long)]
    rate: Option<f64>,
    /// Print what would move; move nothing.
    #[arg(long)]
    dry_run: bool,
    /// Receive → send → delete loops at once (--rate stays a limit for all of them together).
    #[arg(long, default_value_t = dlq::DEFAULT_PARALLEL as u16, value_parser = clap::value_parser!(u16).range(1..=64))]
    parallel: u16,
    /// How long messages stay hidden while held (released when the command ends; a killed run releases them after this).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    hold: Duration,
    /// Every message (needed with --native).
    #[arg(long)]
    all: bool,
    /// SQS only: native whole-queue redrive (StartMessageMoveTask), then poll its status.
    #[arg(long, requires = "all")]
    native: bool,
    #[command(flatten)]
    out: JsonFlag,
    #[command(flatten)]
    backend: BackendOpts,
}

// Parsed once per run: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// The ledger item of an event.
    #[command(after_help = "Example:\n  hookline events show evt_1QhLsDExampleEvent06 --json")]
    Show {
        event_id: String,
        #[command(flatten)]
        out: JsonFlag,
        #[command(flatten)]
        backend: BackendOpts,
    },
    /// Send an event to one destination again, on purpose (read from Stripe's API, queued as a copy).
    #[command(
        after_help = "Example:\n  hookline events redeliver evt_1QhLsDExampleEvent06 --destination billing"
    )]
    Redeliver(hookline_cli::redeliver::RedeliverArgs),
}

#[derive(Debug, Subcommand)]
enum ObjectsCommand {
    /// The stored state of a payment intent, payout, dispute (pi_, po_, du_, dp_) or connected account (acct_).
    #[command(after_help = "Example:\n  hookline objects show po_1QhLsCExamplePayout1")]
    Show {
        id: String,
        #[command(flatten)]
        out: JsonFlag,
        #[command(flatten)]
        backend: BackendOpts,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Load the settings as the services do, apply the key-mode rules, check that the queue, DLQ and tables answer.
    #[command(
        after_help = "Example:\n  APP_ENV=production STRIPE_SECRET_KEY_ID=prod/stripe-key hookline config check"
    )]
    Check(Box<config_check::CheckArgs>),
}

#[derive(Debug, Subcommand)]
enum DevCommand {
    /// Sign a sample event of TYPE with STRIPE_WEBHOOK_SECRET and post it to the ingress (or, with --via eventbridge, put it on the queue as EventBridge would).
    #[command(
        after_help = "Examples:\n  hookline dev send payout.updated --url http://127.0.0.1:8080/api/stripe-webhook\n  hookline dev send account.updated --via eventbridge"
    )]
    Send(Box<dev::SendArgs>),
    /// Create the SQS queue + DLQ and the DynamoDB tables on the configured endpoint (local AWS).
    #[command(
        after_help = "Example:\n  AWS_ENDPOINT_URL=http://127.0.0.1:5000 hookline dev aws-setup --queue-name hookline-events"
    )]
    AwsSetup(dev::AwsSetupArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = hookline_settings::parse_or_exit();
    match run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Dlq(DlqCommand::Stats { out, backend }) => {
            dlq::commands::stats(&backend, out.json).await
        }
        Command::Dlq(DlqCommand::List {
            limit,
            hold,
            out,
            backend,
        }) => dlq::commands::list(&backend, limit, hold, out.json).await,
        Command::Dlq(DlqCommand::Export { out, hold, backend }) => {
            dlq::commands::export(&backend, &out, hold).await
        }
        Command::Dlq(DlqCommand::Replay(args)) => {
            let request = dlq::commands::ReplayRequest {
                options: dlq::ReplayOptions {
                    filter: dlq::Filter {
                        event_types: args.event_types,
                        event_ids: args.event_ids,
                        older_than: args.older_than,
                        newer_than: args.newer_than,
                    },
                    limit: args.limit,
                    rate: args.rate,
                    dry_run: args.dry_run,
                    hold: args.hold,
                    parallel: usize::from(args.parallel),
                },
                all: args.all,
                native: args.native,
                json: args.out.json,
            };
            dlq::commands::replay(&args.backend, request).await
        }
        Command::Events(EventsCommand::Show {
            event_id,
            out,
            backend,
        }) => show::event_cmd(&backend, &event_id, out.json).await,
        Command::Events(EventsCommand::Redeliver(args)) => {
            hookline_cli::redeliver::cmd(&args).await
        }
        Command::Objects(ObjectsCommand::Show { id, out, backend }) => {
            show::object_cmd(&backend, &id, out.json).await
        }
        Command::Config(ConfigCommand::Check(args)) => Ok(config_check::cmd(&args).await),
        Command::Backfill(args) => backfill::cmd(&args).await,
        Command::Dev(DevCommand::AwsSetup(args)) => dev::aws_setup_cmd(&args).await,
        Command::Dev(DevCommand::Send(args)) => dev::send_cmd(&args).await,
        Command::Console(args) => hookline_cli::console::cmd(&args).await,
        Command::Erase(args) => hookline_cli::erase::cmd(&args).await,
        Command::Keys(KeysCommand::Status(args)) => hookline_cli::keys::status_cmd(&args).await,
    }
}
