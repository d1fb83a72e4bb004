//! Hookline's workspace root: its `tests/` directory is the
//! integration-test binary (one binary, one `mod` per subject), its
//! `benches/` the load benchmarks, `src/bin/soak.rs` the conservation soak.
//! The library holds what the tests and the soak share. See
//! `ARCHITECTURE.md`.

pub mod switch;

pub use switch::Switch;
