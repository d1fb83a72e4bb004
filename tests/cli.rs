//! The `hookline` operator CLI, as the built binary, on both backends.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hookline_core::message::OutboundMessage;
use hookline_core::records::{EventStatus, Outcome};

use crate::bed::Bed;
use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    list_and_export_leave_the_dlq_unchanged(5),
    replay_moves_exactly_the_matching_messages(5),
    a_killed_replay_loses_nothing_and_a_rerun_finishes(5),
    two_concurrent_replays_lose_nothing(5),
    backfill_enqueues_each_event_once_and_a_rerun_applies_nothing_twice(5),
    show_commands_print_the_stored_records(5),
    config_check_reports_without_secrets(5),
);

/// Runs the built `hookline` with the bed's settings.
async fn hookline(bed: &Bed, args: &[&str], extra_env: &[(&str, &str)]) -> (i32, String, String) {
    run_hookline(&bed.env, extra_env, args).await
}

/// A dead-lettered message as the worker leaves it: the raw event, its
/// attributes, received `age_secs` ago, with or without an `error` reason.
fn dead(
    event_type: &str,
    id: &str,
    object: &str,
    age_secs: i64,
    error: Option<&str>,
) -> OutboundMessage {
    let mut v: serde_json::Value =
        serde_json::from_str(&event_with(event_type, id, now() - age_secs)).expect("json");
    v["data"]["object"]["id"] = object.into();
    let body = serde_json::to_string_pretty(&v).expect("json");
    let env = hookline_core::envelope::Envelope::parse(body.as_bytes()).expect("event");
    let mut m = OutboundMessage::for_event(&env, Bytes::from(body), now() - age_secs);
    if let Some(e) = error {
        m.attributes.insert("error".to_owned(), e.to_owned());
    }
    m
}

async fn dead_letter(bed: &Bed, messages: &[OutboundMessage]) {
    for chunk in messages.chunks(10) {
        assert!(bed.dlq.send_batch(chunk).await.iter().all(Result::is_ok));
    }
}

async fn counts(bed: &Bed) -> (u64, u64) {
    let q = bed.queue.counts().await.expect("counts");
    let d = bed.dlq.counts().await.expect("counts");
    (q.waiting + q.in_flight, d.waiting + d.in_flight)
}

/// Event ids on the main queue (received and then released).
async fn queued_ids(bed: &Bed, expected: usize) -> Vec<String> {
    let got = receive_n(
        bed.queue.as_ref(),
        expected,
        Duration::from_secs(60),
        Duration::from_secs(10),
    )
    .await;
    for d in &got {
        let _ = bed.queue.set_visibility(&d.receipt, Duration::ZERO).await;
    }
    let mut ids: Vec<String> = got
        .iter()
        .map(|d| d.attributes["event_id"].clone())
        .collect();
    ids.sort();
    ids
}

async fn list_and_export_leave_the_dlq_unchanged(bed: Bed) {
    let mut messages = vec![
        dead(
            "payout.created",
            "evt_test_l1",
            "po_l1",
            120,
            Some("payout.created event cannot be handled: missing field `status`"),
        ),
        dead(
            "payout.updated",
            "evt_test_l2",
            "po_l2",
            7200,
            Some("gave up after 5 deliveries: timeout"),
        ),
    ];
    // Redrove by the queue itself: no error attribute; the reason is in the ledger.
    messages.push(dead("account.updated", "evt_test_l3", "acct_l3", 60, None));
    bed.store
        .fail(
            &hookline_core::envelope::EventId::new("evt_test_l3"),
            "account.updated",
            hookline_core::ports::Origin::source("test"),
            "store unreachable",
            now(),
            hookline_core::ports::WritePath::Apply,
        )
        .await
        .expect("ledger");
    dead_letter(&bed, &messages).await;

    let (code, out, err) = hookline(&bed, &["dlq", "list", "--json"], &[]).await;
    assert_eq!(code, 0, "{err}");
    let list = json(&out);
    let entries = list.as_array().expect("array");
    assert_eq!(entries.len(), 3);
    let by_id: BTreeMap<String, &serde_json::Value> = entries
        .iter()
        .map(|e| (e["event_id"].as_str().expect("id").to_owned(), e))
        .collect();
    assert_eq!(by_id["evt_test_l1"]["event_type"], "payout.created");
    assert!(by_id["evt_test_l1"]["reason"]
        .as_str()
        .expect("reason")
        .contains("status"));
    assert_eq!(
        by_id["evt_test_l3"]["reason"], "store unreachable",
        "ledger lastError"
    );
    let age = by_id["evt_test_l2"]["age_secs"].as_u64().expect("age");
    assert!((7190..7300).contains(&age), "age {age}");
    assert!(
        by_id["evt_test_l2"]["receive_count"]
            .as_u64()
            .expect("count")
            >= 1
    );

    let (code, human, _) = hookline(&bed, &["dlq", "list"], &[]).await;
    assert_eq!(code, 0);
    assert!(
        human.contains("evt_test_l2") && human.contains("gave up after 5 deliveries"),
        "{human}"
    );

    let file = tempfile::NamedTempFile::new().expect("tmp");
    let path = file.path().to_str().expect("path").to_owned();
    let (code, _, err) = hookline(&bed, &["dlq", "export", "--out", &path], &[]).await;
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&path).expect("export");
    let lines: Vec<serde_json::Value> = text.lines().map(json).collect();
    assert_eq!(lines.len(), 3);
    for line in &lines {
        let id = line["event_id"].as_str().expect("id");
        let original = messages
            .iter()
            .find(|m| m.attributes["event_id"] == id)
            .expect("sent");
        assert_eq!(
            line["body"].as_str().expect("body").as_bytes(),
            original.body.as_ref()
        );
        assert_eq!(
            line["attributes"]["event_type"],
            original.attributes["event_type"].as_str()
        );
        assert!(line.get("reason").is_some() && line.get("age_secs").is_some());
    }

    // Nothing was removed or left hidden.
    let (code, out, _) = hookline(&bed, &["dlq", "stats", "--json"], &[]).await;
    assert_eq!(code, 0);
    assert_eq!(
        json(&out),
        serde_json::json!({"waiting": 0, "in_flight": 0, "dead_lettered": 3})
    );
    let visible = receive_n(
        bed.dlq.as_ref(),
        3,
        Duration::from_secs(60),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(visible.len(), 3, "every message visible again at once");
}

async fn replay_moves_exactly_the_matching_messages(bed: Bed) {
    let messages = vec![
        dead("payout.created", "evt_test_r1", "po_r1", 60, Some("x")),
        dead("payout.updated", "evt_test_r2", "po_r2", 60, Some("x")),
        dead("payout.updated", "evt_test_r3", "po_r3", 60, Some("x")),
        dead("account.updated", "evt_test_r4", "acct_r4", 60, Some("x")),
        dead(
            "payment_intent.succeeded",
            "evt_test_r5",
            "pi_r5",
            3 * 3600,
            Some("x"),
        ),
        dead(
            "payment_intent.succeeded",
            "evt_test_r6",
            "pi_r6",
            60,
            Some("x"),
        ),
    ];
    dead_letter(&bed, &messages).await;

    let (code, out, err) = hookline(&bed, &["dlq", "replay", "--dry-run", "--json"], &[]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        json(&out),
        serde_json::json!({"replayed": 6, "skipped": 0, "failed": 0})
    );
    assert_eq!(counts(&bed).await, (0, 6), "dry run moved nothing");

    let (code, out, _) = hookline(
        &bed,
        &["dlq", "replay", "--event-type", "payout.updated", "--json"],
        &[],
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(
        json(&out),
        serde_json::json!({"replayed": 2, "skipped": 4, "failed": 0})
    );
    assert_eq!(queued_ids(&bed, 2).await, ["evt_test_r2", "evt_test_r3"]);

    let (_, out, _) = hookline(
        &bed,
        &["dlq", "replay", "--event-id", "evt_test_r4", "--json"],
        &[],
    )
    .await;
    assert_eq!(json(&out)["replayed"], 1);
    let (_, out, _) = hookline(
        &bed,
        &["dlq", "replay", "--older-than", "1h", "--json"],
        &[],
    )
    .await;
    assert_eq!(json(&out)["replayed"], 1);
    assert_eq!(
        queued_ids(&bed, 4).await,
        ["evt_test_r2", "evt_test_r3", "evt_test_r4", "evt_test_r5"]
    );
    let (_, out, _) = hookline(
        &bed,
        &[
            "dlq",
            "replay",
            "--newer-than",
            "1h",
            "--limit",
            "1",
            "--json",
        ],
        &[],
    )
    .await;
    assert_eq!(
        json(&out),
        serde_json::json!({"replayed": 1, "skipped": 0, "failed": 0})
    );
    assert_eq!(counts(&bed).await, (5, 1));
    let (_, out, _) = hookline(&bed, &["dlq", "replay", "--all", "--json"], &[]).await;
    assert_eq!(json(&out)["replayed"], 1);
    assert_eq!(counts(&bed).await, (6, 0));

    // The copies carry no stale error reason, and the worker completes them.
    let copies = receive_n(
        bed.queue.as_ref(),
        6,
        Duration::from_secs(60),
        Duration::from_secs(10),
    )
    .await;
    assert!(copies.iter().all(|d| !d.attributes.contains_key("error")));
    for d in &copies {
        let _ = bed.queue.set_visibility(&d.receipt, Duration::ZERO).await;
    }
    let ids: Vec<String> = (1..=6).map(|i| format!("evt_test_r{i}")).collect();
    let _worker = bed.worker(&[]);
    assert!(eventually(Duration::from_secs(30), || bed.all_completed(&ids)).await);
}

async fn a_killed_replay_loses_nothing_and_a_rerun_finishes(bed: Bed) {
    let messages: Vec<OutboundMessage> = (0..40)
        .map(|i| {
            dead(
                "payout.created",
                &format!("evt_test_k{i:02}"),
                &format!("po_k{i}"),
                60,
                Some("x"),
            )
        })
        .collect();
    dead_letter(&bed, &messages).await;
    let all: BTreeSet<String> = messages
        .iter()
        .map(|m| m.attributes["event_id"].clone())
        .collect();

    // Paced at 20/s, killed after about a second.
    let mut child = tokio::process::Command::new(bin("hookline"))
        .env_clear()
        .envs(bed.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .args(["dlq", "replay", "--rate", "20", "--hold", "2s"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("replay starts");
    // Killed once it moved some, but not all (paced, it needs 2 s).
    assert!(
        eventually(Duration::from_secs(20), || async {
            let q = bed.queue.counts().await.expect("counts");
            q.waiting + q.in_flight >= 10
        })
        .await,
        "the replay started moving"
    );
    child.start_kill().expect("SIGKILL");
    let _ = child.wait().await;
    let (queued, dlq) = counts(&bed).await;
    assert!(queued > 0 && queued < 40, "killed halfway: {queued} moved");
    assert!(
        queued + dlq >= 40,
        "nothing gone: {queued} queued + {dlq} in the DLQ"
    );

    // Held messages come back after the hold; the rerun moves the rest.
    assert!(
        eventually(Duration::from_secs(20), || async {
            bed.dlq.counts().await.expect("counts").in_flight == 0
        })
        .await,
        "the killed run's hold ended"
    );
    let (code, out, err) = hookline(&bed, &["dlq", "replay", "--json"], &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(json(&out)["replayed"].as_u64().expect("n") >= 40 - queued);
    let (queued, dlq) = counts(&bed).await;
    assert_eq!(dlq, 0);
    let ids: BTreeSet<String> = queued_ids(&bed, usize::try_from(queued).expect("fits"))
        .await
        .into_iter()
        .collect();
    assert_eq!(
        ids, all,
        "every message is back in the queue (at worst twice)"
    );

    let ids: Vec<String> = all.into_iter().collect();
    let worker = bed.worker(&[]);
    assert!(eventually(Duration::from_secs(60), || bed.all_completed(&ids)).await);
    assert!(
        eventually(Duration::from_secs(30), || async {
            metric(
                &worker,
                "hookline_events_processed_total{outcome=\"applied\"}",
            )
            .await
                == 40
        })
        .await
    );
}

async fn two_concurrent_replays_lose_nothing(bed: Bed) {
    let messages: Vec<OutboundMessage> = (0..30)
        .map(|i| {
            dead(
                "payout.updated",
                &format!("evt_test_c{i:02}"),
                &format!("po_c{i}"),
                60,
                Some("x"),
            )
        })
        .collect();
    dead_letter(&bed, &messages).await;
    let (a, b) = tokio::join!(
        hookline(&bed, &["dlq", "replay", "--json"], &[]),
        hookline(&bed, &["dlq", "replay", "--json"], &[])
    );
    assert_eq!((a.0, b.0), (0, 0), "{} {}", a.2, b.2);
    let moved =
        json(&a.1)["replayed"].as_u64().expect("n") + json(&b.1)["replayed"].as_u64().expect("n");
    assert_eq!(moved, 30, "each message moved by exactly one of them");
    assert_eq!(counts(&bed).await, (30, 0));
    let ids: BTreeSet<String> = queued_ids(&bed, 30).await.into_iter().collect();
    assert_eq!(ids.len(), 30);
}

/// A Stripe-shaped Events API: two pages, a 429 first, bearer auth checked.
async fn stripe_stub(pages: Vec<serde_json::Value>) -> (String, Arc<Mutex<Vec<String>>>) {
    use axum::extract::{RawQuery, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    #[derive(Clone)]
    struct Stub {
        pages: Arc<Vec<serde_json::Value>>,
        calls: Arc<Mutex<Vec<String>>>,
    }
    async fn events(
        State(stub): State<Stub>,
        headers: HeaderMap,
        RawQuery(q): RawQuery,
    ) -> axum::response::Response {
        let q = q.unwrap_or_default();
        let n = {
            let mut calls = stub.calls.lock().expect("lock");
            calls.push(q.clone());
            calls.len()
        };
        if headers.get("authorization").and_then(|v| v.to_str().ok())
            != Some("Bearer sk_test_fakeBackfillKey")
        {
            return (
                StatusCode::UNAUTHORIZED,
                r#"{"error":{"message":"Invalid API Key provided"}}"#,
            )
                .into_response();
        }
        if n == 1 {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                r#"{"error":{"type":"rate_limit_error"}}"#,
            )
                .into_response();
        }
        let page = if q.contains("starting_after") {
            &stub.pages[1]
        } else {
            &stub.pages[0]
        };
        (
            StatusCode::OK,
            [("content-type", "application/json")],
            page.to_string(),
        )
            .into_response()
    }
    let calls = Arc::new(Mutex::new(Vec::new()));
    let stub = Stub {
        pages: Arc::new(pages),
        calls: Arc::clone(&calls),
    };
    let app = axum::Router::new()
        .route("/v1/events", axum::routing::get(events))
        .with_state(stub);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), calls)
}

async fn backfill_enqueues_each_event_once_and_a_rerun_applies_nothing_twice(bed: Bed) {
    let event = |t: &str, id: &str, obj: &str, live: bool| {
        let mut v: serde_json::Value =
            serde_json::from_str(&event_with(t, id, now() - 600)).expect("json");
        v["data"]["object"]["id"] = obj.into();
        v["livemode"] = live.into();
        v
    };
    let page1 = serde_json::json!({"object": "list", "has_more": true, "url": "/v1/events", "data": [
        event("payout.updated", "evt_test_b1", "po_b1", false),
        event("payment_intent.succeeded", "evt_test_b2", "pi_b2", false),
        event("payout.created", "evt_test_b3", "po_b3", true),
    ]});
    let page2 = serde_json::json!({"object": "list", "has_more": false, "url": "/v1/events", "data": [
        event("account.updated", "evt_test_b4", "acct_b4", false),
        event("charge.dispute.created", "evt_test_b5", "du_b5", false),
    ]});
    let (base, calls) = stripe_stub(vec![page1, page2]).await;
    let env = [
        ("STRIPE_API_BASE", base.as_str()),
        ("STRIPE_SECRET_KEY", "sk_test_fakeBackfillKey"),
    ];

    let (code, out, err) = hookline(&bed, &["backfill", "--since", "1h"], &env).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("listed 5, enqueued 4, already applied 0, skipped 1, failed 0"),
        "{err}"
    );
    assert!(!out.contains("sk_test_fakeBackfillKey") && !err.contains("sk_test_fakeBackfillKey"));
    let calls = calls.lock().expect("lock").clone();
    // The Stripe API client waited out the 429 and asked again.
    assert_eq!(calls.len(), 3, "429, page 1, page 2: {calls:?}");
    assert!(calls[2].contains("starting_after=evt_test_b3"), "{calls:?}");
    assert!(
        calls[1].contains("created%5Bgte%5D=") && calls[1].contains("types%5B%5D=payout.updated"),
        "{calls:?}"
    );
    let mut ids = queued_ids(&bed, 4).await;
    ids.dedup();
    assert_eq!(
        ids,
        ["evt_test_b1", "evt_test_b2", "evt_test_b4", "evt_test_b5"],
        "each once; the live event skipped"
    );

    let expected: Vec<String> = ids.clone();
    let worker = bed.worker(&[]);
    assert!(eventually(Duration::from_secs(30), || bed.all_completed(&expected)).await);

    // Run again: everything is already applied; nothing is enqueued.
    let (code, _, err) = hookline(&bed, &["backfill", "--since", "1h"], &env).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("enqueued 0, already applied 4"), "{err}");
    // Nothing new on the queue, so nothing more can be applied.
    assert!(eventually(Duration::from_secs(10), || bed.queue_is_empty()).await);
    assert_eq!(
        metric(
            &worker,
            "hookline_events_processed_total{outcome=\"applied\"}"
        )
        .await,
        4
    );
    for id in &expected {
        assert_eq!(
            bed.ledger(id).await.expect("ledger").outcome,
            Some(Outcome::Applied)
        );
    }
}

async fn show_commands_print_the_stored_records(bed: Bed) {
    let body = event_with("payout.updated", "evt_test_show", 1_700_000_000);
    bed.enqueue(&[body]).await;
    let _worker = bed.worker(&[]);
    let ids = vec!["evt_test_show".to_owned()];
    assert!(eventually(Duration::from_secs(30), || bed.all_completed(&ids)).await);

    let (code, out, _) = hookline(&bed, &["events", "show", "evt_test_show", "--json"], &[]).await;
    assert_eq!(code, 0);
    let e = json(&out);
    assert_eq!(e["eventId"], "evt_test_show");
    assert_eq!(e["status"], "COMPLETED");
    assert_eq!(e["eventType"], "payout.updated");
    assert_eq!(e["attempts"], 1);
    assert_eq!(e["outcome"], "applied");
    assert!(e["completedAt"].is_string() && e["expiresAt"].is_number());

    let (code, out, _) = hookline(
        &bed,
        &["objects", "show", "po_1QhLsCExamplePayout1", "--json"],
        &[],
    )
    .await;
    assert_eq!(code, 0);
    let o = json(&out);
    assert_eq!(o["objectId"], "po_1QhLsCExamplePayout1");
    assert_eq!(o["lastEventId"], "evt_test_show");
    assert_eq!(o["lastEventCreated"], 1_700_000_000);

    let (code, out, _) = hookline(&bed, &["objects", "show", "po_1QhLsCExamplePayout1"], &[]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("objectType") && out.contains("payout"),
        "{out}"
    );

    let (code, out, err) =
        hookline(&bed, &["events", "show", "evt_test_unknown", "--json"], &[]).await;
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(err.contains("no event evt_test_unknown"), "{err}");
    let (code, _, err) = hookline(&bed, &["objects", "show", "acct_test_unknown"], &[]).await;
    assert_eq!(code, 1);
    assert!(err.contains("acct_test_unknown"));
    assert_eq!(
        bed.ledger("evt_test_show").await.expect("ledger").status,
        EventStatus::Completed
    );
}

async fn config_check_reports_without_secrets(bed: Bed) {
    let good = [
        ("STRIPE_WEBHOOK_SECRET", SECRET),
        ("STRIPE_SECRET_KEY", "sk_test_fakeConfigCheckKey"),
    ];
    let (code, out, err) = hookline(&bed, &["config", "check"], &good).await;
    assert_eq!(code, 0, "{out}{err}");
    for what in [
        "backend",
        "queue",
        "dead-letter queue",
        "tables",
        "webhook secrets",
        "Stripe API key",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with("ok") && l.contains(what)),
            "{what} in\n{out}"
        );
    }
    assert!(
        out.contains("whsec_…") && out.contains("sk_test_…"),
        "{out}"
    );
    assert!(
        !out.contains("hooklineIntegrationSecret") && !out.contains("fakeConfigCheckKey"),
        "{out}"
    );

    let live = [
        ("STRIPE_WEBHOOK_SECRET", SECRET),
        ("STRIPE_SECRET_KEY", "sk_live_fakeConfigCheckKey"),
    ];
    let (code, out, _) = hookline(&bed, &["config", "check"], &live).await;
    assert_eq!(code, 1);
    assert!(
        out.contains("FAIL") && out.contains("live keys are refused outside production"),
        "{out}"
    );
    assert!(!out.contains("fakeConfigCheckKey"));

    // A missing table is a problem, named.
    let (code, out, _) = hookline(
        &bed,
        &["config", "check", "--events-table-name", "no-such-table"],
        &[("STRIPE_WEBHOOK_SECRET", SECRET)],
    )
    .await;
    if bed.env.iter().any(|(k, _)| k == "QUEUE_URL") {
        assert_eq!(code, 1, "{out}");
        assert!(
            out.lines()
                .any(|l| l.starts_with("FAIL") && l.contains("tables")),
            "{out}"
        );
    } else {
        // The embedded backend has its tables in the database file.
        assert_eq!(code, 0, "{out}");
    }
}

/// Captures what the CLI sends to SQS for a native redrive.
#[tokio::test(flavor = "multi_thread")]
async fn native_redrive_sends_start_message_move_task_for_the_dlq() {
    crate::skip_without_aws!();
    use axum::http::HeaderMap;
    let fixture = aws_fixture(5).await;
    let seen: Arc<Mutex<Vec<(String, serde_json::Value)>>> = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let record = Arc::clone(&record);
        async move {
            let target = headers
                .get("x-amz-target")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            record.lock().expect("lock").push((target.clone(), req.clone()));
            let name = req["QueueUrl"]
                .as_str()
                .and_then(|u| u.rsplit('/').next())
                .unwrap_or("")
                .to_owned();
            let answer = match target.as_str() {
                "AmazonSQS.GetQueueAttributes" => serde_json::json!({"Attributes": {"QueueArn": format!("arn:aws:sqs:us-east-1:123456789012:{name}")}}),
                "AmazonSQS.StartMessageMoveTask" => serde_json::json!({"TaskHandle": "task-1"}),
                "AmazonSQS.ListMessageMoveTasks" => serde_json::json!({"Results": [{
                    "Status": "COMPLETED",
                    "ApproximateNumberOfMessagesMoved": 7, "ApproximateNumberOfMessagesToMove": 7}]}),
                _ => serde_json::json!({}),
            };
            ([("content-type", "application/x-amz-json-1.0")], answer.to_string())
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let out = tokio::process::Command::new(bin("hookline"))
        .env_clear()
        .envs(fixture.env())
        .env("AWS_ENDPOINT_URL_SQS", format!("http://{addr}"))
        .args([
            "dlq", "replay", "--all", "--native", "--rate", "50", "--json",
        ])
        .output()
        .await
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        json(&stdout),
        serde_json::json!({"replayed": 7, "skipped": 0, "failed": 0})
    );
    let seen = seen.lock().expect("lock").clone();
    let start = seen
        .iter()
        .find(|(t, _)| t == "AmazonSQS.StartMessageMoveTask")
        .expect("StartMessageMoveTask sent");
    let arn = |url: &str| {
        format!(
            "arn:aws:sqs:us-east-1:123456789012:{}",
            url.rsplit('/').next().expect("name")
        )
    };
    assert_eq!(start.1["SourceArn"], arn(&fixture.dlq_url).as_str());
    assert_eq!(start.1["MaxNumberOfMessagesPerSecond"], 50);
    // The main queue by name: the worker's own dead-letters were sent, not
    // redriven, so SQS knows no source queue for them.
    assert_eq!(start.1["DestinationArn"], arn(&fixture.queue_url).as_str());
    let looked_up: Vec<&str> = seen
        .iter()
        .filter(|(t, _)| t == "AmazonSQS.GetQueueAttributes")
        .filter_map(|(_, r)| r["QueueUrl"].as_str())
        .collect();
    assert!(
        looked_up.contains(&fixture.dlq_url.as_str()),
        "{looked_up:?}"
    );
    assert!(
        looked_up.contains(&fixture.queue_url.as_str()),
        "{looked_up:?}"
    );

    // Without the AWS backend, --native is refused with a reason.
    let dir = tempfile::tempdir().expect("tmp");
    let out = tokio::process::Command::new(bin("hookline"))
        .env_clear()
        .env("DATA_DIR", dir.path())
        .args(["dlq", "replay", "--all", "--native"])
        .output()
        .await
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs the AWS backend"));
}
