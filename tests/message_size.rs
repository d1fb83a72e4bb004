//! SQS message sizes checked per message: an oversized message fails
//! alone, its batch's others are sent.

use std::time::Duration;

use bytes::Bytes;
use hookline_core::message::OutboundMessage;

use crate::helpers::*;

/// An oversized message fails alone; its batch neighbours are accepted.
#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_message_fails_alone() {
    crate::skip_without_aws!();
    let fixture = aws_fixture(5).await;
    let msg = |id: &str, pad: usize| {
        let mut v: serde_json::Value =
            serde_json::from_str(&event_with("payout.created", id, now())).expect("json");
        v["pad"] = "x".repeat(pad).into();
        let body = v.to_string();
        let env = hookline_core::envelope::Envelope::parse(body.as_bytes()).expect("event");
        OutboundMessage::for_event(&env, Bytes::from(body), now())
    };
    let batch = [
        msg("evt_test_size_a", 10),
        msg("evt_test_size_big", 1_100_000),
        msg("evt_test_size_b", 10),
    ];
    let results = fixture.backend.queue.send_batch(&batch).await;
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    let err = results[1].as_ref().expect_err("too large");
    assert!(err.to_string().contains("over the SQS limit"), "{err}");
    let got = receive_n(
        fixture.backend.queue.as_ref(),
        2,
        Duration::from_secs(30),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(got.len(), 2);
    // A 300 kB message (over the old 256 KiB limit) fits the 1 MiB queue.
    let results = fixture
        .backend
        .queue
        .send_batch(&[msg("evt_test_size_300k", 300_000)])
        .await;
    assert!(results[0].is_ok(), "{results:?}");
}
