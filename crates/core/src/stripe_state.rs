//! State read from Stripe's API instead of an event's payload, as pure
//! functions: what to fetch and how the answer becomes a projection.
//!
//! Two cases need it:
//! - a **thin event** (v2 notification) carries ids only: for the Accounts
//!   v2 events (`v2.core.account.updated`, `v2.core.account[…].…`) the
//!   worker fetches the account and [`v2_account`] maps it onto the
//!   provider table;
//! - a **same-second tie**: two events of one object with the same
//!   `created` cannot be ordered from their payloads, so the worker fetches
//!   the object ([`current_path`]) and [`current`] projects what Stripe says
//!   now, through the same handler the event has.
//!
//! Either way the projection is marked [`RANK_CURRENT`]: it is Stripe's
//! current state, and within its second it wins over an event's snapshot.

use serde::Deserialize;

use crate::envelope::{Envelope, Kind, RelatedObject};
use crate::handlers::{Handler, HandlerError};
use crate::records::{Projection, ProviderRecord, RANK_CURRENT};

/// The `include` values a v2 Account needs for the provider mapping
/// (Accounts v2 returns configurations and requirements only when asked).
pub const V2_ACCOUNT_INCLUDE: [&str; 3] = [
    "configuration.merchant",
    "configuration.recipient",
    "requirements",
];

/// How the worker handles a thin event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThinPlan {
    /// Fetch this related object (`GET url?include=…`, as the event's
    /// context) and map it with [`v2_account`].
    V2Account(RelatedObject),
    /// The event names no related object: fetch the full event
    /// (`GET /v2/core/events/{id}`) to find it, then as above.
    FetchEventFirst,
    /// No handler takes this thin type (completes `ignored`, not final).
    NoHandler,
}

/// Whether `event_type` is one of the Accounts v2 events that update an
/// account: `v2.core.account.updated`, `v2.core.account.created`, and the
/// `v2.core.account[configuration.merchant].updated`-style variants (not
/// `v2.core.account_link.*` or `v2.core.account_person.*`).
pub fn is_v2_account_type(event_type: &str) -> bool {
    event_type
        .strip_prefix("v2.core.account")
        .is_some_and(|rest| {
            matches!(rest, ".updated" | ".created")
                || (rest.starts_with('[') && rest.contains("]."))
        })
}

/// The plan for a thin event (`None` for a snapshot event).
pub fn thin_plan(env: &Envelope) -> Option<ThinPlan> {
    let Kind::Thin(thin) = &env.kind else {
        return None;
    };
    if !is_v2_account_type(&env.event_type) {
        return Some(ThinPlan::NoHandler);
    }
    Some(match &thin.related_object {
        Some(related) => ThinPlan::V2Account(related.clone()),
        None => ThinPlan::FetchEventFirst,
    })
}

/// Whether `id` has the shape of a Stripe id with `prefix`
/// (`acct_1SThinExample0001`, `evt_test_65R…`): the prefix, `_`, then
/// 1 to 255 letters, digits and `_`.
pub fn is_stripe_id(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|rest| {
            (1..=255).contains(&rest.len())
                && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
}

/// The API path of a thin event's related v2 Account, built from its type
/// and id (never from the `url` the event carries, which could name
/// another host); a permanent error for anything else.
pub fn related_account_path(related: &RelatedObject) -> Result<String, HandlerError> {
    let shown = |s: &str| s.chars().take(64).collect::<String>();
    if related.object_type == "v2.core.account" && is_stripe_id(&related.id, "acct") {
        let path = format!("/v2/core/accounts/{}", related.id);
        // Stripe's `url` is exactly that path: any other is not Stripe's.
        if related.url.is_empty() || related.url == path {
            return Ok(path);
        }
        return Err(HandlerError {
            event_type: "v2.core.event".to_owned(),
            reason: format!(
                "related_object.url {:?} is not the path of {}: not fetched",
                shown(&related.url),
                related.id
            ),
        });
    }
    Err(HandlerError {
        event_type: "v2.core.event".to_owned(),
        reason: format!(
            "related_object {{type {:?}, id {:?}}} is not a v2 Account with a Stripe id: not fetched",
            shown(&related.object_type),
            shown(&related.id)
        ),
    })
}

/// The API path of a thin event's full event, or a permanent error when
/// its id does not have Stripe's shape.
pub fn v2_event_path(id: &str) -> Result<String, HandlerError> {
    if is_stripe_id(id, "evt") {
        return Ok(format!("/v2/core/events/{id}"));
    }
    Err(HandlerError {
        event_type: "v2.core.event".to_owned(),
        reason: format!(
            "event id {:?} is not a Stripe event id: not fetched",
            id.chars().take(64).collect::<String>()
        ),
    })
}

/// The query that fetches a v2 Account with what the mapping reads.
pub fn v2_account_query() -> Vec<(String, String)> {
    V2_ACCOUNT_INCLUDE
        .iter()
        .map(|v| ("include".to_owned(), (*v).to_owned()))
        .collect()
}

/// The related object a full v2 event names.
pub fn related_object_of(event: &[u8]) -> Result<Option<RelatedObject>, HandlerError> {
    #[derive(Deserialize)]
    struct Full {
        #[serde(default)]
        related_object: Option<RelatedObject>,
    }
    serde_json::from_slice::<Full>(event)
        .map(|f| f.related_object)
        .map_err(|e| HandlerError {
            event_type: "v2.core.event".to_owned(),
            reason: format!("fetched event: {e}"),
        })
}

#[derive(Deserialize)]
struct V2Account {
    id: String,
    #[serde(default)]
    configuration: Option<V2Configuration>,
    #[serde(default)]
    requirements: Option<V2Requirements>,
}

#[derive(Deserialize, Default)]
struct V2Configuration {
    #[serde(default)]
    merchant: Option<V2Capabilities>,
    #[serde(default)]
    recipient: Option<V2Capabilities>,
}

#[derive(Deserialize, Default)]
struct V2Capabilities {
    #[serde(default)]
    capabilities: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
struct V2Requirements {
    #[serde(default)]
    entries: Option<Vec<V2Entry>>,
}

#[derive(Deserialize)]
struct V2Entry {
    #[serde(default)]
    awaiting_action_from: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    minimum_deadline: Option<V2Deadline>,
}

#[derive(Deserialize)]
struct V2Deadline {
    #[serde(default)]
    status: Option<String>,
}

/// A capability inside a configuration's `capabilities`, by its path
/// (`card_payments`, `stripe_balance.payouts`).
struct Capability<'a>(Option<&'a serde_json::Value>);

impl<'a> Capability<'a> {
    fn at(config: Option<&'a V2Capabilities>, path: &str) -> Self {
        let mut v = config.and_then(|c| c.capabilities.as_ref());
        for part in path.split('.') {
            v = v.and_then(|x| x.get(part));
        }
        Self(v)
    }
    fn active(&self) -> bool {
        self.status() == Some("active")
    }
    fn status(&self) -> Option<&'a str> {
        self.0
            .and_then(|c| c.get("status"))
            .and_then(|s| s.as_str())
    }
    /// The first `status_details[].code`, when the capability is not active.
    fn reason(&self) -> Option<&'a str> {
        if self.active() {
            return None;
        }
        self.0
            .and_then(|c| c.get("status_details"))
            .and_then(|d| d.as_array())
            .and_then(|d| d.first())
            .and_then(|d| d.get("code"))
            .and_then(|c| c.as_str())
    }
}

/// Maps a v2 Account (`GET /v2/core/accounts/{id}?include=…`) onto the
/// provider table, the way `account.updated` maps a v1 Account:
///
/// | provider field | from the v2 Account |
/// | --- | --- |
/// | `chargesEnabled` | `configuration.merchant.capabilities.card_payments.status` is `active` |
/// | `payoutsEnabled` | `stripe_balance.payouts.status` is `active` on the merchant or the recipient configuration |
/// | `detailsSubmitted` | no requirement entry awaits the `user` with `minimum_deadline.status` `currently_due` or `past_due` |
/// | `requirementsCurrentlyDue` | `description` of each entry whose `minimum_deadline.status` is `currently_due` or `past_due` |
/// | `disabledReason` | the first `status_details[].code` of `card_payments` when it is not active, else of the payouts capability, as v1 spells it (`requirements_past_due` → `requirements.past_due`, `requirements_pending_verification` → `requirements.pending_verification`; other codes as they are) |
pub fn v2_account(
    account: &[u8],
    event_id: &str,
    created: i64,
) -> Result<Projection, HandlerError> {
    let a: V2Account = serde_json::from_slice(account).map_err(|e| HandlerError {
        event_type: "v2.core.account".to_owned(),
        reason: format!("fetched account: {e}"),
    })?;
    let config = a.configuration.unwrap_or_default();
    let (merchant, recipient) = (config.merchant.as_ref(), config.recipient.as_ref());
    let cards = Capability::at(merchant, "card_payments");
    let payouts = [
        Capability::at(merchant, "stripe_balance.payouts"),
        Capability::at(recipient, "stripe_balance.payouts"),
    ];
    let entries: Vec<V2Entry> = a.requirements.and_then(|r| r.entries).unwrap_or_default();
    let now_due = |e: &&V2Entry| {
        matches!(
            e.minimum_deadline
                .as_ref()
                .and_then(|d| d.status.as_deref()),
            Some("currently_due" | "past_due")
        )
    };
    let payouts_enabled = payouts.iter().any(Capability::active);
    let disabled = cards
        .reason()
        .or_else(|| payouts.iter().find_map(Capability::reason));
    Ok(Projection::Provider(ProviderRecord {
        stripe_account_id: a.id,
        charges_enabled: cards.active(),
        payouts_enabled,
        details_submitted: !entries
            .iter()
            .filter(now_due)
            .any(|e| e.awaiting_action_from.as_deref() == Some("user")),
        requirements_currently_due: entries
            .iter()
            .filter(now_due)
            .filter_map(|e| e.description.clone())
            .collect(),
        disabled_reason: disabled.map(v1_disabled_reason),
        last_event_id: event_id.to_owned(),
        last_event_created: created,
        last_event_rank: RANK_CURRENT,
        deauthorized_at: None,
    }))
}

/// A v2 capability status code as v1's `requirements.disabled_reason`
/// spells it.
fn v1_disabled_reason(code: &str) -> String {
    match code {
        "requirements_past_due" => "requirements.past_due".to_owned(),
        "requirements_pending_verification" => "requirements.pending_verification".to_owned(),
        other => other.to_owned(),
    }
}

/// The v1 API path of the object a projection is about: the object whose
/// current state settles a same-second tie.
pub fn current_path(p: &Projection) -> String {
    use crate::records::ObjectType;
    match p {
        Projection::Provider(a) => format!("/v1/accounts/{}", a.stripe_account_id),
        Projection::Object(o) => {
            let collection = match o.object_type {
                ObjectType::PaymentIntent => "payment_intents",
                ObjectType::Payout => "payouts",
                ObjectType::Dispute => "disputes",
            };
            format!("/v1/{collection}/{}", o.object_id)
        }
    }
}

/// Stripe's current state of the object (`object`, as fetched from
/// [`current_path`]) projected by the event's own handler, as if the event
/// had carried it: the event's id, type, `created` and account, marked
/// [`RANK_CURRENT`].
pub fn current(
    handler: Handler,
    env: &Envelope,
    object: &[u8],
) -> Result<Projection, HandlerError> {
    let object: &serde_json::value::RawValue =
        serde_json::from_slice(object).map_err(|e| HandlerError {
            event_type: env.event_type.clone(),
            reason: format!("fetched object: {e}"),
        })?;
    let shell = serde_json::json!({
        "id": env.id.as_str(),
        "type": env.event_type,
        "created": env.created,
        "account": env.account,
        "data": { "object": object },
    });
    let bytes = serde_json::to_vec(&shell).map_err(|e| HandlerError {
        event_type: env.event_type.clone(),
        reason: e.to_string(),
    })?;
    handler(&bytes).map(Projection::as_current)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(path: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/../../testdata/{path}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("testdata")
    }

    #[test]
    fn account_types_are_told_from_their_neighbours() {
        for t in [
            "v2.core.account.updated",
            "v2.core.account.created",
            "v2.core.account[requirements].updated",
            "v2.core.account[configuration.merchant].capability_status_updated",
        ] {
            assert!(is_v2_account_type(t), "{t}");
        }
        for t in [
            "v2.core.account_link.returned",
            "v2.core.account_person.created",
            "v2.core.account.closed",
            "account.updated",
            "v2.core.event_destination.ping",
        ] {
            assert!(!is_v2_account_type(t), "{t}");
        }
    }

    #[test]
    fn the_fetch_path_comes_from_type_and_id_never_from_the_url() {
        let related = |object_type: &str, id: &str, url: &str| RelatedObject {
            id: id.to_owned(),
            object_type: object_type.to_owned(),
            url: url.to_owned(),
        };
        let path = related_account_path(&related(
            "v2.core.account",
            "acct_1SThinExample0001",
            "/v2/core/accounts/acct_1SThinExample0001",
        ))
        .expect("an account");
        assert_eq!(path, "/v2/core/accounts/acct_1SThinExample0001");
        for url in ["@127.0.0.1:18002/x", ":18002/x", "//other-host/x"] {
            let e =
                related_account_path(&related("v2.core.account", "acct_1S", url)).expect_err(url);
            assert!(e.reason.contains("is not the path of acct_1S"), "{e}");
        }
        for (t, id) in [
            ("v2.core.account", "acct_1@127.0.0.1:18002"),
            ("v2.core.account", "acct_../../x"),
            ("v2.core.account", "cus_1"),
            ("v2.core.account", "acct_"),
            ("v2.core.person", "acct_1"),
        ] {
            let e =
                related_account_path(&related(t, id, "/v2/core/accounts/acct_1")).expect_err(id);
            assert!(e.reason.contains("not fetched"), "{e}");
        }
        assert_eq!(
            v2_event_path("evt_test_65R1").expect("id"),
            "/v2/core/events/evt_test_65R1"
        );
        assert!(v2_event_path("evt_1/../../v1/balance").is_err());
        assert!(is_stripe_id("acct_1Nv0FGQ9RKHgCVdK", "acct"));
        assert!(!is_stripe_id("acct_1 x", "acct"));
    }

    #[test]
    fn a_thin_account_event_plans_a_fetch_of_its_related_object() {
        let env = Envelope::parse(&testdata("stripe-events/v2.core.account.updated.json"))
            .expect("thin event");
        match thin_plan(&env) {
            Some(ThinPlan::V2Account(o)) => {
                assert_eq!(o.url, "/v2/core/accounts/acct_1SThinExample0001")
            }
            other => panic!("{other:?}"),
        }
        let bare = Envelope::parse(br#"{"id":"evt_1","object":"v2.core.event","type":"v2.core.account.updated","created":"2025-12-02T11:30:00Z"}"#).expect("thin");
        assert_eq!(thin_plan(&bare), Some(ThinPlan::FetchEventFirst));
        let other = Envelope::parse(br#"{"id":"evt_1","object":"v2.core.event","type":"v1.billing.meter.error_report_triggered","created":"2025-12-02T11:30:00Z"}"#).expect("thin");
        assert_eq!(thin_plan(&other), Some(ThinPlan::NoHandler));
        let snapshot =
            Envelope::parse(&testdata("stripe-events/account.updated.json")).expect("event");
        assert_eq!(thin_plan(&snapshot), None);
    }

    #[test]
    fn a_v2_account_maps_onto_the_provider_table() {
        let p = v2_account(&testdata("stripe-v2/v2.core.account.json"), "evt_1", 7).expect("maps");
        let Projection::Provider(p) = p else {
            panic!("a provider")
        };
        assert_eq!(p.stripe_account_id, "acct_1SThinExample0001");
        assert!(!p.charges_enabled, "card_payments is restricted");
        assert!(
            !p.payouts_enabled,
            "payouts are pending on both configurations"
        );
        assert!(!p.details_submitted, "entries await the user");
        assert_eq!(
            p.requirements_currently_due,
            vec![
                "identity.business_details.registered_name",
                "configuration.recipient.default_outbound_destination"
            ]
        );
        assert_eq!(p.disabled_reason.as_deref(), Some("requirements.past_due"));
        assert_eq!(
            (
                p.last_event_id.as_str(),
                p.last_event_created,
                p.last_event_rank
            ),
            ("evt_1", 7, RANK_CURRENT)
        );

        let active = br#"{"id":"acct_2","object":"v2.core.account","configuration":{"merchant":{"applied":true,"capabilities":{"card_payments":{"status":"active","status_details":[]}}},"recipient":{"applied":true,"capabilities":{"stripe_balance":{"payouts":{"status":"active","status_details":[]}}}}},"requirements":{"entries":[{"awaiting_action_from":"user","description":"identity.individual.id_numbers","errors":[],"minimum_deadline":{"status":"eventually_due"},"requested_reasons":[]}]}}"#;
        let Projection::Provider(p) = v2_account(active, "evt_2", 8).expect("maps") else {
            panic!("a provider")
        };
        assert!(p.charges_enabled && p.payouts_enabled && p.details_submitted);
        assert!(p.requirements_currently_due.is_empty());
        assert_eq!(p.disabled_reason, None);
        // Nothing included: nothing enabled, nothing known to be due.
        let Projection::Provider(p) = v2_account(br#"{"id":"acct_3"}"#, "evt_3", 9).expect("maps")
        else {
            panic!("a provider")
        };
        assert!(!p.charges_enabled && !p.payouts_enabled && p.details_submitted);
    }

    #[test]
    fn current_state_goes_through_the_events_own_handler() {
        let env = Envelope::parse(&testdata("stripe-events/payout.updated.json")).expect("event");
        let (handler, _) = crate::handlers::registered("payout.updated").expect("handler");
        let p = current(handler, &env, &testdata("stripe-openapi/payout.json")).expect("projects");
        assert_eq!(p.rank(), RANK_CURRENT);
        assert_eq!(p.event_created(), env.created.expect("created"));
        assert_eq!(current_path(&p), format!("/v1/payouts/{}", p.key()));
        let Projection::Object(o) = p else {
            panic!("an object")
        };
        assert_eq!(o.last_event_id, env.id.as_str());
        assert_eq!(o.account, env.account);
    }
}
