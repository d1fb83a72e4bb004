//! The `hookline dlq` commands as the operator sees them: each opens the
//! backend, runs the logic of [`super`], and renders its table or JSON.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use hookline_core::ports::MoveState;
use tokio_util::sync::CancellationToken;

use crate::opts::BackendOpts;
use crate::output::{cancel_on_signal, human_age, print_json};

/// `dlq stats`.
pub async fn stats(backend: &BackendOpts, json: bool) -> anyhow::Result<ExitCode> {
    let (b, dlq_queue) = backend.open_with_dlq().await?;
    let s = super::stats(b.queue.as_ref(), dlq_queue.as_ref()).await?;
    if json {
        print_json(&s)?;
    } else {
        println!(
            "waiting        {}\nin flight      {}\ndead-lettered  {}",
            s.waiting, s.in_flight, s.dead_lettered
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `dlq list`.
pub async fn list(
    backend: &BackendOpts,
    limit: Option<usize>,
    hold: Duration,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (b, dlq_queue) = backend.open_with_dlq().await?;
    let cancel = cancel_on_signal();
    let mut peek = super::Peek::new(dlq_queue.as_ref(), limit, hold);
    let listed = write_list(&mut peek, b.store.as_ref(), json, &cancel).await;
    super::release(dlq_queue.as_ref(), peek.held()).await;
    listed?;
    Ok(ExitCode::SUCCESS)
}

/// `dlq export`.
pub async fn export(backend: &BackendOpts, out: &Path, hold: Duration) -> anyhow::Result<ExitCode> {
    let (b, dlq_queue) = backend.open_with_dlq().await?;
    let cancel = cancel_on_signal();
    let mut peek = super::Peek::new(dlq_queue.as_ref(), None, hold);
    let written = write_export(out, &mut peek, b.store.as_ref(), &cancel).await;
    super::release(dlq_queue.as_ref(), peek.held()).await;
    let n = written?;
    eprintln!("exported {n} messages to {}", out.display());
    Ok(if cancel.is_cancelled() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// What `dlq replay` was asked to do.
#[derive(Debug, Clone)]
pub struct ReplayRequest {
    pub options: super::ReplayOptions,
    /// `--all`: every message (required with `--native`).
    pub all: bool,
    pub native: bool,
    pub json: bool,
}

/// `dlq replay`.
pub async fn replay(backend: &BackendOpts, request: ReplayRequest) -> anyhow::Result<ExitCode> {
    if request.native {
        return native(backend, &request).await;
    }
    let o = &request.options;
    let filtered = !o.filter.event_types.is_empty()
        || !o.filter.event_ids.is_empty()
        || o.filter.older_than.is_some()
        || o.filter.newer_than.is_some()
        || o.limit.is_some();
    if request.all && filtered {
        bail!("--all moves every message; leave out the filters, or leave out --all");
    }
    let (b, dlq_queue) = backend.open_with_dlq().await?;
    let cancel = cancel_on_signal();
    let tty = std::io::stderr().is_terminal() && !request.json;
    let mut last_line = 0u64;
    let summary = super::replay(&b.queue, &dlq_queue, o, &cancel, |s| {
        let seen = s.replayed + s.skipped + s.failed;
        if tty {
            eprint!(
                "\r{} {} replayed, {} skipped, {} failed",
                if o.dry_run { "[dry run]" } else { "" },
                s.replayed,
                s.skipped,
                s.failed
            );
        } else if !request.json && seen >= last_line + 500 {
            last_line = seen;
            eprintln!(
                "progress: {} replayed, {} skipped, {} failed",
                s.replayed, s.skipped, s.failed
            );
        }
    })
    .await?;
    if tty {
        eprintln!();
    }
    if request.json {
        print_json(&summary)?;
    } else {
        println!(
            "{}replayed {}, skipped {}, failed {}",
            if o.dry_run {
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

/// `dlq replay --all --native`: the backend's own whole-queue redrive.
async fn native(backend: &BackendOpts, request: &ReplayRequest) -> anyhow::Result<ExitCode> {
    let b = backend.open().await?;
    let Some(redrive) = b.native_redrive() else {
        bail!("--native needs the AWS backend with DLQ_URL set (SQS StartMessageMoveTask)");
    };
    if request.options.dry_run {
        println!(
            "dry run: would start a native redrive of every message in {}",
            redrive.source()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let rate = request.options.rate.map(|r| r.round() as u32);
    let handle = redrive.start(rate).await?;
    eprintln!("native redrive started (task {handle}) to the main queue");
    let cancel = cancel_on_signal();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = cancel.cancelled() => {
                eprintln!("stopped watching; the redrive task {handle} goes on in SQS (cancel it with CancelMessageMoveTask)");
                return Ok(ExitCode::FAILURE);
            }
        }
        let Some(status) = redrive.status().await? else {
            eprintln!("waiting for the task to appear");
            continue;
        };
        eprintln!(
            "{:?}: {} of {} moved",
            status.state,
            status.moved,
            status.total.map_or("?".to_owned(), |t| t.to_string())
        );
        match status.state {
            MoveState::Completed => {
                if request.json {
                    print_json(&super::Summary {
                        replayed: status.moved,
                        skipped: 0,
                        failed: 0,
                    })?;
                }
                return Ok(ExitCode::SUCCESS);
            }
            MoveState::Failed | MoveState::Cancelled => return Ok(ExitCode::FAILURE),
            MoveState::Running | MoveState::Cancelling => {}
        }
    }
}

/// `dlq list`: prints each message as it arrives (a JSON array, or a
/// table), holding only receipts.
async fn write_list(
    peek: &mut super::Peek<'_>,
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
            let e = super::entry(d, store, now).await;
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
async fn write_export(
    path: &std::path::Path,
    peek: &mut super::Peek<'_>,
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
            let line = super::ExportLine {
                entry: super::entry(&d, store, now).await,
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
