//! The embedded queue's SQS semantics on a real SQLite file: visibility,
//! receive counts, redrive, FIFO groups.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hookline_core::message::OutboundMessage;
use hookline_core::ports::Queue;
use hookline_embedded::Options;

fn message(i: usize) -> OutboundMessage {
    let id = format!("evt_test_q_{i}");
    let mut attributes = BTreeMap::new();
    attributes.insert("event_id".to_owned(), id.clone());
    OutboundMessage {
        body: Bytes::from(format!("{{\"id\":\"{id}\"}}")),
        attributes,
        group_id: id.clone(),
        dedup_id: id,
    }
}

fn options(max_receives: u32) -> Options {
    Options {
        max_receives,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_received_message_stays_hidden_for_its_visibility_timeout() {
    let dir = tempfile::tempdir().expect("tmp");
    let q = hookline_embedded::open(dir.path(), options(5)).expect("open");
    assert!(q
        .queue
        .send_batch(&[message(1)])
        .await
        .iter()
        .all(Result::is_ok));
    let first = q
        .queue
        .receive(10, Duration::ZERO, Duration::from_millis(600))
        .await
        .expect("receive");
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].receive_count, 1);
    let counts = q.queue.counts().await.expect("counts");
    assert_eq!((counts.waiting, counts.in_flight), (0, 1));
    let hidden = q
        .queue
        .receive(10, Duration::ZERO, Duration::from_secs(30))
        .await
        .expect("receive");
    assert!(
        hidden.is_empty(),
        "hidden while its visibility timeout runs"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    let again = q
        .queue
        .receive(10, Duration::ZERO, Duration::from_secs(30))
        .await
        .expect("receive");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].receive_count, 2);
    assert_eq!(again[0].message_id, first[0].message_id);
    // The first delivery's receipt is stale now: it cannot delete.
    let _ = q.queue.delete_batch(&[first[0].receipt.clone()]).await;
    assert_eq!(q.queue.counts().await.expect("counts").in_flight, 1);
    assert!(q.queue.delete_batch(&[again[0].receipt.clone()]).await[0].is_ok());
    let counts = q.queue.counts().await.expect("counts");
    assert_eq!((counts.waiting, counts.in_flight), (0, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn set_visibility_hides_or_releases_a_delivery() {
    let dir = tempfile::tempdir().expect("tmp");
    let q = hookline_embedded::open(dir.path(), options(5)).expect("open");
    let _ = q.queue.send_batch(&[message(1)]).await;
    let d = q
        .queue
        .receive(1, Duration::ZERO, Duration::from_secs(30))
        .await
        .expect("rx");
    q.queue
        .set_visibility(&d[0].receipt, Duration::ZERO)
        .await
        .expect("release");
    let d2 = q
        .queue
        .receive(1, Duration::ZERO, Duration::from_secs(30))
        .await
        .expect("rx");
    assert_eq!(d2.len(), 1, "released message is visible at once");
    assert!(
        q.queue
            .set_visibility(&d[0].receipt, Duration::ZERO)
            .await
            .is_err(),
        "stale receipt"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_received_max_receives_times_moves_to_the_dlq_with_its_body() {
    let dir = tempfile::tempdir().expect("tmp");
    let q = hookline_embedded::open(dir.path(), options(3)).expect("open");
    let sent = message(7);
    let _ = q.queue.send_batch(&[sent.clone(), message(8)]).await;
    for n in 1..=3u32 {
        let got = q
            .queue
            .receive(10, Duration::ZERO, Duration::ZERO)
            .await
            .expect("rx");
        assert_eq!(got.len(), 2, "delivery {n}");
        assert!(got.iter().all(|d| d.receive_count == n));
        // Message 8 is deleted on its last delivery: it must not be dead-lettered.
        if n == 3 {
            let r8: Vec<String> = got
                .iter()
                .filter(|d| d.attributes["event_id"] == "evt_test_q_8")
                .map(|d| d.receipt.clone())
                .collect();
            assert!(q.queue.delete_batch(&r8).await.iter().all(Result::is_ok));
        }
    }
    // The receive after the last allowed one redrives it.
    let none = q
        .queue
        .receive(10, Duration::ZERO, Duration::ZERO)
        .await
        .expect("rx");
    assert!(none.is_empty());
    let dead = q.dlq.snapshot().await.expect("dlq");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, sent.body.to_vec());
    assert_eq!(dead[0].attributes, sent.attributes);
    assert_eq!(dead[0].receive_count, 3);
    assert!(q.queue.snapshot().await.expect("main").is_empty());
    let c = q.dlq.counts().await.expect("counts");
    assert_eq!(c.waiting, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_connections_receiving_at_once_never_share_a_message() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = hookline_embedded::open(dir.path(), options(5)).expect("open a");
    let b = hookline_embedded::open(dir.path(), options(5)).expect("open b");
    let batch: Vec<OutboundMessage> = (0..300).map(message).collect();
    assert!(a.queue.send_batch(&batch).await.iter().all(Result::is_ok));

    async fn drain(q: Arc<hookline_embedded::EmbeddedQueue>) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let got = q
                .receive(7, Duration::ZERO, Duration::from_secs(60))
                .await
                .expect("receive");
            if got.is_empty() {
                return seen;
            }
            seen.extend(got.into_iter().map(|d| d.message_id));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let (ra, rb) = tokio::join!(
        tokio::spawn(drain(Arc::clone(&a.queue))),
        tokio::spawn(drain(Arc::clone(&b.queue)))
    );
    let (ra, rb) = (ra.expect("a"), rb.expect("b"));
    assert!(
        !ra.is_empty() && !rb.is_empty(),
        "both receivers got work: {} / {}",
        ra.len(),
        rb.len()
    );
    let mut all: Vec<String> = ra.into_iter().chain(rb).collect();
    let total = all.len();
    all.sort();
    all.dedup();
    assert_eq!(total, 300, "every message handed out once");
    assert_eq!(all.len(), 300, "no message handed to both");
}

#[tokio::test(flavor = "multi_thread")]
async fn long_poll_returns_as_soon_as_a_message_arrives() {
    let dir = tempfile::tempdir().expect("tmp");
    let q = hookline_embedded::open(dir.path(), options(5)).expect("open");
    let sender = Arc::clone(&q.queue);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = sender.send_batch(&[message(1)]).await;
    });
    let start = std::time::Instant::now();
    let got = q
        .queue
        .receive(10, Duration::from_secs(5), Duration::from_secs(30))
        .await
        .expect("rx");
    assert_eq!(got.len(), 1);
    assert!(start.elapsed() < Duration::from_secs(4));
    let empty_start = std::time::Instant::now();
    let none = q
        .queue
        .receive(10, Duration::from_millis(150), Duration::from_secs(30))
        .await
        .expect("rx");
    assert!(none.is_empty());
    assert!(empty_start.elapsed() >= Duration::from_millis(150));
}
