//! The worker: long-polls the queue, applies each Stripe event exactly once
//! to the store, and deletes the message only after the effect committed.
//!
//! - [`decide`] holds the pure rules: which [`decide::Decision`] follows a
//!   processing result, and the backoff delay after the n-th failure.
//! - [`process`] turns one delivery into a decision (parse, admit, handle,
//!   write by the handler's effect) through the store port.
//! - [`breaker`] stops receiving while the store or the queue fails, and
//!   probes it until it answers; [`held`] is a routed destination's own
//!   breaker, which holds only that destination's events.
//! - [`run`] is the loop: receive up to `WORKER_CONCURRENCY` events at once,
//!   heartbeat long ones, act on decisions, batch deletes, shut down on
//!   SIGTERM within `SHUTDOWN_GRACE_SECS` (a long poll under way is let
//!   return and what it brought handed back).
//!
//! Architecture invariant: a message is deleted only after its event is
//! `COMPLETED` in the store (applied, stale, ignored or a duplicate) or after
//! its copy is in the dead-letter queue (or, requeued, on the queue).

pub mod breaker;
mod consume;
pub mod decide;
mod deliver;
pub mod handler;
pub mod held;
mod housekeeping;
pub mod info;
mod ledger;
pub mod metrics;
pub mod outcome;
mod poll;
pub mod process;
mod project;
pub mod route;
pub mod run;
mod serve;
mod settings;
mod slot;
mod trace;
mod traced_store;

pub use run::Worker;
pub use settings::WorkerArgs;
