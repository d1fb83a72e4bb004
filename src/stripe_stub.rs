//! A local stand-in for the part of Stripe's API Hookline reads, for the
//! tests and `make bench`.
//!
//! Provenance: the objects it serves start from Stripe's own published
//! shapes, not from guesses of ours:
//! - v1 `account`, `payment_intent`, `payout`, `dispute`: verbatim from the
//!   `resources` of `openapi/fixtures3.json` in the public `stripe/openapi`
//!   repository (`testdata/stripe-openapi/`);
//! - the v2 Account (`testdata/stripe-v2/v2.core.account.json`): its field
//!   names and enum values are those of Stripe's v2 OpenAPI description as
//!   Stripe's SDKs generate it (`V2CoreAccount` in `stripe-go`'s
//!   `v2core_account.go`, "generated from our OpenAPI spec"); the published
//!   fixtures hold no v2 object;
//! - errors in Stripe's shape: `{"error": {"type", "code", "message",
//!   "param"}}`, 404 `resource_missing` for an unknown id, 401 without a
//!   bearer key, 429 with `Retry-After` on demand.
//!
//! Routes: `GET /v1/accounts/{id}`, `/v1/payment_intents/{id}`,
//! `/v1/payouts/{id}`, `/v1/disputes/{id}`, `/v2/core/accounts/{id}`,
//! `/v2/core/events/{id}`, `GET /v1/balance` (the harmless read `hookline keys
//! status` makes). A test puts objects in ([`StripeStub::put_v1`],
//! [`StripeStub::put_v2_account`], [`StripeStub::put_v2_event`]), sets a
//! latency per call and a number of 429s to answer, revokes a key
//! ([`StripeStub::revoke`]: 401 for it, as Stripe answers a rolled key), and reads what it was
//! asked ([`StripeStub::requests`]). `tests/stripe_stub.rs` drives it with
//! Stripe's official Python library.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

/// One request the stub answered.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub query: Option<String>,
    pub status: u16,
    pub stripe_version: Option<String>,
    /// `Stripe-Context` or `Stripe-Account`, whichever was sent.
    pub context: Option<String>,
    pub at: Instant,
}

#[derive(Default)]
struct Objects {
    /// v1 objects by id.
    v1: HashMap<String, Value>,
    v2_accounts: HashMap<String, Value>,
    v2_events: HashMap<String, Value>,
    /// v1 events, in the order they were put (listed newest first).
    v1_events: Vec<Value>,
}

struct Inner {
    objects: Mutex<Objects>,
    seen: Mutex<Vec<Seen>>,
    throttle: AtomicU64,
    latency_ms: AtomicU64,
    retry_after_secs: AtomicU64,
    /// Keys answered 401, as Stripe answers a rolled or deleted key.
    revoked: Mutex<Vec<String>>,
}

/// The running stub (stops when dropped).
pub struct StripeStub {
    pub base: String,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StripeStub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Stripe's published objects, as the stub starts with them.
pub mod published {
    pub const ACCOUNT: &str = include_str!("../testdata/stripe-openapi/account.json");
    pub const PAYMENT_INTENT: &str = include_str!("../testdata/stripe-openapi/payment_intent.json");
    pub const PAYOUT: &str = include_str!("../testdata/stripe-openapi/payout.json");
    pub const DISPUTE: &str = include_str!("../testdata/stripe-openapi/dispute.json");
    pub const BALANCE: &str = include_str!("../testdata/stripe-openapi/balance.json");
    pub const V2_ACCOUNT: &str = include_str!("../testdata/stripe-v2/v2.core.account.json");
}

impl StripeStub {
    /// Starts on a free loopback port with Stripe's published objects.
    pub async fn start() -> std::io::Result<Self> {
        let inner = Arc::new(Inner {
            objects: Mutex::new(Objects::default()),
            seen: Mutex::new(Vec::new()),
            throttle: AtomicU64::new(0),
            latency_ms: AtomicU64::new(0),
            retry_after_secs: AtomicU64::new(1),
            revoked: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/v1/events", get(v1_events))
            .route("/v1/balance", get(balance))
            .route("/v1/{collection}/{id}", get(v1))
            .route("/v2/core/accounts/{id}", get(v2_account))
            .route("/v2/core/events/{id}", get(v2_event))
            .fallback(unknown)
            .with_state(Arc::clone(&inner));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let stub = Self { base, inner, task };
        for raw in [
            published::ACCOUNT,
            published::PAYMENT_INTENT,
            published::PAYOUT,
            published::DISPUTE,
        ] {
            stub.put_v1(parse(raw));
        }
        stub.put_v2_account(parse(published::V2_ACCOUNT));
        Ok(stub)
    }

    /// Puts (or replaces) a v1 object, by its `id`.
    pub fn put_v1(&self, object: Value) {
        let id = id_of(&object);
        self.objects().v1.insert(id, object);
    }

    pub fn put_v2_account(&self, account: Value) {
        let id = id_of(&account);
        self.objects().v2_accounts.insert(id, account);
    }

    /// Adds an event to `GET /v1/events` (what `backfill` lists).
    pub fn put_v1_event(&self, event: Value) {
        self.objects().v1_events.push(event);
    }

    pub fn put_v2_event(&self, event: Value) {
        let id = id_of(&event);
        self.objects().v2_events.insert(id, event);
    }

    /// A v1 object as Stripe published it, with `id` and the fields in
    /// `changes` replaced.
    pub fn v1_like(published: &str, id: &str, changes: Value) -> Value {
        let mut object = parse(published);
        merge(&mut object, json!({ "id": id }));
        merge(&mut object, changes);
        object
    }

    /// Answers the next `n` requests with 429 and `Retry-After: secs`.
    pub fn throttle(&self, n: u64, retry_after_secs: u64) {
        self.inner
            .retry_after_secs
            .store(retry_after_secs, Ordering::SeqCst);
        self.inner.throttle.store(n, Ordering::SeqCst);
    }

    /// Answers 401 to this key from now on (Stripe's answer to a key that
    /// was rolled and has expired).
    pub fn revoke(&self, key: &str) {
        self.inner
            .revoked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(key.to_owned());
    }

    /// Waits this long before answering each request.
    pub fn set_latency(&self, latency: Duration) {
        self.inner.latency_ms.store(
            u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.inner
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn objects(&self) -> std::sync::MutexGuard<'_, Objects> {
        self.inner
            .objects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn parse(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or(Value::Null)
}

fn id_of(object: &Value) -> String {
    object["id"].as_str().unwrap_or_default().to_owned()
}

/// Replaces `target`'s fields with `changes`' (objects merged recursively).
pub fn merge(target: &mut Value, changes: Value) {
    match (target, changes) {
        (Value::Object(t), Value::Object(c)) => {
            for (k, v) in c {
                merge(t.entry(k).or_insert(Value::Null), v);
            }
        }
        (t, c) => *t = c,
    }
}

/// What every route does first: latency, the bearer key, a 429 when one
/// is asked for. `Err` is the answer.
async fn gate(inner: &Inner, headers: &HeaderMap) -> Result<(), Response> {
    let latency = inner.latency_ms.load(Ordering::SeqCst);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let revoked = inner
        .revoked
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .any(|k| k == key);
    if revoked || !(key.starts_with("sk_test_") || key.starts_with("rk_test_")) {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "api_key_invalid",
            "Invalid API Key provided.",
            None,
        ));
    }
    let throttled = inner
        .throttle
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if throttled {
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "invalid_request_error",
            "rate_limit",
            "Request rate limit exceeded. You can learn more about rate limits here https://stripe.com/docs/rate-limits.",
            None,
        );
        let secs = inner.retry_after_secs.load(Ordering::SeqCst).to_string();
        if let Ok(v) = secs.parse() {
            r.headers_mut().insert("retry-after", v);
        }
        return Err(r);
    }
    Ok(())
}

fn error(
    status: StatusCode,
    kind: &str,
    code: &str,
    message: &str,
    param: Option<&str>,
) -> Response {
    let mut body = json!({ "error": { "type": kind, "code": code, "message": message } });
    if let Some(p) = param {
        body["error"]["param"] = json!(p);
    }
    let mut r = (status, axum::Json(body)).into_response();
    if let Ok(v) = "req_stubExample".parse() {
        r.headers_mut().insert("request-id", v);
    }
    r
}

fn record(inner: &Inner, uri: &axum::http::Uri, headers: &HeaderMap, status: u16) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    inner
        .seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(Seen {
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            status,
            stripe_version: header("stripe-version"),
            context: header("stripe-context").or_else(|| header("stripe-account")),
            at: Instant::now(),
        });
}

/// Runs `gate`, then `found`; records the answer.
async fn answer(
    inner: &Inner,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    found: impl FnOnce(&Objects) -> Result<Value, Box<Response>>,
) -> Response {
    let response = match gate(inner, headers).await {
        Err(r) => r,
        Ok(()) => {
            let objects = inner
                .objects
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match found(&objects) {
                Ok(v) => axum::Json(v).into_response(),
                Err(r) => *r,
            }
        }
    };
    record(inner, uri, headers, response.status().as_u16());
    response
}

fn missing(what: &str, id: &str) -> Box<Response> {
    Box::new(error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "resource_missing",
        &format!("No such {what}: '{id}'"),
        Some("id"),
    ))
}

/// The v1 collections served, and the `object` each holds.
const V1: [(&str, &str); 5] = [
    ("events", "event"),
    ("accounts", "account"),
    ("payment_intents", "payment_intent"),
    ("payouts", "payout"),
    ("disputes", "dispute"),
];

async fn v1(
    State(inner): State<Arc<Inner>>,
    Path((collection, id)): Path<(String, String)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let Some((_, object)) = V1.iter().find(|(c, _)| *c == collection) else {
        return unknown(uri).await;
    };
    answer(&inner, &uri, &headers, |o| {
        o.v1.get(&id)
            .filter(|v| v["object"] == *object)
            .cloned()
            .ok_or_else(|| missing(object, &id))
    })
    .await
}

/// `GET /v1/balance`: Stripe's published balance.
async fn balance(
    State(inner): State<Arc<Inner>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    answer(&inner, &uri, &headers, |_| Ok(parse(published::BALANCE))).await
}

/// `GET /v1/events`: every event put, newest first, on one page.
async fn v1_events(
    State(inner): State<Arc<Inner>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    answer(&inner, &uri, &headers, |o| {
        let data: Vec<Value> = o.v1_events.iter().rev().cloned().collect();
        Ok(json!({ "object": "list", "url": "/v1/events", "has_more": false, "data": data }))
    })
    .await
}

async fn v2_account(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    v2_object(&inner, &uri, &headers, "account", &id, |o| &o.v2_accounts).await
}

async fn v2_event(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    v2_object(&inner, &uri, &headers, "event", &id, |o| &o.v2_events).await
}

/// A v2 object by id from the collection `of` picks.
async fn v2_object(
    inner: &Inner,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    what: &str,
    id: &str,
    of: fn(&Objects) -> &HashMap<String, Value>,
) -> Response {
    answer(inner, uri, headers, |o| {
        of(o).get(id).cloned().ok_or_else(|| missing(what, id))
    })
    .await
}

async fn unknown(uri: axum::http::Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "resource_missing",
        &format!("Unrecognized request URL (GET: {}).", uri.path()),
        None,
    )
}
