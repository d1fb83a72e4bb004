//! The destination port: one event delivered to a team's own service, and
//! how a delivery fails.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::ErrorKind;

/// One event as a destination receives it.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub event_id: &'a str,
    pub event_type: &'a str,
    /// The Stripe event exactly as Stripe sent it (shared, not copied).
    pub body: &'a Bytes,
    /// This try, counted from 1.
    pub attempt: u32,
    /// Unix seconds when processing began (a destination signs with the
    /// clock at the moment it sends, not with this).
    pub now: i64,
    /// `Some(id)` when an operator asked for this delivery again
    /// (`events redeliver`): the destination sends it under its own
    /// idempotency key and says it is a redelivery.
    pub redelivery: Option<&'a str>,
}

/// Why a destination did not take an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct DeliveryError {
    /// `Transient` is retried within the destination's retry horizon,
    /// `Permanent` dead-letters at once; `Configuration` (its signing
    /// secret cannot be read) is retried like `Transient`.
    pub kind: ErrorKind,
    pub message: String,
    /// The destination asked for this much patience (`Retry-After`).
    pub retry_after: Option<Duration>,
    /// Nothing was sent: every one of the destination's slots was taken, or
    /// its breaker is open. Not a try: the event waits `retry_after` on
    /// the queue, and nothing is recorded.
    pub not_sent: bool,
}

impl DeliveryError {
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Transient,
            message: message.into(),
            retry_after: None,
            not_sent: false,
        }
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Permanent,
            message: message.into(),
            retry_after: None,
            not_sent: false,
        }
    }
    /// Not sent (see [`DeliveryError::not_sent`]); look again after `wait`.
    pub fn not_sent(message: impl Into<String>, wait: Duration) -> Self {
        Self {
            kind: ErrorKind::Transient,
            message: message.into(),
            retry_after: Some(wait),
            not_sent: true,
        }
    }
}

/// Where routed events go: a team's service over HTTP (`hookline-destinations`),
/// or a handler of its own in a custom worker binary
/// (`hookline_worker::handler`); the built-in projections are the store.
#[async_trait]
pub trait Destination: Send + Sync + std::fmt::Debug {
    /// The routes document's name of the destination.
    fn name(&self) -> &str;
    /// How long failures are retried before the event is dead-lettered.
    fn retry_for(&self) -> Duration;
    /// `Once`: the event is claimed (a lease keeps other workers off it)
    /// before this destination is called. An `http` destination is
    /// `Replace`: the receiver dedupes by `Idempotency-Key`.
    fn effect(&self) -> crate::handlers::Effect {
        crate::handlers::Effect::Replace
    }
    /// Hands the event over; `Ok` once the destination took it.
    async fn deliver(&self, event: Outgoing<'_>) -> Result<(), DeliveryError>;
}
