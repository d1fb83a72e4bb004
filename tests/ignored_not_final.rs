//! `ignored` is not final: an event ignored while its type was disabled
//! is applied when it comes again. On both backends.

use std::time::Duration;

use bytes::Bytes;
use hookline_core::message::OutboundMessage;
use hookline_core::records::{EventStatus, Outcome};
use hookline_testkit::StripeStub;
use serde_json::Value;

use crate::bed::Bed;
use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(an_event_ignored_while_disabled_is_applied_when_it_comes_again(5),);

pub(crate) const KEY: &str = "sk_test_hooklineStubOnly";

async fn an_event_ignored_while_disabled_is_applied_when_it_comes_again(bed: Bed) {
    let stub = StripeStub::start().await.expect("stub");
    let mut retried: Value = serde_json::from_str(&event_with(
        "payout.updated",
        "evt_test_ign_1",
        1_764_675_200,
    ))
    .expect("json");
    retried["data"]["object"]["id"] = "po_test_ign_1".into();
    let mut backfilled = retried.clone();
    backfilled["id"] = "evt_test_ign_2".into();
    backfilled["data"]["object"]["id"] = "po_test_ign_2".into();
    let mut replayed = retried.clone();
    replayed["id"] = "evt_test_ign_3".into();
    replayed["data"]["object"]["id"] = "po_test_ign_3".into();
    let bodies: Vec<String> = [&retried, &backfilled, &replayed]
        .map(Value::to_string)
        .to_vec();
    let ids = ["evt_test_ign_1", "evt_test_ign_2", "evt_test_ign_3"]
        .map(String::from)
        .to_vec();
    {
        // A worker that does not have payout.updated enabled (yet).
        let _old = bed.worker(&[("ENABLED_EVENTS", "payout.created")]);
        bed.enqueue(&bodies).await;
        assert!(eventually(Duration::from_secs(30), || bed.all_completed(&ids)).await);
    }
    for id in &ids {
        let rec = bed.ledger(id).await.expect("ledger");
        assert_eq!(
            (rec.outcome, rec.reason.as_deref()),
            (Some(Outcome::Ignored), Some("type not enabled"))
        );
    }
    // `events show` says why.
    let (code, out, err) = run_hookline(&bed.env, &[], &["events", "show", "evt_test_ign_1"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("reason") && l.ends_with("type not enabled")),
        "{out}"
    );
    // Enabled now. Stripe's retry: the same event again.
    let _worker = bed.worker(&[]);
    bed.enqueue(std::slice::from_ref(&bodies[0])).await;
    // backfill lists it from Stripe and enqueues it: not "already applied".
    stub.put_v1_event(backfilled.clone());
    let mut env: Vec<(&str, &str)> = vec![
        ("STRIPE_SECRET_KEY", KEY),
        ("STRIPE_API_BASE", stub.base.as_str()),
    ];
    env.push(("ENABLED_EVENTS", "payout.updated"));
    let (code, _out, err) = run_hookline(&bed.env, &env, &["backfill", "--since", "30d"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("enqueued 1, already applied 0"), "{err}");
    // A DLQ replay of a copy.
    put_dlq(&bed, &bodies[2]).await;
    let (code, _out, err) = run_hookline(&bed.env, &[], &["dlq", "replay", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let applied = || async {
        let mut all = true;
        for id in &ids {
            all &= bed
                .ledger(id)
                .await
                .is_some_and(|r| r.outcome == Some(Outcome::Applied));
        }
        all
    };
    assert!(eventually(Duration::from_secs(30), applied).await);
    for (id, object) in [
        ("evt_test_ign_1", "po_test_ign_1"),
        ("evt_test_ign_2", "po_test_ign_2"),
        ("evt_test_ign_3", "po_test_ign_3"),
    ] {
        let rec = bed.ledger(id).await.expect("ledger");
        assert_eq!(
            (rec.status, rec.reason),
            (EventStatus::Completed, None),
            "{id}"
        );
        assert_eq!(bed.item(object).await.expect("item")["lastEventId"], id);
    }
    // Applied is final: backfill now skips it.
    let (code, _out, err) = run_hookline(&bed.env, &env, &["backfill", "--since", "30d"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("enqueued 0, already applied 1"), "{err}");
}

/// Puts a copy of `body` in the DLQ, as the worker dead-letters.
async fn put_dlq(bed: &Bed, body: &str) {
    let env = hookline_core::envelope::Envelope::parse(body.as_bytes()).expect("event");
    let copy = OutboundMessage::for_event(&env, Bytes::from(body.to_owned()), now()).as_copy();
    let results = bed.dlq.send_batch(std::slice::from_ref(&copy)).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
}
