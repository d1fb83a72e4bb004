//! Hookline's domain core, shared by every binary and adapter.
//!
//! It holds what the ingress, the worker and the CLI agree on: the parsed
//! [`envelope::Envelope`] of a Stripe event, the queue message built from it,
//! the [`ports`] (`Queue`, `Store`, `StripeApi`, the optional `NativeRedrive`; and
//! `SecretSource` in [`secrets`]) that the embedded and AWS adapters implement, the typed [`settings`], the
//! [`coalescer::Coalescer`] that turns concurrent sends and deletes into batches, the
//! pure event [`handlers`], and small [`metrics`] helpers.
//!
//! Architecture invariant: nothing here talks to SQLite or AWS; adapters live
//! in their own crates and are reached only through the ports.

pub mod clock;
pub mod coalescer;
pub mod emf;
pub mod envelope;
pub mod erase;
pub mod fetched;
pub mod handlers;
pub mod inbound;
pub mod loaded;
pub mod message;
pub mod metrics;
pub mod ports;
pub mod records;
pub mod routes;
pub mod secrets;
pub mod settings;
pub mod shutdown;
