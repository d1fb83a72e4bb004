//! The embedded backend's files: private to their owner, and purged of
//! expired records by the worker's housekeeping.

use std::time::Duration;

use bytes::Bytes;
use hookline_core::message::OutboundMessage;
use hookline_core::ports::{Queue, WritePath};

use crate::bed::Bed;
use crate::helpers::*;

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
