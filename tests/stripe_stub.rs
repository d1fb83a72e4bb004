//! The Stripe API stand-in (`hookline_testkit::StripeStub`, built from
//! Stripe's published objects) checked against Stripe's official Python
//! library, and the worker under its 429s.

use std::time::Duration;

use hookline_core::records::Outcome;
use hookline_testkit::stripe_stub::published;
use hookline_testkit::StripeStub;
use serde_json::Value;

use crate::bed::Bed;
use crate::helpers::*;
use crate::ignored_not_final::KEY;
use crate::on_both_backends;
use crate::same_second::stub_env;
use crate::same_second::worker_with;

use crate::thin_events::THIN_TYPES;

on_both_backends!(stripe_429s_slow_the_worker_and_dead_letter_nothing(2),);

pub(crate) fn thin(id: &str, event_type: &str, account: &str, context: Option<&str>) -> String {
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
