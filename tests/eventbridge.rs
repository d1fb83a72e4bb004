//! Stripe events through Amazon EventBridge: the worker applies an
//! EventBridge envelope's `detail` as it applies a webhook body, after the
//! same admission rules, into the same ledger. Every case on both backends.

use std::time::Duration;

use bytes::Bytes;
use hookline_core::message::OutboundMessage;
use hookline_core::records::{EventStatus, Outcome};

use crate::bed::Bed;
use crate::helpers::*;
use crate::on_both_backends;

const APPLIED: &str = "hookline_events_processed_total{outcome=\"applied\"}";
const DUPLICATE: &str = "hookline_events_processed_total{outcome=\"duplicate\"}";

on_both_backends!(
    each_type_through_eventbridge_applies_like_its_webhook_twin(5),
    the_same_event_through_both_paths_applies_once(5),
    eventbridge_events_outside_the_admission_rules_complete_ignored(5),
    a_malformed_envelope_is_dead_lettered_with_its_reason(5),
    dev_send_via_eventbridge_end_to_end(5),
);

/// A fixture event with its own id and object.
fn event(event_type: &str, id: &str, object: &str) -> String {
    let mut v: serde_json::Value =
        serde_json::from_str(&event_with(event_type, id, 1_700_000_000)).expect("json");
    v["data"]["object"]["id"] = object.into();
    serde_json::to_string_pretty(&v).expect("json")
}

/// Puts an EventBridge envelope on the queue as an EventBridge rule does:
/// the envelope as the body, no message attributes.
async fn put_eventbridge(bed: &Bed, events: &[String]) {
    let messages: Vec<OutboundMessage> = events
        .iter()
        .map(|e| {
            let body = hookline_core::inbound::eventbridge_envelope(e, "123456789012", "us-east-1")
                .expect("wraps");
            OutboundMessage {
                body: Bytes::from(body),
                attributes: Default::default(),
                group_id: "g".to_owned(),
                dedup_id: uuid::Uuid::new_v4().simple().to_string(),
            }
        })
        .collect();
    let results = bed.queue.send_batch(&messages).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
}

async fn put_raw(bed: &Bed, bodies: &[String]) {
    let messages: Vec<OutboundMessage> = bodies
        .iter()
        .map(|b| OutboundMessage {
            body: Bytes::from(b.clone()),
            attributes: Default::default(),
            group_id: "g".to_owned(),
            dedup_id: uuid::Uuid::new_v4().simple().to_string(),
        })
        .collect();
    assert!(bed
        .queue
        .send_batch(&messages)
        .await
        .iter()
        .all(Result::is_ok));
}

const TYPES: [(&str, &str); 6] = [
    ("payment_intent.succeeded", "pi"),
    ("payment_intent.payment_failed", "pi"),
    ("charge.dispute.created", "du"),
    ("payout.created", "po"),
    ("payout.updated", "po"),
    ("account.updated", "acct"),
];

async fn each_type_through_eventbridge_applies_like_its_webhook_twin(bed: Bed) {
    let mut eb = Vec::new();
    let mut wh = Vec::new();
    let mut ids = Vec::new();
    for (i, (t, prefix)) in TYPES.iter().enumerate() {
        eb.push(event(
            t,
            &format!("evt_test_eb_{i}"),
            &format!("{prefix}_eb_{i}"),
        ));
        wh.push(event(
            t,
            &format!("evt_test_wh_{i}"),
            &format!("{prefix}_wh_{i}"),
        ));
        ids.push(format!("evt_test_eb_{i}"));
        ids.push(format!("evt_test_wh_{i}"));
    }
    put_eventbridge(&bed, &eb).await;
    bed.enqueue(&wh).await;
    let _worker = bed.worker(&[]);
    assert!(eventually(Duration::from_secs(30), || bed.all_completed(&ids)).await);
    for (i, (_, prefix)) in TYPES.iter().enumerate() {
        let eb_rec = bed
            .ledger(&format!("evt_test_eb_{i}"))
            .await
            .expect("ledger");
        assert_eq!(eb_rec.outcome, Some(Outcome::Applied));
        assert_eq!(eb_rec.source.as_deref(), Some("eventbridge"));
        let wh_rec = bed
            .ledger(&format!("evt_test_wh_{i}"))
            .await
            .expect("ledger");
        assert_eq!(wh_rec.source.as_deref(), Some("webhook"));
        let strip = |mut item: serde_json::Map<String, serde_json::Value>| {
            for k in ["objectId", "stripeAccountId", "lastEventId"] {
                item.remove(k);
            }
            item
        };
        let a = strip(
            bed.item(&format!("{prefix}_eb_{i}"))
                .await
                .expect("eb item"),
        );
        let b = strip(
            bed.item(&format!("{prefix}_wh_{i}"))
                .await
                .expect("webhook item"),
        );
        assert_eq!(
            a, b,
            "the same records through either path ({})",
            TYPES[i].0
        );
    }
}

async fn the_same_event_through_both_paths_applies_once(bed: Bed) {
    let e = event("payout.updated", "evt_test_both", "po_both");
    bed.enqueue(std::slice::from_ref(&e)).await;
    put_eventbridge(&bed, std::slice::from_ref(&e)).await;
    let worker = bed.worker(&[]);
    assert!(
        eventually(Duration::from_secs(30), || async {
            metric(&worker, APPLIED).await + metric(&worker, DUPLICATE).await == 2
        })
        .await
    );
    assert_eq!(metric(&worker, APPLIED).await, 1, "applied once");
    assert_eq!(
        metric(&worker, DUPLICATE).await,
        1,
        "the other copy is a duplicate"
    );
    let rec = bed.ledger("evt_test_both").await.expect("ledger");
    assert_eq!(
        (rec.status, rec.outcome),
        (EventStatus::Completed, Some(Outcome::Applied))
    );
    assert_eq!(rec.attempts, 1);
    assert!(eventually(Duration::from_secs(10), || bed.queue_is_empty()).await);
}

async fn eventbridge_events_outside_the_admission_rules_complete_ignored(bed: Bed) {
    let mut live: serde_json::Value =
        serde_json::from_str(&event("payout.created", "evt_test_eb_live", "po_eb_live"))
            .expect("json");
    live["livemode"] = true.into();
    let disabled = event("payout.updated", "evt_test_eb_disabled", "po_eb_disabled");
    let admitted = event("payout.created", "evt_test_eb_admitted", "po_eb_admitted");
    put_eventbridge(&bed, &[live.to_string(), disabled, admitted]).await;
    // Development, with payout.updated not enabled.
    let _worker = bed.worker(&[
        ("APP_ENV", "development"),
        ("ENABLED_EVENTS", "payout.created"),
    ]);
    let ids: Vec<String> = [
        "evt_test_eb_live",
        "evt_test_eb_disabled",
        "evt_test_eb_admitted",
    ]
    .map(String::from)
    .to_vec();
    assert!(eventually(Duration::from_secs(30), || bed.all_completed(&ids)).await);
    for (id, outcome) in [
        ("evt_test_eb_live", Outcome::Ignored),
        ("evt_test_eb_disabled", Outcome::Ignored),
        ("evt_test_eb_admitted", Outcome::Applied),
    ] {
        assert_eq!(
            bed.ledger(id).await.expect("ledger").outcome,
            Some(outcome),
            "{id}"
        );
    }
    assert!(
        bed.item("po_eb_live").await.is_none(),
        "a live event changes nothing in development"
    );
    assert!(bed.item("po_eb_disabled").await.is_none());
    assert!(bed.dead_letters().await.is_empty());
}

async fn a_malformed_envelope_is_dead_lettered_with_its_reason(bed: Bed) {
    let not_stripe = serde_json::json!({
        "version": "0", "id": "e-1", "detail-type": "EC2 Instance State-change Notification",
        "source": "aws.ec2", "account": "123456789012", "time": "2026-11-30T10:00:00Z",
        "region": "us-east-1", "resources": [], "detail": {"instance-id": "i-1"}
    });
    let no_event = serde_json::json!({
        "version": "0", "id": "e-2", "detail-type": "payout.created",
        "source": "aws.partner/stripe.com/ed_test_61abc", "account": "123456789012",
        "time": "2026-11-30T10:00:00Z", "region": "us-east-1", "resources": [],
        "detail": {"type": "payout.created"}
    });
    let good = event("payout.created", "evt_test_eb_neighbour", "po_eb_neighbour");
    put_raw(&bed, &[not_stripe.to_string(), no_event.to_string()]).await;
    put_eventbridge(&bed, std::slice::from_ref(&good)).await;
    let _worker = bed.worker(&[]);
    let ids = vec!["evt_test_eb_neighbour".to_owned()];
    assert!(eventually(Duration::from_secs(30), || bed.all_completed(&ids)).await);
    assert!(
        eventually(Duration::from_secs(20), || async {
            let d = bed.dlq.counts().await.expect("counts");
            d.waiting + d.in_flight == 2
        })
        .await
    );
    let dead = bed.dead_letters().await;
    let reasons: Vec<&str> = dead
        .iter()
        .map(|d| d.attributes["error"].as_str())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("not from Stripe")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("no id")), "{reasons:?}");
}

async fn dev_send_via_eventbridge_end_to_end(bed: Bed) {
    let (code, out, err) = run_hookline(
        &bed.env,
        &[],
        &["dev", "send", "account.updated", "--via", "eventbridge"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let id = out.split_whitespace().next().expect("event id").to_owned();
    assert!(id.starts_with("evt_"), "{out}");
    // On the queue: an EventBridge envelope, as a rule delivers it.
    let got = receive_n(
        bed.queue.as_ref(),
        1,
        Duration::from_secs(1),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(got.len(), 1);
    let v: serde_json::Value = serde_json::from_slice(&got[0].body).expect("json");
    assert_eq!(v["detail-type"], "account.updated");
    assert!(v["source"]
        .as_str()
        .is_some_and(|s| s.starts_with("aws.partner/stripe.com")));
    assert_eq!(v["detail"]["id"], id.as_str());
    // (received for a second; it comes back after its visibility timeout)
    let _worker = bed.worker(&[]);
    let ids = vec![id.clone()];
    assert!(eventually(Duration::from_secs(30), || bed.all_completed(&ids)).await);
    let (code, out, err) = run_hookline(&bed.env, &[], &["events", "show", &id, "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let rec: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(rec["source"], "eventbridge");
    assert_eq!(rec["outcome"], "applied");

    // A poison event through EventBridge shows its source in the DLQ.
    let mut poison: serde_json::Value =
        serde_json::from_str(&event("payout.created", "evt_test_eb_poison", "po_x")).expect("json");
    poison.as_object_mut().expect("object").remove("created");
    put_eventbridge(&bed, &[poison.to_string()]).await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            bed.ledger("evt_test_eb_poison")
                .await
                .is_some_and(|r| r.status == EventStatus::Failed)
        })
        .await
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            let d = bed.dlq.counts().await.expect("counts");
            d.waiting == 1
        })
        .await
    );
    let (code, out, err) = run_hookline(&bed.env, &[], &["dlq", "list", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let list: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(list[0]["event_id"], "evt_test_eb_poison");
    assert_eq!(list[0]["event_type"], "payout.created");
    assert_eq!(list[0]["source"], "eventbridge");
    let file = tempfile::NamedTempFile::new().expect("tmp");
    let path = file.path().display().to_string();
    let (code, _, err) = run_hookline(&bed.env, &[], &["dlq", "export", "--out", &path]).await;
    assert_eq!(code, 0, "{err}");
    let line: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&path).expect("read").trim()).expect("json");
    assert_eq!(line["source"], "eventbridge");
}
