//! The part of a Stripe event that routing needs, parsed from the raw bytes.
//!
//! The raw body is never re-serialised: the queue carries it byte for byte
//! and the worker parses it again for the fields its handler needs.

use std::fmt;

use serde::Deserialize;

/// A Stripe event id (`evt_…`), the key of the exactly-once promise.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(String);

impl EventId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a body is not a Stripe event.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("body is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("event has no {0}")]
    Missing(&'static str),
    #[error("EventBridge event from {0:?}, not from Stripe (aws.partner/stripe.com)")]
    NotStripe(String),
}

/// Routing fields of a Stripe event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub id: EventId,
    pub event_type: String,
    /// `created`, Unix seconds; `None` when the event lacks it (the worker
    /// then fails it permanently).
    pub created: Option<i64>,
    pub livemode: bool,
    /// The connected account, for Stripe Connect events.
    pub account: Option<String>,
    /// `data.object.id`, when present.
    pub object_id: Option<String>,
}

#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(borrow, default)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "type", borrow, default)]
    event_type: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    created: Option<i64>,
    #[serde(default)]
    livemode: Option<bool>,
    #[serde(borrow, default)]
    account: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<RawData<'a>>,
}

#[derive(Deserialize)]
struct RawData<'a> {
    #[serde(borrow, default)]
    object: Option<RawObject<'a>>,
}

#[derive(Deserialize)]
struct RawObject<'a> {
    #[serde(borrow, default)]
    id: Option<std::borrow::Cow<'a, str>>,
}

impl Envelope {
    /// Parses the routing fields out of a raw event body. A body is an event
    /// when it is a JSON object with a non-empty string `id` and `type`.
    pub fn parse(raw: &[u8]) -> Result<Self, EnvelopeError> {
        let env: RawEnvelope<'_> = serde_json::from_slice(raw).map_err(EnvelopeError::NotJson)?;
        let id = env
            .id
            .filter(|s| !s.is_empty())
            .ok_or(EnvelopeError::Missing("id"))?;
        let event_type = env
            .event_type
            .filter(|s| !s.is_empty())
            .ok_or(EnvelopeError::Missing("type"))?;
        Ok(Self {
            id: EventId(id.into_owned()),
            event_type: event_type.into_owned(),
            created: env.created,
            livemode: env.livemode.unwrap_or(false),
            account: env.account.map(|a| a.into_owned()),
            object_id: env
                .data
                .and_then(|d| d.object)
                .and_then(|o| o.id)
                .map(|id| id.into_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_a_connect_event() {
        let raw = include_bytes!("../../../testdata/stripe-events/payout.updated.json");
        let env = Envelope::parse(raw).expect("parses");
        assert_eq!(env.id.as_str(), "evt_1QhLsDExampleEvent06");
        assert_eq!(env.event_type, "payout.updated");
        assert_eq!(env.created, Some(1732867200));
        assert!(!env.livemode);
        assert_eq!(env.account.as_deref(), Some("acct_1QhLnKExample0001"));
        assert_eq!(env.object_id.as_deref(), Some("po_1QhLsCExamplePayout1"));
    }

    #[test]
    fn rejects_what_is_not_an_event() {
        for body in [
            &b"not json"[..],
            b"[]",
            b"{}",
            b"{\"id\":\"evt_1\"}",
            b"{\"type\":\"x\"}",
            b"{\"id\":\"\",\"type\":\"x\"}",
            b"{\"id\":5,\"type\":\"x\"}",
        ] {
            assert!(
                Envelope::parse(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let env =
            Envelope::parse(br#"{"id":"evt_\u0041","type":"a.b","data":{"object":{"id":"pi_1"}}}"#)
                .expect("parses");
        assert_eq!(env.id.as_str(), "evt_A");
        assert_eq!(env.object_id.as_deref(), Some("pi_1"));
        assert_eq!(env.created, None);
    }

    proptest! {
        #[test]
        fn never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Envelope::parse(&body);
        }

        #[test]
        fn never_panics_on_jsonish(body in r#"\{("(id|type|data|object|account|created|livemode)":("[a-z_]{0,6}"|[0-9]{1,3}|true|null|\{|\[),?){0,8}\}{0,3}"#) {
            let _ = Envelope::parse(body.as_bytes());
        }
    }
}
