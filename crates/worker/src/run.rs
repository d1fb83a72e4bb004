//! The worker's assembly: settings to parts, the parts started, and the
//! bounded shutdown. The parts: [`crate::poll`] (receive loops),
//! [`crate::consume`] (one delivery: process, act, record), the batched
//! deletes and copies (`hookline_core::coalescer`), [`crate::breaker`]
//! (stop receiving while a dependency fails), [`crate::serve`] (metrics
//! endpoints), [`crate::housekeeping`].

use std::sync::Arc;
use std::time::Duration;

use hookline_backend::{Backend, Tuning};
use hookline_core::ports::Queue;
use hookline_core::secrets::SecretRuleError;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::breaker::Breaker;
use crate::consume::{probe_while_open, Consumer};
use crate::decide::Backoff;
use crate::handler::Handlers;
use crate::housekeeping::Housekeeping;
use crate::metrics::WorkerMetrics;
use crate::poll::Poll;
use crate::process::Processor;
use crate::route::Routing;
use crate::settings::WorkerArgs;
use hookline_core::coalescer::{CoalescerConfig, DeleteCoalescer, SendCoalescer};

/// Why the worker cannot start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Rule(#[from] SecretRuleError),
    #[error(transparent)]
    Backend(#[from] hookline_backend::BackendError),
    #[error(transparent)]
    MissingDlq(#[from] hookline_settings::MissingDlq),
    #[error(transparent)]
    Routes(#[from] hookline_settings::RoutesLoadError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// A built worker, ready to run.
#[derive(Debug)]
pub struct Worker {
    queue: Arc<dyn Queue>,
    dlq: Arc<dyn Queue>,
    processor: Processor,
    metrics: Arc<WorkerMetrics>,
    listener: TcpListener,
    concurrency: usize,
    visibility: Duration,
    receive_wait: Duration,
    grace: Duration,
    /// How often expired records are purged; `None` to never.
    housekeeping: Option<Duration>,
    erase_after: Option<Duration>,
    emf: hookline_settings::EmfSettings,
    /// The backend's batching of sends (requeued and dead-lettered copies).
    coalescer: CoalescerConfig,
}

impl Worker {
    pub async fn build(args: WorkerArgs) -> Result<Self, WorkerError> {
        Self::build_with_handlers(args, Handlers::default()).await
    }

    /// A custom worker: these handlers of the team's besides the routes
    /// (see [`crate::handler`]).
    pub async fn build_with_handlers(
        args: WorkerArgs,
        handlers: Handlers,
    ) -> Result<Self, WorkerError> {
        // The key-mode rule applies to the key that wins: a Secrets Manager
        // id (checked once the backend can read it) over the plain value.
        args.common.check_plain_key()?;
        args.common.check_dlq()?;
        // A bad routes document stops the start before anything is opened.
        args.routes
            .load(&args.events.enabled_events, args.common.app_env)?;
        let backend: Backend =
            hookline_backend::open(&args.common, &args.tables, Tuning::default()).await?;
        Self::assemble(args, backend, handlers).await
    }

    /// Builds on a backend the caller opened (benchmarks put decorators in
    /// front of the ports this way).
    pub async fn build_with_backend(
        args: WorkerArgs,
        backend: Backend,
    ) -> Result<Self, WorkerError> {
        Self::assemble(args, backend, Handlers::default()).await
    }

    async fn assemble(
        args: WorkerArgs,
        backend: Backend,
        handlers: Handlers,
    ) -> Result<Self, WorkerError> {
        let loaded = Arc::new(hookline_core::loaded_secrets::LoadedSecrets::default());
        let stripe = backend
            .stripe_api_kept_fresh(&args.common, Arc::clone(&loaded))
            .await?;
        let routing = Self::routing(&args, &backend, handlers).await?;
        let destination_metrics = routing.metrics();
        let dlq = backend.dlq.clone().ok_or(hookline_settings::MissingDlq)?;
        let listener = TcpListener::bind(&args.metrics_addr)
            .await
            .map_err(|source| WorkerError::Bind {
                addr: args.metrics_addr.clone(),
                source,
            })?;
        let visibility = Duration::from_secs(args.common.visibility_timeout_secs);
        tracing::info!(
            message = "Worker ready.",
            backend = %backend.kind,
            concurrency = args.worker_concurrency,
            max_receives = args.common.max_receives,
            visibility_timeout_secs = args.common.visibility_timeout_secs,
            metrics_addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            enabled_events = %args.events.enabled_events,
        );
        Ok(Self {
            queue: backend.queue,
            dlq,
            processor: Self::processor(&args, backend.store, stripe, routing),
            metrics: Arc::new(
                WorkerMetrics::with_destinations(destination_metrics).with_loaded(loaded),
            ),
            listener,
            concurrency: usize::try_from(args.worker_concurrency).unwrap_or(16),
            visibility,
            // A long poll under way at SIGTERM is let return: its wait never
            // exceeds the grace.
            receive_wait: Duration::from_secs(args.receive_wait_secs)
                .min(Duration::from_secs(args.shutdown_grace_secs)),
            grace: Duration::from_secs(args.shutdown_grace_secs),
            housekeeping: (args.housekeeping_interval_secs > 0)
                .then(|| Duration::from_secs(args.housekeeping_interval_secs)),
            erase_after: args
                .erase_on_deauthorize_days
                .map(|d| Duration::from_secs(u64::from(d) * 86_400)),
            emf: args.emf,
            coalescer: backend.coalescer,
        })
    }

    /// The routes document with its destinations and the custom worker's
    /// handlers; without a document, the projections alone.
    async fn routing(
        args: &WorkerArgs,
        backend: &Backend,
        handlers: Handlers,
    ) -> Result<Routing, WorkerError> {
        let mut routes = args
            .routes
            .load(&args.events.enabled_events, args.common.app_env)?;
        for (event_type, handler) in &handlers.registered {
            routes.add_handler(handler.name(), event_type);
        }
        if routes.is_projections_only() {
            return Ok(Routing::projections_only());
        }
        let refresh = Duration::from_secs(args.common.secret_refresh_secs.max(1));
        let mut destinations = backend.destinations(&routes, Some(refresh)).await?;
        destinations.extend(handlers.registered.into_iter().map(|(_, d)| d));
        Ok(Routing::new(routes, destinations))
    }

    /// The processor over `store`: each store write a span of the event's
    /// trace when spans are exported.
    fn processor(
        args: &WorkerArgs,
        store: Arc<dyn hookline_core::ports::Store>,
        stripe: Option<Arc<dyn hookline_core::ports::StripeApi>>,
        routing: Routing,
    ) -> Processor {
        Processor {
            store: if hookline_telemetry::enabled() {
                Arc::new(crate::traced_store::TracedStore::new(store))
            } else {
                store
            },
            app_env: args.common.app_env,
            enabled: args.events.enabled_events.clone(),
            backoff: Backoff {
                base: Duration::from_secs(args.retry_base_secs),
                max: Duration::from_secs(args.retry_max_secs),
            },
            max_receives: args.common.max_receives,
            lease: Duration::from_secs(args.common.visibility_timeout_secs),
            registry: hookline_core::handlers::registered,
            stripe,
            routing,
        }
    }

    pub fn metrics(&self) -> Arc<WorkerMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Runs until `shutdown` fires: stops receiving, gives in-flight events
    /// the grace period, hands back what it did not start, flushes deletes.
    pub async fn run_until(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let metrics_server =
            crate::serve::spawn(self.listener, Arc::clone(&self.metrics), shutdown.clone());
        let emf = spawn_emf(&self.emf, Arc::clone(&self.metrics), &shutdown);
        let acks = DeleteCoalescer::spawn(Arc::clone(&self.queue), CoalescerConfig::deletes());
        let dlq = self.dlq;
        let ctx = Arc::new(Consumer {
            queue: Arc::clone(&self.queue),
            processor: self.processor,
            metrics: Arc::clone(&self.metrics),
            visibility: self.visibility,
            acks: acks.clone(),
            sends: SendCoalescer::spawn(Arc::clone(&self.queue), self.coalescer),
            dead_letters: SendCoalescer::spawn(Arc::clone(&dlq), self.coalescer),
            breaker: Arc::new(Breaker::default()),
        });
        let prober = tokio::spawn(probe_while_open(Arc::clone(&ctx), shutdown.clone()));
        if let Some(every) = self.housekeeping {
            let housekeeping = Housekeeping {
                store: Arc::clone(&ctx.processor.store),
                queue: Arc::clone(&self.queue),
                dlq: Arc::clone(&dlq),
                every,
                erase_after: self.erase_after,
            };
            tokio::spawn(housekeeping.run(shutdown.clone()));
        }
        let tasks = TaskTracker::new();
        let pollers = Poll::spawn_all(
            Arc::clone(&ctx),
            self.concurrency,
            tasks.clone(),
            self.receive_wait,
            self.visibility,
            shutdown.clone(),
        );
        shutdown.cancelled().await;
        prober.abort();
        drop(ctx);
        let stopping = Stopping {
            grace: self.grace,
            pollers,
            tasks,
            acks,
        };
        stopping.run().await;
        let _ = tokio::time::timeout(Duration::from_millis(100), metrics_server).await;
        if let Some(emf) = emf {
            let _ = tokio::time::timeout(Duration::from_millis(100), emf).await;
        }
        tracing::info!(message = "Worker stopped.");
        Ok(())
    }
}

/// The EMF lines, when `EMF_NAMESPACE` is set.
fn spawn_emf(
    emf: &hookline_settings::EmfSettings,
    metrics: Arc<WorkerMetrics>,
    shutdown: &CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    hookline_core::emf::spawn_lines(
        emf.emf_namespace.clone(),
        Duration::from_secs(emf.emf_interval_secs),
        move || metrics.emf_lines(),
        shutdown.clone(),
    )
}

/// Shutdown, bounded: no new receive starts, a long poll under way returns
/// within the grace (what it brought is handed back at once), in-flight
/// events get the grace period, and whatever still runs then is abandoned
/// (its message comes back after its visibility timeout), even if a store
/// or queue call never answers; deletes are flushed within the last second.
struct Stopping {
    grace: Duration,
    pollers: Vec<tokio::task::JoinHandle<()>>,
    tasks: TaskTracker,
    acks: DeleteCoalescer,
}

impl Stopping {
    async fn run(self) {
        let deadline = tokio::time::Instant::now() + self.grace;
        let pollers_done = async {
            for h in self.pollers {
                let _ = h.await;
            }
        };
        let _ = tokio::time::timeout_at(deadline, pollers_done).await;
        self.tasks.close();
        tracing::info!(
            message = "Worker stopping: finishing in-flight events.",
            in_flight = self.tasks.len()
        );
        if tokio::time::timeout_at(deadline, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                message = "Grace period over: abandoning in-flight events; their messages reappear after the visibility timeout.",
                abandoned = self.tasks.len()
            );
        }
        let flush_until = deadline.max(tokio::time::Instant::now()) + Duration::from_millis(700);
        if tokio::time::timeout_at(flush_until, self.acks.finish())
            .await
            .is_err()
        {
            tracing::warn!(
                message = "Deletes still pending at exit; those messages come back as duplicates."
            );
        }
    }
}
