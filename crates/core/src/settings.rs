//! The domain's settings values: the environment and which event types are
//! processed. How they are read (flags and environment variables) lives in
//! `hookline-settings`, with the binaries.

use std::collections::BTreeSet;

/// Event types processed when `ENABLED_EVENTS` is not set.
pub const DEFAULT_ENABLED_EVENTS: [&str; 7] = [
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "account.updated",
    "charge.dispute.created",
    "payout.created",
    "payout.updated",
    "account.application.deauthorized",
];

/// `APP_ENV`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Production,
}

impl AppEnv {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Production => "production",
        }
    }
    /// Whether an event's `livemode` belongs in this environment.
    pub fn accepts_livemode(self, livemode: bool) -> bool {
        livemode == (self == Self::Production)
    }
}

impl std::str::FromStr for AppEnv {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "development" => Ok(Self::Development),
            "production" => Ok(Self::Production),
            other => Err(format!(
                "{other:?} is not an environment: development or production"
            )),
        }
    }
}

impl std::fmt::Display for AppEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `ENABLED_EVENTS`: which event types are processed: exact types, or a
/// prefix ending in `.*` (`v2.core.*`, `invoice.*`), or `*` for all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventFilter {
    All,
    Only(BTreeSet<String>),
}

impl EventFilter {
    pub fn allows(&self, event_type: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(set) => {
                set.contains(event_type)
                    || set.iter().any(|item| {
                        item.strip_suffix('*').is_some_and(|prefix| {
                            prefix.ends_with('.') && event_type.starts_with(prefix)
                        })
                    })
            }
        }
    }
}

impl Default for EventFilter {
    fn default() -> Self {
        Self::Only(
            DEFAULT_ENABLED_EVENTS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        )
    }
}

impl std::str::FromStr for EventFilter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let items: BTreeSet<String> = s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if items.contains("*") {
            return Ok(Self::All);
        }
        if items.is_empty() {
            return Err("ENABLED_EVENTS lists no event type (use * for all)".to_owned());
        }
        Ok(Self::Only(items))
    }
}

impl std::fmt::Display for EventFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::All => f.write_str("*"),
            Self::Only(set) => {
                let v: Vec<&str> = set.iter().map(String::as_str).collect();
                f.write_str(&v.join(","))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_filter_parses() {
        let all: EventFilter = "payout.created, *".parse().expect("parses");
        assert_eq!(all, EventFilter::All);
        let some: EventFilter = " payout.created ,account.updated".parse().expect("parses");
        assert!(some.allows("account.updated"));
        assert!(!some.allows("payout.updated"));
        assert!(" , ".parse::<EventFilter>().is_err());
        assert!(EventFilter::default().allows("charge.dispute.created"));
    }

    #[test]
    fn app_env_parses() {
        assert_eq!("production".parse::<AppEnv>(), Ok(AppEnv::Production));
        assert!("staging".parse::<AppEnv>().is_err());
    }

    #[test]
    fn livemode_matches_env() {
        assert!(AppEnv::Development.accepts_livemode(false));
        assert!(!AppEnv::Development.accepts_livemode(true));
        assert!(AppEnv::Production.accepts_livemode(true));
        assert!(!AppEnv::Production.accepts_livemode(false));
    }
}
