//! The runtime pieces every service shares, kept apart from the rules:
//! they hold tasks, clocks, atomics or signals. The batching of queue calls
//! ([`coalescer`]), the wall clock ([`clock`]), metrics ([`metrics`], and
//! [`emf`] to write them as CloudWatch lines), which secret versions a
//! service loaded ([`loaded_secrets`]), a secret kept current
//! ([`refresh`]), and the shutdown signal ([`shutdown`]).

pub mod clock;
pub mod coalescer;
pub mod emf;
pub mod loaded_secrets;
pub mod metrics;
pub mod refresh;
pub mod shutdown;
