//! The worker's pure rules: no I/O, no clock, no randomness of their own.

use std::time::Duration;

use hookline_core::ports::{DeliveryError, ErrorKind, PortError};
use hookline_core::records::{Completion, DestinationState};

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

    /// The delay after the `n`-th failed delivery, `jitter` in [0, 1] being the
    /// caller's random draw: a delay in [0, ceiling(n)].
    pub fn delay(&self, n: u32, jitter: f64) -> Duration {
        self.ceiling(n).mul_f64(jitter.clamp(0.0, 1.0))
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
    jitter: f64,
) -> Decision {
    if receive_count >= max_receives {
        Decision::Requeue { error, cause }
    } else {
        Decision::RetryLater {
            delay: backoff.delay(receive_count, jitter),
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
    jitter: f64,
    lease_remaining_secs: u64,
) -> Duration {
    let lease_end = Duration::from_secs(lease_remaining_secs + 1);
    if receive_count + 1 >= max_receives {
        return lease_end;
    }
    backoff
        .delay(receive_count, jitter)
        .min(lease_end)
        .max(Duration::from_millis(500))
}

/// What one routed destination's try of an event comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestinationOutcome {
    /// It took the event.
    Delivered,
    /// It failed within its retry horizon: tried again after `delay`.
    Retry { delay: Duration, error: PortError },
    /// Nothing was sent (no free slot, its breaker open): the event waits
    /// `delay`, not a failure of the event.
    Held { delay: Duration, error: PortError },
    /// It refused the event, or still fails past its horizon: the event is
    /// dead-lettered with `reason`.
    GiveUp { reason: String },
}

/// The outcome of destination `name`'s try: `state` is its state after the
/// try (before it, for a delivery not sent), `retry_for` its horizon.
pub fn destination_outcome(
    name: &str,
    result: &Result<(), DeliveryError>,
    state: &DestinationState,
    retry_for: Duration,
    (worker, now, jitter): (Backoff, i64, f64),
) -> DestinationOutcome {
    let Err(error) = result else {
        return DestinationOutcome::Delivered;
    };
    let failing_for = u64::try_from(now - state.first_failed_at.unwrap_or(now)).unwrap_or(0);
    let transient = || PortError::transient(format!("destination {name}: {}", error.message));
    if error.kind == ErrorKind::Permanent {
        DestinationOutcome::GiveUp {
            reason: format!("destination {name}: {}", error.message),
        }
    } else if failing_for >= retry_for.as_secs() {
        DestinationOutcome::GiveUp {
            reason: format!(
                "destination {name}: still failing after {} (retry_for): {}",
                humantime::format_duration(retry_for),
                error.message
            ),
        }
    } else if error.not_sent {
        // Jittered, so that the events an open breaker held do not all come
        // back in the same second.
        let wait = error.retry_after.unwrap_or(Duration::from_secs(1));
        let delay = (wait + wait.mul_f64(jitter / 2.0))
            .max(Duration::from_secs(1))
            .min(MAX_VISIBILITY);
        DestinationOutcome::Held {
            delay,
            error: transient(),
        }
    } else {
        let failing = Duration::from_secs(failing_for);
        let delay = destination_delay(worker, retry_for, state.attempts, failing, jitter)
            .max(error.retry_after.unwrap_or_default())
            .min(MAX_VISIBILITY);
        DestinationOutcome::Retry {
            delay,
            error: transient(),
        }
    }
}

/// The decision the destinations' outcomes call for, `None` when none
/// failed: any give-up dead-letters (every reason joined); otherwise a
/// failure comes back on the longest delay asked for, never counted toward
/// the DLQ (requeued on the queue's last allowed receive); a hold alone
/// waits as [`Cause::Held`].
pub fn after_destinations(
    outcomes: &[DestinationOutcome],
    receive_count: u32,
    max_receives: u32,
) -> Option<Decision> {
    let reasons: Vec<&str> = outcomes
        .iter()
        .filter_map(|o| match o {
            DestinationOutcome::GiveUp { reason } => Some(reason.as_str()),
            _ => None,
        })
        .collect();
    if !reasons.is_empty() {
        return Some(Decision::DeadLetter {
            reason: reasons.join("; "),
        });
    }
    let longest = |held: bool| {
        outcomes
            .iter()
            .filter_map(|o| match o {
                DestinationOutcome::Retry { delay, error } if !held => Some((*delay, error)),
                DestinationOutcome::Held { delay, error } if held => Some((*delay, error)),
                _ => None,
            })
            .fold(None, |longest: Option<(Duration, &PortError)>, (d, e)| {
                if longest.is_none_or(|(l, _)| d > l) {
                    Some((d, e))
                } else {
                    longest
                }
            })
    };
    let (delay, error, cause) = match (longest(false), longest(true)) {
        (Some((delay, error)), held) => {
            let delay = delay.max(held.map_or(Duration::ZERO, |(d, _)| d));
            (delay, error.clone(), Cause::Destination)
        }
        (None, Some((delay, error))) => (delay, error.clone(), Cause::Held),
        (None, None) => return None,
    };
    Some(if receive_count >= max_receives {
        Decision::Requeue { error, cause }
    } else {
        Decision::RetryLater {
            delay,
            error,
            cause,
        }
    })
}

/// The delay before a destination's next try after its `attempts`-th
/// failure, `failing_for` after the first, never under the worker's base
/// nor a second (SQS counts visibility in whole seconds: a shorter delay
/// would be none): full jitter under a ceiling that doubles from the
/// worker's base, but never beyond how long the destination has been
/// failing (so an outage of T is noticed within T of its end), nor beyond
/// a cap of its own: a 24th of the retry horizon (an hour for the default
/// 24 h), never below the worker's own cap nor above SQS's 12-hour
/// visibility limit. The destination's own count is used, not the
/// message's receives, which start again when the event is requeued.
pub fn destination_delay(
    worker: Backoff,
    retry_for: Duration,
    attempts: u32,
    failing_for: Duration,
    jitter: f64,
) -> Duration {
    let cap = (retry_for / 24).max(worker.max).min(MAX_VISIBILITY);
    let floor = worker.base.max(Duration::from_secs(1));
    Backoff {
        base: worker.base,
        max: cap.min(failing_for.max(floor)),
    }
    .delay(attempts, jitter)
    .max(floor)
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

    #[test]
    fn a_destination_backs_off_on_its_own_count_up_to_its_cap() {
        let worker = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(300),
        };
        let day = Duration::from_secs(86_400);
        let long = Duration::from_secs(7 * 86_400);
        let d =
            |horizon, attempts, jitter| destination_delay(worker, horizon, attempts, long, jitter);
        assert_eq!(d(day, 1, 1.0), Duration::from_secs(1));
        assert_eq!(d(day, 8, 1.0), Duration::from_secs(128));
        assert_eq!(d(day, 30, 1.0), Duration::from_secs(3600));
        assert_eq!(
            d(Duration::from_secs(600), 30, 1.0),
            Duration::from_secs(300),
            "never below the worker's cap"
        );
        assert_eq!(d(Duration::from_secs(30 * 86_400), 60, 1.0), MAX_VISIBILITY);
        assert_eq!(
            d(day, 5, 0.0),
            Duration::from_secs(1),
            "never under a second"
        );
    }

    #[test]
    fn a_destination_never_waits_longer_than_it_has_been_failing() {
        let worker = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(2),
        };
        let day = Duration::from_secs(86_400);
        let two_minutes = Duration::from_secs(120);
        assert_eq!(
            destination_delay(worker, day, 11, two_minutes, 1.0),
            two_minutes,
            "after 2 minutes of failures, the 11th try waits 2 minutes at most"
        );
        assert_eq!(
            destination_delay(worker, day, 3, Duration::ZERO, 1.0),
            Duration::from_secs(1),
            "the first failure waits the base"
        );
    }

    #[test]
    fn a_refusal_anywhere_dead_letters_with_every_reason() {
        let retry = DestinationOutcome::Retry {
            delay: Duration::from_secs(9),
            error: PortError::transient("destination a: 503".to_owned()),
        };
        let give_up = |r: &str| DestinationOutcome::GiveUp {
            reason: r.to_owned(),
        };
        let decided = after_destinations(&[retry.clone(), give_up("b"), give_up("c")], 1, 5);
        assert_eq!(
            decided,
            Some(Decision::DeadLetter {
                reason: "b; c".to_owned()
            })
        );
        let held = DestinationOutcome::Held {
            delay: Duration::from_secs(20),
            error: PortError::transient("destination d: held".to_owned()),
        };
        match after_destinations(&[retry.clone(), held.clone()], 1, 5) {
            Some(Decision::RetryLater { delay, cause, .. }) => {
                assert_eq!(delay, Duration::from_secs(20), "the longest wait");
                assert_eq!(cause, Cause::Destination, "a failure, not only a hold");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            after_destinations(&[held], 5, 5),
            Some(Decision::Requeue {
                cause: Cause::Held,
                ..
            })
        ));
        assert_eq!(
            after_destinations(&[DestinationOutcome::Delivered], 1, 5),
            None
        );
    }
}
