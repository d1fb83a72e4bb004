//! The built-in projections, one target of a route: the event's handler
//! (pure) or, for a thin event, Stripe's current state fetched through the
//! API, written by the handler's effect. `Replace` applies without a claim
//! (two conditional writes); `Once` claims, then commits in one
//! transaction.
//!
//! With a Stripe API client a projection that meets another event's state
//! of the same second is refused by the store and replaced by the object's
//! current state (`settle_tie`); without one the higher rank wins.

use std::sync::Arc;

use hookline_core::envelope::Envelope;
use hookline_core::handlers::{Effect, Handler, Registry};
use hookline_core::inbound::Ignored;
use hookline_core::ports::{Change, ErrorKind, PortError, StripeApi, Ties, WritePath};
use hookline_core::records::{Completion, Projection};
use hookline_core::stripe_state::{self, ThinPlan};

use crate::decide::{Cause, Decision};
use crate::ledger::{Attempt, Ledger, Processed};

/// The projections target: the handlers, Stripe's API when a key is
/// configured, and the ledger they write through.
pub(crate) struct Projections<'a> {
    pub(crate) ledger: Ledger<'a>,
    pub(crate) registry: Registry,
    pub(crate) stripe: Option<&'a Arc<dyn StripeApi>>,
}

/// What the handle step decided to write.
#[derive(Debug)]
enum Planned {
    Project(Box<Projection>, Ties),
    Ignore(Ignored),
}

impl Planned {
    fn change(&self) -> Change<'_> {
        match self {
            Self::Project(p, ties) => Change::Project(p, *ties),
            Self::Ignore(why) => Change::Ignore(why.reason()),
        }
    }
}

impl Projections<'_> {
    /// Whether the projections have anything to write for this event: a
    /// handler, or a thin event to fetch.
    pub(crate) fn has_work(&self, envelope: &Envelope) -> bool {
        (self.registry)(&envelope.event_type).is_some()
            || stripe_state::thin_plan(envelope).is_some_and(|p| !matches!(p, ThinPlan::NoHandler))
    }

    /// The projections' processing of an admitted event: claim (for an
    /// `Effect::Once` handler), handle, commit, settle a same-second tie.
    pub(crate) async fn run(
        &self,
        a: &Attempt<'_>,
        envelope: &Envelope,
        event: &[u8],
    ) -> Processed {
        let registered = (self.registry)(&envelope.event_type);
        // An effect that replaces state needs no claim (see `Effect`).
        let (path, claimed) = match registered.map_or(Effect::Replace, |(_, e)| e) {
            Effect::Replace => (WritePath::Apply, None),
            Effect::Once => match self.ledger.claim(a).await {
                Ok(attempts) => (WritePath::Claimed, Some(attempts)),
                Err(decision) => return Processed::only(decision),
            },
        };
        let handler = registered.map(|(h, _)| h);
        let planned = hookline_telemetry::in_step_async(
            "handle",
            self.handle(a, envelope, event, handler, path),
            |planned| match planned {
                Ok(Planned::Project(..)) => Ok("projected"),
                Ok(Planned::Ignore(why)) => Ok(why.reason()),
                Err(Decision::DeadLetter { .. }) => Err("permanent"),
                Err(_) => Err("transient"),
            },
        )
        .await;
        let planned = match planned {
            Ok(p) => p,
            Err(decision) => return Processed::only(decision),
        };
        let tied = |p: &Processed| p.decision == Decision::Done(Completion::Tied);
        let mut processed = self.commit(a, &planned, path).await;
        if let (true, Planned::Project(p, _)) = (tied(&processed), &planned) {
            processed = self.settle_tie(a, envelope, handler, p, path).await;
        }
        if tied(&processed) {
            // Current state is written by rank and never refused; should a
            // store answer so anyway, the event is tried again.
            let error = PortError::transient("same-second tie not settled".to_owned());
            processed = Processed::only(self.ledger.after_transient(&error, Cause::Store, a));
        }
        processed.attempts = claimed.or(processed.attempts);
        if let Planned::Ignore(why) = planned {
            processed.ignored = Some(why);
        }
        processed
    }

    /// Writes the plan.
    async fn commit(&self, a: &Attempt<'_>, planned: &Planned, path: WritePath) -> Processed {
        match self.ledger.commit(a, planned.change(), path).await {
            Ok(applied) if applied.completion == Completion::Tied => Processed {
                tie: applied.tie,
                ..Processed::only(Decision::Done(Completion::Tied))
            },
            Ok(applied) => Processed {
                decision: Decision::Done(applied.completion),
                attempts: applied.attempts,
                ignored: None,
                tie: applied.tie,
            },
            Err(decision) => Processed::only(decision),
        }
    }

    /// Required fields, then the handler (pure) or, for a thin event, the
    /// fetch. `Err`: the decision when the event cannot go on.
    async fn handle(
        &self,
        a: &Attempt<'_>,
        envelope: &Envelope,
        event: &[u8],
        handler: Option<Handler>,
        path: WritePath,
    ) -> Result<Planned, Decision> {
        let failure = match (envelope.created, stripe_state::thin_plan(envelope), handler) {
            (None, _, _) => "event has no created timestamp".to_owned(),
            (Some(_), Some(plan), _) => return self.fetch_thin(a, envelope, plan, path).await,
            (Some(_), None, None) => return Ok(Planned::Ignore(Ignored::NoHandler)),
            (Some(_), None, Some(handle)) => match handle(event) {
                Ok(p) => return Ok(Planned::Project(Box::new(p), self.ties())),
                Err(e) => e.to_string(),
            },
        };
        Err(self.ledger.fail_permanently(a, failure, path).await)
    }

    /// With a Stripe API client, a same-second tie is refused by the store
    /// and settled by the object's current state; without one, by rank.
    fn ties(&self) -> Ties {
        if self.stripe.is_some() {
            Ties::Refuse
        } else {
            Ties::ByRank
        }
    }

    /// A thin event's state: the related object (found in the full event
    /// when the notification names none), fetched and mapped.
    async fn fetch_thin(
        &self,
        a: &Attempt<'_>,
        envelope: &Envelope,
        plan: ThinPlan,
        path: WritePath,
    ) -> Result<Planned, Decision> {
        let context = envelope.account.as_deref();
        let fail = |e: String| self.ledger.fail_permanently(a, e, path);
        let related = match plan {
            ThinPlan::NoHandler => return Ok(Planned::Ignore(Ignored::NoHandler)),
            ThinPlan::V2Account(related) => related,
            ThinPlan::FetchEventFirst => {
                let event_path = match stripe_state::v2_event_path(envelope.id.as_str()) {
                    Ok(p) => p,
                    Err(e) => return Err(fail(e.to_string()).await),
                };
                let full = self.fetch(a, &event_path, &[], context, path).await?;
                match stripe_state::related_object_of(&full) {
                    Ok(Some(related)) => related,
                    Ok(None) => return Ok(Planned::Ignore(Ignored::NoHandler)),
                    Err(e) => return Err(fail(e.to_string()).await),
                }
            }
        };
        let account_path = match stripe_state::related_account_path(&related) {
            Ok(p) => p,
            Err(e) => return Err(fail(e.to_string()).await),
        };
        let query = stripe_state::v2_account_query();
        let account = self.fetch(a, &account_path, &query, context, path).await?;
        let created = envelope.created.unwrap_or_default();
        match stripe_state::v2_account(&account, a.id.as_str(), created) {
            Ok(p) => Ok(Planned::Project(Box::new(p), Ties::ByRank)),
            Err(e) => Err(fail(e.to_string()).await),
        }
    }

    /// The same-second tie the store refused: fetch the object, project
    /// Stripe's current state through the event's handler, apply that (by
    /// rank: it outranks any event's snapshot of that second).
    async fn settle_tie(
        &self,
        a: &Attempt<'_>,
        envelope: &Envelope,
        handler: Option<Handler>,
        refused: &Projection,
        path: WritePath,
    ) -> Processed {
        let object_path = stripe_state::current_path(refused);
        let context = envelope.account.as_deref();
        let now = match self.fetch(a, &object_path, &[], context, path).await {
            Ok(body) => body,
            Err(decision) => return Processed::only(decision),
        };
        let current = handler
            .ok_or_else(|| "no handler for the current state".to_owned())
            .and_then(|h| stripe_state::current(h, envelope, &now).map_err(|e| e.to_string()));
        let p = match current {
            Ok(p) => p,
            Err(reason) => {
                return Processed::only(self.ledger.fail_permanently(a, reason, path).await)
            }
        };
        tracing::info!(message = "Same-second events: applying Stripe's current state.", event_id = %a.id, object = p.key());
        self.commit(a, &Planned::Project(Box::new(p), Ties::ByRank), path)
            .await
    }

    /// One Stripe API read; `Err` is the decision when it failed: a
    /// permanent answer (404) dead-letters, anything else is retried later
    /// and never dead-letters.
    async fn fetch(
        &self,
        a: &Attempt<'_>,
        api_path: &str,
        query: &[(String, String)],
        context: Option<&str>,
        path: WritePath,
    ) -> Result<bytes::Bytes, Decision> {
        let result = match self.stripe {
            Some(api) => api.get(api_path, query, context).await,
            None => Err(PortError::configuration(format!(
                "{} needs Stripe's API (GET {api_path}): set STRIPE_SECRET_KEY or STRIPE_SECRET_KEY_ID",
                a.event_type
            ))),
        };
        match result {
            Ok(body) => Ok(body),
            Err(error) if error.kind() == ErrorKind::Permanent => Err(self
                .ledger
                .fail_permanently(a, error.to_string(), path)
                .await),
            Err(error) => {
                self.ledger
                    .record_failure(a, &error.to_string(), path)
                    .await;
                Err(self.ledger.after_transient(&error, Cause::StripeApi, a))
            }
        }
    }
}
