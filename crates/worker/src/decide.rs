//! The worker's pure rules: no I/O, no clock, no randomness of their own.

use std::time::Duration;

use hookline_core::ports::PortError;
use hookline_core::records::Completion;

/// SQS's largest visibility timeout (12 hours).
pub const MAX_VISIBILITY: Duration = Duration::from_secs(43_200);

/// What to do with a delivery once it was processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The event is `COMPLETED`: delete the message.
    Done(Completion),
    /// A dependency failed (a transient or configuration error of the store
    /// or of Stripe's API, not the event's own): make the message visible
    /// again after `delay`. A store failure also stops receiving until the
    /// store answers again (the circuit breaker), so an outage does not
    /// spend deliveries; a Stripe API failure does not (other events need
    /// no fetch).
    RetryLater {
        delay: Duration,
        error: PortError,
        cause: Cause,
    },
    /// A dependency failed on the last delivery the queue allows: the event
    /// is not at fault, so instead of letting the queue redrive it to the
    /// DLQ, a fresh copy goes back on the queue and this message is deleted.
    Requeue { error: PortError, cause: Cause },
    /// Another worker holds a live lease: look again once it ends.
    Busy { delay: Duration },
    /// Cannot succeed: copy to the DLQ with `reason`, then delete.
    DeadLetter { reason: String },
}

/// Which dependency failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The store (the breaker opens).
    Store,
    /// Stripe's API (a thin-event or same-second fetch).
    StripeApi,
    /// A routed destination (within its retry horizon).
    Destination,
    /// A routed destination had no free slot or its breaker open: nothing
    /// was sent, and the event waits (not a failure of the event).
    Held,
}

/// Backoff policy: full jitter over an exponential ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The ceiling after the `n`-th failed delivery: `min(max, base·2^(n−1))`.
    pub fn ceiling(&self, n: u32) -> Duration {
        let exp = n.saturating_sub(1).min(62);
        let factor = 1u64 << exp;
        let secs = self.base.as_secs_f64() * factor as f64;
        Duration::from_secs_f64(secs.min(self.max.as_secs_f64()))
            .min(self.max)
            .min(MAX_VISIBILITY)
    }

    /// The delay after the `n`-th failed delivery, `unit` in [0, 1] being the
    /// caller's random draw: a delay in [0, ceiling(n)].
    pub fn delay(&self, n: u32, unit: f64) -> Duration {
        self.ceiling(n).mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// After a transient or configuration failure of a dependency on delivery
/// `receive_count`: retry later on the backoff schedule. Such a failure is
/// not the event's: it never dead-letters it. On the last delivery the
/// queue allows, the event is requeued as a fresh copy instead, since the
/// queue's redrive would otherwise move it to the DLQ on the next receive.
pub fn after_dependency_failure(
    error: PortError,
    cause: Cause,
    receive_count: u32,
    max_receives: u32,
    backoff: Backoff,
    unit: f64,
) -> Decision {
    if receive_count >= max_receives {
        Decision::Requeue { error, cause }
    } else {
        Decision::RetryLater {
            delay: backoff.delay(receive_count, unit),
            error,
            cause,
        }
    }
}

/// A copy of an event that another worker is processing comes back on the
/// backoff schedule (the holder usually finishes in milliseconds, then the
/// copy completes as a duplicate), never later than the lease's end and
/// never sooner than half a second. On its last allowed delivery it waits
/// for the lease to end, so it is not spent while the holder still works
/// (the next delivery then finds the event completed, or takes it over).
pub fn busy_delay(
    backoff: Backoff,
    receive_count: u32,
    max_receives: u32,
    unit: f64,
    lease_remaining_secs: u64,
) -> Duration {
    let lease_end = Duration::from_secs(lease_remaining_secs + 1);
    if receive_count + 1 >= max_receives {
        return lease_end;
    }
    backoff
        .delay(receive_count, unit)
        .min(lease_end)
        .max(Duration::from_millis(500))
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff {
        base: Duration::from_secs(1),
        max: Duration::from_secs(300),
    };

    #[test]
    fn ceiling_doubles_then_caps() {
        let got: Vec<u64> = (1..=11).map(|n| B.ceiling(n).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(B.ceiling(0), Duration::from_secs(1));
        assert_eq!(B.ceiling(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn delay_is_full_jitter_within_the_ceiling() {
        assert_eq!(B.delay(3, 0.0), Duration::ZERO);
        assert_eq!(B.delay(3, 1.0), Duration::from_secs(4));
        assert_eq!(B.delay(3, 0.5), Duration::from_secs(2));
        assert_eq!(B.delay(3, 7.0), Duration::from_secs(4), "clamped draw");
    }

    #[test]
    fn never_beyond_the_sqs_visibility_limit() {
        let huge = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(1_000_000),
        };
        assert_eq!(huge.ceiling(40), MAX_VISIBILITY);
    }

    #[test]
    fn dependency_failures_retry_and_never_dead_letter() {
        let timeout = || PortError::transient("timeout".to_owned());
        match after_dependency_failure(timeout(), Cause::Store, 2, 5, B, 1.0) {
            Decision::RetryLater { delay, error, .. } => {
                assert_eq!(delay, Duration::from_secs(2));
                assert_eq!(error.message(), "timeout");
            }
            other => panic!("{other:?}"),
        }
        let missing = PortError::configuration("no such table".to_owned());
        match after_dependency_failure(missing, Cause::StripeApi, 5, 5, B, 1.0) {
            Decision::Requeue { error, cause } => {
                assert!(error.is_configuration());
                assert_eq!(cause, Cause::StripeApi);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            after_dependency_failure(timeout(), Cause::Store, 9, 5, B, 1.0),
            Decision::Requeue { .. }
        ));
    }
    #[test]
    fn busy_copies_come_back_soon_but_within_the_lease() {
        let b = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(300),
        };
        assert_eq!(busy_delay(b, 1, 5, 1.0, 30), Duration::from_secs(1));
        assert_eq!(busy_delay(b, 1, 5, 0.0, 30), Duration::from_millis(500));
        assert_eq!(
            busy_delay(b, 3, 50, 1.0, 2),
            Duration::from_secs(3),
            "capped at the lease end"
        );
        // The last allowed delivery waits for the lease to end.
        assert_eq!(busy_delay(b, 4, 5, 0.0, 20), Duration::from_secs(21));
        assert_eq!(busy_delay(b, 5, 5, 0.0, 0), Duration::from_secs(1));
    }
}
