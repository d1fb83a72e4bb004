//! `hookline dlq`: stats, list, export and replay of the dead-letter queue.
//!
//! Looking never removes anything: `list` and `export` receive with a short
//! hold and make every message visible again before they return (also on
//! ctrl-c). `replay` deletes a DLQ message only after the main queue
//! accepted its copy, so an interruption at any point loses nothing and at
//! worst leaves a duplicate that the worker's idempotency absorbs.

pub mod commands;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hookline_core::clock::unix_millis;
use hookline_core::coalescer::{CoalescerConfig, DeleteCoalescer, SendCoalescer};
use hookline_core::message::attr;
use hookline_core::ports::{Delivery, PortError, Queue, Store};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// How long messages stay hidden while a command holds them by default;
/// they are made visible again as soon as it is done, so this only matters
/// for a run that was killed.
pub const DEFAULT_HOLD: Duration = Duration::from_secs(300);

/// How long a replay waits, once the DLQ answers empty, for messages that
/// another reader holds hidden (the console's summary holds its look for
/// at most 10 s) before it ends.
pub const OTHERS_PATIENCE: Duration = Duration::from_secs(30);

/// `dlq stats --json`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub waiting: u64,
    pub in_flight: u64,
    pub dead_lettered: u64,
}

pub async fn stats(queue: &dyn Queue, dlq: &dyn Queue) -> Result<Stats, PortError> {
    let q = queue.counts().await?;
    let d = dlq.counts().await?;
    Ok(Stats {
        waiting: q.waiting,
        in_flight: q.in_flight,
        dead_lettered: d.waiting + d.in_flight,
    })
}

/// One DLQ message as `list` and `export` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub age_secs: u64,
    pub receive_count: u32,
    pub reason: Option<String>,
    /// How the event reached the queue: `webhook` or `eventbridge`.
    pub source: Option<&'static str>,
}

/// An `export` line: the `list` fields plus the raw body and attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportLine {
    #[serde(flatten)]
    pub entry: Entry,
    pub body: String,
    pub attributes: BTreeMap<String, String>,
}

/// Age of the event from when the ingress received it (`received_at`),
/// else from when the message was sent.
fn age_secs(d: &Delivery, now_ms: i64) -> u64 {
    let since_ms = d
        .attributes
        .get(attr::RECEIVED_AT)
        .and_then(|t| humantime::parse_rfc3339(t).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(d.sent_at_ms);
    u64::try_from(now_ms.saturating_sub(since_ms) / 1000).unwrap_or(0)
}

/// The entry for a delivery; the reason is the `error` attribute, or for a
/// message the queue redrove itself, the ledger's `lastError`.
/// What a DLQ message is about: event id, type and source, from its
/// attributes or, for an EventBridge message (which carries none), its body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct About {
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub source: Option<&'static str>,
}

pub fn about(d: &Delivery) -> About {
    let inbound = hookline_core::inbound::event_in(&d.body).ok();
    let envelope = inbound.and_then(|i| hookline_core::envelope::Envelope::parse(i.event).ok());
    About {
        event_id: d
            .attributes
            .get(attr::EVENT_ID)
            .cloned()
            .or_else(|| envelope.as_ref().map(|e| e.id.to_string())),
        event_type: d
            .attributes
            .get(attr::EVENT_TYPE)
            .cloned()
            .or_else(|| envelope.map(|e| e.event_type)),
        source: inbound.map(|i| i.source.as_str()),
    }
}

pub async fn entry(d: &Delivery, store: &dyn Store, now_ms: i64) -> Entry {
    let mut e = entry_of(d, now_ms);
    e.fill_reason(store).await;
    e
}

/// What the message itself says, without the ledger's reason.
pub fn entry_of(d: &Delivery, now_ms: i64) -> Entry {
    let About {
        event_id,
        event_type,
        source,
    } = about(d);
    Entry {
        event_id,
        event_type,
        age_secs: age_secs(d, now_ms),
        receive_count: d.receive_count,
        reason: d.attributes.get(attr::ERROR).cloned(),
        source,
    }
}

impl Entry {
    /// A message without a reason (the queue's own redrive moved it) takes
    /// the ledger's `lastError`.
    pub async fn fill_reason(&mut self, store: &dyn Store) {
        if self.reason.is_none() {
            if let Some(id) = &self.event_id {
                self.reason = store
                    .event(id)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|r| r.last_error);
            }
        }
    }
}

/// Looks at DLQ messages batch by batch without removing them: each is
/// held hidden for `hold` and only its receipt is kept, so a DLQ of any size
/// streams through `list` and `export`. The caller must [`release`]
/// [`Peek::held`] at the end, also on error or cancel.
pub struct Peek<'a> {
    dlq: &'a dyn Queue,
    limit: Option<usize>,
    hold: Duration,
    seen: HashSet<String>,
    held: Vec<Held>,
}

impl<'a> Peek<'a> {
    pub fn new(dlq: &'a dyn Queue, limit: Option<usize>, hold: Duration) -> Self {
        Self {
            dlq,
            limit,
            hold,
            seen: HashSet::new(),
            held: Vec::new(),
        }
    }

    /// The next messages not seen yet; empty once the DLQ (or the limit, or
    /// `cancel`) is reached.
    pub async fn next_batch(
        &mut self,
        cancel: &CancellationToken,
    ) -> Result<Vec<Delivery>, PortError> {
        loop {
            let want = self
                .limit
                .map_or(10, |l| l.saturating_sub(self.held.len()).min(10));
            if want == 0 || cancel.is_cancelled() {
                return Ok(Vec::new());
            }
            let batch = tokio::select! {
                b = self.dlq.receive(want, Duration::from_secs(1), self.hold) => b?,
                _ = cancel.cancelled() => return Ok(Vec::new()),
            };
            if batch.is_empty() {
                return Ok(batch);
            }
            let fresh: Vec<Delivery> = batch
                .into_iter()
                .filter(|d| self.seen.insert(d.message_id.clone()))
                .collect();
            self.held.extend(fresh.iter().map(Held::from));
            if !fresh.is_empty() {
                return Ok(fresh);
            }
        }
    }

    /// What this look holds hidden.
    pub fn held(&self) -> &[Held] {
        &self.held
    }
}

/// A message a command holds hidden, to make visible again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub message_id: String,
    pub receipt: String,
}

impl From<&Delivery> for Held {
    fn from(d: &Delivery) -> Self {
        Self {
            message_id: d.message_id.clone(),
            receipt: d.receipt.clone(),
        }
    }
}

/// Makes held messages visible again.
pub async fn release(dlq: &dyn Queue, held: &[Held]) {
    for d in held {
        if let Err(error) = dlq.set_visibility(&d.receipt, Duration::ZERO).await {
            eprintln!(
                "warning: message {} stays hidden until its hold ends: {error}",
                d.message_id
            );
        }
    }
}

/// Which DLQ messages `replay` moves.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub event_types: Vec<String>,
    pub event_ids: Vec<String>,
    pub older_than: Option<Duration>,
    pub newer_than: Option<Duration>,
}

impl Filter {
    pub fn matches(&self, d: &Delivery, now_ms: i64) -> bool {
        self.matches_about(&about(d), d, now_ms)
    }

    /// [`Filter::matches`] for a message whose [`About`] is already known.
    pub fn matches_about(&self, about: &About, d: &Delivery, now_ms: i64) -> bool {
        let one_of = |value: &Option<String>, set: &[String]| {
            set.is_empty() || value.as_ref().is_some_and(|v| set.iter().any(|s| s == v))
        };
        let age = Duration::from_secs(age_secs(d, now_ms));
        one_of(&about.event_type, &self.event_types)
            && one_of(&about.event_id, &self.event_ids)
            && self.older_than.is_none_or(|o| age >= o)
            && self.newer_than.is_none_or(|n| age <= n)
    }
}

/// `dlq replay --json`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub replayed: u64,
    pub skipped: u64,
    pub failed: u64,
}

/// How a replay runs.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub filter: Filter,
    pub limit: Option<u64>,
    /// Messages per second at most.
    pub rate: Option<f64>,
    pub dry_run: bool,
    /// How long messages stay hidden while held.
    pub hold: Duration,
    /// Receive → send → delete loops running at once.
    pub parallel: usize,
}

/// Loops a replay runs at once by default (`--parallel`'s default too):
/// enough to hide per-call latency on SQS, few enough to stay gentle on
/// the queue.
pub const DEFAULT_PARALLEL: usize = 4;

/// Moves matching DLQ messages back to the queue. Each message is deleted
/// from the DLQ only after the queue accepted its copy (batch send, then
/// batch delete). Messages that do not match, or whose copy failed, are
/// made visible in the DLQ again at the end, also on cancel.
///
/// A replay moves what was in the DLQ when it started, then ends: a message
/// dead-lettered after the start (a worker dead-lettering a replayed poison
/// event again), or a second copy of an event this run already replayed,
/// is left in the DLQ for the next run and not counted. Without this, with
/// workers running, a replay of poison events never ends.
pub async fn replay(
    queue: &Arc<dyn Queue>,
    dlq: &Arc<dyn Queue>,
    options: &ReplayOptions,
    cancel: &CancellationToken,
    progress: impl FnMut(&Summary) + Send,
) -> Result<Summary, PortError> {
    let shared = std::sync::Mutex::new(Shared {
        summary: Summary::default(),
        held: Vec::new(),
        seen: HashSet::new(),
        replayed_events: HashSet::new(),
        taken: 0,
        progress: Box::new(progress),
    });
    // Copies and deletes go through the coalescers, as every batched
    // queue call does: concurrent loops share batches.
    let batching = CoalescerConfig::remote();
    let run = Run {
        dlq: dlq.as_ref(),
        sends: SendCoalescer::spawn(Arc::clone(queue), batching),
        deletes: DeleteCoalescer::spawn(Arc::clone(dlq), batching),
        options,
        cancel,
        started: Instant::now(),
        started_ms: unix_millis(),
        shared: &shared,
    };
    // Several receive → send → delete loops at once; they share what was
    // seen, the limit and the rate.
    let loops = options.parallel.max(1);
    let results =
        futures_util::future::join_all((0..loops).map(|_| run.receive_until_done())).await;
    let held = match shared.lock() {
        Ok(mut s) => std::mem::take(&mut s.held),
        Err(poisoned) => std::mem::take(&mut poisoned.into_inner().held),
    };
    release(dlq.as_ref(), &held).await;
    let summary = match shared.lock() {
        Ok(s) => s.summary,
        Err(poisoned) => poisoned.into_inner().summary,
    };
    results
        .into_iter()
        .collect::<Result<Vec<()>, _>>()
        .map(|_| summary)
}

/// What a replay's loops share, behind one lock held only between awaits.
struct Shared<'p> {
    summary: Summary,
    held: Vec<Held>,
    seen: HashSet<String>,
    replayed_events: HashSet<String>,
    /// Messages selected to move so far (moved, failed, or being sent): the
    /// limit and the rate count these.
    taken: u64,
    progress: Box<dyn FnMut(&Summary) + Send + 'p>,
}

struct Run<'a, 'p> {
    dlq: &'a dyn Queue,
    sends: SendCoalescer,
    deletes: DeleteCoalescer,
    options: &'a ReplayOptions,
    cancel: &'a CancellationToken,
    started: Instant,
    started_ms: i64,
    shared: &'a std::sync::Mutex<Shared<'p>>,
}

impl Run<'_, '_> {
    fn with<T>(&self, f: impl FnOnce(&mut Shared<'_>) -> T) -> T {
        match self.shared.lock() {
            Ok(mut s) => f(&mut s),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Whether messages this run has not seen may still come: visible
    /// ones a receive missed, or messages another reader holds hidden for
    /// a while (the console's summary, a `dlq list`, an erase's scan).
    async fn others_hold(&self) -> Result<bool, PortError> {
        let counts = self.dlq.counts().await?;
        let mine = self.with(|s| {
            let moving = s.taken - (s.summary.replayed + s.summary.failed).min(s.taken);
            s.held.len() as u64 + moving
        });
        Ok(counts.waiting > 0 || counts.in_flight > mine)
    }

    async fn receive_until_done(&self) -> Result<(), PortError> {
        let options = self.options;
        // While others hold messages hidden, an empty receive does not end
        // the run; it waits for them up to `OTHERS_PATIENCE`.
        let mut waiting_since: Option<Instant> = None;
        loop {
            if self.cancel.is_cancelled() {
                return Ok(());
            }
            if options.limit.is_some_and(|l| self.with(|s| s.taken) >= l) {
                return Ok(());
            }
            let batch = tokio::select! {
                b = self.dlq.receive(10, Duration::from_secs(1), options.hold) => b?,
                _ = self.cancel.cancelled() => return Ok(()),
            };
            if batch.is_empty() {
                let since = *waiting_since.get_or_insert_with(Instant::now);
                // The next receive's long poll takes them as soon as they
                // are visible again.
                if since.elapsed() < OTHERS_PATIENCE && self.others_hold().await? {
                    continue;
                }
                return Ok(());
            }
            waiting_since = None;
            let now_ms = unix_millis();
            let (selected, due) = self.with(|s| {
                let mut selected = Vec::new();
                for d in batch {
                    let about = about(&d);
                    let arrived_since_start = d.sent_at_ms > self.started_ms
                        || about
                            .event_id
                            .as_ref()
                            .is_some_and(|id| s.replayed_events.contains(id));
                    if !s.seen.insert(d.message_id.clone()) || arrived_since_start {
                        s.held.push(Held::from(&d));
                        continue;
                    }
                    let room = options.limit.is_none_or(|l| s.taken < l);
                    if !options.filter.matches_about(&about, &d, now_ms) {
                        s.summary.skipped += 1;
                        s.held.push(Held::from(&d));
                    } else if room {
                        s.taken += 1;
                        selected.push(d);
                    } else {
                        // Matches, but the limit is reached: left as it was, not counted.
                        s.held.push(Held::from(&d));
                    }
                }
                // Paced to `rate` messages a second over the whole run, all
                // loops together: this batch starts when the ones before it
                // are due.
                let before = s.taken - selected.len() as u64;
                let due = options
                    .rate
                    .filter(|r| *r > 0.0)
                    .map(|rate| Duration::from_secs_f64(before as f64 / rate));
                if selected.is_empty() || options.dry_run {
                    if options.dry_run {
                        s.summary.replayed += selected.len() as u64;
                        s.held.extend(selected.drain(..).map(|d| Held::from(&d)));
                    }
                    let summary = s.summary;
                    (s.progress)(&summary);
                }
                (selected, due)
            });
            if selected.is_empty() {
                continue;
            }
            if let Some(due) = due {
                let elapsed = self.started.elapsed();
                if due > elapsed {
                    tokio::select! {
                        _ = tokio::time::sleep(due - elapsed) => {}
                        _ = self.cancel.cancelled() => {
                            self.with(|s| s.held.extend(selected.iter().map(Held::from)));
                            return Ok(());
                        }
                    }
                }
            }
            self.move_batch(selected).await;
        }
    }

    /// Copies first, then deletes what the queue accepted.
    async fn move_batch(&self, selected: Vec<Delivery>) {
        let copies: Vec<_> = selected
            .iter()
            .map(|d| {
                let mut m = d.to_outbound();
                for dead_letter_only in [attr::ERROR, attr::SENT_AT, attr::SCANNED_BY] {
                    m.attributes.remove(dead_letter_only);
                }
                m
            })
            .collect();
        let sent =
            futures_util::future::join_all(copies.into_iter().map(|c| self.sends.send(c))).await;
        let mut accepted = Vec::new();
        let mut refused = Vec::new();
        for (d, result) in selected.into_iter().zip(sent) {
            match result {
                Ok(()) => accepted.push(d),
                Err(error) => {
                    eprintln!(
                        "warning: copy of {} not accepted, left in the DLQ: {error}",
                        about(&d).event_id.as_deref().unwrap_or("?")
                    );
                    refused.push(d);
                }
            }
        }
        let deletes = accepted
            .iter()
            .map(|d| self.deletes.delete(d.receipt.clone()));
        for (d, deleted) in accepted
            .iter()
            .zip(futures_util::future::join_all(deletes).await)
        {
            if let Err(error) = deleted {
                // The copy is queued; the original reappears in the DLQ and a
                // second replay completes as a duplicate.
                eprintln!(
                    "warning: {} replayed but not removed from the DLQ: {error}",
                    d.message_id
                );
            }
        }
        self.with(|s| {
            s.summary.failed += refused.len() as u64;
            s.held.extend(refused.iter().map(Held::from));
            s.summary.replayed += accepted.len() as u64;
            s.replayed_events
                .extend(accepted.iter().filter_map(|d| about(d).event_id));
            let summary = s.summary;
            (s.progress)(&summary);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn delivery(body: &str, attributes: &[(&str, &str)], age_secs: i64, now_ms: i64) -> Delivery {
        Delivery {
            message_id: "m".to_owned(),
            receipt: "r".to_owned(),
            body: Bytes::from(body.to_owned()),
            attributes: attributes
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            receive_count: 1,
            sent_at_ms: now_ms - age_secs * 1000,
            group_id: None,
        }
    }

    const EVENT: &str =
        r#"{"id":"evt_1","type":"payout.updated","created":1,"data":{"object":{"id":"po_1"}}}"#;

    #[test]
    fn the_filter_matches_type_id_and_age() {
        let now = 1_000_000_000;
        let d = delivery(
            EVENT,
            &[("event_id", "evt_1"), ("event_type", "payout.updated")],
            3600,
            now,
        );
        let f = |types: &[&str], ids: &[&str], older: Option<u64>, newer: Option<u64>| Filter {
            event_types: types.iter().map(|s| (*s).to_owned()).collect(),
            event_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
            older_than: older.map(Duration::from_secs),
            newer_than: newer.map(Duration::from_secs),
        };
        assert!(f(&[], &[], None, None).matches(&d, now));
        assert!(f(&["payout.updated", "x"], &[], None, None).matches(&d, now));
        assert!(!f(&["payout.created"], &[], None, None).matches(&d, now));
        assert!(f(&[], &["evt_1"], None, None).matches(&d, now));
        assert!(!f(&[], &["evt_2"], None, None).matches(&d, now));
        assert!(
            f(&[], &[], Some(1800), None).matches(&d, now),
            "older than 30m"
        );
        assert!(!f(&[], &[], Some(7200), None).matches(&d, now));
        assert!(
            f(&[], &[], None, Some(7200)).matches(&d, now),
            "newer than 2h"
        );
        assert!(!f(&[], &[], None, Some(60)).matches(&d, now));
    }

    #[test]
    fn an_eventbridge_message_is_known_by_its_body() {
        let now = 1_000_000_000;
        let body = hookline_core::inbound::eventbridge_envelope(EVENT, "123456789012", "us-east-1")
            .expect("wraps");
        let d = delivery(&body, &[], 10, now);
        let about = about(&d);
        assert_eq!(about.event_id.as_deref(), Some("evt_1"));
        assert_eq!(about.event_type.as_deref(), Some("payout.updated"));
        assert_eq!(about.source, Some("eventbridge"));
        let only = Filter {
            event_types: vec!["payout.updated".to_owned()],
            ..Default::default()
        };
        assert!(only.matches(&d, now));
    }
}
