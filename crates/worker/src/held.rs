//! A routed destination's own circuit breaker: a destination that keeps
//! timing out or failing is left alone for a while, so its events wait on
//! the queue without calls while every other destination and the
//! projections flow.
//!
//! - [`FAILURES_TO_OPEN`] tries in a row that were sent and failed
//!   transiently (timeout, refused connection, 5xx, 429) open it. A
//!   refusal (4xx) is an answer: it does not count, and neither does a
//!   delivery that was never sent (every slot taken).
//! - While open, a delivery is not sent: the event goes back to the queue
//!   until the next probe is due ([`DeliveryError::not_sent`]).
//! - Once the wait is over, one delivery at a time is let through as a
//!   probe. Its success closes the breaker; its failure opens it again for
//!   twice as long, from [`PROBE_FIRST`] up to [`PROBE_MAX`].
//!
//! [`DestinationCircuit`] is the state machine, stepped with the time
//! passed in; [`DestinationBreaker`] shares it between the tasks and logs
//! when it opens and closes (`hookline_destination_breaker_open` follows
//! [`DestinationBreaker::is_open`]).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use hookline_core::ports::{DeliveryError, ErrorKind};

/// Failed tries in a row that open the breaker.
pub const FAILURES_TO_OPEN: u32 = 5;
/// The first wait before a probe; each failed probe doubles it.
pub const PROBE_FIRST: Duration = Duration::from_secs(2);
/// The longest wait between probes: the most a recovered destination waits
/// before its events flow again.
pub const PROBE_MAX: Duration = Duration::from_secs(30);

/// The breaker's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestinationCircuit {
    /// Deliveries are sent; `failures` in a row so far.
    Closed { failures: u32 },
    /// Nothing is sent until `until`; then one probe (`probing`).
    Open {
        until: Instant,
        wait: Duration,
        probing: bool,
    },
}

/// Whether a delivery may be sent now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Send,
    /// Sent as the probe of an open breaker.
    Probe,
    /// Not sent: look again after this long.
    Wait(Duration),
}

/// A change worth a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turned {
    Opened { wait: Duration },
    Closed,
}

impl Default for DestinationCircuit {
    fn default() -> Self {
        Self::Closed { failures: 0 }
    }
}

impl DestinationCircuit {
    pub fn admit(&mut self, now: Instant) -> Admit {
        match self {
            Self::Closed { .. } => Admit::Send,
            Self::Open { until, probing, .. } => {
                if *probing || now < *until {
                    let left = until.saturating_duration_since(now);
                    Admit::Wait(left.max(Duration::from_secs(1)))
                } else {
                    *probing = true;
                    Admit::Probe
                }
            }
        }
    }

    /// How a sent delivery went: `true` when the destination took it or
    /// answered with a refusal of the event itself.
    pub fn record(&mut self, answered: bool, probe: bool, now: Instant) -> Option<Turned> {
        match (&mut *self, answered) {
            (Self::Closed { failures }, true) => {
                *failures = 0;
                None
            }
            (Self::Closed { failures }, false) => {
                *failures += 1;
                (*failures >= FAILURES_TO_OPEN).then(|| self.open(PROBE_FIRST, now))
            }
            (Self::Open { .. }, true) => {
                *self = Self::Closed { failures: 0 };
                Some(Turned::Closed)
            }
            (Self::Open { wait, .. }, false) => {
                // A try sent before it opened changes nothing; a probe's
                // failure doubles the wait.
                if probe {
                    let next = wait.saturating_mul(2).min(PROBE_MAX);
                    *self = Self::Open {
                        until: now + next,
                        wait: next,
                        probing: false,
                    };
                }
                None
            }
        }
    }

    fn open(&mut self, wait: Duration, now: Instant) -> Turned {
        *self = Self::Open {
            until: now + wait,
            wait,
            probing: false,
        };
        Turned::Opened { wait }
    }

    pub fn is_open(&self) -> bool {
        matches!(self, Self::Open { .. })
    }
}

/// One destination's breaker, shared by the tasks.
#[derive(Debug, Default)]
pub struct DestinationBreaker {
    circuit: Mutex<DestinationCircuit>,
}

impl DestinationBreaker {
    fn step<T>(&self, f: impl FnOnce(&mut DestinationCircuit) -> T) -> T {
        let mut c = self
            .circuit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut c)
    }

    pub fn is_open(&self) -> bool {
        self.step(|c| c.is_open())
    }

    pub fn admit(&self) -> Admit {
        self.step(|c| c.admit(Instant::now()))
    }

    /// Records a sent delivery's result, and logs a change.
    pub fn record(&self, name: &str, result: &Result<(), DeliveryError>, probe: bool) {
        if result.as_ref().is_err_and(|e| e.not_sent) {
            if probe {
                // The probe found no slot: another may go.
                self.step(|c| {
                    if let DestinationCircuit::Open { probing, .. } = c {
                        *probing = false;
                    }
                });
            }
            return;
        }
        let answered = match result {
            Ok(()) => true,
            Err(e) => e.kind == ErrorKind::Permanent,
        };
        match self.step(|c| c.record(answered, probe, Instant::now())) {
            Some(Turned::Opened { wait }) => tracing::error!(
                message = "Destination breaker opened: its events wait on the queue without calls.",
                destination = name,
                failures = FAILURES_TO_OPEN,
                probe_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                error = result.as_ref().err().map(|e| e.message.as_str()),
            ),
            Some(Turned::Closed) => tracing::info!(
                message = "Destination breaker closed: its events flow again.",
                destination = name,
            ),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_in_a_row_open_it_and_an_answer_in_between_does_not() {
        let t0 = Instant::now();
        let mut c = DestinationCircuit::default();
        for _ in 0..FAILURES_TO_OPEN - 1 {
            assert_eq!(c.record(false, false, t0), None);
        }
        assert_eq!(
            c.record(true, false, t0),
            None,
            "an answer resets the count"
        );
        for _ in 0..FAILURES_TO_OPEN - 1 {
            assert_eq!(c.record(false, false, t0), None);
        }
        assert_eq!(
            c.record(false, false, t0),
            Some(Turned::Opened { wait: PROBE_FIRST })
        );
        assert_eq!(c.admit(t0), Admit::Wait(PROBE_FIRST));
    }

    #[test]
    fn one_probe_at_a_time_on_a_doubling_wait_and_its_success_closes() {
        let t0 = Instant::now();
        let mut c = DestinationCircuit::default();
        for _ in 0..FAILURES_TO_OPEN {
            c.record(false, false, t0);
        }
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..6 {
            let Admit::Wait(w) = c.admit(now) else {
                panic!("open")
            };
            now += w;
            assert_eq!(c.admit(now), Admit::Probe);
            assert!(
                matches!(c.admit(now), Admit::Wait(_)),
                "one probe at a time"
            );
            // A try sent before it opened changes nothing.
            assert_eq!(c.record(false, false, now), None);
            assert_eq!(c.record(false, true, now), None);
            waits.push(w.as_secs());
        }
        assert_eq!(waits, [2, 4, 8, 16, 30, 30]);
        let Admit::Wait(w) = c.admit(now) else {
            panic!("open")
        };
        now += w;
        assert_eq!(c.admit(now), Admit::Probe);
        assert_eq!(c.record(true, true, now), Some(Turned::Closed));
        assert_eq!(c.admit(now), Admit::Send);
    }

    #[test]
    fn unsent_deliveries_and_refusals_do_not_open_it() {
        let b = DestinationBreaker::default();
        let busy = Err(DeliveryError::not_sent("busy", Duration::from_secs(1)));
        for _ in 0..10 {
            b.record("d", &busy, false);
        }
        assert!(!b.is_open());
        let refused = Err(DeliveryError::permanent("HTTP 400"));
        let down = Err(DeliveryError::transient("timed out"));
        for _ in 0..FAILURES_TO_OPEN - 1 {
            b.record("d", &down, false);
        }
        b.record("d", &refused, false);
        assert!(!b.is_open(), "a refusal is an answer");
        for _ in 0..FAILURES_TO_OPEN {
            b.record("d", &down, false);
        }
        assert!(b.is_open());
        assert!(matches!(b.admit(), Admit::Wait(_)));
    }
}
