//! The webhook ingress: a thin axum server that verifies each Stripe
//! webhook's signature over the raw body, enqueues the raw bytes durably,
//! and only then answers 200.
//!
//! [`startup`] builds it, [`webhook`] is the pipeline a request takes,
//! [`health`] and [`metrics`] answer the operators, [`mod@serve`] is the HTTP/1
//! loop. Architecture invariant: no 2xx for an event that the queue did not
//! accept.

mod health;
mod metrics;
mod serve;
mod settings;
mod startup;
mod webhook;

pub use metrics::IngressMetrics;
pub use serve::{serve, ConnectionLimits};
pub use settings::IngressArgs;
pub use startup::{router, AppState, Application, BuildError};
