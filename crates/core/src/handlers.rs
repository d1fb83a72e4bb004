//! Event handlers: plain functions from a raw event to the write it wants.
//!
//! Adding an event type is one function and one row in [`HANDLERS`] (and one
//! row in the README's table). Handlers do no I/O; the worker commits what
//! they return through the store port, by the write path the handler's
//! [`Effect`] allows.

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::records::{lifecycle_rank, ObjectRecord, ObjectType, Projection, ProviderRecord};

/// Why an event cannot be handled. Always permanent: the same bytes will
/// fail the same way on every retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{event_type} event cannot be handled: {reason}")]
pub struct HandlerError {
    pub event_type: String,
    pub reason: String,
}

/// A handler: raw event body to the projection it writes.
pub type Handler = fn(&[u8]) -> Result<Projection, HandlerError>;

/// How a handler's effect may be written; each handler declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// The projection replaces state and is guarded by the stored
    /// (`lastEventCreated`, `lastEventId`): writing it twice, or racing
    /// another worker on it, leaves the same state. Written as two
    /// conditional single-item writes (projection, then ledger), no claim.
    Replace,
    /// Not idempotent (a counter, a side effect outside the projection):
    /// claimed first, then ledger and projection in one transaction, so it
    /// happens once.
    Once,
}

/// Event type to handler and its effect. The six default event types.
pub const HANDLERS: &[(&str, Handler, Effect)] = &[
    ("payment_intent.succeeded", payment_intent, Effect::Replace),
    (
        "payment_intent.payment_failed",
        payment_intent,
        Effect::Replace,
    ),
    ("charge.dispute.created", dispute, Effect::Replace),
    ("payout.created", payout, Effect::Replace),
    ("payout.updated", payout, Effect::Replace),
    ("account.updated", account, Effect::Replace),
    (
        "account.application.deauthorized",
        deauthorized,
        Effect::Replace,
    ),
];

/// Looks a handler up by event type. The worker's `Processor` holds one
/// (today always [`registered`]); it is the seam where a deployment's own
/// handlers will plug in.
pub type Registry = fn(&str) -> Option<(Handler, Effect)>;

/// The built-in registry: [`HANDLERS`].
pub fn registered(event_type: &str) -> Option<(Handler, Effect)> {
    HANDLERS
        .iter()
        .find(|(t, _, _)| *t == event_type)
        .map(|(_, h, e)| (*h, *e))
}

#[derive(Deserialize)]
struct Event<T> {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    created: i64,
    #[serde(default)]
    account: Option<String>,
    data: Data<T>,
}

#[derive(Deserialize)]
struct Data<T> {
    object: T,
}

/// A field Stripe may send as `null` or leave out: either reads as the
/// type's default (`None`, an empty list, `false`). Only `id`, `type`,
/// `created` and the object's `id` are required (see docs/contract.md).
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A Stripe field that is an id or, when expanded, an object with an id.
#[derive(Deserialize)]
#[serde(untagged)]
enum Expandable {
    Id(String),
    Object { id: String },
}

impl Expandable {
    fn into_id(self) -> String {
        match self {
            Self::Id(id) | Self::Object { id } => id,
        }
    }
}

fn parse<T: DeserializeOwned>(raw: &[u8]) -> Result<Event<T>, HandlerError> {
    serde_json::from_slice(raw).map_err(|e| {
        let event_type = serde_json::from_slice::<serde_json::Value>(raw)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
            .unwrap_or_else(|| "unknown".to_owned());
        HandlerError {
            event_type,
            reason: e.to_string(),
        }
    })
}

/// The fields every objects-table item has, read from the object: its id
/// (required) and the status, amount and currency (absent when null).
#[derive(Deserialize, Default)]
struct Common {
    id: String,
    #[serde(default, deserialize_with = "nullable")]
    status: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    amount: Option<i64>,
    #[serde(default, deserialize_with = "nullable")]
    currency: Option<String>,
}

impl<T> Event<T> {
    /// An objects-table item of `object_type` with the event's own fields
    /// and the object's common ones filled in, the type-specific ones empty;
    /// returns the object too.
    fn object_record(
        self,
        object_type: ObjectType,
        common: impl FnOnce(&mut T) -> Common,
    ) -> (ObjectRecord, T) {
        let mut object = self.data.object;
        let c = common(&mut object);
        let rank = lifecycle_rank(object_type, c.status.as_deref());
        let record = ObjectRecord {
            object_id: c.id,
            object_type,
            status: c.status,
            amount: c.amount,
            currency: c.currency,
            account: self.account,
            last_event_id: self.id,
            last_event_type: self.event_type,
            last_event_created: self.created,
            last_event_rank: rank,
            reason: None,
            charge: None,
            payment_intent: None,
            arrival_date: None,
            last_payment_error: None,
        };
        (record, object)
    }
}

#[derive(Deserialize)]
struct PaymentIntent {
    #[serde(flatten)]
    common: Common,
    #[serde(default, deserialize_with = "nullable")]
    last_payment_error: Option<PaymentError>,
}

#[derive(Deserialize, Default)]
struct PaymentError {
    #[serde(default, deserialize_with = "nullable")]
    message: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    code: Option<String>,
}

fn payment_intent(raw: &[u8]) -> Result<Projection, HandlerError> {
    let e: Event<PaymentIntent> = parse(raw)?;
    let failed = e.event_type == "payment_intent.payment_failed";
    let (mut record, pi) = e.object_record(ObjectType::PaymentIntent, |pi| {
        std::mem::take(&mut pi.common)
    });
    if failed {
        record.last_payment_error = pi
            .last_payment_error
            .and_then(|err| err.message.or(err.code));
    }
    Ok(Projection::Object(record))
}

#[derive(Deserialize)]
struct Dispute {
    #[serde(flatten)]
    common: Common,
    #[serde(default, deserialize_with = "nullable")]
    reason: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    charge: Option<Expandable>,
    #[serde(default, deserialize_with = "nullable")]
    payment_intent: Option<Expandable>,
}

impl Default for Expandable {
    fn default() -> Self {
        Self::Id(String::new())
    }
}

fn dispute(raw: &[u8]) -> Result<Projection, HandlerError> {
    let e: Event<Dispute> = parse(raw)?;
    let (mut record, d) = e.object_record(ObjectType::Dispute, |d| std::mem::take(&mut d.common));
    record.reason = d.reason;
    record.charge = d.charge.map(Expandable::into_id);
    record.payment_intent = d.payment_intent.map(Expandable::into_id);
    Ok(Projection::Object(record))
}

#[derive(Deserialize)]
struct Payout {
    #[serde(flatten)]
    common: Common,
    #[serde(default, deserialize_with = "nullable")]
    arrival_date: Option<i64>,
}

fn payout(raw: &[u8]) -> Result<Projection, HandlerError> {
    let e: Event<Payout> = parse(raw)?;
    let (mut record, p) = e.object_record(ObjectType::Payout, |p| std::mem::take(&mut p.common));
    record.arrival_date = p.arrival_date;
    Ok(Projection::Object(record))
}

#[derive(Deserialize)]
struct Account {
    id: String,
    #[serde(default, deserialize_with = "nullable")]
    charges_enabled: bool,
    #[serde(default, deserialize_with = "nullable")]
    payouts_enabled: bool,
    #[serde(default, deserialize_with = "nullable")]
    details_submitted: bool,
    #[serde(default, deserialize_with = "nullable")]
    requirements: Option<Requirements>,
}

#[derive(Deserialize, Default)]
struct Requirements {
    #[serde(default, deserialize_with = "nullable")]
    currently_due: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    disabled_reason: Option<String>,
}

fn account(raw: &[u8]) -> Result<Projection, HandlerError> {
    let e: Event<Account> = parse(raw)?;
    let a = e.data.object;
    let req = a.requirements.unwrap_or_default();
    Ok(Projection::Provider(ProviderRecord {
        stripe_account_id: a.id,
        charges_enabled: a.charges_enabled,
        payouts_enabled: a.payouts_enabled,
        details_submitted: a.details_submitted,
        requirements_currently_due: req.currently_due,
        disabled_reason: req.disabled_reason,
        last_event_id: e.id,
        last_event_created: e.created,
        last_event_rank: 0,
        deauthorized_at: None,
    }))
}

/// A connected account disconnected from the platform: its provider item
/// records when, and that the platform can no longer charge or pay out on
/// it. The account is the event's `account` (the object is the
/// application), so that field is required here.
fn deauthorized(raw: &[u8]) -> Result<Projection, HandlerError> {
    #[derive(Deserialize)]
    struct Application {}
    let e: Event<Application> = parse(raw)?;
    let account = e.account.ok_or_else(|| HandlerError {
        event_type: e.event_type.clone(),
        reason: "missing field `account` (the connected account that left)".to_owned(),
    })?;
    Ok(Projection::Provider(ProviderRecord {
        stripe_account_id: account,
        charges_enabled: false,
        payouts_enabled: false,
        details_submitted: false,
        requirements_currently_due: Vec::new(),
        disabled_reason: Some(crate::records::DEAUTHORIZED_REASON.to_owned()),
        last_event_id: e.id,
        last_event_created: e.created,
        last_event_rank: 0,
        deauthorized_at: Some(e.created),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../../testdata/stripe-events/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(path).expect("fixture exists")
    }

    fn object(p: Projection) -> ObjectRecord {
        match p {
            Projection::Object(o) => o,
            Projection::Provider(_) => panic!("expected an object"),
        }
    }

    #[test]
    fn payment_intent_succeeded() {
        let o = object(payment_intent(&fixture("payment_intent.succeeded")).expect("handles"));
        assert_eq!(o.object_id, "pi_3QhLpWExampleIntent1");
        assert_eq!(o.object_type, ObjectType::PaymentIntent);
        assert_eq!(o.status.as_deref(), Some("succeeded"));
        assert_eq!(o.amount, Some(4200));
        assert_eq!(o.currency.as_deref(), Some("usd"));
        assert_eq!(o.last_event_created, 1732780805);
        assert_eq!(o.last_payment_error, None);
    }

    #[test]
    fn payment_intent_failed_keeps_the_error_message() {
        let o = object(payment_intent(&fixture("payment_intent.payment_failed")).expect("handles"));
        assert_eq!(o.status.as_deref(), Some("requires_payment_method"));
        assert!(o
            .last_payment_error
            .as_deref()
            .is_some_and(|m| !m.is_empty()));
    }

    #[test]
    fn dispute_links_charge_and_intent() {
        let o = object(dispute(&fixture("charge.dispute.created")).expect("handles"));
        assert_eq!(o.object_id, "du_1QhLrBExampleDispute");
        assert_eq!(o.reason.as_deref(), Some("product_not_received"));
        assert_eq!(o.charge.as_deref(), Some("ch_3QhLpWExampleCharge1"));
        assert_eq!(o.payment_intent.as_deref(), Some("pi_3QhLpWExampleIntent1"));
    }

    #[test]
    fn connect_payout_carries_the_account() {
        let o = object(payout(&fixture("payout.updated")).expect("handles"));
        assert_eq!(o.account.as_deref(), Some("acct_1QhLnKExample0001"));
        assert_eq!(o.status.as_deref(), Some("paid"));
        assert_eq!(o.arrival_date, Some(1732953600));
    }

    #[test]
    fn account_updated_projects_the_provider() {
        let p = account(&fixture("account.updated")).expect("handles");
        let Projection::Provider(p) = p else {
            panic!("expected a provider")
        };
        assert_eq!(p.stripe_account_id, "acct_1QhLnKExample0001");
        assert!(p.charges_enabled && p.details_submitted && !p.payouts_enabled);
        assert_eq!(
            p.requirements_currently_due,
            vec!["external_account", "individual.verification.document"]
        );
        assert_eq!(p.disabled_reason.as_deref(), Some("requirements.past_due"));
    }

    #[test]
    fn a_missing_object_id_is_a_named_permanent_error() {
        let err = payout(br#"{"id":"evt_1","type":"payout.created","created":1,"data":{"object":{"status":"paid"}}}"#)
            .expect_err("fails");
        assert_eq!(err.event_type, "payout.created");
        assert!(err.reason.contains("`id`"), "{}", err.reason);
        let err =
            payout(br#"{"id":"evt_1","type":"payout.created","data":{"object":{"id":"po_1"}}}"#)
                .expect_err("fails");
        assert!(err.reason.contains("created"), "{}", err.reason);
    }

    #[test]
    fn optional_fields_may_be_missing() {
        let o = object(
            payout(br#"{"id":"evt_1","type":"payout.created","created":1,"data":{"object":{"id":"po_1"}}}"#)
                .expect("handles"),
        );
        assert_eq!(o.object_id, "po_1");
        assert_eq!(
            (o.status, o.amount, o.currency, o.arrival_date),
            (None, None, None, None)
        );
    }

    #[test]
    fn a_deauthorization_marks_the_connected_account() {
        let raw = fixture("account.application.deauthorized");
        let Projection::Provider(p) = deauthorized(&raw).expect("handles") else {
            panic!("a provider item");
        };
        assert_eq!(p.stripe_account_id, "acct_1QhLnKExample0001");
        assert_eq!(p.deauthorized_at, Some(1_732_790_000));
        assert!(!p.charges_enabled && !p.payouts_enabled);
        assert_eq!(p.disabled_reason.as_deref(), Some("platform.deauthorized"));
        // The account is the event's: without it nothing says who left.
        let mut v: serde_json::Value = serde_json::from_slice(&raw).expect("json");
        v.as_object_mut().expect("object").remove("account");
        let err = deauthorized(&serde_json::to_vec(&v).expect("json")).expect_err("refused");
        assert!(err.reason.contains("account"), "{}", err.reason);
    }

    #[test]
    fn every_default_type_has_a_handler_that_replaces_state() {
        for t in crate::settings::DEFAULT_ENABLED_EVENTS {
            assert_eq!(registered(t).map(|(_, e)| e), Some(Effect::Replace), "{t}");
        }
    }

    /// One of Stripe's published fixture objects (testdata/stripe-openapi),
    /// wrapped in Stripe's published event as `event_type`, after `edit`.
    fn openapi_event(
        event_type: &str,
        object: &str,
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> Vec<u8> {
        let read = |name: &str| -> serde_json::Value {
            let path = format!(
                "{}/../../testdata/stripe-openapi/{name}.json",
                env!("CARGO_MANIFEST_DIR")
            );
            serde_json::from_slice(&std::fs::read(path).expect("fixture exists"))
                .expect("fixture is JSON")
        };
        let mut event = read("event");
        event["type"] = event_type.into();
        event["data"]["object"] = read(object);
        edit(&mut event["data"]["object"]);
        serde_json::to_vec(&event).expect("serialises")
    }

    /// (event type, fixture object, nullable fields the handler reads, as
    /// JSON pointers into the object).
    const STRIPE_SHAPES: &[(&str, &str, &[&str])] = &[
        (
            "payment_intent.succeeded",
            "payment_intent",
            &["/last_payment_error"],
        ),
        (
            "payment_intent.payment_failed",
            "payment_intent",
            &["/last_payment_error"],
        ),
        ("charge.dispute.created", "dispute", &["/payment_intent"]),
        ("payout.created", "payout", &["/destination"]),
        ("payout.updated", "payout", &["/destination"]),
        (
            "account.updated",
            "account",
            &[
                "/requirements",
                "/requirements/currently_due",
                "/requirements/disabled_reason",
                "/business_type",
            ],
        ),
    ];

    #[test]
    fn stripe_published_objects_apply_for_every_type() {
        for (event_type, object, _) in STRIPE_SHAPES {
            let raw = openapi_event(event_type, object, |_| {});
            let (handle, _) = registered(event_type).expect("handler");
            let p = handle(&raw).unwrap_or_else(|e| panic!("{event_type}: {e}"));
            assert_eq!(p.event_created(), 1234567890, "{event_type}");
            match p {
                Projection::Object(o) => {
                    let prefix = match *object {
                        "payment_intent" => "pi_",
                        "dispute" => "dp_",
                        _ => "po_",
                    };
                    assert!(o.object_id.starts_with(prefix), "{event_type}");
                    assert!(o.status.is_some() && o.amount.is_some() && o.currency.is_some());
                }
                Projection::Provider(a) => {
                    assert_eq!(a.stripe_account_id, "acct_1MoRdlLgUG5tbmjc");
                    assert_eq!(a.requirements_currently_due.len(), 6);
                    assert_eq!(a.disabled_reason.as_deref(), Some("requirements.past_due"));
                }
            }
        }
        let d = object(
            dispute(&openapi_event("charge.dispute.created", "dispute", |_| {})).expect("handles"),
        );
        assert_eq!(d.object_id, "dp_1MoqxHLgUG5tbmjcom3Mmh0p");
        assert_eq!(d.charge.as_deref(), Some("ch_1MoS30LgUG5tbmjcjfsQqpHI"));
        assert_eq!(d.payment_intent, None);
        assert_eq!(d.reason.as_deref(), Some("general"));
        let p =
            object(payout(&openapi_event("payout.updated", "payout", |_| {})).expect("handles"));
        assert_eq!(p.arrival_date, Some(1234567890));
        assert_eq!(p.status.as_deref(), Some("in_transit"));
    }

    #[test]
    fn every_nullable_field_may_be_null() {
        for (event_type, object, nullable) in STRIPE_SHAPES {
            for pointer in *nullable {
                let raw = openapi_event(event_type, object, |o| {
                    *o.pointer_mut(pointer).expect("field exists") = serde_json::Value::Null;
                });
                let (handle, _) = registered(event_type).expect("handler");
                let p = handle(&raw).unwrap_or_else(|e| panic!("{event_type} {pointer}=null: {e}"));
                if let Projection::Provider(a) = p {
                    match *pointer {
                        "/requirements" | "/requirements/currently_due" => {
                            assert!(a.requirements_currently_due.is_empty())
                        }
                        "/requirements/disabled_reason" => assert_eq!(a.disabled_reason, None),
                        _ => {}
                    }
                }
            }
        }
    }

    #[test]
    fn a_failed_intent_with_an_error_keeps_its_message_and_unknown_fields_pass() {
        let raw = openapi_event("payment_intent.payment_failed", "payment_intent", |o| {
            o["status"] = "requires_payment_method".into();
            o["last_payment_error"] = serde_json::json!({
                "code": "card_declined", "message": null, "type": "card_error",
                "a_field_stripe_adds_later": {"nested": [1, 2]}
            });
            o["another_new_field"] = serde_json::json!(true);
        });
        let o = object(payment_intent(&raw).expect("handles"));
        assert_eq!(o.last_payment_error.as_deref(), Some("card_declined"));
    }
}
