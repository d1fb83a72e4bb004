//! Stripe as it is now: thin (v2) event notifications and the destination
//! ping, events of one object in the same second, and `ignored` that is not
//! final. The Stripe API is the stand-in `hookline_suite::StripeStub`
//! (Stripe's published objects; checked against Stripe's official Python
//! library below). Worker cases run on both backends.

use std::time::Duration;

use bytes::Bytes;
use hookline_core::message::OutboundMessage;
use hookline_core::records::{EventStatus, Outcome};
use hookline_suite::stripe_stub::{merge, published};
use hookline_suite::StripeStub;
use serde_json::{json, Value};

use crate::bed::Bed;
use crate::helpers::*;
use crate::on_both_backends;

const KEY: &str = "sk_test_hooklineStubOnly";
const UNRESOLVED: &str = "hookline_same_second_unresolved_total";
const THIN_TYPES: &str = "v2.core.account.updated,v2.core.account[requirements].updated";

on_both_backends!(
    a_destination_ping_is_acknowledged_and_never_dead_lettered(5),
    a_thin_account_event_updates_the_provider_through_a_fetch(5),
    same_second_account_updates_end_in_stripes_current_state(5),
    without_a_key_same_second_payment_intents_end_succeeded(5),
    an_event_ignored_while_disabled_is_applied_when_it_comes_again(5),
    stripe_429s_slow_the_worker_and_dead_letter_nothing(2),
);

fn thin(id: &str, event_type: &str, account: &str, context: Option<&str>) -> String {
    let mut v: Value = serde_json::from_str(include_str!(
        "../testdata/stripe-events/v2.core.account.updated.json"
    ))
    .expect("thin fixture");
    v["id"] = id.into();
    v["type"] = event_type.into();
    v["related_object"]["id"] = account.into();
    v["related_object"]["url"] = format!("/v2/core/accounts/{account}").into();
    if let Some(c) = context {
        v["context"] = c.into();
    }
    serde_json::to_string_pretty(&v).expect("json")
}

const PING: &str = r#"{"id":"evt_test_65PingExample0001","object":"v2.core.event","type":"v2.core.event_destination.ping","created":"2025-12-02T11:30:00.000Z","livemode":false}"#;

/// An EventBridge envelope as Stripe's event destination sends one.
fn eventbridge(event: &str) -> OutboundMessage {
    let detail: Value = serde_json::from_str(event).expect("json");
    let body = json!({
        "version": "0", "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": detail["type"], "source": "aws.partner/stripe.com/ed_test_61Stub",
        "account": "123456789012", "time": "2025-12-02T11:30:00Z", "region": "us-east-1",
        "resources": [], "detail": detail,
    });
    OutboundMessage {
        body: Bytes::from(body.to_string()),
        attributes: Default::default(),
        group_id: "g".to_owned(),
        dedup_id: uuid::Uuid::new_v4().simple().to_string(),
    }
}

/// Enqueues each event only once the one before it completed, so the
/// worker sees them in this order.
async fn one_at_a_time(bed: &Bed, events: &[String]) {
    for e in events {
        let id = hookline_core::envelope::Envelope::parse(e.as_bytes())
            .expect("event")
            .id
            .to_string();
        bed.enqueue(std::slice::from_ref(e)).await;
        assert!(
            eventually(Duration::from_secs(30), || bed
                .all_completed(std::slice::from_ref(&id)))
            .await
        );
    }
}

async fn put(bed: &Bed, messages: &[OutboundMessage]) {
    let results = bed.queue.send_batch(messages).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
}

fn stub_env(stub: &StripeStub) -> Vec<(&'static str, String)> {
    vec![
        ("STRIPE_SECRET_KEY", KEY.to_owned()),
        ("STRIPE_API_BASE", stub.base.clone()),
        ("STRIPE_API_RPS", "200".to_owned()),
    ]
}

fn worker_with(bed: &Bed, env: &[(&str, String)]) -> WorkerProc {
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    bed.worker(&pairs)
}

async fn a_destination_ping_is_acknowledged_and_never_dead_lettered(bed: Bed) {
    // The ingress answers a signed ping 200 and enqueues nothing, whatever
    // ENABLED_EVENTS says.
    for enabled in ["*", "payout.created"] {
        let app = spawn_app_with(&["--enabled-events", enabled]).await;
        let (status, body) = app.post_signed(PING).await;
        assert_eq!((status, body.as_str()), (200, r#"{"received":true}"#));
        assert!(app.queued().await.is_empty(), "a ping is not enqueued");
    }
    // Through EventBridge (no ingress saw it), and as a webhook body an
    // older ingress enqueued: both complete `ignored`, none dead-lettered.
    put(&bed, &[eventbridge(PING)]).await;
    let _worker = bed.worker(&[("ENABLED_EVENTS", "*")]);
    let id = "evt_test_65PingExample0001".to_owned();
    assert!(
        eventually(Duration::from_secs(30), || bed
            .all_completed(std::slice::from_ref(&id)))
        .await
    );
    let rec = bed.ledger(&id).await.expect("ledger");
    assert_eq!(rec.outcome, Some(Outcome::Ignored));
    assert_eq!(rec.reason.as_deref(), Some("event destination ping"));
    assert!(eventually(Duration::from_secs(10), || bed.queue_is_empty()).await);
    assert_eq!(bed.dlq_len().await, 0, "never dead-lettered");
}

async fn a_thin_account_event_updates_the_provider_through_a_fetch(bed: Bed) {
    let stub = StripeStub::start().await.expect("stub");
    let mut active: Value = serde_json::from_str(published::V2_ACCOUNT).expect("json");
    merge(
        &mut active,
        json!({
            "id": "acct_test_thinB",
            "configuration": {
                "merchant": {"capabilities": {"card_payments": {"status": "active", "status_details": []}}},
                "recipient": {"capabilities": {"stripe_balance": {"payouts": {"status": "active", "status_details": []}}}},
            },
            "requirements": {"entries": []},
        }),
    );
    stub.put_v2_account(active);
    let mut restricted: Value = serde_json::from_str(published::V2_ACCOUNT).expect("json");
    restricted["id"] = "acct_test_thinA".into();
    stub.put_v2_account(restricted);

    // The ingress accepts a signed thin event and enqueues it.
    let app = spawn_app_with(&["--enabled-events", THIN_TYPES]).await;
    let webhook = thin(
        "evt_test_thin_wh",
        "v2.core.account.updated",
        "acct_test_thinA",
        None,
    );
    assert_eq!(app.post_signed(&webhook).await.0, 200);
    assert_eq!(app.queued().await.len(), 1);

    bed.enqueue(std::slice::from_ref(&webhook)).await;
    let via_eb = thin(
        "evt_test_thin_eb",
        "v2.core.account[requirements].updated",
        "acct_test_thinB",
        Some("acct_test_thinB"),
    );
    put(&bed, &[eventbridge(&via_eb)]).await;
    let mut env = stub_env(&stub);
    env.push(("ENABLED_EVENTS", THIN_TYPES.to_owned()));
    let _worker = worker_with(&bed, &env);
    let ids = ["evt_test_thin_wh", "evt_test_thin_eb"]
        .map(String::from)
        .to_vec();
    assert!(eventually(Duration::from_secs(30), || bed.all_completed(&ids)).await);
    for id in &ids {
        assert_eq!(
            bed.ledger(id).await.expect("ledger").outcome,
            Some(Outcome::Applied),
            "{id}"
        );
    }
    let a = bed.item("acct_test_thinA").await.expect("provider A");
    assert_eq!(
        (
            &a["chargesEnabled"],
            &a["payoutsEnabled"],
            &a["detailsSubmitted"]
        ),
        (&json!(false), &json!(false), &json!(false))
    );
    assert_eq!(a["disabledReason"], "requirements.past_due");
    assert_eq!(
        a["requirementsCurrentlyDue"],
        json!([
            "identity.business_details.registered_name",
            "configuration.recipient.default_outbound_destination"
        ])
    );
    let b = bed.item("acct_test_thinB").await.expect("provider B");
    assert_eq!(
        (
            &b["chargesEnabled"],
            &b["payoutsEnabled"],
            &b["detailsSubmitted"]
        ),
        (&json!(true), &json!(true), &json!(true))
    );
    assert_eq!(b["lastEventId"], "evt_test_thin_eb");
    // What the worker asked: the related object with what the mapping
    // reads, the pinned version, and the event's context.
    let seen = stub.requests();
    let b_call = seen
        .iter()
        .find(|s| s.path == "/v2/core/accounts/acct_test_thinB")
        .expect("fetched B");
    assert!(
        b_call
            .query
            .as_deref()
            .unwrap_or("")
            .contains("include=requirements"),
        "{b_call:?}"
    );
    assert_eq!(b_call.context.as_deref(), Some("acct_test_thinB"));
    assert!(b_call.stripe_version.is_some());
    assert_eq!(bed.dlq_len().await, 0);
}

/// A v1 account as Stripe published it, with these flags.
fn v1_account(id: &str, charges: bool, due: &[&str]) -> Value {
    StripeStub::v1_like(
        published::ACCOUNT,
        id,
        json!({"charges_enabled": charges, "payouts_enabled": charges, "details_submitted": true,
               "requirements": {"currently_due": due, "disabled_reason": null}}),
    )
}

/// An `account.updated` event carrying `account`.
fn account_event(id: &str, created: i64, account: Value) -> String {
    let mut v: Value =
        serde_json::from_str(&event_with("account.updated", id, created)).expect("json");
    v["data"]["object"] = account;
    v["account"] = v["data"]["object"]["id"].clone();
    v.to_string()
}

async fn same_second_account_updates_end_in_stripes_current_state(bed: Bed) {
    let stub = StripeStub::start().await.expect("stub");
    let t = 1_764_675_000;
    let _worker = worker_with(&bed, &stub_env(&stub));
    // Two orders of arrival; the later event has the smaller id.
    for (account, first_is_later) in [("acct_test_ssA", true), ("acct_test_ssB", false)] {
        stub.put_v1(v1_account(account, true, &["stripe.current.state"]));
        let earlier = account_event(
            &format!("evt_test_zz_{account}"),
            t,
            v1_account(account, false, &["external_account"]),
        );
        let later = account_event(
            &format!("evt_test_aa_{account}"),
            t,
            v1_account(account, true, &[]),
        );
        let order = if first_is_later {
            [later, earlier]
        } else {
            [earlier, later]
        };
        one_at_a_time(&bed, &order).await;
        let p = bed.item(account).await.expect("provider");
        assert_eq!(p["chargesEnabled"], true, "{account}: {p:?}");
        assert_eq!(
            p["requirementsCurrentlyDue"],
            json!(["stripe.current.state"]),
            "{account}: Stripe's current state"
        );
    }
    assert!(
        stub.requests()
            .iter()
            .any(|s| s.path == "/v1/accounts/acct_test_ssB"),
        "the tie was settled by a fetch"
    );
    assert_eq!(bed.dlq_len().await, 0);
}

fn payment_intent_event(event_type: &str, id: &str, created: i64, object: &str) -> String {
    let mut v: Value = serde_json::from_str(&event_with(event_type, id, created)).expect("json");
    v["data"]["object"]["id"] = object.into();
    v.to_string()
}

async fn without_a_key_same_second_payment_intents_end_succeeded(bed: Bed) {
    let t = 1_764_675_100;
    let worker = bed.worker(&[]);
    for (object, succeeded_first) in [("pi_test_ssA", true), ("pi_test_ssB", false)] {
        let failed = payment_intent_event(
            "payment_intent.payment_failed",
            &format!("evt_test_zz_{object}"),
            t,
            object,
        );
        let succeeded = payment_intent_event(
            "payment_intent.succeeded",
            &format!("evt_test_aa_{object}"),
            t,
            object,
        );
        let order = if succeeded_first {
            [succeeded, failed]
        } else {
            [failed, succeeded]
        };
        one_at_a_time(&bed, &order).await;
        assert_eq!(
            bed.item(object).await.expect("item")["status"],
            "succeeded",
            "{object}"
        );
    }
    assert_eq!(
        metric(&worker, UNRESOLVED).await,
        0,
        "the life cycle ordered both"
    );
    // Two account updates in one second: nothing orders them without a key.
    for (i, charges) in [(1, false), (2, true)] {
        let e = account_event(
            &format!("evt_test_tie_{i}"),
            t,
            v1_account("acct_test_tie", charges, &[]),
        );
        bed.enqueue(std::slice::from_ref(&e)).await;
        let id = format!("evt_test_tie_{i}");
        assert!(
            eventually(Duration::from_secs(30), || bed
                .all_completed(std::slice::from_ref(&id)))
            .await
        );
    }
    assert!(
        eventually(Duration::from_secs(10), || async {
            metric(&worker, UNRESOLVED).await == 1
        })
        .await
    );
}

async fn an_event_ignored_while_disabled_is_applied_when_it_comes_again(bed: Bed) {
    let stub = StripeStub::start().await.expect("stub");
    let mut retried: Value = serde_json::from_str(&event_with(
        "payout.updated",
        "evt_test_ign_1",
        1_764_675_200,
    ))
    .expect("json");
    retried["data"]["object"]["id"] = "po_test_ign_1".into();
    let mut backfilled = retried.clone();
    backfilled["id"] = "evt_test_ign_2".into();
    backfilled["data"]["object"]["id"] = "po_test_ign_2".into();
    let mut replayed = retried.clone();
    replayed["id"] = "evt_test_ign_3".into();
    replayed["data"]["object"]["id"] = "po_test_ign_3".into();
    let bodies: Vec<String> = [&retried, &backfilled, &replayed]
        .map(Value::to_string)
        .to_vec();
    let ids = ["evt_test_ign_1", "evt_test_ign_2", "evt_test_ign_3"]
        .map(String::from)
        .to_vec();
    {
        // A worker that does not have payout.updated enabled (yet).
        let _old = bed.worker(&[("ENABLED_EVENTS", "payout.created")]);
        bed.enqueue(&bodies).await;
        assert!(eventually(Duration::from_secs(30), || bed.all_completed(&ids)).await);
    }
    for id in &ids {
        let rec = bed.ledger(id).await.expect("ledger");
        assert_eq!(
            (rec.outcome, rec.reason.as_deref()),
            (Some(Outcome::Ignored), Some("type not enabled"))
        );
    }
    // `events show` says why.
    let (code, out, err) = run_hookline(&bed.env, &[], &["events", "show", "evt_test_ign_1"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("reason") && l.ends_with("type not enabled")),
        "{out}"
    );
    // Enabled now. Stripe's retry: the same event again.
    let _worker = bed.worker(&[]);
    bed.enqueue(std::slice::from_ref(&bodies[0])).await;
    // backfill lists it from Stripe and enqueues it: not "already applied".
    stub.put_v1_event(backfilled.clone());
    let mut env: Vec<(&str, &str)> = vec![
        ("STRIPE_SECRET_KEY", KEY),
        ("STRIPE_API_BASE", stub.base.as_str()),
    ];
    env.push(("ENABLED_EVENTS", "payout.updated"));
    let (code, _out, err) = run_hookline(&bed.env, &env, &["backfill", "--since", "30d"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("enqueued 1, already applied 0"), "{err}");
    // A DLQ replay of a copy.
    put_dlq(&bed, &bodies[2]).await;
    let (code, _out, err) = run_hookline(&bed.env, &[], &["dlq", "replay", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let applied = || async {
        let mut all = true;
        for id in &ids {
            all &= bed
                .ledger(id)
                .await
                .is_some_and(|r| r.outcome == Some(Outcome::Applied));
        }
        all
    };
    assert!(eventually(Duration::from_secs(30), applied).await);
    for (id, object) in [
        ("evt_test_ign_1", "po_test_ign_1"),
        ("evt_test_ign_2", "po_test_ign_2"),
        ("evt_test_ign_3", "po_test_ign_3"),
    ] {
        let rec = bed.ledger(id).await.expect("ledger");
        assert_eq!(
            (rec.status, rec.reason),
            (EventStatus::Completed, None),
            "{id}"
        );
        assert_eq!(bed.item(object).await.expect("item")["lastEventId"], id);
    }
    // Applied is final: backfill now skips it.
    let (code, _out, err) = run_hookline(&bed.env, &env, &["backfill", "--since", "30d"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("enqueued 0, already applied 1"), "{err}");
}

/// Puts a copy of `body` in the DLQ, as the worker dead-letters.
async fn put_dlq(bed: &Bed, body: &str) {
    let env = hookline_core::envelope::Envelope::parse(body.as_bytes()).expect("event");
    let copy = OutboundMessage::for_event(&env, Bytes::from(body.to_owned()), now()).as_copy();
    let results = bed.dlq.send_batch(std::slice::from_ref(&copy)).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
}

async fn stripe_429s_slow_the_worker_and_dead_letter_nothing(bed: Bed) {
    let stub = StripeStub::start().await.expect("stub");
    let accounts: Vec<String> = (0..4).map(|i| format!("acct_test_rl{i}")).collect();
    let mut bodies = Vec::new();
    for (i, a) in accounts.iter().enumerate() {
        let mut v: Value = serde_json::from_str(published::V2_ACCOUNT).expect("json");
        v["id"] = a.as_str().into();
        stub.put_v2_account(v);
        bodies.push(thin(
            &format!("evt_test_rl{i}"),
            "v2.core.account.updated",
            a,
            None,
        ));
    }
    // More 429s than one delivery's retries, with MAX_RECEIVES=2: without
    // the rule that a dependency's failure never dead-letters, some would
    // reach the DLQ.
    stub.throttle(12, 1);
    bed.enqueue(&bodies).await;
    let mut env = stub_env(&stub);
    env.push(("ENABLED_EVENTS", THIN_TYPES.to_owned()));
    let _worker = worker_with(&bed, &env);
    let ids: Vec<String> = (0..4).map(|i| format!("evt_test_rl{i}")).collect();
    assert!(eventually(Duration::from_secs(90), || bed.all_completed(&ids)).await);
    for id in &ids {
        assert_eq!(
            bed.ledger(id).await.expect("ledger").outcome,
            Some(Outcome::Applied),
            "{id}"
        );
    }
    let seen = stub.requests();
    let throttled = seen.iter().filter(|s| s.status == 429).count();
    assert_eq!(throttled, 12, "every 429 was answered and waited out");
    // Retry-After (1 s) was honoured: the calls after a 429 came no sooner.
    let first_429 = seen.iter().position(|s| s.status == 429).expect("a 429");
    let last = seen.last().expect("calls");
    assert!(
        last.at.duration_since(seen[first_429].at) >= Duration::from_secs(2),
        "slowed down"
    );
    assert!(eventually(Duration::from_secs(10), || bed.queue_is_empty()).await);
    assert_eq!(bed.dlq_len().await, 0, "nothing dead-lettered");
}

/// The stub against Stripe's official Python library (`stripe` from PyPI,
/// in the project's venv): the thin fixture parses as Stripe's own event
/// notification and fetches its related object; v1 objects come back as
/// Stripe's types; a 404 is Stripe's `InvalidRequestError`, a 429 its
/// `RateLimitError`.
#[tokio::test(flavor = "multi_thread")]
async fn the_stub_answers_stripes_official_python_library() {
    let python = repo_root().join(".venv/bin/python");
    let has_stripe = std::process::Command::new(&python)
        .args(["-c", "import stripe"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_stripe {
        record_skip("the_stub_answers_stripes_official_python_library: no `stripe` in .venv (make test installs it)");
        return;
    }
    let stub = StripeStub::start().await.expect("stub");
    stub.throttle(1, 0);
    let body = include_str!("../testdata/stripe-events/v2.core.account.updated.json");
    let header = sign(body);
    let script = r#"
import json, os, sys, stripe
client = stripe.StripeClient(os.environ["KEY"], base_addresses={"api": os.environ["BASE"]}, max_network_retries=2)
body = sys.stdin.read()
notification = client.parse_event_notification(body, os.environ["SIG"], os.environ["SECRET"])
assert notification.type == "v2.core.account.updated", notification.type
try:
    notification.fetch_related_object()
    raise SystemExit("the first call is answered 429")
except stripe.RateLimitError as e:
    assert e.http_status == 429, e
related = notification.fetch_related_object()
assert related.id == "acct_1SThinExample0001", related
account = client.v2.core.accounts.retrieve("acct_1SThinExample0001", {"include": ["requirements"]})
assert account.requirements.entries[0].minimum_deadline.status == "past_due"
payout = client.v1.payouts.retrieve("po_1MoqxPLgUG5tbmjcbKNyeRhP")
assert isinstance(payout, stripe.Payout) and payout.status == "in_transit"
intent = client.v1.payment_intents.retrieve("pi_1MoS6tLgUG5tbmjcQ62U6djv")
assert isinstance(intent, stripe.PaymentIntent) and intent.status == "succeeded"
assert client.v1.disputes.retrieve("dp_1MoqxHLgUG5tbmjcom3Mmh0p").status == "warning_needs_response"
assert client.v1.accounts.retrieve("acct_1MoRdlLgUG5tbmjc").id == "acct_1MoRdlLgUG5tbmjc"
try:
    client.v1.payouts.retrieve("po_missing")
    raise SystemExit("a missing payout must raise")
except stripe.InvalidRequestError as e:
    assert e.code == "resource_missing" and e.http_status == 404, e
print("ok")
"#;
    let mut child = tokio::process::Command::new(&python)
        .args(["-c", script])
        .env("KEY", KEY)
        .env("BASE", &stub.base)
        .env("SIG", &header)
        .env("SECRET", SECRET)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python runs");
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(body.as_bytes()).await.expect("write");
    }
    let out = child.wait_with_output().await.expect("python ends");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.trim() == "ok",
        "{stdout}\n{stderr}"
    );
    let seen = stub.requests();
    assert_eq!(seen.first().map(|s| s.status), Some(429));
    assert!(seen
        .iter()
        .any(|s| s.path == "/v2/core/accounts/acct_1SThinExample0001" && s.status == 200));
}
