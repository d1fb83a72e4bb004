//! Delivery of routed events to a team's own service: the `http`
//! destination of the routes document.
//!
//! Each delivery POSTs the Stripe event byte for byte with a
//! `Stripe-Signature` computed over it with the destination's own signing
//! secret, exactly as Stripe signs a webhook, so an existing handler that
//! calls `stripe.webhooks.constructEvent(body, header, secret)` works
//! unchanged. Answers are classified once, here:
//!
//! | answer | class |
//! | --- | --- |
//! | 2xx | delivered |
//! | 408, 429 (`Retry-After` honoured), 5xx | transient |
//! | 3xx (never followed, as Stripe does) | transient |
//! | timeout, refused or reset connection | transient |
//! | any other 4xx | permanent: status and the first 256 bytes of the answer |
//!
//! A peer is trusted with nothing:
//! - at most [`ANSWER_READ`] bytes of an answer are read, then the
//!   connection is dropped (a 2 GB error page costs no memory);
//! - `Stripe-Signature`'s `t=` is the clock when the request is sent, after
//!   any wait for a slot, so a receiver's tolerance check sees a fresh one;
//! - a delivery waits at most [`SLOT_WAIT`] for one of the destination's
//!   `max_concurrency` slots; past that nothing is sent and the event goes
//!   back to the queue for a while ([`DeliveryError::not_sent`]), instead of
//!   waiting in memory behind a destination that does not answer.
//!
//! A deliberate redelivery (`events redeliver`) is sent with its own
//! `Idempotency-Key` (`EVENT_ID:redelivery:ID`) and a `Hookline-Redelivery:
//! ID` header, so a receiver that dedupes on the key does not drop it.

use std::time::Duration;

use async_trait::async_trait;
use hookline_core::ports::{DeliveryError, Destination, ErrorKind, Outgoing};
use hookline_core::refresh::Refreshing;
use hookline_core::routes::Http;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{Semaphore, TryAcquireError};

/// Headers sent with each delivery, besides `Stripe-Signature`.
pub mod header {
    pub const STRIPE_SIGNATURE: &str = "stripe-signature";
    pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
    pub const EVENT_ID: &str = "hookline-event-id";
    pub const ATTEMPT: &str = "hookline-delivery-attempt";
    /// On a deliberate redelivery only: the redelivery's id.
    pub const REDELIVERY: &str = "hookline-redelivery";
}

/// How much of any answer is read at most; the rest is never read.
pub const ANSWER_READ: usize = 4096;

/// How long a delivery waits for a free slot of its destination before it
/// is handed back to the queue unsent.
pub const SLOT_WAIT: Duration = Duration::from_millis(250);

/// How long an event that found no free slot waits on the queue.
pub const SLOT_RETRY: Duration = Duration::from_secs(2);

/// How much of a refusing answer's body goes into the reason.
const ANSWER_EXCERPT: usize = 256;

/// The longest `Retry-After` taken as given; SQS cannot hide a message
/// longer than 12 hours.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(43_200);

/// Why a destination could not be built.
#[derive(Debug, thiserror::Error)]
#[error("destination {name}: cannot build its HTTP client: {source}")]
pub struct BuildError {
    name: String,
    #[source]
    source: reqwest::Error,
}

/// An `http` destination: one keep-alive connection pool, at most
/// `max_concurrency` deliveries at once.
pub struct HttpDestination {
    name: String,
    url: String,
    /// Kept current from Secrets Manager when it is read from there.
    secret: Refreshing<SecretString>,
    retry_for: Duration,
    client: reqwest::Client,
    slots: Semaphore,
}

impl std::fmt::Debug for HttpDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpDestination")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("secret", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

impl HttpDestination {
    /// A destination with its settings and its signing secret (read from
    /// where the document says, and kept current).
    pub fn new(
        name: &str,
        http: &Http,
        secret: Refreshing<SecretString>,
    ) -> Result<Self, BuildError> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("Hookline/", env!("CARGO_PKG_VERSION")))
            .timeout(http.timeout)
            .connect_timeout(http.timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(http.max_concurrency)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|source| BuildError {
                name: name.to_owned(),
                source,
            })?;
        Ok(Self {
            name: name.to_owned(),
            url: http.url.clone(),
            secret,
            retry_for: http.retry_for,
            client,
            slots: Semaphore::new(http.max_concurrency),
        })
    }

    fn headers(&self, event: &Outgoing<'_>) -> HeaderMap {
        let signature = {
            let secret = self.secret.current();
            hookline_signature::header_for(
                secret.expose_secret().as_bytes(),
                hookline_core::clock::unix_secs(),
                event.body,
            )
        };
        let mut h = HeaderMap::new();
        let mut put = |name: &'static str, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert(name, v);
            }
        };
        put(header::STRIPE_SIGNATURE, &signature);
        match event.redelivery {
            Some(id) => {
                put(
                    header::IDEMPOTENCY_KEY,
                    &format!("{}:redelivery:{id}", event.event_id),
                );
                put(header::REDELIVERY, id);
            }
            None => put(header::IDEMPOTENCY_KEY, event.event_id),
        }
        put(header::EVENT_ID, event.event_id);
        put(header::ATTEMPT, &event.attempt.to_string());
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        h
    }
}

#[async_trait]
impl Destination for HttpDestination {
    fn name(&self) -> &str {
        &self.name
    }

    fn retry_for(&self) -> Duration {
        self.retry_for
    }

    async fn deliver(&self, event: Outgoing<'_>) -> Result<(), DeliveryError> {
        // A free slot is taken at once, without a timer.
        let _slot = match self.slots.try_acquire() {
            Ok(slot) => slot,
            Err(TryAcquireError::Closed) => {
                return Err(DeliveryError::transient("destination closed"))
            }
            Err(TryAcquireError::NoPermits) => {
                match tokio::time::timeout(SLOT_WAIT, self.slots.acquire()).await {
                    Ok(Ok(slot)) => slot,
                    Ok(Err(_)) => return Err(DeliveryError::transient("destination closed")),
                    Err(_) => {
                        return Err(DeliveryError::not_sent(
                            "every slot (max_concurrency) is taken: not sent",
                            SLOT_RETRY,
                        ))
                    }
                }
            }
        };
        // Signed here, once a slot is held: `t=` is the moment of sending.
        let mut request = self
            .client
            .post(&self.url)
            .headers(self.headers(&event))
            .body(event.body.clone());
        // The event's trace continues at the destination.
        if let Some(parent) = hookline_telemetry::current_traceparent() {
            request = request.header(hookline_telemetry::TRACEPARENT, parent);
        }
        let sent = request.send().await;
        let answer = match sent {
            Ok(a) => a,
            Err(e) => return Err(DeliveryError::transient(network_error(e))),
        };
        let status = answer.status();
        let retry_after = answer
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
        if status.is_success() {
            return Ok(());
        }
        let body = excerpt(answer).await;
        Err(classify(status, &body, retry_after))
    }
}

/// At most [`ANSWER_READ`] bytes of the answer's body; the rest is not
/// read, and the connection goes with the answer.
async fn excerpt(mut answer: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < ANSWER_READ {
        match answer.chunk().await {
            Ok(Some(chunk)) => {
                let room = ANSWER_READ - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    body
}

/// The class of a non-2xx answer.
pub fn classify(status: StatusCode, body: &[u8], retry_after: Option<Duration>) -> DeliveryError {
    let excerpt = String::from_utf8_lossy(&body[..body.len().min(ANSWER_EXCERPT)]).into_owned();
    let message = format!("HTTP {}: {excerpt}", status.as_u16());
    let kind = if status.is_redirection()
        || status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        ErrorKind::Transient
    } else {
        ErrorKind::Permanent
    };
    DeliveryError {
        kind,
        message,
        retry_after: (kind == ErrorKind::Transient)
            .then_some(retry_after)
            .flatten(),
        not_sent: false,
    }
}

/// A network failure, said without the URL's query (it may carry a token).
fn network_error(e: reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "connection failed"
    };
    let e = e.without_url();
    match std::error::Error::source(&e) {
        Some(source) => format!("{what}: {e}: {source}"),
        None => format!("{what}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_as_stripe_treats_them() {
        let t = |code: u16| classify(StatusCode::from_u16(code).expect("status"), b"", None).kind;
        for code in [301, 302, 307, 408, 429, 500, 502, 503] {
            assert_eq!(t(code), ErrorKind::Transient, "{code}");
        }
        for code in [400, 401, 403, 404, 410, 422] {
            assert_eq!(t(code), ErrorKind::Permanent, "{code}");
        }
    }

    #[test]
    fn a_refusal_names_the_status_and_the_start_of_the_answer() {
        let body = vec![b'x'; 1000];
        let e = classify(StatusCode::GONE, &body, Some(Duration::from_secs(5)));
        assert_eq!(e.message, format!("HTTP 410: {}", "x".repeat(256)));
        assert_eq!(e.retry_after, None, "a permanent answer has no retry");
        let e = classify(
            StatusCode::TOO_MANY_REQUESTS,
            b"slow",
            Some(Duration::from_secs(2)),
        );
        assert_eq!(e.retry_after, Some(Duration::from_secs(2)));
    }
}
