//! The route of an admitted event: the targets the routes document names
//! for its type (the built-in projections, [`crate::project`], beside the
//! destinations, [`crate::deliver`]) each get it, independently. Without a
//! routes document every event goes to the projections alone.
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

use futures_util::future::join_all;
use hookline_core::envelope::Envelope;
use hookline_core::handlers::Effect;
use hookline_core::inbound::Ignored;
use hookline_core::ports::{DeliveryError, Destination};
use hookline_core::records::{Completion, DestinationState};
use hookline_core::routes::{Kind, Routes};

use crate::decide::{after_destinations, destination_outcome, Cause, Decision, DestinationOutcome};
use crate::deliver::{slice_within, Target};
use crate::ledger::{Attempt, Ledger, Processed};
use crate::metrics::DestinationMetrics;
use crate::project::Projections;

/// The routes document and the destinations built from it.
#[derive(Debug, Clone)]
pub struct Routing {
    routes: Arc<Routes>,
    targets: BTreeMap<String, Target>,
}

impl Default for Routing {
    fn default() -> Self {
        Self::projections_only()
    }
}

/// Where one event goes, beyond the projections alone.
pub(crate) struct Plan {
    projections: bool,
    remote: Vec<Target>,
}

impl Routing {
    /// No routes document: every type to the built-in projections.
    pub fn projections_only() -> Self {
        Self {
            routes: Arc::new(Routes::projections_only()),
            targets: BTreeMap::new(),
        }
    }

    /// A document and its destinations (by name; the backend builds them).
    pub fn new(routes: Routes, destinations: Vec<Arc<dyn Destination>>) -> Self {
        let targets = destinations
            .into_iter()
            .map(|d| (d.name().to_owned(), Target::new(d)))
            .collect();
        Self {
            routes: Arc::new(routes),
            targets,
        }
    }

    /// Each destination's metrics, by name, for the worker's endpoint.
    pub fn metrics(&self) -> Vec<(String, Arc<DestinationMetrics>)> {
        self.targets
            .iter()
            .map(|(n, t)| (n.clone(), Arc::clone(&t.metrics)))
            .collect()
    }

    /// `None` when the event takes the projections alone, as without
    /// routes.
    fn plan(&self, event_type: &str) -> Option<Plan> {
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
                    plan.remote.extend(self.targets.get(&d.name).cloned());
                }
            }
        }
        (!plan.remote.is_empty() || !plan.projections).then_some(plan)
    }
}

/// One destination's try: its state before, and how it went.
struct DestinationTry {
    target: Target,
    before: DestinationState,
    result: Result<(), DeliveryError>,
}

/// What the route fans out to, for one event.
pub(crate) struct Router<'a> {
    pub(crate) routing: &'a Routing,
    pub(crate) ledger: Ledger<'a>,
    pub(crate) projections: Projections<'a>,
}

impl Router<'_> {
    /// The route of an admitted event.
    pub(crate) async fn route(
        &self,
        a: &Attempt<'_>,
        envelope: &Envelope,
        event: &[u8],
    ) -> Processed {
        let Some(plan) = self.routing.plan(a.event_type) else {
            return self.projections.run(a, envelope, event).await;
        };
        if plan.remote.is_empty() && !plan.projections {
            return self.ledger.ignore(a, Ignored::NoRoute).await;
        }
        // A `*` projections route beside a destination: the projections
        // run only where they have something to write.
        let projections = plan.projections && self.projections.has_work(envelope);
        let states = match self.ledger.destinations(a).await {
            Ok(s) => s,
            Err(decision) => return Processed::only(decision),
        };
        if let Err(decision) = self.claim_for_once(a, &plan, &states).await {
            return Processed::only(decision);
        }
        let tries = self.send_all(a, &plan, &states, event).await;
        // When every destination took it and no projection runs, the states
        // are written with the completion, in one write.
        let completes_now = !projections && tries.iter().all(|t| t.result.is_ok());
        let (outcomes, taken) = match self.record(a, tries, completes_now).await {
            Ok(recorded) => recorded,
            Err(decision) => return Processed::only(decision),
        };
        // The projections, whatever the other destinations answered.
        let projected = match projections {
            true => Some(self.projections.run(a, envelope, event).await),
            false => None,
        };
        match (self.decide(a, &outcomes).await, projected) {
            // A store failure of the projections is retried first.
            (Some(decision), Some(p))
                if !matches!(decision, Decision::DeadLetter { .. })
                    && !matches!(p.decision, Decision::Done(_)) =>
            {
                p
            }
            (Some(decision), _) => Processed::only(decision),
            (None, Some(p)) => p,
            (None, None) => self.ledger.delivered(a, &taken).await,
        }
    }

    /// A handler whose effect must happen once runs under the event's
    /// claim: a lease keeps any other delivery of the event off it.
    async fn claim_for_once(
        &self,
        a: &Attempt<'_>,
        plan: &Plan,
        states: &BTreeMap<String, DestinationState>,
    ) -> Result<(), Decision> {
        let once = plan.remote.iter().any(|t| {
            t.destination.effect() == Effect::Once
                && !states.get(t.name()).is_some_and(|s| s.delivered)
        });
        if !once {
            return Ok(());
        }
        match self.ledger.claim(a).await {
            // Completed by the projections: the states say what is owed.
            Ok(_) | Err(Decision::Done(Completion::Duplicate)) => Ok(()),
            Err(decision) => Err(decision),
        }
    }

    /// Sends the event to every destination that has not taken it yet, at
    /// once. From the first send the event waits on destinations, not on
    /// the worker: its worker slot is given back.
    async fn send_all(
        &self,
        a: &Attempt<'_>,
        plan: &Plan,
        states: &BTreeMap<String, DestinationState>,
        event: &[u8],
    ) -> Vec<DestinationTry> {
        let body = &slice_within(&a.delivery.body, event);
        let pending: Vec<_> = plan
            .remote
            .iter()
            .filter(|t| !states.get(t.name()).is_some_and(|s| s.delivered))
            .map(|target| async move {
                let before = states.get(target.name()).cloned().unwrap_or_default();
                let result = target.send(a, &before, body).await;
                DestinationTry {
                    target: target.clone(),
                    before,
                    result,
                }
            })
            .collect();
        if !pending.is_empty() {
            crate::slot::release_worker_slot();
        }
        join_all(pending).await
    }

    /// Each try's state in the ledger (or, when the event completes now,
    /// in the states written with the completion) and its outcome, logged
    /// and counted. A delivery not sent is not recorded.
    async fn record(
        &self,
        a: &Attempt<'_>,
        tries: Vec<DestinationTry>,
        completes_now: bool,
    ) -> Result<(Vec<DestinationOutcome>, Vec<(String, DestinationState)>), Decision> {
        let rules = (self.ledger.backoff, a.now, a.jitter);
        let (mut outcomes, mut taken) = (Vec::new(), Vec::new());
        for tried in tries {
            let name = tried.target.name();
            let sent = !tried.result.as_ref().is_err_and(|e| e.not_sent);
            let after = match &tried.result {
                _ if !sent => tried.before.clone(),
                Ok(()) => tried.before.delivered(a.now),
                Err(e) => tried.before.failed(&e.to_string(), a.now),
            };
            if sent && completes_now {
                taken.push((name.to_owned(), after.clone()));
            } else if sent {
                self.ledger.record_destination(a, name, &after).await?;
            }
            let retry_for = tried.target.destination.retry_for();
            let outcome = destination_outcome(name, &tried.result, &after, retry_for, rules);
            let error = tried.result.as_ref().err();
            outcome.record(
                name,
                a.id,
                after.attempts,
                error,
                Some(&tried.target.metrics),
            );
            outcomes.push(outcome);
        }
        Ok((outcomes, taken))
    }

    /// The decision the destinations' outcomes call for, with the failure
    /// recorded in the ledger (a hold alone is not a failure of the event).
    async fn decide(&self, a: &Attempt<'_>, outcomes: &[DestinationOutcome]) -> Option<Decision> {
        let ledger = &self.ledger;
        let decision = after_destinations(outcomes, a.delivery.receive_count, ledger.max_receives)?;
        let failure = match &decision {
            Decision::DeadLetter { reason } => Some(reason.clone()),
            Decision::RetryLater {
                error,
                cause: Cause::Destination,
                ..
            }
            | Decision::Requeue {
                error,
                cause: Cause::Destination,
            } => Some(error.to_string()),
            _ => None,
        };
        if let Some(failure) = failure {
            let path = hookline_core::ports::WritePath::Apply;
            ledger.record_failure(a, &failure, path).await;
        }
        Some(decision)
    }
}
