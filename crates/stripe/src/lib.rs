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
//!   is [`ErrorKind::Transient`](hookline_core::ports::ErrorKind::Transient): the worker retries the event later and
//!   never dead-letters it for that.
//! - 401 and 403 are [`ErrorKind::Configuration`](hookline_core::ports::ErrorKind::Configuration) (the key is wrong or
//!   lacks a permission); 404 and other 4xx are [`ErrorKind::Permanent`](hookline_core::ports::ErrorKind::Permanent)
//!   with Stripe's own message.
//! - The key is sent as a bearer token and never logged: it is a
//!   `SecretString`, and no error text carries a header.
//! - The key goes to `STRIPE_API_BASE` and nowhere else: a path that would
//!   resolve to another scheme, host or port (`@host/x`, `:port/x`,
//!   `//host/x`), or that is not a plain API path, is refused before any
//!   connection, whoever built it; redirects are never followed.
//! - An answer is read up to [`MAX_ANSWER`] bytes (an error's up to
//!   [`MAX_ERROR_ANSWER`]); a longer one is refused and its connection
//!   dropped, so a peer that answers huge costs no memory.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use hookline_core::ports::{PortError, StripeApi};
use hookline_core::refresh::Refreshing;
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

/// The largest successful answer read (a page of 100 events is well under
/// a megabyte).
pub const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// The most of an error's answer read: Stripe's error object is a few
/// hundred bytes.
pub const MAX_ERROR_ANSWER: usize = 16 * 1024;

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
pub enum BuildError {
    #[error("cannot build the Stripe API client: {0}")]
    Client(#[source] reqwest::Error),
    #[error(
        "STRIPE_API_BASE {0:?} is not an http(s) URL with a host and no path, query or credentials"
    )]
    Base(String),
}

/// The Stripe API client (see the module documentation).
pub struct StripeClient {
    http: reqwest::Client,
    base: String,
    /// `base`, parsed: every request's origin is compared with it.
    origin: reqwest::Url,
    /// Kept current from Secrets Manager when it is read from there.
    key: Refreshing<SecretString>,
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
    /// A client with `key`, which a refreshing value keeps current (a
    /// rolled key is used from the next request on).
    pub fn new(config: Config, key: Refreshing<SecretString>) -> Result<Self, BuildError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(concat!("Hookline/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(BuildError::Client)?;
        let base = config.base.trim_end_matches('/').to_owned();
        let origin = reqwest::Url::parse(&base)
            .ok()
            .filter(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some()
                    && u.username().is_empty()
                    && u.password().is_none()
                    && u.path() == "/"
                    && u.query().is_none()
                    && u.fragment().is_none()
            })
            .ok_or_else(|| BuildError::Base(config.base.clone()))?;
        Ok(Self {
            http,
            base,
            origin,
            key,
            pacer: Pacer::new(config.rps),
        })
    }

    fn key(&self) -> std::sync::Arc<SecretString> {
        self.key.current()
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
        let url = self.url(path).map_err(Failure::Final)?;
        self.pacer.wait().await;
        let mut request = self
            .http
            .get(url)
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
        let cap = if status.is_success() {
            MAX_ANSWER
        } else {
            MAX_ERROR_ANSWER
        };
        let body = match read_capped(response, cap).await {
            Ok(Some(body)) => body,
            // Too long: what was read is dropped with the connection.
            Ok(None) if status.is_success() => {
                return Err(Failure::Retry {
                    error: PortError::transient(format!(
                        "GET {path}: the answer is longer than {MAX_ANSWER} bytes; not read"
                    )),
                    after: None,
                })
            }
            Ok(None) => Bytes::new(),
            Err(e) => {
                return Err(Failure::Retry {
                    error: PortError::transient(format!(
                        "GET {path}: answer cut off: {}",
                        e.without_url()
                    )),
                    after: None,
                })
            }
        };
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

impl StripeClient {
    /// The URL of `path` on `STRIPE_API_BASE`, or a permanent error when
    /// `path` is not a plain API path or would leave that origin.
    fn url(&self, path: &str) -> Result<reqwest::Url, PortError> {
        let refused = || {
            let shown: String = path.chars().take(80).collect();
            PortError::permanent(format!(
                "GET {shown:?}: refused: not a Stripe API path on STRIPE_API_BASE (nothing was sent)"
            ))
        };
        if !is_api_path(path) {
            return Err(refused());
        }
        let url = reqwest::Url::parse(&format!("{}{}", self.base, path)).map_err(|_| refused())?;
        let same = url.scheme() == self.origin.scheme()
            && url.host_str() == self.origin.host_str()
            && url.port_or_known_default() == self.origin.port_or_known_default()
            && url.username().is_empty()
            && url.password().is_none()
            && url.path() == path;
        if same {
            Ok(url)
        } else {
            Err(refused())
        }
    }
}

/// A path Hookline may ask Stripe for: `/v1/…` or `/v2/…`, then segments
/// of letters, digits, `_`, `-` and `.` (none of them `.` or `..`); no
/// query, fragment, credentials, escapes or second slash.
pub fn is_api_path(path: &str) -> bool {
    let Some(rest) = path
        .strip_prefix("/v1/")
        .or_else(|| path.strip_prefix("/v2/"))
    else {
        return false;
    };
    path.len() <= 512
        && rest.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        })
}

/// The answer's body when it is at most `cap` bytes, `None` when longer
/// (the rest is not read: the connection is dropped with the response).
async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<Option<Bytes>, reqwest::Error> {
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return Ok(None);
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > cap {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body.freeze()))
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

    fn client(base: &str) -> StripeClient {
        StripeClient::new(
            Config {
                base: base.to_owned(),
                rps: 5,
                timeout: Duration::from_secs(1),
            },
            Refreshing::fixed(SecretString::from("sk_test_hooklineNotARealKey")),
        )
        .expect("client")
    }

    #[test]
    fn no_path_leaves_the_api_base() {
        let c = client("http://127.0.0.1:18001");
        for path in [
            "@127.0.0.1:18002/x",
            ":18002/x",
            "//other-host/x",
            "/v2/core/accounts/acct_1@evil",
            "/v2/core/accounts/../../x",
            "/v2//other-host/x",
            "/v1/accounts/acct_1?x=1",
            "/v1/accounts/acct_1#x",
            "/v1/accounts/a%2F..",
            "/v1/accounts/a\\b",
            "v1/accounts/acct_1",
            "/v3/x",
            "",
        ] {
            let e = c.url(path).expect_err(path);
            assert_eq!(e.kind(), ErrorKind::Permanent, "{path}");
            assert!(e.message().contains("refused"), "{e}");
        }
        let ok = c
            .url("/v2/core/accounts/acct_1SThinExample0001")
            .expect("ok");
        assert_eq!(
            ok.as_str(),
            "http://127.0.0.1:18001/v2/core/accounts/acct_1SThinExample0001"
        );
        assert!(c.url("/v1/events").is_ok());
    }

    #[test]
    fn a_base_with_a_path_or_credentials_is_refused() {
        for base in [
            "ftp://x",
            "http://u:p@x",
            "http://x/v1",
            "not a url",
            "http://x?a=1",
        ] {
            let built = StripeClient::new(
                Config {
                    base: base.to_owned(),
                    rps: 1,
                    timeout: Duration::from_secs(1),
                },
                Refreshing::fixed(SecretString::from("sk_test_hooklineNotARealKey")),
            );
            assert!(matches!(built, Err(BuildError::Base(_))), "{base}");
        }
        assert!(client("https://api.stripe.com/").url("/v1/events").is_ok());
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
            Refreshing::fixed(SecretString::from("sk_test_hooklineNotARealKey")),
        )
        .expect("client");
        let shown = format!("{client:?}");
        assert!(!shown.contains("sk_test"), "{shown}");
    }

    /// On the real clock: 11 requests at 100 a second take a tenth of a
    /// second at least (the first goes at once), and far less than a burst
    /// held back by a second would.
    #[tokio::test]
    async fn the_pacer_spaces_requests_at_the_rate() {
        let pacer = Pacer::new(100);
        let start = tokio::time::Instant::now();
        for _ in 0..11 {
            pacer.wait().await;
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(99) && took < Duration::from_millis(900),
            "{took:?}"
        );
    }
}
