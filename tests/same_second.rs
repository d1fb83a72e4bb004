//! Events of one object in the same second: with an API key they end in
//! Stripe's current state, without one in the later life-cycle status. On
//! both backends.

use std::time::Duration;

use hookline_testkit::stripe_stub::published;
use hookline_testkit::StripeStub;
use serde_json::{json, Value};

use crate::bed::Bed;
use crate::helpers::*;
use crate::ignored_not_final::KEY;
use crate::on_both_backends;

const UNRESOLVED: &str = "hookline_same_second_unresolved_total";

on_both_backends!(
    same_second_account_updates_end_in_stripes_current_state(5),
    without_a_key_same_second_payment_intents_end_succeeded(5),
);

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

pub(crate) fn stub_env(stub: &StripeStub) -> Vec<(&'static str, String)> {
    vec![
        ("STRIPE_SECRET_KEY", KEY.to_owned()),
        ("STRIPE_API_BASE", stub.base.clone()),
        ("STRIPE_API_RPS", "200".to_owned()),
    ]
}

pub(crate) fn worker_with(bed: &Bed, env: &[(&str, String)]) -> WorkerProc {
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    bed.worker(&pairs)
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
