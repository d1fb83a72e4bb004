//! What the worker counts, served on `METRICS_ADDR`.

use hookline_core::metrics::{Counter, Exposition, Gauge, Histogram, AGE_BUCKETS, LATENCY_BUCKETS};

use hookline_core::records::Completion;
use hookline_core::records::Outcome;

/// What a readiness mark is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    Queue = 0,
    Store = 1,
}

impl Dependency {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queue => "queue",
            Self::Store => "store",
        }
    }
}

/// What one routed destination did (label and EMF dimension
/// `Destination`).
#[derive(Debug)]
pub struct DestinationMetrics {
    /// Tries the destination took (2xx).
    pub delivered: Counter,
    /// Tries that failed and will be tried again (within the horizon).
    pub retried: Counter,
    /// Tries whose failure dead-lettered the event (refused, or past the
    /// horizon).
    pub failed: Counter,
    /// Time of one try, request to answer.
    pub latency: Histogram,
    /// 1 while the destination's own breaker is open ([`crate::held`]).
    pub breaker_open: Gauge,
}

impl Default for DestinationMetrics {
    fn default() -> Self {
        Self {
            delivered: Counter::default(),
            retried: Counter::default(),
            failed: Counter::default(),
            latency: Histogram::new(LATENCY_BUCKETS),
            breaker_open: Gauge::default(),
        }
    }
}

impl DestinationMetrics {
    fn emf_samples(&self) -> Vec<hookline_core::emf::Sample> {
        use hookline_core::emf::Reading;
        vec![
            ("DestinationDelivered", Reading::counter(&self.delivered)),
            ("DestinationRetried", Reading::counter(&self.retried)),
            ("DestinationFailed", Reading::counter(&self.failed)),
            ("DestinationLatency", Reading::histogram(&self.latency)),
            (
                "DestinationBreakerOpen",
                Reading::Level(self.breaker_open.get()),
            ),
        ]
    }
}

#[derive(Debug)]
pub struct WorkerMetrics {
    pub applied: Counter,
    pub stale: Counter,
    pub ignored: Counter,
    pub duplicate: Counter,
    /// Same-second ties of one object that nothing could order (equal
    /// life-cycle rank, no Stripe API key to fetch the current state).
    pub same_second_unresolved: Counter,
    pub retries: Counter,
    pub busy: Counter,
    pub dead_lettered: Counter,
    pub receive_errors: Counter,
    pub configuration_errors: Counter,
    /// Times the circuit breaker opened, and whether it is open now (1) for
    /// the queue and for the store.
    pub circuit_opened: Counter,
    unavailable: [Gauge; 2],
    /// Unix ms of the last configuration error and of the last success,
    /// of the queue and of the store.
    last_configuration_error_ms: [Gauge; 2],
    last_success_ms: [Gauge; 2],
    pub in_flight: Gauge,
    pub handler_latency: Histogram,
    /// now − `created` when an event is applied: the lag users watch.
    pub event_age: Histogram,
    /// Each routed destination's, by name (none without routes).
    pub destinations: Vec<(String, std::sync::Arc<DestinationMetrics>)>,
    /// The API key's version as last loaded (`hookline keys status`).
    pub loaded: std::sync::Arc<hookline_core::loaded_secrets::LoadedSecrets>,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self {
            applied: Counter::default(),
            stale: Counter::default(),
            ignored: Counter::default(),
            duplicate: Counter::default(),
            same_second_unresolved: Counter::default(),
            retries: Counter::default(),
            busy: Counter::default(),
            dead_lettered: Counter::default(),
            receive_errors: Counter::default(),
            configuration_errors: Counter::default(),
            circuit_opened: Counter::default(),
            unavailable: Default::default(),
            last_configuration_error_ms: Default::default(),
            last_success_ms: Default::default(),
            in_flight: Gauge::default(),
            handler_latency: Histogram::new(LATENCY_BUCKETS),
            event_age: Histogram::new(AGE_BUCKETS),
            destinations: Vec::new(),
            loaded: std::sync::Arc::default(),
        }
    }
}

impl WorkerMetrics {
    /// Metrics that also tell the secrets' versions this worker loaded.
    pub fn with_loaded(
        self,
        loaded: std::sync::Arc<hookline_core::loaded_secrets::LoadedSecrets>,
    ) -> Self {
        Self { loaded, ..self }
    }

    /// Metrics that also count these routed destinations.
    pub fn with_destinations(
        destinations: Vec<(String, std::sync::Arc<DestinationMetrics>)>,
    ) -> Self {
        Self {
            destinations,
            ..Self::default()
        }
    }

    pub fn done(&self, done: Completion) {
        match done {
            Completion::Completed(Outcome::Applied) => self.applied.inc(),
            Completion::Completed(Outcome::Stale) => self.stale.inc(),
            Completion::Completed(Outcome::Ignored) => self.ignored.inc(),
            Completion::Duplicate => self.duplicate.inc(),
            // Never an end: the worker settles the tie and completes.
            Completion::Tied => {}
        }
    }

    pub fn mark_configuration_error(&self, part: Dependency) {
        self.configuration_errors.inc();
        self.last_configuration_error_ms[part as usize].set(hookline_core::clock::unix_millis());
    }

    pub fn mark_success(&self, part: Dependency) {
        self.last_success_ms[part as usize].set(hookline_core::clock::unix_millis());
    }

    /// The queue or the store had a configuration error and has not
    /// succeeded since (a receive that works says nothing of the store).
    pub fn configuration_broken(&self) -> bool {
        [Dependency::Queue, Dependency::Store]
            .into_iter()
            .any(|part| {
                let error = self.last_configuration_error_ms[part as usize].get();
                error > 0 && error >= self.last_success_ms[part as usize].get()
            })
    }

    /// The circuit breaker's state: `part` unavailable, or every part
    /// available again.
    pub fn mark_unavailable(&self, part: Option<Dependency>) {
        for p in [Dependency::Queue, Dependency::Store] {
            self.unavailable[p as usize].set(i64::from(Some(p) == part));
        }
    }

    /// The dependency the circuit breaker waits for, if any.
    pub fn unavailable(&self) -> Option<Dependency> {
        [Dependency::Queue, Dependency::Store]
            .into_iter()
            .find(|p| self.unavailable[*p as usize].get() > 0)
    }

    /// Everything that completed, whatever the outcome.
    pub fn completed(&self) -> u64 {
        self.applied.get() + self.stale.get() + self.ignored.get() + self.duplicate.get()
    }

    /// The readings written as EMF lines (`EMF_NAMESPACE`).
    pub fn emf_samples(&self) -> Vec<hookline_core::emf::Sample> {
        use hookline_core::emf::Reading;
        vec![
            ("EventsApplied", Reading::counter(&self.applied)),
            ("EventsStale", Reading::counter(&self.stale)),
            ("EventsIgnored", Reading::counter(&self.ignored)),
            ("EventsDuplicate", Reading::counter(&self.duplicate)),
            ("EventRetries", Reading::counter(&self.retries)),
            ("EventsBusy", Reading::counter(&self.busy)),
            ("EventsDeadLettered", Reading::counter(&self.dead_lettered)),
            (
                "ConfigurationErrors",
                Reading::counter(&self.configuration_errors),
            ),
            ("ReceiveErrors", Reading::counter(&self.receive_errors)),
            (
                "SameSecondUnresolved",
                Reading::counter(&self.same_second_unresolved),
            ),
            ("CircuitOpened", Reading::counter(&self.circuit_opened)),
            (
                "DependencyUnavailable",
                Reading::Level(self.unavailable.iter().map(Gauge::get).sum()),
            ),
            ("EventAge", Reading::histogram(&self.event_age)),
            ("HandlerLatency", Reading::histogram(&self.handler_latency)),
        ]
    }

    /// The EMF lines: the worker's, then one per destination under the
    /// dimensions `Service` and `Destination`.
    pub fn emf_lines(
        &self,
    ) -> Vec<(
        hookline_core::emf::Dimensions,
        Vec<hookline_core::emf::Sample>,
    )> {
        let mut lines = vec![(vec![("Service", "worker".to_owned())], self.emf_samples())];
        for (name, m) in &self.destinations {
            lines.push((
                vec![
                    ("Service", "worker".to_owned()),
                    ("Destination", name.clone()),
                ],
                m.emf_samples(),
            ));
        }
        lines
    }

    pub fn render(&self) -> String {
        let mut e = Exposition::new();
        e.counters(
            "hookline_events_processed_total",
            "Deliveries completed, by outcome.",
            "outcome",
            &[
                ("applied", &self.applied),
                ("stale", &self.stale),
                ("ignored", &self.ignored),
                ("duplicate", &self.duplicate),
            ],
        )
        .counter(
            "hookline_event_retries_total",
            "Deliveries given back to the queue after a transient failure.",
            &self.retries,
        )
        .counter(
            "hookline_event_busy_total",
            "Deliveries postponed because another worker held the event's lease.",
            &self.busy,
        )
        .counter(
            "hookline_events_dead_lettered_total",
            "Messages the worker moved to the dead-letter queue.",
            &self.dead_lettered,
        )
        .counter(
            "hookline_configuration_errors_total",
            "Store or queue calls that failed for a configuration error (missing resource, access denied, KMS, credentials).",
            &self.configuration_errors,
        )
        .counter(
            "hookline_receive_errors_total",
            "Failed receives from the queue.",
            &self.receive_errors,
        )
        .counter(
            "hookline_same_second_unresolved_total",
            "Events of one object in the same second that nothing could order (equal life-cycle rank, no Stripe API key): the later write was kept.",
            &self.same_second_unresolved,
        );
        self.render_health(&mut e);
        let mut text = e.finish();
        self.render_destinations(&mut text);
        text.push_str(&self.loaded.render());
        text
    }

    /// `hookline_destination_deliveries_total{destination,result}` and
    /// `hookline_destination_delivery_seconds{destination}`.
    fn render_destinations(&self, out: &mut String) {
        use std::fmt::Write;
        if self.destinations.is_empty() {
            return;
        }
        let name = "hookline_destination_deliveries_total";
        let _ = writeln!(out, "# HELP {name} Tries of each routed destination, by result (delivered, retried, failed).\n# TYPE {name} counter");
        for (d, m) in &self.destinations {
            for (result, c) in [
                ("delivered", &m.delivered),
                ("retried", &m.retried),
                ("failed", &m.failed),
            ] {
                let _ = writeln!(
                    out,
                    "{name}{{destination=\"{d}\",result=\"{result}\"}} {}",
                    c.get()
                );
            }
        }
        let name = "hookline_destination_breaker_open";
        let _ = writeln!(out, "# HELP {name} 1 while the destination's own breaker is open: its events wait on the queue without calls.\n# TYPE {name} gauge");
        for (d, m) in &self.destinations {
            let _ = writeln!(
                out,
                "{name}{{destination=\"{d}\"}} {}",
                m.breaker_open.get()
            );
        }
        let name = "hookline_destination_delivery_seconds";
        let _ = writeln!(out, "# HELP {name} Time of one try of a routed destination, request to answer.\n# TYPE {name} histogram");
        for (d, m) in &self.destinations {
            let (counts, overflow) = m.latency.bucket_counts();
            let mut cumulative = 0;
            for (bound, c) in m.latency.bounds().iter().zip(counts) {
                cumulative += c;
                let _ = writeln!(
                    out,
                    "{name}_bucket{{destination=\"{d}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let count = cumulative + overflow;
            let _ = writeln!(
                out,
                "{name}_bucket{{destination=\"{d}\",le=\"+Inf\"}} {count}\n{name}_sum{{destination=\"{d}\"}} {}\n{name}_count{{destination=\"{d}\"}} {count}",
                m.latency.sum_secs()
            );
        }
    }

    /// The circuit breaker's state, work in flight and the histograms.
    fn render_health(&self, e: &mut Exposition) {
        e.counter(
            "hookline_circuit_opened_total",
            "Times the worker stopped taking messages because the store or the queue failed.",
            &self.circuit_opened,
        )
        .gauges(
            "hookline_dependency_unavailable",
            "1 while the worker takes no messages because this dependency fails (circuit open).",
            "dependency",
            &[
                ("queue", &self.unavailable[Dependency::Queue as usize]),
                ("store", &self.unavailable[Dependency::Store as usize]),
            ],
        )
        .gauge(
            "hookline_events_in_flight",
            "Events being processed now.",
            &self.in_flight,
        )
        .histogram(
            "hookline_handler_duration_seconds",
            "Time to process one delivery, claim to commit.",
            &self.handler_latency,
        )
        .histogram(
            "hookline_event_age_seconds",
            "Age of an event (now - created) when it was applied.",
            &self.event_age,
        );
    }
}
