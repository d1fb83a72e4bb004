//! Hookline's workspace root: its `tests/` directory is the
//! integration-test binary (one binary, one `mod` per subject), its
//! `benches/` the load benchmarks, `src/bin/soak.rs` the conservation soak.
//! The library holds what the tests, the benches and the soak share: the
//! `Switch` and the Stripe API stand-in (`stripe_stub`). See
//! `ARCHITECTURE.md`.

pub mod stripe_stub;
pub mod switch;

pub use stripe_stub::StripeStub;
pub use switch::Switch;
