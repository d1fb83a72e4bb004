//! The `hookline-worker` binary, every case on both backends: the embedded
//! SQLite file and AWS (SQS + DynamoDB on moto).

use std::time::Duration;

use hookline_core::records::{EventStatus, Outcome};

use crate::bed::Bed;
use crate::helpers::*;
use crate::on_both_backends;

const APPLIED: &str = "hookline_events_processed_total{outcome=\"applied\"}";
const DUPLICATE: &str = "hookline_events_processed_total{outcome=\"duplicate\"}";
const STALE: &str = "hookline_events_processed_total{outcome=\"stale\"}";

on_both_backends!(
    each_fixture_type_produces_its_records(5),
    an_event_type_without_handler_completes_ignored(5),
    fifty_copies_of_one_event_apply_once(5),
    out_of_order_events_end_on_the_newest_state(5),
    two_workers_share_the_load_without_double_applying(5),
    a_malformed_event_is_dead_lettered_with_its_reason(5),
    // Enough deliveries to ride out the outage without dead-lettering.
    a_store_outage_loses_nothing_and_applies_nothing_twice(50),
    sigkill_mid_stream_then_restart_applies_all_exactly_once(5),
    sigterm_exits_0_within_the_grace_period_and_loses_nothing(5),
);

/// `n` events of `event_type`, each on its own object (`prefix_i`).
fn distinct_events(
    event_type: &str,
    tag: &str,
    object_prefix: &str,
    n: usize,
) -> (Vec<String>, Vec<String>) {
    let ids: Vec<String> = (0..n).map(|i| format!("evt_test_{tag}_{i}")).collect();
    let bodies = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let mut v: serde_json::Value =
                serde_json::from_str(&event_with(event_type, id, 1_700_000_000)).expect("json");
            v["data"]["object"]["id"] = format!("{object_prefix}_{tag}_{i}").into();
            v.to_string()
        })
        .collect();
    (ids, bodies)
}

async fn each_fixture_type_produces_its_records(bed: Bed) {
    let types = [
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "charge.dispute.created",
        "payout.created",
        "account.updated",
    ];
    let ids: Vec<String> = types.iter().map(|t| format!("evt_test_fx_{t}")).collect();
    let bodies: Vec<String> = types
        .iter()
        .zip(&ids)
        .enumerate()
        .map(|(i, (t, id))| event_with(t, id, 1_700_000_000 + i as i64))
        .collect();
    bed.enqueue(&bodies).await;
    let _worker = bed.worker(&[]);
    assert!(eventually(Duration::from_secs(30), || bed.all_completed(&ids)).await);

    let pi = bed.item("pi_3QhLpWExampleIntent1").await.expect("pi item");
    assert_eq!(pi["objectId"], "pi_3QhLpWExampleIntent1");
    assert_eq!(pi["objectType"], "payment_intent");
    assert_eq!(pi["status"], "succeeded");
    assert_eq!(pi["amount"], 4200);
    assert_eq!(pi["currency"], "usd");
    assert_eq!(pi["lastEventId"], "evt_test_fx_payment_intent.succeeded");
    assert_eq!(pi["lastEventType"], "payment_intent.succeeded");
    assert_eq!(pi["lastEventCreated"], 1_700_000_000);

    let failed = bed
        .item("pi_3QhLqAExampleIntent2")
        .await
        .expect("failed pi");
    assert_eq!(failed["status"], "requires_payment_method");
    assert_eq!(
        failed["lastPaymentError"],
        "Your card has insufficient funds."
    );

    let du = bed.item("du_1QhLrBExampleDispute").await.expect("dispute");
    assert_eq!(du["objectType"], "dispute");
    assert_eq!(du["reason"], "product_not_received");
    assert_eq!(du["charge"], "ch_3QhLpWExampleCharge1");
    assert_eq!(du["paymentIntent"], "pi_3QhLpWExampleIntent1");

    let po = bed.item("po_1QhLsCExamplePayout1").await.expect("payout");
    assert_eq!(po["objectType"], "payout");
    assert_eq!(po["account"], "acct_1QhLnKExample0001");
    assert!(po["arrivalDate"].is_number());

    let acct = bed.item("acct_1QhLnKExample0001").await.expect("provider");
    assert_eq!(acct["stripeAccountId"], "acct_1QhLnKExample0001");
    assert_eq!(acct["chargesEnabled"], true);
    assert_eq!(acct["payoutsEnabled"], false);
    assert_eq!(acct["detailsSubmitted"], true);
    assert_eq!(acct["disabledReason"], "requirements.past_due");
    assert_eq!(
        acct["requirementsCurrentlyDue"],
        serde_json::json!(["external_account", "individual.verification.document"])
    );

    let rec = bed.ledger(&ids[0]).await.expect("ledger");
    assert_eq!(rec.status, EventStatus::Completed);
    assert_eq!(rec.outcome, Some(Outcome::Applied));
    assert_eq!(rec.attempts, 1);
    assert_eq!(rec.event_type, "payment_intent.succeeded");
    assert!(rec.completed_at.is_some());
    assert!(rec.expires_at > now() + 86_400, "TTL set in the future");
    assert!(eventually(Duration::from_secs(10), || bed.queue_is_empty()).await);
}

async fn an_event_type_without_handler_completes_ignored(bed: Bed) {
    let body = r#"{"id":"evt_test_other","type":"customer.created","created":1,"data":{"object":{"id":"cus_1"}}}"#;
    bed.enqueue(&[body.to_owned()]).await;
    let _worker = bed.worker(&[("ENABLED_EVENTS", "*")]);
    let ids = vec!["evt_test_other".to_owned()];
    assert!(eventually(Duration::from_secs(20), || bed.all_completed(&ids)).await);
    let rec = bed.ledger("evt_test_other").await.expect("ledger");
    assert_eq!(rec.outcome, Some(Outcome::Ignored));
    assert_eq!(rec.attempts, 1);
}

async fn fifty_copies_of_one_event_apply_once(bed: Bed) {
    let body = event_with("payout.created", "evt_test_fifty", 1_700_000_000);
    // 30 copies at once, processed concurrently...
    bed.enqueue(&vec![body.clone(); 30]).await;
    let worker = bed.worker(&[("WORKER_CONCURRENCY", "16")]);
    // At least n: on a loaded server a copy whose delete is late comes back
    // after its visibility timeout and is counted again, as a duplicate.
    let done = |n: u64| {
        let worker = &worker;
        move || async move { metric(worker, APPLIED).await + metric(worker, DUPLICATE).await >= n }
    };
    assert!(eventually(Duration::from_secs(120), done(30)).await);
    // ...then 20 more after completion.
    bed.enqueue(&vec![body.clone(); 20]).await;
    assert!(eventually(Duration::from_secs(120), done(50)).await);
    assert_eq!(metric(&worker, APPLIED).await, 1, "applied exactly once");
    assert!(metric(&worker, DUPLICATE).await >= 49);
    let rec = bed.ledger("evt_test_fifty").await.expect("ledger");
    assert_eq!(rec.status, EventStatus::Completed);
    assert_eq!(rec.outcome, Some(Outcome::Applied));
    assert!(eventually(Duration::from_secs(10), || bed.queue_is_empty()).await);
}

async fn out_of_order_events_end_on_the_newest_state(bed: Bed) {
    // Newest first: payout paid at t=200, account with payouts enabled at t=200.
    let mut paid: serde_json::Value =
        serde_json::from_str(&event_with("payout.updated", "evt_test_po_new", 200)).expect("json");
    paid["data"]["object"]["status"] = "paid".into();
    let mut acct_new: serde_json::Value =
        serde_json::from_str(&event_with("account.updated", "evt_test_acct_new", 200))
            .expect("json");
    acct_new["data"]["object"]["payouts_enabled"] = true.into();
    bed.enqueue(&[paid.to_string(), acct_new.to_string()]).await;
    let worker = bed.worker(&[]);
    let first = vec!["evt_test_po_new".to_owned(), "evt_test_acct_new".to_owned()];
    assert!(eventually(Duration::from_secs(20), || bed.all_completed(&first)).await);

    // Then the older ones arrive.
    let mut in_transit: serde_json::Value =
        serde_json::from_str(&event_with("payout.created", "evt_test_po_old", 100)).expect("json");
    in_transit["data"]["object"]["status"] = "in_transit".into();
    let acct_old = event_with("account.updated", "evt_test_acct_old", 100);
    bed.enqueue(&[in_transit.to_string(), acct_old]).await;
    let second = vec!["evt_test_po_old".to_owned(), "evt_test_acct_old".to_owned()];
    assert!(eventually(Duration::from_secs(20), || bed.all_completed(&second)).await);

    let po = bed.item("po_1QhLsCExamplePayout1").await.expect("payout");
    assert_eq!(po["status"], "paid");
    assert_eq!(po["lastEventId"], "evt_test_po_new");
    let acct = bed.item("acct_1QhLnKExample0001").await.expect("provider");
    assert_eq!(acct["payoutsEnabled"], true);
    assert_eq!(acct["lastEventId"], "evt_test_acct_new");
    for id in &second {
        assert_eq!(
            bed.ledger(id).await.expect("ledger").outcome,
            Some(Outcome::Stale),
            "{id}"
        );
    }
    assert_eq!(metric(&worker, STALE).await, 2);
}

async fn two_workers_share_the_load_without_double_applying(bed: Bed) {
    let (ids, bodies) = distinct_events("payment_intent.succeeded", "two", "pi", 100);
    let a = bed.worker(&[("WORKER_CONCURRENCY", "4")]);
    let b = bed.worker(&[("WORKER_CONCURRENCY", "4")]);
    assert!(eventually(Duration::from_secs(20), || ready(&a)).await);
    assert!(eventually(Duration::from_secs(20), || ready(&b)).await);
    // Every event twice: the copies race between the workers.
    let doubled: Vec<String> = bodies.iter().chain(bodies.iter()).cloned().collect();
    // In waves, so that neither worker can drain it all in one poll of the
    // other's (a worker takes a fresh batch in well under a poll interval).
    for wave in doubled.chunks(40) {
        bed.enqueue(wave).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(eventually(Duration::from_secs(120), || bed.all_completed(&ids)).await);
    assert!(
        eventually(Duration::from_secs(60), || async {
            metric(&a, APPLIED).await
                + metric(&a, DUPLICATE).await
                + metric(&b, APPLIED).await
                + metric(&b, DUPLICATE).await
                == 200
        })
        .await
    );
    let (applied_a, applied_b) = (metric(&a, APPLIED).await, metric(&b, APPLIED).await);
    let (dup_a, dup_b) = (metric(&a, DUPLICATE).await, metric(&b, DUPLICATE).await);
    assert_eq!(applied_a + applied_b, 100, "each event applied once");
    assert_eq!(dup_a + dup_b, 100, "each copy completed as a duplicate");
    assert!(
        applied_a + dup_a > 0 && applied_b + dup_b > 0,
        "both shared the load: {} / {}",
        applied_a + dup_a,
        applied_b + dup_b
    );
    assert!(eventually(Duration::from_secs(20), || bed.queue_is_empty()).await);
}

async fn a_malformed_event_is_dead_lettered_with_its_reason(bed: Bed) {
    let good = event_with("payout.created", "evt_test_good_neighbour", 1);
    let mut bad: serde_json::Value =
        serde_json::from_str(&event_with("payout.created", "evt_test_malformed", 1)).expect("json");
    // The object's own id is required (a null or missing status is not:
    // Stripe marks nothing it sends as required beyond what it always sends).
    bad["data"]["object"]
        .as_object_mut()
        .expect("object")
        .remove("id");
    let no_created =
        r#"{"id":"evt_test_nocreated","type":"payout.created","data":{"object":{"id":"po_x"}}}"#;
    bed.enqueue(&[bad.to_string(), good, no_created.to_owned()])
        .await;
    let _worker = bed.worker(&[]);
    let good = vec!["evt_test_good_neighbour".to_owned()];
    assert!(eventually(Duration::from_secs(20), || bed.all_completed(&good)).await);
    assert!(
        eventually(Duration::from_secs(20), || async {
            bed.ledger("evt_test_malformed")
                .await
                .is_some_and(|r| r.status == EventStatus::Failed)
                && bed
                    .ledger("evt_test_nocreated")
                    .await
                    .is_some_and(|r| r.status == EventStatus::Failed)
        })
        .await
    );
    assert!(eventually(Duration::from_secs(20), || bed.queue_is_empty()).await);
    let dead = bed.dead_letters().await;
    assert_eq!(dead.len(), 2, "both bad events in the DLQ");
    let bad_msg = dead
        .iter()
        .find(|m| m.attributes["event_id"] == "evt_test_malformed")
        .expect("malformed in DLQ");
    assert_eq!(
        bad_msg.body,
        bad.to_string().into_bytes(),
        "body kept byte for byte"
    );
    assert!(
        bad_msg.attributes["error"].contains("`id`"),
        "{:?}",
        bad_msg.attributes
    );
    let rec = bed.ledger("evt_test_malformed").await.expect("ledger");
    assert!(rec
        .last_error
        .as_deref()
        .is_some_and(|e| e.contains("`id`")));
    let no_created_msg = dead
        .iter()
        .find(|m| m.attributes["event_id"] == "evt_test_nocreated")
        .expect("no-created in DLQ");
    assert!(no_created_msg.attributes["error"].contains("created"));
}

async fn a_store_outage_loses_nothing_and_applies_nothing_twice(bed: Bed) {
    let (ids, bodies) = distinct_events("payout.created", "outage", "po", 40);
    bed.enqueue(&bodies[..20]).await;
    // Embedded: give up on the write lock quickly, so the outage shows as
    // failed calls rather than waits.
    let worker = bed.worker(&[
        ("VISIBILITY_TIMEOUT_SECS", "3"),
        ("EMBEDDED_BUSY_TIMEOUT_MS", "100"),
    ]);
    let first: Vec<String> = ids[..20].to_vec();
    assert!(eventually(Duration::from_secs(30), || bed.all_completed(&first)).await);

    // The store becomes unreachable while the rest arrive, then comes back:
    // longer than the SDK's own retries and the worker's quick retries
    // together (a 3 s outage is ridden out before the queue notices).
    bed.store_outage_with(&bodies[20..], Duration::from_secs(8))
        .await;

    assert!(eventually(Duration::from_secs(90), || bed.all_completed(&ids)).await);
    assert!(eventually(Duration::from_secs(30), || bed.queue_is_empty()).await);
    // A delivery whose commit went through while its answer was cut off
    // completes as a duplicate when it comes back: the ledger, not the
    // worker's view, says it was applied once.
    let applied = metric(&worker, APPLIED).await;
    let duplicates = metric(&worker, DUPLICATE).await;
    assert!(
        applied <= 40 && applied + duplicates >= 40,
        "{applied} applied, {duplicates} duplicates"
    );
    let noticed = metric(&worker, "hookline_event_retries_total").await
        + metric(&worker, "hookline_receive_errors_total").await;
    assert!(noticed > 0, "the worker ran into the outage");
    println!(
        "outage: {applied} applied, {duplicates} duplicates, {} retries, {} failed receives",
        metric(&worker, "hookline_event_retries_total").await,
        metric(&worker, "hookline_receive_errors_total").await
    );
    assert!(bed.dead_letters().await.is_empty());
    for id in &ids {
        assert_eq!(
            bed.ledger(id).await.expect("ledger").outcome,
            Some(Outcome::Applied)
        );
    }
}

async fn sigkill_mid_stream_then_restart_applies_all_exactly_once(bed: Bed) {
    let (ids, bodies) = distinct_events("payment_intent.succeeded", "kill", "pi", 200);
    bed.enqueue(&bodies).await;
    let mut worker = bed.worker(&[
        ("WORKER_CONCURRENCY", "2"),
        ("VISIBILITY_TIMEOUT_SECS", "2"),
    ]);
    // Kill it once some, not all, are done.
    assert!(
        eventually(Duration::from_secs(60), || async {
            metric(&worker, APPLIED).await >= 20
        })
        .await
    );
    signal(&worker.child, "KILL");
    let _ = worker.child.wait();
    let done_before = bed.completed(&ids).await;
    assert!(done_before < 200, "killed mid-stream ({done_before} done)");

    let restarted = bed.worker(&[("VISIBILITY_TIMEOUT_SECS", "2")]);
    assert!(eventually(Duration::from_secs(120), || bed.all_completed(&ids)).await);
    assert!(eventually(Duration::from_secs(30), || bed.queue_is_empty()).await);
    for (i, id) in ids.iter().enumerate() {
        let rec = bed.ledger(id).await.expect("ledger");
        assert_eq!(rec.outcome, Some(Outcome::Applied), "{id}");
        let pi = bed.item(&format!("pi_kill_{i}")).await.expect("item");
        assert_eq!(pi["lastEventId"], id.as_str());
    }
    // The restarted worker applied exactly what the killed one had not.
    assert_eq!(
        metric(&restarted, APPLIED).await,
        (200 - done_before) as u64
    );
}

async fn sigterm_exits_0_within_the_grace_period_and_loses_nothing(bed: Bed) {
    let (ids, bodies) = distinct_events("payout.created", "term", "po", 100);
    bed.enqueue(&bodies).await;
    let mut worker = bed.worker(&[("WORKER_CONCURRENCY", "2"), ("SHUTDOWN_GRACE_SECS", "5")]);
    assert!(
        eventually(Duration::from_secs(30), || async {
            metric(&worker, APPLIED).await >= 5
        })
        .await
    );
    signal(&worker.child, "TERM");
    // Grace period plus the end of a long poll (RECEIVE_WAIT_SECS=1) and slack.
    let code = wait_exit(&mut worker.child, Duration::from_secs(5 + 3));
    assert_eq!(code, Some(0));

    // Nothing was left hidden; everything is done or waiting.
    let counts = bed.queue.counts().await.expect("counts");
    assert_eq!(counts.in_flight, 0, "unstarted messages were handed back");
    let done = bed.completed(&ids).await as u64;
    assert_eq!(
        done + counts.waiting,
        100,
        "every event is completed or still queued"
    );
    assert!(counts.waiting > 0, "stopped before the end");

    let _again = bed.worker(&[]);
    assert!(eventually(Duration::from_secs(60), || bed.all_completed(&ids)).await);
}
