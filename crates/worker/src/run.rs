//! The receive loop, the heartbeat, acting on decisions, and shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use hookline_backend::{Backend, Tuning};
use hookline_core::clock::unix_secs;
use hookline_core::message::attr;
use hookline_core::ports::{Delivery, Queue};
use hookline_core::secrets::{check_key_mode, SecretRuleError, SecretSetting};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::breaker::Breaker;
use crate::decide::{Backoff, Decision, Done};
use crate::metrics::{Part, WorkerMetrics};
use crate::process::{EventInfo, Processor};
use crate::settings::WorkerArgs;

/// Why the worker cannot start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Rule(#[from] SecretRuleError),
    #[error(transparent)]
    Backend(#[from] hookline_backend::BackendError),
    #[error("DLQ_URL is required when QUEUE_URL is set")]
    MissingDlq,
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
    emf: hookline_settings::EmfSettings,
}

impl Worker {
    pub async fn build(args: WorkerArgs) -> Result<Self, WorkerError> {
        // The key-mode rule applies to the key that wins: a Secrets Manager
        // id (checked once the backend can read it) over the plain value.
        let key = SecretSetting::of(
            &args.common.stripe_secret_key_id,
            &args.common.stripe_secret_key,
        );
        if let SecretSetting::Plain(key) = key {
            check_key_mode(args.common.app_env, key)?;
        }
        if args.common.queue_url.is_some() && args.common.dlq_url.is_none() {
            return Err(WorkerError::MissingDlq);
        }
        let backend: Backend =
            hookline_backend::open(&args.common, &args.tables, Tuning::default()).await?;
        Self::build_with_backend(args, backend).await
    }

    /// Builds on a backend the caller opened (benchmarks put decorators in
    /// front of the ports this way).
    pub async fn build_with_backend(
        args: WorkerArgs,
        backend: Backend,
    ) -> Result<Self, WorkerError> {
        backend.api_key(&args.common).await?;
        let Some(dlq) = backend.dlq.clone() else {
            return Err(WorkerError::MissingDlq);
        };
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
            processor: Processor {
                store: backend.store,
                app_env: args.common.app_env,
                enabled: args.events.enabled_events,
                backoff: Backoff {
                    base: Duration::from_secs(args.retry_base_secs),
                    max: Duration::from_secs(args.retry_max_secs),
                },
                max_receives: args.common.max_receives,
                lease: visibility,
                registry: hookline_core::handlers::registered,
            },
            metrics: Arc::new(WorkerMetrics::default()),
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
            emf: args.emf,
        })
    }

    pub fn metrics(&self) -> Arc<WorkerMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Runs until `shutdown` fires: stops receiving, gives in-flight events
    /// the grace period, hands back what it did not start, flushes deletes.
    pub async fn run_until(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let metrics_server = {
            let router = Router::new()
                .route("/healthz", get(|| async { "ok" }))
                .route("/readyz", get(readyz))
                .route("/metrics", get(render_metrics))
                .with_state(Arc::clone(&self.metrics));
            let stop = shutdown.clone();
            let listener = self.listener;
            tokio::spawn(async move {
                let served = axum::serve(listener, router)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await;
                if let Err(error) = served {
                    tracing::error!(message = "Metrics server failed.", %error);
                }
            })
        };

        let emf = {
            let metrics = Arc::clone(&self.metrics);
            hookline_core::emf::spawn(
                self.emf.emf_namespace.clone(),
                Duration::from_secs(self.emf.emf_interval_secs),
                "worker",
                move || metrics.emf_samples(),
                shutdown.clone(),
            )
        };
        let (ack_tx, ack_rx) = mpsc::channel::<String>(self.concurrency * 4 + 16);
        let stop_acks = CancellationToken::new();
        let acker = tokio::spawn(delete_in_batches(
            Arc::clone(&self.queue),
            ack_rx,
            stop_acks.clone(),
        ));
        let breaker = Arc::new(Breaker::default());
        let ctx = Arc::new(Context {
            queue: Arc::clone(&self.queue),
            dlq: self.dlq,
            processor: self.processor,
            metrics: Arc::clone(&self.metrics),
            visibility: self.visibility,
            acks: ack_tx,
            breaker: Arc::clone(&breaker),
        });
        let prober = tokio::spawn(probe_while_open(Arc::clone(&ctx), shutdown.clone()));
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let tasks = TaskTracker::new();
        // One poller per ten slots (a receive returns at most ten messages),
        // so receiving keeps up with processing when each call takes time.
        let pollers = self.concurrency.div_ceil(10).max(1);
        let poll = Poll {
            batch: self.concurrency.div_ceil(pollers).clamp(1, 10),
            ctx: Arc::clone(&ctx),
            slots: Arc::clone(&slots),
            tasks: tasks.clone(),
            receive_wait: self.receive_wait,
            visibility: self.visibility,
            shutdown: shutdown.clone(),
        };
        let mut poller_handles = Vec::with_capacity(pollers);
        for _ in 0..pollers {
            poller_handles.push(tokio::spawn(poll.clone().run()));
        }
        if let Some(every) = self.housekeeping {
            tokio::spawn(housekeep(
                Arc::clone(&ctx.processor.store),
                every,
                shutdown.clone(),
            ));
        }

        // Shutdown is bounded: no new receive starts, a long poll under way
        // returns within the grace (what it brought is handed back at once),
        // in-flight events get the grace period, and whatever still runs then
        // is abandoned (its message comes back after its visibility timeout),
        // even if a store or queue call never answers.
        shutdown.cancelled().await;
        prober.abort();
        let deadline = tokio::time::Instant::now() + self.grace;
        let pollers_done = async {
            for h in poller_handles {
                let _ = h.await;
            }
        };
        let _ = tokio::time::timeout_at(deadline, pollers_done).await;
        tasks.close();
        tracing::info!(
            message = "Worker stopping: finishing in-flight events.",
            in_flight = tasks.len()
        );
        if tokio::time::timeout_at(deadline, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                message = "Grace period over: abandoning in-flight events; their messages reappear after the visibility timeout.",
                abandoned = tasks.len()
            );
        }
        // Deletes of what completed are flushed within the last second.
        stop_acks.cancel();
        drop(poll);
        drop(ctx);
        let flush_until = deadline.max(tokio::time::Instant::now()) + Duration::from_millis(700);
        if tokio::time::timeout_at(flush_until, acker).await.is_err() {
            tracing::warn!(
                message = "Deletes still pending at exit; those messages come back as duplicates."
            );
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), metrics_server).await;
        if let Some(emf) = emf {
            let _ = tokio::time::timeout(Duration::from_millis(100), emf).await;
        }
        tracing::info!(message = "Worker stopped.");
        Ok(())
    }
}

/// Removes what the backend's own retention would remove (the embedded
/// backend's expired ledger items and old DLQ messages), in bounded passes.
async fn housekeep(
    store: Arc<dyn hookline_core::ports::Store>,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        match store.housekeep(unix_secs()).await {
            Ok(0) => {}
            Ok(removed) => {
                tracing::info!(message = "Housekeeping removed expired records.", removed)
            }
            Err(error) => {
                tracing::warn!(message = "Housekeeping failed; trying again later.", %error)
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// One receive loop; several share the slots.
#[derive(Clone)]
struct Poll {
    ctx: Arc<Context>,
    /// Messages one receive asks for (this poller's share of the slots).
    batch: usize,
    slots: Arc<Semaphore>,
    tasks: TaskTracker,
    receive_wait: Duration,
    visibility: Duration,
    shutdown: CancellationToken,
}

impl Poll {
    async fn run(self) {
        while !self.shutdown.is_cancelled() {
            // While a dependency fails, take nothing: the events wait on the
            // queue instead of spending their deliveries.
            tokio::select! {
                () = self.ctx.breaker.closed() => {}
                _ = self.shutdown.cancelled() => break,
            }
            // Wait until this poller's share of slots (at most ten, what one
            // receive can return) is free, so that receives come back full
            // instead of one message per freed slot.
            let Ok(share) = u32::try_from(self.batch) else {
                break;
            };
            let mut share = tokio::select! {
                p = Arc::clone(&self.slots).acquire_many_owned(share) => match p { Ok(p) => p, Err(_) => break },
                _ = self.shutdown.cancelled() => break,
            };
            // One permit per message, each released when its event is done.
            let mut permits = Vec::with_capacity(self.batch);
            while share.num_permits() > 1 {
                match share.split(1) {
                    Some(one) => permits.push(one),
                    None => break,
                }
            }
            permits.push(share);
            let receive = self
                .ctx
                .queue
                .receive(permits.len(), self.receive_wait, self.visibility);
            tokio::pin!(receive);
            let received = tokio::select! {
                r = &mut receive => r,
                // At shutdown a long poll is let return (its wait is within
                // the grace): an abandoned SQS poll can still take messages
                // out of sight. What it brought is handed back below. A
                // receive that takes nothing when dropped is dropped.
                _ = self.shutdown.cancelled() => {
                    if self.ctx.queue.receive_is_cancel_safe() {
                        break;
                    }
                    match tokio::time::timeout(self.receive_wait + Duration::from_secs(1), &mut receive).await {
                        Ok(r) => r,
                        Err(_) => break,
                    }
                }
            };
            let deliveries = match received {
                Ok(d) => d,
                Err(error) => {
                    self.ctx.metrics.receive_errors.inc();
                    if error.is_configuration() {
                        self.ctx.metrics.mark_configuration_error(Part::Queue);
                        tracing::error!(message = "Receive failed: configuration error.", %error);
                    } else {
                        tracing::warn!(message = "Receive failed.", %error);
                    }
                    drop(permits);
                    self.ctx.trip(Part::Queue, &error);
                    continue;
                }
            };
            self.ctx.metrics.mark_success(Part::Queue);
            if self.shutdown.is_cancelled() && !deliveries.is_empty() {
                // Handed back together, at once.
                hand_back_all(&self.ctx.queue, deliveries).await;
                break;
            }
            for delivery in deliveries {
                let permit = match permits.pop() {
                    Some(p) if !self.shutdown.is_cancelled() => p,
                    // Shutting down (or more than asked for): not started, handed back.
                    _ => {
                        let _ = tokio::time::timeout(
                            Duration::from_secs(1),
                            hand_back(self.ctx.queue.as_ref(), &delivery),
                        )
                        .await;
                        continue;
                    }
                };
                let ctx = Arc::clone(&self.ctx);
                self.tasks.spawn(async move {
                    ctx.handle(delivery).await;
                    drop(permit);
                });
            }
        }
    }
}

/// Ready unless the circuit breaker is open (a dependency fails and no
/// message is taken), or the last store or queue failure was a
/// configuration error that no success has followed. The detail (with the
/// AWS error text) is in the error log, never in this answer.
async fn readyz(State(m): State<Arc<WorkerMetrics>>) -> impl IntoResponse {
    let unavailable = axum::http::StatusCode::SERVICE_UNAVAILABLE;
    if m.configuration_broken() {
        (
            unavailable,
            "not ready: configuration error (a missing table or queue, access denied, a KMS key or credentials); the worker's error log names the resource and action",
        )
    } else if let Some(part) = m.unavailable() {
        (
            unavailable,
            match part {
                Part::Store => "not ready: the store fails; no message is taken until it answers (events wait on the queue); the worker's error log says what fails",
                Part::Queue => "not ready: the queue fails; the worker's error log says what fails",
            },
        )
    } else {
        (axum::http::StatusCode::OK, "ready")
    }
}

async fn render_metrics(State(m): State<Arc<WorkerMetrics>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        m.render(),
    )
}

/// Hands messages back concurrently, within a second in all.
async fn hand_back_all(queue: &Arc<dyn Queue>, deliveries: Vec<Delivery>) {
    let mut all = tokio::task::JoinSet::new();
    for delivery in deliveries {
        let queue = Arc::clone(queue);
        all.spawn(async move { hand_back(queue.as_ref(), &delivery).await });
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), all.join_all()).await;
}

/// While the circuit breaker is open, probes the failing dependency on its
/// backoff and closes the breaker at the first answer.
async fn probe_while_open(ctx: Arc<Context>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = ctx.breaker.opened() => {}
            _ = shutdown.cancelled() => return,
        }
        while let Some((part, delay)) = ctx.breaker.state().next_probe() {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return,
            }
            let answered = match part {
                Part::Store => ctx.processor.store.ping().await,
                Part::Queue => ctx.queue.ping().await,
            };
            match answered {
                Ok(()) => {
                    ctx.metrics.mark_success(part);
                    if ctx.breaker.probe_succeeded() {
                        ctx.metrics.mark_unavailable(None);
                        tracing::info!(
                            message = "Dependency answers again: taking messages again.",
                            dependency = part.as_str()
                        );
                    }
                }
                Err(error) => {
                    if error.is_configuration() {
                        ctx.metrics.mark_configuration_error(part);
                    }
                    ctx.breaker.probe_failed(&error);
                    tracing::error!(
                        message = "Dependency still fails: no message is taken; events wait on the queue.",
                        dependency = part.as_str(),
                        error_kind = error.kind().as_str(),
                        %error
                    );
                }
            }
        }
    }
}

async fn hand_back(queue: &dyn Queue, delivery: &Delivery) {
    if let Err(error) = queue
        .set_visibility(&delivery.receipt, Duration::ZERO)
        .await
    {
        tracing::warn!(message = "Cannot hand a message back.", message_id = %delivery.message_id, %error);
    }
}

/// Collects receipts of completed messages and deletes them in batches of
/// the backend's batch size, as fast as they come, with a few batches in
/// flight; waits for all of them once the channel closes or `stop` fires.
async fn delete_in_batches(
    queue: Arc<dyn Queue>,
    mut rx: mpsc::Receiver<String>,
    stop: CancellationToken,
) {
    const IN_FLIGHT: usize = 4;
    // Deletes are off the latency path (the event is committed); waiting up
    // to a second fills SQS's batches of 10 even at tens of events a
    // second (a delete is a request like any other), and is far inside the
    // visibility timeout. A crash meanwhile only redelivers duplicates.
    const DELETE_LINGER: Duration = Duration::from_secs(1);
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let running = TaskTracker::new();
    // The backend's batch size: SQS takes 10, the embedded queue deletes
    // many in one transaction.
    let max_batch = queue.batch_limits().max_entries.max(1);
    loop {
        let first = tokio::select! {
            r = rx.recv() => r,
            // Shutting down: take what is already queued, no more lingering.
            _ = stop.cancelled() => rx.try_recv().ok(),
        };
        let Some(first) = first else { break };
        let mut batch = Vec::with_capacity(max_batch);
        batch.push(first);
        let deadline = tokio::time::Instant::now() + DELETE_LINGER;
        while batch.len() < max_batch {
            if stop.is_cancelled() {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
                continue;
            }
            // Shutting down ends the wait at once (the loop's top then
            // takes only what is already queued).
            tokio::select! {
                r = tokio::time::timeout_at(deadline, rx.recv()) => match r {
                    Ok(Some(r)) => batch.push(r),
                    Ok(None) | Err(_) => break,
                },
                _ = stop.cancelled() => {}
            }
        }
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let queue = Arc::clone(&queue);
        running.spawn(async move {
            for (receipt, result) in batch.iter().zip(queue.delete_batch(&batch).await) {
                if let Err(error) = result {
                    // The event is COMPLETED: a redelivery completes as a duplicate.
                    tracing::warn!(message = "Delete failed; the message will come back as a duplicate.", receipt = %receipt, %error);
                }
            }
            drop(permit);
        });
    }
    running.close();
    running.wait().await;
}

struct Context {
    queue: Arc<dyn Queue>,
    dlq: Arc<dyn Queue>,
    processor: Processor,
    metrics: Arc<WorkerMetrics>,
    visibility: Duration,
    acks: mpsc::Sender<String>,
    breaker: Arc<Breaker>,
}

impl Context {
    /// A dependency failed for a reason that is not the event's: open the
    /// circuit breaker (no new message is taken until a probe succeeds).
    fn trip(&self, part: Part, error: &hookline_core::ports::PortError) {
        if self.breaker.trip(part, error) {
            self.metrics.circuit_opened.inc();
            self.metrics.mark_unavailable(Some(part));
            tracing::error!(
                message = "Circuit open: a dependency fails; no new message is taken until it answers. Events wait on the queue and are not dead-lettered for it.",
                dependency = part.as_str(),
                error_kind = error.kind().as_str(),
                %error
            );
        }
    }

    async fn handle(&self, delivery: Delivery) {
        use tracing::Instrument;
        // One span from receive to delete; the processor fills in the
        // event's id and type once it has parsed them.
        let span = tracing::info_span!(
            "delivery",
            message_id = %delivery.message_id,
            receive_count = delivery.receive_count,
            event_id = tracing::field::Empty,
            event_type = tracing::field::Empty,
        );
        async {
            self.metrics.in_flight.add(1);
            let start = Instant::now();
            let (decision, info) = self.process_with_heartbeat(&delivery).await;
            self.metrics.handler_latency.observe(start.elapsed());
            self.act(&delivery, decision, &info).await;
            self.metrics.in_flight.add(-1);
        }
        .instrument(span)
        .await
    }

    /// Processes while extending the message's visibility every half
    /// timeout, so a slow event is not delivered to another worker meanwhile.
    async fn process_with_heartbeat(&self, delivery: &Delivery) -> (Decision, EventInfo) {
        let work = self
            .processor
            .process(delivery, unix_secs(), fastrand::f64());
        tokio::pin!(work);
        let period = (self.visibility / 2).max(Duration::from_millis(500));
        let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = beat.tick() => {
                    if let Err(error) = self.queue.set_visibility(&delivery.receipt, self.visibility).await {
                        tracing::warn!(message = "Visibility heartbeat failed.", message_id = %delivery.message_id, %error);
                    }
                }
            }
        }
    }

    async fn act(&self, delivery: &Delivery, decision: Decision, info: &EventInfo) {
        let event_id = info.event_id.as_deref().unwrap_or("?");
        let event_type = info.event_type.as_deref().unwrap_or("?");
        match decision {
            Decision::Done(done) => {
                self.metrics.done(done);
                self.metrics.mark_success(Part::Store);
                if let (Done::Completed(_), Some(created)) = (done, info.created) {
                    let age = unix_secs().saturating_sub(created);
                    self.metrics.event_age.observe_secs(age as f64);
                }
                tracing::info!(
                    message = "Event completed.",
                    event_id,
                    event_type,
                    source = info.source.map(|s| s.as_str()),
                    outcome = done.label(),
                    attempts = info.attempts,
                    receive_count = delivery.receive_count,
                );
                if self.acks.send(delivery.receipt.clone()).await.is_err() {
                    tracing::warn!(
                        message = "Delete queue closed; the message will come back as a duplicate.",
                        event_id
                    );
                }
            }
            Decision::RetryLater { delay, error } => {
                self.metrics.retries.inc();
                let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                if error.is_configuration() {
                    self.metrics.mark_configuration_error(Part::Store);
                    tracing::error!(
                        message = "Configuration error: the event waits in the queue until an operator fixes it.",
                        event_id,
                        event_type,
                        receive_count = delivery.receive_count,
                        delay_ms,
                        %error,
                    );
                } else {
                    tracing::warn!(
                        message = "Transient failure; retrying later.",
                        event_id,
                        event_type,
                        receive_count = delivery.receive_count,
                        delay_ms,
                        %error,
                    );
                }
                self.trip(Part::Store, &error);
                // If this fails too, the visibility timeout brings it back.
                let _ = self.queue.set_visibility(&delivery.receipt, delay).await;
            }
            Decision::Requeue { error } => {
                self.metrics.retries.inc();
                self.trip(Part::Store, &error);
                // A fresh copy (its own deduplication id, the same group):
                // its deliveries start again; then this message goes.
                let copy = delivery.to_outbound().as_copy();
                match self
                    .queue
                    .send_batch(std::slice::from_ref(&copy))
                    .await
                    .pop()
                {
                    Some(Ok(())) => {
                        tracing::warn!(
                            message = "Dependency failure on the last allowed delivery: the event is requeued, not dead-lettered.",
                            event_id,
                            event_type,
                            receive_count = delivery.receive_count,
                            %error,
                        );
                        let _ = self.acks.send(delivery.receipt.clone()).await;
                    }
                    other => {
                        tracing::error!(message = "Cannot requeue; the message stays in the queue.", event_id, error = ?other);
                        let _ = self
                            .queue
                            .set_visibility(
                                &delivery.receipt,
                                self.processor.backoff.max.min(self.visibility),
                            )
                            .await;
                    }
                }
            }
            Decision::Busy { delay } => {
                self.metrics.busy.inc();
                tracing::debug!(message = "Event leased by another worker.", event_id);
                let _ = self.queue.set_visibility(&delivery.receipt, delay).await;
            }
            Decision::DeadLetter { reason } => {
                let mut copy = delivery.to_outbound();
                copy.attributes
                    .insert(attr::ERROR.to_owned(), truncate(&reason, 1024));
                let sent = self.dlq.send_batch(std::slice::from_ref(&copy)).await;
                match sent.into_iter().next() {
                    Some(Ok(())) => {
                        self.metrics.dead_lettered.inc();
                        tracing::error!(
                            message = "Event dead-lettered.",
                            event_id,
                            event_type,
                            receive_count = delivery.receive_count,
                            reason = %reason,
                        );
                        let _ = self.acks.send(delivery.receipt.clone()).await;
                    }
                    other => {
                        let error = match other {
                            Some(Err(e)) => e.to_string(),
                            _ => "no result".to_owned(),
                        };
                        tracing::error!(message = "Cannot dead-letter; the message stays in the queue.", event_id, %error);
                        let delay = self
                            .processor
                            .backoff
                            .delay(delivery.receive_count, fastrand::f64());
                        let _ = self.queue.set_visibility(&delivery.receipt, delay).await;
                    }
                }
            }
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}
