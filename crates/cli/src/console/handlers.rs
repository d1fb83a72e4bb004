//! The console's routes: read the DLQ and the store, render or answer JSON,
//! start a replay job. Auth and origin checks run before these (see the
//! middleware in `mod.rs`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::view::{self, Row};
use super::{auth, page, Console, COOKIE};
use crate::dlq::{self, Filter, ReplayOptions, Summary};

/// How long the console holds DLQ messages while it reads them.
const LOOK_HOLD: Duration = Duration::from_secs(10);
/// Messages read for the page at most.
const LOOK_LIMIT: usize = 2000;

fn failure(error: &anyhow::Error) -> Response {
    // The detail (possibly with AWS error text) goes to the console's log,
    // not into the page.
    tracing::error!(message = "Console: the queue or the store did not answer.", error = %format!("{error:#}"));
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the queue or the store did not answer; see the console's log",
    )
        .into_response()
}

/// While a replay runs, the console does not look into the DLQ: a look
/// holds messages for a moment, and the replay would take them for gone.
fn replay_running() -> Response {
    (
        StatusCode::CONFLICT,
        "a replay is running: the dead-letter queue is not read until it is done",
    )
        .into_response()
}

/// Why a request that reads the DLQ is refused.
enum Refused {
    BadForm(String),
    ReplayRunning,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Self::BadForm(e) => (StatusCode::BAD_REQUEST, e).into_response(),
            Self::ReplayRunning => replay_running(),
        }
    }
}

/// The options of a request that reads the DLQ without moving anything
/// (dry run, export): refused while a replay runs or when the form is bad.
fn reading_options(c: &Console, form: &FilterForm) -> Result<ReplayOptions, Refused> {
    let options = form.options(true).map_err(Refused::BadForm)?;
    if c.job().running() {
        return Err(Refused::ReplayRunning);
    }
    Ok(options)
}

/// Reads the DLQ (held briefly, then released) and groups it; only the
/// counts while a replay runs.
async fn overview(c: &Console) -> anyhow::Result<view::Overview> {
    let stats = dlq::stats(c.backend.queue.as_ref(), c.dlq.as_ref()).await?;
    // While anything else holds dead letters hidden (a replay, a `dlq
    // list`, an erase), the page shows counts only: its own look would hide
    // messages from a replay for as long as it reads.
    let others_reading = c.dlq.counts().await?.in_flight > 0;
    if c.job().running() || others_reading {
        return Ok(view::Overview {
            waiting: stats.waiting,
            in_flight: stats.in_flight,
            dead_lettered: stats.dead_lettered,
            oldest_dead_age: "-".to_owned(),
            ..view::Overview::default()
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
                    entry: dlq::entry_of(d, now),
                });
            }
        }
    }
    .await;
    // Released before the ledger is read, so the look hides each message
    // only for the receives, never past its hold.
    dlq::release(c.dlq.as_ref(), peek.held()).await;
    read?;
    for row in &mut rows {
        row.entry.fill_reason(c.backend.store.as_ref()).await;
    }
    let recent = c
        .backend
        .store
        .recent(hookline_core::clock::unix_secs() - 300)
        .await
        .ok()
        .flatten();
    Ok(view::overview(stats, &rows, recent))
}

#[derive(Deserialize, Default)]
pub(super) struct IndexQuery {
    lookup: Option<String>,
}

pub(super) async fn index(State(c): State<Arc<Console>>, Query(q): Query<IndexQuery>) -> Response {
    let overview = match overview(&c).await {
        Ok(o) => o,
        Err(e) => return failure(&e),
    };
    let lookup = match q.lookup.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(id) => {
            let mut l = view::lookup(c.backend.store.as_ref(), id).await;
            l.trace_url = view::trace_url(c.trace_url_template.as_deref(), l.ledger.as_ref());
            Some(l)
        }
    };
    let job = c.job().view();
    Html(page::index(&overview, lookup.as_ref(), &job, &c.csrf)).into_response()
}

pub(super) async fn summary(State(c): State<Arc<Console>>) -> Response {
    match overview(&c).await {
        Ok(o) => Json(o).into_response(),
        Err(e) => failure(&e),
    }
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    token: String,
}

/// The login form: a session cookie when the token is right. At most
/// `LOGIN_FAILURES` failures a minute per client; every failure is logged.
pub(super) async fn login(
    State(c): State<Arc<Console>>,
    info: ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let Some((token, sessions)) = &c.token else {
        return axum::response::Redirect::to("/").into_response();
    };
    let who = super::client(&info);
    let now = std::time::Instant::now();
    let limited = {
        let mut logins = c
            .logins
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if logins.allows(who, now) {
            None
        } else {
            Some(logins.retry_after(who, now))
        }
    };
    if let Some(wait) = limited {
        tracing::warn!(message = "Console: login refused, too many failures.", client = %who);
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            Html(page::login(Some(
                "Too many failed sign-ins: wait a minute.",
            ))),
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    if !auth::equal_in_constant_time(&form.token, secrecy::ExposeSecret::expose_secret(token)) {
        c.logins
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .failed(who, now);
        tracing::warn!(message = "Console: failed sign-in.", client = %who);
        return (
            StatusCode::UNAUTHORIZED,
            Html(page::login(Some("That is not the console's token."))),
        )
            .into_response();
    }
    tracing::info!(message = "Console: signed in.", client = %who);
    let secure = auth::over_tls(
        super::text(&headers, "x-forwarded-proto"),
        super::text(&headers, header::FORWARDED),
    );
    let session = sessions.issue(hookline_core::clock::unix_secs());
    let mut response = axum::response::Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&auth::session_cookie(COOKIE, &session, secure)) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

#[derive(Deserialize)]
pub(super) struct MessageQuery {
    id: String,
}

/// One message opened by the operator: the only place a raw body shows.
pub(super) async fn message(
    State(c): State<Arc<Console>>,
    Query(q): Query<MessageQuery>,
) -> Response {
    if c.job().running() {
        return replay_running();
    }
    let cancel = CancellationToken::new();
    let mut peek = dlq::Peek::new(c.dlq.as_ref(), Some(LOOK_LIMIT), LOOK_HOLD);
    let mut found = None;
    let read = loop {
        match peek.next_batch(&cancel).await {
            Ok(batch) if batch.is_empty() => break Ok(()),
            Ok(batch) => {
                if let Some(d) = batch.into_iter().find(|d| d.message_id == q.id) {
                    found = Some(d);
                    break Ok(());
                }
            }
            Err(e) => break Err(e),
        }
    };
    dlq::release(c.dlq.as_ref(), peek.held()).await;
    if let Err(e) = read {
        return failure(&e.into());
    }
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

pub(super) async fn preview(
    State(c): State<Arc<Console>>,
    Form(form): Form<FilterForm>,
) -> Response {
    let options = match reading_options(&c, &form) {
        Ok(o) => o,
        Err(refused) => return refused.into_response(),
    };
    let cancel = CancellationToken::new();
    match dlq::replay(&c.backend.queue, &c.dlq, &options, &cancel, |_| {}).await {
        Ok(s) => Json(s).into_response(),
        Err(e) => failure(&e.into()),
    }
}

/// Starts a replay job and answers at once (202): the job's own task
/// counts, replays and finishes it, whatever becomes of this request.
pub(super) async fn replay(
    State(c): State<Arc<Console>>,
    Form(form): Form<FilterForm>,
) -> Response {
    let options = match form.options(false) {
        Ok(o) => o,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let next = c.jobs_started.fetch_add(1, Ordering::Relaxed) + 1;
    let Ok(ticket) = c.job().start(next) else {
        return (StatusCode::CONFLICT, "a replay is already running").into_response();
    };
    tracing::info!(message = "Console: replay started.", filter = ?options.filter, limit = options.limit);
    let console = Arc::clone(&c);
    tokio::spawn(async move {
        let c = console;
        // The task's end, normal or not (a panic unwinds through here),
        // always ends the job.
        let ended = run_job(&c, ticket, options).await;
        if let Err(e) = &ended {
            tracing::error!(message = "Console: replay stopped.", error = %e);
        }
        c.job().finish(
            ticket,
            ended.map_err(|_| "the replay stopped: the queue did not answer".to_owned()),
        );
    });
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"started": true})),
    )
        .into_response()
}

/// The dry-run count the operator confirmed (for the progress bar), then
/// the replay with its progress.
async fn run_job(
    c: &Arc<Console>,
    ticket: super::job::Ticket,
    options: ReplayOptions,
) -> Result<Summary, hookline_core::ports::PortError> {
    struct EndsTheJob<'a>(&'a Console, super::job::Ticket);
    impl Drop for EndsTheJob<'_> {
        fn drop(&mut self) {
            // Only reached without `finish` (a panic): `finish` after a
            // normal end is a no-op for a job that already ended.
            if std::thread::panicking() {
                self.0
                    .job()
                    .finish(self.1, Err("the replay stopped unexpectedly".to_owned()));
            }
        }
    }
    let _guard = EndsTheJob(c, ticket);
    let dry = ReplayOptions {
        dry_run: true,
        ..options.clone()
    };
    let never = CancellationToken::new();
    let planned = dlq::replay(&c.backend.queue, &c.dlq, &dry, &never, |_| {})
        .await?
        .replayed;
    c.job().counted(ticket, planned);
    dlq::replay(&c.backend.queue, &c.dlq, &options, &never, |s: &Summary| {
        c.job().progressed(ticket, *s)
    })
    .await
}

pub(super) async fn status(State(c): State<Arc<Console>>) -> Response {
    Json(c.job().view()).into_response()
}

/// The filtered DLQ as JSON lines (the `dlq export` format), nothing removed.
pub(super) async fn export(
    State(c): State<Arc<Console>>,
    Query(form): Query<FilterForm>,
) -> Response {
    let options = match reading_options(&c, &form) {
        Ok(o) => o,
        Err(refused) => return refused.into_response(),
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
    tracing::info!(message = "Console: DLQ exported.", messages = written);
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

pub(super) async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("console.js"),
    )
        .into_response()
}

pub(super) async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("console.css"),
    )
        .into_response()
}
