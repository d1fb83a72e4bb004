//! `hookline erase` (a deletion request), as the built binary, on both
//! backends: exactly one account's records go, another's stay, and a
//! second erase removes nothing.

use std::time::Duration;

use hookline_core::records::EventStatus;

use crate::bed::Bed;
use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    erase_removes_exactly_one_accounts_records(5),
    erase_by_object_and_by_event(5),
    a_deauthorized_account_is_marked_then_erased(5),
);

const A: &str = "acct_test_EraseAaaa";
const B: &str = "acct_test_EraseBbbb";

/// An event of `account` about `object`.
fn of_account(event_type: &str, id: &str, account: &str, object: Option<&str>) -> String {
    let fixture = match event_type {
        "customer.created" => "payout.created",
        t => t,
    };
    let mut v: serde_json::Value =
        serde_json::from_str(&event_with(fixture, id, now() - 60)).expect("json");
    v["type"] = event_type.into();
    v["account"] = account.into();
    match object {
        Some(o) => v["data"]["object"]["id"] = o.into(),
        None => {
            if let Some(o) = v["data"]["object"].as_object_mut() {
                o.remove("id");
            }
        }
    }
    serde_json::to_string_pretty(&v).expect("json")
}

/// For each account: its provider item, a payout and a payment intent, an
/// event that completes ignored, and one dead-lettered (no object id).
fn events_of(account: &str) -> (Vec<String>, Vec<String>) {
    let x = &account[account.len() - 4..];
    let ids: Vec<String> = ["acct", "po", "pi", "cus", "bad"]
        .iter()
        .map(|k| format!("evt_test_erase_{x}_{k}"))
        .collect();
    let bodies = vec![
        of_account("account.updated", &ids[0], account, Some(account)),
        of_account(
            "payout.created",
            &ids[1],
            account,
            Some(&format!("po_erase_{x}")),
        ),
        of_account(
            "payment_intent.succeeded",
            &ids[2],
            account,
            Some(&format!("pi_erase_{x}")),
        ),
        of_account(
            "customer.created",
            &ids[3],
            account,
            Some(&format!("cus_erase_{x}")),
        ),
        of_account("payout.created", &ids[4], account, None),
    ];
    (ids, bodies)
}

/// Both accounts' events applied (and one each dead-lettered); the worker
/// stopped.
async fn two_accounts(bed: &Bed) -> (Vec<String>, Vec<String>) {
    let (a_ids, a) = events_of(A);
    let (b_ids, b) = events_of(B);
    bed.enqueue(&[a, b].concat()).await;
    let worker = bed.worker(&[]);
    let settled = || async {
        let mut n = 0;
        for id in a_ids.iter().chain(&b_ids) {
            if bed.ledger(id).await.is_some_and(|r| {
                r.status == EventStatus::Completed || r.status == EventStatus::Failed
            }) {
                n += 1;
            }
        }
        n == 10 && bed.dlq_len().await == 2
    };
    assert!(eventually(Duration::from_secs(60), settled).await);
    assert!(eventually(Duration::from_secs(30), || bed.queue_is_empty()).await);
    stop(worker);
    (a_ids, b_ids)
}

/// Stops a worker as ECS does (SIGTERM): an SQS long poll under way hands
/// back what it brought, so a message sent next is not hidden by it.
fn stop(mut worker: WorkerProc) {
    signal(&worker.child, "TERM");
    assert_eq!(
        wait_exit(&mut worker.child, Duration::from_secs(30)),
        Some(0)
    );
}

fn sorted(v: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("a list: {v}"))
        .iter()
        .map(|s| s.as_str().expect("text").to_owned())
        .collect();
    out.sort();
    out
}

async fn erase_removes_exactly_one_accounts_records(bed: Bed) {
    let (a_ids, b_ids) = two_accounts(&bed).await;
    // One more of A's events arrives and waits on the queue.
    let (_, late) = events_of(A);
    let late = late[1].replace("evt_test_erase_Aaaa_po", "evt_test_erase_Aaaa_late");
    bed.enqueue(&[late]).await;
    let embedded = bed.setting("QUEUE_URL").is_empty();
    let mut a_sorted = a_ids.clone();
    a_sorted.sort();

    // Counted, nothing removed.
    let (code, out, err) = run_hookline(&bed.env, &[], &["erase", "--account", A, "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let dry = json(&out);
    assert_eq!(dry["removed"], false);
    assert_eq!(sorted(&dry["providers"]), [A]);
    assert_eq!(sorted(&dry["objects"]), ["pi_erase_Aaaa", "po_erase_Aaaa"]);
    assert_eq!(sorted(&dry["events"]), a_sorted);
    assert_eq!(dry["dlq_messages"].as_array().map(Vec::len), Some(1));
    assert!(bed.item(A).await.is_some(), "a dry run removes nothing");
    assert!(bed.ledger(&a_ids[4]).await.is_some());
    assert_eq!(bed.dlq_len().await, 2);
    let (code, human, _) = run_hookline(&bed.env, &[], &["erase", "--account", A]).await;
    assert_eq!(code, 0);
    assert!(
        human.contains("Would erase account acct_test_EraseAaaa"),
        "{human}"
    );
    assert!(human.contains("nothing removed"), "{human}");

    // Removed, with a receipt.
    let (code, out, err) =
        run_hookline(&bed.env, &[], &["erase", "--account", A, "--yes", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let receipt = json(&out);
    assert_eq!(receipt["removed"], true);
    assert!(receipt["at"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(receipt["subject"], format!("account {A}"));
    assert_eq!(sorted(&receipt["providers"]), [A]);
    assert_eq!(
        sorted(&receipt["objects"]),
        ["pi_erase_Aaaa", "po_erase_Aaaa"]
    );
    assert_eq!(sorted(&receipt["events"]), a_sorted);
    assert_eq!(receipt["dlq_messages"].as_array().map(Vec::len), Some(1));
    match embedded {
        true => assert_eq!(receipt["queue_messages"].as_array().map(Vec::len), Some(1)),
        false => assert!(receipt["queue_messages"].is_null(), "SQS: not readable"),
    }
    for id in [A, "pi_erase_Aaaa", "po_erase_Aaaa"] {
        assert!(bed.item(id).await.is_none(), "{id} erased");
    }
    for id in &a_ids {
        assert!(bed.ledger(id).await.is_none(), "{id} erased");
    }

    // The other account is untouched.
    for id in [B, "pi_erase_Bbbb", "po_erase_Bbbb"] {
        assert!(bed.item(id).await.is_some(), "{id} kept");
    }
    for id in &b_ids {
        assert!(bed.ledger(id).await.is_some(), "{id} kept");
    }
    let left = bed.dead_letters().await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].attributes["event_id"], b_ids[4]);
    for d in &left {
        let _ = bed.dlq.set_visibility(&d.receipt, Duration::ZERO).await;
    }
    if embedded {
        assert!(bed.queue_is_empty().await, "the late event left the queue");
    }

    // Idempotent: a second erase removes nothing.
    let (code, out, _) =
        run_hookline(&bed.env, &[], &["erase", "--account", A, "--yes", "--json"]).await;
    assert_eq!(code, 0);
    let again = json(&out);
    for list in ["providers", "objects", "events", "dlq_messages"] {
        assert_eq!(
            again[list].as_array().map(Vec::len),
            Some(0),
            "{list}: {again}"
        );
    }
    assert_eq!(bed.dlq_len().await, 1, "B's dead letter stays");

    // Exactly one subject: a usage error otherwise.
    let (code, _, err) = run_hookline(&bed.env, &[], &["erase"]).await;
    assert_eq!(code, 2, "{err}");
}

async fn erase_by_object_and_by_event(bed: Bed) {
    let (a_ids, b_ids) = two_accounts(&bed).await;
    // One object: its item and its event's ledger item, nothing else.
    let (code, out, err) = run_hookline(
        &bed.env,
        &[],
        &["erase", "--object", "po_erase_Aaaa", "--yes", "--json"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let r = json(&out);
    assert_eq!(sorted(&r["objects"]), ["po_erase_Aaaa"]);
    assert_eq!(sorted(&r["events"]), [a_ids[1].clone()]);
    assert_eq!(sorted(&r["providers"]), Vec::<String>::new());
    assert!(bed.item("po_erase_Aaaa").await.is_none());
    assert!(bed.item("pi_erase_Aaaa").await.is_some());
    assert!(bed.ledger(&a_ids[2]).await.is_some());

    // One event: its ledger item and its dead letter.
    let (code, out, err) = run_hookline(
        &bed.env,
        &[],
        &["erase", "--event", &b_ids[4], "--yes", "--json"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let r = json(&out);
    assert_eq!(sorted(&r["events"]), [b_ids[4].clone()]);
    assert_eq!(r["dlq_messages"].as_array().map(Vec::len), Some(1));
    assert!(bed.ledger(&b_ids[4]).await.is_none());
    assert!(bed.item(B).await.is_some());
    assert_eq!(bed.dlq_len().await, 1, "A's dead letter stays");
}

async fn a_deauthorized_account_is_marked_then_erased(bed: Bed) {
    let (a_ids, b_ids) = two_accounts(&bed).await;
    let mut v: serde_json::Value = serde_json::from_str(&event_with(
        "account.application.deauthorized",
        "evt_test_erase_Aaaa_left",
        now() - 30,
    ))
    .expect("json");
    v["account"] = A.into();
    bed.enqueue(&[serde_json::to_string_pretty(&v).expect("json")])
        .await;

    // Default settings: a default-enabled type that marks the provider.
    let worker = bed.worker(&[("HOUSEKEEPING_INTERVAL_SECS", "1")]);
    let left = vec!["evt_test_erase_Aaaa_left".to_owned()];
    assert!(eventually(Duration::from_secs(30), || bed.all_completed(&left)).await);
    let item = bed.item(A).await.expect("provider kept");
    assert_eq!(item["disabledReason"], "platform.deauthorized");
    assert_eq!(item["chargesEnabled"], false);
    assert!(item["deauthorizedAt"]
        .as_i64()
        .is_some_and(|t| t > now() - 60));
    assert!(
        bed.item("po_erase_Aaaa").await.is_some(),
        "kept without the setting"
    );
    stop(worker);

    // With ERASE_ON_DEAUTHORIZE_DAYS=0 the worker erases it as `erase` does.
    // The provider item goes last (it is how the worker finds the account
    // again after an erasure cut short), so once it is gone the rest is.
    let _worker = bed.worker(&[
        ("HOUSEKEEPING_INTERVAL_SECS", "1"),
        ("ERASE_ON_DEAUTHORIZE_DAYS", "0"),
    ]);
    let erased = || async {
        bed.item(A).await.is_none()
            && bed.item("po_erase_Aaaa").await.is_none()
            && bed.item("pi_erase_Aaaa").await.is_none()
    };
    assert!(eventually(Duration::from_secs(60), erased).await);
    for id in a_ids.iter().chain(&left) {
        assert!(bed.ledger(id).await.is_none(), "{id} erased");
    }
    for id in [B, "pi_erase_Bbbb", "po_erase_Bbbb"] {
        assert!(bed.item(id).await.is_some(), "{id} kept");
    }
    for id in &b_ids {
        assert!(bed.ledger(id).await.is_some(), "{id} kept");
    }
    assert!(
        eventually(Duration::from_secs(10), || async {
            bed.dlq_len().await == 1
        })
        .await
    );
}
