//! The ports of the queue and the store: [`Queue`], [`Store`], and the
//! optional capability [`NativeRedrive`] (SQS's own DLQ redrive); the
//! fourth port, `SecretSource`, lives in [`crate::secrets`].
//!
//! Adapters (embedded SQLite, AWS) implement them; the ingress, the worker
//! and the CLI hold them as `Arc<dyn Queue>` / `Arc<dyn Store>` and never
//! know which backend is behind. Every error says what it means for the
//! event ([`ErrorKind`]).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::envelope::EventId;
use crate::message::OutboundMessage;
use crate::records::{Completion, DestinationState, EventRecord, Projection, StoredItem};

/// What a port failure means for the event behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Worth retrying soon: throttling, timeout, 5xx, unreachable, lock contention.
    Transient,
    /// An operator must fix the setup (a missing table or queue, access
    /// denied, a KMS key the role cannot use, missing or expired
    /// credentials). The event is fine: the worker stops receiving until
    /// the setup is fixed (its circuit breaker), and never dead-letters an
    /// event for it.
    Configuration,
    /// Retrying cannot help: this very request or item is invalid.
    Permanent,
}

impl ErrorKind {
    /// Short label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Configuration => "configuration",
            Self::Permanent => "permanent",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A queue or store failure, classified once, where it happens: its kind,
/// what was being done (`UpdateItem on table hookline-events: …`), and the
/// underlying error when there is one.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct PortError {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
}

/// Two errors are equal when they say the same (kind and message); the
/// source is not compared.
impl PartialEq for PortError {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.message == other.message
    }
}

impl Eq for PortError {}

impl PortError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Transient, message)
    }
    pub fn configuration(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Configuration, message)
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Permanent, message)
    }
    /// Keeps the underlying error as this one's source.
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(std::sync::Arc::new(source));
        self
    }
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    /// What failed, without the kind.
    pub fn message(&self) -> &str {
        &self.message
    }
    /// Worth a quick in-process retry (a blip).
    pub fn is_retryable(&self) -> bool {
        self.kind == ErrorKind::Transient
    }
    /// The setup is wrong, not the event.
    pub fn is_configuration(&self) -> bool {
        self.kind == ErrorKind::Configuration
    }
}

/// The limits a backend puts on one batched send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_entries: usize,
    pub max_bytes: usize,
}

/// A message handed out by [`Queue::receive`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub message_id: String,
    /// Opaque handle for delete and visibility changes of this delivery.
    pub receipt: String,
    pub body: Bytes,
    pub attributes: BTreeMap<String, String>,
    /// How many times the message has been received, this time included.
    pub receive_count: u32,
    /// When the message was first sent, Unix milliseconds.
    pub sent_at_ms: i64,
    /// The FIFO message group, on a queue that keeps groups in order (SQS
    /// FIFO); `None` elsewhere. The worker processes one group's messages
    /// of a receive in order, one at a time.
    pub group_id: Option<String>,
}

impl Delivery {
    /// The message as it is sent again (replay, dead-lettering): same body
    /// and attributes, the original FIFO group (`data.object.id`, else the
    /// event id), and a deduplication id of its own, so that SQS FIFO never
    /// takes the copy for the original it saw within its 5-minute window.
    pub fn to_outbound(&self) -> OutboundMessage {
        // EventBridge messages carry no attributes: the event says.
        let envelope = crate::inbound::event_in(&self.body)
            .and_then(|i| crate::envelope::Envelope::parse(i.event))
            .ok();
        let event_id = self
            .attributes
            .get(crate::message::attr::EVENT_ID)
            .cloned()
            .or_else(|| envelope.as_ref().map(|e| e.id.to_string()))
            .unwrap_or_else(|| self.message_id.clone());
        let group_id = envelope
            .and_then(|e| e.object_id)
            .unwrap_or_else(|| event_id.clone());
        OutboundMessage {
            body: self.body.clone(),
            attributes: self.attributes.clone(),
            group_id,
            dedup_id: event_id,
        }
        .as_copy()
    }
}

/// Approximate message counts of one queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueCounts {
    /// Ready to be received.
    pub waiting: u64,
    /// Received and not yet deleted or visible again.
    pub in_flight: u64,
}

/// A durable message queue with visibility timeouts (SQS semantics).
#[async_trait]
pub trait Queue: Send + Sync + std::fmt::Debug {
    /// What one [`Queue::send_batch`] (entries and bytes) or
    /// [`Queue::delete_batch`] (entries) call may carry. Callers batch
    /// through [`crate::coalescer::Coalescer`], which keeps to these; the
    /// adapters split nothing.
    fn batch_limits(&self) -> BatchLimits;

    /// Sends a batch of at most [`Queue::batch_limits`]; returns one result
    /// per message, in order. A message is `Ok` only once the queue durably
    /// holds it.
    async fn send_batch(&self, batch: &[OutboundMessage]) -> Vec<Result<(), PortError>>;

    /// Whether dropping a [`Queue::receive`] future under way leaves every
    /// message where it was. Not so for SQS: a long poll its client gave up
    /// on can still take messages out of sight until their visibility
    /// timeout, so a worker stopping lets it return and hands back what it
    /// brought.
    fn receive_is_cancel_safe(&self) -> bool {
        false
    }

    /// Receives up to `max` messages, waiting up to `wait` for the first,
    /// hiding each for `visibility`.
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Delivery>, PortError>;

    /// Deletes delivered messages, at most [`Queue::batch_limits`]'s
    /// entries; one result per receipt, in order.
    async fn delete_batch(&self, receipts: &[String]) -> Vec<Result<(), PortError>>;

    /// Hides a delivered message for `timeout` from now (zero: visible now).
    async fn set_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), PortError>;

    /// The queue's kind, as OpenTelemetry's `messaging.system` names it.
    fn system(&self) -> &'static str {
        "hookline_embedded"
    }

    /// Approximate counts; also the readiness probe.
    async fn counts(&self) -> Result<QueueCounts, PortError>;

    /// Whether a receive could run now (the worker's circuit breaker
    /// probes with it): by default, whether the counts can be read.
    async fn ping(&self) -> Result<(), PortError> {
        self.counts().await.map(|_| ())
    }

    /// The messages (waiting, in flight or dead-lettered) that `matches`,
    /// removed with `remove`, where the queue can read its messages without
    /// receiving them; `Ok(None)` where it cannot (SQS shows a message only
    /// to a receive, so `hookline erase` receives its DLQ as `dlq list`
    /// does, and leaves its main queue to the worker).
    async fn sweep(
        &self,
        matches: &(dyn for<'d> Fn(&'d Delivery) -> bool + Send + Sync),
        remove: bool,
    ) -> Result<Option<Vec<Delivery>>, PortError> {
        let _ = (matches, remove);
        Ok(None)
    }
}

/// The state of a native redrive task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveState {
    Running,
    Completed,
    Failed,
    Cancelling,
    Cancelled,
}

/// Progress of a native redrive task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoveStatus {
    pub state: MoveState,
    pub moved: u64,
    pub total: Option<u64>,
}

/// A capability some backends have: moving every DLQ message back to the
/// main queue server-side (SQS `StartMessageMoveTask`).
#[async_trait]
pub trait NativeRedrive: Send + Sync + std::fmt::Debug {
    /// The dead-letter queue it moves from, for messages.
    fn source(&self) -> &str;
    /// Starts the move to the main queue, at most `rate` messages a second;
    /// returns the task handle.
    async fn start(&self, rate: Option<u32>) -> Result<String, PortError>;
    /// The most recent task's progress.
    async fn status(&self) -> Result<Option<MoveStatus>, PortError>;
}

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

/// Whether a failed try was already counted in `attempts` by a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tried {
    /// [`Store::claim`] counted it.
    Claimed,
    /// No claim (the [`Store::apply`] path): the failure counts it.
    Unclaimed,
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
        tried: Tried,
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

/// Stripe's API, read only: what a thin event points to, an object's
/// current state, the events list `backfill` reads.
///
/// One implementation (`hookline-stripe`): a pinned `Stripe-Version`, a
/// timeout, a client-side rate limit, and Stripe's errors classified once:
/// 408, 429 and `Stripe-Should-Retry: true`, 5xx and network errors are
/// [`PortError::Transient`] (after the client's own retries); 401 and 403
/// are [`PortError::Configuration`]; 404 and other 4xx are
/// [`PortError::Permanent`], with Stripe's message.
#[async_trait]
pub trait StripeApi: Send + Sync + std::fmt::Debug {
    /// `GET path` (`/v1/accounts/acct_…`, `/v2/core/events/evt_…`) with
    /// `query`, on behalf of the connected account `context` when given
    /// (`Stripe-Context`); the JSON body.
    async fn get(
        &self,
        path: &str,
        query: &[(String, String)],
        context: Option<&str>,
    ) -> Result<Bytes, PortError>;
}

/// One event as a destination receives it.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub event_id: &'a str,
    pub event_type: &'a str,
    /// The Stripe event exactly as Stripe sent it (shared, not copied).
    pub body: &'a Bytes,
    /// This try, counted from 1.
    pub attempt: u32,
    /// Unix seconds when processing began (a destination signs with the
    /// clock at the moment it sends, not with this).
    pub now: i64,
    /// `Some(id)` when an operator asked for this delivery again
    /// (`events redeliver`): the destination sends it under its own
    /// idempotency key and says it is a redelivery.
    pub redelivery: Option<&'a str>,
}

/// Why a destination did not take an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct DeliveryError {
    /// `Transient` is retried within the destination's retry horizon,
    /// `Permanent` dead-letters at once; `Configuration` (its signing
    /// secret cannot be read) is retried like `Transient`.
    pub kind: ErrorKind,
    pub message: String,
    /// The destination asked for this much patience (`Retry-After`).
    pub retry_after: Option<Duration>,
    /// Nothing was sent: every one of the destination's slots was taken, or
    /// its breaker is open. Not a try: the event waits `retry_after` on
    /// the queue, and nothing is recorded.
    pub not_sent: bool,
}

impl DeliveryError {
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Transient,
            message: message.into(),
            retry_after: None,
            not_sent: false,
        }
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Permanent,
            message: message.into(),
            retry_after: None,
            not_sent: false,
        }
    }
    /// Not sent (see [`DeliveryError::not_sent`]); look again after `wait`.
    pub fn not_sent(message: impl Into<String>, wait: Duration) -> Self {
        Self {
            kind: ErrorKind::Transient,
            message: message.into(),
            retry_after: Some(wait),
            not_sent: true,
        }
    }
}

/// Where routed events go: a team's service over HTTP (`hookline-destinations`),
/// or a handler of its own in a custom worker binary
/// (`hookline_worker::handler`); the built-in projections are the store.
#[async_trait]
pub trait Destination: Send + Sync + std::fmt::Debug {
    /// The routes document's name of the destination.
    fn name(&self) -> &str;
    /// How long failures are retried before the event is dead-lettered.
    fn retry_for(&self) -> Duration;
    /// `Once`: the event is claimed (a lease keeps other workers off it)
    /// before this destination is called. An `http` destination is
    /// `Replace`: the receiver dedupes by `Idempotency-Key`.
    fn effect(&self) -> crate::handlers::Effect {
        crate::handlers::Effect::Replace
    }
    /// Hands the event over; `Ok` once the destination took it.
    async fn deliver(&self, event: Outgoing<'_>) -> Result<(), DeliveryError>;
}
