//! Erasure (`hookline erase`, and the worker's erasure of a connected
//! account that left): everything Hookline holds of an account, an object
//! or an event, found through the ports and removed, with a receipt.
//!
//! What it reaches: the store's items ([`Store::holdings`]: provider item,
//! objects, ledger items with their destinations' states), the DLQ's
//! messages whose event concerns the subject, and the main queue's where
//! the queue can read its messages without receiving them (the embedded
//! backend; an SQS queue's messages are applied and deleted by the worker,
//! and an event applied after an erasure is Stripe's data again).

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use crate::envelope::Envelope;
use crate::inbound::event_in;
use crate::message::attr;
use crate::ports::{Delivery, Holdings, PortError, Queue, Store, Subject};

/// What an erasure found, or removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Found {
    #[serde(flatten)]
    pub items: Holdings,
    /// Message ids of the DLQ's messages.
    pub dlq_messages: Vec<String>,
    /// Message ids of the main queue's messages; `None` where the queue
    /// cannot be read without receiving (SQS).
    pub queue_messages: Option<Vec<String>>,
}

impl Found {
    /// How many records in all.
    pub fn total(&self) -> usize {
        self.items.providers.len()
            + self.items.objects.len()
            + self.items.events.len()
            + self.dlq_messages.len()
            + self.queue_messages.as_ref().map_or(0, Vec::len)
    }
}

/// Whether a queued message's event concerns `subject`, or is one of
/// `events` (the ledger items found): from the body (a webhook or an
/// EventBridge envelope), else from the message's attributes.
pub fn message_concerns(d: &Delivery, subject: &Subject, events: &HashSet<String>) -> bool {
    let envelope = event_in(&d.body)
        .ok()
        .and_then(|i| Envelope::parse(i.event).ok());
    let (id, account, object) = match &envelope {
        Some(e) => (
            Some(e.id.as_str()),
            e.account.as_deref(),
            e.object_id.as_deref(),
        ),
        None => (
            d.attributes.get(attr::EVENT_ID).map(String::as_str),
            d.attributes.get(attr::ACCOUNT).map(String::as_str),
            None,
        ),
    };
    let id = id.unwrap_or_default();
    events.contains(id) || subject.concerns(id, account, object)
}

/// How long a DLQ message read by a receive stays hidden while an erasure
/// looks at it; released at the end.
const HOLD: Duration = Duration::from_secs(120);

/// A queued message an erasure matched: its id and its event's.
struct Matched {
    message_id: String,
    event_id: Option<String>,
}

impl Matched {
    fn of(d: &Delivery) -> Self {
        let event_id = d.attributes.get(attr::EVENT_ID).cloned().or_else(|| {
            event_in(&d.body)
                .ok()
                .and_then(|i| Envelope::parse(i.event).ok())
                .map(|e| e.id.to_string())
        });
        Self {
            message_id: d.message_id.clone(),
            event_id,
        }
    }
}

/// Finds (and with `remove`, removes) what the store and the queues hold
/// of `subject`. Removing twice removes nothing the second time.
pub async fn erase(
    subject: &Subject,
    store: &dyn Store,
    queue: &dyn Queue,
    dlq: Option<&dyn Queue>,
    remove: bool,
) -> Result<Found, PortError> {
    let mut items = store.holdings(subject).await?;
    let events: HashSet<String> = items.events.iter().cloned().collect();
    let matches = |d: &Delivery| message_concerns(d, subject, &events);
    let dlq_matched = match dlq {
        Some(dlq) => dead_letters(dlq, &matches, remove).await?,
        None => Vec::new(),
    };
    let queue_matched = queue
        .sweep(&matches, remove)
        .await?
        .map(|ds| ds.iter().map(Matched::of).collect::<Vec<_>>());
    // An event found only in a queue (dead-lettered before its ledger item
    // named a subject) loses its ledger item too.
    let queued = dlq_matched.iter().chain(queue_matched.iter().flatten());
    items
        .events
        .extend(queued.filter_map(|m| m.event_id.clone()));
    items.normalise();
    let items = match remove {
        true => store.erase(&items).await?,
        false => {
            // Only what is there: a queued event may have no ledger item.
            let mut there = items.clone();
            there.events.clear();
            for id in &items.events {
                if store.event(id).await?.is_some() {
                    there.events.push(id.clone());
                }
            }
            there
        }
    };
    let ids = |ms: Vec<Matched>| ms.into_iter().map(|m| m.message_id).collect::<Vec<_>>();
    Ok(Found {
        items,
        dlq_messages: ids(dlq_matched),
        queue_messages: queue_matched.map(ids),
    })
}

/// The DLQ's messages that `matches`, removed with `remove`: where the
/// queue can be read without receiving, directly; else (SQS) by receiving
/// every message once, hidden for [`HOLD`], deleting the matching ones and
/// making the others visible again.
async fn dead_letters(
    dlq: &dyn Queue,
    matches: &(dyn for<'d> Fn(&'d Delivery) -> bool + Send + Sync),
    remove: bool,
) -> Result<Vec<Matched>, PortError> {
    if let Some(swept) = dlq.sweep(matches, remove).await? {
        return Ok(swept.iter().map(Matched::of).collect());
    }
    let mut seen = BTreeSet::new();
    let mut release = Vec::new();
    let mut found = Vec::new();
    let result = async {
        loop {
            let batch = dlq.receive(10, Duration::from_secs(1), HOLD).await?;
            let fresh: Vec<Delivery> = batch
                .into_iter()
                .filter(|d| seen.insert(d.message_id.clone()))
                .collect();
            if fresh.is_empty() {
                return Ok::<(), PortError>(());
            }
            let (hit, miss): (Vec<Delivery>, Vec<Delivery>) =
                fresh.into_iter().partition(|d| matches(d));
            release.extend(miss.into_iter().map(|d| d.receipt));
            if !remove {
                release.extend(hit.iter().map(|d| d.receipt.clone()));
                found.extend(hit.iter().map(Matched::of));
                continue;
            }
            let receipts: Vec<String> = hit.iter().map(|d| d.receipt.clone()).collect();
            for (d, deleted) in hit.iter().zip(dlq.delete_batch(&receipts).await) {
                deleted?;
                found.push(Matched::of(d));
            }
        }
    }
    .await;
    for receipt in release {
        // If this fails, the message is visible again when its hold ends.
        let _ = dlq.set_visibility(&receipt, Duration::ZERO).await;
    }
    result.map(|()| found)
}
