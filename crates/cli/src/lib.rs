//! `hookline`, the operator tool, as a library so tests can reach its parts.
//!
//! Developer helper: `hookline dev send TYPE` signs a fixture event with the
//! configured webhook secret and posts it to a running ingress, so the whole
//! path can be seen working in a minute.

pub mod dev;
pub mod fixtures;
