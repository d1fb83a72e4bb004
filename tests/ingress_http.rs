//! The ingress's HTTP answers, in the contract's order, from the axum app
//! on a random port.

use std::time::Duration;

use hookline_backend::Tuning;

use crate::helpers::*;

const RECEIVED: &str = r#"{"received":true}"#;
const BAD_SIGNATURE: &str = r#"{"error":"Webhook signature verification failed"}"#;
const BAD_PAYLOAD: &str = r#"{"error":"Invalid event payload"}"#;
const TOO_LARGE: &str = r#"{"error":"Payload too large"}"#;
const QUEUE_UNAVAILABLE: &str = r#"{"error":"Queue unavailable"}"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_enabled_event_is_enqueued_byte_for_byte_with_its_attributes() {
    let app = spawn_app().await;
    // Exactly as Stripe sends it: pretty-printed, trailing newline.
    let body = format!(
        "{}\n",
        event_with("payout.updated", "evt_test_enqueue_1", now())
    );
    let (status, answer) = app.post_signed(&body).await;
    assert_eq!((status, answer.as_str()), (200, RECEIVED));

    let queued = app.queued().await;
    assert_eq!(queued.len(), 1, "exactly one message");
    let msg = &queued[0];
    assert_eq!(msg.body, body.as_bytes(), "raw body, byte for byte");
    assert_eq!(msg.attributes["event_id"], "evt_test_enqueue_1");
    assert_eq!(msg.attributes["event_type"], "payout.updated");
    assert_eq!(msg.attributes["livemode"], "false");
    assert_eq!(msg.attributes["account"], "acct_1QhLnKExample0001");
    let received_at = &msg.attributes["received_at"];
    assert!(
        received_at.len() == 20 && received_at.ends_with('Z') && received_at.contains('T'),
        "RFC 3339: {received_at}"
    );
    assert_eq!(app.state.metrics.enqueued.get(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_without_account_has_no_account_attribute() {
    let app = spawn_app().await;
    let body = event_with("payment_intent.succeeded", "evt_test_noacct", now());
    assert_eq!(app.post_signed(&body).await.0, 200);
    let queued = app.queued().await;
    assert_eq!(queued.len(), 1);
    assert!(!queued[0].attributes.contains_key("account"));
}

#[tokio::test(flavor = "multi_thread")]
async fn events_not_enabled_or_of_the_other_mode_are_acknowledged_not_enqueued() {
    let app = spawn_app_with(&["--enabled-events", "payout.created"]).await;
    // Enabled: enqueued.
    let ok = event_with("payout.created", "evt_test_enabled", now());
    assert_eq!(app.post_signed(&ok).await, (200, RECEIVED.to_owned()));
    // Type not enabled.
    let other = event_with("payout.updated", "evt_test_disabled", now());
    assert_eq!(app.post_signed(&other).await, (200, RECEIVED.to_owned()));
    // A live event in development.
    let mut live: serde_json::Value = serde_json::from_str(&ok).expect("json");
    live["id"] = "evt_test_live".into();
    live["livemode"] = true.into();
    let live = live.to_string();
    assert_eq!(app.post_signed(&live).await, (200, RECEIVED.to_owned()));

    let queued = app.queued().await;
    assert_eq!(queued.len(), 1, "only the enabled test-mode event");
    assert_eq!(queued[0].attributes["event_id"], "evt_test_enabled");
    assert_eq!(app.state.metrics.ignored_event_type.get(), 1);
    assert_eq!(app.state.metrics.ignored_livemode.get(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_test_event_in_production_is_acknowledged_not_enqueued() {
    let app = spawn_app_with(&["--app-env", "production", "--enabled-events", "*"]).await;
    let body = event_with("payout.created", "evt_test_in_prod", now());
    assert_eq!(app.post_signed(&body).await, (200, RECEIVED.to_owned()));
    let mut live: serde_json::Value = serde_json::from_str(&body).expect("json");
    live["id"] = "evt_live_in_prod".into();
    live["livemode"] = true.into();
    let live = live.to_string();
    assert_eq!(app.post_signed(&live).await, (200, RECEIVED.to_owned()));
    let queued = app.queued().await;
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].attributes["event_id"], "evt_live_in_prod");
    assert_eq!(queued[0].attributes["livemode"], "true");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_signatures_get_400_and_enqueue_nothing() {
    let app = spawn_app().await;
    let accepted = event_with("payout.created", "evt_test_good", now());
    assert_eq!(app.post_signed(&accepted).await.0, 200);

    let body = event_with("payout.created", "evt_test_bad", now());
    let t = now();
    let wrong_secret = hookline_signature::header_for(b"whsec_test_wrong", t, body.as_bytes());
    let expired = hookline_signature::header_for(SECRET.as_bytes(), t - 330, body.as_bytes());
    let future = hookline_signature::header_for(SECRET.as_bytes(), t + 330, body.as_bytes());
    let for_other_body = sign("{}");
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("empty", Some(String::new())),
        ("malformed", Some("garbage".to_owned())),
        ("no v1", Some(format!("t={t},v0=abc"))),
        ("wrong secret", Some(wrong_secret)),
        ("expired", Some(expired)),
        ("future", Some(future)),
        ("other body", Some(for_other_body)),
    ];
    for (name, sig) in &cases {
        let (status, answer) = app.post(body.clone(), sig.as_deref()).await;
        assert_eq!((status, answer.as_str()), (400, BAD_SIGNATURE), "{name}");
    }
    let queued = app.queued().await;
    assert_eq!(queued.len(), 1, "only the accepted event");
    assert_eq!(queued[0].attributes["event_id"], "evt_test_good");
    assert_eq!(
        app.state.metrics.signature_failures.get(),
        cases.len() as u64
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn any_configured_secret_verifies_during_rotation() {
    let app = spawn_app_with(&[
        "--stripe-webhook-secret",
        &format!("whsec_test_newSecret , {SECRET}"),
    ])
    .await;
    let body = event_with("payout.created", "evt_test_rotation", now());
    assert_eq!(
        app.post_signed(&body).await.0,
        200,
        "signed with the second secret"
    );
    let by_new = hookline_signature::header_for(b"whsec_test_newSecret", now(), body.as_bytes());
    assert_eq!(
        app.post(body.clone(), Some(&by_new)).await.0,
        200,
        "signed with the first"
    );
    assert_eq!(app.queued().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_bodies_that_are_not_events_get_400_and_enqueue_nothing() {
    let app = spawn_app().await;
    let accepted = event_with("payout.created", "evt_test_ok", now());
    assert_eq!(app.post_signed(&accepted).await.0, 200);
    for body in [
        "not json",
        "[]",
        "{}",
        r#"{"id":"evt_1"}"#,
        r#"{"type":"payout.created"}"#,
    ] {
        let (status, answer) = app.post_signed(body).await;
        assert_eq!((status, answer.as_str()), (400, BAD_PAYLOAD), "{body}");
    }
    assert_eq!(app.queued().await.len(), 1);
    assert_eq!(app.state.metrics.invalid_payload.get(), 5);
}

/// An event padded with spaces (still valid JSON) to exactly `size` bytes.
fn event_of_size(id: &str, size: usize) -> String {
    let body = event_with("payout.created", id, now());
    let pad = size
        .checked_sub(body.len())
        .expect("fixture smaller than size");
    format!("{{{}{}", " ".repeat(pad), &body[1..])
}

#[tokio::test(flavor = "multi_thread")]
async fn body_limit_accepts_max_and_refuses_one_more_with_413() {
    let app = spawn_app_with(&["--max-body-bytes", "4096"]).await;
    let at_limit = event_of_size("evt_test_at_limit", 4096);
    assert_eq!(at_limit.len(), 4096);
    assert_eq!(app.post_signed(&at_limit).await, (200, RECEIVED.to_owned()));

    let over = event_of_size("evt_test_over_limit", 4097);
    assert_eq!(app.post_signed(&over).await, (413, TOO_LARGE.to_owned()));
    // Size is checked first: unsigned and oversized is still 413.
    assert_eq!(
        app.post(over.clone(), None).await,
        (413, TOO_LARGE.to_owned())
    );
    // Without Content-Length (chunked), the limit holds while reading.
    let chunks: Vec<Result<String, std::io::Error>> =
        vec![Ok(over[..2000].to_owned()), Ok(over[2000..].to_owned())];
    let stream = reqwest::Body::wrap_stream(futures_stream(chunks));
    let sig = sign(&over);
    assert_eq!(
        app.post(stream, Some(&sig)).await,
        (413, TOO_LARGE.to_owned())
    );

    let queued = app.queued().await;
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].attributes["event_id"], "evt_test_at_limit");
    assert_eq!(app.state.metrics.too_large.get(), 3);
}

fn futures_stream(
    chunks: Vec<Result<String, std::io::Error>>,
) -> impl futures_core::Stream<Item = Result<String, std::io::Error>> + Send + Sync + 'static {
    struct Chunks(std::vec::IntoIter<Result<String, std::io::Error>>);
    impl futures_core::Stream for Chunks {
        type Item = Result<String, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            std::task::Poll::Ready(self.0.next())
        }
    }
    Chunks(chunks.into_iter())
}

#[tokio::test(flavor = "multi_thread")]
async fn queue_unavailable_gives_503_and_only_accepted_events_are_queued() {
    let app = spawn_app_tuned(
        &[],
        Tuning {
            busy_timeout: Some(Duration::from_millis(100)),
        },
    )
    .await;
    let before = event_with("payout.created", "evt_test_before_outage", now());
    assert_eq!(app.post_signed(&before).await.0, 200);

    // Another process holds the database's write lock: the queue cannot accept.
    let lock =
        hookline_embedded::testing::WriteLock::hold(app.data_dir.path(), Duration::from_secs(5))
            .expect("lock");
    let during = event_with("payout.created", "evt_test_during_outage", now());
    let (status, answer) = app.post_signed(&during).await;
    assert_eq!((status, answer.as_str()), (503, QUEUE_UNAVAILABLE));
    assert_eq!(app.state.metrics.enqueue_failures.get(), 1);
    lock.release().expect("unlock");

    let after = event_with("payout.created", "evt_test_after_outage", now());
    assert_eq!(app.post_signed(&after).await.0, 200);
    let ids: Vec<String> = app
        .queued()
        .await
        .iter()
        .map(|m| m.attributes["event_id"].clone())
        .collect();
    assert_eq!(ids, ["evt_test_before_outage", "evt_test_after_outage"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn health_readiness_and_metrics() {
    let app = spawn_app().await;
    assert_eq!(app.get("/healthz").await.0, 200);
    assert_eq!(app.get("/readyz").await, (200, "ready".to_owned()));
    let body = event_with("payout.created", "evt_test_metrics", now());
    assert_eq!(app.post_signed(&body).await.0, 200);
    assert_eq!(app.post(body.clone(), None).await.0, 400);
    let (status, text) = app.get("/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "hookline_webhooks_received_total 2",
        "hookline_webhooks_verified_total 1",
        "hookline_webhook_signature_failures_total 1",
        "hookline_webhooks_enqueued_total 1",
        "hookline_enqueue_failures_total 0",
        "hookline_webhook_duration_seconds_count 2",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_are_coalesced_and_every_200_is_one_message() {
    let app = std::sync::Arc::new(spawn_app().await);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let app = std::sync::Arc::clone(&app);
        tasks.push(tokio::spawn(async move {
            let body = event_with(
                "payment_intent.succeeded",
                &format!("evt_test_conc_{i}"),
                now(),
            );
            app.post_signed(&body).await.0
        }));
    }
    let mut ok = 0;
    for t in tasks {
        if t.await.expect("task") == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 200);
    let queued = app.queued().await;
    let mut ids: Vec<&str> = queued
        .iter()
        .map(|m| m.attributes["event_id"].as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 200, "every 200 matched by exactly one message");
    assert_eq!(queued.len(), 200);
    let stats = app.state.coalescer().stats();
    assert_eq!(stats.messages.get(), 200);
    assert!(
        stats.batches.get() < 200,
        "concurrent sends share transactions: {} batches",
        stats.batches.get()
    );
}
