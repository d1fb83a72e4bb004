//! The webhook ingress: a thin axum server that verifies each Stripe
//! webhook's signature over the raw body, enqueues the raw bytes durably,
//! and only then answers 200.
//!
//! Checks run in the SPEC's order: body size (413), signature (400), payload
//! (400), livemode and event type (200, not enqueued), enqueue (200 or 503).
//! Architecture invariant: no 2xx for an event that the queue did not accept.

mod app;
mod metrics;
mod serve;
mod settings;

pub use app::{router, AppState, Application, BuildError};
pub use metrics::IngressMetrics;
pub use serve::{serve, ConnectionLimits};
pub use settings::IngressArgs;
