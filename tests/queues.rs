//! What the queues promise: a copy carries a deduplication id of its own
//! (FIFO, within SQS's 5-minute window), and concurrent receives never
//! take the same message.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use hookline_core::message::OutboundMessage;
use hookline_core::records::Outcome;

use crate::helpers::*;

pub(crate) const DEAD_LETTERED: &str = "hookline_events_dead_lettered_total";

/// A poison event: a Stripe event whose object has no id.
pub(crate) fn poison(id: &str) -> String {
    let mut v: serde_json::Value =
        serde_json::from_str(&event_with("payout.created", id, now())).expect("json");
    v["data"]["object"]
        .as_object_mut()
        .expect("object")
        .remove("id");
    v.to_string()
}

/// The worker's DLQ copy and the replay's copy of a poison event on FIFO
/// queues, within SQS's 5-minute deduplication window (scripts/moto_server.py
/// keeps it as SQS does): neither copy may be dropped as a duplicate.
#[tokio::test(flavor = "multi_thread")]
async fn fifo_poison_event_dead_lettered_and_replayed_at_once_comes_back() {
    crate::skip_without_aws!();
    let fixture = aws_fixture_with(5, true).await;
    let body = poison("evt_test_fifo_poison");
    let env = hookline_core::envelope::Envelope::parse(body.as_bytes()).expect("event");
    let msg = OutboundMessage::for_event(&env, Bytes::from(body), now());
    assert!(fixture.backend.queue.send_batch(&[msg]).await[0].is_ok());
    let mut worker_env = fixture.env();
    worker_env.push(("MAX_RECEIVES".to_owned(), "5".to_owned()));
    let worker = start_worker_env(&worker_env);
    let dlq = fixture.dlq();
    let dead = || async {
        let d = dlq.counts().await.expect("counts");
        d.waiting + d.in_flight
    };
    assert!(eventually(Duration::from_secs(30), || async { dead().await == 1 }).await);

    // Replayed at once: the copy reaches the main queue, the worker fails it
    // again, and its second DLQ copy is accepted too.
    let (code, out, err) = run_hookline(&fixture.env(), &[], &["dlq", "replay", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["replayed"], 1);
    assert!(
        eventually(Duration::from_secs(30), || async {
            metric(&worker, DEAD_LETTERED).await == 2
        })
        .await,
        "the replayed copy was delivered and dead-lettered again"
    );
    assert!(
        eventually(Duration::from_secs(20), || async { dead().await == 1 }).await,
        "back in the DLQ"
    );
    let rec = fixture
        .backend
        .store
        .event("evt_test_fifo_poison")
        .await
        .expect("read")
        .expect("ledger");
    assert_eq!(rec.attempts, 2, "processed twice: {rec:?}");
    let back = receive_n(
        dlq.as_ref(),
        1,
        Duration::from_secs(30),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].attributes["event_id"], "evt_test_fifo_poison");
}

/// An event that failed and was dead-lettered within 5 minutes of its
/// first send is replayed once the cause is gone, and is applied.
#[tokio::test(flavor = "multi_thread")]
async fn fifo_replayed_event_that_now_succeeds_is_applied() {
    crate::skip_without_aws!();
    let fixture = aws_fixture_with(5, true).await;
    let body = event_with("payout.updated", "evt_test_fifo_ok", now());
    let env = hookline_core::envelope::Envelope::parse(body.as_bytes()).expect("event");
    let original = OutboundMessage::for_event(&env, Bytes::from(body), now());
    let queue = &fixture.backend.queue;
    assert!(queue.send_batch(&[original]).await[0].is_ok());
    // What a worker does when it gives up on a delivery: copy to the DLQ
    // with the reason, then delete the original.
    let got = receive_n(
        queue.as_ref(),
        1,
        Duration::from_secs(30),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(got.len(), 1);
    let mut copy = got[0].to_outbound();
    copy.attributes.insert(
        "error".to_owned(),
        "gave up after 5 deliveries: timeout".to_owned(),
    );
    assert!(fixture.dlq().send_batch(&[copy]).await[0].is_ok());
    assert!(queue.delete_batch(&[got[0].receipt.clone()]).await[0].is_ok());

    let (code, out, err) = run_hookline(&fixture.env(), &[], &["dlq", "replay", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["replayed"], 1);
    let counts = queue.counts().await.expect("counts");
    assert_eq!(
        counts.waiting, 1,
        "the copy is in the queue, not dropped as a duplicate"
    );
    let _worker = start_worker_env(&fixture.env());
    let ids = ["evt_test_fifo_ok".to_owned()];
    let store = &fixture.backend.store;
    assert!(
        eventually(Duration::from_secs(30), || async {
            store
                .event(&ids[0])
                .await
                .ok()
                .flatten()
                .is_some_and(|r| r.outcome == Some(Outcome::Applied))
        })
        .await
    );
    let item = store
        .item("po_1QhLsCExamplePayout1")
        .await
        .expect("read")
        .expect("item");
    assert_eq!(item.0["lastEventId"], "evt_test_fifo_ok");
}

/// Concurrent receives on one SQS queue never hand out the same message
/// (scripts/moto_server.py makes moto hide a message as it hands it out, as
/// SQS does; moto alone gave 2 of 600 messages twice under load). Two
/// concurrent `dlq replay` runs rely on it to move each message once.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_receives_never_take_the_same_message() {
    crate::skip_without_aws!();
    let fixture = aws_fixture_with(5, false).await;
    let messages: Vec<OutboundMessage> = (0..60)
        .map(|i| {
            let body = event_with("payout.updated", &format!("evt_test_rx{i:02}"), now());
            let env = hookline_core::envelope::Envelope::parse(body.as_bytes()).expect("event");
            OutboundMessage::for_event(&env, Bytes::from(body), now())
        })
        .collect();
    for chunk in messages.chunks(10) {
        assert!(fixture
            .backend
            .queue
            .send_batch(chunk)
            .await
            .iter()
            .all(Result::is_ok));
    }
    let receivers: Vec<_> = (0..8)
        .map(|_| {
            let queue = fixture.backend.queue.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                loop {
                    let batch = queue
                        .receive(10, Duration::from_secs(1), Duration::from_secs(300))
                        .await
                        .expect("receive");
                    if batch.is_empty() {
                        return ids;
                    }
                    ids.extend(batch.into_iter().map(|d| d.message_id));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for r in receivers {
        all.extend(r.await.expect("receiver"));
    }
    let distinct: BTreeSet<&String> = all.iter().collect();
    assert_eq!(distinct.len(), 60, "every message was received");
    assert_eq!(all.len(), 60, "no message was received twice");
}
