//! What the worker counts, served on `METRICS_ADDR`.

use hookline_core::metrics::{Counter, Exposition, Gauge, Histogram, AGE_BUCKETS, LATENCY_BUCKETS};

use hookline_core::records::Completion;
use hookline_core::records::Outcome;

/// What a readiness mark is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Queue = 0,
    Store = 1,
}

impl Part {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queue => "queue",
            Self::Store => "store",
        }
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
        }
    }
}

impl WorkerMetrics {
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

    pub fn mark_configuration_error(&self, part: Part) {
        self.configuration_errors.inc();
        self.last_configuration_error_ms[part as usize].set(hookline_core::clock::unix_millis());
    }

    pub fn mark_success(&self, part: Part) {
        self.last_success_ms[part as usize].set(hookline_core::clock::unix_millis());
    }

    /// The queue or the store had a configuration error and has not
    /// succeeded since (a receive that works says nothing of the store).
    pub fn configuration_broken(&self) -> bool {
        [Part::Queue, Part::Store].into_iter().any(|part| {
            let error = self.last_configuration_error_ms[part as usize].get();
            error > 0 && error >= self.last_success_ms[part as usize].get()
        })
    }

    /// The circuit breaker's state: `part` unavailable, or every part
    /// available again.
    pub fn mark_unavailable(&self, part: Option<Part>) {
        for p in [Part::Queue, Part::Store] {
            self.unavailable[p as usize].set(i64::from(Some(p) == part));
        }
    }

    /// The dependency the circuit breaker waits for, if any.
    pub fn unavailable(&self) -> Option<Part> {
        [Part::Queue, Part::Store]
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
        e.finish()
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
                ("queue", &self.unavailable[Part::Queue as usize]),
                ("store", &self.unavailable[Part::Store as usize]),
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
