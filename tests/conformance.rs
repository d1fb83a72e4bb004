//! One suite for the ports, run against both backends: the embedded SQLite
//! file and the AWS backend on moto. Each case is a function over `Ports`;
//! the `conformance!` macro makes one test per backend.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hookline_core::envelope::EventId;
use hookline_core::message::OutboundMessage;
use hookline_core::ports::{
    Applied, Change, Claim, Lease, Origin, Queue, Store, Tie, Ties, WritePath,
};
use hookline_core::records::{
    lifecycle_rank, Completion, EventStatus, ObjectRecord, ObjectType, Outcome, Projection,
    LEDGER_TTL_SECS,
};

use crate::helpers::*;

pub struct Ports {
    queue: Arc<dyn Queue>,
    dlq: Arc<dyn Queue>,
    store: Arc<dyn Store>,
    _guard: Option<tempfile::TempDir>,
}

async fn embedded(max_receives: u32) -> Ports {
    let dir = tempfile::tempdir().expect("tmp");
    let e = hookline_embedded::open(
        dir.path(),
        hookline_embedded::Options {
            max_receives,
            ..Default::default()
        },
    )
    .expect("open");
    Ports {
        queue: e.queue,
        dlq: e.dlq,
        store: e.store,
        _guard: Some(dir),
    }
}

async fn aws(max_receives: u32) -> Ports {
    let f = aws_fixture(max_receives).await;
    Ports {
        dlq: f.dlq(),
        queue: f.backend.queue,
        store: f.backend.store,
        _guard: None,
    }
}

macro_rules! conformance {
    ($($case:ident($max:expr)),* $(,)?) => {
        $(
            mod $case {
                #[tokio::test(flavor = "multi_thread")]
                async fn embedded() {
                    super::$case(super::embedded($max).await).await;
                }
                #[tokio::test(flavor = "multi_thread")]
                async fn aws() {
                    $crate::skip_without_aws!();
                    super::$case(super::aws($max).await).await;
                }
            }
        )*
    };
}

conformance!(
    send_receive_delete(5),
    visibility_hides_and_releases(5),
    redrive_after_max_receives(2),
    concurrent_completion_applies_once(5),
    concurrent_claims_admit_one(5),
    older_events_are_stale(5),
    ledger_lifecycle_and_ttl(5),
    a_retried_claim_gets_its_own_lease_back(5),
    events_without_projection_are_ignored(5),
    concurrent_applies_complete_once(5),
    applies_follow_created_then_life_cycle(5),
    an_ignored_event_is_applied_when_it_comes_again(5),
    apply_counts_tries_and_records_the_source(5),
);

fn lease(owner: &str, now: i64) -> Lease<'_> {
    Lease {
        owner,
        now,
        secs: 30,
        origin: Origin::source("webhook"),
    }
}

fn message(id: &str) -> OutboundMessage {
    let mut attributes = BTreeMap::new();
    attributes.insert("event_id".to_owned(), id.to_owned());
    attributes.insert("event_type".to_owned(), "payout.created".to_owned());
    attributes.insert("livemode".to_owned(), "false".to_owned());
    OutboundMessage {
        body: Bytes::from(format!(
            "{{\n  \"id\": \"{id}\",\n  \"type\": \"payout.created\"\n}}\n"
        )),
        attributes,
        group_id: id.to_owned(),
        dedup_id: id.to_owned(),
    }
}

fn payout(object: &str, event: &str, created: i64, status: &str) -> Projection {
    Projection::Object(ObjectRecord {
        object_id: object.to_owned(),
        object_type: ObjectType::Payout,
        status: Some(status.to_owned()),
        amount: Some(3780),
        currency: Some("usd".to_owned()),
        account: Some("acct_test_1".to_owned()),
        last_event_id: event.to_owned(),
        last_event_type: "payout.updated".to_owned(),
        last_event_created: created,
        last_event_rank: lifecycle_rank(ObjectType::Payout, Some(status)),
        reason: None,
        charge: None,
        payment_intent: None,
        arrival_date: Some(1_732_953_600),
        last_payment_error: None,
    })
}

async fn send_receive_delete(p: Ports) {
    let sent: Vec<OutboundMessage> = (0..3).map(|i| message(&format!("evt_conf_{i}"))).collect();
    let results = p.queue.send_batch(&sent).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let got = receive_n(
        p.queue.as_ref(),
        3,
        Duration::from_secs(30),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(got.len(), 3);
    for d in &got {
        let original = sent
            .iter()
            .find(|m| m.attributes["event_id"] == d.attributes["event_id"])
            .expect("sent message");
        assert_eq!(d.body, original.body, "body byte for byte");
        assert_eq!(d.attributes, original.attributes);
        assert_eq!(d.receive_count, 1);
        assert!(d.sent_at_ms > 0);
    }
    let counts = p.queue.counts().await.expect("counts");
    assert_eq!((counts.waiting, counts.in_flight), (0, 3));
    let receipts: Vec<String> = got.iter().map(|d| d.receipt.clone()).collect();
    assert!(p
        .queue
        .delete_batch(&receipts)
        .await
        .iter()
        .all(Result::is_ok));
    let counts = p.queue.counts().await.expect("counts");
    assert_eq!((counts.waiting, counts.in_flight), (0, 0));
}

async fn visibility_hides_and_releases(p: Ports) {
    let _ = p.queue.send_batch(&[message("evt_conf_vis")]).await;
    let first = receive_n(
        p.queue.as_ref(),
        1,
        Duration::from_secs(2),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(first.len(), 1);
    let hidden = p
        .queue
        .receive(10, Duration::ZERO, Duration::from_secs(30))
        .await
        .expect("rx");
    assert!(hidden.is_empty(), "hidden during its visibility timeout");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let again = receive_n(
        p.queue.as_ref(),
        1,
        Duration::from_secs(30),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].message_id, first[0].message_id);
    assert_eq!(again[0].receive_count, 2);
    p.queue
        .set_visibility(&again[0].receipt, Duration::ZERO)
        .await
        .expect("release");
    let third = receive_n(
        p.queue.as_ref(),
        1,
        Duration::from_secs(30),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(third.len(), 1, "released message is visible at once");
    assert_eq!(third[0].receive_count, 3);
}

async fn redrive_after_max_receives(p: Ports) {
    let sent = message("evt_conf_redrive");
    let _ = p.queue.send_batch(std::slice::from_ref(&sent)).await;
    for n in 1..=2u32 {
        let got = receive_n(p.queue.as_ref(), 1, Duration::ZERO, Duration::from_secs(10)).await;
        assert_eq!(got.len(), 1, "delivery {n}");
        assert_eq!(got[0].receive_count, n);
    }
    // The receive after the last allowed one moves it.
    let none = p
        .queue
        .receive(10, Duration::from_secs(1), Duration::ZERO)
        .await
        .expect("rx");
    assert!(none.is_empty());
    let dead = receive_n(
        p.dlq.as_ref(),
        1,
        Duration::from_secs(30),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, sent.body);
    assert_eq!(dead[0].attributes["event_id"], "evt_conf_redrive");
}

async fn concurrent_completion_applies_once(p: Ports) {
    let id = EventId::new("evt_conf_race");
    let projection = payout("po_conf_race", id.as_str(), 100, "paid");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (store, id, projection) = (Arc::clone(&p.store), id.clone(), projection.clone());
        tasks.push(tokio::spawn(async move {
            store
                .complete(&id, "payout.updated", Change::project(&projection), now())
                .await
        }));
    }
    let mut applied = 0;
    let mut duplicates = 0;
    for t in tasks {
        match t.await.expect("task").expect("complete") {
            Completion::Completed(Outcome::Applied) => applied += 1,
            Completion::Duplicate => duplicates += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((applied, duplicates), (1, 7));
    let item = p
        .store
        .item("po_conf_race")
        .await
        .expect("read")
        .expect("item");
    assert_eq!(item.0["lastEventId"], "evt_conf_race");
    assert_eq!(item.0["status"], "paid");
    assert_eq!(item.0["amount"], 3780);
}

async fn concurrent_claims_admit_one(p: Ports) {
    let id = EventId::new("evt_conf_claim_race");
    let t = now();
    let mut tasks = Vec::new();
    for i in 0..6 {
        let (store, id) = (Arc::clone(&p.store), id.clone());
        tasks.push(tokio::spawn(async move {
            let owner = format!("delivery-{i}");
            store.claim(&id, "payout.updated", lease(&owner, t)).await
        }));
    }
    let mut started = 0;
    for task in tasks {
        match task.await.expect("task").expect("claim") {
            Claim::Started { attempts } => {
                assert_eq!(attempts, 1);
                started += 1;
            }
            Claim::Busy { lease_until } => assert_eq!(lease_until, t + 30),
            Claim::Completed => panic!("not completed yet"),
        }
    }
    assert_eq!(started, 1);
}

async fn older_events_are_stale(p: Ports) {
    let new = EventId::new("evt_conf_new");
    let old = EventId::new("evt_conf_old");
    let same = EventId::new("evt_conf_same_time");
    let r = p
        .store
        .complete(
            &new,
            "payout.updated",
            Change::project(&payout("po_conf_order", new.as_str(), 200, "paid")),
            now(),
        )
        .await
        .expect("new");
    assert_eq!(r, Completion::Completed(Outcome::Applied));
    let r = p
        .store
        .complete(
            &old,
            "payout.created",
            Change::project(&payout("po_conf_order", old.as_str(), 100, "pending")),
            now(),
        )
        .await
        .expect("old");
    assert_eq!(r, Completion::Completed(Outcome::Stale));
    let item = p
        .store
        .item("po_conf_order")
        .await
        .expect("read")
        .expect("item");
    assert_eq!(item.0["status"], "paid");
    assert_eq!(item.0["lastEventId"], "evt_conf_new");
    let rec = p
        .store
        .event("evt_conf_old")
        .await
        .expect("read")
        .expect("ledger");
    assert_eq!(
        (rec.status, rec.outcome),
        (EventStatus::Completed, Some(Outcome::Stale))
    );
    // Not older (same second) applies.
    let r = p
        .store
        .complete(
            &same,
            "payout.updated",
            Change::project(&payout("po_conf_order", same.as_str(), 200, "failed")),
            now(),
        )
        .await
        .expect("same");
    assert_eq!(r, Completion::Completed(Outcome::Applied));
}

async fn ledger_lifecycle_and_ttl(p: Ports) {
    let id = EventId::new("evt_conf_ledger");
    let t = now();
    assert_eq!(
        p.store
            .claim(&id, "payout.updated", lease("owner-a", t))
            .await
            .expect("claim"),
        Claim::Started { attempts: 1 }
    );
    assert!(matches!(
        p.store
            .claim(&id, "payout.updated", lease("owner-b", t))
            .await
            .expect("claim"),
        Claim::Busy { .. }
    ));
    p.store
        .fail(
            &id,
            "payout.updated",
            hookline_core::ports::Origin::source("test"),
            "store timed out",
            t,
            WritePath::Claimed,
        )
        .await
        .expect("fail");
    let rec = p
        .store
        .event(id.as_str())
        .await
        .expect("read")
        .expect("ledger");
    assert_eq!(rec.status, EventStatus::Failed);
    assert_eq!(rec.last_error.as_deref(), Some("store timed out"));
    // FAILED is processed again.
    assert_eq!(
        p.store
            .claim(&id, "payout.updated", lease("owner-c", t))
            .await
            .expect("claim"),
        Claim::Started { attempts: 2 }
    );
    // A lease that expired can be taken over.
    assert_eq!(
        p.store
            .claim(&id, "payout.updated", lease("owner-d", t + 31))
            .await
            .expect("claim"),
        Claim::Started { attempts: 3 }
    );
    let done = p
        .store
        .complete(
            &id,
            "payout.updated",
            Change::project(&payout("po_conf_ledger", id.as_str(), 1, "paid")),
            t,
        )
        .await
        .expect("complete");
    assert_eq!(done, Completion::Completed(Outcome::Applied));
    assert_eq!(
        p.store
            .claim(&id, "payout.updated", lease("owner-e", t + 100))
            .await
            .expect("claim"),
        Claim::Completed
    );
    p.store
        .fail(
            &id,
            "payout.updated",
            hookline_core::ports::Origin::source("test"),
            "late failure",
            t,
            WritePath::Claimed,
        )
        .await
        .expect("fail is a no-op");
    let rec = p
        .store
        .event(id.as_str())
        .await
        .expect("read")
        .expect("ledger");
    assert_eq!(rec.status, EventStatus::Completed);
    assert_eq!(rec.outcome, Some(Outcome::Applied));
    assert_eq!(rec.attempts, 3);
    assert_eq!(rec.event_type, "payout.updated");
    assert!(rec.completed_at.is_some());
    assert!(rec.expires_at >= t + LEDGER_TTL_SECS, "TTL attribute set");
    assert!(p
        .store
        .event("evt_conf_unknown")
        .await
        .expect("read")
        .is_none());
    assert!(p
        .store
        .item("po_conf_unknown")
        .await
        .expect("read")
        .is_none());
    p.store.ping().await.expect("ping");
}

async fn events_without_projection_are_ignored(p: Ports) {
    let id = EventId::new("evt_conf_ignored");
    assert_eq!(
        p.store
            .claim(&id, "customer.created", lease("owner-a", now()))
            .await
            .expect("claim"),
        Claim::Started { attempts: 1 }
    );
    let r = p
        .store
        .complete(&id, "customer.created", Change::Ignore("no handler"), now())
        .await
        .expect("complete");
    assert_eq!(r, Completion::Completed(Outcome::Ignored));
    let rec = p
        .store
        .event(id.as_str())
        .await
        .expect("read")
        .expect("ledger");
    assert_eq!((rec.attempts, rec.outcome), (1, Some(Outcome::Ignored)));
    assert_eq!(rec.reason.as_deref(), Some("no handler"));
    // `ignored` is not final: the event may be claimed and completed again.
    assert_eq!(
        p.store
            .claim(&id, "customer.created", lease("owner-b", now()))
            .await
            .expect("claim again"),
        Claim::Started { attempts: 2 }
    );
    assert_eq!(
        p.store
            .complete(
                &id,
                "customer.created",
                Change::Ignore("type not enabled"),
                now()
            )
            .await
            .expect("again"),
        Completion::Completed(Outcome::Ignored)
    );
    let rec = p
        .store
        .event(id.as_str())
        .await
        .expect("read")
        .expect("ledger");
    assert_eq!(rec.reason.as_deref(), Some("type not enabled"));
}

/// An event completed `ignored` (type not enabled, livemode, no handler)
/// is applied when it comes again; applied or stale is final.
async fn an_ignored_event_is_applied_when_it_comes_again(p: Ports) {
    let id = EventId::new("evt_conf_ignored_then_applied");
    let first = p
        .store
        .apply(
            &id,
            "payout.updated",
            Change::Ignore("type not enabled"),
            Origin::source("webhook"),
            now(),
        )
        .await
        .expect("ignore");
    assert_eq!(first.completion, Completion::Completed(Outcome::Ignored));
    assert!(p
        .store
        .item("po_conf_ignored")
        .await
        .expect("read")
        .is_none());
    let projection = payout("po_conf_ignored", id.as_str(), 300, "paid");
    let again = p
        .store
        .apply(
            &id,
            "payout.updated",
            Change::project(&projection),
            Origin::source("webhook"),
            now(),
        )
        .await
        .expect("apply");
    assert_eq!(again.completion, Completion::Completed(Outcome::Applied));
    assert_eq!(again.attempts, Some(2));
    let rec = p
        .store
        .event(id.as_str())
        .await
        .expect("read")
        .expect("ledger");
    assert_eq!(
        (rec.status, rec.outcome, rec.reason),
        (EventStatus::Completed, Some(Outcome::Applied), None)
    );
    assert_eq!(
        p.store
            .item("po_conf_ignored")
            .await
            .expect("read")
            .expect("item")
            .0["status"],
        "paid"
    );
    assert_eq!(
        p.store
            .apply(
                &id,
                "payout.updated",
                Change::Ignore("type not enabled"),
                Origin::source("webhook"),
                now()
            )
            .await
            .expect("final")
            .completion,
        Completion::Duplicate
    );
}

async fn a_retried_claim_gets_its_own_lease_back(p: Ports) {
    // The first answer was lost (timeout) after the store applied it; the
    // SDK retries the same claim: it must not look like another worker.
    let id = EventId::new("evt_conf_retried_claim");
    let t = now();
    let first = p
        .store
        .claim(&id, "payout.updated", lease("msg-1/1", t))
        .await
        .expect("claim");
    assert_eq!(first, Claim::Started { attempts: 1 });
    let retried = p
        .store
        .claim(&id, "payout.updated", lease("msg-1/1", t))
        .await
        .expect("claim");
    assert!(matches!(retried, Claim::Started { .. }), "{retried:?}");
    let other = p
        .store
        .claim(&id, "payout.updated", lease("msg-2/1", t))
        .await
        .expect("claim");
    assert_eq!(
        other,
        Claim::Busy {
            lease_until: t + 30
        }
    );
}

// ---------------------------------------------------------------------------
// The claim-free path (`Store::apply`) of effects that replace state.

async fn concurrent_applies_complete_once(p: Ports) {
    let id = EventId::new("evt_conf_apply_race");
    let projection = payout("po_conf_apply_race", id.as_str(), 100, "paid");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (store, id, projection) = (Arc::clone(&p.store), id.clone(), projection.clone());
        tasks.push(tokio::spawn(async move {
            store
                .apply(
                    &id,
                    "payout.updated",
                    Change::project(&projection),
                    Origin::source("webhook"),
                    now(),
                )
                .await
        }));
    }
    let mut applied = 0;
    let mut duplicates = 0;
    for t in tasks {
        match t.await.expect("task").expect("apply").completion {
            Completion::Completed(Outcome::Applied) => applied += 1,
            Completion::Duplicate => duplicates += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((applied, duplicates), (1, 7), "one completion");
    let item = p
        .store
        .item("po_conf_apply_race")
        .await
        .expect("read")
        .expect("item");
    assert_eq!(item.0["lastEventId"], "evt_conf_apply_race");
    assert_eq!(item.0["status"], "paid");
    let rec = p
        .store
        .event(id.as_str())
        .await
        .expect("read")
        .expect("ledger");
    assert_eq!(
        (rec.status, rec.outcome, rec.attempts),
        (EventStatus::Completed, Some(Outcome::Applied), 1)
    );
}

async fn applies_follow_created_then_life_cycle(p: Ports) {
    let apply = |id: &'static str, created: i64, status: &'static str, ties: Ties| {
        let store = Arc::clone(&p.store);
        async move {
            let projection = payout("po_conf_apply_order", id, created, status);
            store
                .apply(
                    &EventId::new(id),
                    "payout.updated",
                    Change::Project(&projection, ties),
                    Origin::source("webhook"),
                    now(),
                )
                .await
                .expect("apply")
        }
    };
    let state = || async {
        let item = p
            .store
            .item("po_conf_apply_order")
            .await
            .expect("read")
            .expect("item");
        (
            item.0["lastEventId"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            item.0["status"].as_str().unwrap_or_default().to_owned(),
        )
    };
    let done = |a: Applied| (a.completion, a.tie);
    let applied = Completion::Completed(Outcome::Applied);
    let stale = Completion::Completed(Outcome::Stale);
    assert_eq!(
        done(apply("evt_conf_b", 200, "in_transit", Ties::ByRank).await),
        (applied, None)
    );
    // Older: stale, no tie.
    assert_eq!(
        done(apply("evt_conf_a_older", 100, "pending", Ties::ByRank).await),
        (stale, None)
    );
    // The same second: the status that can only come later wins, whatever
    // the event ids or the order of arrival.
    assert_eq!(
        done(apply("evt_conf_c", 200, "paid", Ties::ByRank).await),
        (applied, Some(Tie::Ordered))
    );
    assert_eq!(
        done(apply("evt_conf_z_same", 200, "pending", Ties::ByRank).await),
        (stale, Some(Tie::Ordered))
    );
    assert_eq!(state().await, ("evt_conf_c".to_owned(), "paid".to_owned()));
    // Equal ranks cannot be ordered: the later write is kept, and said so.
    assert_eq!(
        done(apply("evt_conf_a_failed", 200, "failed", Ties::ByRank).await),
        (applied, Some(Tie::Unresolved))
    );
    // A duplicate of an applied event changes nothing.
    assert_eq!(
        done(apply("evt_conf_b", 200, "in_transit", Ties::ByRank).await).0,
        Completion::Duplicate
    );
    assert_eq!(
        state().await,
        ("evt_conf_a_failed".to_owned(), "failed".to_owned())
    );
    // Asked to refuse a tie, the store writes nothing and completes nothing.
    assert_eq!(
        done(apply("evt_conf_d", 200, "paid", Ties::Refuse).await).0,
        Completion::Tied
    );
    assert!(p.store.event("evt_conf_d").await.expect("read").is_none());
    // Stripe's current state outranks every snapshot of its second.
    let current = payout("po_conf_apply_order", "evt_conf_d", 200, "paid").as_current();
    let a = p
        .store
        .apply(
            &EventId::new("evt_conf_d"),
            "payout.updated",
            Change::project(&current),
            Origin::source("webhook"),
            now(),
        )
        .await
        .expect("current");
    assert_eq!((a.completion, a.tie), (applied, Some(Tie::Ordered)));
    assert_eq!(state().await, ("evt_conf_d".to_owned(), "paid".to_owned()));
    assert_eq!(
        done(apply("evt_conf_e_late", 200, "failed", Ties::ByRank).await),
        (stale, Some(Tie::Ordered))
    );
    assert_eq!(
        done(apply("evt_conf_f_late", 200, "failed", Ties::Refuse).await).0,
        Completion::Tied
    );
    // A later second is never a tie.
    assert_eq!(
        done(apply("evt_conf_g", 201, "pending", Ties::Refuse).await),
        (applied, None)
    );
    let rec = p
        .store
        .event("evt_conf_z_same")
        .await
        .expect("read")
        .expect("ledger");
    assert_eq!(
        (rec.outcome, rec.object_id.as_deref()),
        (Some(Outcome::Stale), Some("po_conf_apply_order"))
    );
}

async fn apply_counts_tries_and_records_the_source(p: Ports) {
    let id = EventId::new("evt_conf_apply_tries");
    // A failed try without a claim counts itself.
    p.store
        .fail(
            &id,
            "customer.created",
            hookline_core::ports::Origin::source("test"),
            "store timed out",
            now(),
            WritePath::Apply,
        )
        .await
        .expect("fail");
    assert_eq!(
        p.store
            .event(id.as_str())
            .await
            .expect("read")
            .map(|r| r.attempts),
        Some(1)
    );
    let done = p
        .store
        .apply(
            &id,
            "customer.created",
            Change::project(&payout("po_conf_apply_tries", id.as_str(), 1, "paid")),
            Origin::source("eventbridge"),
            now(),
        )
        .await
        .expect("apply");
    assert_eq!(done.completion, Completion::Completed(Outcome::Applied));
    assert_eq!(done.attempts, Some(2));
    let rec = p
        .store
        .event(id.as_str())
        .await
        .expect("read")
        .expect("ledger");
    assert_eq!(
        (
            rec.status,
            rec.attempts,
            rec.source.as_deref(),
            rec.last_error.is_some()
        ),
        (EventStatus::Completed, 2, Some("eventbridge"), true)
    );
    // A late failure does not undo the completion.
    p.store
        .fail(
            &id,
            "customer.created",
            hookline_core::ports::Origin::source("test"),
            "late",
            now(),
            WritePath::Apply,
        )
        .await
        .expect("fail");
    let rec = p
        .store
        .event(id.as_str())
        .await
        .expect("read")
        .expect("ledger");
    assert_eq!((rec.status, rec.attempts), (EventStatus::Completed, 2));
}
