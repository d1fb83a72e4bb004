//! Stored records, with the attribute names of the contract's "Stored records".
//!
//! Both backends store these shapes: DynamoDB as items, the embedded backend
//! as rows whose JSON uses the same attribute names, so `events show --json`
//! and `objects show --json` print the same thing on either.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How long a ledger item is kept (DynamoDB TTL on `expiresAt`): longer than
/// the 14-day maximum retention of an SQS dead-letter queue, so any replay
/// still finds the ledger.
pub const LEDGER_TTL_SECS: i64 = 30 * 24 * 3600;

/// `status` of a ledger item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventStatus {
    Processing,
    Completed,
    Failed,
}

impl EventStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Processing => "PROCESSING",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "PROCESSING" => Some(Self::Processing),
            "COMPLETED" => Some(Self::Completed),
            "FAILED" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// `outcome` of a completed event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The projection changed.
    Applied,
    /// An older event than the stored state: nothing changed.
    Stale,
    /// No enabled handler for the type.
    Ignored,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Stale => "stale",
            Self::Ignored => "ignored",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "applied" => Some(Self::Applied),
            "stale" => Some(Self::Stale),
            "ignored" => Some(Self::Ignored),
            _ => None,
        }
    }
}

/// How a delivery completed: what [`crate::ports::Store::complete`] and
/// `apply` did, and the worker's `Decision::Done`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// This call completed the event with this outcome.
    Completed(Outcome),
    /// The event was already `COMPLETED` (applied or stale): nothing
    /// changed. An `ignored` completion is not final and never answers this.
    Duplicate,
    /// Nothing written, the event not completed: the stored state has the
    /// same `created` and another event id, and the caller asked to resolve
    /// such ties itself ([`crate::ports::Ties::Refuse`]).
    Tied,
}

impl Completion {
    /// The log and metric label: the outcome, or `duplicate`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Completed(o) => o.as_str(),
            Self::Duplicate => "duplicate",
            Self::Tied => "tied",
        }
    }
}

/// `lastEventRank` of state fetched from Stripe's API: it is Stripe's
/// current state, later than any event of the same second.
pub const RANK_CURRENT: u8 = 9;

/// Orders two states of one object from the same second by the object's
/// own life cycle: a status that can only come later ranks higher. 0 where
/// the object has no life cycle (accounts) or the status is unknown.
pub fn lifecycle_rank(object_type: ObjectType, status: Option<&str>) -> u8 {
    let Some(status) = status else { return 0 };
    match object_type {
        // requires_payment_method/_confirmation/_action → processing →
        // requires_capture → succeeded or canceled.
        ObjectType::PaymentIntent => match status {
            "requires_capture" => 3,
            s if s.starts_with("requires_") => 1,
            "processing" => 2,
            "succeeded" | "canceled" => 4,
            _ => 0,
        },
        // pending → in_transit → paid, failed or canceled.
        ObjectType::Payout => match status {
            "pending" => 1,
            "in_transit" => 2,
            "paid" | "failed" | "canceled" => 3,
            _ => 0,
        },
        // (warning_)needs_response → (warning_)under_review → won, lost,
        // warning_closed or prevented.
        ObjectType::Dispute => match status {
            "needs_response" | "warning_needs_response" => 1,
            "under_review" | "warning_under_review" => 2,
            "won" | "lost" | "warning_closed" | "prevented" => 3,
            _ => 0,
        },
    }
}

/// A ledger item (events table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRecord {
    pub event_id: String,
    pub status: EventStatus,
    pub event_type: String,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    pub expires_at: i64,
    /// Unix seconds until which a `PROCESSING` item is leased to a worker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<i64>,
    /// How the event arrived when it was last processed (`webhook`,
    /// `eventbridge`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The objects- or provider-table item the event projected (or, when
    /// stale, would have).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_id: Option<String>,
    /// Why an `ignored` event was not applied (type not enabled, livemode,
    /// no handler, a destination ping).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The trace of the delivery that last processed the event (32 hex
    /// digits), when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Each routed destination's state for this event (not the built-in
    /// projections of an event routed only there).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub destinations: BTreeMap<String, DestinationState>,
}

/// One destination's state for one event: whether it took the event, the
/// tries, the last failure, and when failures began (the retry horizon
/// counts from there).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationState {
    pub delivered: bool,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Unix seconds of the first failed try since the destination last
    /// took the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_failed_at: Option<i64>,
    /// Unix seconds of the last try.
    pub updated_at: i64,
    /// Set by `events redeliver`: this redelivery's id, which the
    /// destination's deliveries carry until it takes the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redelivery: Option<String>,
}

impl DestinationState {
    /// The state after a successful try at `now`.
    #[must_use]
    pub fn delivered(&self, now: i64) -> Self {
        Self {
            delivered: true,
            attempts: self.attempts + 1,
            last_error: None,
            first_failed_at: None,
            updated_at: now,
            redelivery: self.redelivery.clone(),
        }
    }

    /// The state after a failed try at `now`.
    #[must_use]
    pub fn failed(&self, error: &str, now: i64) -> Self {
        Self {
            delivered: false,
            attempts: self.attempts + 1,
            last_error: Some(error.to_owned()),
            first_failed_at: Some(self.first_failed_at.unwrap_or(now)),
            updated_at: now,
            redelivery: self.redelivery.clone(),
        }
    }
}

/// `objectType` of an objects-table item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectType {
    PaymentIntent,
    Payout,
    Dispute,
}

/// An objects-table item: the latest state of a payment intent, payout or dispute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRecord {
    pub object_id: String,
    pub object_type: ObjectType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    pub last_event_id: String,
    pub last_event_type: String,
    pub last_event_created: i64,
    /// Orders states of the same second: [`lifecycle_rank`] of the status,
    /// or [`RANK_CURRENT`] for state fetched from Stripe.
    #[serde(default)]
    pub last_event_rank: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub charge: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_intent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arrival_date: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_payment_error: Option<String>,
}

/// A provider-table item: a connected account's onboarding state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderRecord {
    pub stripe_account_id: String,
    pub charges_enabled: bool,
    pub payouts_enabled: bool,
    pub details_submitted: bool,
    pub requirements_currently_due: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    pub last_event_id: String,
    pub last_event_created: i64,
    /// 0 for an event's own state (accounts have no life cycle), or
    /// [`RANK_CURRENT`] for state fetched from Stripe.
    #[serde(default)]
    pub last_event_rank: u8,
    /// When the account disconnected from the platform
    /// (`account.application.deauthorized`'s `created`); the worker erases
    /// the account's data `ERASE_ON_DEAUTHORIZE_DAYS` after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deauthorized_at: Option<i64>,
}

/// `disabledReason` of an account that deauthorized the platform.
pub const DEAUTHORIZED_REASON: &str = "platform.deauthorized";

/// Which table holds the item of an id: connected accounts (`acct_…`) in
/// the provider table, payment intents, payouts and disputes in the objects
/// table. The one routing rule; the adapters and the CLI ask it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemTable {
    Objects,
    Provider,
}

impl ItemTable {
    pub fn for_id(id: &str) -> Self {
        if id.starts_with("acct_") {
            Self::Provider
        } else {
            Self::Objects
        }
    }
    /// The table a projection writes.
    pub fn of(p: &Projection) -> Self {
        match p {
            Projection::Object(_) => Self::Objects,
            Projection::Provider(_) => Self::Provider,
        }
    }
    /// The key attribute's name (`objectId`, `stripeAccountId`).
    pub fn key_attribute(self) -> &'static str {
        match self {
            Self::Objects => "objectId",
            Self::Provider => "stripeAccountId",
        }
    }
}

/// The write a handler asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Projection {
    Object(ObjectRecord),
    Provider(ProviderRecord),
}

impl Projection {
    /// The item's key (`objectId` or `stripeAccountId`).
    pub fn key(&self) -> &str {
        match self {
            Self::Object(o) => &o.object_id,
            Self::Provider(p) => &p.stripe_account_id,
        }
    }
    /// The event time that orders writes to this item.
    pub fn event_created(&self) -> i64 {
        match self {
            Self::Object(o) => o.last_event_created,
            Self::Provider(p) => p.last_event_created,
        }
    }
    /// What orders writes of the same second (see [`lifecycle_rank`]).
    pub fn rank(&self) -> u8 {
        match self {
            Self::Object(o) => o.last_event_rank,
            Self::Provider(p) => p.last_event_rank,
        }
    }
    /// The same state marked as Stripe's current one ([`RANK_CURRENT`]).
    pub fn as_current(mut self) -> Self {
        match &mut self {
            Self::Object(o) => o.last_event_rank = RANK_CURRENT,
            Self::Provider(p) => p.last_event_rank = RANK_CURRENT,
        }
        self
    }
    /// The item as a JSON object with the contract's attribute names.
    pub fn to_item(&self) -> serde_json::Map<String, serde_json::Value> {
        let value = match self {
            Self::Object(o) => serde_json::to_value(o),
            Self::Provider(p) => serde_json::to_value(p),
        };
        match value {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        }
    }
}

/// An item read back from the objects or provider table, as attribute map.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredItem(pub serde_json::Map<String, serde_json::Value>);
