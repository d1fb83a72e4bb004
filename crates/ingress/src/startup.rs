//! Starting the ingress: the settings checked before anything opens, the
//! backend and the webhook secrets loaded (kept current from Secrets
//! Manager when they are stored there), the router, the listener bound;
//! then serving until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use hookline_backend::{Backend, Tuning};
use hookline_core::coalescer::SendCoalescer;
use hookline_core::loaded_secrets::{Loaded, LoadedSecrets};
use hookline_core::ports::Queue;
use hookline_core::refresh::{Reader, Refreshing, Rejected};
use hookline_core::secrets::{parse_webhook_secrets, SecretRuleError, SecretSetting, SecretSource};
use hookline_core::settings::{AppEnv, EventFilter};
use hookline_signature::Verifier;
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::IngressMetrics;
use crate::settings::IngressArgs;

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
    /// The webhook secrets, as a verifier, kept current.
    pub(crate) verifier: Refreshing<Verifier>,
    /// The webhook secret's version as last loaded, told on `/metrics`.
    pub(crate) loaded: Arc<LoadedSecrets>,
    pub(crate) coalescer: SendCoalescer,
    pub(crate) queue: Arc<dyn Queue>,
    pub(crate) app_env: AppEnv,
    pub(crate) enabled: EventFilter,
    pub(crate) tolerance_secs: u64,
    pub(crate) max_body_bytes: usize,
    pub(crate) enqueue_timeout: Duration,
    /// Bytes of bodies being read, across all requests (one permit a byte).
    pub(crate) body_memory: tokio::sync::Semaphore,
    pub metrics: IngressMetrics,
}

impl AppState {
    pub(crate) fn verifier(&self) -> Arc<Verifier> {
        self.verifier.current()
    }

    /// Why the last read of the webhook secrets was not taken, while it
    /// was not (the last good value keeps serving).
    pub(crate) fn refresh_error(&self) -> Option<&'static str> {
        self.verifier.problem()
    }

    pub fn coalescer(&self) -> &SendCoalescer {
        &self.coalescer
    }
}

/// The ingress's routes over `state`: the webhook path, `/healthz`,
/// `/readyz` and `/metrics`.
pub fn router(state: Arc<AppState>, webhook_path: &str, request_timeout: Duration) -> Router {
    Router::new()
        .route(webhook_path, post(crate::webhook::webhook))
        .route("/healthz", get(crate::health::healthz))
        .route("/readyz", get(crate::health::readyz))
        .route("/metrics", get(crate::metrics::serve))
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
        let loaded = Arc::new(LoadedSecrets::default());
        let verifier = match plain_secrets {
            Some(secrets) => {
                loaded.record(webhook_loaded(None, None, secrets.len()));
                Refreshing::fixed(verifier_of(&secrets))
            }
            None => {
                let id = args
                    .webhook
                    .stripe_webhook_secret_id
                    .clone()
                    .ok_or(SecretRuleError::NoWebhookSecret)?;
                let every = Duration::from_secs(args.common.secret_refresh_secs.max(1));
                let reader = webhook_reader(backend.secrets().await, id, every, &loaded);
                // A first read now, so a good secret is in place before we
                // listen; without one the ingress serves (answering 400)
                // and reads again every few seconds.
                Refreshing::spawn_or(reader, Verifier::new(Vec::<&[u8]>::new())).await
            }
        };
        let state = Arc::new(AppState {
            verifier,
            loaded,
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

fn verifier_of(secrets: &[SecretString]) -> Verifier {
    Verifier::new(secrets.iter().map(|s| s.expose_secret().as_bytes()))
}

/// Why a value read from Secrets Manager is not a webhook secret, in words
/// of our own.
const PLACEHOLDER: &str = "the webhook secret in Secrets Manager is not a whsec_ value (a placeholder?): put the signing secret from the Stripe dashboard there";

/// The webhook secrets in Secrets Manager `id`, read every `every`.
fn webhook_reader(
    source: Arc<dyn SecretSource>,
    id: String,
    every: Duration,
    loaded: &Arc<LoadedSecrets>,
) -> Reader<Verifier> {
    let record = Arc::clone(loaded);
    let loaded_id = id.clone();
    Reader {
        what: "webhook secret".to_owned(),
        source,
        id,
        every,
        parse: Arc::new(|v| {
            parse_webhook_secrets(&v.value)
                .map(|secrets| verifier_of(&secrets))
                .map_err(|e| Rejected {
                    problem: PLACEHOLDER,
                    log: "The webhook secret is a placeholder: webhooks answer 400 (Stripe retries them) until the whsec_ value is put in Secrets Manager; it is picked up on the next refresh, no restart needed.",
                    detail: e.to_string(),
                })
        }),
        on_load: Some(Arc::new(move |v, verifier: &Verifier| {
            record.record(webhook_loaded(
                Some(&loaded_id),
                v.version.clone(),
                verifier.secret_count(),
            ));
        })),
    }
}

/// The webhook secret as loaded now: from Secrets Manager `id` at
/// `version`, or from the environment.
fn webhook_loaded(id: Option<&str>, version: Option<String>, values: usize) -> Loaded {
    Loaded::now("webhook", id, version, None, values)
}
