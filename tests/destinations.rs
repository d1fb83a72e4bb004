//! Routes and destinations: events delivered to a team's own service over
//! HTTP with Hookline's guarantees. The receiver is not ours: a Node app
//! (tests/receiver) that verifies every delivery with the official `stripe`
//! package's `webhooks.constructEvent`, installed from its lock file by
//! `make test`. Every case runs on both backends and checks what reached
//! the DLQ.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use hookline_core::records::{EventStatus, Outcome};
use serde_json::{json, Value};

use crate::bed::Bed;
use crate::helpers::*;
use crate::on_both_backends;

const SECRET_A: &str = "whsec_test_destinationA";
const SECRET_B: &str = "whsec_test_destinationB";

on_both_backends!(
    server_errors_are_retried_until_the_destination_takes_it(5),
    a_retry_after_is_honoured(5),
    a_refusal_dead_letters_with_the_status(5),
    timeouts_redirects_and_refused_connections_are_retried(5),
    fan_out_calls_a_taker_once_and_a_replay_reaches_only_the_other(5),
    a_worker_killed_mid_delivery_delivers_again_with_the_same_key(5),
    events_show_names_each_destination_and_redeliver_sends_again(5),
    a_destination_down_for_two_minutes_loses_nothing_and_holds_up_no_other(5),
    the_custom_worker_example_runs_its_handler(5),
    an_eventbridge_destination_puts_each_event_on_the_bus(5),
);

/// The Node receiver, killed on drop.
struct Receiver {
    _child: KillOnDrop,
    base: String,
}

impl Receiver {
    /// Starts it, or `None` (the skip recorded) where `make test` could not
    /// install it.
    fn start() -> Option<Receiver> {
        let dir = repo_root().join("tests/receiver");
        if !dir.join("node_modules/stripe").is_dir() {
            record_skip(
                "the Node receiver is not installed (make receiver: npm ci in tests/receiver)",
            );
            return None;
        }
        let secrets =
            json!({"a": SECRET_A, "b": SECRET_B, "rotated": [SECRET_A, SECRET_B]}).to_string();
        let mut child = Command::new("node")
            .arg(dir.join("server.js"))
            .env("RECEIVER_SECRETS", secrets)
            .stdout(Stdio::piped())
            .stderr(log_file("receiver"))
            .spawn()
            .expect("node starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the receiver prints its port");
        let port: u16 = line.trim().parse().expect("a port");
        Some(Receiver {
            _child: KillOnDrop(child),
            base: format!("http://127.0.0.1:{port}"),
        })
    }

    fn url(&self, name: &str) -> String {
        format!("{}/hook/{name}", self.base)
    }

    async fn script(&self, name: &str, answers: Value) {
        let r = reqwest::Client::new()
            .put(format!("{}/script/{name}", self.base))
            .body(answers.to_string())
            .send()
            .await
            .expect("script");
        assert!(r.status().is_success());
    }

    async fn deliveries(&self, name: &str) -> Vec<Value> {
        let v: Value = reqwest::get(format!("{}/deliveries/{name}", self.base))
            .await
            .expect("deliveries")
            .json()
            .await
            .expect("json");
        v.as_array().cloned().unwrap_or_default()
    }

    /// Waits until `name` has seen `n` deliveries.
    async fn wait_for(&self, name: &str, n: usize, within: Duration) -> Vec<Value> {
        eventually(within, || async { self.deliveries(name).await.len() >= n }).await;
        self.deliveries(name).await
    }
}

/// A routes document: destinations `(name, events)` of kind http at the
/// receiver, with extra keys.
fn routes(rx: &Receiver, destinations: &[(&str, &str, &str)]) -> String {
    destinations
        .iter()
        .map(|(name, events, extra)| {
            let secret = if *name == "b" { SECRET_B } else { SECRET_A };
            format!(
                "[[destination]]\nname = \"{name}\"\nkind = \"http\"\nevents = [{events}]\nurl = \"{}\"\nallow_http = true\nsigning_secret = \"{secret}\"\n{extra}\n",
                rx.url(name)
            )
        })
        .collect()
}

/// A worker on `bed` with the routes document `doc` and `enabled` types.
fn routed_worker(bed: &Bed, doc: &str, enabled: &str) -> WorkerProc {
    bed.worker(&[("ROUTES", doc), ("ENABLED_EVENTS", enabled)])
}

/// Waits until the DLQ holds `n` messages.
async fn dead_lettered(bed: &Bed, n: u64, within: Duration) -> bool {
    eventually(within, || async { bed.dlq_len().await == n }).await
}

fn one_event(id: &str) -> String {
    event_with("payment_intent.succeeded", id, now())
}

/// Every delivery verified with Stripe's library, carried the body Stripe
/// sent byte for byte, the event id as its idempotency key, and Hookline's
/// user agent; the attempts count up from 1.
fn check_deliveries(seen: &[Value], body: &str, id: &str) {
    for (i, d) in seen.iter().enumerate() {
        assert_eq!(d["verified"], true, "constructEvent accepted it: {d}");
        assert_eq!(d["body"], body, "the body Stripe sent, byte for byte");
        assert_eq!(d["eventId"], id);
        assert_eq!(d["idempotencyKey"], id);
        assert_eq!(d["hooklineEventId"], id);
        assert_eq!(d["attempt"], i + 1);
        assert!(
            d["userAgent"]
                .as_str()
                .is_some_and(|u| u.starts_with("Hookline/")),
            "{d}"
        );
    }
}

async fn completed_with_nothing_dead_lettered(bed: &Bed, id: &str) {
    let ids = [id.to_owned()];
    assert!(
        eventually(Duration::from_secs(30), || bed.all_completed(&ids)).await,
        "{id} completes: {:?}",
        bed.ledger(id).await
    );
    assert_eq!(bed.dlq_len().await, 0, "nothing dead-lettered");
    assert!(eventually(Duration::from_secs(10), || bed.queue_is_empty()).await);
}

async fn server_errors_are_retried_until_the_destination_takes_it(bed: Bed) {
    let Some(rx) = Receiver::start() else { return };
    rx.script("a", json!([{"status": 500}, {"status": 503}]))
        .await;
    let doc = routes(&rx, &[("a", "\"*\"", "")]);
    let w = routed_worker(&bed, &doc, "payment_intent.succeeded");
    let body = one_event("evt_test_dest5xx");
    bed.enqueue(std::slice::from_ref(&body)).await;
    let seen = rx.wait_for("a", 3, Duration::from_secs(30)).await;
    assert_eq!(seen.len(), 3, "two 5xx, then taken: {seen:?}");
    check_deliveries(&seen, &body, "evt_test_dest5xx");
    completed_with_nothing_dead_lettered(&bed, "evt_test_dest5xx").await;
    let rec = bed.ledger("evt_test_dest5xx").await.expect("ledger");
    assert_eq!(rec.outcome, Some(Outcome::Applied));
    let a = &rec.destinations["a"];
    assert!(a.delivered);
    assert_eq!(a.attempts, 3);
    assert_eq!(rx.deliveries("a").await.len(), 3, "never called again");
    let series = |result: &str| {
        format!("hookline_destination_deliveries_total{{destination=\"a\",result=\"{result}\"}}")
    };
    assert_eq!(metric(&w, &series("delivered")).await, 1);
    assert_eq!(metric(&w, &series("retried")).await, 2);
    assert_eq!(metric(&w, &series("failed")).await, 0);
    assert_eq!(
        metric(
            &w,
            "hookline_destination_delivery_seconds_count{destination=\"a\"}"
        )
        .await,
        3
    );
}

async fn a_retry_after_is_honoured(bed: Bed) {
    let Some(rx) = Receiver::start() else { return };
    rx.script("a", json!([{"status": 429, "retryAfter": 2}]))
        .await;
    let doc = routes(&rx, &[("a", "\"payment_intent.*\"", "")]);
    let _w = routed_worker(&bed, &doc, "payment_intent.succeeded");
    let body = one_event("evt_test_dest429");
    bed.enqueue(std::slice::from_ref(&body)).await;
    let seen = rx.wait_for("a", 2, Duration::from_secs(30)).await;
    check_deliveries(&seen, &body, "evt_test_dest429");
    let waited = seen[1]["at"].as_i64().expect("at") - seen[0]["at"].as_i64().expect("at");
    assert!(
        waited >= 1900,
        "Retry-After: 2 honoured, waited {waited} ms"
    );
    completed_with_nothing_dead_lettered(&bed, "evt_test_dest429").await;
}

async fn a_refusal_dead_letters_with_the_status(bed: Bed) {
    let Some(rx) = Receiver::start() else { return };
    rx.script("a", json!([{"status": 410, "message": "endpoint retired"}]))
        .await;
    let doc = routes(&rx, &[("a", "\"*\"", "")]);
    let _w = routed_worker(&bed, &doc, "payment_intent.succeeded");
    let body = one_event("evt_test_dest410");
    bed.enqueue(std::slice::from_ref(&body)).await;
    assert!(dead_lettered(&bed, 1, Duration::from_secs(30)).await);
    let dead = bed.dead_letters().await;
    let reason = dead[0].attributes.get("error").cloned().unwrap_or_default();
    assert!(
        reason.starts_with("destination a: HTTP 410: ") && reason.contains("endpoint retired"),
        "{reason}"
    );
    assert_eq!(dead[0].body, body.as_bytes(), "the event itself, kept");
    assert_eq!(
        rx.deliveries("a").await.len(),
        1,
        "a refusal is not retried"
    );
    let rec = bed.ledger("evt_test_dest410").await.expect("ledger");
    assert_eq!(rec.status, EventStatus::Failed);
    assert!(!rec.destinations["a"].delivered);
    assert!(bed.queue_is_empty().await);
}

async fn timeouts_redirects_and_refused_connections_are_retried(bed: Bed) {
    let Some(rx) = Receiver::start() else { return };
    rx.script(
        "a",
        json!([{"delayMs": 3000}, {"status": 301, "location": "https://elsewhere.example/"}, {"reset": true}]),
    )
    .await;
    let closed = format!("http://127.0.0.1:{}/hook/c", free_port());
    let mut doc = routes(&rx, &[("a", "\"*\"", "timeout_secs = 1")]);
    doc.push_str(&format!(
        "[[destination]]\nname = \"c\"\nkind = \"http\"\nevents = [\"*\"]\nurl = \"{closed}\"\nallow_http = true\nsigning_secret = \"{SECRET_A}\"\n"
    ));
    let _w = routed_worker(&bed, &doc, "payment_intent.succeeded");
    let body = one_event("evt_test_destNet");
    bed.enqueue(std::slice::from_ref(&body)).await;
    // A's late answer, redirect (not followed) and reset are retried; the
    // fourth try is taken.
    let seen = rx.wait_for("a", 4, Duration::from_secs(60)).await;
    assert_eq!(seen.len(), 4, "{seen:?}");
    check_deliveries(&seen, &body, "evt_test_destNet");
    // C refuses connections: retried, never dead-lettered, within its horizon.
    assert!(
        eventually(Duration::from_secs(30), || async {
            bed.ledger("evt_test_destNet").await.is_some_and(|r| {
                r.destinations.get("c").is_some_and(|c| c.attempts >= 3)
                    && r.destinations.get("a").is_some_and(|a| a.delivered)
            })
        })
        .await
    );
    let rec = bed.ledger("evt_test_destNet").await.expect("ledger");
    let c = &rec.destinations["c"];
    assert!(!c.delivered);
    assert!(
        c.last_error
            .as_deref()
            .is_some_and(|e| e.contains("cannot connect")),
        "{c:?}"
    );
    assert_eq!(rec.destinations["a"].attempts, 4);
    assert_eq!(
        bed.dlq_len().await,
        0,
        "nothing dead-lettered within the horizon"
    );
    assert_eq!(rx.deliveries("a").await.len(), 4, "A is not called again");
}

async fn fan_out_calls_a_taker_once_and_a_replay_reaches_only_the_other(bed: Bed) {
    let Some(rx) = Receiver::start() else { return };
    rx.script("b", Value::Array(vec![json!({"status": 500}); 20]))
        .await;
    // B gives up after 2 s of failures so that it dead-letters in the test.
    let doc = routes(
        &rx,
        &[
            ("a", "\"*\"", ""),
            ("b", "\"payment_intent.*\"", "retry_for = \"2s\""),
        ],
    );
    let mut w = routed_worker(&bed, &doc, "payment_intent.succeeded");
    let body = one_event("evt_test_destFan");
    bed.enqueue(std::slice::from_ref(&body)).await;
    assert!(
        dead_lettered(&bed, 1, Duration::from_secs(60)).await,
        "B dead-lettered after its horizon"
    );
    let (code, out, err) = run_hookline(&bed.env, &[], &["dlq", "list", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let listed = json(&out);
    let reason = listed[0]["reason"].as_str().unwrap_or_default().to_owned();
    assert!(
        reason.starts_with("destination b: still failing after 2s"),
        "the DLQ names the destination: {out}"
    );
    let b_tries = rx.deliveries("b").await.len();
    assert!(b_tries >= 2, "B retried: {b_tries}");
    assert_eq!(rx.deliveries("a").await.len(), 1, "A called exactly once");
    drop(w);
    // B is back; the replay reaches B only.
    rx.script("b", json!([])).await;
    let (code, out, err) = run_hookline(&bed.env, &[], &["dlq", "replay", "--json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    w = routed_worker(&bed, &doc, "payment_intent.succeeded");
    completed_with_nothing_dead_lettered(&bed, "evt_test_destFan").await;
    let b = rx.deliveries("b").await;
    assert_eq!(b.len(), b_tries + 1, "B once more, by the replay");
    assert_eq!(rx.deliveries("a").await.len(), 1, "A not called again");
    check_deliveries(&rx.deliveries("a").await, &body, "evt_test_destFan");
    let last = b.last().expect("b");
    assert_eq!(last["verified"], true);
    assert_eq!(last["idempotencyKey"], "evt_test_destFan");
    let rec = bed.ledger("evt_test_destFan").await.expect("ledger");
    assert!(rec.destinations["a"].delivered && rec.destinations["b"].delivered);
    assert_eq!(rec.status, EventStatus::Completed);
    drop(w);
}

async fn a_worker_killed_mid_delivery_delivers_again_with_the_same_key(bed: Bed) {
    let Some(rx) = Receiver::start() else { return };
    rx.script("a", json!([{"delayMs": 4000}])).await;
    let doc = routes(&rx, &[("a", "\"*\"", "timeout_secs = 10")]);
    let env = [
        ("ROUTES", doc.as_str()),
        ("ENABLED_EVENTS", "payment_intent.succeeded"),
        ("VISIBILITY_TIMEOUT_SECS", "3"),
    ];
    let mut w = bed.worker(&env);
    let body = one_event("evt_test_destKill");
    bed.enqueue(std::slice::from_ref(&body)).await;
    rx.wait_for("a", 1, Duration::from_secs(30)).await;
    signal(&w.child, "KILL");
    let _ = wait_exit(&mut w.child, Duration::from_secs(5));
    let _w = bed.worker(&env);
    let seen = rx.wait_for("a", 2, Duration::from_secs(60)).await;
    assert!(seen.len() >= 2, "delivered again after the kill: {seen:?}");
    for d in &seen {
        assert_eq!(d["verified"], true);
        assert_eq!(d["body"], body.as_str());
        assert_eq!(
            d["idempotencyKey"], "evt_test_destKill",
            "the same key on each copy"
        );
    }
    completed_with_nothing_dead_lettered(&bed, "evt_test_destKill").await;
}

async fn events_show_names_each_destination_and_redeliver_sends_again(bed: Bed) {
    let Some(rx) = Receiver::start() else { return };
    let stub = hookline_testkit::StripeStub::start().await.expect("stub");
    rx.script("b", json!([{"status": 410, "message": "retired"}]))
        .await;
    let doc = routes(&rx, &[("a", "\"*\"", ""), ("b", "\"*\"", "")]);
    let w = routed_worker(&bed, &doc, "payment_intent.succeeded");
    let body = one_event("evt_test_destAgain");
    bed.enqueue(std::slice::from_ref(&body)).await;
    assert!(dead_lettered(&bed, 1, Duration::from_secs(30)).await);
    let (code, out, err) =
        run_hookline(&bed.env, &[], &["events", "show", "evt_test_destAgain"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("destination a  delivered after 1 attempt(s)"),
        "{out}"
    );
    assert!(
        out.contains("destination b  not delivered, 1 attempt(s), failing since ")
            && out.contains(": HTTP 410: "),
        "{out}"
    );
    // The destination asks for it again: Stripe's API form of the event,
    // to A only, signed, with the same idempotency key.
    stub.put_v1(serde_json::from_str(&body).expect("event"));
    let api = [
        ("STRIPE_SECRET_KEY", "sk_test_hooklineStubOnly"),
        ("STRIPE_API_BASE", stub.base.as_str()),
    ];
    let (code, out, err) = run_hookline(
        &bed.env,
        &api,
        &[
            "events",
            "redeliver",
            "evt_test_destAgain",
            "--destination",
            "a",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("queued again for destination a"), "{out}");
    let seen = rx.wait_for("a", 2, Duration::from_secs(30)).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1]["verified"], true);
    // A deliberate redelivery: a key of its own, so a receiver that dedupes
    // on the key does not drop it, and a header that says what it is.
    assert_eq!(seen[0]["idempotencyKey"], "evt_test_destAgain");
    assert_eq!(seen[0]["redelivery"], Value::Null);
    let redelivery = seen[1]["redelivery"].as_str().expect("Hookline-Redelivery");
    assert!(out.contains(redelivery), "the command names it: {out}");
    assert_eq!(
        seen[1]["idempotencyKey"],
        format!("evt_test_destAgain:redelivery:{redelivery}")
    );
    assert_eq!(seen[1]["hooklineEventId"], "evt_test_destAgain");
    assert_eq!(seen[1]["attempt"], 2);
    let redelivered: Value =
        serde_json::from_str(seen[1]["body"].as_str().expect("body")).expect("json");
    assert_eq!(redelivered["id"], "evt_test_destAgain");
    assert!(
        eventually(Duration::from_secs(20), || async {
            bed.ledger("evt_test_destAgain")
                .await
                .is_some_and(|r| r.destinations["a"].delivered && r.destinations["a"].attempts == 2)
        })
        .await
    );
    assert!(eventually(Duration::from_secs(10), || bed.queue_is_empty()).await);
    // The copy also reaches B, which has not taken the event yet (it
    // takes it now), and the event completes.
    let b = rx.wait_for("b", 2, Duration::from_secs(30)).await;
    assert_eq!(b.len(), 2, "{b:?}");
    assert_eq!(b[1]["verified"], true);
    assert!(
        eventually(Duration::from_secs(20), || async {
            bed.ledger("evt_test_destAgain")
                .await
                .is_some_and(|r| r.status == EventStatus::Completed)
        })
        .await
    );
    assert_eq!(bed.dlq_len().await, 1, "only the first refusal");
    drop(w);
}

async fn a_destination_down_for_two_minutes_loses_nothing_and_holds_up_no_other(bed: Bed) {
    let Some(rx) = Receiver::start() else { return };
    let outage = Duration::from_secs(120);
    let until =
        hookline_core::clock::unix_millis() + i64::try_from(outage.as_millis()).expect("ms");
    let r = reqwest::Client::new()
        .put(format!("{}/down/b", rx.base))
        .body(json!({ "until": until }).to_string())
        .send()
        .await
        .expect("down");
    assert!(r.status().is_success());
    // Default destination settings (retry_for 24 h); B takes payment
    // intents, A everything.
    let doc = routes(
        &rx,
        &[("a", "\"*\"", ""), ("b", "\"payment_intent.*\"", "")],
    );
    let _w = routed_worker(&bed, &doc, "payment_intent.succeeded,payout.created");
    let both: Vec<String> = (0..3)
        .map(|i| {
            event_with(
                "payment_intent.succeeded",
                &format!("evt_test_down_pi{i}"),
                now(),
            )
        })
        .collect();
    bed.enqueue(&both).await;
    // A's events flow while B is down: its own, and its share of B's.
    let only_a: Vec<String> = (0..3)
        .map(|i| event_with("payout.created", &format!("evt_test_down_po{i}"), now()))
        .collect();
    bed.enqueue(&only_a).await;
    let seen = rx.wait_for("a", 6, Duration::from_secs(60)).await;
    assert_eq!(seen.len(), 6, "A is not held up by B: {seen:?}");
    let payouts: Vec<String> = (0..3).map(|i| format!("evt_test_down_po{i}")).collect();
    assert!(
        eventually(Duration::from_secs(60), || bed.all_completed(&payouts)).await,
        "A's own events complete while B is down"
    );
    // B comes back after two minutes: everything reaches it, nothing was
    // dead-lettered meanwhile.
    tokio::time::sleep(outage.saturating_sub(Duration::from_secs(15))).await;
    if bed.dlq_len().await != 0 {
        panic!(
            "nothing dead-lettered while B is down: {}",
            bed.dlq_report().await
        );
    }
    let ids: Vec<String> = (0..3).map(|i| format!("evt_test_down_pi{i}")).collect();
    assert!(
        eventually(Duration::from_secs(240), || bed.all_completed(&ids)).await,
        "every event reaches B once it is back"
    );
    let b = rx.deliveries("b").await;
    for id in &ids {
        let took = b
            .iter()
            .filter(|d| d["eventId"] == id.as_str())
            .map(|d| d["at"].as_i64().unwrap_or(0))
            .filter(|at| *at >= until);
        assert_eq!(took.count(), 1, "{id} taken by B once, after the outage");
        let rec = bed.ledger(id).await.expect("ledger");
        assert!(rec.destinations["a"].delivered && rec.destinations["b"].delivered);
        assert_eq!(rec.destinations["a"].attempts, 1, "A called once");
    }
    assert_eq!(rx.deliveries("a").await.len(), 6, "A called once per event");
    if bed.dlq_len().await != 0 {
        panic!("nothing dead-lettered: {}", bed.dlq_report().await);
    }
}

/// A `checkout.session.completed` event around Stripe's published Checkout
/// Session (testdata/stripe-openapi), for the user `client_reference_id`.
fn checkout_completed(id: &str, client_reference_id: Option<&str>) -> String {
    let mut session: Value = serde_json::from_str(include_str!(
        "../testdata/stripe-openapi/checkout_session.json"
    ))
    .expect("session");
    session["id"] = format!("cs_test_{id}").into();
    session["status"] = "complete".into();
    session["payment_status"] = "paid".into();
    if let Some(user) = client_reference_id {
        session["client_reference_id"] = user.into();
    }
    let mut event: Value =
        serde_json::from_str(include_str!("../testdata/stripe-openapi/event.json")).expect("event");
    event["id"] = id.into();
    event["type"] = "checkout.session.completed".into();
    event["created"] = now().into();
    event["livemode"] = false.into();
    event["data"]["object"] = session;
    serde_json::to_string_pretty(&event).expect("json")
}

async fn the_custom_worker_example_runs_its_handler(bed: Bed) {
    let grants = tempfile::tempdir().expect("tmp");
    let mut env = bed.env.clone();
    env.push((
        "ENABLED_EVENTS".to_owned(),
        "checkout.session.completed".to_owned(),
    ));
    env.push(("GRANTS_DIR".to_owned(), grants.path().display().to_string()));
    let _w = start_worker_bin("custom-worker", &env);
    let granted = checkout_completed("evt_test_customGrant", Some("user_42"));
    let guest = checkout_completed("evt_test_customGuest", None);
    bed.enqueue(&[granted, guest]).await;
    let ids = ["evt_test_customGrant".to_owned()];
    assert!(eventually(Duration::from_secs(30), || bed.all_completed(&ids)).await);
    let file = grants.path().join("user_42");
    assert_eq!(
        std::fs::read_to_string(&file).expect("the grant"),
        "cs_test_evt_test_customGrant"
    );
    let rec = bed.ledger("evt_test_customGrant").await.expect("ledger");
    assert_eq!(rec.outcome, Some(Outcome::Applied));
    let own = &rec.destinations["handler:checkout.session.completed"];
    assert!(own.delivered && own.attempts == 1, "{own:?}");
    // Stripe's published session has no client_reference_id: the handler
    // refuses it, and the event is dead-lettered with its reason.
    assert!(dead_lettered(&bed, 1, Duration::from_secs(30)).await);
    let dead = bed.dead_letters().await;
    let reason = dead[0].attributes.get("error").cloned().unwrap_or_default();
    assert_eq!(
        reason,
        "destination handler:checkout.session.completed: no client_reference_id: whose access to grant?"
    );
    assert_eq!(std::fs::read_dir(grants.path()).expect("dir").count(), 1);
    assert!(bed.queue_is_empty().await);
}

/// Everything a queue holds, received until it has been empty for a second.
async fn drain(queue: &hookline_aws::SqsQueue, want: usize) -> Vec<Value> {
    use hookline_core::ports::Queue;
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        let batch = queue
            .receive(10, Duration::from_secs(1), Duration::from_secs(60))
            .await
            .expect("receive from the bus's target queue");
        if batch.is_empty() && got.len() >= want {
            break;
        }
        for d in batch {
            got.push(serde_json::from_slice(&d.body).expect("an EventBridge event"));
        }
    }
    got
}

/// The `eventbridge` destination on moto's EventBridge: every event is put
/// on the team's bus (a rule there sends it to a queue we read), with the
/// Stripe event as its detail; an event over EventBridge's 256 KB entry
/// limit is dead-lettered with that reason, and nothing else is lost.
async fn an_eventbridge_destination_puts_each_event_on_the_bus(bed: Bed) {
    crate::skip_without_aws!();
    let clients = hookline_aws::AwsClients::load().await;
    let bus = format!("bus-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let target =
        hookline_aws::provision::event_bus_into_queue(&clients, &bus, "com.example.stripe")
            .await
            .expect("a bus with a rule into a queue");
    let doc = format!(
        "[[destination]]\nname = \"bus\"\nkind = \"eventbridge\"\nevents = [\"*\"]\nbus = \"{bus}\"\nsource = \"com.example.stripe\"\n"
    );
    let mut env = vec![
        ("ROUTES".to_owned(), doc),
        (
            "ENABLED_EVENTS".to_owned(),
            "payment_intent.succeeded,payout.updated".to_owned(),
        ),
    ];
    env.extend(aws_env_vars());
    let _w = bed.worker(
        &env.iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<Vec<_>>(),
    );
    let ids: Vec<String> = (0..12).map(|i| format!("evt_test_bus_{i:02}")).collect();
    let bodies: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let t = if i % 2 == 0 {
                "payment_intent.succeeded"
            } else {
                "payout.updated"
            };
            event_with(t, id, now())
        })
        .collect();
    let mut big: Value =
        serde_json::from_str(&event_with("payout.updated", "evt_test_bus_big", now()))
            .expect("event");
    big["data"]["object"]["metadata"] = json!({ "note": "x".repeat(300 * 1024) });
    let big = big.to_string();
    let mut all = bodies.clone();
    all.push(big.clone());
    bed.enqueue(&all).await;
    assert!(
        eventually(Duration::from_secs(60), || bed.all_completed(&ids)).await,
        "all 12 complete"
    );
    assert!(
        dead_lettered(&bed, 1, Duration::from_secs(30)).await,
        "the big one is dead-lettered"
    );
    let dead = bed.dead_letters().await;
    let reason = dead[0].attributes.get("error").cloned().unwrap_or_default();
    assert!(
        reason.starts_with("destination bus: the entry is ") && reason.contains("256 KB"),
        "{reason}"
    );
    assert_eq!(dead[0].body, big.as_bytes(), "the event itself, kept");
    for id in &ids {
        let rec = bed.ledger(id).await.expect("ledger");
        assert!(rec.destinations["bus"].delivered, "{id}: {rec:?}");
    }
    let queue = hookline_aws::SqsQueue::new(clients.sqs.clone(), &target);
    let seen = drain(&queue, ids.len()).await;
    assert_eq!(
        seen.len(),
        ids.len(),
        "each event on the bus once: {seen:?}"
    );
    for body in &bodies {
        let stripe: Value = serde_json::from_str(body).expect("event");
        let on_bus = seen
            .iter()
            .find(|e| e["detail"]["id"] == stripe["id"])
            .unwrap_or_else(|| panic!("{} reached the bus", stripe["id"]));
        assert_eq!(on_bus["source"], "com.example.stripe");
        assert_eq!(
            on_bus["detail-type"], stripe["type"],
            "DetailType = the event type"
        );
        assert_eq!(on_bus["detail"], stripe, "Detail = the Stripe event");
    }
    assert!(bed.queue_is_empty().await);
}

/// A destination's signing secret read from Secrets Manager is read again
/// every `SECRET_REFRESH_SECS`: after a `put-secret-value` the deliveries
/// are signed with the new secret, with no restart and nothing lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_destination_secret_is_picked_up_without_a_restart() {
    crate::skip_without_aws!();
    let Some(rx) = Receiver::start() else { return };
    let clients = hookline_aws::AwsClients::load().await;
    let id = format!(
        "hookline/test-signing-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let put = |value: &str| {
        let value = secrecy::SecretString::from(value.to_owned());
        let (clients, id) = (&clients, &id);
        async move {
            hookline_aws::provision::put_secret(clients, id, &value)
                .await
                .expect("put the signing secret")
        }
    };
    put(SECRET_A).await;
    let bed = Bed::embedded(5).await;
    let doc = format!(
        "[[destination]]\nname = \"rotated\"\nkind = \"http\"\nevents = [\"*\"]\nurl = \"{}\"\nallow_http = true\nsigning_secret_id = \"{id}\"\n",
        rx.url("rotated")
    );
    let mut env = vec![
        ("ROUTES".to_owned(), doc),
        (
            "ENABLED_EVENTS".to_owned(),
            "payment_intent.succeeded".to_owned(),
        ),
        ("SECRET_REFRESH_SECS".to_owned(), "1".to_owned()),
    ];
    env.extend(aws_env_vars());
    let _w = bed.worker(
        &env.iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<Vec<_>>(),
    );
    bed.enqueue(&[one_event("evt_test_rotate_1")]).await;
    let seen = rx.wait_for("rotated", 1, Duration::from_secs(30)).await;
    assert_eq!(
        seen[0]["verifiedWith"], 0,
        "signed with the first secret: {seen:?}"
    );
    put(SECRET_B).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    bed.enqueue(&[one_event("evt_test_rotate_2")]).await;
    let seen = rx.wait_for("rotated", 2, Duration::from_secs(30)).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        seen[1]["verifiedWith"], 1,
        "signed with the rotated secret: {seen:?}"
    );
    completed_with_nothing_dead_lettered(&bed, "evt_test_rotate_2").await;
}

/// Concurrent deliveries to one bus share `PutEvents` calls of up to 10
/// entries.
#[tokio::test(flavor = "multi_thread")]
async fn eventbridge_deliveries_share_calls_of_ten() {
    crate::skip_without_aws!();
    let clients = hookline_aws::AwsClients::load().await;
    let bus = format!("bus-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let target = hookline_aws::provision::event_bus_into_queue(&clients, &bus, "hookline")
        .await
        .expect("a bus with a rule into a queue");
    let settings = hookline_core::routes::EventBridge {
        bus,
        source: "hookline".to_owned(),
        retry_for: Duration::from_secs(60),
    };
    let destination = std::sync::Arc::new(hookline_aws::EventBridgeDestination::new(
        "bus",
        &settings,
        clients.eventbridge.clone(),
    ));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..25 {
        let d = std::sync::Arc::clone(&destination);
        tasks.spawn(async move {
            use hookline_core::ports::Destination;
            let id = format!("evt_test_batch_{i:02}");
            let body = bytes::Bytes::from(event_with("payout.updated", &id, now()));
            d.deliver(hookline_core::ports::Outgoing {
                event_id: &id,
                event_type: "payout.updated",
                body: &body,
                attempt: 1,
                now: now(),
                redelivery: None,
            })
            .await
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("task").expect("put on the bus");
    }
    let calls = destination.calls();
    assert!((3..=5).contains(&calls), "25 entries in {calls} calls");
    let queue = hookline_aws::SqsQueue::new(clients.sqs.clone(), &target);
    assert_eq!(drain(&queue, 25).await.len(), 25);
}

/// On a FIFO queue one object's events reach a destination in order: a
/// retried event holds back the later ones of its object (SQS hands out a
/// group's next message only once the one before it is gone, and the
/// worker takes a receive's messages of one group one at a time).
#[tokio::test(flavor = "multi_thread")]
async fn on_a_fifo_queue_an_objects_events_arrive_in_order() {
    crate::skip_without_aws!();
    let Some(rx) = Receiver::start() else { return };
    rx.script("a", json!([{"status": 500}, {"status": 503}]))
        .await;
    let fixture = aws_fixture_with(5, true).await;
    let created = now() - 60;
    let ids: Vec<String> = (1..=3)
        .map(|i| format!("evt_test_fifo_order_{i}"))
        .collect();
    let messages: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let body = event_with("payout.updated", id, created + i as i64);
            let env = hookline_core::envelope::Envelope::parse(body.as_bytes()).expect("event");
            hookline_core::message::OutboundMessage::for_event(
                &env,
                bytes::Bytes::from(body),
                now(),
            )
        })
        .collect();
    let group = &messages[0].group_id;
    assert!(
        messages.iter().all(|m| &m.group_id == group),
        "one object, one group"
    );
    let sent = fixture.backend.queue.send_batch(&messages).await;
    assert!(sent.iter().all(Result::is_ok), "{sent:?}");
    let doc = routes(&rx, &[("a", "\"*\"", "")]);
    let mut env = fixture.env();
    env.push(("MAX_RECEIVES".to_owned(), "5".to_owned()));
    env.push(("ROUTES".to_owned(), doc));
    env.push(("ENABLED_EVENTS".to_owned(), "payout.updated".to_owned()));
    let _w = start_worker_env(&env);
    let seen = rx.wait_for("a", 5, Duration::from_secs(60)).await;
    let order: Vec<&str> = seen.iter().filter_map(|d| d["eventId"].as_str()).collect();
    assert_eq!(
        order,
        [&ids[0], &ids[0], &ids[0], &ids[1], &ids[2]].map(String::as_str),
        "the first event, retried twice, held back the later two"
    );
    assert!(seen.iter().all(|d| d["verified"] == true));
}

/// A document that cannot be used stops the worker at start (exit 1), and
/// `config check` names the same problem.
#[tokio::test]
async fn an_invalid_routes_document_exits_1_naming_the_problem() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().display().to_string();
    let cases = [
        (
            "[[destination]]\nname = \"a\"\nkind = \"projections\"\nevents = [\"*\"]\n\n[[destination]]\nname = \"a\"\nkind = \"projections\"\nevents = [\"*\"]\n",
            "line 7: duplicate destination name \"a\"",
        ),
        (
            "[[destination]]\nname = \"a\"\nkind = \"smtp\"\nevents = [\"*\"]\n",
            "line 3: destination \"a\": unknown kind \"smtp\"",
        ),
        (
            "[[destination]]\nname = \"a\"\nkind = \"http\"\nevents = [\"*\"]\nurl = \"ftp://x.example/\"\nsigning_secret = \"whsec_test_x\"\n",
            "line 5: destination \"a\": the url's scheme \"ftp\" is not https",
        ),
        (
            "[[destination]]\nname = \"a\"\nkind = \"projections\"\nevents = [\"payout.*\"]\n",
            "enables \"payment_intent.succeeded\" but no destination takes it",
        ),
    ];
    for (doc, problem) in cases {
        let mut worker = Command::new(bin("hookline-worker"))
            .env_clear()
            .env("DATA_DIR", &data)
            .env("ROUTES", doc)
            .env("ENABLED_EVENTS", "payment_intent.succeeded")
            .env("METRICS_ADDR", format!("127.0.0.1:{}", free_port()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("worker");
        let code = wait_exit(&mut worker, Duration::from_secs(20));
        let mut err = String::new();
        std::io::Read::read_to_string(&mut worker.stderr.take().expect("stderr"), &mut err)
            .expect("stderr");
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains(problem), "names {problem:?}: {err}");
        assert!(err.contains("invalid routes document (ROUTES)"), "{err}");

        let env = vec![
            ("DATA_DIR".to_owned(), data.clone()),
            ("ROUTES".to_owned(), doc.to_owned()),
            (
                "ENABLED_EVENTS".to_owned(),
                "payment_intent.succeeded".to_owned(),
            ),
            (
                "STRIPE_WEBHOOK_SECRET".to_owned(),
                "whsec_test_configCheck".to_owned(),
            ),
        ];
        let (code, out, err) = run_hookline(&env, &[], &["config", "check"]).await;
        assert_eq!(code, 1, "{out}{err}");
        assert!(
            out.lines()
                .any(|l| l.starts_with("FAIL routes") && l.contains(problem)),
            "{out}"
        );
    }
    // A file, too, and a valid one passes the check.
    let file = dir.path().join("routes.toml");
    std::fs::write(
        &file,
        "[[destination]]\nname = \"tables\"\nkind = \"projections\"\nevents = [\"payment_intent.*\"]\n",
    )
    .expect("write");
    let env = vec![
        ("DATA_DIR".to_owned(), data.clone()),
        ("ROUTES_FILE".to_owned(), file.display().to_string()),
        (
            "ENABLED_EVENTS".to_owned(),
            "payment_intent.succeeded".to_owned(),
        ),
        (
            "STRIPE_WEBHOOK_SECRET".to_owned(),
            "whsec_test_configCheck".to_owned(),
        ),
    ];
    let (code, out, err) = run_hookline(&env, &[], &["config", "check"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("tables (payment_intent.*)"), "{out}");
}
