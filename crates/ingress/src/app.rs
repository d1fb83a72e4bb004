use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hookline_backend::{Backend, Tuning};
use hookline_core::clock::unix_secs;
use hookline_core::coalescer::SendCoalescer;
use hookline_core::envelope::Envelope;
use hookline_core::inbound::{admit, Ignored};
use hookline_core::loaded::{self, Loaded, LoadedSecrets};
use hookline_core::message::{attr, OutboundMessage};
use hookline_core::ports::Queue;
use hookline_core::secrets::{parse_webhook_secrets, SecretRuleError, SecretSetting, SecretSource};
use hookline_core::settings::{AppEnv, EventFilter};
use hookline_signature::Verifier;
use hookline_telemetry::{failed, outcome, step};
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::IngressMetrics;
use crate::settings::IngressArgs;

const RECEIVED: &str = r#"{"received":true}"#;
const BAD_SIGNATURE: &str = r#"{"error":"Webhook signature verification failed"}"#;
const BAD_PAYLOAD: &str = r#"{"error":"Invalid event payload"}"#;
const TOO_LARGE: &str = r#"{"error":"Payload too large"}"#;
const QUEUE_UNAVAILABLE: &str = r#"{"error":"Queue unavailable"}"#;
const BUSY: &str = r#"{"error":"Server busy"}"#;

/// Why the ingress cannot start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Rule(#[from] SecretRuleError),
    #[error(transparent)]
    Backend(#[from] hookline_backend::BackendError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("WEBHOOK_PATH must start with '/'")]
    WebhookPath,
}

/// Everything a request needs, shared by all requests.
#[derive(Debug)]
pub struct AppState {
    verifier: RwLock<Arc<Verifier>>,
    /// Set while refreshing secrets from Secrets Manager fails: the last good
    /// value keeps serving and `/readyz` says so.
    secret_refresh_error: RwLock<Option<&'static str>>,
    /// The webhook secret's version as last loaded, told on `/metrics`.
    loaded: LoadedSecrets,
    coalescer: SendCoalescer,
    queue: Arc<dyn Queue>,
    app_env: AppEnv,
    enabled: EventFilter,
    tolerance_secs: u64,
    max_body_bytes: usize,
    enqueue_timeout: Duration,
    /// Bytes of bodies being read, across all requests (one permit a byte).
    body_memory: tokio::sync::Semaphore,
    pub metrics: IngressMetrics,
}

impl AppState {
    fn set_secrets(&self, secrets: &[secrecy::SecretString]) {
        let verifier = Arc::new(Verifier::new(
            secrets.iter().map(|s| s.expose_secret().as_bytes()),
        ));
        match self.verifier.write() {
            Ok(mut v) => *v = verifier,
            Err(poisoned) => *poisoned.into_inner() = verifier,
        }
    }

    fn set_refresh_error(&self, error: Option<&'static str>) {
        match self.secret_refresh_error.write() {
            Ok(mut e) => *e = error,
            Err(poisoned) => *poisoned.into_inner() = error,
        }
    }

    fn refresh_error(&self) -> Option<&'static str> {
        match self.secret_refresh_error.read() {
            Ok(e) => *e,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    fn verifier(&self) -> Arc<Verifier> {
        match self.verifier.read() {
            Ok(v) => Arc::clone(&v),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    pub fn coalescer(&self) -> &SendCoalescer {
        &self.coalescer
    }
}

/// The ingress's routes over `state`: the webhook path, `/healthz`,
/// `/readyz` and `/metrics`.
pub fn router(state: Arc<AppState>, webhook_path: &str, request_timeout: Duration) -> Router {
    Router::new()
        .route(webhook_path, post(webhook))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .with_state(state)
}

/// A bound, ready-to-run ingress (port 0 in tests).
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: Arc<AppState>,
    limits: crate::serve::ConnectionLimits,
    emf: hookline_settings::EmfSettings,
}

impl Application {
    /// Loads secrets, opens the backend and binds the listener.
    pub async fn build(args: IngressArgs, tuning: Tuning) -> Result<Self, BuildError> {
        let plain = Self::check_settings(&args)?;
        let backend: Backend = hookline_backend::open(&args.common, &args.tables, tuning).await?;
        Self::build_on(args, backend, plain).await
    }

    /// Builds on a backend the caller opened (benchmarks put decorators in
    /// front of the ports this way).
    pub async fn build_with_backend(
        args: IngressArgs,
        backend: Backend,
    ) -> Result<Self, BuildError> {
        let plain = Self::check_settings(&args)?;
        Self::build_on(args, backend, plain).await
    }

    /// What can be checked before anything is opened: the path, and the
    /// settings that win when they are plain values (a Secrets Manager id
    /// wins over them and is read once the backend is open). Returns the
    /// plain webhook secrets, when they win.
    fn check_settings(
        args: &IngressArgs,
    ) -> Result<Option<Vec<secrecy::SecretString>>, BuildError> {
        if !args.webhook_path.starts_with('/') {
            return Err(BuildError::WebhookPath);
        }
        args.common.check_plain_key()?;
        let webhook = &args.webhook;
        match SecretSetting::of(
            &webhook.stripe_webhook_secret_id,
            &webhook.stripe_webhook_secret,
        ) {
            SecretSetting::Plain(value) => Ok(Some(parse_webhook_secrets(value)?)),
            SecretSetting::Stored(_) => Ok(None),
            SecretSetting::Unset => Err(SecretRuleError::NoWebhookSecret.into()),
        }
    }

    async fn build_on(
        args: IngressArgs,
        backend: Backend,
        plain_secrets: Option<Vec<secrecy::SecretString>>,
    ) -> Result<Self, BuildError> {
        backend.api_key(&args.common).await?;
        let coalescer = SendCoalescer::spawn(Arc::clone(&backend.queue), backend.coalescer);
        let body_memory_bytes = u32::try_from(args.max_body_memory_bytes)
            .unwrap_or(u32::MAX)
            .max(u32::try_from(args.max_body_bytes).unwrap_or(u32::MAX));
        let state = Arc::new(AppState {
            verifier: RwLock::new(Arc::new(Verifier::new(Vec::<&[u8]>::new()))),
            secret_refresh_error: RwLock::new(None),
            loaded: LoadedSecrets::default(),
            coalescer,
            queue: Arc::clone(&backend.queue),
            app_env: args.common.app_env,
            enabled: args.events.enabled_events.clone(),
            tolerance_secs: args.webhook_tolerance_secs,
            max_body_bytes: args.max_body_bytes,
            enqueue_timeout: Duration::from_millis(args.enqueue_timeout_ms),
            body_memory: tokio::sync::Semaphore::new(body_memory_bytes as usize),
            metrics: IngressMetrics::default(),
        });
        match (plain_secrets, &args.webhook.stripe_webhook_secret_id) {
            (Some(secrets), _) => {
                state.set_secrets(&secrets);
                state
                    .loaded
                    .record(webhook_loaded(None, None, secrets.len()));
            }
            (None, Some(id)) => {
                let source = backend.secrets().await;
                let refresh = Duration::from_secs(args.common.secret_refresh_secs.max(1));
                // First load now, so a good secret is in place before we listen.
                refresh_secrets(&state, source.as_ref(), id).await;
                tokio::spawn(keep_secrets_fresh(
                    Arc::clone(&state),
                    source,
                    id.clone(),
                    refresh,
                ));
            }
            (None, None) => return Err(SecretRuleError::NoWebhookSecret.into()),
        }
        let secrets = state.verifier().secret_count();
        let router = router(
            Arc::clone(&state),
            &args.webhook_path,
            Duration::from_secs(args.request_timeout_secs),
        );
        let listener =
            TcpListener::bind(&args.bind_addr)
                .await
                .map_err(|source| BuildError::Bind {
                    addr: args.bind_addr.clone(),
                    source,
                })?;
        tracing::info!(
            message = "Ingress ready.",
            addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            path = %args.webhook_path,
            backend = %backend.kind,
            app_env = args.common.app_env.as_str(),
            secrets,
            enabled_events = %args.events.enabled_events,
        );
        let limits = crate::serve::ConnectionLimits {
            max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
            header_read_timeout: Duration::from_secs(args.header_read_timeout_secs),
            keep_alive_timeout: Duration::from_secs(args.keep_alive_timeout_secs),
            // In-flight requests are each bounded by the request timeout.
            drain: Duration::from_secs(args.request_timeout_secs) + Duration::from_millis(500),
        };
        Ok(Self {
            listener,
            router,
            state,
            limits,
            emf: args.emf.clone(),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn port(&self) -> u16 {
        self.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn state(&self) -> Arc<AppState> {
        Arc::clone(&self.state)
    }

    /// Serves until `shutdown` fires, then lets in-flight requests finish
    /// (each is bounded by `REQUEST_TIMEOUT_SECS`).
    pub async fn run_until(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let state = Arc::clone(&self.state);
        let emf = hookline_core::emf::spawn(
            self.emf.emf_namespace.clone(),
            Duration::from_secs(self.emf.emf_interval_secs),
            "ingress",
            move || state.metrics.emf_samples(),
            shutdown.clone(),
        );
        crate::serve::serve(self.listener, self.router, self.limits, shutdown).await;
        if let Some(emf) = emf {
            let _ = tokio::time::timeout(Duration::from_millis(200), emf).await;
        }
        tracing::info!(message = "Ingress stopped.");
        Ok(())
    }
}

/// Why a refresh of the webhook secrets failed, in words of our own: the
/// AWS error text (account ids, role ARNs) goes to the log, never to
/// `/readyz`.
const PLACEHOLDER: &str = "the webhook secret in Secrets Manager is not a whsec_ value (a placeholder?): put the signing secret from the Stripe dashboard there";
const REFUSED: &str = "Secrets Manager refused to read the webhook secret (access denied, no such secret, or its KMS key)";
const UNREACHABLE: &str = "Secrets Manager did not answer";

/// Loads the webhook secrets from Secrets Manager once; on failure keeps the
/// last good value and records why.
async fn refresh_secrets(state: &AppState, reader: &dyn SecretSource, id: &str) {
    let loaded = match reader.fetch_versioned(id).await {
        Ok(v) => parse_webhook_secrets(&v.value)
            .map(|secrets| (secrets, v.version))
            .map_err(|e| (PLACEHOLDER, e.to_string())),
        Err(e) => Err((
            match e.kind() {
                hookline_core::ports::ErrorKind::Transient => UNREACHABLE,
                _ => REFUSED,
            },
            e.to_string(),
        )),
    };
    match loaded {
        Ok((secrets, version)) => {
            state.set_secrets(&secrets);
            state
                .loaded
                .record(webhook_loaded(Some(id), version, secrets.len()));
            if state.refresh_error().is_some() {
                tracing::info!(
                    message = "Webhook secrets refreshed again.",
                    secrets = secrets.len()
                );
            }
            state.set_refresh_error(None);
        }
        Err((problem, error)) => {
            let serving = state.verifier().secret_count();
            if problem == PLACEHOLDER {
                tracing::warn!(
                    message = "The webhook secret is a placeholder: webhooks answer 400 (Stripe retries them) until the whsec_ value is put in Secrets Manager; it is picked up on the next refresh, no restart needed.",
                    secret_id = id,
                    secrets_in_use = serving,
                    %error,
                );
            } else {
                tracing::warn!(
                    message = "Cannot refresh webhook secrets from Secrets Manager; keeping the last good value.",
                    secret_id = id,
                    secrets_in_use = serving,
                    %error,
                );
            }
            state.set_refresh_error(Some(problem));
        }
    }
}

/// The webhook secret as loaded now: from Secrets Manager `id` at
/// `version`, or from the environment.
fn webhook_loaded(id: Option<&str>, version: Option<String>, values: usize) -> Loaded {
    Loaded {
        secret: "webhook".to_owned(),
        source: match id {
            Some(_) => loaded::FROM_SECRETS_MANAGER,
            None => loaded::FROM_ENVIRONMENT,
        }
        .to_owned(),
        secret_id: id.map(str::to_owned),
        version,
        mode: None,
        values,
        loaded_at: hookline_core::clock::unix_secs(),
    }
}

async fn keep_secrets_fresh(
    state: Arc<AppState>,
    reader: Arc<dyn SecretSource>,
    id: String,
    every: Duration,
) {
    loop {
        // Until a first value is loaded, try again soon.
        let wait = if state.verifier().secret_count() == 0 {
            every.min(Duration::from_secs(5))
        } else {
            every
        };
        tokio::time::sleep(wait).await;
        refresh_secrets(&state, reader.as_ref(), &id).await;
    }
}

fn json(status: StatusCode, body: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn webhook(
    State(app): State<Arc<AppState>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    use tracing::Instrument;
    let start = Instant::now();
    app.metrics.received.inc();
    // The trace of this event: a `debug` span, left disabled unless spans
    // are exported (see `hookline_telemetry`).
    let span = tracing::debug_span!(
        "webhook",
        otel.name = %format_args!("POST {}", uri.path()),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = "POST",
        url.path = uri.path(),
        http.route = uri.path(),
        http.response.status_code = tracing::field::Empty,
        stripe.event_id = tracing::field::Empty,
        stripe.event_type = tracing::field::Empty,
        hookline.outcome = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    let outcome = handle_webhook(&app, &headers, body)
        .instrument(span.clone())
        .await;
    outcome.trace(&span);
    outcome.record(&app.metrics);
    app.metrics.latency.observe(start.elapsed());
    let response = outcome.into_response();
    if !span.is_disabled() {
        span.record(
            "http.response.status_code",
            i64::from(response.status().as_u16()),
        );
        if response.status().is_server_error() {
            span.record("otel.status_code", "ERROR");
        }
    }
    response
}

/// What became of one webhook request. One place logs and counts it
/// ([`WebhookOutcome::record`]) and one place answers it (`IntoResponse`,
/// the SPEC's "Ingress HTTP" table).
#[derive(Debug)]
enum WebhookOutcome {
    TooLarge,
    /// The body-memory budget is spent by other requests' bodies.
    Busy,
    BodyUnreadable(axum::Error),
    BadSignature(hookline_signature::SignatureError),
    InvalidPayload(hookline_core::envelope::EnvelopeError),
    Ignored(Envelope, Ignored),
    Enqueued(Envelope),
    QueueUnavailable(Envelope, Option<hookline_core::ports::PortError>),
}

impl WebhookOutcome {
    /// The outcome as a span attribute (`hookline.outcome`).
    fn label(&self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::Busy => "busy",
            Self::BodyUnreadable(_) => "body_unreadable",
            Self::BadSignature(_) => "bad_signature",
            Self::InvalidPayload(_) => "invalid_payload",
            Self::Ignored(..) => "ignored",
            Self::Enqueued(_) => "enqueued",
            Self::QueueUnavailable(..) => "queue_unavailable",
        }
    }

    /// Records the outcome, the event and, for a failure, its kind on the
    /// request's (`webhook`) span.
    fn trace(&self, span: &tracing::Span) {
        if span.is_disabled() {
            return;
        }
        span.record("hookline.outcome", self.label());
        match self {
            Self::Ignored(envelope, _) | Self::Enqueued(envelope) => {
                span.record("stripe.event_id", envelope.id.as_str());
                span.record("stripe.event_type", envelope.event_type.as_str());
            }
            Self::QueueUnavailable(envelope, error) => {
                span.record("stripe.event_id", envelope.id.as_str());
                span.record("stripe.event_type", envelope.event_type.as_str());
                span.record(
                    "error.type",
                    error.as_ref().map_or("timeout", |e| e.kind().as_str()),
                );
            }
            other => {
                span.record("error.type", other.label());
            }
        }
    }

    /// Whether the request got as far as a verified signature.
    fn verified(&self) -> bool {
        !matches!(
            self,
            Self::TooLarge | Self::Busy | Self::BodyUnreadable(_) | Self::BadSignature(_)
        )
    }

    fn record(&self, metrics: &IngressMetrics) {
        if self.verified() {
            metrics.verified.inc();
        }
        match self {
            Self::TooLarge => metrics.too_large.inc(),
            Self::Busy => {
                metrics.busy.inc();
                tracing::warn!(
                    message = "Body refused: MAX_BODY_MEMORY_BYTES is held by bodies being read."
                );
            }
            Self::BodyUnreadable(error) => {
                tracing::debug!(message = "Cannot read request body.", %error);
            }
            Self::BadSignature(reason) => {
                metrics.signature_failures.inc();
                tracing::warn!(message = "Webhook signature verification failed.", %reason);
            }
            Self::InvalidPayload(error) => {
                metrics.invalid_payload.inc();
                tracing::warn!(message = "Signed body is not a Stripe event.", %error);
            }
            Self::Ignored(envelope, Ignored::Livemode { livemode, app_env }) => {
                metrics.ignored_livemode.inc();
                tracing::info!(
                    message = "Event ignored: livemode does not match APP_ENV.",
                    event_id = %envelope.id,
                    event_type = %envelope.event_type,
                    livemode,
                    app_env = app_env.as_str(),
                );
            }
            Self::Ignored(envelope, Ignored::Ping) => {
                tracing::info!(
                    message = "Event destination ping acknowledged.",
                    event_id = %envelope.id,
                    livemode = envelope.livemode,
                );
            }
            Self::Ignored(
                envelope,
                Ignored::TypeNotEnabled | Ignored::NoHandler | Ignored::NoRoute,
            ) => {
                metrics.ignored_event_type.inc();
                tracing::info!(
                    message = "Event ignored: type not enabled.",
                    event_id = %envelope.id,
                    event_type = %envelope.event_type,
                );
            }
            Self::Enqueued(envelope) => {
                metrics.enqueued.inc();
                tracing::debug!(
                    message = "Event enqueued.",
                    event_id = %envelope.id,
                    event_type = %envelope.event_type,
                );
            }
            Self::QueueUnavailable(envelope, Some(error)) => {
                metrics.enqueue_failures.inc();
                tracing::error!(message = "Enqueue failed.", event_id = %envelope.id, %error);
            }
            Self::QueueUnavailable(envelope, None) => {
                metrics.enqueue_failures.inc();
                tracing::error!(message = "Enqueue timed out.", event_id = %envelope.id);
            }
        }
    }
}

impl IntoResponse for WebhookOutcome {
    fn into_response(self) -> Response {
        match self {
            Self::TooLarge => json(StatusCode::PAYLOAD_TOO_LARGE, TOO_LARGE),
            // Stripe retries a 503; nothing was accepted.
            Self::Busy => json(StatusCode::SERVICE_UNAVAILABLE, BUSY),
            Self::BodyUnreadable(_) | Self::InvalidPayload(_) => {
                json(StatusCode::BAD_REQUEST, BAD_PAYLOAD)
            }
            Self::BadSignature(_) => json(StatusCode::BAD_REQUEST, BAD_SIGNATURE),
            // Skipped events are acknowledged: Stripe retries any non-2xx.
            Self::Ignored(..) | Self::Enqueued(_) => json(StatusCode::OK, RECEIVED),
            Self::QueueUnavailable(..) => json(StatusCode::SERVICE_UNAVAILABLE, QUEUE_UNAVAILABLE),
        }
    }
}

/// The SPEC's order: body size, signature, payload, livemode and type,
/// enqueue; the first step that ends the request gives its outcome. Each
/// step is a span of the webhook's trace.
async fn handle_webhook(app: &AppState, headers: &HeaderMap, body: Body) -> WebhookOutcome {
    use tracing::Instrument;
    let raw = match read_body(app, headers, body).await {
        Ok(raw) => raw,
        Err(outcome) => return outcome,
    };
    let now = unix_secs();
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let span = step("verify");
    let verified = span.in_scope(|| {
        app.verifier()
            .verify(signature, &raw, now, app.tolerance_secs)
    });
    match &verified {
        Ok(_) => outcome(&span, "verified"),
        Err(reason) => failed(&span, reason.kind()),
    }
    drop(span);
    if let Err(reason) = verified {
        return WebhookOutcome::BadSignature(reason);
    }
    let span = step("parse");
    let parsed = span.in_scope(|| Envelope::parse(&raw));
    match &parsed {
        Ok(_) => outcome(&span, "parsed"),
        Err(_) => failed(&span, "invalid_payload"),
    }
    drop(span);
    let envelope = match parsed {
        Ok(envelope) => envelope,
        Err(error) => return WebhookOutcome::InvalidPayload(error),
    };
    let span = step("admit");
    let admitted = span.in_scope(|| admit(&envelope, app.app_env, &app.enabled));
    match &admitted {
        Ok(()) => outcome(&span, "admitted"),
        Err(ignored) => outcome(&span, ignored.reason()),
    }
    drop(span);
    if let Err(ignored) = admitted {
        return WebhookOutcome::Ignored(envelope, ignored);
    }
    // Answer 200 only once the queue holds the message.
    let mut message = OutboundMessage::for_event(&envelope, raw, now);
    let enqueue = tracing::debug_span!(
        "enqueue",
        otel.name = "send",
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        messaging.system = app.queue.system(),
        messaging.operation.type = "send",
        messaging.operation.name = "send",
        stripe.event_id = envelope.id.as_str(),
        hookline.outcome = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    if let Some(header) = hookline_telemetry::xray_header(&enqueue) {
        message
            .attributes
            .insert(attr::TRACE_HEADER.to_owned(), header);
    }
    let sent = tokio::time::timeout(app.enqueue_timeout, app.coalescer.send(message))
        .instrument(enqueue.clone())
        .await;
    let result = match sent {
        Ok(Ok(())) => WebhookOutcome::Enqueued(envelope),
        Ok(Err(error)) => WebhookOutcome::QueueUnavailable(envelope, Some(error)),
        Err(_) => WebhookOutcome::QueueUnavailable(envelope, None),
    };
    match &result {
        WebhookOutcome::QueueUnavailable(_, error) => {
            failed(
                &enqueue,
                error.as_ref().map_or("timeout", |e| e.kind().as_str()),
            );
        }
        _ => outcome(&enqueue, "sent"),
    }
    result
}

/// Reads the body within `MAX_BODY_BYTES` and the shared body-memory budget.
///
/// The budget is taken as bytes arrive, not for the declared length up
/// front: a connection that declares 250 KB and trickles it holds only what
/// it has sent, so slow uploads cannot starve Stripe's small, fast
/// requests. When the budget is spent the request is answered 503 at once
/// (Stripe retries it) instead of queueing behind the slow ones.
async fn read_body(
    app: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<bytes::Bytes, WebhookOutcome> {
    use http_body_util::BodyExt;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > app.max_body_bytes as u64) {
        return Err(WebhookOutcome::TooLarge);
    }
    let mut body = body;
    let mut chunks: Vec<bytes::Bytes> = Vec::new();
    let mut len = 0usize;
    let mut held: Option<tokio::sync::SemaphorePermit<'_>> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(WebhookOutcome::BodyUnreadable)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        len += data.len();
        if len > app.max_body_bytes {
            return Err(WebhookOutcome::TooLarge);
        }
        let n = u32::try_from(data.len()).map_err(|_| WebhookOutcome::TooLarge)?;
        if n == 0 {
            continue;
        }
        let permit = app
            .body_memory
            .try_acquire_many(n)
            .map_err(|_| WebhookOutcome::Busy)?;
        match held.as_mut() {
            Some(h) => h.merge(permit),
            None => held = Some(permit),
        }
        chunks.push(data);
    }
    // One frame (the usual case) is used as it is, without a copy.
    Ok(match chunks.len() {
        0 => bytes::Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => chunks.concat().into(),
    })
}

async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    let secrets = app.verifier().secret_count();
    let queue = tokio::time::timeout(Duration::from_secs(2), app.queue.counts()).await;
    let unavailable = |text: String| (StatusCode::SERVICE_UNAVAILABLE, text).into_response();
    match (secrets, queue) {
        (0, _) => unavailable(format!(
            "not ready: no webhook secret loaded ({})",
            app.refresh_error().unwrap_or("none configured")
        )),
        (_, Ok(Ok(_))) => match app.refresh_error() {
            None => (StatusCode::OK, "ready").into_response(),
            Some(problem) => (
                StatusCode::OK,
                format!("ready (webhook secret refresh failing: {problem}; serving the last good value)"),
            )
                .into_response(),
        },
        (_, Ok(Err(error))) => {
            tracing::warn!(message = "Readiness: queue unreachable.", %error);
            unavailable("not ready: the queue does not answer".to_owned())
        }
        (_, Err(_)) => unavailable("not ready: the queue check timed out".to_owned()),
    }
}

async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render() + &app.loaded.render(),
    )
        .into_response()
}
