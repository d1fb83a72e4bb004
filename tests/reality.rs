//! Where reality differs from our own fixtures and assumptions: Stripe's
//! published object shapes and nullable fields, SQS FIFO deduplication,
//! operator errors, hung dependencies, key precedence, settings errors,
//! data-file privacy and growth, replays that end.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use hookline_core::message::OutboundMessage;
use hookline_core::ports::{Queue, WritePath};
use hookline_core::records::{EventStatus, Outcome};

use crate::bed::Bed;
use crate::helpers::*;
use crate::on_both_backends;

const DEAD_LETTERED: &str = "hookline_events_dead_lettered_total";

on_both_backends!(
    stripe_published_objects_of_every_type_apply(5),
    a_replay_of_poison_events_with_workers_running_ends(5),
);

/// One of Stripe's published objects (testdata/stripe-openapi, see its
/// README) in Stripe's published event, as `event_type`, with a fresh id.
fn stripe_event(
    event_type: &str,
    object: &str,
    id: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> String {
    let read = |name: &str| -> serde_json::Value {
        let path = repo_root()
            .join("testdata/stripe-openapi")
            .join(format!("{name}.json"));
        serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("json")
    };
    let mut event = read("event");
    event["id"] = id.into();
    event["type"] = event_type.into();
    event["data"]["object"] = read(object);
    edit(&mut event["data"]["object"]);
    serde_json::to_string_pretty(&event).expect("serialises")
}

async fn stripe_published_objects_of_every_type_apply(bed: Bed) {
    let cases: Vec<(&str, &str, &str, String)> = vec![
        (
            "payment_intent.succeeded",
            "payment_intent",
            "evt_test_oa_pis",
            String::new(),
        ),
        (
            "payment_intent.payment_failed",
            "payment_intent",
            "evt_test_oa_pif",
            String::new(),
        ),
        (
            "charge.dispute.created",
            "dispute",
            "evt_test_oa_dp",
            String::new(),
        ),
        ("payout.created", "payout", "evt_test_oa_poc", String::new()),
        ("payout.updated", "payout", "evt_test_oa_pou", String::new()),
        (
            "account.updated",
            "account",
            "evt_test_oa_acct",
            String::new(),
        ),
    ];
    let mut bodies: Vec<String> = cases
        .iter()
        .map(|(t, o, id, _)| {
            stripe_event(t, o, id, |obj| {
                // One object per event, so no event is stale against another.
                let fresh = format!("{}_{id}", obj["id"].as_str().expect("id"));
                obj["id"] = fresh.into();
            })
        })
        .collect();
    // The defect seen from outside: requirements.currently_due null.
    bodies.push(stripe_event(
        "account.updated",
        "account",
        "evt_test_oa_null_due",
        |o| {
            o["id"] = "acct_test_nulldue".into();
            o["requirements"]["currently_due"] = serde_json::Value::Null;
            o["requirements"]["disabled_reason"] = serde_json::Value::Null;
        },
    ));
    bodies.push(stripe_event(
        "account.updated",
        "account",
        "evt_test_oa_null_req",
        |o| {
            o["id"] = "acct_test_nullreq".into();
            o["requirements"] = serde_json::Value::Null;
        },
    ));
    bodies.push(stripe_event(
        "payout.updated",
        "payout",
        "evt_test_oa_null_dest",
        |o| {
            o["id"] = "po_test_nulldest".into();
            o["destination"] = serde_json::Value::Null;
        },
    ));
    let mut ids: Vec<String> = cases.iter().map(|c| c.2.to_owned()).collect();
    ids.extend(
        [
            "evt_test_oa_null_due",
            "evt_test_oa_null_req",
            "evt_test_oa_null_dest",
        ]
        .map(String::from),
    );
    bed.enqueue(&bodies).await;
    let _worker = bed.worker(&[]);
    assert!(
        eventually(Duration::from_secs(30), || bed.all_completed(&ids)).await,
        "every Stripe-shaped event completes"
    );
    for id in &ids {
        let rec = bed.ledger(id).await.expect("ledger");
        assert_eq!(rec.outcome, Some(Outcome::Applied), "{id}: {rec:?}");
    }
    assert!(bed.dead_letters().await.is_empty(), "nothing dead-lettered");

    let acct = bed.item("acct_test_nulldue").await.expect("provider item");
    assert_eq!(acct["requirementsCurrentlyDue"], serde_json::json!([]));
    assert!(acct.get("disabledReason").is_none());
    assert_eq!(acct["chargesEnabled"], false);
    let acct = bed
        .item("acct_1MoRdlLgUG5tbmjc_evt_test_oa_acct")
        .await
        .expect("item");
    assert_eq!(
        acct["requirementsCurrentlyDue"].as_array().map(Vec::len),
        Some(6)
    );
    assert_eq!(acct["disabledReason"], "requirements.past_due");
    let dispute = bed
        .item("dp_1MoqxHLgUG5tbmjcom3Mmh0p_evt_test_oa_dp")
        .await
        .expect("dispute item");
    assert_eq!(dispute["charge"], "ch_1MoS30LgUG5tbmjcjfsQqpHI");
    assert!(
        dispute.get("paymentIntent").is_none(),
        "null payment_intent stays absent"
    );
    assert_eq!(dispute["status"], "warning_needs_response");
    let payout = bed.item("po_test_nulldest").await.expect("payout item");
    assert_eq!(payout["status"], "in_transit");
    assert_eq!(payout["amount"], 1100);
    let pi = bed
        .item("pi_1MoS6tLgUG5tbmjcQ62U6djv_evt_test_oa_pif")
        .await
        .expect("intent item");
    assert_eq!(pi["amount"], 1099);
    assert!(pi.get("lastPaymentError").is_none());
}

/// A poison event: a Stripe event whose object has no id.
fn poison(id: &str) -> String {
    let mut v: serde_json::Value =
        serde_json::from_str(&event_with("payout.created", id, now())).expect("json");
    v["data"]["object"]
        .as_object_mut()
        .expect("object")
        .remove("id");
    v.to_string()
}

async fn a_replay_of_poison_events_with_workers_running_ends(bed: Bed) {
    let ids: Vec<String> = (0..30).map(|i| format!("evt_test_poison_{i:02}")).collect();
    let bodies: Vec<String> = ids.iter().map(|id| poison(id)).collect();
    bed.enqueue(&bodies).await;
    let a = bed.worker(&[]);
    let b = bed.worker(&[]);
    let dead = || async {
        let d = bed.dlq.counts().await.expect("counts");
        d.waiting + d.in_flight
    };
    assert!(eventually(Duration::from_secs(60), || async { dead().await == 30 }).await);
    let before = metric(&a, DEAD_LETTERED).await + metric(&b, DEAD_LETTERED).await;
    assert_eq!(before, 30);

    // With both workers running, the replay moves the 30 it found and ends,
    // even though the workers dead-letter each of them again meanwhile.
    let started = std::time::Instant::now();
    let (code, out, err) = tokio::time::timeout(
        Duration::from_secs(60),
        run_hookline(&bed.env, &[], &["dlq", "replay", "--json", "--hold", "30s"]),
    )
    .await
    .expect("the replay ends");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        json(&out),
        serde_json::json!({"replayed": 30, "skipped": 0, "failed": 0})
    );
    assert!(started.elapsed() < Duration::from_secs(60));

    // Each poison event was processed exactly once more, and is back.
    assert!(
        eventually(Duration::from_secs(60), || async {
            metric(&a, DEAD_LETTERED).await + metric(&b, DEAD_LETTERED).await == 60
        })
        .await
    );
    assert!(eventually(Duration::from_secs(40), || async { dead().await == 30 }).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        metric(&a, DEAD_LETTERED).await + metric(&b, DEAD_LETTERED).await,
        60,
        "no third round"
    );
    for id in &ids {
        let rec = bed.ledger(id).await.expect("ledger");
        assert_eq!(rec.status, EventStatus::Failed, "{id}");
        assert_eq!(rec.attempts, 2, "{id}: processed once more, {rec:?}");
    }
    assert!(bed.queue_is_empty().await);
}

// ---------------------------------------------------------------------------
// SQS FIFO: copies carry deduplication ids of their own.

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

// ---------------------------------------------------------------------------
// Operator errors wait in the queue; bounded shutdown.

/// A worker pointed at a table that does not exist: every event stays on
/// the main queue (none dead-lettered), `/readyz` says why, and a correctly
/// configured worker then applies them all.
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_table_leaves_events_queued_until_the_setup_is_fixed() {
    crate::skip_without_aws!();
    let bed = Bed::aws(10).await;
    let (ids, bodies): (Vec<String>, Vec<String>) = (0..3)
        .map(|i| {
            let id = format!("evt_test_cfg_{i}");
            let mut v: serde_json::Value =
                serde_json::from_str(&event_with("payout.created", &id, 1_700_000_000))
                    .expect("json");
            v["data"]["object"]["id"] = format!("po_cfg_{i}").into();
            (id, v.to_string())
        })
        .unzip();
    bed.enqueue(&bodies).await;
    let broken = bed.worker(&[("EVENTS_TABLE_NAME", "hookline-events-missing")]);
    let readyz = broken.metrics_url.replace("/metrics", "/readyz");
    assert!(
        eventually(Duration::from_secs(20), || async {
            metric(&broken, "hookline_configuration_errors_total").await >= 3
        })
        .await,
        "configuration errors counted"
    );
    let resp = reqwest::get(&readyz).await.expect("readyz");
    assert_eq!(resp.status().as_u16(), 503);
    let text = resp.text().await.expect("body");
    assert!(text.contains("configuration error"), "{text}");
    assert!(
        !text.contains("arn:"),
        "no AWS error text on the network: {text}"
    );
    assert_eq!(metric(&broken, DEAD_LETTERED).await, 0);
    drop(broken);
    let d = bed.dlq.counts().await.expect("counts");
    assert_eq!(d.waiting + d.in_flight, 0, "nothing dead-lettered");
    let q = bed.queue.counts().await.expect("counts");
    assert_eq!(
        q.waiting + q.in_flight,
        3,
        "every event still on the main queue"
    );

    // Fixed: the messages come back after their backoff and apply.
    let _fixed = bed.worker(&[("VISIBILITY_TIMEOUT_SECS", "2")]);
    assert!(eventually(Duration::from_secs(60), || bed.all_completed(&ids)).await);
    assert!(bed.dead_letters().await.is_empty());
}

/// A TCP server that accepts connections and never answers.
async fn black_hole() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            open.push(s);
        }
    });
    port
}

/// DynamoDB accepts connections and never answers: SIGTERM still exits 0
/// within the grace plus one second, and a restart applies everything.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_that_never_answers_does_not_hold_up_sigterm() {
    crate::skip_without_aws!();
    let bed = Bed::aws(5).await;
    let (ids, bodies): (Vec<String>, Vec<String>) = (0..4)
        .map(|i| {
            let id = format!("evt_test_hang_{i}");
            let mut v: serde_json::Value =
                serde_json::from_str(&event_with("payout.created", &id, 1_700_000_000))
                    .expect("json");
            v["data"]["object"]["id"] = format!("po_hang_{i}").into();
            (id, v.to_string())
        })
        .unzip();
    bed.enqueue(&bodies).await;
    let port = black_hole().await;
    let dynamo = format!("http://127.0.0.1:{port}");
    let mut worker = bed.worker(&[
        ("AWS_ENDPOINT_URL_DYNAMODB", dynamo.as_str()),
        ("SHUTDOWN_GRACE_SECS", "2"),
        ("VISIBILITY_TIMEOUT_SECS", "3"),
    ]);
    assert!(
        eventually(Duration::from_secs(20), || async {
            metric(&worker, "hookline_events_in_flight").await == 4
        })
        .await,
        "the worker is stuck on the store"
    );
    let sent = std::time::Instant::now();
    signal(&worker.child, "TERM");
    let code = wait_exit(&mut worker.child, Duration::from_secs(6));
    let took = sent.elapsed();
    assert_eq!(code, Some(0));
    assert!(
        took <= Duration::from_millis(3000),
        "exited after {took:?}, grace 2 s"
    );

    let _again = bed.worker(&[]);
    assert!(eventually(Duration::from_secs(60), || bed.all_completed(&ids)).await);
}

/// The embedded store blocked by another process's write lock, with a busy
/// timeout far beyond the grace: SIGTERM exits 0 within the grace plus one
/// second; with nothing in flight, within a second.
#[tokio::test(flavor = "multi_thread")]
async fn a_locked_embedded_store_does_not_hold_up_sigterm() {
    let bed = Bed::embedded(5).await;
    let dir = bed
        .env
        .iter()
        .find(|(k, _)| k == "DATA_DIR")
        .map(|(_, v)| v.clone())
        .expect("data dir");
    let (ids, bodies): (Vec<String>, Vec<String>) = (0..3)
        .map(|i| {
            let id = format!("evt_test_lock_{i}");
            let mut v: serde_json::Value =
                serde_json::from_str(&event_with("payout.created", &id, 1_700_000_000))
                    .expect("json");
            v["data"]["object"]["id"] = format!("po_lock_{i}").into();
            (id, v.to_string())
        })
        .unzip();

    // Idle: exits within a second.
    let mut idle = bed.worker(&[("RECEIVE_WAIT_SECS", "20")]);
    assert!(eventually(Duration::from_secs(10), || ready(&idle)).await);
    let sent = std::time::Instant::now();
    signal(&idle.child, "TERM");
    assert_eq!(wait_exit(&mut idle.child, Duration::from_secs(5)), Some(0));
    assert!(
        sent.elapsed() <= Duration::from_millis(1000),
        "idle exit took {:?}",
        sent.elapsed()
    );

    let mut worker = bed.worker(&[
        ("SHUTDOWN_GRACE_SECS", "2"),
        ("VISIBILITY_TIMEOUT_SECS", "3"),
        ("EMBEDDED_BUSY_TIMEOUT_MS", "120000"),
    ]);
    assert!(eventually(Duration::from_secs(10), || ready(&worker)).await);
    // Enqueue, then hold the write lock before the worker can commit.
    bed.enqueue(&bodies).await;
    let lock = hookline_embedded::testing::WriteLock::hold(
        std::path::Path::new(&dir),
        Duration::from_secs(5),
    )
    .expect("lock");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = std::time::Instant::now();
    signal(&worker.child, "TERM");
    let code = wait_exit(&mut worker.child, Duration::from_secs(8));
    let took = sent.elapsed();
    lock.release().expect("unlock");
    assert_eq!(code, Some(0));
    assert!(
        took <= Duration::from_millis(3000),
        "exited after {took:?}, grace 2 s"
    );

    let _again = bed.worker(&[]);
    assert!(eventually(Duration::from_secs(30), || bed.all_completed(&ids)).await);
}

// ---------------------------------------------------------------------------
// Settings: key precedence and exit codes.

/// `STRIPE_SECRET_KEY_ID` (a test key in Secrets Manager) wins over a live
/// `STRIPE_SECRET_KEY` in development: the binaries start. The other way
/// round, they refuse to start, naming the rule.
#[tokio::test(flavor = "multi_thread")]
async fn the_key_that_wins_is_the_one_checked() {
    crate::skip_without_aws!();
    let fixture = aws_fixture(5).await;
    let clients = hookline_aws::AwsClients::load().await;
    let test_key = format!("hookline-test-key-{}", uuid::Uuid::new_v4().simple());
    let live_key = format!("hookline-live-key-{}", uuid::Uuid::new_v4().simple());
    let put = |name: String, value: &str| {
        let clients = clients.clone();
        let value = secrecy::SecretString::from(value.to_owned());
        async move {
            hookline_aws::provision::put_secret(&clients, &name, &value)
                .await
                .expect("secret stored")
        }
    };
    put(test_key.clone(), "sk_test_fakeKeyFromSecretsManager").await;
    put(live_key.clone(), "sk_live_fakeKeyFromSecretsManager").await;

    let mut env = fixture.env();
    env.extend([
        ("APP_ENV".to_owned(), "development".to_owned()),
        (
            "STRIPE_SECRET_KEY".to_owned(),
            "sk_live_fakePlainValueLoses".to_owned(),
        ),
        ("STRIPE_SECRET_KEY_ID".to_owned(), test_key),
    ]);
    let worker = start_worker_env(&env);
    assert!(
        eventually(Duration::from_secs(20), || ready(&worker)).await,
        "the worker starts on the test key that wins"
    );
    drop(worker);
    let mut ingress_env = env.clone();
    ingress_env.extend([
        ("STRIPE_WEBHOOK_SECRET".to_owned(), SECRET.to_owned()),
        ("BIND_ADDR".to_owned(), format!("127.0.0.1:{}", free_port())),
    ]);
    let mut ingress = std::process::Command::new(bin("hookline-ingress"))
        .env_clear()
        .envs(ingress_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ingress starts");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        ingress.try_wait().expect("try_wait").is_none(),
        "the ingress runs"
    );
    let _ = ingress.kill();
    let _ = ingress.wait();
    let (code, out, _) = run_hookline(&env, &[], &["config", "check"]).await;
    assert!(out.contains("sk_test_"), "{out}");
    assert!(!out.contains("fakePlainValueLoses") && !out.contains("fakeKeyFromSecretsManager"));
    assert!(
        !out.lines()
            .any(|l| l.starts_with("FAIL") && l.contains("API key")),
        "{out} ({code})"
    );

    // The winning key is live in development: refused, exit 1.
    let mut env = fixture.env();
    env.extend([
        ("APP_ENV".to_owned(), "development".to_owned()),
        (
            "STRIPE_SECRET_KEY".to_owned(),
            "sk_test_fakePlainValueLoses".to_owned(),
        ),
        ("STRIPE_SECRET_KEY_ID".to_owned(), live_key),
    ]);
    let out = std::process::Command::new(bin("hookline-worker"))
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("METRICS_ADDR", format!("127.0.0.1:{}", free_port()))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("live keys are refused outside production"),
        "{err}"
    );
    assert!(!err.contains("fakeKeyFromSecretsManager"));
}

/// A settings value that fails validation exits 1 with a clear message,
/// from the environment or a flag; a usage error exits 2.
#[test]
fn invalid_settings_exit_1_and_usage_errors_exit_2() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().display().to_string();
    let run = |binary: &str, env: &[(&str, &str)], args: &[&str]| {
        let out = std::process::Command::new(bin(binary))
            .env_clear()
            .env("DATA_DIR", &data)
            .env("STRIPE_WEBHOOK_SECRET", SECRET)
            .envs(env.iter().copied())
            .args(args)
            .output()
            .expect("runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for binary in ["hookline-ingress", "hookline-worker"] {
        let (code, err) = run(binary, &[("APP_ENV", "staging")], &[]);
        assert_eq!(code, Some(1), "{binary} APP_ENV=staging: {err}");
        assert!(err.contains("staging") && err.contains("app-env"), "{err}");
        let (code, err) = run(binary, &[("MAX_RECEIVES", "0")], &[]);
        assert_eq!(code, Some(1), "{binary} MAX_RECEIVES=0: {err}");
        let (code, err) = run(binary, &[("VISIBILITY_TIMEOUT_SECS", "soon")], &[]);
        assert_eq!(code, Some(1), "{binary}: {err}");
        let (code, err) = run(binary, &[], &["--max-receives", "0"]);
        assert_eq!(code, Some(1), "{binary} flag: {err}");
        let (code, err) = run(binary, &[], &["--no-such-flag"]);
        assert_eq!(code, Some(2), "{binary} unknown flag: {err}");
    }
    let (code, err) = run("hookline-worker", &[("WORKER_CONCURRENCY", "many")], &[]);
    assert_eq!(code, Some(1), "{err}");
    let (code, err) = run("hookline", &[("APP_ENV", "staging")], &["dlq", "stats"]);
    assert_eq!(code, Some(1), "{err}");
    let (code, err) = run(
        "hookline",
        &[],
        &["dlq", "replay", "--older-than", "a while"],
    );
    assert_eq!(code, Some(1), "{err}");
    let (code, err) = run("hookline", &[], &["dlq", "frobnicate"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, err) = run("hookline", &[], &["events", "show"]);
    assert_eq!(code, Some(2), "missing argument: {err}");
}

// ---------------------------------------------------------------------------
// The embedded backend's files: private, and bounded.

#[tokio::test]
async fn embedded_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().expect("tmp");
    let dir = root.path().join("nested").join("data");
    let e = hookline_embedded::open(&dir, hookline_embedded::Options::default()).expect("open");
    let body = event_with("payout.created", "evt_test_modes", now());
    let env = hookline_core::envelope::Envelope::parse(body.as_bytes()).expect("event");
    let msg = OutboundMessage::for_event(&env, Bytes::from(body), now());
    assert!(e.queue.send_batch(&[msg]).await[0].is_ok());
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|err| panic!("{}: {err}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&dir), 0o700, "data directory");
    let db = hookline_embedded::db_path(&dir);
    assert_eq!(mode(&db), 0o600, "database");
    let wal = db.with_file_name(format!(
        "{}-wal",
        db.file_name().and_then(|n| n.to_str()).expect("name")
    ));
    assert_eq!(mode(&wal), 0o600, "write-ahead log");

    // A database an earlier version left world-readable is narrowed.
    drop(e);
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let _e = hookline_embedded::open(&dir, hookline_embedded::Options::default()).expect("open");
    assert_eq!(mode(&db), 0o600);
}

/// Expired ledger items and DLQ messages past 14 days are purged while the
/// worker runs; recent ones stay.
#[tokio::test(flavor = "multi_thread")]
async fn the_worker_purges_expired_records_on_the_embedded_backend() {
    let bed = Bed::embedded(5).await;
    let day = 86_400;
    let old = now() - 40 * day;
    let ev = |id: &str| hookline_core::envelope::EventId::new(id);
    // Ledger items: expiresAt = now + 30 days at the time they were written.
    bed.store
        .fail(
            &ev("evt_test_expired"),
            "payout.created",
            hookline_core::ports::Origin::source("test"),
            "x",
            old,
            WritePath::Apply,
        )
        .await
        .expect("write");
    bed.store
        .fail(
            &ev("evt_test_recent"),
            "payout.created",
            hookline_core::ports::Origin::source("test"),
            "x",
            now(),
            WritePath::Apply,
        )
        .await
        .expect("write");
    // DLQ messages sent 20 days ago and now.
    let dead = |id: &str| {
        let body = event_with("payout.created", id, now());
        let env = hookline_core::envelope::Envelope::parse(body.as_bytes()).expect("event");
        OutboundMessage::for_event(&env, Bytes::from(body), now())
    };
    assert!(bed
        .dlq
        .send_batch(&[dead("evt_test_dlq_old"), dead("evt_test_dlq_new")])
        .await
        .iter()
        .all(Result::is_ok));
    let dir = bed
        .env
        .iter()
        .find(|(k, _)| k == "DATA_DIR")
        .map(|(_, v)| v.clone())
        .expect("dir");
    let aged = hookline_embedded::testing::backdate_dead_letters(
        std::path::Path::new(&dir),
        "evt_test_dlq_old",
        (now() - 20 * day) * 1000,
    )
    .expect("age the message");
    assert_eq!(aged, 1);

    let _worker = bed.worker(&[("HOUSEKEEPING_INTERVAL_SECS", "1")]);
    assert!(
        eventually(Duration::from_secs(20), || async {
            bed.ledger("evt_test_expired").await.is_none()
        })
        .await,
        "the expired ledger item is purged"
    );
    assert!(bed.ledger("evt_test_recent").await.is_some());
    assert!(
        eventually(Duration::from_secs(10), || async {
            let d = bed.dlq.counts().await.expect("counts");
            d.waiting + d.in_flight == 1
        })
        .await
    );
    let left = bed.dead_letters().await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].attributes["event_id"], "evt_test_dlq_new");
}

// ---------------------------------------------------------------------------
// The CLI under signals.

/// SIGTERM is handled like ctrl-c: the messages a replay holds are released
/// at once, not after the hold.
#[tokio::test(flavor = "multi_thread")]
async fn cli_sigterm_releases_held_messages() {
    let bed = Bed::embedded(5).await;
    let messages: Vec<OutboundMessage> = (0..20)
        .map(|i| {
            let id = format!("evt_test_term_{i:02}");
            let body = event_with("payout.created", &id, now());
            let env = hookline_core::envelope::Envelope::parse(body.as_bytes()).expect("event");
            OutboundMessage::for_event(&env, Bytes::from(body), now())
        })
        .collect();
    for chunk in messages.chunks(10) {
        assert!(bed.dlq.send_batch(chunk).await.iter().all(Result::is_ok));
    }
    let child = tokio::process::Command::new(bin("hookline"))
        .env_clear()
        .envs(bed.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .args(["dlq", "replay", "--rate", "2", "--hold", "10m"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("replay starts");
    // Paced at 2/s: after about a second it holds messages and waits.
    let hidden = || async { bed.dlq.counts().await.expect("counts").in_flight };
    assert!(eventually(Duration::from_secs(10), || async { hidden().await > 0 }).await);
    let pid = child.id().expect("pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("exits on SIGTERM")
        .expect("output");
    assert_eq!(out.status.code(), Some(1), "interrupted");
    assert!(String::from_utf8_lossy(&out.stderr).contains("releasing held messages"));
    let d = bed.dlq.counts().await.expect("counts");
    let q = bed.queue.counts().await.expect("counts");
    assert_eq!(d.in_flight, 0, "nothing left hidden in the DLQ");
    assert_eq!(d.waiting + q.waiting, 20, "nothing lost");
}

/// `dlq list --json` and `export` stream a larger DLQ: all of it, once.
#[tokio::test(flavor = "multi_thread")]
async fn list_and_export_stream_every_message_once() {
    let bed = Bed::embedded(5).await;
    let messages: Vec<OutboundMessage> = (0..250)
        .map(|i| {
            let id = format!("evt_test_many_{i:03}");
            let body = event_with("payout.updated", &id, now());
            let env = hookline_core::envelope::Envelope::parse(body.as_bytes()).expect("event");
            OutboundMessage::for_event(&env, Bytes::from(body), now())
        })
        .collect();
    assert!(bed
        .dlq
        .send_batch(&messages)
        .await
        .iter()
        .all(Result::is_ok));
    let (code, out, err) = run_hookline(&bed.env, &[], &["dlq", "list", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let listed = json(&out);
    let ids: BTreeSet<&str> = listed
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    assert_eq!(ids.len(), 250);
    let file = tempfile::NamedTempFile::new().expect("tmp");
    let path = file.path().display().to_string();
    let (code, _, err) = run_hookline(&bed.env, &[], &["dlq", "export", "--out", &path]).await;
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&path).expect("read");
    assert_eq!(text.lines().count(), 250);
    let d = bed.dlq.counts().await.expect("counts");
    assert_eq!(
        (d.waiting, d.in_flight),
        (250, 0),
        "nothing removed, nothing left hidden"
    );
}

// ---------------------------------------------------------------------------
// `make run`: ctrl-c leaves no process behind.

#[test]
fn ctrl_c_on_make_run_leaves_no_process_behind() {
    let dir = tempfile::tempdir().expect("tmp");
    let (bind, metrics) = (free_port(), free_port());
    let mut make = std::process::Command::new("make");
    make.current_dir(repo_root())
        .args([
            "-s",
            "run",
            &format!("DATA_DIR={}", dir.path().display()),
            &format!("BIND_ADDR=127.0.0.1:{bind}"),
            &format!("METRICS_ADDR=127.0.0.1:{metrics}"),
            // The test run already built the binaries (and holds cargo's lock).
            "CARGO=true",
            &format!("BIN_DIR={}", bin_dir().display()),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(log_file("make-run"));
    // Its own process group, as a terminal's foreground job.
    std::os::unix::process::CommandExt::process_group(&mut make, 0);
    let mut make = make.spawn().expect("make runs");
    let pgid = make.id().to_string();
    let listening = |port: u16| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    while !(listening(bind) && listening(metrics)) {
        assert!(
            std::time::Instant::now() < deadline,
            "make run did not start"
        );
        assert!(
            make.try_wait().expect("try_wait").is_none(),
            "make run exited early"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Ctrl-c: SIGINT to the whole foreground process group.
    let status = std::process::Command::new("kill")
        .args(["-INT", "--", &format!("-{pgid}")])
        .status()
        .expect("kill");
    assert!(status.success());
    let _ = wait_exit(&mut make, Duration::from_secs(15));
    let group_alive = || {
        std::process::Command::new("kill")
            .args(["-0", "--", &format!("-{pgid}")])
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while group_alive() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!group_alive(), "a process of `make run` is still running");
    assert!(
        !listening(bind) && !listening(metrics),
        "the ports are free again"
    );
    std::net::TcpListener::bind(("127.0.0.1", bind)).expect("port free for the next run");
}

// ---------------------------------------------------------------------------
// The ingress under slow and hostile clients, and its bounded shutdown.

/// 200 connections that send half a request line and headers, then
/// nothing: a valid event still gets its 200, and every one of them is
/// closed within the header-read timeout.
#[tokio::test(flavor = "multi_thread")]
async fn half_sent_requests_are_closed_and_valid_events_still_pass() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(&["--header-read-timeout-secs", "1"]).await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut s = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        s.write_all(b"POST /api/stripe-webhook HTTP/1.1\r\nHost: x\r\nContent-Le")
            .await
            .expect("write");
        slow.push(s);
    }
    let body = event_with("payout.created", "evt_test_slowloris", now());
    let (status, _) = app.post_signed(&body).await;
    assert_eq!(status, 200, "a valid event gets its 200 meanwhile");
    assert_eq!(app.queued().await.len(), 1, "and it is queued");

    // Each slow connection is closed by the server: a read ends (EOF, or
    // the 408 hyper may write first, then EOF) within the timeout + slack.
    let started = std::time::Instant::now();
    let closed = slow.into_iter().map(|mut s| async move {
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(4), s.read_to_end(&mut buf))
            .await
            .is_ok()
    });
    let results = futures_join_all(closed).await;
    assert!(
        results.iter().all(|closed| *closed),
        "every half-sent request was closed"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, 200);
}

async fn futures_join_all<F: std::future::Future<Output = bool> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<bool> {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap_or(false));
    }
    out
}

/// The memory held for bodies being read is capped, and taken as bytes
/// arrive: when the bodies being read hold it all, a request is answered
/// 503 at once (Stripe retries it) instead of waiting behind them; a small
/// event that fits is served at once; nothing unaccepted is queued.
#[tokio::test(flavor = "multi_thread")]
async fn body_memory_is_capped_across_requests() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app_with(&[
        "--max-body-memory-bytes",
        "300000",
        "--request-timeout-secs",
        "5",
    ])
    .await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    // One stalled upload that has sent 250 kB of its 250,001 holds most of
    // the budget.
    let mut stalled = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    stalled
        .write_all(
            b"POST /api/stripe-webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 250001\r\n\r\n",
        )
        .await
        .expect("write");
    stalled
        .write_all(&vec![b' '; 250_000])
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A small valid event fits beside it and is served at once.
    let started = std::time::Instant::now();
    let body = event_with("payout.created", "evt_test_budget", now());
    let (status, _) = app.post_signed(&body).await;
    assert_eq!(status, 200);
    // A 100 kB body does not fit: 503 at once, not a wait.
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(100_000));
    let (status, answer) = app.post(big.clone(), Some("t=1,v1=00")).await;
    assert_eq!(status, 503, "{answer}");
    assert!(answer.contains("busy"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The stalled upload gone, the room is free again.
    drop(stalled);
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.post(big.clone(), Some("t=1,v1=00")).await.0 == 400
        })
        .await,
        "read (and refused for its signature) once the budget is free"
    );
    assert_eq!(
        app.queued().await.len(),
        1,
        "only the valid event is queued"
    );
}

/// 300 uploads that each declare 250 kB (75 MB, more than the default
/// 64 MiB budget) and trickle it: they hold only what they sent, so valid
/// webhooks are still answered 200 within a second.
#[tokio::test(flavor = "multi_thread")]
async fn slow_uploads_cannot_starve_valid_webhooks() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app_with(&["--request-timeout-secs", "30"]).await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut s = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        s.write_all(
            b"POST /api/stripe-webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 250000\r\n\r\n{\"pad\":\"",
        )
        .await
        .expect("write");
        slow.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for s in &mut slow {
        s.write_all(b"xxxx").await.expect("trickle");
    }
    for i in 0..5 {
        let started = std::time::Instant::now();
        let body = event_with("payout.created", &format!("evt_test_trickle_{i}"), now());
        let (status, answer) = app.post_signed(&body).await;
        assert_eq!(status, 200, "{answer}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "answered in {:?}",
            started.elapsed()
        );
    }
    assert_eq!(app.queued().await.len(), 5, "every 200 is queued");
    drop(slow);
}

/// The idle timeout of the stack's ALB, read from the template.
fn alb_idle_timeout_secs() -> u64 {
    let template =
        std::fs::read_to_string(repo_root().join("infra/hookline.yaml")).expect("template");
    let mut lines = template.lines();
    lines
        .find(|l| l.contains("idle_timeout.timeout_seconds"))
        .expect("the ALB sets its idle timeout");
    let value = lines.next().expect("its value");
    value
        .trim()
        .trim_start_matches("Value:")
        .trim()
        .trim_matches('"')
        .parse()
        .expect("seconds")
}

/// One signed webhook on a raw keep-alive connection; the status code.
async fn post_on(stream: &mut tokio::net::TcpStream, id: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = event_with("payout.created", id, now());
    let request = format!(
        "POST /api/stripe-webhook HTTP/1.1\r\nHost: x\r\nStripe-Signature: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        sign(&body),
        body.len()
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        return 0;
    }
    // Read the head, then the body its Content-Length names.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return 0,
        };
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return text[9..12].parse().unwrap_or(0);
            }
        }
    }
}

/// A keep-alive connection left idle for the ALB's idle timeout less a
/// second still serves the next webhook: the ingress's keep-alive outlives
/// the balancer's, so the balancer never sends on a connection the ingress
/// is closing (a 502 Stripe would see). The header-read timeout (5 s)
/// does not apply between requests.
#[tokio::test(flavor = "multi_thread")]
async fn a_keep_alive_connection_idle_as_long_as_the_alb_allows_still_serves() {
    let alb_idle = alb_idle_timeout_secs();
    assert!(
        alb_idle > 5,
        "the test shows something only beyond the header timeout"
    );
    let app = spawn_app_with(&[]).await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    let mut conn = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    assert_eq!(post_on(&mut conn, "evt_test_keepalive_1").await, 200);
    tokio::time::sleep(Duration::from_secs(alb_idle - 1)).await;
    assert_eq!(
        post_on(&mut conn, "evt_test_keepalive_2").await,
        200,
        "the idle keep-alive connection still serves"
    );
    assert_eq!(app.queued().await.len(), 2);
}

/// Past KEEP_ALIVE_TIMEOUT_SECS an idle connection is closed by the
/// ingress; a request's headers still get only HEADER_READ_TIMEOUT_SECS.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_connection_is_closed_after_the_keep_alive_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(&[
        "--keep-alive-timeout-secs",
        "3",
        "--header-read-timeout-secs",
        "1",
    ])
    .await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    let mut conn = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    assert_eq!(post_on(&mut conn, "evt_test_idle_1").await, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        post_on(&mut conn, "evt_test_idle_2").await,
        200,
        "idle 2 s < 3 s"
    );
    let idle_from = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let eof = tokio::time::timeout(Duration::from_secs(6), conn.read(&mut buf)).await;
    assert!(matches!(eof, Ok(Ok(0))), "closed by the ingress: {eof:?}");
    let idle = idle_from.elapsed();
    assert!(
        idle >= Duration::from_millis(2500) && idle < Duration::from_millis(4500),
        "after the keep-alive timeout: {idle:?}"
    );
    // Half a request's headers on a used connection: closed after 1 s.
    let mut conn = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    assert_eq!(post_on(&mut conn, "evt_test_idle_3").await, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    conn.write_all(b"POST /api/stripe-webhook HTTP/1.1\r\nHost: x\r\nContent-Le")
        .await
        .expect("write");
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), conn.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "closed by the header-read timeout");
    assert!(
        started.elapsed() < Duration::from_millis(2000),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(app.queued().await.len(), 3);
}

/// SIGTERM with a request stalled mid-body and an idle keep-alive
/// connection open: the ingress exits 0 within the request timeout plus a
/// second, and the event it acknowledged before is queued.
#[tokio::test(flavor = "multi_thread")]
async fn ingress_shutdown_is_bounded_by_the_request_timeout() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let mut child = std::process::Command::new(bin("hookline-ingress"))
        .env_clear()
        .env("DATA_DIR", dir.path())
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("STRIPE_WEBHOOK_SECRET", SECRET)
        .env("REQUEST_TIMEOUT_SECS", "2")
        .stderr(log_file(&format!("ingress-shutdown-{port}")))
        .spawn()
        .expect("ingress starts");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    assert!(
        eventually(Duration::from_secs(10), || async {
            client.get(format!("{base}/healthz")).send().await.is_ok()
        })
        .await
    );
    let body = event_with("payout.created", "evt_test_before_term", now());
    let resp = client
        .post(format!("{base}/api/stripe-webhook"))
        .header("stripe-signature", sign(&body))
        .body(body)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status().as_u16(), 200);
    let mut stalled = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stalled
        .write_all(b"POST /api/stripe-webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = std::time::Instant::now();
    signal(&child, "TERM");
    let code = wait_exit(&mut child, Duration::from_secs(8));
    assert_eq!(code, Some(0));
    assert!(
        sent.elapsed() <= Duration::from_millis(3200),
        "took {:?}",
        sent.elapsed()
    );
    drop(stalled);
    let e =
        hookline_embedded::open(dir.path(), hookline_embedded::Options::default()).expect("open");
    let queued = e.queue.snapshot().await.expect("snapshot");
    assert_eq!(queued.len(), 1, "the acknowledged event is queued");
}
