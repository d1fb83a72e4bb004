//! One delivery in, one [`Decision`] out: parse, admit, handle, then write
//! by the handler's effect: `Replace` applies without a claim (two
//! conditional writes), `Once` claims, then commits in one transaction.
//!
//! With a Stripe API client, two steps read Stripe's API: a thin event's
//! state is fetched (`fetch_thin`), and a projection that meets another
//! event's state of the same second is refused by the store and replaced by
//! the object's current state (`settle_tie`).

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use hookline_core::envelope::{Envelope, EventId};
use hookline_core::fetched::{self, ThinPlan};
use hookline_core::handlers::{Effect, Handler, Registry};
use hookline_core::inbound::{admit, event_in, Ignored, Source};
use hookline_core::message::attr;
use hookline_core::ports::{
    Applied, Change, Claim, Delivery, ErrorKind, Lease, Origin, PortError, Store, StripeApi, Tie,
    Ties, Tried,
};
use hookline_core::records::{Completion, Projection};
use hookline_core::settings::{AppEnv, EventFilter};

use crate::decide::{after_dependency_failure, busy_delay, Backoff, Cause, Decision};
use crate::route::Routing;

/// What the worker knows about the event behind a delivery, for logs and
/// metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventInfo {
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub created: Option<i64>,
    pub attempts: Option<u32>,
    /// How the event reached the queue.
    pub source: Option<Source>,
    /// Why it completed `ignored`.
    pub ignored: Option<Ignored>,
    /// A same-second tie its projection met.
    pub tie: Option<Tie>,
}

/// Turns deliveries into decisions through the store port.
#[derive(Debug, Clone)]
pub struct Processor {
    pub store: Arc<dyn Store>,
    /// The admission rule's inputs: no ingress saw an EventBridge event.
    pub app_env: AppEnv,
    pub enabled: EventFilter,
    pub backoff: Backoff,
    pub max_receives: u32,
    /// How long a claim holds the event against other workers.
    pub lease: Duration,
    /// Event type to handler and its effect
    /// ([`hookline_core::handlers::registered`] unless a deployment adds its own).
    pub registry: Registry,
    /// Stripe's API, when a key is configured: thin events are fetched
    /// through it, and same-second ties settled by the object's current state.
    pub stripe: Option<Arc<dyn StripeApi>>,
    /// Where each event type goes ([`Routing::projections_only`] without a
    /// routes document).
    pub routing: Routing,
}

/// What the project step decided to write.
#[derive(Debug)]
enum Planned {
    Project(Box<Projection>, Ties),
    Ignore(Ignored),
}

/// What processing one event came to.
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
}

/// What the commit step did.
struct Committed {
    decision: Decision,
    attempts: Option<u32>,
    tie: Option<Tie>,
}

/// One processing try of one event: what the steps share.
pub(crate) struct Try<'a> {
    pub(crate) id: &'a EventId,
    pub(crate) event_type: &'a str,
    pub(crate) delivery: &'a Delivery,
    pub(crate) now: i64,
    pub(crate) unit: f64,
    pub(crate) origin: Origin<'a>,
}

impl Committed {
    fn only(decision: Decision) -> Self {
        Self {
            decision,
            attempts: None,
            tie: None,
        }
    }
}

/// In-process retries of one store call: a few quick tries smooth over a
/// blip (lock contention, a throttled request) before the delivery is given
/// back to the queue's slower, receive-counted backoff.
fn quick_retries() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(20))
        .with_max_delay(Duration::from_millis(200))
        .with_max_times(2)
        .with_jitter()
}

impl Processor {
    /// Processes one delivery at `now` (Unix seconds); `unit` is a random
    /// draw in [0, 1] for the backoff jitter.
    pub async fn process(&self, delivery: &Delivery, now: i64, unit: f64) -> (Decision, EventInfo) {
        let mut info = EventInfo {
            event_id: delivery.attributes.get(attr::EVENT_ID).cloned(),
            event_type: delivery.attributes.get(attr::EVENT_TYPE).cloned(),
            ..Default::default()
        };
        // A webhook body, or an EventBridge envelope around the event.
        let unwrap = crate::trace::step("unwrap");
        let parsed = unwrap.in_scope(|| {
            event_in(&delivery.body).and_then(|inbound| {
                Envelope::parse(inbound.event).map(|envelope| (inbound, envelope))
            })
        });
        match &parsed {
            Ok((inbound, _)) => crate::trace::outcome(&unwrap, inbound.source.as_str()),
            Err(_) => crate::trace::failed(&unwrap, "invalid_payload"),
        }
        drop(unwrap);
        let (inbound, envelope) = match parsed {
            Ok(p) => p,
            Err(error) => {
                let reason = format!("invalid event payload: {error}");
                if let (Some(id), Some(t)) = (&info.event_id, &info.event_type) {
                    let origin = Origin::new(
                        "",
                        delivery.attributes.get(attr::ACCOUNT).map(String::as_str),
                        None,
                    );
                    self.record_failure_of(id, t, origin, &reason, now, Tried::Unclaimed)
                        .await;
                }
                return (Decision::DeadLetter { reason }, info);
            }
        };
        info.event_id = Some(envelope.id.to_string());
        info.event_type = Some(envelope.event_type.clone());
        info.created = envelope.created;
        info.source = Some(inbound.source);
        // The trace the ledger records: this delivery's, else the one the
        // message names (spans not exported here, but by the ingress).
        let trace = hookline_telemetry::trace_id(&tracing::Span::current())
            .or_else(|| crate::trace::header_of(delivery).map(|h| h.trace_id_hex()));
        let processed = self
            .process_event(
                &envelope,
                inbound.event,
                delivery,
                (now, unit),
                inbound.source,
                trace.as_deref(),
            )
            .await;
        info.attempts = processed.attempts;
        info.ignored = processed.ignored;
        info.tie = processed.tie;
        (processed.decision, info)
    }

    /// The decision for a parsed event, the processing tries the ledger
    /// counts (when the store said), and why it was ignored or which tie it
    /// met. Steps: begin (claim, for an `Effect::Once` handler), project
    /// (admission, required fields, the handler or the thin event's fetch),
    /// commit (and settle a same-second tie).
    async fn process_event(
        &self,
        envelope: &Envelope,
        event: &[u8],
        delivery: &Delivery,
        (now, unit): (i64, f64),
        source: Source,
        trace: Option<&str>,
    ) -> Processed {
        let t = Try {
            id: &envelope.id,
            event_type: &envelope.event_type,
            delivery,
            now,
            unit,
            origin: Origin::new(
                source.as_str(),
                envelope.account.as_deref(),
                envelope.object_id.as_deref(),
            )
            .with_trace(trace),
        };
        match self.routing.plan(&envelope.event_type) {
            Some(plan) => self.route(&t, plan, envelope, event).await,
            None => self.project_event(&t, envelope, event).await,
        }
    }

    /// The built-in projections' path (every event's, without routes).
    pub(crate) async fn project_event(
        &self,
        t: &Try<'_>,
        envelope: &Envelope,
        event: &[u8],
    ) -> Processed {
        let (delivery, unit) = (t.delivery, t.unit);
        let registered = (self.registry)(&envelope.event_type);
        // An effect that replaces state needs no claim (see `Effect`).
        let (tried, claimed) = match registered.map_or(Effect::Replace, |(_, e)| e) {
            Effect::Replace => (Tried::Unclaimed, None),
            Effect::Once => match self.claim(t).await {
                Ok(attempts) => (Tried::Claimed, Some(attempts)),
                Err(decision) => return Processed::only(decision),
            },
        };
        let handler = registered.map(|(h, _)| h);
        let planned = match self.project(t, envelope, event, handler, tried).await {
            Ok(p) => p,
            Err(decision) => return Processed::only(decision),
        };
        let mut committed = self.commit(t, &planned, tried).await;
        if let (Decision::Done(Completion::Tied), Planned::Project(p, _)) =
            (&committed.decision, &planned)
        {
            committed = self.settle_tie(t, envelope, handler, p, tried).await;
        }
        if let Decision::Done(Completion::Tied) = committed.decision {
            // Current state is written by rank and never refused; should a
            // store answer so anyway, the event is tried again.
            let error = PortError::transient("same-second tie not settled".to_owned());
            committed = Committed::only(self.after_transient(&error, Cause::Store, delivery, unit));
        }
        Processed {
            decision: committed.decision,
            attempts: claimed.or(committed.attempts),
            ignored: match planned {
                Planned::Ignore(why) => Some(why),
                Planned::Project(..) => None,
            },
            tie: committed.tie,
        }
    }

    /// Admission (as the ingress applies it; no ingress saw an EventBridge
    /// event), required fields, then the handler (pure) or, for a thin
    /// event, the fetch. `Err`: the decision when the event cannot go on.
    async fn project(
        &self,
        t: &Try<'_>,
        envelope: &Envelope,
        event: &[u8],
        handler: Option<Handler>,
        tried: Tried,
    ) -> Result<Planned, Decision> {
        if let Err(ignored) = self.admitted(envelope) {
            tracing::debug!(message = "Event not admitted; completing as ignored.", event_id = %t.id, reason = ignored.reason());
            return Ok(Planned::Ignore(ignored));
        }
        use tracing::Instrument;
        let span = crate::trace::step("handle");
        let planned = self
            .handle(t, envelope, event, handler, tried)
            .instrument(span.clone())
            .await;
        match &planned {
            Ok(Planned::Project(..)) => crate::trace::outcome(&span, "projected"),
            Ok(Planned::Ignore(why)) => crate::trace::outcome(&span, why.reason()),
            Err(Decision::DeadLetter { .. }) => crate::trace::failed(&span, "permanent"),
            Err(_) => crate::trace::failed(&span, "transient"),
        }
        planned
    }

    /// The admission rule, as a step of the trace.
    pub(crate) fn admitted(&self, envelope: &Envelope) -> Result<(), Ignored> {
        let span = crate::trace::step("admit");
        let admitted = span.in_scope(|| admit(envelope, self.app_env, &self.enabled));
        match &admitted {
            Ok(()) => crate::trace::outcome(&span, "admitted"),
            Err(why) => crate::trace::outcome(&span, why.reason()),
        }
        admitted
    }

    /// Required fields, then the handler (pure) or, for a thin event, the
    /// fetch.
    async fn handle(
        &self,
        t: &Try<'_>,
        envelope: &Envelope,
        event: &[u8],
        handler: Option<Handler>,
        tried: Tried,
    ) -> Result<Planned, Decision> {
        let failure = match (envelope.created, fetched::thin_plan(envelope), handler) {
            (None, _, _) => "event has no created timestamp".to_owned(),
            (Some(_), Some(plan), _) => return self.fetch_thin(t, envelope, plan, tried).await,
            (Some(_), None, None) => return Ok(Planned::Ignore(Ignored::NoHandler)),
            (Some(_), None, Some(handle)) => match handle(event) {
                Ok(p) => return Ok(Planned::Project(Box::new(p), self.ties())),
                Err(e) => e.to_string(),
            },
        };
        Err(self.fail_permanently(t, failure, tried).await)
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
        t: &Try<'_>,
        envelope: &Envelope,
        plan: ThinPlan,
        tried: Tried,
    ) -> Result<Planned, Decision> {
        let context = envelope.account.as_deref();
        let related = match plan {
            ThinPlan::NoHandler => return Ok(Planned::Ignore(Ignored::NoHandler)),
            ThinPlan::V2Account(related) => related,
            ThinPlan::FetchEventFirst => {
                let path = match fetched::v2_event_path(envelope.id.as_str()) {
                    Ok(p) => p,
                    Err(e) => return Err(self.fail_permanently(t, e.to_string(), tried).await),
                };
                let full = self.fetch(t, &path, &[], context, tried).await?;
                match fetched::related_object_of(&full) {
                    Ok(Some(related)) => related,
                    Ok(None) => return Ok(Planned::Ignore(Ignored::NoHandler)),
                    Err(e) => return Err(self.fail_permanently(t, e.to_string(), tried).await),
                }
            }
        };
        let path = match fetched::related_account_path(&related) {
            Ok(p) => p,
            Err(e) => return Err(self.fail_permanently(t, e.to_string(), tried).await),
        };
        let query = fetched::v2_account_query();
        let account = self.fetch(t, &path, &query, context, tried).await?;
        let created = envelope.created.unwrap_or_default();
        match fetched::v2_account(&account, t.id.as_str(), created) {
            Ok(p) => Ok(Planned::Project(Box::new(p), Ties::ByRank)),
            Err(e) => Err(self.fail_permanently(t, e.to_string(), tried).await),
        }
    }

    /// The same-second tie the store refused: fetch the object, project
    /// Stripe's current state through the event's handler, apply that (by
    /// rank: it outranks any event's snapshot of that second).
    async fn settle_tie(
        &self,
        t: &Try<'_>,
        envelope: &Envelope,
        handler: Option<Handler>,
        refused: &Projection,
        tried: Tried,
    ) -> Committed {
        let path = fetched::current_path(refused);
        let context = envelope.account.as_deref();
        let now = match self.fetch(t, &path, &[], context, tried).await {
            Ok(body) => body,
            Err(decision) => return Committed::only(decision),
        };
        let current = handler
            .ok_or_else(|| "no handler for the current state".to_owned())
            .and_then(|h| fetched::current(h, envelope, &now).map_err(|e| e.to_string()));
        match current {
            Ok(p) => {
                tracing::info!(message = "Same-second events: applying Stripe's current state.", event_id = %t.id, object = p.key());
                self.commit(t, &Planned::Project(Box::new(p), Ties::ByRank), tried)
                    .await
            }
            Err(reason) => Committed::only(self.fail_permanently(t, reason, tried).await),
        }
    }

    /// One Stripe API read; `Err` is the decision when it failed: a
    /// permanent answer (404) dead-letters, anything else is retried later
    /// and never dead-letters.
    async fn fetch(
        &self,
        t: &Try<'_>,
        path: &str,
        query: &[(String, String)],
        context: Option<&str>,
        tried: Tried,
    ) -> Result<bytes::Bytes, Decision> {
        let result = match &self.stripe {
            Some(api) => api.get(path, query, context).await,
            None => Err(PortError::configuration(format!(
                "{} needs Stripe's API (GET {path}): set STRIPE_SECRET_KEY or STRIPE_SECRET_KEY_ID",
                t.event_type
            ))),
        };
        match result {
            Ok(body) => Ok(body),
            Err(error) if error.kind() == ErrorKind::Permanent => {
                Err(self.fail_permanently(t, error.to_string(), tried).await)
            }
            Err(error) => {
                self.record_failure(t, &error.to_string(), tried).await;
                Err(self.after_transient(&error, Cause::StripeApi, t.delivery, t.unit))
            }
        }
    }

    /// Writes the plan by the path `tried` says, with quick retries.
    async fn commit(&self, t: &Try<'_>, planned: &Planned, tried: Tried) -> Committed {
        let (id, event_type, now) = (t.id, t.event_type, t.now);
        let change = match planned {
            Planned::Project(p, ties) => Change::Project(p, *ties),
            Planned::Ignore(why) => Change::Ignore(why.reason()),
        };
        let committed = match tried {
            Tried::Unclaimed => {
                (|| self.store.apply(id, event_type, change, t.origin, now))
                    .retry(quick_retries())
                    .when(PortError::is_retryable)
                    .await
            }
            Tried::Claimed => (|| self.store.complete(id, event_type, change, now))
                .retry(quick_retries())
                .when(PortError::is_retryable)
                .await
                .map(|completion| Applied::plain(completion, None)),
        };
        match committed {
            Ok(applied) => Committed {
                decision: Decision::Done(applied.completion),
                attempts: applied.attempts,
                tie: applied.tie,
            },
            Err(error) if error.kind() == ErrorKind::Permanent => {
                let reason = format!("store refused the write: {}", error.message());
                Committed::only(self.fail_permanently(t, reason, tried).await)
            }
            Err(error) => {
                let decision = self.after_transient(&error, Cause::Store, t.delivery, t.unit);
                self.record_failure(t, &error.to_string(), tried).await;
                Committed::only(decision)
            }
        }
    }

    /// The claim of the transactional path: the ledger's attempts, or `Err`
    /// with the decision when this delivery must not go on.
    pub(crate) async fn claim(&self, t: &Try<'_>) -> Result<u32, Decision> {
        // Unique per delivery: our own retried claim gets the lease back,
        // a redelivery (crash, expired visibility) is a new owner.
        let owner = format!("{}/{}", t.delivery.message_id, t.delivery.receive_count);
        let lease = Lease {
            owner: &owner,
            now: t.now,
            secs: self.lease.as_secs(),
            origin: t.origin,
        };
        let claim = (|| self.store.claim(t.id, t.event_type, lease))
            .retry(quick_retries())
            .when(PortError::is_retryable)
            .await;
        match claim {
            Ok(Claim::Completed) => Err(Decision::Done(Completion::Duplicate)),
            Ok(Claim::Busy { lease_until }) => {
                let remaining = u64::try_from(lease_until.saturating_sub(t.now)).unwrap_or(0);
                Err(Decision::Busy {
                    delay: busy_delay(
                        self.backoff,
                        t.delivery.receive_count,
                        self.max_receives,
                        t.unit,
                        remaining,
                    ),
                })
            }
            Ok(Claim::Started { attempts }) => {
                tracing::debug!(message = "Event claimed.", event_id = %t.id, attempts);
                Ok(attempts)
            }
            Err(error) if error.kind() == ErrorKind::Permanent => Err(Decision::DeadLetter {
                reason: format!("store refused the claim: {}", error.message()),
            }),
            Err(error) => Err(self.after_transient(&error, Cause::Store, t.delivery, t.unit)),
        }
    }

    /// The decision after a dependency failed for a reason that may pass.
    pub(crate) fn after_transient(
        &self,
        error: &PortError,
        cause: Cause,
        delivery: &Delivery,
        unit: f64,
    ) -> Decision {
        after_dependency_failure(
            error.clone(),
            cause,
            delivery.receive_count,
            self.max_receives,
            self.backoff,
            unit,
        )
    }

    /// Dead-letters with `reason`, recording it in the ledger first.
    async fn fail_permanently(&self, t: &Try<'_>, reason: String, tried: Tried) -> Decision {
        self.record_failure(t, &reason, tried).await;
        Decision::DeadLetter { reason }
    }

    /// Best effort: the ledger item `FAILED` with `lastError` (also for an
    /// event the queue may redrive, so `dlq list` can show the reason),
    /// with the event's subject, so that erase finds it on its own.
    pub(crate) async fn record_failure(&self, t: &Try<'_>, error: &str, tried: Tried) {
        self.record_failure_of(t.id.as_str(), t.event_type, t.origin, error, t.now, tried)
            .await;
    }

    /// [`Processor::record_failure`] of an event known by its id alone.
    async fn record_failure_of(
        &self,
        id: &str,
        event_type: &str,
        origin: Origin<'_>,
        error: &str,
        now: i64,
        tried: Tried,
    ) {
        if let Err(e) = self
            .store
            .fail(
                &EventId::new(id.to_owned()),
                event_type,
                origin,
                error,
                now,
                tried,
            )
            .await
        {
            tracing::warn!(message = "Cannot record the failure in the ledger.", event_id = %id, error = %e);
        }
    }
}
