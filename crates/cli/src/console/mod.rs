//! `hookline console`: one page for incident recovery.
//!
//! Server-rendered HTML (a small script refreshes the counts and follows a
//! replay's progress), from the same settings as the other commands. It
//! shows the queue and the DLQ at a glance, the DLQ grouped by reason and by
//! type, looks up an event and what it projected, and does two things: a
//! filtered replay (dry-run count first, then confirm, then progress) and
//! an export as JSON lines. Nothing else is writable.
//!
//! Safety:
//! - It answers only requests whose `Host` names the console itself (the
//!   loopback names with its port, its own address, `CONSOLE_ALLOWED_HOSTS`):
//!   a page whose name was rebound to 127.0.0.1 gets 421 and nothing else.
//! - It binds to loopback by default; any other address requires
//!   `CONSOLE_TOKEN` (at least 32 printable characters). A request carries
//!   the token as a bearer token, or the session cookie the login form sets
//!   (HttpOnly, SameSite=Strict, an HMAC of its expiry under a key derived
//!   from the token, never the token). Failed logins are limited per client
//!   and logged.
//! - Every POST comes from the console's own page (`Origin` or
//!   `Sec-Fetch-Site`) and carries the page's CSRF token in the
//!   `x-csrf-token` header, compared in constant time; the login form, which
//!   has no token yet, is checked for its origin only.
//! - No secret is ever rendered, nor a raw body unless the operator opens
//!   one message. Every answer carries a strict Content-Security-Policy (no
//!   inline script or style). HTML is rendered by maud, escaping every value.
//!
//! Parts: [`auth`] (token, sessions, login limit, host and origin rules),
//! [`job`] (the replay job's state machine), [`view`] (the overview and
//! lookups as values), [`page`] (HTML), [`handlers`] (the routes).

mod auth;
mod handlers;
mod job;
mod page;
mod view;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hookline_backend::Backend;
use hookline_core::ports::Queue;
use secrecy::{ExposeSecret, SecretString};

use crate::opts::BackendOpts;

use auth::check_token;
use job::Job;

/// Settings of `hookline console`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConsoleArgs {
    /// Listen address; anything but loopback requires CONSOLE_TOKEN.
    #[arg(long, env = "CONSOLE_ADDR", default_value = "127.0.0.1:8090")]
    pub console_addr: String,
    /// Token a request must carry (bearer, or sign in with it on the page): at least 32 printable characters. Never printed.
    #[arg(long, env = "CONSOLE_TOKEN", hide_env_values = true)]
    pub console_token: Option<SecretString>,
    /// Host names (comma-separated, `name` or `name:port`) the console answers besides loopback and its own address, for example the name of a proxy in front of it.
    #[arg(long, env = "CONSOLE_ALLOWED_HOSTS", value_delimiter = ',')]
    pub console_allowed_hosts: Vec<String>,
    /// Link to an event's trace: a URL with `{trace_id}` (32 hex digits) or `{xray_trace_id}` (X-Ray's `1-…-…`), for example `https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1#xray:traces/{xray_trace_id}`.
    #[arg(long, env = "TRACE_URL_TEMPLATE")]
    pub trace_url_template: Option<String>,
    #[command(flatten)]
    pub backend: BackendOpts,
}

const COOKIE: &str = "hookline_console";
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Shared by every request.
struct Console {
    backend: Backend,
    dlq: Arc<dyn Queue>,
    /// Set with `CONSOLE_TOKEN`: the token and the sessions derived from it.
    token: Option<(SecretString, auth::Sessions)>,
    hosts: auth::Hosts,
    csrf: String,
    job: Mutex<Job>,
    jobs_started: std::sync::atomic::AtomicU64,
    logins: Mutex<auth::LoginLimiter>,
    trace_url_template: Option<String>,
}

impl Console {
    fn job(&self) -> std::sync::MutexGuard<'_, Job> {
        self.job
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Runs the console until ctrl-c or SIGTERM.
pub async fn cmd(args: &ConsoleArgs) -> anyhow::Result<std::process::ExitCode> {
    hookline_settings::init_logging("hookline-console", args.backend.common.log_format());
    let addr: SocketAddr = args
        .console_addr
        .parse()
        .with_context(|| format!("CONSOLE_ADDR {} is not an address", args.console_addr))?;
    if let Some(token) = &args.console_token {
        check_token(token.expose_secret())?;
    } else if !addr.ip().is_loopback() {
        anyhow::bail!(
            "CONSOLE_ADDR {addr} is not a loopback address: set CONSOLE_TOKEN (or bind 127.0.0.1)"
        );
    }
    if let Some(template) = &args.trace_url_template {
        view::check_trace_template(template)?;
    }
    let (backend, dlq) = args.backend.open_with_dlq().await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    tracing::info!(
        message = "Console listening.",
        url = %format!("http://{local}/"),
        backend = %backend.kind,
        token = args.console_token.is_some(),
    );
    let console = Arc::new(Console {
        backend,
        dlq,
        token: args
            .console_token
            .clone()
            .map(|t| (t.clone(), auth::Sessions::new(t.expose_secret()))),
        hosts: auth::Hosts::new(local, &args.console_allowed_hosts),
        csrf: uuid::Uuid::new_v4().simple().to_string(),
        job: Mutex::new(Job::default()),
        jobs_started: std::sync::atomic::AtomicU64::new(0),
        logins: Mutex::new(auth::LoginLimiter::default()),
        trace_url_template: args.trace_url_template.clone(),
    });
    let shutdown = hookline_core::shutdown::on_signal();
    axum::serve(
        listener,
        router(console).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await?;
    Ok(std::process::ExitCode::SUCCESS)
}

fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/", get(handlers::index))
        .route("/api/summary", get(handlers::summary))
        .route("/message", get(handlers::message))
        .route("/export", get(handlers::export))
        .route("/replay/preview", post(handlers::preview))
        .route("/replay", post(handlers::replay))
        .route("/replay/status", get(handlers::status))
        .route("/static/console.js", get(handlers::script))
        .route("/static/console.css", get(handlers::style))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&console),
            signed_in,
        ))
        .route("/login", post(handlers::login))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&console),
            same_site,
        ))
        .layer(middleware::from_fn(strict_headers))
        .with_state(console)
}

/// Strict headers on every answer.
async fn strict_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn text(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Every request names the console's own host (DNS rebinding: 421), and
/// every POST comes from the console's own page (403). Neither answer
/// carries data.
async fn same_site(State(c): State<Arc<Console>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let host = text(headers, header::HOST).unwrap_or("");
    if !c.hosts.allows(host) {
        tracing::warn!(message = "Console: request for another host refused.", host);
        return StatusCode::MISDIRECTED_REQUEST.into_response();
    }
    if request.method() == axum::http::Method::POST
        && !auth::same_origin(
            text(headers, header::ORIGIN),
            text(headers, "sec-fetch-site"),
            host,
        )
    {
        tracing::warn!(
            message = "Console: cross-site POST refused.",
            origin = text(headers, header::ORIGIN),
            path = request.uri().path()
        );
        return StatusCode::FORBIDDEN.into_response();
    }
    next.run(request).await
}

/// With a token set, every request carries it (bearer) or a valid session
/// cookie; every POST carries the CSRF token in its header.
async fn signed_in(State(c): State<Arc<Console>>, request: Request, next: Next) -> Response {
    if let Some((token, sessions)) = &c.token {
        let headers = request.headers();
        let bearer = text(headers, header::AUTHORIZATION).and_then(|v| v.strip_prefix("Bearer "));
        let now = hookline_core::clock::unix_secs();
        let ok = bearer.is_some_and(|b| auth::equal_in_constant_time(b, token.expose_secret()))
            || cookie(headers, COOKIE).is_some_and(|s| sessions.valid(s, now));
        if !ok {
            return (
                StatusCode::UNAUTHORIZED,
                axum::response::Html(page::login(None)),
            )
                .into_response();
        }
    }
    if request.method() == axum::http::Method::POST {
        let sent = text(request.headers(), "x-csrf-token");
        if !sent.is_some_and(|t| auth::equal_in_constant_time(t, &c.csrf)) {
            return (StatusCode::FORBIDDEN, "missing or wrong CSRF token").into_response();
        }
    }
    next.run(request).await
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The client a login attempt comes from (the proxy, behind one).
fn client(info: &ConnectInfo<SocketAddr>) -> std::net::IpAddr {
    info.0.ip()
}
