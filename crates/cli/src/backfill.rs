//! `hookline backfill`: for an ingress outage longer than Stripe retries,
//! list events from the Stripe Events API and enqueue them as the ingress
//! would. Safe to run twice: events already `COMPLETED` in the ledger are
//! skipped, and any copy that slips through completes as a duplicate.

use std::time::Duration;

use anyhow::bail;
use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use hookline_core::clock::unix_secs;
use hookline_core::envelope::Envelope;
use hookline_core::message::OutboundMessage;
use hookline_core::ports::{PortError, StripeApi};
use hookline_core::records::{EventStatus, Outcome};
use hookline_core::settings::EventFilter;
use hookline_settings::EventSettings;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::opts::BackendOpts;

/// Arguments of `hookline backfill`.
#[derive(Debug, Clone, clap::Args)]
pub struct BackfillArgs {
    /// Start of the window: RFC 3339 (2026-11-27T10:00:00Z), Unix seconds, or a duration ago (6h, 2d).
    #[arg(long)]
    pub since: String,

    /// Only these event types (repeatable); default: ENABLED_EVENTS.
    #[arg(long = "event-type", alias = "types", value_delimiter = ',')]
    pub event_types: Vec<String>,

    /// Only events whose webhook delivery has not succeeded yet (`delivery_success=false`).
    #[arg(long)]
    pub undelivered_only: bool,

    /// List what would be enqueued; enqueue nothing.
    #[arg(long)]
    pub dry_run: bool,

    #[command(flatten)]
    pub events: EventSettings,

    #[command(flatten)]
    pub backend: BackendOpts,
}

/// What a backfill did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub listed: u64,
    pub enqueued: u64,
    pub already_applied: u64,
    pub skipped: u64,
    pub failed: u64,
}

#[derive(Deserialize)]
struct Page {
    data: Vec<Box<RawValue>>,
    #[serde(default)]
    has_more: bool,
}

#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

/// Parses `--since`.
pub fn parse_since(s: &str, now: i64) -> anyhow::Result<i64> {
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(secs);
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        let secs = t
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        return Ok(secs);
    }
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(now - i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    }
    bail!("--since {s:?} is not RFC 3339, Unix seconds or a duration such as 6h")
}

/// One page of `GET /v1/events`, through the Stripe API client (its rate
/// limit, retries and error kinds).
async fn fetch_page(api: &dyn StripeApi, query: &[(String, String)]) -> Result<Page, PortError> {
    let body = api.get("/v1/events", query, None).await?;
    serde_json::from_slice(&body)
        .map_err(|e| PortError::permanent(format!("unexpected Stripe API page: {e}")))
}

/// Runs a backfill; `on_event` sees each listed event id and its fate.
pub async fn run(
    args: &BackfillArgs,
    mut on_event: impl FnMut(&str, &str),
) -> anyhow::Result<Report> {
    let backend = args.backend.open().await?;
    let Some(api) = backend.stripe_api(&args.backend.common).await? else {
        bail!("backfill needs STRIPE_SECRET_KEY or STRIPE_SECRET_KEY_ID");
    };
    let since = parse_since(&args.since, unix_secs())?;
    let filter = if args.event_types.is_empty() {
        args.events.enabled_events.clone()
    } else {
        EventFilter::Only(args.event_types.iter().cloned().collect())
    };
    let mut base_query: Vec<(String, String)> = vec![
        ("limit".into(), "100".into()),
        ("created[gte]".into(), since.to_string()),
    ];
    if let EventFilter::Only(types) = &filter {
        for t in types {
            base_query.push(("types[]".into(), t.clone()));
        }
    }
    if args.undelivered_only {
        base_query.push(("delivery_success".into(), "false".into()));
    }
    let retries = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(20))
        .with_max_times(6)
        .with_jitter();
    let app_env = args.backend.common.app_env;
    let coalescer = hookline_core::coalescer::SendCoalescer::spawn(
        std::sync::Arc::clone(&backend.queue),
        backend.coalescer,
    );
    let mut report = Report::default();
    let mut starting_after: Option<String> = None;
    loop {
        let mut query = base_query.clone();
        if let Some(after) = &starting_after {
            query.push(("starting_after".into(), after.clone()));
        }
        let page = (|| fetch_page(api.as_ref(), &query))
            .retry(retries)
            .when(PortError::is_retryable)
            .notify(|e, wait| eprintln!("Stripe API: {e}; retrying in {wait:?}"))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut batch = Vec::new();
        for raw in &page.data {
            report.listed += 1;
            let bytes = raw.get().as_bytes();
            let Ok(env) = Envelope::parse(bytes) else {
                report.skipped += 1;
                continue;
            };
            if hookline_core::inbound::admit(&env, app_env, &filter).is_err() {
                report.skipped += 1;
                on_event(env.id.as_str(), "skipped (mode or type)");
                continue;
            }
            // Applied or stale is final; an `ignored` completion is not
            // (the configuration may have changed since): enqueue it again.
            let done = backend
                .store
                .event(env.id.as_str())
                .await
                .ok()
                .flatten()
                .is_some_and(|r| {
                    r.status == EventStatus::Completed && r.outcome != Some(Outcome::Ignored)
                });
            if done {
                report.already_applied += 1;
                on_event(env.id.as_str(), "already applied");
                continue;
            }
            if args.dry_run {
                report.enqueued += 1;
                on_event(env.id.as_str(), "would enqueue");
                continue;
            }
            batch.push((
                env.id.to_string(),
                OutboundMessage::for_event(&env, Bytes::copy_from_slice(bytes), unix_secs())
                    .as_copy(),
            ));
        }
        // Through the backend's send coalescer, as the ingress sends: its
        // batches honour the backend's entry and byte limits.
        let sends: Vec<_> = batch
            .into_iter()
            .map(|(id, message)| {
                let coalescer = coalescer.clone();
                (
                    id,
                    tokio::spawn(async move { coalescer.send(message).await }),
                )
            })
            .collect();
        for (id, sent) in sends {
            match sent.await {
                Ok(Ok(())) => {
                    report.enqueued += 1;
                    on_event(&id, "enqueued");
                }
                Ok(Err(e)) => {
                    report.failed += 1;
                    on_event(&id, &format!("failed: {e}"));
                }
                Err(e) => {
                    report.failed += 1;
                    on_event(&id, &format!("failed: {e}"));
                }
            }
        }
        let last = page
            .data
            .last()
            .and_then(|r| serde_json::from_str::<IdOnly>(r.get()).ok())
            .map(|e| e.id);
        match (page.has_more, last) {
            (true, Some(id)) => starting_after = Some(id),
            _ => break,
        }
    }
    Ok(report)
}

/// `backfill`: one line per event on stdout, the totals on stderr; exit 1
/// when anything failed.
pub async fn cmd(args: &BackfillArgs) -> anyhow::Result<std::process::ExitCode> {
    let report = run(args, |id, fate| println!("{id}  {fate}")).await?;
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
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_three_forms() {
        assert_eq!(parse_since("1700000000", 0).expect("unix"), 1_700_000_000);
        assert_eq!(
            parse_since("2023-11-14T22:13:20Z", 0).expect("rfc3339"),
            1_700_000_000
        );
        assert_eq!(parse_since("2h", 10_000).expect("ago"), 10_000 - 7_200);
        assert!(parse_since("yesterday-ish", 0).is_err());
    }
}
