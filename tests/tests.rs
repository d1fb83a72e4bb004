//! Hookline's integration tests: one binary, one module per subject. They
//! run the real ingress (in-process on a random port, or as the built
//! binary) against a real SQLite file in a temporary directory.

/// Shared helpers: `spawn_app()`, signing, fixtures, binary paths, moto fixtures.
mod helpers;

/// A test bed on either backend, and `on_both_backends!`.
mod bed;

/// Every row of the SPEC's "Ingress HTTP" table, in-process on a random port.
mod ingress_http;

/// The `hookline-ingress` binary: settings, exit codes, logs, signals, crashes.
mod ingress_binary;

/// The embedded queue: visibility, receive counts, redrive, concurrent receivers.
mod embedded_queue;

/// The `hookline-worker` binary on the embedded backend: records, duplicates,
/// ordering, two workers, dead-lettering, outages, SIGKILL and SIGTERM.
mod worker;

/// The port conformance suite, run on the embedded backend and on AWS (moto).
mod conformance;

/// The ingress on the AWS backend: SQS acceptance, FIFO, batching, outages.
mod ingress_aws;

/// The `hookline` operator CLI on both backends: DLQ list, export, replay,
/// backfill, show commands, config check, native redrive.
mod cli;

/// Webhook secrets from Secrets Manager: load, refresh, last good value.
mod secrets_aws;

/// Where reality differs from our fixtures: Stripe's published shapes and
/// nullable fields, FIFO copies, operator errors, bounded shutdown, slow
/// clients, key precedence, settings errors, data files, replays that end,
/// `make run` and ctrl-c.
mod reality;

/// What a first deploy needs from the binaries: a placeholder secret, a
/// `/readyz` without AWS error text, SQS message sizes, EMF metrics.
mod deploy;

/// The worker under outages and at SIGTERM: the circuit breaker, a
/// misconfigured table, a long poll under way at shutdown.
mod outages;

/// Stripe events through Amazon EventBridge, on both backends.
mod eventbridge;

/// Stripe as it is now: thin events and the destination ping, events in
/// the same second, `ignored` that is not final, the Stripe API stand-in
/// against Stripe's official library.
mod stripe_now;

/// Routes and destinations: delivery to a team's service over HTTP, checked
/// by a Node receiver that verifies with the official stripe package.
mod destinations;

/// `hookline erase`: an account's, an object's or an event's records
/// removed on both backends, with a receipt.
mod erase;

/// `hookline keys status` on moto: rotated secrets reach running services,
/// a webhook roll's overlap.
mod keys;

/// The worker stepped in-process: one delivery at a time through
/// `Processor::process` against the embedded store.
mod worker_steps;

/// `hookline console`: safety over HTTP, the operator's path in headless
/// Chromium.
mod console;

/// The architecture's rules, checked against `cargo metadata` and the
/// sources.
mod tidy;

/// One event, one trace: OpenTelemetry spans from the ingress to the last
/// write, decoded by an OTLP receiver built on OpenTelemetry's protos.
mod traces;

/// The newest edges under hostile input and slow peers: thin-event fetches
/// that cannot leave Stripe, destinations that hang or answer huge.
mod edges;
