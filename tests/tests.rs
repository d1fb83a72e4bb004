//! Hookline's integration tests: one binary, one module per subject. They
//! run the real ingress (in-process on a random port, or as the built
//! binary) against a real SQLite file in a temporary directory.

/// Shared helpers: `spawn_app()`, signing, fixtures, binary paths, moto fixtures.
mod helpers;

/// A test bed on either backend, and `on_both_backends!`.
mod bed;

/// Every row of the contract's "Ingress HTTP" table, in-process on a random port.
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

/// The worker under outages and at SIGTERM: the circuit breaker, a
/// misconfigured table, a long poll under way at shutdown.
mod outages;

/// Stripe events through Amazon EventBridge, on both backends.
mod eventbridge;

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

/// Stripe's published objects of every handled type, applied.
mod stripe_shapes;

/// What the queues promise: FIFO copies with deduplication ids of their
/// own, concurrent receives that never share a message.
mod queues;

/// DLQ replays that end, held messages released, list and export streaming.
mod replays;

/// Bounded shutdown: a hung or locked store, the ingress's drain, ctrl-c.
mod shutdown;

/// Operator errors at start: key precedence, exit codes, a missing table.
mod start_errors;

/// Slow and idle clients at the ingress.
mod slow_clients;

/// The embedded backend's files: private, purged of expired records.
mod embedded_files;

/// A first deploy's webhook secret: placeholder, refresh, `/readyz`.
mod secret_placeholder;

/// SQS message sizes checked per message.
mod message_size;

/// Metrics as CloudWatch Embedded Metric Format lines.
mod emf;

/// Thin (v2) events and the destination ping.
mod thin_events;

/// Events of one object in the same second.
mod same_second;

/// `ignored` is not final.
mod ignored_not_final;

/// The Stripe API stand-in against Stripe's official library; 429s.
mod stripe_stub;
