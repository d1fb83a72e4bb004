//! Sample Stripe events, one per default event type (see `testdata/README.md`
//! for where they come from), built into the binary for `dev send`.

/// (event type, pretty-printed event as Stripe sends it)
pub const EVENTS: &[(&str, &str)] = &[
    (
        "payment_intent.succeeded",
        include_str!("../../../testdata/stripe-events/payment_intent.succeeded.json"),
    ),
    (
        "payment_intent.payment_failed",
        include_str!("../../../testdata/stripe-events/payment_intent.payment_failed.json"),
    ),
    (
        "account.updated",
        include_str!("../../../testdata/stripe-events/account.updated.json"),
    ),
    (
        "charge.dispute.created",
        include_str!("../../../testdata/stripe-events/charge.dispute.created.json"),
    ),
    (
        "payout.created",
        include_str!("../../../testdata/stripe-events/payout.created.json"),
    ),
    (
        "payout.updated",
        include_str!("../../../testdata/stripe-events/payout.updated.json"),
    ),
];

/// The fixture for `event_type`.
pub fn event(event_type: &str) -> Option<&'static str> {
    EVENTS
        .iter()
        .find(|(t, _)| *t == event_type)
        .map(|(_, e)| *e)
}

/// A copy of the fixture with a fresh event id and `created`, pretty-printed
/// as Stripe sends events.
pub fn fresh_event(event_type: &str, created: i64) -> Option<String> {
    let mut value: serde_json::Value = serde_json::from_str(event(event_type)?).ok()?;
    let id = format!("evt_dev_{}", uuid::Uuid::new_v4().simple());
    value["id"] = serde_json::Value::String(id);
    value["created"] = serde_json::Value::from(created);
    serde_json::to_string_pretty(&value).ok()
}
