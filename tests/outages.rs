//! The worker under outages and at SIGTERM: a store that is down or
//! misconfigured for a while dead-letters nothing (the circuit breaker
//! stops receiving until the store answers), a poison event still goes to
//! the DLQ with its reason, and a long poll under way at SIGTERM strands no
//! message.

use std::time::Duration;

use crate::bed::Bed;
use crate::helpers::*;

/// Payout events of distinct objects, and their ids.
fn payouts(prefix: &str, n: usize) -> (Vec<String>, Vec<String>) {
    (0..n)
        .map(|i| {
            let id = format!("evt_test_{prefix}_{i}");
            let mut v: serde_json::Value =
                serde_json::from_str(&event_with("payout.created", &id, 1_700_000_000))
                    .expect("json");
            v["data"]["object"]["id"] = format!("po_{prefix}_{i}").into();
            (id, v.to_string())
        })
        .unzip()
}

/// An event without `created`: the worker can only dead-letter it.
fn poison(id: &str) -> String {
    let mut v: serde_json::Value =
        serde_json::from_str(&event_with("payout.created", id, 1_700_000_000)).expect("json");
    v.as_object_mut().expect("object").remove("created");
    v["data"]["object"]["id"] = format!("po_{id}").into();
    v.to_string()
}

async fn readyz(worker: &WorkerProc) -> u16 {
    let url = worker.metrics_url.replace("/metrics", "/readyz");
    reqwest::get(&url)
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Asserts the DLQ holds exactly the poison event, with its reason.
async fn only_the_poison_is_dead_lettered(bed: &Bed, poison_id: &str) {
    let dead = bed.dead_letters().await;
    let ids: Vec<String> = dead
        .iter()
        .map(|d| {
            d.attributes
                .get("event_id")
                .cloned()
                .unwrap_or_else(|| "?".to_owned())
        })
        .collect();
    assert_eq!(ids, [poison_id], "only the poison event: {ids:?}");
    let reason = dead[0].attributes.get("error").cloned().unwrap_or_default();
    assert!(reason.contains("created"), "with its reason: {reason}");
}

/// A 45 s store outage with the default settings (MAX_RECEIVES 5, backoff
/// from 1 s): nothing valid is dead-lettered, `/readyz` is 503 and the
/// breaker's metric is 1 while it lasts, every event is applied after it
/// ends, and the poison event sent with them is dead-lettered with its
/// reason.
async fn a_45_second_store_outage_dead_letters_nothing(bed: Bed) {
    let worker = bed.worker(&[("RETRY_MAX_SECS", "300"), ("RECEIVE_WAIT_SECS", "10")]);
    assert!(eventually(Duration::from_secs(10), || ready(&worker)).await);
    let (ids, mut bodies) = payouts("outage45", 6);
    bodies.push(poison("evt_test_outage45_poison"));
    let during = async {
        tokio::time::sleep(Duration::from_secs(20)).await;
        (
            readyz(&worker).await,
            metric(
                &worker,
                "hookline_dependency_unavailable{dependency=\"store\"}",
            )
            .await
                + metric(
                    &worker,
                    "hookline_dependency_unavailable{dependency=\"queue\"}",
                )
                .await,
            metric(&worker, "hookline_events_dead_lettered_total").await,
        )
    };
    let ((), (status, unavailable, dead_during)) = tokio::join!(
        bed.store_outage_with(&bodies, Duration::from_secs(45)),
        during
    );
    assert!(
        dead_during <= 1,
        "at most the poison event dead-lettered during the outage: {dead_during}"
    );
    assert_eq!(status, 503, "not ready while the store is down");
    assert_eq!(unavailable, 1, "the breaker's metric says so");
    assert!(
        eventually(Duration::from_secs(40), || bed.all_completed(&ids)).await,
        "every event applied after the outage: {} of {}",
        bed.completed(&ids).await,
        ids.len()
    );
    assert!(
        eventually(Duration::from_secs(20), || async {
            metric(&worker, "hookline_events_dead_lettered_total").await == 1
        })
        .await,
        "the poison event is dead-lettered"
    );
    assert!(metric(&worker, "hookline_circuit_opened_total").await >= 1);
    assert!(
        eventually(Duration::from_secs(20), || async {
            readyz(&worker).await == 200
        })
        .await,
        "ready again"
    );
    only_the_poison_is_dead_lettered(&bed, "evt_test_outage45_poison").await;
    for id in &ids {
        let rec = bed.ledger(id).await.expect("ledger");
        assert_eq!(rec.outcome, Some(hookline_core::records::Outcome::Applied));
    }
}

crate::on_both_backends!(a_45_second_store_outage_dead_letters_nothing(5));

/// A worker pointed at a table that does not exist yet, with
/// MAX_RECEIVES=3: for two minutes nothing is dead-lettered, then the
/// table is created and every event is applied; the poison event sent
/// with them ends in the DLQ with its reason. (The embedded backend has
/// no such misconfiguration: it creates its own tables.)
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_table_for_two_minutes_dead_letters_nothing() {
    crate::skip_without_aws!();
    let bed = Bed::aws(3).await;
    let missing = format!(
        "events-late-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let worker = bed.worker(&[
        ("EVENTS_TABLE_NAME", missing.as_str()),
        ("RETRY_MAX_SECS", "300"),
        ("RECEIVE_WAIT_SECS", "10"),
    ]);
    assert!(eventually(Duration::from_secs(10), || ready(&worker)).await);
    let (ids, mut bodies) = payouts("late_table", 3);
    bodies.push(poison("evt_test_late_table_poison"));
    bed.enqueue(&bodies).await;
    let started = std::time::Instant::now();
    assert!(
        eventually(Duration::from_secs(20), || async {
            metric(&worker, "hookline_configuration_errors_total").await >= 1
        })
        .await
    );
    assert_eq!(readyz(&worker).await, 503);
    tokio::time::sleep(Duration::from_secs(120).saturating_sub(started.elapsed())).await;
    // The poison event fails on its own and may be dead-lettered at once
    // (the DLQ is up); nothing else is.
    assert!(
        metric(&worker, "hookline_events_dead_lettered_total").await <= 1,
        "nothing valid dead-lettered in two minutes"
    );
    let d = bed.dlq.counts().await.expect("counts");
    assert!(
        d.waiting + d.in_flight <= 1,
        "at most the poison event in the DLQ"
    );
    let q = bed.queue.counts().await.expect("counts");
    assert!(
        q.waiting + q.in_flight >= 3,
        "the valid events wait on the queue"
    );

    // The operator creates the table the worker names.
    let clients = hookline_aws::AwsClients::load().await;
    let late = hookline_aws::Tables {
        events: missing.clone(),
        objects: bed.setting("OBJECTS_TABLE_NAME"),
        provider: bed.setting("PROVIDER_TABLE_NAME"),
    };
    hookline_aws::provision::create_tables(&clients.dynamodb, &late)
        .await
        .expect("create the table");
    let store = aws_backend(&bed.setting("QUEUE_URL"), &bed.setting("DLQ_URL"), 3, &late)
        .await
        .store;
    assert!(
        eventually(Duration::from_secs(60), || async {
            let mut n = 0;
            for id in &ids {
                if store
                    .event(id)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|r| r.status == hookline_core::records::EventStatus::Completed)
                {
                    n += 1;
                }
            }
            n == ids.len()
        })
        .await,
        "every event applied once the table exists"
    );
    assert!(
        eventually(Duration::from_secs(30), || async {
            metric(&worker, "hookline_events_dead_lettered_total").await == 1
        })
        .await
    );
    only_the_poison_is_dead_lettered(&bed, "evt_test_late_table_poison").await;
}

/// Messages sent while the worker's last long poll is under way, just
/// after SIGTERM: once the worker has exited they are visible again within
/// a second, not hidden for their visibility timeout by a poll the worker
/// gave up on. None of them was processed.
async fn sigterm_strands_no_message(bed: Bed) {
    let mut worker = bed.worker(&[("RECEIVE_WAIT_SECS", "5")]);
    assert!(eventually(Duration::from_secs(10), || ready(&worker)).await);
    // Idle: a long poll is under way.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (ids, bodies) = payouts("term_poll", 3);
    signal(&worker.child, "TERM");
    // Well after SIGTERM, within the poll's 5 s wait.
    tokio::time::sleep(Duration::from_millis(800)).await;
    bed.enqueue(&bodies).await;
    assert_eq!(
        wait_exit(&mut worker.child, Duration::from_secs(15)),
        Some(0)
    );
    let exited = std::time::Instant::now();
    let mut visible = 0;
    while exited.elapsed() < Duration::from_secs(1) {
        visible = bed.queue.counts().await.expect("counts").waiting;
        if visible == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        visible, 3,
        "every message visible within a second of the exit"
    );
    assert_eq!(bed.completed(&ids).await, 0, "none was processed");
}

crate::on_both_backends!(sigterm_strands_no_message(5));
