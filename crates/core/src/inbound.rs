//! What arrives on the queue, and what is let in.
//!
//! Two paths put Stripe events on the queue: the ingress (the webhook's raw
//! body, byte for byte) and Amazon EventBridge (Stripe's event destinations:
//! an EventBridge envelope whose `detail` is the Stripe event). The worker
//! unwraps either into the Stripe event's own bytes; everything after that
//! (ledger, handlers, idempotency) is the same, so the same event arriving
//! through both paths is applied once.
//!
//! [`admit`] is the one admission rule (livemode against `APP_ENV`, the
//! event type enabled) used by the ingress, `backfill` and the worker.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::envelope::{Envelope, EnvelopeError};
use crate::settings::{AppEnv, EventFilter};

/// How an event reached the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The ingress (a verified webhook), or `backfill`, which enqueues as
    /// the ingress does.
    Webhook,
    /// An Amazon EventBridge rule (Stripe event destinations).
    EventBridge,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::EventBridge => "eventbridge",
        }
    }
}

/// The `source` prefix of Stripe's partner event sources.
pub const STRIPE_PARTNER_SOURCE: &str = "aws.partner/stripe.com";

/// A queue message body, unwrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inbound<'a> {
    pub source: Source,
    /// The Stripe event's bytes: the whole body for a webhook, the raw
    /// `detail` of an EventBridge envelope (never re-serialised).
    pub event: &'a [u8],
}

#[derive(Deserialize)]
struct EventBridgeShape<'a> {
    #[serde(rename = "detail-type", default)]
    detail_type: Option<&'a RawValue>,
    #[serde(default)]
    source: Option<String>,
    #[serde(borrow, default)]
    detail: Option<&'a RawValue>,
}

/// The Stripe event inside a queue message body. A JSON object with `detail-type`,
/// `source` and `detail` is an EventBridge envelope: its `source` must be
/// Stripe's and its `detail` an object (the Stripe event). Anything else is
/// taken as a webhook body, to be parsed as a Stripe event.
pub fn event_in(body: &[u8]) -> Result<Inbound<'_>, EnvelopeError> {
    // Most bodies are webhooks: only a body that names `detail-type` is
    // parsed as an envelope (the event is parsed once more by the caller).
    let maybe_envelope = body.windows(13).any(|w| w == b"\"detail-type\"");
    if !maybe_envelope {
        return Ok(Inbound {
            source: Source::Webhook,
            event: body,
        });
    }
    if let Ok(shape) = serde_json::from_slice::<EventBridgeShape<'_>>(body) {
        if let (Some(_), Some(detail)) = (shape.detail_type, shape.detail) {
            let source = shape.source.unwrap_or_default();
            if !source.starts_with(STRIPE_PARTNER_SOURCE) {
                return Err(EnvelopeError::NotStripe(source));
            }
            let event = detail.get().as_bytes();
            if !event.starts_with(b"{") {
                return Err(EnvelopeError::Missing("detail (the Stripe event)"));
            }
            return Ok(Inbound {
                source: Source::EventBridge,
                event,
            });
        }
    }
    Ok(Inbound {
        source: Source::Webhook,
        event: body,
    })
}

/// Why an event is acknowledged but not applied. None of these is final:
/// the ledger records it as `ignored` with [`Ignored::reason`], and the
/// event is applied when it comes again after the configuration changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// `v2.core.event_destination.ping`: a new event destination checking
    /// that the endpoint answers; there is nothing to apply.
    Ping,
    /// A live event outside production, or a test event in production.
    Livemode { livemode: bool, app_env: AppEnv },
    /// Not in `ENABLED_EVENTS`.
    TypeNotEnabled,
    /// Admitted, but no handler takes this type.
    NoHandler,
    /// Admitted, but the routes document sends this type nowhere.
    NoRoute,
}

impl Ignored {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Ping => "event destination ping",
            Self::Livemode { .. } => "livemode does not match APP_ENV",
            Self::TypeNotEnabled => "type not enabled",
            Self::NoHandler => "no handler",
            Self::NoRoute => "no route",
        }
    }
}

/// The admission rule: a destination's ping is acknowledged and goes no
/// further; then livemode against `APP_ENV`, then the event type.
pub fn admit(env: &Envelope, app_env: AppEnv, enabled: &EventFilter) -> Result<(), Ignored> {
    if env.event_type == crate::envelope::DESTINATION_PING {
        return Err(Ignored::Ping);
    }
    if !app_env.accepts_livemode(env.livemode) {
        return Err(Ignored::Livemode {
            livemode: env.livemode,
            app_env,
        });
    }
    if !enabled.allows(&env.event_type) {
        return Err(Ignored::TypeNotEnabled);
    }
    Ok(())
}

/// Wraps a Stripe event as EventBridge delivers it to an SQS target (for
/// `hookline dev send --via eventbridge` and the tests).
pub fn eventbridge_envelope(
    event: &str,
    account: &str,
    region: &str,
) -> Result<String, EnvelopeError> {
    let env = Envelope::parse(event.as_bytes())?;
    let detail: &RawValue = serde_json::from_str(event).map_err(EnvelopeError::NotJson)?;
    let time = env
        .created
        .map(crate::clock::rfc3339)
        .unwrap_or_else(|| crate::clock::rfc3339(crate::clock::unix_secs()));
    let wrapper = serde_json::json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": env.event_type,
        "source": format!("{STRIPE_PARTNER_SOURCE}/ed_test_hooklineDevSource"),
        "account": account,
        "time": time,
        "region": region,
        "resources": [],
        "detail": detail,
    });
    Ok(wrapper.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = r#"{"id":"evt_1","type":"payout.paid","created":1,"livemode":false,"data":{"object":{"id":"po_1"}}}"#;

    #[test]
    fn a_webhook_body_is_the_event() {
        let i = event_in(EVENT.as_bytes()).expect("an event inside");
        assert_eq!(i.source, Source::Webhook);
        assert_eq!(i.event, EVENT.as_bytes());
    }

    #[test]
    fn a_webhook_that_mentions_detail_type_is_still_a_webhook() {
        let body = r#"{"id":"evt_1","type":"payout.paid","created":1,"data":{"object":{"id":"po_1","metadata":{"detail-type":"x"}}}}"#;
        let i = event_in(body.as_bytes()).expect("an event inside");
        assert_eq!(i.source, Source::Webhook);
        assert_eq!(i.event, body.as_bytes());
    }

    #[test]
    fn an_eventbridge_envelope_yields_its_detail_byte_for_byte() {
        let body = format!(
            r#"{{"version":"0","id":"e1","detail-type":"payout.paid","source":"aws.partner/stripe.com/ed_61abc","account":"123456789012","time":"2026-11-30T10:00:00Z","region":"us-east-1","resources":[],"detail":{EVENT}}}"#
        );
        let i = event_in(body.as_bytes()).expect("an event inside");
        assert_eq!(i.source, Source::EventBridge);
        assert_eq!(i.event, EVENT.as_bytes());
        let wrapped = eventbridge_envelope(EVENT, "123456789012", "us-east-1").expect("wraps");
        let again = event_in(wrapped.as_bytes()).expect("an event inside");
        assert_eq!(again.source, Source::EventBridge);
        assert_eq!(
            Envelope::parse(again.event).expect("event").id.as_str(),
            "evt_1"
        );
    }

    #[test]
    fn an_envelope_from_elsewhere_or_without_an_event_is_refused() {
        let other = r#"{"detail-type":"x","source":"aws.ec2","detail":{"id":"i-1"}}"#;
        assert!(matches!(
            event_in(other.as_bytes()),
            Err(EnvelopeError::NotStripe(_))
        ));
        let no_event =
            r#"{"detail-type":"x","source":"aws.partner/stripe.com/ed","detail":"text"}"#;
        assert!(event_in(no_event.as_bytes()).is_err());
    }

    #[test]
    fn admission_checks_livemode_then_type() {
        let env = Envelope::parse(EVENT.as_bytes()).expect("event");
        let only: EventFilter = "payout.paid".parse().expect("filter");
        assert_eq!(admit(&env, AppEnv::Development, &only), Ok(()));
        assert!(matches!(
            admit(&env, AppEnv::Production, &only),
            Err(Ignored::Livemode {
                livemode: false,
                ..
            })
        ));
        assert_eq!(
            admit(&env, AppEnv::Development, &EventFilter::default()),
            Err(Ignored::TypeNotEnabled)
        );
    }

    #[test]
    fn a_destination_ping_is_acknowledged_whatever_the_settings() {
        let ping = Envelope::parse(br#"{"id":"evt_test_789","object":"v2.core.event","type":"v2.core.event_destination.ping","created":"2024-03-07T18:27:56.000Z","livemode":true}"#)
            .expect("a ping parses");
        for filter in [EventFilter::All, EventFilter::default()] {
            for env in [AppEnv::Development, AppEnv::Production] {
                assert_eq!(admit(&ping, env, &filter), Err(Ignored::Ping));
            }
        }
    }

    #[test]
    fn thin_types_are_admitted_by_name_or_by_prefix() {
        let raw = include_bytes!("../../../testdata/stripe-events/v2.core.account.updated.json");
        let thin = Envelope::parse(raw).expect("thin event");
        let named: EventFilter = "account.updated,v2.core.account.updated"
            .parse()
            .expect("filter");
        let prefix: EventFilter = "v2.core.*".parse().expect("filter");
        let other: EventFilter = "v1.*".parse().expect("filter");
        assert_eq!(admit(&thin, AppEnv::Development, &named), Ok(()));
        assert_eq!(admit(&thin, AppEnv::Development, &prefix), Ok(()));
        assert_eq!(
            admit(&thin, AppEnv::Development, &other),
            Err(Ignored::TypeNotEnabled)
        );
        assert!(matches!(
            admit(&thin, AppEnv::Production, &prefix),
            Err(Ignored::Livemode { .. })
        ));
    }
}
