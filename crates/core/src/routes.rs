//! The routes document: which event types go to which destination.
//!
//! A TOML document (`ROUTES_FILE`, or inline in `ROUTES`), an array of
//! `[[destination]]` tables:
//!
//! ```toml
//! [[destination]]
//! name = "billing"                  # unique: [a-z0-9_-], 1 to 64
//! kind = "http"                     # http | eventbridge | projections
//! events = ["invoice.*", "checkout.session.completed"]
//! url = "https://billing.internal/stripe"
//! signing_secret_id = "arn:aws:secretsmanager:…"   # or signing_secret = "whsec_…"
//! timeout_secs = 10                 # default 10
//! max_concurrency = 32              # default 32
//! retry_for = "24h"                 # default 24h
//! allow_http = false                # default false: https only
//!
//! [[destination]]
//! name = "bus"
//! kind = "eventbridge"
//! events = ["customer.*"]
//! bus = "payments"                  # a bus name or ARN
//! source = "hookline"               # default hookline
//! retry_for = "24h"                 # default 24h
//!
//! [[destination]]
//! name = "tables"
//! kind = "projections"
//! events = ["*"]
//! ```
//!
//! Without a document every enabled type goes to the built-in projections
//! ([`Routes::projections_only`]), today's behaviour. A document is checked
//! whole before anything starts: the first problem is reported with its
//! line.

use std::collections::BTreeSet;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use toml::Spanned;

use crate::settings::{AppEnv, EventFilter};

/// The name of the built-in destination when no document is given.
pub const PROJECTIONS: &str = "projections";

/// Defaults of an `http` destination.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_CONCURRENCY: usize = 32;
pub const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(24 * 3600);

/// A checked routes document.
#[derive(Debug, Clone)]
pub struct Routes {
    destinations: Vec<Destination>,
}

/// One destination of the document.
#[derive(Debug, Clone)]
pub struct Destination {
    pub name: String,
    /// Exact types, `prefix.*` globs, or `*`.
    pub events: Vec<String>,
    pub kind: Kind,
}

/// What a destination is.
#[derive(Debug, Clone)]
pub enum Kind {
    /// The built-in tables (the six handlers).
    Projections,
    /// A service of the team's, over HTTP.
    Http(Http),
    /// An Amazon EventBridge bus of the team's.
    EventBridge(EventBridge),
    /// A handler of the team's, in its own worker binary (registered in
    /// code, never written in the document).
    Handler,
}

/// An `http` destination's settings.
#[derive(Debug, Clone)]
pub struct Http {
    pub url: String,
    pub signing: Signing,
    pub timeout: Duration,
    pub max_concurrency: usize,
    /// How long failures are retried before the event is dead-lettered.
    pub retry_for: Duration,
}

/// The default `Source` of the entries put on an `eventbridge` bus.
pub const DEFAULT_EVENTBRIDGE_SOURCE: &str = "hookline";

/// An `eventbridge` destination's settings.
#[derive(Debug, Clone)]
pub struct EventBridge {
    /// The bus's name or ARN (`EventBusName` of each entry).
    pub bus: String,
    /// The entries' `Source`.
    pub source: String,
    /// How long failures are retried before the event is dead-lettered.
    pub retry_for: Duration,
}

/// Where the destination's own signing secret comes from.
#[derive(Debug, Clone)]
pub enum Signing {
    /// Written in the document (`whsec_…`; not in production).
    Inline(SecretString),
    /// A Secrets Manager secret id or ARN (`signing_secret_id`).
    SecretId(String),
}

/// Why a routes document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
pub struct RoutesError {
    /// 1-based line of the document the problem is on, when known.
    pub line: Option<usize>,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocument {
    #[serde(default)]
    destination: Vec<Spanned<RawDestination>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDestination {
    name: Spanned<String>,
    kind: Spanned<String>,
    events: Spanned<Vec<String>>,
    url: Option<Spanned<String>>,
    signing_secret: Option<Spanned<String>>,
    signing_secret_id: Option<Spanned<String>>,
    timeout_secs: Option<Spanned<u64>>,
    max_concurrency: Option<Spanned<u64>>,
    allow_http: Option<bool>,
    retry_for: Option<Spanned<String>>,
    bus: Option<Spanned<String>>,
    source: Option<Spanned<String>>,
}

impl Routes {
    /// Today's behaviour without a document: every type to the projections.
    pub fn projections_only() -> Self {
        Self {
            destinations: vec![Destination {
                name: PROJECTIONS.to_owned(),
                events: vec!["*".to_owned()],
                kind: Kind::Projections,
            }],
        }
    }

    /// Parses and checks a document against the enabled types and the
    /// environment (an inline signing secret is refused in production).
    pub fn parse(text: &str, enabled: &EventFilter, env: AppEnv) -> Result<Self, RoutesError> {
        let at = |span: std::ops::Range<usize>| Some(line_of(text, span.start));
        let raw: RawDocument = toml::from_str(text).map_err(|e| RoutesError {
            line: e.span().and_then(&at),
            message: e.message().trim().to_owned(),
        })?;
        if raw.destination.is_empty() {
            return Err(RoutesError {
                line: None,
                message: "the document names no [[destination]]".to_owned(),
            });
        }
        let mut names = BTreeSet::new();
        let mut destinations = Vec::new();
        for d in raw.destination {
            let span = d.span();
            let d = d.into_inner();
            let err = |span: std::ops::Range<usize>, message: String| RoutesError {
                line: at(span),
                message,
            };
            let name = d.name.get_ref();
            if !valid_name(name) {
                return Err(err(
                    d.name.span(),
                    format!("destination name {name:?}: use 1 to 64 of a-z, 0-9, _ and -"),
                ));
            }
            if !names.insert(name.clone()) {
                return Err(err(
                    d.name.span(),
                    format!("duplicate destination name {name:?}"),
                ));
            }
            if d.events.get_ref().is_empty() {
                return Err(err(
                    d.events.span(),
                    format!("destination {name:?} lists no events"),
                ));
            }
            if let Some(bad) = d.events.get_ref().iter().find(|p| !valid_pattern(p)) {
                return Err(err(
                    d.events.span(),
                    format!("destination {name:?}: {bad:?} is neither an event type nor a glob ending in .* or *"),
                ));
            }
            let kind = d.kind.get_ref().as_str();
            if !KINDS.contains(&kind) {
                return Err(err(
                    d.kind.span(),
                    format!(
                        "destination {name:?}: unknown kind {kind:?} (known: {})",
                        KINDS.join(", ")
                    ),
                ));
            }
            if let Some(key) = foreign_key(&d, kind) {
                return Err(err(
                    span,
                    format!("destination {name:?}: {key} is not a key of kind {kind}"),
                ));
            }
            let retry_for = retry_for(&d, name, &err)?;
            let kind = match kind {
                "http" => Kind::Http(http(&d, name, env, retry_for, &err)?),
                "eventbridge" => Kind::EventBridge(eventbridge(&d, name, retry_for, &err)?),
                _ => Kind::Projections,
            };
            destinations.push(Destination {
                name: name.clone(),
                events: d.events.into_inner(),
                kind,
            });
        }
        let routes = Self { destinations };
        if let Some(uncovered) = routes.uncovered(enabled) {
            return Err(RoutesError {
                line: None,
                message: format!(
                    "ENABLED_EVENTS enables {uncovered:?} but no destination takes it: route it, or narrow ENABLED_EVENTS"
                ),
            });
        }
        Ok(routes)
    }

    /// Adds a handler registered in code for `event_type` (a custom
    /// worker binary), as the destination `name`.
    pub fn add_handler(&mut self, name: &str, event_type: &str) {
        self.destinations.push(Destination {
            name: name.to_owned(),
            events: vec![event_type.to_owned()],
            kind: Kind::Handler,
        });
    }

    pub fn destinations(&self) -> &[Destination] {
        &self.destinations
    }

    /// The destinations an event type goes to, in document order.
    pub fn for_type<'a>(&'a self, event_type: &'a str) -> impl Iterator<Item = &'a Destination> {
        self.destinations
            .iter()
            .filter(move |d| d.events.iter().any(|p| matches(p, event_type)))
    }

    /// Whether every destination is the projections: the worker's path of
    /// before routes, unchanged.
    pub fn is_projections_only(&self) -> bool {
        self.destinations
            .iter()
            .all(|d| matches!(d.kind, Kind::Projections))
    }

    /// An enabled type or glob no destination takes.
    fn uncovered(&self, enabled: &EventFilter) -> Option<String> {
        let patterns: Vec<&str> = self
            .destinations
            .iter()
            .flat_map(|d| d.events.iter().map(String::as_str))
            .collect();
        match enabled {
            EventFilter::All => (!patterns.contains(&"*")).then(|| "*".to_owned()),
            EventFilter::Only(set) => set
                .iter()
                .find(|e| !patterns.iter().any(|p| covers(p, e)))
                .cloned(),
        }
    }
}

/// The kinds a document may name.
const KINDS: &[&str] = &["http", "eventbridge", "projections"];

type ErrAt<'a> = &'a dyn Fn(std::ops::Range<usize>, String) -> RoutesError;

fn http(
    d: &RawDestination,
    name: &str,
    env: AppEnv,
    retry_for: Duration,
    err: ErrAt<'_>,
) -> Result<Http, RoutesError> {
    let Some(url) = &d.url else {
        return Err(err(
            d.name.span(),
            format!("destination {name:?} of kind http has no url"),
        ));
    };
    let parsed = url::Url::parse(url.get_ref())
        .map_err(|e| err(url.span(), format!("destination {name:?}: bad url: {e}")))?;
    match parsed.scheme() {
        "https" => {}
        "http" if d.allow_http == Some(true) => {}
        "http" => {
            return Err(err(
                url.span(),
                format!("destination {name:?}: the url must be https (write allow_http = true for this destination to allow http)"),
            ))
        }
        other => {
            return Err(err(
                url.span(),
                format!("destination {name:?}: the url's scheme {other:?} is not https"),
            ))
        }
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(err(
            url.span(),
            format!("destination {name:?}: the url has no host"),
        ));
    }
    let signing = match (&d.signing_secret, &d.signing_secret_id) {
        (Some(_), Some(id)) => {
            return Err(err(
                id.span(),
                format!("destination {name:?}: give signing_secret or signing_secret_id, not both"),
            ))
        }
        (None, None) => {
            return Err(err(
                d.name.span(),
                format!(
                "destination {name:?} of kind http has no signing_secret_id (or signing_secret)"
            ),
            ))
        }
        (None, Some(id)) => Signing::SecretId(id.get_ref().clone()),
        (Some(secret), None) => {
            if !secret.get_ref().starts_with("whsec_") {
                return Err(err(
                    secret.span(),
                    format!("destination {name:?}: signing_secret must start with whsec_"),
                ));
            }
            if env == AppEnv::Production {
                return Err(err(
                    secret.span(),
                    format!("destination {name:?}: in production the signing secret comes from Secrets Manager (signing_secret_id)"),
                ));
            }
            Signing::Inline(SecretString::from(secret.get_ref().clone()))
        }
    };
    let timeout = match &d.timeout_secs {
        Some(t) if !(1..=300).contains(t.get_ref()) => {
            return Err(err(
                t.span(),
                format!("destination {name:?}: timeout_secs must be 1 to 300"),
            ))
        }
        Some(t) => Duration::from_secs(*t.get_ref()),
        None => DEFAULT_TIMEOUT,
    };
    let max_concurrency = match &d.max_concurrency {
        Some(c) if !(1..=1024).contains(c.get_ref()) => {
            return Err(err(
                c.span(),
                format!("destination {name:?}: max_concurrency must be 1 to 1024"),
            ))
        }
        Some(c) => usize::try_from(*c.get_ref()).unwrap_or(DEFAULT_MAX_CONCURRENCY),
        None => DEFAULT_MAX_CONCURRENCY,
    };
    Ok(Http {
        url: url.get_ref().clone(),
        signing,
        timeout,
        max_concurrency,
        retry_for,
    })
}

fn retry_for(d: &RawDestination, name: &str, err: ErrAt<'_>) -> Result<Duration, RoutesError> {
    let Some(r) = &d.retry_for else {
        return Ok(DEFAULT_RETRY_FOR);
    };
    humantime::parse_duration(r.get_ref())
        .ok()
        .filter(|d| *d >= Duration::from_secs(1))
        .ok_or_else(|| {
            err(
                r.span(),
                format!(
                    "destination {name:?}: retry_for {:?} is not a duration such as \"24h\" or \"90m\"",
                    r.get_ref()
                ),
            )
        })
}

fn eventbridge(
    d: &RawDestination,
    name: &str,
    retry_for: Duration,
    err: ErrAt<'_>,
) -> Result<EventBridge, RoutesError> {
    let Some(bus) = &d.bus else {
        return Err(err(
            d.name.span(),
            format!("destination {name:?} of kind eventbridge has no bus"),
        ));
    };
    if !valid_bus(bus.get_ref()) {
        return Err(err(
            bus.span(),
            format!("destination {name:?}: bus {:?} is neither a bus name (1 to 256 of A-Z, a-z, 0-9, . _ - /) nor an event-bus ARN", bus.get_ref()),
        ));
    }
    let source = match &d.source {
        Some(s) => {
            let v = s.get_ref();
            if v.is_empty() || v.len() > 256 || v.starts_with("aws.") {
                return Err(err(
                    s.span(),
                    format!("destination {name:?}: source must be 1 to 256 characters and may not start with \"aws.\" (reserved for AWS services)"),
                ));
            }
            v.clone()
        }
        None => DEFAULT_EVENTBRIDGE_SOURCE.to_owned(),
    };
    Ok(EventBridge {
        bus: bus.get_ref().clone(),
        source,
        retry_for,
    })
}

/// A bus name as EventBridge allows it, or an event-bus ARN.
fn valid_bus(bus: &str) -> bool {
    let name = match bus.strip_prefix("arn:") {
        Some(rest) => {
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            match parts.as_slice() {
                [_, "events", _, _, resource] => match resource.strip_prefix("event-bus/") {
                    Some(n) => n,
                    None => return false,
                },
                _ => return false,
            }
        }
        None => bus,
    };
    (1..=256).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
}

/// The first key present that `kind` does not take.
fn foreign_key(d: &RawDestination, kind: &str) -> Option<&'static str> {
    let http = kind == "http";
    let eventbridge = kind == "eventbridge";
    [
        ("url", d.url.is_some(), http),
        ("signing_secret", d.signing_secret.is_some(), http),
        ("signing_secret_id", d.signing_secret_id.is_some(), http),
        ("timeout_secs", d.timeout_secs.is_some(), http),
        ("max_concurrency", d.max_concurrency.is_some(), http),
        ("allow_http", d.allow_http.is_some(), http),
        ("retry_for", d.retry_for.is_some(), http || eventbridge),
        ("bus", d.bus.is_some(), eventbridge),
        ("source", d.source.is_some(), eventbridge),
    ]
    .into_iter()
    .find_map(|(k, present, allowed)| (present && !allowed).then_some(k))
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(0, |before| before.matches('\n').count())
        + 1
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn valid_pattern(p: &str) -> bool {
    if p == "*" {
        return true;
    }
    let body = p.strip_suffix(".*").unwrap_or(p);
    !body.is_empty()
        && !body.contains('*')
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._[]".contains(&b))
}

/// Whether a destination pattern takes an event type.
pub fn matches(pattern: &str, event_type: &str) -> bool {
    pattern == "*"
        || pattern == event_type
        || pattern
            .strip_suffix('*')
            .is_some_and(|prefix| prefix.ends_with('.') && event_type.starts_with(prefix))
}

/// Whether a destination pattern takes everything an enabled pattern
/// enables.
fn covers(pattern: &str, enabled: &str) -> bool {
    match enabled.strip_suffix('*') {
        // An enabled glob: the pattern's prefix must include its prefix.
        Some(prefix) => {
            pattern == "*"
                || pattern
                    .strip_suffix('*')
                    .is_some_and(|p| prefix.starts_with(p))
        }
        None => matches(pattern, enabled),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    const DOC: &str = r#"
[[destination]]
name = "billing"
kind = "http"
events = ["invoice.*", "checkout.session.completed"]
url = "https://billing.example/stripe"
signing_secret = "whsec_test_destinationBilling"
timeout_secs = 5
retry_for = "2h"

[[destination]]
name = "tables"
kind = "projections"
events = ["payment_intent.*", "account.updated"]
"#;

    fn only(types: &str) -> EventFilter {
        types.parse().expect("filter")
    }

    fn refused(doc: &str) -> RoutesError {
        Routes::parse(doc, &only("invoice.paid"), AppEnv::Development).expect_err("refused")
    }

    #[test]
    fn a_document_routes_types_to_destinations() {
        let enabled = only("invoice.paid,checkout.session.completed,payment_intent.succeeded");
        let routes = Routes::parse(DOC, &enabled, AppEnv::Development).expect("valid");
        let names = |t| {
            routes
                .for_type(t)
                .map(|d| d.name.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(names("invoice.paid"), ["billing"]);
        assert_eq!(names("checkout.session.completed"), ["billing"]);
        assert_eq!(names("payment_intent.succeeded"), ["tables"]);
        assert!(names("payout.paid").is_empty());
        let Kind::Http(h) = &routes.destinations()[0].kind else {
            panic!("http")
        };
        assert_eq!(h.timeout, Duration::from_secs(5));
        assert_eq!(h.retry_for, Duration::from_secs(7200));
        assert_eq!(h.max_concurrency, DEFAULT_MAX_CONCURRENCY);
        let Signing::Inline(s) = &h.signing else {
            panic!("inline")
        };
        assert_eq!(s.expose_secret(), "whsec_test_destinationBilling");
        assert!(!format!("{routes:?}").contains("destinationBilling"));
        assert!(!routes.is_projections_only());
        assert!(Routes::projections_only().is_projections_only());
    }

    #[test]
    fn each_problem_is_named_with_its_line() {
        let dup = "[[destination]]\nname = \"a\"\nkind = \"projections\"\nevents = [\"*\"]\n\n[[destination]]\nname = \"a\"\nkind = \"projections\"\nevents = [\"*\"]\n";
        let e = refused(dup);
        assert_eq!(e.line, Some(7), "{e}");
        assert!(
            e.to_string().contains("duplicate destination name \"a\""),
            "{e}"
        );

        let e = refused("[[destination]]\nname = \"a\"\nkind = \"sns\"\nevents = [\"*\"]\n");
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("unknown kind \"sns\""), "{e}");

        let e = refused("[[destination]]\nname = \"a\"\nkind = \"http\"\nevents = [\"*\"]\nurl = \"http://x.example/\"\nsigning_secret = \"whsec_test_x\"\n");
        assert_eq!(e.line, Some(5));
        assert!(e.message.contains("must be https"), "{e}");

        let e = refused("[[destination]]\nname = \"a\"\nkind = \"http\"\nevents = [\"*\"]\nurl = \"https://\"\nsigning_secret = \"whsec_test_x\"\n");
        assert!(e.message.contains("bad url"), "{e}");

        let e = refused("[[destination]]\nname = \"a\"\nkind = \"projections\"\nevents = [\"*\"]\nurl_typo = 1\n");
        assert!(e.message.contains("unknown field `url_typo`"), "{e}");
        assert!(e.line.is_some());

        let e = refused(
            "[[destination]]\nname = \"a\"\nkind = \"projections\"\nevents = [\"payout.*\"]\n",
        );
        assert_eq!(e.line, None);
        assert!(e.message.contains("\"invoice.paid\""), "{e}");

        let e =
            refused("[[destination]]\nname = \"A b\"\nkind = \"projections\"\nevents = [\"*\"]\n");
        assert!(e.message.contains("destination name"), "{e}");

        let e = refused("[[destination]]\nname = \"a\"\nkind = \"http\"\nevents = [\"*\"]\nurl = \"https://x.example/\"\n");
        assert!(e.message.contains("signing_secret_id"), "{e}");

        let e = refused("[[destination]]\nname = \"a\"\nkind = \"http\"\nevents = [\"*\"]\nurl = \"https://x.example/\"\nsigning_secret = \"whsec_test_x\"\nretry_for = \"soon\"\n");
        assert_eq!(e.line, Some(7));

        let e = refused("name = ");
        assert_eq!(e.line, Some(1), "{e}");
    }

    #[test]
    fn production_takes_signing_secrets_from_secrets_manager_only() {
        let doc = "[[destination]]\nname = \"a\"\nkind = \"http\"\nevents = [\"*\"]\nurl = \"https://x.example/\"\nsigning_secret = \"whsec_test_x\"\n";
        let e = Routes::parse(doc, &EventFilter::All, AppEnv::Production).expect_err("refused");
        assert!(e.message.contains("Secrets Manager"), "{e}");
        let by_id = doc.replace(
            "signing_secret = \"whsec_test_x\"",
            "signing_secret_id = \"hookline/dest\"",
        );
        let routes = Routes::parse(&by_id, &EventFilter::All, AppEnv::Production).expect("valid");
        assert!(
            matches!(&routes.destinations()[0].kind, Kind::Http(h) if matches!(&h.signing, Signing::SecretId(id) if id == "hookline/dest"))
        );
        let http = doc.replace("https://", "http://") + "allow_http = true\n";
        assert!(Routes::parse(&http, &EventFilter::All, AppEnv::Development).is_ok());
    }

    #[test]
    fn enabled_globs_need_a_destination_that_covers_them() {
        let doc = |events: &str| {
            format!("[[destination]]\nname = \"a\"\nkind = \"projections\"\nevents = [{events}]\n")
        };
        let ok = |events: &str, enabled: &str| {
            Routes::parse(&doc(events), &only(enabled), AppEnv::Development).is_ok()
        };
        assert!(ok("\"*\"", "*"));
        assert!(!ok("\"invoice.*\"", "*"));
        assert!(ok("\"v2.*\"", "v2.core.*"));
        assert!(!ok("\"v2.core.account.updated\"", "v2.core.*"));
        assert!(ok("\"invoice.*\"", "invoice.paid,invoice.created"));
    }

    #[test]
    fn an_eventbridge_destination_names_its_bus() {
        let doc = |extra: &str| {
            format!("[[destination]]\nname = \"bus\"\nkind = \"eventbridge\"\nevents = [\"*\"]\n{extra}")
        };
        let parse = |extra: &str| Routes::parse(&doc(extra), &EventFilter::All, AppEnv::Production);
        let routes = parse("bus = \"payments\"\n").expect("valid");
        let Kind::EventBridge(eb) = &routes.destinations()[0].kind else {
            panic!("eventbridge")
        };
        assert_eq!(
            (eb.bus.as_str(), eb.source.as_str(), eb.retry_for),
            ("payments", "hookline", DEFAULT_RETRY_FOR)
        );
        let routes = parse("bus = \"arn:aws:events:eu-west-1:123456789012:event-bus/payments\"\nsource = \"com.example.stripe\"\nretry_for = \"1h\"\n").expect("valid");
        let Kind::EventBridge(eb) = &routes.destinations()[0].kind else {
            panic!("eventbridge")
        };
        assert_eq!(eb.source, "com.example.stripe");
        assert_eq!(eb.retry_for, Duration::from_secs(3600));

        let e = parse("").expect_err("no bus");
        assert!(e.message.contains("has no bus"), "{e}");
        let e = parse("bus = \"pay ments\"\n").expect_err("bad bus");
        assert_eq!(e.line, Some(5));
        let e = parse("bus = \"arn:aws:sqs:us-east-1:1:q\"\n").expect_err("not a bus arn");
        assert!(e.message.contains("event-bus ARN"), "{e}");
        let e = parse("bus = \"b\"\nsource = \"aws.stripe\"\n").expect_err("reserved");
        assert!(e.message.contains("aws."), "{e}");
        let e = parse("bus = \"b\"\nurl = \"https://x.example/\"\n").expect_err("http key");
        assert!(
            e.message.contains("url is not a key of kind eventbridge"),
            "{e}"
        );
        let e = refused("[[destination]]\nname = \"a\"\nkind = \"projections\"\nevents = [\"*\"]\nbus = \"b\"\n");
        assert!(
            e.message.contains("bus is not a key of kind projections"),
            "{e}"
        );
    }

    #[test]
    fn patterns_match_by_prefix_at_a_dot() {
        assert!(matches("invoice.*", "invoice.paid"));
        assert!(!matches("invoice.*", "invoiceitem.created"));
        assert!(matches("*", "anything"));
        assert!(!matches("invoice.paid", "invoice.paid2"));
    }
}
