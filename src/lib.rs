//! Hookline's workspace root. It holds no code of its own: its `tests/`
//! directory is the integration-test binary (one binary, one `mod` per
//! subject) and its `benches/` the load benchmarks. See `ARCHITECTURE.md`.
