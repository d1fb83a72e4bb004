//! The queue message the ingress (and `backfill`, and `replay`) send.
//!
//! Body: the raw request body, byte for byte. Attributes: `event_id`,
//! `event_type`, `livemode`, `account` (when the event has one),
//! `received_at` (RFC 3339). On FIFO queues the deduplication id is the event
//! id and the group id is `data.object.id` (the event id when there is none).

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::envelope::Envelope;

/// Attribute names, as the contract (docs/contract.md) fixes them.
pub mod attr {
    pub const EVENT_ID: &str = "event_id";
    pub const EVENT_TYPE: &str = "event_type";
    pub const LIVEMODE: &str = "livemode";
    pub const ACCOUNT: &str = "account";
    pub const RECEIVED_AT: &str = "received_at";
    /// Set on a message the worker dead-letters itself.
    pub const ERROR: &str = "error";
    /// The trace the message continues, in X-Ray's header format. On SQS it
    /// travels as the `AWSTraceHeader` system attribute (which neither
    /// counts against the 10 message attributes nor the size limit), so
    /// X-Ray links the queue hop; the embedded queue keeps it with the
    /// other attributes.
    pub const TRACE_HEADER: &str = "AWSTraceHeader";
    /// On a DLQ message an erasure's scan put back: when the message first
    /// reached the queue (Unix ms), which its age is counted from.
    pub const SENT_AT: &str = "hookline_sent_at";
    /// On a DLQ message an erasure's scan put back: that scan's id, so it
    /// reads each message once.
    pub const SCANNED_BY: &str = "hookline_scanned_by";
}

/// A message to put on a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundMessage {
    pub body: Bytes,
    pub attributes: BTreeMap<String, String>,
    /// FIFO `MessageGroupId`; ignored by standard queues.
    pub group_id: String,
    /// FIFO `MessageDeduplicationId`; ignored by standard queues.
    pub dedup_id: String,
}

impl OutboundMessage {
    /// Builds the message for a verified event received at `received_at`
    /// (Unix seconds).
    pub fn for_event(env: &Envelope, body: Bytes, received_at: i64) -> Self {
        let mut attributes = BTreeMap::new();
        attributes.insert(attr::EVENT_ID.to_owned(), env.id.as_str().to_owned());
        attributes.insert(attr::EVENT_TYPE.to_owned(), env.event_type.clone());
        attributes.insert(attr::LIVEMODE.to_owned(), env.livemode.to_string());
        if let Some(account) = &env.account {
            attributes.insert(attr::ACCOUNT.to_owned(), account.clone());
        }
        attributes.insert(
            attr::RECEIVED_AT.to_owned(),
            crate::clock::rfc3339(received_at),
        );
        Self {
            body,
            attributes,
            group_id: env
                .object_id
                .clone()
                .unwrap_or_else(|| env.id.as_str().to_owned()),
            dedup_id: env.id.as_str().to_owned(),
        }
    }

    /// The same message as a copy of an earlier send (dead-lettering,
    /// replay, backfill): its deduplication id becomes the event id plus a
    /// random suffix, unique per copy. SQS FIFO drops a message whose
    /// deduplication id it accepted in the last 5 minutes (answering
    /// success), so a copy that reused the event id would silently vanish.
    /// A real duplicate is absorbed by the worker's ledger instead.
    #[must_use]
    pub fn as_copy(mut self) -> Self {
        // SQS allows 128 characters: keep the event id recognisable, cut it
        // before the suffix if it is unusually long.
        let mut base = self.dedup_id;
        if base.len() > 90 {
            let mut end = 90;
            while !base.is_char_boundary(end) {
                end -= 1;
            }
            base.truncate(end);
        }
        self.dedup_id = format!("{base}.{}", uuid::Uuid::new_v4().simple());
        self
    }

    /// Size as SQS counts it: body plus attribute names, types and values
    /// (a system attribute, the trace header, does not count).
    pub fn wire_size(&self) -> usize {
        self.body.len()
            + self
                .attributes
                .iter()
                .filter(|(k, _)| k.as_str() != attr::TRACE_HEADER)
                .map(|(k, v)| k.len() + v.len() + "String".len())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carries_the_spec_attributes() {
        let raw = include_bytes!("../../../testdata/stripe-events/account.updated.json");
        let env = Envelope::parse(raw).expect("parses");
        let msg = OutboundMessage::for_event(&env, Bytes::from_static(raw), 0);
        assert_eq!(msg.body.as_ref(), raw.as_slice());
        assert_eq!(msg.attributes["event_id"], "evt_1QhLqZExampleEvent03");
        assert_eq!(msg.attributes["event_type"], "account.updated");
        assert_eq!(msg.attributes["livemode"], "false");
        assert_eq!(msg.attributes["account"], "acct_1QhLnKExample0001");
        assert_eq!(msg.attributes["received_at"], "1970-01-01T00:00:00Z");
        assert_eq!(msg.group_id, "acct_1QhLnKExample0001");
        assert_eq!(msg.dedup_id, "evt_1QhLqZExampleEvent03");
    }

    #[test]
    fn a_copy_keeps_the_group_and_gets_a_deduplication_id_of_its_own() {
        let raw = include_bytes!("../../../testdata/stripe-events/payout.updated.json");
        let env = Envelope::parse(raw).expect("parses");
        let msg = OutboundMessage::for_event(&env, Bytes::from_static(raw), 0);
        let a = msg.clone().as_copy();
        let b = msg.clone().as_copy();
        assert_eq!(a.group_id, msg.group_id);
        assert!(a.dedup_id.starts_with("evt_1QhLsDExampleEvent06."));
        assert_ne!(a.dedup_id, msg.dedup_id);
        assert_ne!(a.dedup_id, b.dedup_id);
        assert!(a.dedup_id.len() <= 128);
        let long = OutboundMessage {
            dedup_id: "e".repeat(300),
            ..msg
        }
        .as_copy();
        assert!(long.dedup_id.len() <= 128);
    }

    #[test]
    fn group_falls_back_to_the_event_id() {
        let env = Envelope::parse(br#"{"id":"evt_9","type":"x.y"}"#).expect("parses");
        let msg = OutboundMessage::for_event(&env, Bytes::new(), 0);
        assert_eq!(msg.group_id, "evt_9");
        assert!(!msg.attributes.contains_key("account"));
    }
}
