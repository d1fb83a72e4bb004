use std::time::Duration;

use hookline_core::ports::Queue;
use hookline_core::records::{EventStatus, Outcome};

use crate::helpers::*;

const APPLIED: &str = "hookline_events_processed_total{outcome=\"applied\"}";
const DUPLICATE: &str = "hookline_events_processed_total{outcome=\"duplicate\"}";
const STALE: &str = "hookline_events_processed_total{outcome=\"stale\"}";

fn open(dir: &tempfile::TempDir) -> hookline_embedded::Embedded {
    hookline_embedded::open(dir.path(), Default::default()).expect("open db")
}

async fn queue_is_empty(db: &hookline_embedded::Embedded) -> bool {
    let c = db.queue.counts().await.expect("counts");
    c.waiting == 0 && c.in_flight == 0
}

#[tokio::test(flavor = "multi_thread")]
async fn each_fixture_type_produces_its_records() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = open(&dir);
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
    enqueue(&db, &bodies).await;
    let _worker = start_worker(dir.path(), &[]);
    assert!(eventually(Duration::from_secs(20), || all_completed(&db, &ids)).await);

    let pi = item(&db, "pi_3QhLpWExampleIntent1").await.expect("pi item");
    assert_eq!(pi["objectType"], "payment_intent");
    assert_eq!(pi["status"], "succeeded");
    assert_eq!(pi["amount"], 4200);
    assert_eq!(pi["currency"], "usd");
    assert_eq!(pi["lastEventId"], "evt_test_fx_payment_intent.succeeded");
    assert_eq!(pi["lastEventCreated"], 1_700_000_000);

    let failed = item(&db, "pi_3QhLqAExampleIntent2")
        .await
        .expect("failed pi");
    assert_eq!(failed["status"], "requires_payment_method");
    assert_eq!(
        failed["lastPaymentError"],
        "Your card has insufficient funds."
    );

    let du = item(&db, "du_1QhLrBExampleDispute").await.expect("dispute");
    assert_eq!(du["objectType"], "dispute");
    assert_eq!(du["reason"], "product_not_received");
    assert_eq!(du["charge"], "ch_3QhLpWExampleCharge1");
    assert_eq!(du["paymentIntent"], "pi_3QhLpWExampleIntent1");

    let po = item(&db, "po_1QhLsCExamplePayout1").await.expect("payout");
    assert_eq!(po["objectType"], "payout");
    assert_eq!(po["account"], "acct_1QhLnKExample0001");
    assert!(po["arrivalDate"].is_number());

    let acct = item(&db, "acct_1QhLnKExample0001").await.expect("provider");
    assert_eq!(acct["stripeAccountId"], "acct_1QhLnKExample0001");
    assert_eq!(acct["chargesEnabled"], true);
    assert_eq!(acct["payoutsEnabled"], false);
    assert_eq!(acct["detailsSubmitted"], true);
    assert_eq!(acct["disabledReason"], "requirements.past_due");
    assert_eq!(
        acct["requirementsCurrentlyDue"],
        serde_json::json!(["external_account", "individual.verification.document"])
    );

    let rec = ledger(&db, &ids[0]).await.expect("ledger");
    assert_eq!(rec.status, EventStatus::Completed);
    assert_eq!(rec.outcome, Some(Outcome::Applied));
    assert_eq!(rec.attempts, 1);
    assert!(rec.completed_at.is_some());
    assert!(rec.expires_at > now() + 86_400, "TTL set in the future");
    assert!(queue_is_empty(&db).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_type_without_handler_completes_ignored() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = open(&dir);
    let body = r#"{"id":"evt_test_other","type":"customer.created","created":1,"data":{"object":{"id":"cus_1"}}}"#;
    enqueue(&db, &[body.to_owned()]).await;
    let _worker = start_worker(dir.path(), &[("ENABLED_EVENTS", "*")]);
    let ids = vec!["evt_test_other".to_owned()];
    assert!(eventually(Duration::from_secs(20), || all_completed(&db, &ids)).await);
    let rec = ledger(&db, "evt_test_other").await.expect("ledger");
    assert_eq!(rec.outcome, Some(Outcome::Ignored));
    assert_eq!(rec.attempts, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_copies_of_one_event_apply_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = open(&dir);
    let body = event_with("payout.created", "evt_test_fifty", 1_700_000_000);
    // 30 copies at once, processed concurrently...
    enqueue(&db, &vec![body.clone(); 30]).await;
    let worker = start_worker(dir.path(), &[("WORKER_CONCURRENCY", "16")]);
    assert!(
        eventually(Duration::from_secs(30), || async {
            metric(&worker, APPLIED).await + metric(&worker, DUPLICATE).await == 30
        })
        .await
    );
    // ...then 20 more after completion.
    enqueue(&db, &vec![body.clone(); 20]).await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            metric(&worker, APPLIED).await + metric(&worker, DUPLICATE).await == 50
        })
        .await
    );
    assert_eq!(metric(&worker, APPLIED).await, 1, "applied exactly once");
    assert_eq!(metric(&worker, DUPLICATE).await, 49);
    let rec = ledger(&db, "evt_test_fifty").await.expect("ledger");
    assert_eq!(rec.status, EventStatus::Completed);
    assert_eq!(rec.outcome, Some(Outcome::Applied));
    assert!(queue_is_empty(&db).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn out_of_order_events_end_on_the_newest_state() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = open(&dir);
    // Newest first: payout paid at t=200, account with payouts enabled at t=200.
    let mut paid: serde_json::Value =
        serde_json::from_str(&event_with("payout.updated", "evt_test_po_new", 200)).expect("json");
    paid["data"]["object"]["status"] = "paid".into();
    let mut acct_new: serde_json::Value =
        serde_json::from_str(&event_with("account.updated", "evt_test_acct_new", 200))
            .expect("json");
    acct_new["data"]["object"]["payouts_enabled"] = true.into();
    enqueue(&db, &[paid.to_string(), acct_new.to_string()]).await;
    let worker = start_worker(dir.path(), &[]);
    let first = vec!["evt_test_po_new".to_owned(), "evt_test_acct_new".to_owned()];
    assert!(eventually(Duration::from_secs(20), || all_completed(&db, &first)).await);

    // Then the older ones arrive.
    let mut in_transit: serde_json::Value =
        serde_json::from_str(&event_with("payout.created", "evt_test_po_old", 100)).expect("json");
    in_transit["data"]["object"]["status"] = "in_transit".into();
    let acct_old = event_with("account.updated", "evt_test_acct_old", 100);
    enqueue(&db, &[in_transit.to_string(), acct_old]).await;
    let second = vec!["evt_test_po_old".to_owned(), "evt_test_acct_old".to_owned()];
    assert!(eventually(Duration::from_secs(20), || all_completed(&db, &second)).await);

    let po = item(&db, "po_1QhLsCExamplePayout1").await.expect("payout");
    assert_eq!(po["status"], "paid");
    assert_eq!(po["lastEventId"], "evt_test_po_new");
    let acct = item(&db, "acct_1QhLnKExample0001").await.expect("provider");
    assert_eq!(acct["payoutsEnabled"], true);
    assert_eq!(acct["lastEventId"], "evt_test_acct_new");
    for id in &second {
        assert_eq!(
            ledger(&db, id).await.expect("ledger").outcome,
            Some(Outcome::Stale),
            "{id}"
        );
    }
    assert_eq!(metric(&worker, STALE).await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_workers_share_the_load_without_double_applying() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = open(&dir);
    let ids: Vec<String> = (0..200).map(|i| format!("evt_test_two_{i}")).collect();
    let bodies: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let mut v: serde_json::Value =
                serde_json::from_str(&event_with("payment_intent.succeeded", id, 1_700_000_000))
                    .expect("json");
            v["data"]["object"]["id"] = format!("pi_test_two_{i}").into();
            v.to_string()
        })
        .collect();
    // Every event twice: the copies race between the workers.
    let doubled: Vec<String> = bodies.iter().chain(bodies.iter()).cloned().collect();
    let a = start_worker(dir.path(), &[("WORKER_CONCURRENCY", "4")]);
    let b = start_worker(dir.path(), &[("WORKER_CONCURRENCY", "4")]);
    assert!(eventually(Duration::from_secs(20), || ready(&a)).await);
    assert!(eventually(Duration::from_secs(20), || ready(&b)).await);
    enqueue(&db, &doubled).await;
    assert!(eventually(Duration::from_secs(60), || all_completed(&db, &ids)).await);
    assert!(eventually(Duration::from_secs(60), || queue_is_empty(&db)).await);
    let (applied_a, applied_b) = (metric(&a, APPLIED).await, metric(&b, APPLIED).await);
    let (dup_a, dup_b) = (metric(&a, DUPLICATE).await, metric(&b, DUPLICATE).await);
    assert_eq!(applied_a + applied_b, 200, "each event applied once");
    assert_eq!(dup_a + dup_b, 200, "each copy completed as a duplicate");
    assert!(
        applied_a + dup_a > 0 && applied_b + dup_b > 0,
        "both shared the load: {} / {}",
        applied_a + dup_a,
        applied_b + dup_b
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_event_is_dead_lettered_with_its_reason() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = open(&dir);
    let good = event_with("payout.created", "evt_test_good_neighbour", 1);
    let mut bad: serde_json::Value =
        serde_json::from_str(&event_with("payout.created", "evt_test_malformed", 1)).expect("json");
    bad["data"]["object"]
        .as_object_mut()
        .expect("object")
        .remove("status");
    let no_created =
        r#"{"id":"evt_test_nocreated","type":"payout.created","data":{"object":{"id":"po_x"}}}"#;
    enqueue(&db, &[bad.to_string(), good, no_created.to_owned()]).await;
    let _worker = start_worker(dir.path(), &[]);
    assert!(
        eventually(Duration::from_secs(20), || async {
            db.dlq.snapshot().await.map(|d| d.len()).unwrap_or(0) == 2
        })
        .await
    );
    let dead = db.dlq.snapshot().await.expect("dlq");
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
        bad_msg.attributes["error"].contains("status"),
        "{:?}",
        bad_msg.attributes
    );
    let rec = ledger(&db, "evt_test_malformed").await.expect("ledger");
    assert_eq!(rec.status, EventStatus::Failed);
    assert!(rec
        .last_error
        .as_deref()
        .is_some_and(|e| e.contains("status")));
    let rec = ledger(&db, "evt_test_nocreated").await.expect("ledger");
    assert_eq!(rec.status, EventStatus::Failed);
    // The good neighbour went through, nothing is left behind.
    let good = vec!["evt_test_good_neighbour".to_owned()];
    assert!(eventually(Duration::from_secs(10), || all_completed(&db, &good)).await);
    assert!(eventually(Duration::from_secs(10), || queue_is_empty(&db)).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_outage_loses_nothing_and_applies_nothing_twice() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = open(&dir);
    let ids: Vec<String> = (0..40).map(|i| format!("evt_test_outage_{i}")).collect();
    let bodies: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let mut v: serde_json::Value =
                serde_json::from_str(&event_with("payout.created", id, 1_700_000_000))
                    .expect("json");
            v["data"]["object"]["id"] = format!("po_test_outage_{i}").into();
            v.to_string()
        })
        .collect();
    enqueue(&db, &bodies[..20]).await;
    let worker = start_worker(
        dir.path(),
        &[
            ("EMBEDDED_BUSY_TIMEOUT_MS", "100"),
            ("VISIBILITY_TIMEOUT_SECS", "2"),
            ("MAX_RECEIVES", "50"),
        ],
    );
    let first: Vec<String> = ids[..20].to_vec();
    assert!(eventually(Duration::from_secs(20), || all_completed(&db, &first)).await);

    // The store becomes unreachable: another process holds the write lock.
    let locker = rusqlite::Connection::open(hookline_embedded::db_path(dir.path())).expect("open");
    enqueue(&db, &bodies[20..]).await;
    locker.execute_batch("BEGIN EXCLUSIVE").expect("lock");
    tokio::time::sleep(Duration::from_secs(3)).await;
    locker.execute_batch("ROLLBACK").expect("unlock");

    assert!(eventually(Duration::from_secs(60), || all_completed(&db, &ids)).await);
    assert!(eventually(Duration::from_secs(30), || queue_is_empty(&db)).await);
    assert_eq!(metric(&worker, APPLIED).await, 40, "each applied once");
    assert!(db.dlq.snapshot().await.expect("dlq").is_empty());
    for id in &ids {
        assert_eq!(
            ledger(&db, id).await.expect("ledger").outcome,
            Some(Outcome::Applied)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_stream_then_restart_applies_all_exactly_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = open(&dir);
    let ids: Vec<String> = (0..200).map(|i| format!("evt_test_kill_{i}")).collect();
    let bodies: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let mut v: serde_json::Value =
                serde_json::from_str(&event_with("payment_intent.succeeded", id, 1_700_000_000))
                    .expect("json");
            v["data"]["object"]["id"] = format!("pi_test_kill_{i}").into();
            v.to_string()
        })
        .collect();
    enqueue(&db, &bodies).await;
    let mut worker = start_worker(
        dir.path(),
        &[
            ("WORKER_CONCURRENCY", "2"),
            ("VISIBILITY_TIMEOUT_SECS", "2"),
        ],
    );
    // Kill it once some, not all, are done.
    assert!(
        eventually(Duration::from_secs(30), || async {
            metric(&worker, APPLIED).await >= 20
        })
        .await
    );
    signal(&worker.child, "KILL");
    let _ = worker.child.wait();
    let done_before = {
        let mut n = 0;
        for id in &ids {
            if ledger(&db, id)
                .await
                .is_some_and(|r| r.status == EventStatus::Completed)
            {
                n += 1;
            }
        }
        n
    };
    assert!(done_before < 200, "killed mid-stream ({done_before} done)");

    let restarted = start_worker(dir.path(), &[("VISIBILITY_TIMEOUT_SECS", "2")]);
    assert!(eventually(Duration::from_secs(60), || all_completed(&db, &ids)).await);
    assert!(eventually(Duration::from_secs(30), || queue_is_empty(&db)).await);
    for (i, id) in ids.iter().enumerate() {
        let rec = ledger(&db, id).await.expect("ledger");
        assert_eq!(rec.outcome, Some(Outcome::Applied), "{id}");
        let pi = item(&db, &format!("pi_test_kill_{i}")).await.expect("item");
        assert_eq!(pi["lastEventId"], id.as_str());
    }
    // The restarted worker applied only what the killed one had not.
    let applied_after = metric(&restarted, APPLIED).await;
    assert_eq!(applied_after, 200 - done_before);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_exits_0_within_the_grace_period_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = open(&dir);
    let ids: Vec<String> = (0..100).map(|i| format!("evt_test_term_{i}")).collect();
    let bodies: Vec<String> = ids
        .iter()
        .map(|id| event_with("payout.created", id, 1_700_000_000))
        .collect();
    enqueue(&db, &bodies).await;
    let mut worker = start_worker(
        dir.path(),
        &[("WORKER_CONCURRENCY", "2"), ("SHUTDOWN_GRACE_SECS", "5")],
    );
    assert!(
        eventually(Duration::from_secs(30), || async {
            metric(&worker, APPLIED).await + metric(&worker, STALE).await >= 5
        })
        .await
    );
    signal(&worker.child, "TERM");
    let code = wait_exit(&mut worker.child, Duration::from_secs(5 + 3));
    assert_eq!(code, Some(0));

    // Nothing in flight was left hidden; everything is done or waiting.
    let counts = db.queue.counts().await.expect("counts");
    assert_eq!(counts.in_flight, 0, "unstarted messages were handed back");
    let mut done = 0u64;
    for id in &ids {
        if ledger(&db, id)
            .await
            .is_some_and(|r| r.status == EventStatus::Completed)
        {
            done += 1;
        }
    }
    assert_eq!(
        done + counts.waiting,
        100,
        "every event is completed or still queued"
    );
    assert!(counts.waiting > 0, "stopped before the end");

    let _again = start_worker(dir.path(), &[]);
    assert!(eventually(Duration::from_secs(30), || all_completed(&db, &ids)).await);
}
