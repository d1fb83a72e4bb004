//! The store port: the idempotency ledger and the projections, its two
//! write paths, and what erase asks of it.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::envelope::EventId;
use crate::records::{Completion, DestinationState, EventRecord, Projection, StoredItem};

use super::PortError;

/// Recent completions by outcome (see [`Store::recent`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecentActivity {
    pub applied: u64,
    pub stale: u64,
    pub ignored: u64,
    /// Completed after more than one try.
    pub retried: u64,
    /// `FAILED` ledger items (dead-lettered, or waiting for a retry).
    pub failed: u64,
}

/// Who claims an event, from when, for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease<'a> {
    /// Unique per delivery (message id and receive count), so a retry of the
    /// same claim is recognised and a redelivery is a new owner.
    pub owner: &'a str,
    /// Unix seconds.
    pub now: i64,
    pub secs: u64,
    /// How the delivery arrived and whom its event concerns, recorded on
    /// the ledger item.
    pub origin: Origin<'a>,
}

/// How a delivery arrived and whom its event concerns: what a ledger item
/// records of it besides the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<'a> {
    /// `webhook` or `eventbridge`.
    pub source: &'a str,
    /// The ledger's `subject`: the event's `account` (a Stripe Connect
    /// event) or else its `data.object.id`. Every ledger write records it,
    /// so `hookline erase` finds each of an account's ledger items on its
    /// own, whatever became of the event.
    pub subject: Option<&'a str>,
    /// The event's `data.object.id` (a thin event's related object),
    /// recorded as the ledger's `objectId` where nothing else set it.
    pub object: Option<&'a str>,
    /// The trace the delivery belongs to (32 hex digits), recorded as the
    /// ledger's `traceId` so `events show` can point at it.
    pub trace: Option<&'a str>,
}

impl<'a> Origin<'a> {
    /// The subject of an event with this `account` and `data.object.id`.
    pub fn new(source: &'a str, account: Option<&'a str>, object: Option<&'a str>) -> Self {
        Self {
            source,
            subject: account.or(object),
            object,
            trace: None,
        }
    }

    /// An origin that names no subject.
    pub fn source(source: &'a str) -> Self {
        Self {
            source,
            subject: None,
            object: None,
            trace: None,
        }
    }

    /// The same origin, in trace `trace`.
    #[must_use]
    pub fn with_trace(self, trace: Option<&'a str>) -> Self {
        Self { trace, ..self }
    }
}

impl Lease<'_> {
    pub fn until(&self) -> i64 {
        self.now
            .saturating_add(i64::try_from(self.secs).unwrap_or(i64::MAX))
    }
}

/// The result of [`Store::claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The caller holds the lease and should process; `attempts` counts this try.
    Started { attempts: u32 },
    /// Already `COMPLETED`: the delivery is a duplicate.
    Completed,
    /// Another worker holds a live lease on it.
    Busy { lease_until: i64 },
}

/// Which write path a try of an event took; it says whether a failed try
/// was already counted in `attempts` by a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WritePath {
    /// Claim, then complete ([`Store::claim`] counted the try).
    Claimed,
    /// The conditional writes of [`Store::apply`], without a claim: the
    /// failure counts the try.
    Apply,
}

/// The result of [`Store::apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub completion: Completion,
    /// The ledger's `attempts` after this try, when the store tells.
    pub attempts: Option<u32>,
    /// Whether the projection met stored state of the same second from
    /// another event, and how that was settled.
    pub tie: Option<Tie>,
}

impl Applied {
    /// A completion that met no tie.
    pub fn plain(completion: Completion, attempts: Option<u32>) -> Self {
        Self {
            completion,
            attempts,
            tie: None,
        }
    }
}

/// How a projection met stored state with the same `created` and another
/// event id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tie {
    /// The ranks differ ([`crate::records::lifecycle_rank`], or state
    /// fetched from Stripe): the higher one is kept.
    Ordered,
    /// Equal ranks: nothing tells which came later; the later write is
    /// kept.
    Unresolved,
}

/// How a projection settles a tie (same `created`, another event id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ties {
    /// By `lastEventRank`: the higher rank wins; equal ranks, the later
    /// write wins ([`Tie::Unresolved`]).
    ByRank,
    /// Write nothing and answer [`Completion::Tied`]: the caller fetches
    /// Stripe's current state and applies that ([`Store::apply`] only).
    Refuse,
}

/// What completing an event writes besides its ledger item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    /// The projection, written unless the stored state is newer: a later
    /// `created`, or the same `created` and a tie `Ties` settles for it.
    Project(&'a Projection, Ties),
    /// Nothing: the event completes `ignored` with this reason. Not final:
    /// the event is applied when it comes again.
    Ignore(&'a str),
    /// Every routed destination took the event: these destinations' states
    /// are written with the completion (one write), which is `applied`.
    Delivered(&'a [(String, DestinationState)]),
}

impl<'a> Change<'a> {
    /// A projection whose ties are settled by rank.
    pub fn project(projection: &'a Projection) -> Self {
        Self::Project(projection, Ties::ByRank)
    }
    pub fn projection(self) -> Option<&'a Projection> {
        match self {
            Self::Project(p, _) => Some(p),
            Self::Ignore(_) | Self::Delivered(_) => None,
        }
    }
}

/// The idempotency ledger and the projections.
///
/// Two write paths: [`Store::apply`] for an effect that replaces state
/// (written twice, it leaves the same state), and [`Store::claim`] then
/// [`Store::complete`] for one that must happen once.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// The store's kind, as OpenTelemetry's `db.system.name` names it.
    fn system(&self) -> &'static str {
        "other_sql"
    }

    /// Records a processing try: `PROCESSING` with a lease until
    /// `now + secs` held by `owner`, and `attempts + 1`, unless the event is
    /// `COMPLETED` (applied or stale; `ignored` is not final) or `PROCESSING` under another owner's live lease. The same
    /// owner claiming again (a retried call whose answer was lost) gets the
    /// lease back.
    async fn claim(
        &self,
        event_id: &EventId,
        event_type: &str,
        lease: Lease<'_>,
    ) -> Result<Claim, PortError>;

    /// Applies `change` and marks the event `COMPLETED`, in one atomic
    /// commit (the `Effect::Once` path, after [`Store::claim`]): a
    /// projection changes only when it is not older than the stored state
    /// (`lastEventCreated`, then `lastEventRank` within one second; ties are
    /// settled by rank here whatever `change` asks), and never for an event
    /// already `COMPLETED` as applied or stale.
    async fn complete(
        &self,
        event_id: &EventId,
        event_type: &str,
        change: Change<'_>,
        now: i64,
    ) -> Result<Completion, PortError>;

    /// Applies an event whose effect replaces state, without a claim: the
    /// projection (if any) is written only when it is not older than the
    /// stored state (`lastEventCreated`, then the [`Ties`] rule within one
    /// second), else the outcome is `stale`; then the ledger item becomes
    /// `COMPLETED` (attempts + 1) unless it already is, as applied or stale
    /// (`Duplicate`). An `ignored` completion is not final: applying the
    /// event again completes it anew. Each write is a single conditional
    /// item write; applying the same event twice, or two workers racing on
    /// it, leaves the same state and one completion.
    async fn apply(
        &self,
        event_id: &EventId,
        event_type: &str,
        change: Change<'_>,
        origin: Origin<'_>,
        now: i64,
    ) -> Result<Applied, PortError>;

    /// Marks the event `FAILED` with `error`; counts the try in `attempts`
    /// unless a claim did.
    async fn fail(
        &self,
        event_id: &EventId,
        event_type: &str,
        origin: Origin<'_>,
        error: &str,
        now: i64,
        path: WritePath,
    ) -> Result<(), PortError>;

    /// Records one destination's state for the event (creating the ledger
    /// item, `PROCESSING`, if there is none). A `COMPLETED` event keeps its
    /// status; the destination's state is written regardless, since a
    /// destination may still be owed an event the projections applied.
    async fn record_destination(
        &self,
        event_id: &EventId,
        event_type: &str,
        origin: Origin<'_>,
        destination: &str,
        state: &DestinationState,
        now: i64,
    ) -> Result<(), PortError>;

    /// The ledger item of an event, with its destinations' states.
    async fn event(&self, event_id: &str) -> Result<Option<EventRecord>, PortError>;

    /// Only the destinations' states of an event (what the worker reads
    /// before delivering); by default from [`Store::event`].
    async fn destinations(
        &self,
        event_id: &str,
    ) -> Result<BTreeMap<String, DestinationState>, PortError> {
        Ok(self
            .event(event_id)
            .await?
            .map(|r| r.destinations)
            .unwrap_or_default())
    }

    /// An objects-table item (`pi_`, `po_`, `du_`, `dp_`) or provider item (`acct_`).
    async fn item(&self, id: &str) -> Result<Option<StoredItem>, PortError>;

    /// Cheap reachability check.
    async fn ping(&self) -> Result<(), PortError>;

    /// What the store can tell of the recent past (the console's rates):
    /// completions since `since` (Unix seconds) by outcome, those of them
    /// that took more than one try, and the events `FAILED` now. `None`
    /// where the store cannot tell cheaply (DynamoDB would need a scan).
    async fn recent(&self, since: i64) -> Result<Option<RecentActivity>, PortError> {
        let _ = since;
        Ok(None)
    }

    /// Removes, in one bounded pass, what the backend's own retention
    /// would have removed by `now` (Unix seconds): ledger items past
    /// `expiresAt`, dead-lettered messages past the DLQ's retention.
    /// Returns how many records went. DynamoDB TTL and SQS retention do
    /// this by themselves, so the default does nothing.
    async fn housekeep(&self, now: i64) -> Result<u64, PortError> {
        let _ = now;
        Ok(0)
    }

    /// The keys of every item the store holds of `subject` (see
    /// [`Subject`]), found through the tables' indexes, never a scan.
    async fn holdings(&self, subject: &Subject) -> Result<Holdings, PortError>;

    /// The connected accounts whose provider item says they deauthorized
    /// the platform at or before `before` (Unix seconds), through an index.
    async fn deauthorized(&self, before: i64) -> Result<Vec<String>, PortError>;

    /// Deletes the items named in `holdings`; returns those that were
    /// there. Deleting what is not there is no error (a second erase
    /// removes nothing).
    async fn erase(&self, holdings: &Holdings) -> Result<Holdings, PortError>;
}

/// Whose data `hookline erase` removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A connected account: its provider item, the objects whose `account`
    /// it is, and the ledger items of its events.
    Account(String),
    /// One object (`pi_`, `po_`, `du_`, `acct_`, …): its item and the
    /// ledger items of the events that projected it.
    Object(String),
    /// One event: its ledger item.
    Event(String),
}

impl Subject {
    /// Whether an event (its id, its `account`, its `data.object.id`)
    /// concerns this subject.
    pub fn concerns(&self, event_id: &str, account: Option<&str>, object: Option<&str>) -> bool {
        match self {
            Self::Account(a) => account == Some(a.as_str()) || object == Some(a.as_str()),
            Self::Object(o) => object == Some(o.as_str()),
            Self::Event(e) => event_id == e,
        }
    }

    /// What the subject is called on the command line and in receipts.
    pub fn describe(&self) -> String {
        match self {
            Self::Account(a) => format!("account {a}"),
            Self::Object(o) => format!("object {o}"),
            Self::Event(e) => format!("event {e}"),
        }
    }
}

/// The keys of what a store holds of a [`Subject`], by table.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Holdings {
    /// Provider items (`stripeAccountId`).
    pub providers: Vec<String>,
    /// Objects items (`objectId`).
    pub objects: Vec<String>,
    /// Ledger items (`eventId`), with their destinations' states.
    pub events: Vec<String>,
}

impl Holdings {
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty() && self.objects.is_empty() && self.events.is_empty()
    }

    /// Sorts each list and drops repeats, so that two finds compare.
    pub fn normalise(&mut self) {
        for list in [&mut self.providers, &mut self.objects, &mut self.events] {
            list.sort();
            list.dedup();
        }
    }
}
