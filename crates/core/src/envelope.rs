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
    /// then fails it permanently). A thin event's RFC 3339 `created` is read
    /// to the second.
    pub created: Option<i64>,
    pub livemode: bool,
    /// The connected account, for Stripe Connect events (a thin event's
    /// `context`).
    pub account: Option<String>,
    /// `data.object.id`, when present (a thin event's `related_object.id`).
    pub object_id: Option<String>,
    /// A snapshot event (`"object": "event"`, the object inside) or a thin
    /// one (`"object": "v2.core.event"`, a pointer to fetch).
    pub kind: Kind,
}

/// The `object` of a thin event notification (Stripe's event destinations).
pub const THIN_EVENT_OBJECT: &str = "v2.core.event";

/// The event every new Stripe event destination sends first.
pub const DESTINATION_PING: &str = "v2.core.event_destination.ping";

/// How much of the object an event carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// The object as it was when the event happened, in `data.object`.
    Snapshot,
    /// A v2 thin event: ids only; the worker fetches what it points to.
    Thin(Thin),
}

/// What a thin event points to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Thin {
    /// `context`: the account the event happened on (sent as
    /// `Stripe-Context` when fetching).
    pub context: Option<String>,
    /// `related_object`, when the event has one.
    pub related_object: Option<RelatedObject>,
}

/// A thin event's `related_object`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RelatedObject {
    pub id: String,
    #[serde(rename = "type")]
    pub object_type: String,
    /// The API path that retrieves it (`/v2/core/accounts/acct_…`), as the
    /// event says: never requested, since it could name another host (see
    /// [`crate::stripe_state::related_account_path`]).
    #[serde(default)]
    pub url: String,
}

impl Envelope {
    /// Whether this is a thin event.
    pub fn is_thin(&self) -> bool {
        matches!(self.kind, Kind::Thin(_))
    }
}

/// `created`: Unix seconds (a snapshot event) or RFC 3339 (a thin event).
#[derive(Deserialize)]
#[serde(untagged)]
enum Created<'a> {
    Secs(i64),
    #[serde(borrow)]
    Text(std::borrow::Cow<'a, str>),
}

impl Created<'_> {
    fn secs(&self) -> Option<i64> {
        match self {
            Self::Secs(s) => Some(*s),
            Self::Text(t) => humantime::parse_rfc3339(t).ok().and_then(|at| {
                at.duration_since(std::time::UNIX_EPOCH)
                    .ok()
                    .and_then(|d| i64::try_from(d.as_secs()).ok())
            }),
        }
    }
}

#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(borrow, default)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "type", borrow, default)]
    event_type: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    object: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    created: Option<Created<'a>>,
    #[serde(default)]
    livemode: Option<bool>,
    #[serde(borrow, default)]
    account: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    context: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    related_object: Option<RelatedObject>,
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
    /// when it is a JSON object with a non-empty string `id` and `type`; it
    /// is a thin event when its `object` says so (`v2.core.event`), and
    /// then its `created` must be RFC 3339.
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
        let thin = env.object.as_deref() == Some(THIN_EVENT_OBJECT);
        let created = match (&env.created, thin) {
            (Some(Created::Text(_)), false) => None,
            (Some(Created::Secs(_)), true) => None,
            (Some(c), _) => c.secs(),
            (None, _) => None,
        };
        if thin && created.is_none() {
            return Err(EnvelopeError::Missing("created (RFC 3339)"));
        }
        let kind = if thin {
            Kind::Thin(Thin {
                context: env.context.map(|c| c.into_owned()),
                related_object: env.related_object,
            })
        } else {
            Kind::Snapshot
        };
        let object_id = match &kind {
            Kind::Thin(t) => t.related_object.as_ref().map(|o| o.id.clone()),
            Kind::Snapshot => env
                .data
                .and_then(|d| d.object)
                .and_then(|o| o.id)
                .map(|id| id.into_owned()),
        };
        let account = match &kind {
            Kind::Thin(t) => t.context.clone(),
            Kind::Snapshot => env.account.map(|a| a.into_owned()),
        };
        Ok(Self {
            id: EventId(id.into_owned()),
            event_type: event_type.into_owned(),
            created,
            livemode: env.livemode.unwrap_or(false),
            account,
            object_id,
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_thin_event_is_told_apart_by_its_object() {
        let raw = include_bytes!("../../../testdata/stripe-events/v2.core.account.updated.json");
        let env = Envelope::parse(raw).expect("parses");
        assert!(env.is_thin());
        assert_eq!(env.event_type, "v2.core.account.updated");
        assert_eq!(env.created, Some(1764675000));
        assert_eq!(env.object_id.as_deref(), Some("acct_1SThinExample0001"));
        let Kind::Thin(thin) = env.kind else {
            panic!("thin")
        };
        let related = thin.related_object.expect("related object");
        assert_eq!(related.url, "/v2/core/accounts/acct_1SThinExample0001");
        let ping = Envelope::parse(br#"{"id":"evt_test_789","object":"v2.core.event","type":"v2.core.event_destination.ping","created":"2024-03-07T18:27:56.000Z","livemode":true}"#)
            .expect("a ping parses");
        assert_eq!(ping.created, Some(1709836076));
        assert!(ping.livemode);
        // A snapshot event's created is a number; a text one is not read.
        let odd = Envelope::parse(
            br#"{"id":"evt_1","object":"event","type":"a.b","created":"2024-03-07T18:27:56Z"}"#,
        )
        .expect("parses");
        assert!(!odd.is_thin());
        assert_eq!(odd.created, None);
        // A thin event must say when it happened.
        assert!(Envelope::parse(
            br#"{"id":"evt_1","object":"v2.core.event","type":"a.b","created":1}"#
        )
        .is_err());
    }

    /// Seeded cases: a failure names the seed that reproduces it.
    const CASES: u64 = 1024;

    #[test]
    fn never_panics() {
        for seed in 0..CASES {
            let mut rng = fastrand::Rng::with_seed(seed);
            let body: Vec<u8> = (0..rng.usize(0..512)).map(|_| rng.u8(..)).collect();
            let _ = Envelope::parse(&body);
        }
    }

    /// Bodies shaped like an event: known keys, short values, unclosed
    /// braces and brackets.
    #[test]
    fn never_panics_on_jsonish() {
        const KEYS: [&str; 7] = [
            "id", "type", "data", "object", "account", "created", "livemode",
        ];
        for seed in 0..CASES {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut body = String::from("{");
            for _ in 0..rng.usize(0..=8) {
                body.push_str(&format!("\"{}\":", KEYS[rng.usize(..KEYS.len())]));
                match rng.u8(0..6) {
                    0 => {
                        let word: String = (0..rng.usize(0..=6)).map(|_| rng.lowercase()).collect();
                        body.push_str(&format!("\"{word}\""));
                    }
                    1 => body.push_str(&rng.u16(0..1000).to_string()),
                    2 => body.push_str("true"),
                    3 => body.push_str("null"),
                    4 => body.push('{'),
                    _ => body.push('['),
                }
                if rng.bool() {
                    body.push(',');
                }
            }
            body.push_str(&"}".repeat(rng.usize(0..=3)));
            let _ = Envelope::parse(body.as_bytes());
        }
    }
}
