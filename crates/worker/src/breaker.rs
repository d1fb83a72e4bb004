//! The circuit breaker around the worker's dependencies: the store and the
//! queue.
//!
//! A failure that is not the event's own (a transient or configuration
//! error of the store or the queue) opens it. While it is open the pollers
//! take no new messages, so an outage or a wrong table name spends no
//! deliveries and fills no DLQ: the events wait on the queue, which keeps
//! them for days. A prober calls the failing dependency on a backoff (1 s,
//! doubling to 10 s); its first answer closes the breaker and receiving
//! resumes. [`Circuit`] is the state machine, stepped without I/O or clock;
//! [`Breaker`] shares it between the pollers, the tasks and the prober.

use std::sync::Mutex;
use std::time::Duration;

use hookline_core::ports::PortError;
use tokio::sync::watch;

use crate::metrics::Dependency;

/// The first probe's delay; each failed probe doubles it up to [`PROBE_MAX`].
pub const PROBE_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between two probes: the most an outage's end can go
/// unnoticed.
pub const PROBE_MAX: Duration = Duration::from_secs(10);

/// The breaker's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Circuit {
    /// Messages are taken.
    Closed,
    /// `part` fails: no message is taken until a probe of it succeeds.
    Open {
        part: Dependency,
        /// The last error, for the log and nothing else.
        error: String,
        configuration: bool,
        /// Probes that failed since it opened.
        failed_probes: u32,
    },
}

impl Circuit {
    /// `part` failed for a reason that is not the event's: opens the
    /// circuit (or records the newer error). `true` when this call opened it.
    pub fn trip(&mut self, part: Dependency, error: &PortError) -> bool {
        let opened = matches!(self, Self::Closed);
        let failed_probes = match self {
            Self::Open { failed_probes, .. } => *failed_probes,
            Self::Closed => 0,
        };
        *self = Self::Open {
            part,
            error: error.to_string(),
            configuration: error.is_configuration(),
            failed_probes,
        };
        opened
    }

    /// What to probe next, and after how long; `None` when closed.
    pub fn next_probe(&self) -> Option<(Dependency, Duration)> {
        match self {
            Self::Closed => None,
            Self::Open {
                part,
                failed_probes,
                ..
            } => {
                let factor = 1u32 << (*failed_probes).min(16);
                Some((*part, PROBE_FIRST.saturating_mul(factor).min(PROBE_MAX)))
            }
        }
    }

    /// A probe failed: stays open, the next probe waits longer.
    pub fn probe_failed(&mut self, error: &PortError) {
        if let Self::Open {
            error: last,
            configuration,
            failed_probes,
            ..
        } = self
        {
            *last = error.to_string();
            *configuration = error.is_configuration();
            *failed_probes = failed_probes.saturating_add(1);
        }
    }

    /// The dependency answered: closes. `true` if it was open.
    pub fn probe_succeeded(&mut self) -> bool {
        let was_open = matches!(self, Self::Open { .. });
        *self = Self::Closed;
        was_open
    }

    pub fn is_open(&self) -> bool {
        matches!(self, Self::Open { .. })
    }
}

/// The circuit shared by the pollers (wait while open), the tasks (trip)
/// and the prober (close).
#[derive(Debug)]
pub struct Breaker {
    circuit: Mutex<Circuit>,
    open: watch::Sender<bool>,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            circuit: Mutex::new(Circuit::Closed),
            open: watch::Sender::new(false),
        }
    }
}

impl Breaker {
    fn step<T>(&self, f: impl FnOnce(&mut Circuit) -> T) -> T {
        let mut circuit = self
            .circuit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let out = f(&mut circuit);
        self.open.send_replace(circuit.is_open());
        out
    }

    /// See [`Circuit::trip`].
    pub fn trip(&self, part: Dependency, error: &PortError) -> bool {
        self.step(|c| c.trip(part, error))
    }

    /// See [`Circuit::probe_failed`].
    pub fn probe_failed(&self, error: &PortError) {
        self.step(|c| c.probe_failed(error));
    }

    /// See [`Circuit::probe_succeeded`].
    pub fn probe_succeeded(&self) -> bool {
        self.step(Circuit::probe_succeeded)
    }

    pub fn state(&self) -> Circuit {
        self.circuit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn is_open(&self) -> bool {
        *self.open.borrow()
    }

    /// Resolves once the circuit is closed (at once if it is).
    pub async fn closed(&self) {
        let mut rx = self.open.subscribe();
        let _ = rx.wait_for(|open| !open).await;
    }

    /// Resolves once the circuit is open (at once if it is).
    pub async fn opened(&self) {
        let mut rx = self.open.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down() -> PortError {
        PortError::transient("connection refused".to_owned())
    }

    #[test]
    fn a_failure_opens_probes_back_off_and_an_answer_closes() {
        let mut c = Circuit::Closed;
        assert_eq!(c.next_probe(), None);
        assert!(
            c.trip(Dependency::Store, &down()),
            "the first failure opens"
        );
        assert!(
            !c.trip(Dependency::Store, &down()),
            "later ones keep it open"
        );
        let delays: Vec<u64> = (0..6)
            .map(|_| {
                let (part, delay) = c.next_probe().expect("open");
                assert_eq!(part, Dependency::Store);
                c.probe_failed(&down());
                delay.as_secs()
            })
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
        assert!(c.probe_succeeded());
        assert_eq!(c, Circuit::Closed);
        assert!(!c.probe_succeeded(), "closing a closed circuit says so");
    }

    #[test]
    fn the_last_error_and_its_kind_are_kept_for_the_log() {
        let mut c = Circuit::Closed;
        c.trip(Dependency::Queue, &down());
        c.probe_failed(&PortError::configuration("no such table".to_owned()));
        match &c {
            Circuit::Open {
                error,
                configuration,
                failed_probes,
                ..
            } => {
                assert!(error.contains("no such table"));
                assert!(*configuration);
                assert_eq!(*failed_probes, 1);
            }
            Circuit::Closed => panic!("open"),
        }
        // A new failure of another part keeps the probe schedule.
        c.trip(Dependency::Store, &down());
        assert_eq!(
            c.next_probe(),
            Some((Dependency::Store, Duration::from_secs(2)))
        );
    }

    #[tokio::test]
    async fn waiters_see_it_open_and_close() {
        let b = std::sync::Arc::new(Breaker::default());
        b.closed().await;
        b.trip(Dependency::Store, &down());
        assert!(b.is_open());
        b.opened().await;
        let waiter = tokio::spawn({
            let b = std::sync::Arc::clone(&b);
            async move { b.closed().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert!(b.probe_succeeded());
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("woken")
            .expect("joined");
    }
}
