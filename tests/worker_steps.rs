//! The worker stepped in-process: `Processor::process` against a real
//! embedded store, one delivery at a time, with the clock and the jitter
//! draw as parameters. Each case names the decision the rules require.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hookline_core::envelope::EventId;
use hookline_core::handlers::{Effect, Handler};
use hookline_core::ports::{Change, Claim, Delivery, Lease, Origin, Store};
use hookline_core::records::{Completion, EventStatus, Outcome};
use hookline_core::settings::{AppEnv, EventFilter};
use hookline_worker::decide::Decision;
use hookline_worker::process::Processor;

use crate::helpers::*;

const NOW: i64 = 1_800_000_000;

struct Steps {
    processor: Processor,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

fn steps() -> Steps {
    steps_with(hookline_core::handlers::registered)
}

/// The built-in handlers declared as not idempotent: the claim +
/// transaction path a deployment's own `Effect::Once` handler takes.
fn once(event_type: &str) -> Option<(Handler, Effect)> {
    hookline_core::handlers::registered(event_type).map(|(h, _)| (h, Effect::Once))
}

fn steps_with(registry: hookline_core::handlers::Registry) -> Steps {
    let dir = tempfile::tempdir().expect("tmp");
    let e =
        hookline_embedded::open(dir.path(), hookline_embedded::Options::default()).expect("open");
    let store: Arc<dyn Store> = e.store;
    Steps {
        processor: Processor {
            registry,
            ..Processor::with_defaults(Arc::clone(&store))
        },
        store,
        _dir: dir,
    }
}

fn delivery(body: &str, message_id: &str, receive_count: u32) -> Delivery {
    Delivery {
        message_id: message_id.to_owned(),
        receipt: format!("{message_id}-{receive_count}"),
        body: Bytes::from(body.to_owned()),
        attributes: BTreeMap::new(),
        receive_count,
        sent_at_ms: 0,
        group_id: None,
    }
}

fn payout(id: &str, created: i64) -> String {
    event_with("payout.updated", id, created)
}

#[tokio::test]
async fn a_first_delivery_applies_and_a_second_is_a_duplicate() {
    let s = steps();
    let body = payout("evt_test_step_dup", 100);
    let (d, info) = s
        .processor
        .process(&delivery(&body, "m1", 1), NOW, 0.5)
        .await;
    assert_eq!(d, Decision::Done(Completion::Completed(Outcome::Applied)));
    assert_eq!(info.attempts, Some(1));
    let (d, _) = s
        .processor
        .process(&delivery(&body, "m2", 1), NOW, 0.5)
        .await;
    assert_eq!(d, Decision::Done(Completion::Duplicate));
}

#[tokio::test]
async fn an_older_event_of_the_same_object_is_stale() {
    let s = steps();
    let newer = payout("evt_test_step_new", 200);
    let older = payout("evt_test_step_old", 100);
    let (d, _) = s
        .processor
        .process(&delivery(&newer, "m1", 1), NOW, 0.5)
        .await;
    assert_eq!(d, Decision::Done(Completion::Completed(Outcome::Applied)));
    let (d, _) = s
        .processor
        .process(&delivery(&older, "m2", 1), NOW, 0.5)
        .await;
    assert_eq!(d, Decision::Done(Completion::Completed(Outcome::Stale)));
    let item = s
        .store
        .item("po_1QhLsCExamplePayout1")
        .await
        .expect("read")
        .expect("item");
    assert_eq!(item.0["lastEventId"], "evt_test_step_new");
}

#[tokio::test]
async fn an_event_leased_by_another_delivery_is_busy_then_taken_over_when_the_lease_ends() {
    // The lease belongs to the transactional path (an `Effect::Once` handler).
    let s = steps_with(once);
    let body = payout("evt_test_step_busy", 100);
    let id = EventId::new("evt_test_step_busy");
    // Another worker's delivery holds the lease (it crashed mid-way).
    let held = s
        .store
        .claim(
            &id,
            "payout.updated",
            Lease {
                owner: "other/1",
                now: NOW,
                secs: 30,
                origin: Origin::source("webhook"),
            },
        )
        .await
        .expect("claim");
    assert_eq!(held, Claim::Started { attempts: 1 });
    let (d, _) = s
        .processor
        .process(&delivery(&body, "m2", 1), NOW + 5, 1.0)
        .await;
    match d {
        Decision::Busy { delay } => {
            assert!(
                delay >= Duration::from_millis(500) && delay <= Duration::from_secs(26),
                "{delay:?}"
            )
        }
        other => panic!("expected busy, got {other:?}"),
    }
    // The lease ended: the next delivery takes it over and applies.
    let (d, info) = s
        .processor
        .process(&delivery(&body, "m2", 2), NOW + 31, 1.0)
        .await;
    assert_eq!(d, Decision::Done(Completion::Completed(Outcome::Applied)));
    assert_eq!(info.attempts, Some(2));
}

#[tokio::test]
async fn a_missing_required_field_is_permanent_with_a_failed_ledger_item() {
    let s = steps();
    let mut v: serde_json::Value =
        serde_json::from_str(&payout("evt_test_step_perm", 100)).expect("json");
    v.as_object_mut().expect("object").remove("created");
    let (d, _) = s
        .processor
        .process(&delivery(&v.to_string(), "m1", 1), NOW, 0.5)
        .await;
    match d {
        Decision::DeadLetter { reason } => assert!(reason.contains("created"), "{reason}"),
        other => panic!("expected dead-letter, got {other:?}"),
    }
    let rec = s
        .store
        .event("evt_test_step_perm")
        .await
        .expect("read")
        .expect("ledger");
    assert_eq!(rec.status, EventStatus::Failed);
    // A body that is not an event at all is permanent too.
    let (d, _) = s
        .processor
        .process(&delivery("not json", "m2", 1), NOW, 0.5)
        .await;
    assert!(matches!(d, Decision::DeadLetter { .. }), "{d:?}");
}

#[tokio::test]
async fn a_store_outage_is_transient_and_requeued_on_the_last_delivery() {
    let s = steps();
    let body = payout("evt_test_step_transient", 100);
    // Another process holds the write lock; the store gives up quickly.
    let dir = tempfile::tempdir().expect("tmp");
    let options = hookline_embedded::Options {
        busy_timeout: Duration::from_millis(100),
        ..Default::default()
    };
    let e = hookline_embedded::open(dir.path(), options).expect("open");
    let locked = Processor {
        store: e.store,
        ..s.processor.clone()
    };
    let lock = hookline_embedded::testing::WriteLock::hold(dir.path(), Duration::from_secs(5))
        .expect("lock");
    let (d, _) = locked.process(&delivery(&body, "m1", 2), NOW, 1.0).await;
    match d {
        Decision::RetryLater { delay, error, .. } => {
            assert_eq!(
                delay,
                Duration::from_secs(2),
                "full jitter of the 2nd ceiling, draw 1.0"
            );
            assert!(!error.is_configuration());
        }
        other => panic!("expected retry, got {other:?}"),
    }
    // The store's failure is not the event's: on the last delivery it is
    // requeued, never dead-lettered.
    let (d, _) = locked.process(&delivery(&body, "m1", 5), NOW, 1.0).await;
    match d {
        Decision::Requeue { error, .. } => {
            assert!(error.is_retryable(), "{error}")
        }
        other => panic!("expected a requeue, got {other:?}"),
    }
    lock.release().expect("unlock");
    // Once the lock is gone, the same event applies.
    let (d, _) = locked.process(&delivery(&body, "m1", 3), NOW, 1.0).await;
    assert_eq!(d, Decision::Done(Completion::Completed(Outcome::Applied)));
}

#[tokio::test]
async fn events_outside_the_admission_rules_complete_ignored() {
    let s = steps();
    let mut live: serde_json::Value =
        serde_json::from_str(&payout("evt_test_step_live", 100)).expect("json");
    live["livemode"] = true.into();
    let (d, _) = s
        .processor
        .process(&delivery(&live.to_string(), "m1", 1), NOW, 0.5)
        .await;
    assert_eq!(d, Decision::Done(Completion::Completed(Outcome::Ignored)));
    let mut other: serde_json::Value =
        serde_json::from_str(&payout("evt_test_step_other", 100)).expect("json");
    other["type"] = "customer.created".into();
    let other = other.to_string();
    let (d, _) = s
        .processor
        .process(&delivery(&other, "m2", 1), NOW, 0.5)
        .await;
    assert_eq!(d, Decision::Done(Completion::Completed(Outcome::Ignored)));
}

/// The built-in handlers replace state: no claim, so another delivery's
/// live lease does not hold the event up; the write is guarded by the
/// stored state and the ledger records one completion.
#[tokio::test]
async fn an_effect_that_replaces_state_takes_no_claim() {
    let s = steps();
    let body = payout("evt_test_step_replace", 100);
    let id = EventId::new("evt_test_step_replace");
    s.store
        .claim(
            &id,
            "payout.updated",
            Lease {
                owner: "other/1",
                now: NOW,
                secs: 30,
                origin: Origin::source("webhook"),
            },
        )
        .await
        .expect("claim");
    let (d, info) = s
        .processor
        .process(&delivery(&body, "m2", 1), NOW + 5, 1.0)
        .await;
    assert_eq!(d, Decision::Done(Completion::Completed(Outcome::Applied)));
    assert_eq!(info.attempts, Some(2), "the other claim's try and this one");
    let rec = s
        .store
        .event("evt_test_step_replace")
        .await
        .expect("read")
        .expect("ledger");
    assert_eq!(
        (rec.status, rec.outcome, rec.lease_until),
        (EventStatus::Completed, Some(Outcome::Applied), None)
    );
    // The other delivery, finishing late, finds it completed.
    assert_eq!(
        s.store
            .complete(&id, "payout.updated", Change::Ignore("no handler"), NOW + 6)
            .await
            .expect("complete"),
        hookline_core::records::Completion::Duplicate
    );
}

/// The transactional path (an `Effect::Once` handler) applies once, and a
/// second delivery is a duplicate before anything is written.
#[tokio::test]
async fn an_effect_that_must_happen_once_is_claimed_then_committed() {
    let s = steps_with(once);
    let body = payout("evt_test_step_once", 100);
    let (d, info) = s
        .processor
        .process(&delivery(&body, "m1", 1), NOW, 0.5)
        .await;
    assert_eq!(d, Decision::Done(Completion::Completed(Outcome::Applied)));
    assert_eq!(info.attempts, Some(1));
    let (d, _) = s
        .processor
        .process(&delivery(&body, "m2", 1), NOW, 0.5)
        .await;
    assert_eq!(d, Decision::Done(Completion::Duplicate));
    let rec = s
        .store
        .event("evt_test_step_once")
        .await
        .expect("read")
        .expect("ledger");
    assert_eq!((rec.status, rec.attempts), (EventStatus::Completed, 1));
}

/// A team's handler declared `Effect::Once`: it waits inside until told.
#[derive(Debug)]
struct Gate {
    calls: std::sync::atomic::AtomicU32,
    entered: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl hookline_core::ports::Destination for Gate {
    fn name(&self) -> &str {
        "handler:payout.updated"
    }
    fn retry_for(&self) -> Duration {
        Duration::from_secs(86_400)
    }
    fn effect(&self) -> Effect {
        Effect::Once
    }
    async fn deliver(
        &self,
        _event: hookline_core::ports::Outgoing<'_>,
    ) -> Result<(), hookline_core::ports::DeliveryError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.entered.notify_one();
        self.release.notified().await;
        Ok(())
    }
}

#[tokio::test]
async fn a_handler_that_must_run_once_runs_under_the_claim() {
    let mut s = steps();
    let enabled: EventFilter = "payout.updated,account.updated".parse().expect("filter");
    let mut routes = hookline_core::routes::Routes::parse(
        "[[destination]]\nname = \"tables\"\nkind = \"projections\"\nevents = [\"account.updated\"]\n",
        &"account.updated".parse().expect("filter"),
        AppEnv::Development,
    )
    .expect("routes");
    routes.add_handler("handler:payout.updated", "payout.updated");
    let gate = Arc::new(Gate {
        calls: Default::default(),
        entered: Default::default(),
        release: Default::default(),
    });
    s.processor.enabled = enabled;
    s.processor.routing = hookline_worker::route::Routing::new(
        routes,
        vec![gate.clone() as Arc<dyn hookline_core::ports::Destination>],
    );
    let body = payout("evt_test_step_once", 100);
    let first = {
        let p = s.processor.clone();
        let d = delivery(&body, "m1", 1);
        tokio::spawn(async move { p.process(&d, NOW, 0.5).await.0 })
    };
    gate.entered.notified().await;
    // While the handler runs, the event is claimed: another delivery of it
    // is told to come back, and the handler is not called a second time.
    let rec = s
        .store
        .event("evt_test_step_once")
        .await
        .expect("read")
        .expect("item");
    assert_eq!(rec.status, EventStatus::Processing);
    assert!(rec.lease_until.is_some_and(|u| u > NOW));
    let copy = delivery(&body, "m2", 1);
    let second = s.processor.process(&copy, NOW, 0.5);
    let (d, _) = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("not held inside the handler: told to come back");
    assert!(matches!(d, Decision::Busy { .. }), "{d:?}");
    gate.release.notify_one();
    assert_eq!(
        first.await.expect("task"),
        Decision::Done(Completion::Completed(Outcome::Applied))
    );
    let rec = s
        .store
        .event("evt_test_step_once")
        .await
        .expect("read")
        .expect("item");
    assert!(rec.destinations["handler:payout.updated"].delivered);
    let (d, _) = s
        .processor
        .process(&delivery(&body, "m3", 1), NOW + 1, 0.5)
        .await;
    assert_eq!(d, Decision::Done(Completion::Duplicate));
    assert_eq!(
        gate.calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "run once"
    );
}
