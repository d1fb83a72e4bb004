//! Stripe's own published objects (`stripe/openapi` fixtures, see
//! `testdata/stripe-openapi`) of every handled type, nullable fields
//! included, applied on both backends.

use std::time::Duration;

use hookline_core::records::Outcome;

use crate::bed::Bed;
use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(stripe_published_objects_of_every_type_apply(5),);

/// One of Stripe's published objects (testdata/stripe-openapi, see its
/// README) in Stripe's published event, as `event_type`, with a fresh id.
fn stripe_event(
    event_type: &str,
    object: &str,
    id: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> String {
    let read = |name: &str| -> serde_json::Value {
        let path = repo_root()
            .join("testdata/stripe-openapi")
            .join(format!("{name}.json"));
        serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("json")
    };
    let mut event = read("event");
    event["id"] = id.into();
    event["type"] = event_type.into();
    event["data"]["object"] = read(object);
    edit(&mut event["data"]["object"]);
    serde_json::to_string_pretty(&event).expect("serialises")
}

async fn stripe_published_objects_of_every_type_apply(bed: Bed) {
    let cases: Vec<(&str, &str, &str, String)> = vec![
        (
            "payment_intent.succeeded",
            "payment_intent",
            "evt_test_oa_pis",
            String::new(),
        ),
        (
            "payment_intent.payment_failed",
            "payment_intent",
            "evt_test_oa_pif",
            String::new(),
        ),
        (
            "charge.dispute.created",
            "dispute",
            "evt_test_oa_dp",
            String::new(),
        ),
        ("payout.created", "payout", "evt_test_oa_poc", String::new()),
        ("payout.updated", "payout", "evt_test_oa_pou", String::new()),
        (
            "account.updated",
            "account",
            "evt_test_oa_acct",
            String::new(),
        ),
    ];
    let mut bodies: Vec<String> = cases
        .iter()
        .map(|(t, o, id, _)| {
            stripe_event(t, o, id, |obj| {
                // One object per event, so no event is stale against another.
                let fresh = format!("{}_{id}", obj["id"].as_str().expect("id"));
                obj["id"] = fresh.into();
            })
        })
        .collect();
    // The defect seen from outside: requirements.currently_due null.
    bodies.push(stripe_event(
        "account.updated",
        "account",
        "evt_test_oa_null_due",
        |o| {
            o["id"] = "acct_test_nulldue".into();
            o["requirements"]["currently_due"] = serde_json::Value::Null;
            o["requirements"]["disabled_reason"] = serde_json::Value::Null;
        },
    ));
    bodies.push(stripe_event(
        "account.updated",
        "account",
        "evt_test_oa_null_req",
        |o| {
            o["id"] = "acct_test_nullreq".into();
            o["requirements"] = serde_json::Value::Null;
        },
    ));
    bodies.push(stripe_event(
        "payout.updated",
        "payout",
        "evt_test_oa_null_dest",
        |o| {
            o["id"] = "po_test_nulldest".into();
            o["destination"] = serde_json::Value::Null;
        },
    ));
    let mut ids: Vec<String> = cases.iter().map(|c| c.2.to_owned()).collect();
    ids.extend(
        [
            "evt_test_oa_null_due",
            "evt_test_oa_null_req",
            "evt_test_oa_null_dest",
        ]
        .map(String::from),
    );
    bed.enqueue(&bodies).await;
    let _worker = bed.worker(&[]);
    assert!(
        eventually(Duration::from_secs(30), || bed.all_completed(&ids)).await,
        "every Stripe-shaped event completes"
    );
    for id in &ids {
        let rec = bed.ledger(id).await.expect("ledger");
        assert_eq!(rec.outcome, Some(Outcome::Applied), "{id}: {rec:?}");
    }
    assert!(bed.dead_letters().await.is_empty(), "nothing dead-lettered");

    let acct = bed.item("acct_test_nulldue").await.expect("provider item");
    assert_eq!(acct["requirementsCurrentlyDue"], serde_json::json!([]));
    assert!(acct.get("disabledReason").is_none());
    assert_eq!(acct["chargesEnabled"], false);
    let acct = bed
        .item("acct_1MoRdlLgUG5tbmjc_evt_test_oa_acct")
        .await
        .expect("item");
    assert_eq!(
        acct["requirementsCurrentlyDue"].as_array().map(Vec::len),
        Some(6)
    );
    assert_eq!(acct["disabledReason"], "requirements.past_due");
    let dispute = bed
        .item("dp_1MoqxHLgUG5tbmjcom3Mmh0p_evt_test_oa_dp")
        .await
        .expect("dispute item");
    assert_eq!(dispute["charge"], "ch_1MoS30LgUG5tbmjcjfsQqpHI");
    assert!(
        dispute.get("paymentIntent").is_none(),
        "null payment_intent stays absent"
    );
    assert_eq!(dispute["status"], "warning_needs_response");
    let payout = bed.item("po_test_nulldest").await.expect("payout item");
    assert_eq!(payout["status"], "in_transit");
    assert_eq!(payout["amount"], 1100);
    let pi = bed
        .item("pi_1MoS6tLgUG5tbmjcQ62U6djv_evt_test_oa_pif")
        .await
        .expect("intent item");
    assert_eq!(pi["amount"], 1099);
    assert!(pi.get("lastPaymentError").is_none());
}
