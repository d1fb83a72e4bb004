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

use std::collections::HashSet;
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
    /// How many DLQ messages the scan read, each once.
    pub dlq_read: usize,
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
    let (dlq_matched, dlq_read) = match dlq {
        Some(dlq) => dead_letters(dlq, &matches, remove).await?,
        None => (Vec::new(), 0),
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
        dlq_read,
        dlq_messages: ids(dlq_matched),
        queue_messages: queue_matched.map(ids),
    })
}

/// The DLQ's messages that `matches`, removed with `remove`, and how many
/// messages were read. Where the queue can be read without receiving,
/// directly. Else (SQS) each message is received once, and none stays
/// hidden: a match is deleted (with `remove`); every other message goes
/// back at once, as a copy at the queue's tail marked with this scan's id
/// and its first arrival (its age and group kept), before the one received
/// is deleted. So a FIFO group is never held behind a message the scan
/// looks at, a large standard queue never hands a message back to the scan
/// when its hold ends, and the scan ends when a receive brings only its
/// own copies (held until the end, then made visible) or nothing.
async fn dead_letters(
    dlq: &dyn Queue,
    matches: &(dyn for<'d> Fn(&'d Delivery) -> bool + Send + Sync),
    remove: bool,
) -> Result<(Vec<Matched>, usize), PortError> {
    if let Some(swept) = dlq.sweep(matches, remove).await? {
        return Ok((swept.iter().map(Matched::of).collect(), swept.len()));
    }
    let scan = uuid::Uuid::new_v4().simple().to_string();
    let mut own = Vec::new();
    let mut found = Vec::new();
    let mut read = 0;
    let result = async {
        loop {
            let batch = dlq.receive(10, Duration::from_secs(1), HOLD).await?;
            if batch.is_empty() {
                return Ok::<(), PortError>(());
            }
            let mut back = Vec::new();
            let mut gone = Vec::new();
            for d in batch {
                if d.attributes.get(attr::SCANNED_BY) == Some(&scan) {
                    own.push(d.receipt);
                    continue;
                }
                read += 1;
                let hit = matches(&d);
                if hit {
                    found.push(Matched::of(&d));
                }
                if hit && remove {
                    gone.push(d.receipt);
                } else {
                    back.push(d);
                }
            }
            put_back(dlq, &back, &scan).await?;
            gone.extend(back.into_iter().map(|d| d.receipt));
            for deleted in dlq.delete_batch(&gone).await {
                deleted?;
            }
        }
    }
    .await;
    for receipt in own {
        // If this fails, the copy is visible again when its hold ends.
        let _ = dlq.set_visibility(&receipt, Duration::ZERO).await;
    }
    result.map(|()| (found, read))
}

/// Sends a copy of each of `messages` to the tail of `dlq`, marked as read
/// by `scan`, in its group, with its first arrival. An error when any copy
/// was refused: the originals are then made visible again, nothing is
/// deleted, and a rerun reads them.
async fn put_back(dlq: &dyn Queue, messages: &[Delivery], scan: &str) -> Result<(), PortError> {
    if messages.is_empty() {
        return Ok(());
    }
    let copies: Vec<_> = messages
        .iter()
        .map(|d| {
            let mut m = d.to_outbound();
            if let Some(group) = &d.group_id {
                m.group_id.clone_from(group);
            }
            m.attributes
                .entry(attr::SENT_AT.to_owned())
                .or_insert_with(|| d.sent_at_ms.to_string());
            m.attributes
                .insert(attr::SCANNED_BY.to_owned(), scan.to_owned());
            m
        })
        .collect();
    let mut refused = None;
    for chunk in copies.chunks(10) {
        for sent in dlq.send_batch(chunk).await {
            if let Err(e) = sent {
                refused.get_or_insert(e);
            }
        }
    }
    match refused {
        None => Ok(()),
        Some(e) => {
            for d in messages {
                let _ = dlq.set_visibility(&d.receipt, Duration::ZERO).await;
            }
            Err(e)
        }
    }
}
