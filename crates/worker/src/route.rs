//! Routed events: each destination the routes document names for the
//! event's type gets it, independently.
//!
//! - A destination that took the event is recorded in the ledger
//!   (`destination:NAME`) and never called again for it: not when another
//!   destination fails and the event comes back, not after a `dlq replay`.
//! - The built-in projections run as before (their own ledger completion);
//!   an event routed only to other destinations completes `applied` once
//!   every one took it.
//! - A destination's failure within its retry horizon (`retry_for`, from
//!   its first failure for this event) is retried on a backoff of its own
//!   and never counts toward the DLQ: on the queue's last allowed receive
//!   the event is requeued as a fresh copy, as for any dependency failure.
//!   A permanent refusal, or a failure past the horizon, dead-letters the
//!   event with the destination's name in the reason.
//! - A destination cannot hold up the rest. While its deliveries are in
//!   flight the event gives its worker slot back (the destination's own
//!   `max_concurrency` and timeout bound them); a delivery that finds no
//!   free destination slot, or the destination's breaker open
//!   ([`crate::held`]), is not sent, and the event waits on the queue,
//!   unrecorded and not counted as a try.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use hookline_core::envelope::Envelope;
use hookline_core::fetched::{self, ThinPlan};
use hookline_core::handlers::Effect;
use hookline_core::inbound::Ignored;
use hookline_core::ports::{
    Change, DeliveryError, Destination, ErrorKind, Outgoing, PortError, Tried,
};
use hookline_core::records::{Completion, DestinationState};
use hookline_core::routes::{Kind, Routes};

use crate::decide::{Backoff, Cause, Decision, MAX_VISIBILITY};
use crate::held::{Admit, DestinationBreaker};
use crate::metrics::DestinationMetrics;
use crate::process::{Processed, Processor, Try};

/// The routes document and the destinations built from it.
#[derive(Debug, Clone)]
pub struct Routing {
    routes: Arc<Routes>,
    destinations: BTreeMap<String, Arc<dyn Destination>>,
    counted: BTreeMap<String, Arc<DestinationMetrics>>,
    breakers: BTreeMap<String, Arc<DestinationBreaker>>,
}

impl Default for Routing {
    fn default() -> Self {
        Self::projections_only()
    }
}

/// Where one event goes.
pub(crate) struct Plan {
    projections: bool,
    remote: Vec<Arc<dyn Destination>>,
}

impl Routing {
    /// No routes document: every type to the built-in projections.
    pub fn projections_only() -> Self {
        Self {
            routes: Arc::new(Routes::projections_only()),
            destinations: BTreeMap::new(),
            counted: BTreeMap::new(),
            breakers: BTreeMap::new(),
        }
    }

    /// A document and its destinations (by name; the backend builds them).
    pub fn new(routes: Routes, destinations: Vec<Arc<dyn Destination>>) -> Self {
        let counted = destinations
            .iter()
            .map(|d| (d.name().to_owned(), Arc::default()))
            .collect();
        let breakers = destinations
            .iter()
            .map(|d| (d.name().to_owned(), Arc::default()))
            .collect();
        Self {
            breakers,
            routes: Arc::new(routes),
            destinations: destinations
                .into_iter()
                .map(|d| (d.name().to_owned(), d))
                .collect(),
            counted,
        }
    }

    /// Each destination's metrics, by name, for the worker's endpoint.
    pub fn metrics(&self) -> Vec<(String, Arc<DestinationMetrics>)> {
        self.counted
            .iter()
            .map(|(n, m)| (n.clone(), Arc::clone(m)))
            .collect()
    }

    fn count(&self, name: &str, f: impl FnOnce(&DestinationMetrics)) {
        if let Some(m) = self.counted.get(name) {
            f(m);
        }
    }

    /// Whether `name`'s breaker lets a delivery through now.
    fn admit(&self, name: &str) -> Admit {
        self.breakers.get(name).map_or(Admit::Send, |b| b.admit())
    }

    /// Records a sent delivery's result with `name`'s breaker and its gauge.
    fn after_try(&self, name: &str, result: &Result<(), DeliveryError>, admit: Admit) {
        if let Some(b) = self.breakers.get(name) {
            b.record(name, result, admit == Admit::Probe);
            self.count(name, |m| m.breaker_open.set(i64::from(b.is_open())));
        }
    }

    /// `None` when the event takes the projections path alone, as without
    /// routes.
    pub(crate) fn plan(&self, event_type: &str) -> Option<Plan> {
        if self.routes.is_projections_only() {
            return None;
        }
        let mut plan = Plan {
            projections: false,
            remote: Vec::new(),
        };
        for d in self.routes.for_type(event_type) {
            match d.kind {
                Kind::Projections => plan.projections = true,
                Kind::Http(_) | Kind::EventBridge(_) | Kind::Handler => {
                    plan.remote.extend(self.destinations.get(&d.name).cloned());
                }
            }
        }
        (!plan.remote.is_empty() || !plan.projections).then_some(plan)
    }
}

/// One destination's try: its state before, and how it went.
struct Tried1 {
    destination: Arc<dyn Destination>,
    state: DestinationState,
    result: Result<(), DeliveryError>,
}

impl Processor {
    /// The routed path of an event [`Routing::plan`] sends to at least one
    /// destination other than the projections (or to none).
    pub(crate) async fn route(
        &self,
        t: &Try<'_>,
        plan: Plan,
        envelope: &Envelope,
        event: &[u8],
    ) -> Processed {
        if let Err(ignored) = self.admitted(envelope) {
            return self.ignore(t, ignored).await;
        }
        if plan.remote.is_empty() && !plan.projections {
            return self.ignore(t, Ignored::NoRoute).await;
        }
        // A `*` projections route beside a destination: the projections
        // run only where they have something to write.
        let projections = plan.projections
            && ((self.registry)(t.event_type).is_some()
                || fetched::thin_plan(envelope).is_some_and(|p| !matches!(p, ThinPlan::NoHandler)));
        let states = match self.store.destinations(t.id.as_str()).await {
            Ok(s) => s,
            Err(e) => {
                return Processed::only(self.after_transient(&e, Cause::Store, t.delivery, t.unit))
            }
        };
        // A handler whose effect must happen once runs under the event's
        // claim: a lease keeps any other delivery of the event off it.
        let once = plan.remote.iter().any(|d| {
            d.effect() == Effect::Once && !states.get(d.name()).is_some_and(|s| s.delivered)
        });
        if once {
            match self.claim(t).await {
                // Completed by the projections: the states say what is owed.
                Ok(_) | Err(Decision::Done(Completion::Duplicate)) => {}
                Err(decision) => return Processed::only(decision),
            }
        }
        // The event's bytes within the delivery's body, shared.
        let body = &shared(&t.delivery.body, event);
        let pending: Vec<_> = plan
            .remote
            .iter()
            .filter(|d| !states.get(d.name()).is_some_and(|s| s.delivered))
            .map(|d| {
                let state = states.get(d.name()).cloned().unwrap_or_default();
                async move {
                    let admit = self.routing.admit(d.name());
                    if let Admit::Wait(wait) = admit {
                        return Tried1 {
                            destination: d.clone(),
                            state,
                            result: Err(DeliveryError::not_sent(
                                "its breaker is open: not sent",
                                wait,
                            )),
                        };
                    }
                    use tracing::Instrument;
                    let started = std::time::Instant::now();
                    let span = tracing::debug_span!(
                        "destination",
                        otel.name = %format_args!("deliver {}", d.name()),
                        otel.kind = "client",
                        otel.status_code = tracing::field::Empty,
                        hookline.destination = d.name(),
                        hookline.attempt = i64::from(state.attempts) + 1,
                        hookline.outcome = tracing::field::Empty,
                        error.type = tracing::field::Empty,
                    );
                    let result = d
                        .deliver(Outgoing {
                            event_id: t.id.as_str(),
                            event_type: t.event_type,
                            body,
                            attempt: state.attempts + 1,
                            now: t.now,
                            redelivery: state.redelivery.as_deref(),
                        })
                        .instrument(span.clone())
                        .await;
                    match &result {
                        Ok(()) => crate::trace::outcome(&span, "delivered"),
                        Err(e) => crate::trace::failed(&span, e.kind.as_str()),
                    }
                    self.routing.after_try(d.name(), &result, admit);
                    if !result.as_ref().is_err_and(|e| e.not_sent) {
                        self.routing
                            .count(d.name(), |m| m.latency.observe(started.elapsed()));
                    }
                    Tried1 {
                        destination: d.clone(),
                        state,
                        result,
                    }
                }
            })
            .collect();
        if !pending.is_empty() {
            // From here the event waits on destinations, not on the worker.
            crate::poll::release_worker_slot();
        }
        let tries = join_all(pending).await;
        // When every destination took it and no projection runs, the states
        // are written with the completion, in one write.
        let completes_now = !projections && tries.iter().all(|t| t.result.is_ok());
        let mut failed = Vec::new();
        let mut taken = Vec::new();
        for tried in tries {
            let tried = match tried.result {
                // Nothing was sent: nothing to record.
                Err(error) if error.not_sent => {
                    failed.push((tried.destination, tried.state, error));
                    continue;
                }
                result => Tried1 { result, ..tried },
            };
            let name = tried.destination.name();
            let next = match &tried.result {
                Ok(()) => tried.state.delivered(t.now),
                Err(e) => tried.state.failed(&e.to_string(), t.now),
            };
            if completes_now {
                taken.push((name.to_owned(), next.clone()));
            } else if let Err(e) = self
                .store
                .record_destination(t.id, t.event_type, t.origin, name, &next, t.now)
                .await
            {
                // Not recorded: the event comes back, and a destination that
                // took it gets it again with the same Idempotency-Key.
                return Processed::only(self.after_transient(&e, Cause::Store, t.delivery, t.unit));
            }
            match tried.result {
                Ok(()) => {
                    self.routing.count(name, |m| m.delivered.inc());
                    tracing::debug!(message = "Delivered.", event_id = %t.id, destination = name, attempts = next.attempts)
                }
                Err(error) => {
                    tracing::warn!(message = "Destination did not take the event.", event_id = %t.id, destination = name, attempts = next.attempts, error_kind = error.kind.as_str(), %error);
                    failed.push((tried.destination, next, error));
                }
            }
        }
        // The projections, whatever the other destinations answered.
        let projected = match projections {
            true => Some(self.project_event(t, envelope, event).await),
            false => None,
        };
        if let Some(decision) = self.after_destinations(t, &failed).await {
            return match projected {
                // A store failure of the projections is retried first.
                Some(p)
                    if !matches!(decision, Decision::DeadLetter { .. })
                        && !matches!(p.decision, Decision::Done(_)) =>
                {
                    p
                }
                _ => Processed::only(decision),
            };
        }
        match projected {
            Some(p) => p,
            None => self.delivered(t, &taken).await,
        }
    }

    /// Completes an event every destination took, with the states of those
    /// that took it on this try.
    async fn delivered(&self, t: &Try<'_>, taken: &[(String, DestinationState)]) -> Processed {
        let applied = self
            .store
            .apply(
                t.id,
                t.event_type,
                Change::Delivered(taken),
                t.origin,
                t.now,
            )
            .await;
        let applied = match applied {
            // Completed before (a redelivery on purpose, a replay after the
            // routes changed): the completion wrote nothing, so the states
            // are written on their own.
            Ok(a) if a.completion == Completion::Duplicate => {
                for (name, state) in taken {
                    if let Err(e) = self
                        .store
                        .record_destination(t.id, t.event_type, t.origin, name, state, t.now)
                        .await
                    {
                        return Processed::only(self.after_transient(
                            &e,
                            Cause::Store,
                            t.delivery,
                            t.unit,
                        ));
                    }
                }
                Ok(a)
            }
            other => other,
        };
        match applied {
            Ok(a) => Processed {
                decision: Decision::Done(a.completion),
                attempts: a.attempts,
                ignored: None,
                tie: None,
            },
            Err(e) => Processed::only(self.after_transient(&e, Cause::Store, t.delivery, t.unit)),
        }
    }

    async fn ignore(&self, t: &Try<'_>, why: Ignored) -> Processed {
        let applied = self
            .store
            .apply(
                t.id,
                t.event_type,
                Change::Ignore(why.reason()),
                t.origin,
                t.now,
            )
            .await;
        match applied {
            Ok(a) => Processed {
                decision: Decision::Done(a.completion),
                attempts: a.attempts,
                ignored: Some(why),
                tie: None,
            },
            Err(e) => Processed::only(self.after_transient(&e, Cause::Store, t.delivery, t.unit)),
        }
    }

    /// The decision the destinations' failures call for, `None` when none
    /// failed: a permanent refusal or a failure past the retry horizon
    /// dead-letters; otherwise the event comes back on the destination's
    /// backoff (the longest one asked for), never counted toward the DLQ.
    async fn after_destinations(
        &self,
        t: &Try<'_>,
        failed: &[(Arc<dyn Destination>, DestinationState, DeliveryError)],
    ) -> Option<Decision> {
        let mut reasons = Vec::new();
        let mut retry: Option<(Duration, PortError)> = None;
        let mut held: Option<(Duration, PortError)> = None;
        for (d, state, error) in failed {
            let horizon = d.retry_for();
            let failing_for = t.now - state.first_failed_at.unwrap_or(t.now);
            if error.kind == ErrorKind::Permanent {
                self.routing.count(d.name(), |m| m.failed.inc());
                reasons.push(format!("destination {}: {}", d.name(), error.message));
            } else if u64::try_from(failing_for).unwrap_or(0) >= horizon.as_secs() {
                self.routing.count(d.name(), |m| m.failed.inc());
                reasons.push(format!(
                    "destination {}: still failing after {} (retry_for): {}",
                    d.name(),
                    humantime::format_duration(horizon),
                    error.message
                ));
            } else if error.not_sent {
                // Jittered, so that the events an open breaker held do not
                // all come back in the same second.
                let wait = error.retry_after.unwrap_or(Duration::from_secs(1));
                let delay = (wait + wait.mul_f64(t.unit / 2.0))
                    .max(Duration::from_secs(1))
                    .min(MAX_VISIBILITY);
                let error =
                    PortError::transient(format!("destination {}: {}", d.name(), error.message));
                if held.as_ref().is_none_or(|(longest, _)| delay > *longest) {
                    held = Some((delay, error));
                }
            } else {
                self.routing.count(d.name(), |m| m.retried.inc());
                let failing = Duration::from_secs(u64::try_from(failing_for).unwrap_or(0));
                let delay =
                    destination_delay(self.backoff, horizon, state.attempts, failing, t.unit)
                        .max(error.retry_after.unwrap_or_default())
                        .min(MAX_VISIBILITY);
                let error =
                    PortError::transient(format!("destination {}: {}", d.name(), error.message));
                if retry.as_ref().is_none_or(|(longest, _)| delay > *longest) {
                    retry = Some((delay, error));
                }
            }
        }
        if !reasons.is_empty() {
            let reason = reasons.join("; ");
            self.record_failure(t, &reason, Tried::Unclaimed).await;
            return Some(Decision::DeadLetter { reason });
        }
        let (delay, error, cause) = match (retry, held) {
            (Some((delay, error)), held) => {
                self.record_failure(t, &error.to_string(), Tried::Unclaimed)
                    .await;
                let delay = delay.max(held.map_or(Duration::ZERO, |(d, _)| d));
                (delay, error, Cause::Destination)
            }
            // Only held back: not a failure of the event, nothing recorded.
            (None, Some((delay, error))) => (delay, error, Cause::Held),
            (None, None) => return None,
        };
        Some(if t.delivery.receive_count >= self.max_receives {
            Decision::Requeue { error, cause }
        } else {
            Decision::RetryLater {
                delay,
                error,
                cause,
            }
        })
    }
}

/// `part` as a view of `whole` when it lies within it (no copy), else a
/// copy.
fn shared(whole: &bytes::Bytes, part: &[u8]) -> bytes::Bytes {
    let range = whole.as_ptr_range();
    let inside = range.start <= part.as_ptr() && part.as_ptr_range().end <= range.end;
    if inside && !part.is_empty() {
        whole.slice_ref(part)
    } else {
        bytes::Bytes::copy_from_slice(part)
    }
}

/// The delay before a destination's next try after its `attempts`-th
/// failure, `failing_for` after the first, never under the worker's base
/// nor a second (SQS counts visibility in whole seconds: a shorter delay
/// would be none): full jitter under a ceiling that
/// doubles from the worker's base, but never beyond how long the
/// destination has been failing (so an outage of T is noticed within T of
/// its end), nor beyond a cap of its own: a 24th of the retry horizon (an
/// hour for the default 24 h), never below the worker's own cap nor above
/// SQS's 12-hour visibility limit. The destination's own count is used,
/// not the message's receives, which start again when the event is
/// requeued.
pub fn destination_delay(
    worker: Backoff,
    retry_for: Duration,
    attempts: u32,
    failing_for: Duration,
    unit: f64,
) -> Duration {
    let cap = (retry_for / 24).max(worker.max).min(MAX_VISIBILITY);
    let floor = worker.base.max(Duration::from_secs(1));
    Backoff {
        base: worker.base,
        max: cap.min(failing_for.max(floor)),
    }
    .delay(attempts, unit)
    .max(floor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_destination_backs_off_on_its_own_count_up_to_its_cap() {
        let worker = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(300),
        };
        let day = Duration::from_secs(86_400);
        let long = Duration::from_secs(7 * 86_400);
        let d = |horizon, attempts, unit| destination_delay(worker, horizon, attempts, long, unit);
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
}
