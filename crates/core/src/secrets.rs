//! Webhook secrets and the Stripe API key rules.
//!
//! Secrets travel as [`SecretString`]; nothing here formats a secret value
//! into an error, a log line or `Debug` output.

use secrecy::{ExposeSecret, SecretString};

use crate::ports::PortError;
pub use crate::ports::{SecretSource, Versioned};
use crate::settings::AppEnv;

/// Whether a Stripe API key is `live` or `test`, from its prefix (never
/// the value); `None` for anything else.
pub fn key_mode(key: &SecretString) -> Option<&'static str> {
    let k = key.expose_secret();
    if k.starts_with("sk_live_") || k.starts_with("rk_live_") {
        Some("live")
    } else if k.starts_with("sk_test_") || k.starts_with("rk_test_") {
        Some("test")
    } else {
        None
    }
}

/// Why a secret setting cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Rule(#[from] SecretRuleError),
    #[error("cannot read secret {id} from Secrets Manager: {source}")]
    Read {
        id: String,
        #[source]
        source: PortError,
    },
}

/// Where a secret setting points: a Secrets Manager id wins over the plain
/// value. The one precedence rule for every secret setting.
#[derive(Debug, Clone, Copy)]
pub enum SecretSetting<'a> {
    Stored(&'a str),
    Plain(&'a SecretString),
    Unset,
}

impl<'a> SecretSetting<'a> {
    pub fn of(id: &'a Option<String>, plain: &'a Option<SecretString>) -> Self {
        match (id, plain) {
            (Some(id), _) => Self::Stored(id),
            (None, Some(v)) => Self::Plain(v),
            (None, None) => Self::Unset,
        }
    }

    /// Where the value comes from, for logs and `config check`.
    pub fn origin(self, plain_name: &str) -> String {
        match self {
            Self::Stored(id) => format!("from Secrets Manager {id}"),
            Self::Plain(_) => format!("from {plain_name}"),
            Self::Unset => "not set".to_owned(),
        }
    }

    /// The value, read from `source` when it is stored there.
    pub async fn value(
        self,
        source: &dyn SecretSource,
    ) -> Result<Option<SecretString>, ResolveError> {
        match self {
            Self::Stored(id) => source
                .fetch(id)
                .await
                .map(Some)
                .map_err(|e| ResolveError::Read {
                    id: id.to_owned(),
                    source: e,
                }),
            Self::Plain(v) => Ok(Some(v.clone())),
            Self::Unset => Ok(None),
        }
    }
}

/// The Stripe API key that wins, checked against the key-mode rule.
pub async fn api_key(
    env: AppEnv,
    setting: SecretSetting<'_>,
    source: &dyn SecretSource,
) -> Result<Option<SecretString>, ResolveError> {
    let key = setting.value(source).await?;
    if let Some(k) = &key {
        check_key_mode(env, k)?;
    }
    Ok(key)
}

/// The webhook secrets that win, parsed.
pub async fn webhook_secrets(
    setting: SecretSetting<'_>,
    source: &dyn SecretSource,
) -> Result<Vec<SecretString>, ResolveError> {
    match setting.value(source).await? {
        Some(v) => Ok(parse_webhook_secrets(&v)?),
        None => Err(SecretRuleError::NoWebhookSecret.into()),
    }
}

/// A settings rule that refuses to start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretRuleError {
    #[error("STRIPE_SECRET_KEY is a live key but APP_ENV is {0}: live keys are refused outside production")]
    LiveKeyOutsideProduction(&'static str),
    #[error("STRIPE_SECRET_KEY is a test key but APP_ENV is production: test keys are refused in production")]
    TestKeyInProduction,
    #[error("STRIPE_SECRET_KEY does not look like a Stripe secret or restricted key (sk_…/rk_…)")]
    UnrecognisedKey,
    #[error("webhook secret #{0} does not start with whsec_")]
    NotAWebhookSecret(usize),
    #[error("no webhook secret: set STRIPE_WEBHOOK_SECRET or STRIPE_WEBHOOK_SECRET_ID")]
    NoWebhookSecret,
}

/// Test keys only outside production, live keys only in production.
pub fn check_key_mode(env: AppEnv, key: &SecretString) -> Result<(), SecretRuleError> {
    let k = key.expose_secret();
    let live = k.starts_with("sk_live_") || k.starts_with("rk_live_");
    let test = k.starts_with("sk_test_") || k.starts_with("rk_test_");
    match (env, live, test) {
        (AppEnv::Production, true, _) | (AppEnv::Development, _, true) => Ok(()),
        (AppEnv::Development, true, _) => {
            Err(SecretRuleError::LiveKeyOutsideProduction(env.as_str()))
        }
        (AppEnv::Production, _, true) => Err(SecretRuleError::TestKeyInProduction),
        _ => Err(SecretRuleError::UnrecognisedKey),
    }
}

/// Parses webhook secrets from a setting or a Secrets Manager value: a plain
/// string, a comma-separated list (spaces around commas ignored), or JSON
/// `{"secrets": [...]}`. Every entry must start with `whsec_`.
pub fn parse_webhook_secrets(value: &SecretString) -> Result<Vec<SecretString>, SecretRuleError> {
    let raw = value.expose_secret().trim();
    let entries: Vec<String> = if raw.starts_with('{') {
        #[derive(serde::Deserialize)]
        struct Doc {
            secrets: Vec<String>,
        }
        match serde_json::from_str::<Doc>(raw) {
            Ok(doc) => doc.secrets,
            Err(_) => return Err(SecretRuleError::NotAWebhookSecret(1)),
        }
    } else {
        raw.split(',').map(|s| s.trim().to_owned()).collect()
    };
    let entries: Vec<String> = entries.into_iter().filter(|s| !s.is_empty()).collect();
    if entries.is_empty() {
        return Err(SecretRuleError::NoWebhookSecret);
    }
    entries
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            if s.starts_with("whsec_") {
                Ok(SecretString::from(s))
            } else {
                Err(SecretRuleError::NotAWebhookSecret(i + 1))
            }
        })
        .collect()
}

/// Shows a secret's kind without its value: `whsec_…` / `sk_test_…`.
pub fn mask(secret: &SecretString) -> String {
    let s = secret.expose_secret();
    let prefix = ["sk_live_", "rk_live_", "sk_test_", "rk_test_", "whsec_"]
        .into_iter()
        .find(|p| s.starts_with(p))
        .unwrap_or("");
    format!("{prefix}… ({} chars)", s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> SecretString {
        SecretString::from(v.to_owned())
    }

    #[test]
    fn key_mode_rules() {
        let dev = AppEnv::Development;
        let prod = AppEnv::Production;
        assert!(check_key_mode(dev, &s("sk_test_fake123")).is_ok());
        assert!(check_key_mode(dev, &s("rk_test_fake123")).is_ok());
        assert!(check_key_mode(prod, &s("sk_live_fake123")).is_ok());
        let e = check_key_mode(dev, &s("sk_live_fakeSECRETVALUE")).expect_err("refused");
        assert!(e
            .to_string()
            .contains("live keys are refused outside production"));
        assert!(!e.to_string().contains("fakeSECRETVALUE"));
        assert_eq!(
            check_key_mode(prod, &s("rk_test_fake")),
            Err(SecretRuleError::TestKeyInProduction)
        );
        assert_eq!(
            check_key_mode(prod, &s("pk_live_fake")),
            Err(SecretRuleError::UnrecognisedKey)
        );
    }

    #[test]
    fn webhook_secret_forms() {
        let one = parse_webhook_secrets(&s("whsec_test_a")).expect("one");
        assert_eq!(one.len(), 1);
        let two = parse_webhook_secrets(&s(" whsec_test_a , whsec_test_b ")).expect("two");
        assert_eq!(two[1].expose_secret(), "whsec_test_b");
        let json = parse_webhook_secrets(&s(r#"{"secrets":["whsec_test_a","whsec_test_c"]}"#))
            .expect("json");
        assert_eq!(json[1].expose_secret(), "whsec_test_c");
        assert_eq!(
            parse_webhook_secrets(&s("whsec_test_a,sk_test_oops")).map(|v| v.len()),
            Err(SecretRuleError::NotAWebhookSecret(2))
        );
        assert_eq!(
            parse_webhook_secrets(&s(" , ")).map(|v| v.len()),
            Err(SecretRuleError::NoWebhookSecret)
        );
    }

    #[test]
    fn mask_hides_the_value() {
        let m = mask(&s("whsec_test_supersecretvalue"));
        assert_eq!(m, "whsec_… (27 chars)");
    }
}
