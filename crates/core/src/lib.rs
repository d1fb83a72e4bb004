//! Hookline's domain core, shared by every binary and adapter.
//!
//! The rules: the parsed [`envelope::Envelope`] of a Stripe event, the
//! admission rule ([`inbound`]), the queue [`message`], the [`ports`] the
//! adapters implement (one file each), the stored [`records`], the pure
//! event [`handlers`], the [`routes`] document, the [`secrets`] rules, the
//! typed [`settings`], the state fetched from Stripe ([`stripe_state`]) and
//! a subject's holdings ([`erase`]). The small runtime pieces the services
//! share live apart, in [`runtime`], and are re-exported here by name.
//!
//! Architecture invariant: nothing here talks to SQLite or AWS; adapters live
//! in their own crates and are reached only through the ports.

pub mod envelope;
pub mod erase;
pub mod handlers;
pub mod inbound;
pub mod message;
pub mod ports;
pub mod records;
pub mod routes;
pub mod runtime;
pub mod secrets;
pub mod settings;
pub mod stripe_state;

pub use runtime::{clock, coalescer, emf, loaded_secrets, metrics, refresh, shutdown};
