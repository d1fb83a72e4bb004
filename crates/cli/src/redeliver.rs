//! `hookline events redeliver EVT --destination NAME`: sends an event to
//! one destination again, on purpose (the destination lost what it stored,
//! or a bug of its own was fixed).
//!
//! The destination's state is reset to "not delivered" (its tries kept, its
//! retry horizon started afresh), and the event, read from Stripe's API,
//! goes back on the queue as a copy. The worker then delivers it to that
//! destination, and to any other that has not taken the event yet (one
//! that refused it, say); those that took it are not called. The body is
//! Stripe's API form of the event, signed by the worker like any delivery,
//! with an `Idempotency-Key` of its own (`EVT:redelivery:ID`) and a
//! `Hookline-Redelivery: ID` header: a receiver that dedupes on the event
//! id must not drop it.

use bytes::Bytes;
use hookline_core::clock::unix_secs;
use hookline_core::envelope::{Envelope, EventId};
use hookline_core::message::OutboundMessage;
use hookline_core::ports::Origin;
use hookline_core::records::DestinationState;

use crate::opts::BackendOpts;

/// Arguments of `hookline events redeliver`.
#[derive(Debug, Clone, clap::Args)]
pub struct RedeliverArgs {
    /// The event (evt_…).
    pub event_id: String,

    /// The routes document's name of the destination to send it to again.
    #[arg(long)]
    pub destination: String,

    #[command(flatten)]
    pub backend: BackendOpts,
}

/// `events redeliver`.
pub async fn cmd(args: &RedeliverArgs) -> anyhow::Result<std::process::ExitCode> {
    let b = args.backend.open().await?;
    let id = &args.event_id;
    let Some(record) = b.store.event(id).await? else {
        anyhow::bail!(
            "no event {id} in {}: only an event the worker saw can be redelivered",
            args.backend.tables.events_table_name
        );
    };
    let Some(api) = b.stripe_api(&args.backend.common).await? else {
        anyhow::bail!(
            "redeliver reads the event from Stripe's API: set STRIPE_SECRET_KEY or STRIPE_SECRET_KEY_ID"
        );
    };
    let path = if record.event_type.starts_with("v2.") || record.event_type.starts_with("v1.") {
        format!("/v2/core/events/{id}")
    } else {
        format!("/v1/events/{id}")
    };
    let body = api.get(&path, &[], None).await?;
    let envelope = Envelope::parse(&body)
        .map_err(|e| anyhow::anyhow!("Stripe's API answered {path} with no event: {e}"))?;
    anyhow::ensure!(
        envelope.id.as_str() == id,
        "Stripe's API answered {path} with event {}",
        envelope.id
    );
    let now = unix_secs();
    let previous = record
        .destinations
        .get(&args.destination)
        .cloned()
        .unwrap_or_default();
    let reset = DestinationState {
        delivered: false,
        attempts: previous.attempts,
        last_error: None,
        first_failed_at: None,
        updated_at: now,
        // Its own idempotency key: a receiver that dedupes on the event id
        // would drop a redelivery sent under it.
        redelivery: Some(uuid::Uuid::new_v4().simple().to_string()),
    };
    b.store
        .record_destination(
            &EventId::new(id.clone()),
            &record.event_type,
            Origin::new(
                "redeliver",
                envelope.account.as_deref(),
                envelope.object_id.as_deref(),
            ),
            &args.destination,
            &reset,
            now,
        )
        .await?;
    let message =
        OutboundMessage::for_event(&envelope, Bytes::copy_from_slice(&body), now).as_copy();
    let sent = b.queue.send_batch(std::slice::from_ref(&message)).await;
    match sent.into_iter().next() {
        Some(Ok(())) => {
            println!(
                "{id}: queued again for destination {} (redelivery {})",
                args.destination,
                reset.redelivery.as_deref().unwrap_or_default()
            );
            Ok(std::process::ExitCode::SUCCESS)
        }
        Some(Err(e)) => Err(e.into()),
        None => anyhow::bail!("the queue answered nothing for {id}"),
    }
}
