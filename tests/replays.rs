//! DLQ replays that end and lose nothing: poison events replayed while
//! workers run, held messages released on SIGTERM, list and export
//! streaming every message once.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use hookline_core::message::OutboundMessage;
use hookline_core::records::EventStatus;

use crate::bed::Bed;
use crate::helpers::*;
use crate::on_both_backends;
use crate::queues::poison;
use crate::queues::DEAD_LETTERED;

on_both_backends!(a_replay_of_poison_events_with_workers_running_ends(5),);

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
