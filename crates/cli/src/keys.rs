//! `hookline keys status`: which version of the webhook secret and the
//! Stripe API key is current in Secrets Manager, which version each running
//! service last loaded (read from its `/metrics`, never a value), whether
//! the key is live or test, and whether Stripe accepts it.

use std::process::ExitCode;
use std::time::Duration;

use hookline_core::clock::rfc3339;
use hookline_core::loaded_secrets::{self, Loaded};
use hookline_core::ports::ErrorKind;
use hookline_core::secrets::{key_mode, parse_webhook_secrets, SecretSetting};
use hookline_settings::WebhookSecretSettings;

use crate::opts::BackendOpts;

/// `hookline keys status` arguments.
#[derive(Debug, clap::Args)]
pub struct KeysStatusArgs {
    /// A running service's base URL (the ingress's BIND_ADDR, a worker's METRICS_ADDR), whose /metrics tells what it loaded; repeat for each task.
    #[arg(long = "service", env = "HOOKLINE_SERVICES", value_delimiter = ',')]
    pub services: Vec<String>,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub webhook: WebhookSecretSettings,
    #[command(flatten)]
    pub backend: BackendOpts,
}

/// A secret as it is now where it is kept.
#[derive(Debug, serde::Serialize)]
struct Current {
    secret: &'static str,
    /// `secrets_manager`, `environment`, or `unset`.
    source: &'static str,
    secret_id: Option<String>,
    version: Option<String>,
    /// How many values (webhook secrets during a roll).
    values: usize,
    mode: Option<&'static str>,
    /// Why it could not be read.
    error: Option<String>,
    /// False when these credentials may see its version but not its value
    /// (then `values` and `mode` are unknown).
    readable: bool,
}

/// One service's answer.
#[derive(Debug, serde::Serialize)]
struct Service {
    url: String,
    /// What it loaded; empty when it could not be asked.
    loaded: Vec<Reported>,
    error: Option<String>,
}

#[derive(Debug, serde::Serialize)]
struct Reported {
    #[serde(flatten)]
    loaded: Loaded,
    /// `current`, `stale` (another version than Secrets Manager's), or
    /// `unknown` (no version to compare).
    state: &'static str,
}

#[derive(Debug, serde::Serialize)]
struct Status {
    secrets: Vec<Current>,
    /// `accepted`, `refused`, `unreachable`, or `no key`.
    stripe: &'static str,
    stripe_detail: Option<String>,
    services: Vec<Service>,
    ok: bool,
}

pub async fn status_cmd(args: &KeysStatusArgs) -> anyhow::Result<ExitCode> {
    let backend = args.backend.open().await?;
    let source = backend.secrets().await;
    let common = &args.backend.common;

    let mut secrets = Vec::new();
    for (name, setting) in [
        (
            "webhook",
            SecretSetting::of(
                &args.webhook.stripe_webhook_secret_id,
                &args.webhook.stripe_webhook_secret,
            ),
        ),
        (
            "api_key",
            SecretSetting::of(&common.stripe_secret_key_id, &common.stripe_secret_key),
        ),
    ] {
        secrets.push(current(name, setting, source.as_ref()).await);
    }

    let (stripe, stripe_detail) = match backend.stripe_api(common).await {
        Ok(None) => ("no key", None),
        Ok(Some(api)) => match api.get("/v1/balance", &[], None).await {
            Ok(_) => ("accepted", None),
            Err(e) if e.kind() == ErrorKind::Configuration => ("refused", Some(e.to_string())),
            Err(e) => ("unreachable", Some(e.to_string())),
        },
        Err(e) => ("refused", Some(e.to_string())),
    };

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let mut services = Vec::new();
    for url in &args.services {
        services.push(ask(&http, url, &secrets).await);
    }

    let ok = secrets.iter().all(|s| s.error.is_none())
        && matches!(stripe, "accepted" | "no key")
        && services
            .iter()
            .all(|s| s.error.is_none() && s.loaded.iter().all(|l| l.state != "stale"));
    let status = Status {
        secrets,
        stripe,
        stripe_detail,
        services,
        ok,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", render(&status));
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn current(
    secret: &'static str,
    setting: SecretSetting<'_>,
    source: &dyn hookline_core::secrets::SecretSource,
) -> Current {
    let mut c = Current {
        secret,
        source: "unset",
        secret_id: None,
        version: None,
        values: 0,
        mode: None,
        error: None,
        readable: true,
    };
    let value = match setting {
        SecretSetting::Unset => return c,
        SecretSetting::Plain(v) => {
            c.source = loaded_secrets::FROM_ENVIRONMENT;
            v.clone()
        }
        SecretSetting::Stored(id) => {
            c.source = loaded_secrets::FROM_SECRETS_MANAGER;
            c.secret_id = Some(id.to_owned());
            // The version comes from DescribeSecret, which an operator
            // who may not read the value (the webhook secret) can call.
            match source.current_version(id).await {
                Ok(v) => c.version = v,
                Err(e) => {
                    c.error = Some(e.to_string());
                    return c;
                }
            }
            match source.fetch_versioned(id).await {
                Ok(v) => {
                    c.version = c.version.or(v.version);
                    v.value
                }
                Err(e) if e.kind() == ErrorKind::Configuration && c.version.is_some() => {
                    c.readable = false;
                    return c;
                }
                Err(e) => {
                    c.error = Some(e.to_string());
                    return c;
                }
            }
        }
    };
    if secret == "webhook" {
        match parse_webhook_secrets(&value) {
            Ok(all) => c.values = all.len(),
            Err(e) => c.error = Some(e.to_string()),
        }
    } else {
        c.values = 1;
        c.mode = key_mode(&value);
    }
    c
}

/// Reads `url/metrics` and compares what it loaded with `current`.
async fn ask(http: &reqwest::Client, url: &str, current: &[Current]) -> Service {
    let base = url.trim_end_matches('/');
    let answer = match http.get(format!("{base}/metrics")).send().await {
        Ok(r) if r.status().is_success() => r.text().await.map_err(|e| e.to_string()),
        Ok(r) => Err(format!("/metrics answered {}", r.status().as_u16())),
        Err(e) => Err(format!("unreachable: {e}")),
    };
    match answer {
        Err(error) => Service {
            url: url.to_owned(),
            loaded: Vec::new(),
            error: Some(error),
        },
        Ok(text) => Service {
            url: url.to_owned(),
            loaded: loaded_secrets::parse(&text)
                .into_iter()
                .map(|l| {
                    let now = current.iter().find(|c| c.secret == l.secret);
                    let state = match (now.and_then(|c| c.version.as_deref()), l.version.as_deref())
                    {
                        (Some(a), Some(b)) if a == b => "current",
                        (Some(_), _) => "stale",
                        (None, _) => "unknown",
                    };
                    Reported { loaded: l, state }
                })
                .collect(),
            error: None,
        },
    }
}

fn render(s: &Status) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "SECRET    SOURCE            ID / VERSION");
    for c in &s.secrets {
        let mut detail = match (&c.secret_id, &c.version) {
            (Some(id), Some(v)) => format!("{id} @ {v}"),
            (Some(id), None) => id.clone(),
            _ => "-".to_owned(),
        };
        if c.secret == "webhook" && c.values > 1 {
            let _ = write!(detail, " ({} secrets: a roll's overlap)", c.values);
        }
        if let Some(mode) = c.mode {
            let _ = write!(detail, " ({mode} key)");
        }
        if !c.readable {
            detail.push_str(" (value not readable with these credentials: version only)");
        }
        if let Some(e) = &c.error {
            let _ = write!(detail, " ERROR: {e}");
        }
        let _ = writeln!(out, "{:<9} {:<17} {detail}", c.secret, c.source);
    }
    let _ = write!(out, "\nStripe (GET /v1/balance): {}", s.stripe);
    if let Some(d) = &s.stripe_detail {
        let _ = write!(out, ": {d}");
    }
    let _ = writeln!(out);
    if !s.services.is_empty() {
        let _ = writeln!(out, "\nSERVICE                         SECRET    VERSION                               LOADED                STATE");
        for svc in &s.services {
            if let Some(e) = &svc.error {
                let _ = writeln!(out, "{:<31} -         -                                     -                     {e}", svc.url);
            }
            for r in &svc.loaded {
                let _ = writeln!(
                    out,
                    "{:<31} {:<9} {:<37} {:<21} {}{}",
                    svc.url,
                    r.loaded.secret,
                    r.loaded.version.as_deref().unwrap_or(&r.loaded.source),
                    rfc3339(r.loaded.loaded_at),
                    r.state,
                    r.loaded
                        .mode
                        .as_deref()
                        .map(|m| format!(" ({m} key)"))
                        .unwrap_or_default(),
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "\n{}",
        if s.ok {
            "OK"
        } else {
            "NOT OK: see above (a stale service picks the new version up within SECRET_REFRESH_SECS)"
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookline_core::ports::PortError;
    use secrecy::SecretString;

    /// Secrets Manager as an operator without `GetSecretValue` on the
    /// secret sees it: the version, not the value.
    #[derive(Debug)]
    struct VersionOnly;

    #[async_trait::async_trait]
    impl hookline_core::secrets::SecretSource for VersionOnly {
        async fn fetch(&self, _id: &str) -> Result<SecretString, PortError> {
            Err(PortError::configuration(
                "GetSecretValue: AccessDeniedException",
            ))
        }
        async fn current_version(&self, _id: &str) -> Result<Option<String>, PortError> {
            Ok(Some("v2".to_owned()))
        }
    }

    #[tokio::test]
    async fn a_secret_that_may_not_be_read_still_shows_its_version() {
        let id = Some("hookline/prod/webhook".to_owned());
        let c = current("webhook", SecretSetting::of(&id, &None), &VersionOnly).await;
        assert_eq!(c.version.as_deref(), Some("v2"));
        assert!(c.error.is_none(), "not an error: {:?}", c.error);
        assert!(!c.readable);
        assert_eq!(c.values, 0);
        let status = Status {
            secrets: vec![c],
            stripe: "no key",
            stripe_detail: None,
            services: Vec::new(),
            ok: true,
        };
        let text = render(&status);
        assert!(text.contains("hookline/prod/webhook @ v2"), "{text}");
        assert!(text.contains("version only"), "{text}");
    }
}
