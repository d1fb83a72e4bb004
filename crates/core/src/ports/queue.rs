//! The queue port: a durable message queue with visibility timeouts (SQS
//! semantics), and what it hands out.

use async_trait::async_trait;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::time::Duration;

use super::PortError;
use crate::message::OutboundMessage;

/// The limits a backend puts on one batched send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_entries: usize,
    pub max_bytes: usize,
}

/// A message handed out by [`Queue::receive`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub message_id: String,
    /// Opaque handle for delete and visibility changes of this delivery.
    pub receipt: String,
    pub body: Bytes,
    pub attributes: BTreeMap<String, String>,
    /// How many times the message has been received, this time included.
    pub receive_count: u32,
    /// When the message was first sent, Unix milliseconds.
    pub sent_at_ms: i64,
    /// The FIFO message group, on a queue that keeps groups in order (SQS
    /// FIFO); `None` elsewhere. The worker processes one group's messages
    /// of a receive in order, one at a time.
    pub group_id: Option<String>,
}

impl Delivery {
    /// The message as it is sent again (replay, dead-lettering): same body
    /// and attributes, the original FIFO group (`data.object.id`, else the
    /// event id), and a deduplication id of its own, so that SQS FIFO never
    /// takes the copy for the original it saw within its 5-minute window.
    pub fn to_outbound(&self) -> OutboundMessage {
        // EventBridge messages carry no attributes: the event says.
        let envelope = crate::inbound::event_in(&self.body)
            .and_then(|i| crate::envelope::Envelope::parse(i.event))
            .ok();
        let event_id = self
            .attributes
            .get(crate::message::attr::EVENT_ID)
            .cloned()
            .or_else(|| envelope.as_ref().map(|e| e.id.to_string()))
            .unwrap_or_else(|| self.message_id.clone());
        let group_id = envelope
            .and_then(|e| e.object_id)
            .unwrap_or_else(|| event_id.clone());
        OutboundMessage {
            body: self.body.clone(),
            attributes: self.attributes.clone(),
            group_id,
            dedup_id: event_id,
        }
        .as_copy()
    }
}

/// Approximate message counts of one queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueCounts {
    /// Ready to be received.
    pub waiting: u64,
    /// Received and not yet deleted or visible again.
    pub in_flight: u64,
}

/// A durable message queue with visibility timeouts (SQS semantics).
#[async_trait]
pub trait Queue: Send + Sync + std::fmt::Debug {
    /// What one [`Queue::send_batch`] (entries and bytes) or
    /// [`Queue::delete_batch`] (entries) call may carry. Callers batch
    /// through [`crate::coalescer::Coalescer`], which keeps to these; the
    /// adapters split nothing.
    fn batch_limits(&self) -> BatchLimits;

    /// Sends a batch of at most [`Queue::batch_limits`]; returns one result
    /// per message, in order. A message is `Ok` only once the queue durably
    /// holds it.
    async fn send_batch(&self, batch: &[OutboundMessage]) -> Vec<Result<(), PortError>>;

    /// Whether dropping a [`Queue::receive`] future under way leaves every
    /// message where it was. Not so for SQS: a long poll its client gave up
    /// on can still take messages out of sight until their visibility
    /// timeout, so a worker stopping lets it return and hands back what it
    /// brought.
    fn receive_is_cancel_safe(&self) -> bool {
        false
    }

    /// Receives up to `max` messages, waiting up to `wait` for the first,
    /// hiding each for `visibility`.
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Delivery>, PortError>;

    /// Deletes delivered messages, at most [`Queue::batch_limits`]'s
    /// entries; one result per receipt, in order.
    async fn delete_batch(&self, receipts: &[String]) -> Vec<Result<(), PortError>>;

    /// Hides a delivered message for `timeout` from now (zero: visible now).
    async fn set_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), PortError>;

    /// The queue's kind, as OpenTelemetry's `messaging.system` names it.
    fn system(&self) -> &'static str {
        "hookline_embedded"
    }

    /// Approximate counts; also the readiness probe.
    async fn counts(&self) -> Result<QueueCounts, PortError>;

    /// Whether a receive could run now (the worker's circuit breaker
    /// probes with it): by default, whether the counts can be read.
    async fn ping(&self) -> Result<(), PortError> {
        self.counts().await.map(|_| ())
    }

    /// The messages (waiting, in flight or dead-lettered) that `matches`,
    /// removed with `remove`, where the queue can read its messages without
    /// receiving them; `Ok(None)` where it cannot (SQS shows a message only
    /// to a receive, so `hookline erase` receives its DLQ as `dlq list`
    /// does, and leaves its main queue to the worker).
    async fn sweep(
        &self,
        matches: &(dyn for<'d> Fn(&'d Delivery) -> bool + Send + Sync),
        remove: bool,
    ) -> Result<Option<Vec<Delivery>>, PortError> {
        let _ = (matches, remove);
        Ok(None)
    }
}
