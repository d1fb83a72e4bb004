//! `hookline`: the operator tool.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use hookline_cli::opts::BackendOpts;
use hookline_cli::{backfill, config_check, dev, dlq, show};
use tokio_util::sync::CancellationToken;

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
    Send(dev::SendArgs),
    /// Create the SQS queue + DLQ and the DynamoDB tables on the configured endpoint (local AWS).
    #[command(
        after_help = "Example:\n  AWS_ENDPOINT_URL=http://127.0.0.1:5000 hookline dev aws-setup --queue-name hookline-events"
    )]
    AwsSetup(dev::AwsSetupArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = hookline_core::settings::parse_or_exit();
    match run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

/// Cancelled on ctrl-c or SIGTERM, so held messages are released.
fn cancel_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let fire = token.clone();
    tokio::spawn(async move {
        hookline_core::shutdown::wait_for_signal().await;
        eprintln!("interrupted: releasing held messages");
        fire.cancel();
    });
    token
}

fn human_age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Dlq(DlqCommand::Stats { out, backend }) => {
            let (b, dlq_queue) = backend.open_with_dlq().await?;
            let s = dlq::stats(b.queue.as_ref(), dlq_queue.as_ref()).await?;
            if out.json {
                print_json(&s)?;
            } else {
                println!(
                    "waiting        {}\nin flight      {}\ndead-lettered  {}",
                    s.waiting, s.in_flight, s.dead_lettered
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq(DlqCommand::List {
            limit,
            hold,
            out,
            backend,
        }) => {
            let (b, dlq_queue) = backend.open_with_dlq().await?;
            let cancel = cancel_on_signal();
            let mut peek = dlq::Peek::new(dlq_queue.as_ref(), limit, hold);
            let listed = list(&mut peek, b.store.as_ref(), out.json, &cancel).await;
            dlq::release(dlq_queue.as_ref(), peek.held()).await;
            listed?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq(DlqCommand::Export { out, hold, backend }) => {
            let (b, dlq_queue) = backend.open_with_dlq().await?;
            let cancel = cancel_on_signal();
            let mut peek = dlq::Peek::new(dlq_queue.as_ref(), None, hold);
            let written = export(&out, &mut peek, b.store.as_ref(), &cancel).await;
            dlq::release(dlq_queue.as_ref(), peek.held()).await;
            let n = written?;
            eprintln!("exported {n} messages to {}", out.display());
            Ok(if cancel.is_cancelled() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Dlq(DlqCommand::Replay(args)) => replay(args).await,
        Command::Events(EventsCommand::Show {
            event_id,
            out,
            backend,
        }) => {
            let b = backend.open().await?;
            let Some(item) = show::event(b.store.as_ref(), &event_id).await? else {
                bail!(
                    "no event {event_id} in {}",
                    backend.tables.events_table_name
                );
            };
            if out.json {
                print_json(&item)?;
            } else {
                print!("{}", show::human(&item));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Objects(ObjectsCommand::Show { id, out, backend }) => {
            let b = backend.open().await?;
            let Some(item) = show::object(b.store.as_ref(), &id).await? else {
                let table = if id.starts_with("acct_") {
                    &backend.tables.provider_table_name
                } else {
                    &backend.tables.objects_table_name
                };
                bail!("no item {id} in {table}");
            };
            if out.json {
                print_json(&item)?;
            } else {
                print!("{}", show::human(&item));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Check(args)) => {
            let report = config_check::run(&args).await;
            print!("{}", config_check::render(&report));
            Ok(if report.iter().all(|l| l.ok) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Backfill(args) => {
            let report = backfill::run(&args, |id, fate| println!("{id}  {fate}")).await?;
            eprintln!(
                "listed {}, {} {}, already applied {}, skipped {}, failed {}",
                report.listed,
                if args.dry_run {
                    "would enqueue"
                } else {
                    "enqueued"
                },
                report.enqueued,
                report.already_applied,
                report.skipped,
                report.failed
            );
            Ok(if report.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Dev(DevCommand::AwsSetup(args)) => {
            let pair = dev::aws_setup(&args).await?;
            println!("QUEUE_URL={}", pair.queue_url);
            println!("DLQ_URL={}", pair.dlq_url);
            Ok(ExitCode::SUCCESS)
        }
        Command::Dev(DevCommand::Send(args)) if args.via == dev::Via::Eventbridge => {
            let id = dev::send_via_eventbridge(&args).await?;
            println!("{id} -> queued as Amazon EventBridge delivers it");
            Ok(ExitCode::SUCCESS)
        }
        Command::Dev(DevCommand::Send(args)) => {
            let (id, status, body) = dev::send(&args).await?;
            println!("{id} -> {status} {body}");
            Ok(if (200..300).contains(&status) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// `dlq list`: prints each message as it arrives (a JSON array, or a
/// table), holding only receipts.
async fn list(
    peek: &mut dlq::Peek<'_>,
    store: &dyn hookline_core::ports::Store,
    json: bool,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    let now = hookline_core::clock::unix_millis();
    let mut n = 0usize;
    if json {
        w.write_all(b"[")?;
    }
    loop {
        let batch = peek.next_batch(cancel).await?;
        if batch.is_empty() {
            break;
        }
        for d in &batch {
            let e = dlq::entry(d, store, now).await;
            if json {
                if n > 0 {
                    w.write_all(b",")?;
                }
                serde_json::to_writer(&mut w, &e)?;
            } else {
                if n == 0 {
                    writeln!(
                        w,
                        "{:<34} {:<30} {:>6} {:>8} {:<11}  REASON",
                        "EVENT_ID", "TYPE", "AGE", "RECEIVES", "SOURCE"
                    )?;
                }
                writeln!(
                    w,
                    "{:<34} {:<30} {:>6} {:>8} {:<11}  {}",
                    e.event_id.as_deref().unwrap_or("-"),
                    e.event_type.as_deref().unwrap_or("-"),
                    human_age(e.age_secs),
                    e.receive_count,
                    e.source.unwrap_or("-"),
                    e.reason.as_deref().unwrap_or("-")
                )?;
            }
            n += 1;
        }
    }
    if json {
        w.write_all(b"]\n")?;
    } else if n == 0 {
        writeln!(w, "the dead-letter queue is empty")?;
    }
    w.flush()?;
    Ok(())
}

/// `dlq export`: one JSON line per message, written as it arrives.
async fn export(
    path: &std::path::Path,
    peek: &mut dlq::Peek<'_>,
    store: &dyn hookline_core::ports::Store,
    cancel: &CancellationToken,
) -> anyhow::Result<usize> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = std::io::BufWriter::new(file);
    let now = hookline_core::clock::unix_millis();
    let mut n = 0;
    loop {
        let batch = peek.next_batch(cancel).await?;
        if batch.is_empty() {
            break;
        }
        for d in batch {
            let line = dlq::ExportLine {
                entry: dlq::entry(&d, store, now).await,
                body: String::from_utf8_lossy(&d.body).into_owned(),
                attributes: d.attributes,
            };
            serde_json::to_writer(&mut w, &line)?;
            w.write_all(b"\n")?;
            n += 1;
        }
    }
    w.flush()?;
    Ok(n)
}

async fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    if args.native {
        return native_redrive(&args).await;
    }
    let filtered = !args.event_types.is_empty()
        || !args.event_ids.is_empty()
        || args.older_than.is_some()
        || args.newer_than.is_some()
        || args.limit.is_some();
    if args.all && filtered {
        bail!("--all moves every message; leave out the filters, or leave out --all");
    }
    let (b, dlq_queue) = args.backend.open_with_dlq().await?;
    let options = dlq::ReplayOptions {
        filter: dlq::Filter {
            event_types: args.event_types.clone(),
            event_ids: args.event_ids.clone(),
            older_than: args.older_than,
            newer_than: args.newer_than,
        },
        limit: args.limit,
        rate: args.rate,
        dry_run: args.dry_run,
        hold: args.hold,
    };
    let cancel = cancel_on_signal();
    let tty = std::io::stderr().is_terminal() && !args.out.json;
    let mut last_line = 0u64;
    let summary = dlq::replay(
        b.queue.as_ref(),
        dlq_queue.as_ref(),
        &options,
        &cancel,
        |s| {
            let seen = s.replayed + s.skipped + s.failed;
            if tty {
                eprint!(
                    "\r{} {} replayed, {} skipped, {} failed",
                    if options.dry_run { "[dry run]" } else { "" },
                    s.replayed,
                    s.skipped,
                    s.failed
                );
            } else if !args.out.json && seen >= last_line + 500 {
                last_line = seen;
                eprintln!(
                    "progress: {} replayed, {} skipped, {} failed",
                    s.replayed, s.skipped, s.failed
                );
            }
        },
    )
    .await?;
    if tty {
        eprintln!();
    }
    if args.out.json {
        print_json(&summary)?;
    } else {
        println!(
            "{}replayed {}, skipped {}, failed {}",
            if args.dry_run {
                "dry run, nothing moved: would have "
            } else {
                ""
            },
            summary.replayed,
            summary.skipped,
            summary.failed
        );
    }
    Ok(if summary.failed == 0 && !cancel.is_cancelled() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn native_redrive(args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    let b = args.backend.open().await?;
    let Some((queue, Some(dlq))) = &b.sqs else {
        bail!("--native needs the AWS backend with DLQ_URL set (SQS StartMessageMoveTask)");
    };
    if args.dry_run {
        println!(
            "dry run: would start a native redrive of every message in {}",
            dlq.url()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let arn = dlq.arn().await?;
    let destination = queue.arn().await?;
    let rate = args.rate.map(|r| r.round() as i32);
    let handle = dlq.start_message_move(&arn, &destination, rate).await?;
    eprintln!("native redrive started (task {handle}) to {destination}");
    let cancel = cancel_on_signal();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = cancel.cancelled() => {
                eprintln!("stopped watching; the redrive task {handle} goes on in SQS (cancel it with CancelMessageMoveTask)");
                return Ok(ExitCode::FAILURE);
            }
        }
        match dlq.message_move_status(&arn).await? {
            Some((status, moved, total)) => {
                eprintln!(
                    "{status}: {moved} of {} moved",
                    total.map_or("?".to_owned(), |t| t.to_string())
                );
                match status.as_str() {
                    "COMPLETED" => {
                        if args.out.json {
                            print_json(&dlq::Summary {
                                replayed: u64::try_from(moved).unwrap_or(0),
                                skipped: 0,
                                failed: 0,
                            })?;
                        }
                        return Ok(ExitCode::SUCCESS);
                    }
                    "FAILED" | "CANCELLED" => return Ok(ExitCode::FAILURE),
                    _ => {}
                }
            }
            None => eprintln!("waiting for the task to appear"),
        }
    }
}
