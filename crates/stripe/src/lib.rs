//! The Stripe API client: the one way Hookline reads Stripe's API (the
//! worker's thin-event and same-second fetches, `backfill`'s event list).
//!
//! - A pinned `Stripe-Version` ([`STRIPE_VERSION`]), so the shapes the
//!   handlers read do not change under them.
//! - A timeout per request.
//! - A client-side rate limit: requests are spaced evenly at
//!   `STRIPE_API_RPS`, shared by every task of the process.
//! - 408, 429 and `Stripe-Should-Retry: true` are retried after `Retry-After`
//!   (or on a short backoff); 5xx and network errors too. What still fails
//!   is [`PortError::Transient`]: the worker retries the event later and
//!   never dead-letters it for that.
//! - 401 and 403 are [`PortError::Configuration`] (the key is wrong or
//!   lacks a permission); 404 and other 4xx are [`PortError::Permanent`]
//!   with Stripe's own message.
//! - The key is sent as a bearer token and never logged: it is a
//!   `SecretString`, and no error text carries a header.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use hookline_core::ports::{PortError, StripeApi};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The API version every request pins (`Stripe-Version`), the one the
/// v2 Account mapping and the handlers are written against.
pub const STRIPE_VERSION: &str = "2026-07-29.dahlia";

/// Stripe's API base unless `STRIPE_API_BASE` says otherwise.
pub const DEFAULT_BASE: &str = "https://api.stripe.com";

/// Default requests per second with a live key. Stripe documents 100
/// requests per second per account in live mode and 25 per endpoint; the
/// fetches mostly hit one endpoint, and the platform's own code shares the
/// account's budget.
pub const DEFAULT_RPS_LIVE: u32 = 20;

/// Default requests per second with a test-mode key: Stripe documents 25
/// per second in a sandbox, for the whole account.
pub const DEFAULT_RPS_TEST: u32 = 10;

/// How many times one call is retried after a 429, a 5xx or a network
/// error before the error is returned (transient).
const RETRIES: u32 = 3;

/// The longest `Retry-After` the client waits in place; a longer one is
/// returned as a transient error for the caller's own (slower) backoff.
const MAX_WAIT: Duration = Duration::from_secs(10);

/// How the client is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// `https://api.stripe.com`, or a stand-in.
    pub base: String,
    /// Requests per second, for the whole process (at least 1).
    pub rps: u32,
    pub timeout: Duration,
}

impl Config {
    /// The default rate for a key: live (`sk_live_`, `rk_live_`) or test.
    pub fn default_rps(key: &str) -> u32 {
        if key.starts_with("sk_live_") || key.starts_with("rk_live_") {
            DEFAULT_RPS_LIVE
        } else {
            DEFAULT_RPS_TEST
        }
    }
}

/// Why the client cannot be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the Stripe API client: {0}")]
pub struct BuildError(#[source] reqwest::Error);

/// The Stripe API client (see the module documentation).
pub struct StripeClient {
    http: reqwest::Client,
    base: String,
    /// Replaced in place when the key is rotated (`set_key`).
    key: std::sync::RwLock<SecretString>,
    pacer: Pacer,
}

impl std::fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeClient")
            .field("base", &self.base)
            .field("rps", &self.pacer.rps())
            .finish_non_exhaustive()
    }
}

impl StripeClient {
    pub fn new(config: Config, key: SecretString) -> Result<Self, BuildError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(concat!("Hookline/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(BuildError)?;
        Ok(Self {
            http,
            base: config.base.trim_end_matches('/').to_owned(),
            key: std::sync::RwLock::new(key),
            pacer: Pacer::new(config.rps),
        })
    }

    /// Uses `key` from the next request on (a rotated key); whether it
    /// differs from the one in use.
    pub fn set_key(&self, key: SecretString) -> bool {
        let mut current = match self.key.write() {
            Ok(k) => k,
            Err(poisoned) => poisoned.into_inner(),
        };
        let changed = current.expose_secret() != key.expose_secret();
        *current = key;
        changed
    }

    fn key(&self) -> SecretString {
        match self.key.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// One request, one answer, classified; a client span of the event's
    /// trace (method, path, status; never the key), whose context the
    /// request carries as `traceparent`.
    async fn once(
        &self,
        path: &str,
        query: &[(String, String)],
        context: Option<&str>,
    ) -> Result<Bytes, Failure> {
        use tracing::Instrument;
        let span = tracing::debug_span!(
            "stripe_api",
            otel.name = "GET",
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            http.request.method = "GET",
            url.path = path,
            http.response.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        let result = self
            .request(path, query, context, &span)
            .instrument(span.clone())
            .await;
        if let Err(Failure::Retry { error, .. } | Failure::Final(error)) = &result {
            if !span.is_disabled() {
                span.record("otel.status_code", "ERROR");
                span.record("error.type", error.kind().as_str());
            }
        }
        result
    }

    async fn request(
        &self,
        path: &str,
        query: &[(String, String)],
        context: Option<&str>,
        span: &tracing::Span,
    ) -> Result<Bytes, Failure> {
        self.pacer.wait().await;
        let mut request = self
            .http
            .get(format!("{}{}", self.base, path))
            .bearer_auth(self.key().expose_secret())
            .header("Stripe-Version", STRIPE_VERSION)
            .query(query);
        if let Some(parent) = hookline_telemetry::traceparent(span) {
            request = request.header(hookline_telemetry::TRACEPARENT, parent);
        }
        if let Some(account) = context {
            // v1 names the connected account in `Stripe-Account`, v2 in
            // `Stripe-Context`.
            let name = if path.starts_with("/v1/") {
                "Stripe-Account"
            } else {
                "Stripe-Context"
            };
            request = request.header(name, account);
        }
        let response = request.send().await.map_err(|e| Failure::Retry {
            error: PortError::transient(format!(
                "GET {path}: Stripe API unreachable: {}",
                e.without_url()
            )),
            after: None,
        })?;
        let status = response.status();
        if !span.is_disabled() {
            span.record("http.response.status_code", i64::from(status.as_u16()));
        }
        let should_retry = header(&response, "stripe-should-retry");
        let retry_after = header(&response, "retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response.bytes().await.map_err(|e| Failure::Retry {
            error: PortError::transient(format!("GET {path}: answer cut off: {}", e.without_url())),
            after: None,
        })?;
        if status.is_success() {
            return Ok(body);
        }
        let error = classify(path, status.as_u16(), should_retry.as_deref(), &body);
        if error.is_retryable() && !error.is_configuration() {
            return Err(Failure::Retry {
                error,
                after: retry_after,
            });
        }
        Err(Failure::Final(error))
    }
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A failed request: worth another try (after `after`, when Stripe said),
/// or not.
enum Failure {
    Retry {
        error: PortError,
        after: Option<Duration>,
    },
    Final(PortError),
}

#[async_trait]
impl StripeApi for StripeClient {
    async fn get(
        &self,
        path: &str,
        query: &[(String, String)],
        context: Option<&str>,
    ) -> Result<Bytes, PortError> {
        let mut tries = 0;
        loop {
            match self.once(path, query, context).await {
                Ok(body) => return Ok(body),
                Err(Failure::Final(error)) => return Err(error),
                Err(Failure::Retry { error, after }) => {
                    tries += 1;
                    let wait = after.unwrap_or_else(|| backoff(tries));
                    if tries > RETRIES || wait > MAX_WAIT {
                        return Err(error);
                    }
                    tracing::debug!(message = "Stripe API call retried.", path, %error, wait_ms = wait.as_millis() as u64);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// 250 ms, 500 ms, 1 s, … with jitter.
fn backoff(tries: u32) -> Duration {
    let ceiling = 250u64 << tries.saturating_sub(1).min(5);
    Duration::from_millis(ceiling / 2 + fastrand::u64(0..=ceiling / 2))
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

/// Stripe's answer to a failed request, as a port error.
pub fn classify(path: &str, status: u16, should_retry: Option<&str>, body: &[u8]) -> PortError {
    let detail = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .map(|b| b.error);
    let said = detail
        .as_ref()
        .map(|d| {
            let what = [d.kind.as_deref(), d.code.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("/");
            format!("{what}: {}", d.message.as_deref().unwrap_or("(no message)"))
        })
        .unwrap_or_else(|| "(no Stripe error body)".to_owned());
    let text = format!("GET {path}: Stripe API answered {status}: {said}");
    match (status, should_retry) {
        (_, Some("true")) | (408 | 429, _) => PortError::transient(text),
        (_, Some("false")) if status < 500 => permanent_or_config(status, text, path),
        (500..=599, _) => PortError::transient(text),
        _ => permanent_or_config(status, text, path),
    }
}

fn permanent_or_config(status: u16, text: String, path: &str) -> PortError {
    match status {
        401 | 403 => PortError::configuration(format!(
            "{text} (check STRIPE_SECRET_KEY / STRIPE_SECRET_KEY_ID and its read permissions)"
        )),
        404 if path.starts_with("/v2/core/events/") => PortError::permanent(format!(
            "{text} (Stripe keeps thin events for 30 days; an older one cannot be fetched)"
        )),
        _ => PortError::permanent(text),
    }
}

/// Spaces requests evenly: each takes the next free slot, `1/rps` after
/// the one before, whichever task asks.
struct Pacer {
    interval: Duration,
    next: tokio::sync::Mutex<Instant>,
}

impl Pacer {
    fn new(rps: u32) -> Self {
        let rps = rps.max(1);
        Self {
            interval: Duration::from_secs(1) / rps,
            next: tokio::sync::Mutex::new(Instant::now()),
        }
    }

    fn rps(&self) -> u32 {
        u32::try_from(Duration::from_secs(1).as_nanos() / self.interval.as_nanos().max(1))
            .unwrap_or(u32::MAX)
    }

    async fn wait(&self) {
        let slot = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookline_core::ports::ErrorKind;

    #[test]
    fn stripe_errors_are_classified_once() {
        let body = br#"{"error":{"type":"invalid_request_error","code":"resource_missing","message":"No such account: 'acct_1'","param":"id"}}"#;
        let missing = classify("/v1/accounts/acct_1", 404, None, body);
        assert_eq!(missing.kind(), ErrorKind::Permanent);
        assert!(missing.message().contains("No such account"), "{missing}");
        let old = classify("/v2/core/events/evt_1", 404, None, b"{}");
        assert!(old.message().contains("30 days"), "{old}");
        for status in [408, 429] {
            assert_eq!(
                classify("/v1/accounts/acct_1", status, None, b"").kind(),
                ErrorKind::Transient
            );
        }
        assert_eq!(
            classify("/v1/accounts/acct_1", 409, Some("true"), b"").kind(),
            ErrorKind::Transient
        );
        assert_eq!(
            classify("/v1/accounts/acct_1", 503, None, b"").kind(),
            ErrorKind::Transient
        );
        for status in [401, 403] {
            let e = classify("/v1/accounts/acct_1", status, None, b"");
            assert_eq!(e.kind(), ErrorKind::Configuration);
        }
        assert_eq!(
            classify("/v1/accounts/acct_1", 400, Some("false"), b"").kind(),
            ErrorKind::Permanent
        );
    }

    #[test]
    fn the_default_rate_follows_the_key_mode() {
        assert_eq!(Config::default_rps("rk_live_x"), DEFAULT_RPS_LIVE);
        assert_eq!(Config::default_rps("sk_live_x"), DEFAULT_RPS_LIVE);
        assert_eq!(Config::default_rps("sk_test_x"), DEFAULT_RPS_TEST);
        assert_eq!(Pacer::new(20).rps(), 20);
        assert_eq!(Pacer::new(0).rps(), 1);
    }

    #[test]
    fn debug_never_shows_the_key() {
        let client = StripeClient::new(
            Config {
                base: "http://127.0.0.1:9".to_owned(),
                rps: 5,
                timeout: Duration::from_secs(1),
            },
            SecretString::from("sk_test_hooklineNotARealKey"),
        )
        .expect("client");
        let shown = format!("{client:?}");
        assert!(!shown.contains("sk_test"), "{shown}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_pacer_spaces_requests_at_the_rate() {
        let pacer = Pacer::new(10);
        let start = tokio::time::Instant::now();
        for _ in 0..11 {
            pacer.wait().await;
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(990) && took < Duration::from_millis(1100),
            "{took:?}"
        );
    }
}
