//! The ingress on the AWS backend (SQS on moto).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread")]
async fn answers_200_only_after_sqs_accepted_the_raw_event() {
    crate::skip_without_aws!();
    let fixture = aws_fixture(5).await;
    let app = spawn_aws_app(&fixture, &[]).await;
    let body = format!(
        "{}\n",
        event_with("payout.updated", "evt_test_aws_1", now())
    );
    assert_eq!(
        app.post_signed(&body).await,
        (200, r#"{"received":true}"#.to_owned())
    );
    let got = receive_n(
        fixture.backend.queue.as_ref(),
        1,
        Duration::from_secs(30),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, body.as_bytes(), "raw body, byte for byte");
    let a = &got[0].attributes;
    assert_eq!(a["event_id"], "evt_test_aws_1");
    assert_eq!(a["event_type"], "payout.updated");
    assert_eq!(a["livemode"], "false");
    assert_eq!(a["account"], "acct_1QhLnKExample0001");
    assert!(a["received_at"].ends_with('Z'));
    // Nothing else was sent.
    let more = fixture
        .backend
        .queue
        .receive(10, Duration::from_secs(1), Duration::from_secs(30))
        .await
        .expect("rx");
    assert!(more.is_empty());
    assert_eq!(app.get("/readyz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fifo_queue_deduplicates_by_event_id() {
    crate::skip_without_aws!();
    let fixture = aws_fixture_with(5, true).await;
    assert!(fixture.queue_url.ends_with(".fifo"));
    let app = spawn_aws_app(&fixture, &[]).await;
    let body = event_with("payout.created", "evt_test_fifo_1", now());
    // Stripe delivers the same event twice: both acknowledged, queued once.
    assert_eq!(app.post_signed(&body).await.0, 200);
    assert_eq!(app.post_signed(&body).await.0, 200);
    let other = event_with("payout.updated", "evt_test_fifo_2", now());
    assert_eq!(app.post_signed(&other).await.0, 200);
    let got = receive_n(
        fixture.backend.queue.as_ref(),
        3,
        Duration::from_secs(30),
        Duration::from_secs(6),
    )
    .await;
    let ids: Vec<&str> = got
        .iter()
        .map(|d| d.attributes["event_id"].as_str())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&"evt_test_fifo_1") && ids.contains(&"evt_test_fifo_2"));
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_share_send_message_batch_calls() {
    crate::skip_without_aws!();
    let fixture = aws_fixture(5).await;
    let app = Arc::new(spawn_aws_app(&fixture, &[]).await);
    let n = 60;
    let mut tasks = Vec::new();
    for i in 0..n {
        let app = Arc::clone(&app);
        tasks.push(tokio::spawn(async move {
            let body = event_with(
                "payment_intent.succeeded",
                &format!("evt_test_batch_{i}"),
                now(),
            );
            app.post_signed(&body).await.0
        }));
    }
    let mut ok = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        if t.await.expect("task") == 200 {
            ok.push(format!("evt_test_batch_{i}"));
        }
    }
    assert_eq!(ok.len(), n);
    let stats = app.state.coalescer().stats();
    let calls = stats.batches.get();
    assert_eq!(stats.messages.get(), n as u64);
    assert!(
        calls < n as u64 / 2,
        "{calls} SendMessageBatch calls for {n} events"
    );
    println!("SendMessageBatch calls for {n} concurrent events: {calls}");

    let got = receive_n(
        fixture.backend.queue.as_ref(),
        n,
        Duration::from_secs(60),
        Duration::from_secs(30),
    )
    .await;
    let mut ids: Vec<String> = got
        .iter()
        .map(|d| d.attributes["event_id"].clone())
        .collect();
    ids.sort();
    ok.sort();
    assert_eq!(ids, ok, "every 200 matched by exactly one queued message");
}

#[tokio::test(flavor = "multi_thread")]
async fn sqs_unreachable_gives_503_fast_and_readyz_503() {
    crate::skip_without_aws!();
    let fixture = aws_fixture(5).await;
    let closed = free_port();
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let mut cmd = Command::new(bin("hookline-ingress"));
    cmd.env_clear()
        .envs(fixture.env())
        .env("AWS_ENDPOINT_URL_SQS", format!("http://127.0.0.1:{closed}"))
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("DATA_DIR", dir.path())
        .env("STRIPE_WEBHOOK_SECRET", SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("starts");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    assert!(
        eventually(Duration::from_secs(20), || async {
            client.get(format!("{base}/healthz")).send().await.is_ok()
        })
        .await
    );
    let body = event_with("payout.created", "evt_test_sqs_down", now());
    let start = Instant::now();
    let resp = client
        .post(format!("{base}/api/stripe-webhook"))
        .header("stripe-signature", sign(&body))
        .body(body)
        .send()
        .await
        .expect("answered");
    let took = start.elapsed();
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(
        resp.text().await.expect("body"),
        r#"{"error":"Queue unavailable"}"#
    );
    assert!(
        took < Duration::from_secs(6),
        "503 within a bounded time, took {took:?}"
    );
    let ready = client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status().as_u16(), 503);
    let _ = child.kill();
    let _ = child.wait();
    // Nothing reached the real queue.
    let counts = fixture.backend.queue.counts().await.expect("counts");
    assert_eq!((counts.waiting, counts.in_flight), (0, 0));
}
