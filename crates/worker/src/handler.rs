//! Your own handlers, in your own worker binary: the same settings, queue,
//! ledger, retries, DLQ and metrics as `hookline-worker`, plus handlers of
//! yours registered by event type.
//!
//! ```no_run
//! use hookline_worker::handler::{async_trait, Effect, Event, Failure, Handler, Handlers};
//!
//! struct Log;
//!
//! #[async_trait]
//! impl Handler for Log {
//!     async fn handle(&self, event: Event<'_>) -> Result<(), Failure> {
//!         println!("{} {}", event.event_type, event.event_id);
//!         Ok(())
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     hookline_worker::handler::main(Handlers::new().on("invoice.paid", Effect::Replace, Log))
//! }
//! ```
//!
//! Each handler is a destination of its own (`handler:TYPE` in the ledger
//! and the metrics): it gets every event of its type, with the same
//! guarantees an `http` destination has: retried within a 24-hour horizon
//! on transient failures, dead-lettered at once on permanent ones, never
//! called again once it took the event, whatever else fails.

use std::sync::Arc;
use std::time::Duration;

pub use async_trait::async_trait;
pub use hookline_core::handlers::Effect;
use hookline_core::ports::Destination;
pub use hookline_core::ports::{DeliveryError as Failure, Outgoing as Event};
use hookline_core::routes::DEFAULT_RETRY_FOR;

/// A handler of yours: async, may do I/O. `Ok` once its effect is done;
/// [`Failure::transient`] to be tried again later, [`Failure::permanent`]
/// to dead-letter the event with that reason.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    async fn handle(&self, event: Event<'_>) -> Result<(), Failure>;
}

/// The handlers of a custom worker, by event type.
#[derive(Default)]
pub struct Handlers {
    pub(crate) registered: Vec<(String, Arc<dyn Destination>)>,
}

impl std::fmt::Debug for Handlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.registered.iter().map(|(t, _)| t))
            .finish()
    }
}

impl Handlers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `handler` on every event of `event_type` (which `ENABLED_EVENTS`
    /// must enable). `Effect::Once` claims the event first, so no two
    /// deliveries run it at once; `Effect::Replace` is for handlers that
    /// may run twice with the same result.
    #[must_use]
    pub fn on(mut self, event_type: &str, effect: Effect, handler: impl Handler) -> Self {
        let destination = Registered {
            name: format!("handler:{event_type}"),
            effect,
            handler: Box::new(handler),
        };
        self.registered
            .push((event_type.to_owned(), Arc::new(destination)));
        self
    }
}

struct Registered {
    name: String,
    effect: Effect,
    handler: Box<dyn Handler>,
}

impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("name", &self.name)
            .field("effect", &self.effect)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Destination for Registered {
    fn name(&self) -> &str {
        &self.name
    }
    fn retry_for(&self) -> Duration {
        DEFAULT_RETRY_FOR
    }
    fn effect(&self) -> Effect {
        self.effect
    }
    async fn deliver(&self, event: Event<'_>) -> Result<(), Failure> {
        self.handler.handle(event).await
    }
}

/// The whole `main` of a custom worker: `hookline-worker`'s settings
/// (flags and environment, exit codes), logging and signals, with these
/// handlers.
pub fn main(handlers: Handlers) -> std::process::ExitCode {
    let args: crate::WorkerArgs = hookline_settings::parse_or_exit();
    hookline_settings::init_logging("hookline-worker", args.common.log_format());
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    hookline_settings::run_service("hookline-worker", threads.max(2), async move {
        let worker = crate::Worker::build_with_handlers(args, handlers).await?;
        worker
            .run_until(hookline_core::shutdown::on_signal())
            .await?;
        Ok::<(), anyhow::Error>(())
    })
}
