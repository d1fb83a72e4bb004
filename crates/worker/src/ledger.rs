//! The ledger's primitives, the one place the worker writes an event's
//! ledger item: claim, commit (apply or complete), ignore, record a failure
//! and record a destination's state. Each turns a store failure into the
//! [`Decision`] it calls for.
//!
//! An [`Attempt`] is one processing of one delivery of one event: what every
//! step shares. Store calls get a few quick in-process retries
//! ([`quick_retries`]) before the delivery goes back to the queue's slower,
//! receive-counted backoff.

use std::collections::BTreeMap;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use hookline_core::envelope::EventId;
use hookline_core::inbound::Ignored;
use hookline_core::ports::{
    Applied, Change, Claim, Delivery, ErrorKind, Lease, Origin, PortError, Store, Tie, WritePath,
};
use hookline_core::records::{Completion, DestinationState};

use crate::decide::{after_dependency_failure, busy_delay, Backoff, Cause, Decision};

/// One processing of one delivery of one event.
pub(crate) struct Attempt<'a> {
    pub(crate) id: &'a EventId,
    pub(crate) event_type: &'a str,
    pub(crate) delivery: &'a Delivery,
    /// Unix seconds.
    pub(crate) now: i64,
    /// A random draw in [0, 1] for backoff jitter.
    pub(crate) jitter: f64,
    pub(crate) origin: Origin<'a>,
}

/// What processing one event came to: the decision, and what the ledger
/// said of it for the outcome's log line.
#[derive(Debug)]
pub(crate) struct Processed {
    pub(crate) decision: Decision,
    pub(crate) attempts: Option<u32>,
    pub(crate) ignored: Option<Ignored>,
    pub(crate) tie: Option<Tie>,
}

impl Processed {
    pub(crate) fn only(decision: Decision) -> Self {
        Self {
            decision,
            attempts: None,
            ignored: None,
            tie: None,
        }
    }

    fn applied(applied: Applied, ignored: Option<Ignored>) -> Self {
        Self {
            decision: Decision::Done(applied.completion),
            attempts: applied.attempts,
            ignored,
            tie: applied.tie,
        }
    }
}

/// The store and the retry rules a failed write needs.
#[derive(Clone, Copy)]
pub(crate) struct Ledger<'a> {
    pub(crate) store: &'a dyn Store,
    pub(crate) backoff: Backoff,
    pub(crate) max_receives: u32,
    /// How long a claim holds the event against other workers.
    pub(crate) lease: Duration,
}

/// In-process retries of one store call: a few quick tries smooth over a
/// blip (lock contention, a throttled request).
fn quick_retries() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(20))
        .with_max_delay(Duration::from_millis(200))
        .with_max_times(2)
        .with_jitter()
}

impl Ledger<'_> {
    /// The claim of the transactional path: the ledger's attempts, or `Err`
    /// with the decision when this delivery must not go on.
    pub(crate) async fn claim(&self, a: &Attempt<'_>) -> Result<u32, Decision> {
        // Unique per delivery: our own retried claim gets the lease back,
        // a redelivery (crash, expired visibility) is a new owner.
        let owner = format!("{}/{}", a.delivery.message_id, a.delivery.receive_count);
        let lease = Lease {
            owner: &owner,
            now: a.now,
            secs: self.lease.as_secs(),
            origin: a.origin,
        };
        let claim = (|| self.store.claim(a.id, a.event_type, lease))
            .retry(quick_retries())
            .when(PortError::is_retryable)
            .await;
        match claim {
            Ok(Claim::Completed) => Err(Decision::Done(Completion::Duplicate)),
            Ok(Claim::Busy { lease_until }) => {
                let remaining = u64::try_from(lease_until.saturating_sub(a.now)).unwrap_or(0);
                let (n, max) = (a.delivery.receive_count, self.max_receives);
                Err(Decision::Busy {
                    delay: busy_delay(self.backoff, n, max, a.jitter, remaining),
                })
            }
            Ok(Claim::Started { attempts }) => {
                tracing::debug!(message = "Event claimed.", event_id = %a.id, attempts);
                Ok(attempts)
            }
            Err(error) if error.kind() == ErrorKind::Permanent => Err(Decision::DeadLetter {
                reason: format!("store refused the claim: {}", error.message()),
            }),
            Err(error) => Err(self.after_transient(&error, Cause::Store, a)),
        }
    }

    /// Writes `change` by the path `path` says, with quick retries; a
    /// failure is recorded and decided.
    pub(crate) async fn commit(
        &self,
        a: &Attempt<'_>,
        change: Change<'_>,
        path: WritePath,
    ) -> Result<Applied, Decision> {
        let (id, event_type, now) = (a.id, a.event_type, a.now);
        let committed = match path {
            WritePath::Apply => {
                (|| self.store.apply(id, event_type, change, a.origin, now))
                    .retry(quick_retries())
                    .when(PortError::is_retryable)
                    .await
            }
            WritePath::Claimed => (|| self.store.complete(id, event_type, change, now))
                .retry(quick_retries())
                .when(PortError::is_retryable)
                .await
                .map(|completion| Applied::plain(completion, None)),
        };
        match committed {
            Ok(applied) => Ok(applied),
            Err(error) if error.kind() == ErrorKind::Permanent => {
                let reason = format!("store refused the write: {}", error.message());
                Err(self.fail_permanently(a, reason, path).await)
            }
            Err(error) => {
                let decision = self.after_transient(&error, Cause::Store, a);
                self.record_failure(a, &error.to_string(), path).await;
                Err(decision)
            }
        }
    }

    /// Completes the event `ignored` for `why` (no claim).
    pub(crate) async fn ignore(&self, a: &Attempt<'_>, why: Ignored) -> Processed {
        let change = Change::Ignore(why.reason());
        match self.commit(a, change, WritePath::Apply).await {
            Ok(applied) => Processed::applied(applied, Some(why)),
            Err(decision) => Processed::only(decision),
        }
    }

    /// Completes an event every destination took, with the states of those
    /// that took it on this try. An event completed before (a redelivery on
    /// purpose, a replay after the routes changed) gets the states written
    /// on their own, since its completion wrote nothing.
    pub(crate) async fn delivered(
        &self,
        a: &Attempt<'_>,
        taken: &[(String, DestinationState)],
    ) -> Processed {
        let change = Change::Delivered(taken);
        let applied = match self
            .store
            .apply(a.id, a.event_type, change, a.origin, a.now)
            .await
        {
            Ok(applied) => applied,
            Err(e) => return Processed::only(self.after_transient(&e, Cause::Store, a)),
        };
        if applied.completion == Completion::Duplicate {
            for (name, state) in taken {
                if let Err(decision) = self.record_destination(a, name, state).await {
                    return Processed::only(decision);
                }
            }
        }
        Processed::applied(applied, None)
    }

    /// The destinations' states the ledger holds for the event.
    pub(crate) async fn destinations(
        &self,
        a: &Attempt<'_>,
    ) -> Result<BTreeMap<String, DestinationState>, Decision> {
        self.store
            .destinations(a.id.as_str())
            .await
            .map_err(|e| self.after_transient(&e, Cause::Store, a))
    }

    /// One destination's state after a try. Not recorded: the event comes
    /// back, and a destination that took it gets it again with the same
    /// Idempotency-Key.
    pub(crate) async fn record_destination(
        &self,
        a: &Attempt<'_>,
        name: &str,
        state: &DestinationState,
    ) -> Result<(), Decision> {
        self.store
            .record_destination(a.id, a.event_type, a.origin, name, state, a.now)
            .await
            .map_err(|e| self.after_transient(&e, Cause::Store, a))
    }

    /// The decision after a dependency failed for a reason that may pass.
    pub(crate) fn after_transient(
        &self,
        error: &PortError,
        cause: Cause,
        a: &Attempt<'_>,
    ) -> Decision {
        self.after_transient_of(error, cause, a.delivery, a.jitter)
    }

    /// [`Ledger::after_transient`] of a delivery with no event yet.
    pub(crate) fn after_transient_of(
        &self,
        error: &PortError,
        cause: Cause,
        delivery: &Delivery,
        jitter: f64,
    ) -> Decision {
        after_dependency_failure(
            error.clone(),
            cause,
            delivery.receive_count,
            self.max_receives,
            self.backoff,
            jitter,
        )
    }

    /// Dead-letters with `reason`, recording it in the ledger first.
    pub(crate) async fn fail_permanently(
        &self,
        a: &Attempt<'_>,
        reason: String,
        path: WritePath,
    ) -> Decision {
        self.record_failure(a, &reason, path).await;
        Decision::DeadLetter { reason }
    }

    /// Best effort: the ledger item `FAILED` with `lastError` (also for an
    /// event the queue may redrive, so `dlq list` can show the reason),
    /// with the event's subject, so that erase finds it on its own.
    pub(crate) async fn record_failure(&self, a: &Attempt<'_>, error: &str, path: WritePath) {
        self.record_failure_of(a.id, a.event_type, a.origin, error, a.now, path)
            .await;
    }

    /// [`Ledger::record_failure`] of an event known by its id alone.
    pub(crate) async fn record_failure_of(
        &self,
        id: &EventId,
        event_type: &str,
        origin: Origin<'_>,
        error: &str,
        now: i64,
        path: WritePath,
    ) {
        let failed = self
            .store
            .fail(id, event_type, origin, error, now, path)
            .await;
        if let Err(e) = failed {
            tracing::warn!(message = "Cannot record the failure in the ledger.", event_id = %id, error = %e);
        }
    }
}
