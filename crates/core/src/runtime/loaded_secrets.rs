//! Which version of each secret a running service last loaded, told on its
//! `/metrics` (never the value) and read back by `hookline keys status`.
//!
//! One series per secret:
//!
//! ```text
//! hookline_secret_loaded_timestamp_seconds{secret="webhook",source="secrets_manager",secret_id="prod/hookline/webhook",version="3f0c…",mode="",values="2"} 1765051200
//! ```
//!
//! The value is when it was loaded (Unix seconds); `mode` is `live` or
//! `test` for an API key; `values` is how many webhook secrets the value
//! holds (2 during a roll's overlap).

use std::fmt::Write as _;
use std::sync::RwLock;

/// The metric's name.
pub const METRIC: &str = "hookline_secret_loaded_timestamp_seconds";

/// Where a loaded secret came from.
pub const FROM_SECRETS_MANAGER: &str = "secrets_manager";
pub const FROM_ENVIRONMENT: &str = "environment";

/// One secret as a service loaded it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Loaded {
    /// `webhook` or `api_key`.
    pub secret: String,
    /// [`FROM_SECRETS_MANAGER`] or [`FROM_ENVIRONMENT`].
    pub source: String,
    /// The Secrets Manager id or ARN (a name, not a value).
    pub secret_id: Option<String>,
    /// Secrets Manager's `VersionId`.
    pub version: Option<String>,
    /// `live` or `test`, for an API key.
    pub mode: Option<String>,
    /// How many values the secret holds (webhook secrets during a roll).
    pub values: usize,
    /// Unix seconds.
    pub loaded_at: i64,
}

impl Loaded {
    /// `secret` as loaded now: from Secrets Manager `id` at `version`, or
    /// from the environment without an id; `mode` for an API key.
    pub fn now(
        secret: &str,
        id: Option<&str>,
        version: Option<String>,
        mode: Option<&str>,
        values: usize,
    ) -> Self {
        Self {
            secret: secret.to_owned(),
            source: match id {
                Some(_) => FROM_SECRETS_MANAGER,
                None => FROM_ENVIRONMENT,
            }
            .to_owned(),
            secret_id: id.map(str::to_owned),
            version,
            mode: mode.map(str::to_owned),
            values,
            loaded_at: crate::clock::unix_secs(),
        }
    }
}

/// The secrets one service has loaded, by name.
#[derive(Debug, Default)]
pub struct LoadedSecrets(RwLock<Vec<Loaded>>);

impl LoadedSecrets {
    /// Records a load, replacing the last one of the same secret.
    pub fn record(&self, loaded: Loaded) {
        let mut all = match self.0.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let changed = all
            .iter()
            .find(|l| l.secret == loaded.secret)
            .is_none_or(|l| l.version != loaded.version || l.values != loaded.values);
        if changed {
            // What `keys status` reads from /metrics, also in the logs, for
            // tasks whose port an operator cannot reach.
            tracing::info!(
                message = "Secret loaded.",
                secret = %loaded.secret,
                source = %loaded.source,
                secret_id = loaded.secret_id.as_deref().unwrap_or(""),
                version = loaded.version.as_deref().unwrap_or(""),
                mode = loaded.mode.as_deref().unwrap_or(""),
                values = loaded.values,
            );
        }
        all.retain(|l| l.secret != loaded.secret);
        all.push(loaded);
        all.sort_by(|a, b| a.secret.cmp(&b.secret));
    }

    pub fn all(&self) -> Vec<Loaded> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The metric family, in Prometheus text (empty when nothing is loaded).
    pub fn render(&self) -> String {
        let all = self.all();
        let mut out = String::new();
        if all.is_empty() {
            return out;
        }
        let _ = writeln!(
            out,
            "# HELP {METRIC} When each secret was last loaded, with its Secrets Manager version (never the value).\n# TYPE {METRIC} gauge"
        );
        for l in all {
            let _ = writeln!(
                out,
                "{METRIC}{{secret=\"{}\",source=\"{}\",secret_id=\"{}\",version=\"{}\",mode=\"{}\",values=\"{}\"}} {}",
                escape(&l.secret),
                escape(&l.source),
                escape(l.secret_id.as_deref().unwrap_or("")),
                escape(l.version.as_deref().unwrap_or("")),
                escape(l.mode.as_deref().unwrap_or("")),
                l.values,
                l.loaded_at
            );
        }
        out
    }
}

/// Reads the series [`LoadedSecrets::render`] writes back out of a
/// `/metrics` answer; other lines are skipped.
pub fn parse(metrics: &str) -> Vec<Loaded> {
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix(METRIC)?.strip_prefix('{'))
        .filter_map(|rest| {
            let (labels, value) = rest.rsplit_once("} ")?;
            let labels = parse_labels(labels)?;
            let get = |k: &str| {
                labels
                    .iter()
                    .find(|(name, _)| name == k)
                    .map(|(_, v)| v.clone())
                    .filter(|v| !v.is_empty())
            };
            Some(Loaded {
                secret: get("secret")?,
                source: get("source").unwrap_or_default(),
                secret_id: get("secret_id"),
                version: get("version"),
                mode: get("mode"),
                values: get("values").and_then(|v| v.parse().ok()).unwrap_or(0),
                loaded_at: value.trim().parse::<f64>().ok()? as i64,
            })
        })
        .collect()
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `a="x",b="y\"z"` into pairs; `None` when malformed.
fn parse_labels(text: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if name.is_empty() {
            return Some(out);
        }
        if chars.next() != Some('"') {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.push((name.trim_start_matches(',').to_owned(), value));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook(version: &str) -> Loaded {
        Loaded {
            secret: "webhook".into(),
            source: FROM_SECRETS_MANAGER.into(),
            secret_id: Some(
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/\"odd\"".into(),
            ),
            version: Some(version.into()),
            mode: None,
            values: 2,
            loaded_at: 1_765_051_200,
        }
    }

    #[test]
    fn what_is_rendered_parses_back_and_a_reload_replaces_the_series() {
        let loaded = LoadedSecrets::default();
        assert_eq!(loaded.render(), "");
        loaded.record(webhook("v1"));
        loaded.record(Loaded {
            secret: "api_key".into(),
            source: FROM_ENVIRONMENT.into(),
            secret_id: None,
            version: None,
            mode: Some("test".into()),
            values: 1,
            loaded_at: 1_765_051_000,
        });
        loaded.record(webhook("v2"));
        let text = format!("# other\nhookline_x_total 3\n{}", loaded.render());
        let parsed = parse(&text);
        assert_eq!(parsed.len(), 2, "{text}");
        assert_eq!(parsed[1], webhook("v2"));
        assert_eq!(parsed[0].secret, "api_key");
        assert_eq!(parsed[0].mode.as_deref(), Some("test"));
        assert_eq!(parsed[0].version, None);
    }
}
