//! Event handlers: plain functions from a raw event to the write it wants.
//!
//! Adding an event type is one function and one row in [`HANDLERS`] (and one
//! row in the README's table). Handlers do no I/O; the worker commits what
//! they return through the store port, atomically with the ledger.

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::records::{ObjectRecord, ObjectType, Projection, ProviderRecord};

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

/// Event type to handler. The six default event types.
pub const HANDLERS: &[(&str, Handler)] = &[
    ("payment_intent.succeeded", payment_intent),
    ("payment_intent.payment_failed", payment_intent),
    ("charge.dispute.created", dispute),
    ("payout.created", payout),
    ("payout.updated", payout),
    ("account.updated", account),
];

/// The handler for an event type, if there is one.
pub fn handler_for(event_type: &str) -> Option<Handler> {
    HANDLERS
        .iter()
        .find(|(t, _)| *t == event_type)
        .map(|(_, h)| *h)
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

/// The fields every objects-table item has, from the event and its object.
struct Common {
    object_id: String,
    status: String,
    amount: i64,
    currency: String,
}

impl<T> Event<T> {
    /// An objects-table item of `object_type` with the event's own fields
    /// filled in and the type-specific ones empty; returns the object too.
    fn object_record(
        self,
        object_type: ObjectType,
        common: impl FnOnce(&T) -> Common,
    ) -> (ObjectRecord, T) {
        let c = common(&self.data.object);
        let record = ObjectRecord {
            object_id: c.object_id,
            object_type,
            status: c.status,
            amount: c.amount,
            currency: c.currency,
            account: self.account,
            last_event_id: self.id,
            last_event_type: self.event_type,
            last_event_created: self.created,
            reason: None,
            charge: None,
            payment_intent: None,
            arrival_date: None,
            last_payment_error: None,
        };
        (record, self.data.object)
    }
}

#[derive(Deserialize)]
struct PaymentIntent {
    id: String,
    status: String,
    amount: i64,
    currency: String,
    #[serde(default)]
    last_payment_error: Option<PaymentError>,
}

#[derive(Deserialize)]
struct PaymentError {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

fn payment_intent(raw: &[u8]) -> Result<Projection, HandlerError> {
    let e: Event<PaymentIntent> = parse(raw)?;
    let failed = e.event_type == "payment_intent.payment_failed";
    let (mut record, pi) = e.object_record(ObjectType::PaymentIntent, |pi| Common {
        object_id: pi.id.clone(),
        status: pi.status.clone(),
        amount: pi.amount,
        currency: pi.currency.clone(),
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
    id: String,
    status: String,
    amount: i64,
    currency: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    charge: Option<Expandable>,
    #[serde(default)]
    payment_intent: Option<Expandable>,
}

fn dispute(raw: &[u8]) -> Result<Projection, HandlerError> {
    let e: Event<Dispute> = parse(raw)?;
    let (mut record, d) = e.object_record(ObjectType::Dispute, |d| Common {
        object_id: d.id.clone(),
        status: d.status.clone(),
        amount: d.amount,
        currency: d.currency.clone(),
    });
    record.reason = d.reason;
    record.charge = d.charge.map(Expandable::into_id);
    record.payment_intent = d.payment_intent.map(Expandable::into_id);
    Ok(Projection::Object(record))
}

#[derive(Deserialize)]
struct Payout {
    id: String,
    status: String,
    amount: i64,
    currency: String,
    #[serde(default)]
    arrival_date: Option<i64>,
}

fn payout(raw: &[u8]) -> Result<Projection, HandlerError> {
    let e: Event<Payout> = parse(raw)?;
    let (mut record, p) = e.object_record(ObjectType::Payout, |p| Common {
        object_id: p.id.clone(),
        status: p.status.clone(),
        amount: p.amount,
        currency: p.currency.clone(),
    });
    record.arrival_date = p.arrival_date;
    Ok(Projection::Object(record))
}

#[derive(Deserialize)]
struct Account {
    id: String,
    #[serde(default)]
    charges_enabled: bool,
    #[serde(default)]
    payouts_enabled: bool,
    #[serde(default)]
    details_submitted: bool,
    #[serde(default)]
    requirements: Option<Requirements>,
}

#[derive(Deserialize, Default)]
struct Requirements {
    #[serde(default)]
    currently_due: Vec<String>,
    #[serde(default)]
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
        assert_eq!(o.status, "succeeded");
        assert_eq!(o.amount, 4200);
        assert_eq!(o.currency, "usd");
        assert_eq!(o.last_event_created, 1732780805);
        assert_eq!(o.last_payment_error, None);
    }

    #[test]
    fn payment_intent_failed_keeps_the_error_message() {
        let o = object(payment_intent(&fixture("payment_intent.payment_failed")).expect("handles"));
        assert_eq!(o.status, "requires_payment_method");
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
        assert_eq!(o.status, "paid");
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
    fn a_missing_field_is_a_named_permanent_error() {
        let err = payout(br#"{"id":"evt_1","type":"payout.created","created":1,"data":{"object":{"id":"po_1"}}}"#)
            .expect_err("fails");
        assert_eq!(err.event_type, "payout.created");
        assert!(err.reason.contains("status"), "{}", err.reason);
    }

    #[test]
    fn every_default_type_has_a_handler() {
        for t in crate::settings::DEFAULT_ENABLED_EVENTS {
            assert!(handler_for(t).is_some(), "{t}");
        }
    }
}
