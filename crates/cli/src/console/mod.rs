//! `hookline console`: one page for incident recovery.
//!
//! Server-rendered HTML (a small script refreshes the counts and follows a
//! replay's progress), from the same settings as the other commands. It
//! shows the queue and the DLQ at a glance, the DLQ grouped by reason and by
//! type, looks up an event and what it projected, and does two things: a
//! filtered replay (dry-run count first, then confirm, then progress) and
//! an export as JSON lines. Nothing else is writable.
//!
//! Safety: it binds to loopback by default; any other address requires
//! `CONSOLE_TOKEN` (a bearer token, or the login form's HttpOnly,
//! SameSite=Strict cookie), compared in constant time. Every state-changing
//! request is a POST with the page's CSRF token. No secret is ever rendered,
//! nor a raw body unless the operator opens one message. Every answer
//! carries a strict Content-Security-Policy (no inline script or style).

mod page;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::extract::{Form, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hookline_backend::Backend;
use hookline_core::ports::{Queue, Store};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::dlq::{self, Entry, Filter, ReplayOptions, Summary};
use crate::opts::BackendOpts;

/// Settings of `hookline console`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConsoleArgs {
    /// Listen address; anything but loopback requires CONSOLE_TOKEN.
    #[arg(long, env = "CONSOLE_ADDR", default_value = "127.0.0.1:8090")]
    pub console_addr: String,
    /// Token a request must carry (bearer, or the login form's cookie). Never printed.
    #[arg(long, env = "CONSOLE_TOKEN", hide_env_values = true)]
    pub console_token: Option<SecretString>,
    #[command(flatten)]
    pub backend: BackendOpts,
}

const COOKIE: &str = "hookline_console";
/// How long the console holds DLQ messages while it reads them.
const LOOK_HOLD: Duration = Duration::from_secs(10);
/// Messages read for the page at most.
const LOOK_LIMIT: usize = 2000;
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Shared by every request.
struct Console {
    backend: Backend,
    dlq: Arc<dyn Queue>,
    token: Option<SecretString>,
    csrf: String,
    job: Mutex<Job>,
}

/// The replay in progress or last finished.
#[derive(Debug, Clone, Default, Serialize)]
struct Job {
    running: bool,
    started: bool,
    replayed: u64,
    skipped: u64,
    failed: u64,
    /// What the dry run counted before it started.
    planned: u64,
    error: Option<String>,
}

/// Runs the console until ctrl-c or SIGTERM.
pub async fn cmd(args: &ConsoleArgs) -> anyhow::Result<std::process::ExitCode> {
    let addr: SocketAddr = args
        .console_addr
        .parse()
        .with_context(|| format!("CONSOLE_ADDR {} is not an address", args.console_addr))?;
    if !addr.ip().is_loopback() && args.console_token.is_none() {
        anyhow::bail!(
            "CONSOLE_ADDR {addr} is not a loopback address: set CONSOLE_TOKEN (or bind 127.0.0.1)"
        );
    }
    let (backend, dlq) = args.backend.open_with_dlq().await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    eprintln!("hookline console on http://{local}/ ({})", backend.kind);
    let console = Arc::new(Console {
        backend,
        dlq,
        token: args.console_token.clone(),
        csrf: uuid::Uuid::new_v4().simple().to_string(),
        job: Mutex::new(Job::default()),
    });
    let shutdown = hookline_core::shutdown::on_signal();
    axum::serve(listener, router(console))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(std::process::ExitCode::SUCCESS)
}

fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/api/summary", get(summary))
        .route("/message", get(message))
        .route("/export", get(export))
        .route("/replay/preview", post(preview))
        .route("/replay", post(replay))
        .route("/replay/status", get(status))
        .route("/static/console.js", get(script))
        .route("/static/console.css", get(style))
        .layer(middleware::from_fn_with_state(Arc::clone(&console), guard))
        .route("/login", post(login))
        .layer(middleware::from_fn(headers))
        .with_state(console)
}

/// Strict headers on every answer.
async fn headers(request: Request, next: Next) -> Response {
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

fn same(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// With a token set, every request carries it (bearer or cookie); every
/// POST carries the CSRF token (form field or header).
async fn guard(State(c): State<Arc<Console>>, request: Request, next: Next) -> Response {
    if let Some(token) = &c.token {
        let headers = request.headers();
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let cookie = cookie(headers, COOKIE);
        let expected = token.expose_secret();
        let ok = bearer.is_some_and(|b| same(b, expected))
            || cookie.as_deref().is_some_and(|b| same(b, expected));
        if !ok {
            return (StatusCode::UNAUTHORIZED, Html(page::login())).into_response();
        }
    }
    if request.method() == axum::http::Method::POST {
        let header_token = request
            .headers()
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if !header_token.is_some_and(|t| same(&t, &c.csrf)) {
            return (StatusCode::FORBIDDEN, "missing or wrong CSRF token").into_response();
        }
    }
    next.run(request).await
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

/// The login form: sets an HttpOnly, SameSite=Strict cookie when the token
/// is right.
async fn login(State(c): State<Arc<Console>>, Form(form): Form<LoginForm>) -> Response {
    let Some(token) = &c.token else {
        return axum::response::Redirect::to("/").into_response();
    };
    if !same(&form.token, token.expose_secret()) {
        return (StatusCode::UNAUTHORIZED, Html(page::login())).into_response();
    }
    let mut response = axum::response::Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
        form.token
    )) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// What the page shows, also as JSON for the refresh.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overview {
    pub waiting: u64,
    pub in_flight: u64,
    pub dead_lettered: u64,
    /// Age of the oldest dead-lettered event, seconds.
    pub oldest_dead_secs: Option<u64>,
    pub by_reason: Vec<Group>,
    pub by_type: Vec<Group>,
    /// Completions in the last five minutes, where the store can tell.
    pub recent: Option<hookline_core::ports::RecentActivity>,
    /// Whether the groups were read now. While a replay runs the console
    /// does not look into the DLQ: a look holds messages for a moment, and
    /// the replay would take them for gone and end early.
    pub groups_current: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Group {
    pub key: String,
    pub count: usize,
    pub oldest_secs: u64,
    pub newest_secs: u64,
    pub messages: Vec<Row>,
}

/// One DLQ message as the page lists it: the `dlq list` entry and the
/// message id to open it by (no body).
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub message_id: String,
    #[serde(flatten)]
    pub entry: Entry,
}

/// Reads the DLQ (held briefly, then released) and groups it; only the
/// counts while a replay runs.
async fn overview(c: &Console) -> anyhow::Result<Overview> {
    let stats = dlq::stats(c.backend.queue.as_ref(), c.dlq.as_ref()).await?;
    let replaying = c.job.lock().map(|j| j.running).unwrap_or(true);
    if replaying {
        return Ok(Overview {
            waiting: stats.waiting,
            in_flight: stats.in_flight,
            dead_lettered: stats.dead_lettered,
            ..Overview::default()
        });
    }
    let cancel = CancellationToken::new();
    let mut peek = dlq::Peek::new(c.dlq.as_ref(), Some(LOOK_LIMIT), LOOK_HOLD);
    let now = hookline_core::clock::unix_millis();
    let mut rows = Vec::new();
    let read: anyhow::Result<()> = async {
        loop {
            let batch = peek.next_batch(&cancel).await?;
            if batch.is_empty() {
                return Ok(());
            }
            for d in &batch {
                rows.push(Row {
                    message_id: d.message_id.clone(),
                    entry: dlq::entry(d, c.backend.store.as_ref(), now).await,
                });
            }
        }
    }
    .await;
    dlq::release(c.dlq.as_ref(), peek.held()).await;
    read?;
    let group = |key: &dyn Fn(&Row) -> String| -> Vec<Group> {
        let mut groups: BTreeMap<String, Group> = BTreeMap::new();
        for r in &rows {
            let g = groups.entry(key(r)).or_insert_with(|| Group {
                key: key(r),
                newest_secs: u64::MAX,
                ..Group::default()
            });
            g.count += 1;
            g.oldest_secs = g.oldest_secs.max(r.entry.age_secs);
            g.newest_secs = g.newest_secs.min(r.entry.age_secs);
            g.messages.push(r.clone());
        }
        let mut v: Vec<Group> = groups.into_values().collect();
        v.sort_by(|a, b| b.count.cmp(&a.count).then(a.key.cmp(&b.key)));
        v
    };
    let by_reason = group(&|r: &Row| reason_key(r.entry.reason.as_deref()));
    let by_type = group(&|r: &Row| {
        r.entry
            .event_type
            .clone()
            .unwrap_or_else(|| "(unknown)".to_owned())
    });
    let recent = c
        .backend
        .store
        .recent(hookline_core::clock::unix_secs() - 300)
        .await
        .ok()
        .flatten();
    Ok(Overview {
        waiting: stats.waiting,
        in_flight: stats.in_flight,
        dead_lettered: stats.dead_lettered,
        oldest_dead_secs: rows.iter().map(|r| r.entry.age_secs).max(),
        by_reason,
        by_type,
        recent,
        groups_current: true,
    })
}

/// Reasons group by their first line, cut at 120 characters.
fn reason_key(reason: Option<&str>) -> String {
    let Some(r) = reason else {
        return "(no reason recorded)".to_owned();
    };
    let line = r.lines().next().unwrap_or("");
    line.chars().take(120).collect()
}

fn failure(error: &anyhow::Error) -> Response {
    // The detail (possibly with AWS error text) goes to the operator's
    // terminal, not into the page.
    eprintln!("console: {error:#}");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the queue or the store did not answer; see the console's terminal",
    )
        .into_response()
}

#[derive(Deserialize, Default)]
struct IndexQuery {
    lookup: Option<String>,
}

async fn index(State(c): State<Arc<Console>>, Query(q): Query<IndexQuery>) -> Response {
    let overview = match overview(&c).await {
        Ok(o) => o,
        Err(e) => return failure(&e),
    };
    let lookup = match q.lookup.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(id) => Some(lookup(c.backend.store.as_ref(), id).await),
    };
    let job = c.job.lock().map(|j| j.clone()).unwrap_or_default();
    Html(page::index(
        &overview,
        lookup.as_ref(),
        &job_view(&job),
        &c.csrf,
    ))
    .into_response()
}

async fn summary(State(c): State<Arc<Console>>) -> Response {
    match overview(&c).await {
        Ok(o) => Json(o).into_response(),
        Err(e) => failure(&e),
    }
}

/// An event's ledger item and the item it projected.
pub struct Lookup {
    pub id: String,
    pub ledger: Option<serde_json::Value>,
    pub item: Option<serde_json::Value>,
    pub error: Option<String>,
}

async fn lookup(store: &dyn Store, id: &str) -> Lookup {
    let mut out = Lookup {
        id: id.to_owned(),
        ledger: None,
        item: None,
        error: None,
    };
    // An event id finds its ledger item, then what it projected; any other
    // id is taken as an object or account id.
    if id.starts_with("evt_") {
        match store.event(id).await {
            Ok(Some(rec)) => {
                let object = rec.object_id.clone();
                out.ledger = serde_json::to_value(rec).ok();
                if let Some(object) = object {
                    out.item = store
                        .item(&object)
                        .await
                        .ok()
                        .flatten()
                        .map(|i| serde_json::Value::Object(i.0));
                }
            }
            Ok(None) => out.error = Some("no such event in the ledger".to_owned()),
            Err(e) => {
                eprintln!("console: lookup {id}: {e}");
                out.error = Some("the store did not answer".to_owned());
            }
        }
    } else {
        match store.item(id).await {
            Ok(Some(i)) => out.item = Some(serde_json::Value::Object(i.0)),
            Ok(None) => out.error = Some("no such object or account".to_owned()),
            Err(e) => {
                eprintln!("console: lookup {id}: {e}");
                out.error = Some("the store did not answer".to_owned());
            }
        }
    }
    out
}

#[derive(Deserialize)]
struct MessageQuery {
    id: String,
}

/// One message opened by the operator: the only place a raw body shows.
async fn message(State(c): State<Arc<Console>>, Query(q): Query<MessageQuery>) -> Response {
    let cancel = CancellationToken::new();
    let mut peek = dlq::Peek::new(c.dlq.as_ref(), Some(LOOK_LIMIT), LOOK_HOLD);
    let mut found = None;
    loop {
        match peek.next_batch(&cancel).await {
            Ok(batch) if batch.is_empty() => break,
            Ok(batch) => {
                if let Some(d) = batch.into_iter().find(|d| d.message_id == q.id) {
                    found = Some(d);
                    break;
                }
            }
            Err(e) => {
                dlq::release(c.dlq.as_ref(), peek.held()).await;
                return failure(&e.into());
            }
        }
    }
    dlq::release(c.dlq.as_ref(), peek.held()).await;
    match found {
        Some(d) => Html(page::message(&d)).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "no such message in the dead-letter queue",
        )
            .into_response(),
    }
}

/// The replay and export filters, as the CLI's `dlq replay` takes them.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct FilterForm {
    #[serde(default)]
    pub event_type: String,
    #[serde(default)]
    pub event_id: String,
    #[serde(default)]
    pub older_than: String,
    #[serde(default)]
    pub newer_than: String,
    #[serde(default)]
    pub limit: String,
}

impl FilterForm {
    fn options(&self, dry_run: bool) -> Result<ReplayOptions, String> {
        let list = |s: &str| -> Vec<String> {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let duration = |s: &str, what: &str| -> Result<Option<Duration>, String> {
            let s = s.trim();
            if s.is_empty() {
                return Ok(None);
            }
            humantime::parse_duration(s)
                .map(Some)
                .map_err(|e| format!("{what}: {e}"))
        };
        let limit = match self.limit.trim() {
            "" => None,
            s => Some(s.parse::<u64>().map_err(|e| format!("limit: {e}"))?),
        };
        Ok(ReplayOptions {
            filter: Filter {
                event_types: list(&self.event_type),
                event_ids: list(&self.event_id),
                older_than: duration(&self.older_than, "older than")?,
                newer_than: duration(&self.newer_than, "newer than")?,
            },
            limit,
            rate: None,
            dry_run,
            hold: Duration::from_secs(60),
            parallel: dlq::DEFAULT_PARALLEL,
        })
    }
}

async fn preview(State(c): State<Arc<Console>>, Form(form): Form<FilterForm>) -> Response {
    let options = match form.options(true) {
        Ok(o) => o,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let cancel = CancellationToken::new();
    match dlq::replay(
        c.backend.queue.as_ref(),
        c.dlq.as_ref(),
        &options,
        &cancel,
        |_| {},
    )
    .await
    {
        Ok(s) => Json(s).into_response(),
        Err(e) => failure(&e.into()),
    }
}

async fn replay(State(c): State<Arc<Console>>, Form(form): Form<FilterForm>) -> Response {
    let options = match form.options(false) {
        Ok(o) => o,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    {
        let Ok(mut job) = c.job.lock() else {
            return (StatusCode::INTERNAL_SERVER_ERROR, "job state").into_response();
        };
        if job.running {
            return (StatusCode::CONFLICT, "a replay is already running").into_response();
        }
        *job = Job {
            running: true,
            started: true,
            ..Job::default()
        };
    }
    // The dry-run count the operator confirmed, for the progress bar.
    let planned = {
        let dry = ReplayOptions {
            dry_run: true,
            ..options.clone()
        };
        dlq::replay(
            c.backend.queue.as_ref(),
            c.dlq.as_ref(),
            &dry,
            &CancellationToken::new(),
            |_| {},
        )
        .await
        .map(|s| s.replayed)
        .unwrap_or(0)
    };
    if let Ok(mut job) = c.job.lock() {
        job.planned = planned;
    }
    let console = Arc::clone(&c);
    tokio::spawn(async move {
        let c = console;
        let result = dlq::replay(
            c.backend.queue.as_ref(),
            c.dlq.as_ref(),
            &options,
            &CancellationToken::new(),
            |s: &Summary| {
                if let Ok(mut job) = c.job.lock() {
                    job.replayed = s.replayed;
                    job.skipped = s.skipped;
                    job.failed = s.failed;
                }
            },
        )
        .await;
        let finished = c.job.lock().map(|mut job| {
            job.running = false;
            match result {
                Ok(s) => {
                    job.replayed = s.replayed;
                    job.skipped = s.skipped;
                    job.failed = s.failed;
                }
                Err(e) => {
                    eprintln!("console: replay: {e}");
                    job.error = Some("the replay stopped: the queue did not answer".to_owned());
                }
            }
        });
        if finished.is_err() {
            eprintln!("console: replay state unavailable");
        }
    });
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"started": true, "planned": planned})),
    )
        .into_response()
}

/// The job as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub started: bool,
    pub running: bool,
    pub planned: u64,
    pub replayed: u64,
    pub skipped: u64,
    pub failed: u64,
    pub error: Option<String>,
}

fn job_view(j: &Job) -> JobView {
    JobView {
        started: j.started,
        running: j.running,
        planned: j.planned,
        replayed: j.replayed,
        skipped: j.skipped,
        failed: j.failed,
        error: j.error.clone(),
    }
}

async fn status(State(c): State<Arc<Console>>) -> Response {
    let job = c.job.lock().map(|j| j.clone()).unwrap_or_default();
    Json(job_view(&job)).into_response()
}

/// The filtered DLQ as JSON lines (the `dlq export` format), nothing removed.
async fn export(State(c): State<Arc<Console>>, Query(form): Query<FilterForm>) -> Response {
    let options = match form.options(true) {
        Ok(o) => o,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let cancel = CancellationToken::new();
    let mut peek = dlq::Peek::new(c.dlq.as_ref(), None, LOOK_HOLD);
    let now = hookline_core::clock::unix_millis();
    let mut out = String::new();
    let mut written = 0u64;
    let read: anyhow::Result<()> = async {
        loop {
            let batch = peek.next_batch(&cancel).await?;
            if batch.is_empty() {
                return Ok(());
            }
            for d in batch {
                if !options.filter.matches(&d, now) || options.limit.is_some_and(|l| written >= l) {
                    continue;
                }
                let line = dlq::ExportLine {
                    entry: dlq::entry(&d, c.backend.store.as_ref(), now).await,
                    body: String::from_utf8_lossy(&d.body).into_owned(),
                    attributes: d.attributes,
                };
                out.push_str(&serde_json::to_string(&line)?);
                out.push('\n');
                written += 1;
            }
        }
    }
    .await;
    dlq::release(c.dlq.as_ref(), peek.held()).await;
    if let Err(e) = read {
        return failure(&e);
    }
    (
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"dlq-export.jsonl\"",
            ),
        ],
        out,
    )
        .into_response()
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("console.js"),
    )
        .into_response()
}

async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("console.css"),
    )
        .into_response()
}
