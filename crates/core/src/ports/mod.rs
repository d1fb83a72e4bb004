//! The ports, one file each: [`Queue`], [`Store`], [`SecretSource`],
//! [`StripeApi`], [`Destination`], and the optional capability
//! [`NativeRedrive`] (SQS's own DLQ redrive).
//!
//! Adapters (embedded SQLite, AWS) implement them; the ingress, the worker
//! and the CLI hold them as `Arc<dyn Queue>` / `Arc<dyn Store>` and never
//! know which backend is behind. Every error says what it means for the
//! event ([`ErrorKind`]).

mod destination;
mod error;
mod queue;
mod redrive;
mod secrets;
mod store;
mod stripe;

pub use destination::*;
pub use error::*;
pub use queue::*;
pub use redrive::*;
pub use secrets::*;
pub use store::*;
pub use stripe::*;
