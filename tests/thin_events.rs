//! Thin (v2) event notifications and the event destination's ping: the
//! ping acknowledged, never dead-lettered; a thin account event applied
//! through a fetch from the Stripe API stand-in. On both backends.

use std::time::Duration;

use bytes::Bytes;
use hookline_core::message::OutboundMessage;
use hookline_core::records::Outcome;
use hookline_testkit::stripe_stub::{merge, published};
use hookline_testkit::StripeStub;
use serde_json::{json, Value};

use crate::bed::Bed;
use crate::helpers::*;
use crate::on_both_backends;
use crate::same_second::stub_env;
use crate::same_second::worker_with;
use crate::stripe_stub::thin;

pub(crate) const THIN_TYPES: &str = "v2.core.account.updated,v2.core.account[requirements].updated";

on_both_backends!(
    a_destination_ping_is_acknowledged_and_never_dead_lettered(5),
    a_thin_account_event_updates_the_provider_through_a_fetch(5),
);

const PING: &str = r#"{"id":"evt_test_65PingExample0001","object":"v2.core.event","type":"v2.core.event_destination.ping","created":"2025-12-02T11:30:00.000Z","livemode":false}"#;

/// An EventBridge envelope as Stripe's event destination sends one.
fn eventbridge(event: &str) -> OutboundMessage {
    let detail: Value = serde_json::from_str(event).expect("json");
    let body = json!({
        "version": "0", "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": detail["type"], "source": "aws.partner/stripe.com/ed_test_61Stub",
        "account": "123456789012", "time": "2025-12-02T11:30:00Z", "region": "us-east-1",
        "resources": [], "detail": detail,
    });
    OutboundMessage {
        body: Bytes::from(body.to_string()),
        attributes: Default::default(),
        group_id: "g".to_owned(),
        dedup_id: uuid::Uuid::new_v4().simple().to_string(),
    }
}

async fn put(bed: &Bed, messages: &[OutboundMessage]) {
    let results = bed.queue.send_batch(messages).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
}

async fn a_destination_ping_is_acknowledged_and_never_dead_lettered(bed: Bed) {
    // The ingress answers a signed ping 200 and enqueues nothing, whatever
    // ENABLED_EVENTS says.
    for enabled in ["*", "payout.created"] {
        let app = spawn_app_with(&["--enabled-events", enabled]).await;
        let (status, body) = app.post_signed(PING).await;
        assert_eq!((status, body.as_str()), (200, r#"{"received":true}"#));
        assert!(app.queued().await.is_empty(), "a ping is not enqueued");
    }
    // Through EventBridge (no ingress saw it), and as a webhook body an
    // older ingress enqueued: both complete `ignored`, none dead-lettered.
    put(&bed, &[eventbridge(PING)]).await;
    let _worker = bed.worker(&[("ENABLED_EVENTS", "*")]);
    let id = "evt_test_65PingExample0001".to_owned();
    assert!(
        eventually(Duration::from_secs(30), || bed
            .all_completed(std::slice::from_ref(&id)))
        .await
    );
    let rec = bed.ledger(&id).await.expect("ledger");
    assert_eq!(rec.outcome, Some(Outcome::Ignored));
    assert_eq!(rec.reason.as_deref(), Some("event destination ping"));
    assert!(eventually(Duration::from_secs(10), || bed.queue_is_empty()).await);
    assert_eq!(bed.dlq_len().await, 0, "never dead-lettered");
}

async fn a_thin_account_event_updates_the_provider_through_a_fetch(bed: Bed) {
    let stub = StripeStub::start().await.expect("stub");
    let mut active: Value = serde_json::from_str(published::V2_ACCOUNT).expect("json");
    merge(
        &mut active,
        json!({
            "id": "acct_test_thinB",
            "configuration": {
                "merchant": {"capabilities": {"card_payments": {"status": "active", "status_details": []}}},
                "recipient": {"capabilities": {"stripe_balance": {"payouts": {"status": "active", "status_details": []}}}},
            },
            "requirements": {"entries": []},
        }),
    );
    stub.put_v2_account(active);
    let mut restricted: Value = serde_json::from_str(published::V2_ACCOUNT).expect("json");
    restricted["id"] = "acct_test_thinA".into();
    stub.put_v2_account(restricted);

    // The ingress accepts a signed thin event and enqueues it.
    let app = spawn_app_with(&["--enabled-events", THIN_TYPES]).await;
    let webhook = thin(
        "evt_test_thin_wh",
        "v2.core.account.updated",
        "acct_test_thinA",
        None,
    );
    assert_eq!(app.post_signed(&webhook).await.0, 200);
    assert_eq!(app.queued().await.len(), 1);

    bed.enqueue(std::slice::from_ref(&webhook)).await;
    let via_eb = thin(
        "evt_test_thin_eb",
        "v2.core.account[requirements].updated",
        "acct_test_thinB",
        Some("acct_test_thinB"),
    );
    put(&bed, &[eventbridge(&via_eb)]).await;
    let mut env = stub_env(&stub);
    env.push(("ENABLED_EVENTS", THIN_TYPES.to_owned()));
    let _worker = worker_with(&bed, &env);
    let ids = ["evt_test_thin_wh", "evt_test_thin_eb"]
        .map(String::from)
        .to_vec();
    assert!(eventually(Duration::from_secs(30), || bed.all_completed(&ids)).await);
    for id in &ids {
        assert_eq!(
            bed.ledger(id).await.expect("ledger").outcome,
            Some(Outcome::Applied),
            "{id}"
        );
    }
    let a = bed.item("acct_test_thinA").await.expect("provider A");
    assert_eq!(
        (
            &a["chargesEnabled"],
            &a["payoutsEnabled"],
            &a["detailsSubmitted"]
        ),
        (&json!(false), &json!(false), &json!(false))
    );
    assert_eq!(a["disabledReason"], "requirements.past_due");
    assert_eq!(
        a["requirementsCurrentlyDue"],
        json!([
            "identity.business_details.registered_name",
            "configuration.recipient.default_outbound_destination"
        ])
    );
    let b = bed.item("acct_test_thinB").await.expect("provider B");
    assert_eq!(
        (
            &b["chargesEnabled"],
            &b["payoutsEnabled"],
            &b["detailsSubmitted"]
        ),
        (&json!(true), &json!(true), &json!(true))
    );
    assert_eq!(b["lastEventId"], "evt_test_thin_eb");
    // What the worker asked: the related object with what the mapping
    // reads, the pinned version, and the event's context.
    let seen = stub.requests();
    let b_call = seen
        .iter()
        .find(|s| s.path == "/v2/core/accounts/acct_test_thinB")
        .expect("fetched B");
    assert!(
        b_call
            .query
            .as_deref()
            .unwrap_or("")
            .contains("include=requirements"),
        "{b_call:?}"
    );
    assert_eq!(b_call.context.as_deref(), Some("acct_test_thinB"));
    assert!(b_call.stripe_version.is_some());
    assert_eq!(bed.dlq_len().await, 0);
}
