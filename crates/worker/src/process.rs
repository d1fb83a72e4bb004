//! One delivery in, one [`Decision`] out. The walk of an event goes down
//! and never back: this module unwraps the delivery's body (a webhook, or
//! an EventBridge envelope around the event) and applies the admission
//! rule, then hands the admitted event to its route ([`crate::route`]),
//! which fans it out to the projections and the destinations; each writes
//! through the ledger ([`crate::ledger`]).

use std::sync::Arc;
use std::time::Duration;

use hookline_core::envelope::{Envelope, EventId};
use hookline_core::handlers::Registry;
use hookline_core::inbound::{admit, event_in, Ignored, Source};
use hookline_core::message::attr;
use hookline_core::ports::{Delivery, Origin, Store, StripeApi, WritePath};
use hookline_core::settings::{AppEnv, EventFilter};

use crate::decide::{Backoff, Decision};
use crate::info::EventInfo;
use crate::ledger::{Attempt, Ledger, Processed};
use crate::project::Projections;
use crate::route::{Router, Routing};

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

impl Processor {
    /// A processor with the worker's default settings over `store`: the
    /// default `ENABLED_EVENTS` in development, the built-in handlers, no
    /// Stripe API, no routes, a backoff of 1 s to 5 min, five receives, a
    /// 30-second lease. The tests and the benches start from it.
    pub fn with_defaults(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            app_env: AppEnv::Development,
            enabled: EventFilter::default(),
            backoff: Backoff {
                base: Duration::from_secs(1),
                max: Duration::from_secs(300),
            },
            max_receives: 5,
            lease: Duration::from_secs(30),
            registry: hookline_core::handlers::registered,
            stripe: None,
            routing: Routing::projections_only(),
        }
    }

    fn ledger(&self) -> Ledger<'_> {
        Ledger {
            store: self.store.as_ref(),
            backoff: self.backoff,
            max_receives: self.max_receives,
            lease: self.lease,
        }
    }

    fn router(&self) -> Router<'_> {
        Router {
            routing: &self.routing,
            ledger: self.ledger(),
            projections: Projections {
                ledger: self.ledger(),
                registry: self.registry,
                stripe: self.stripe.as_ref(),
            },
        }
    }

    /// Processes one delivery at `now` (Unix seconds); `jitter` is a random
    /// draw in [0, 1] for the backoff.
    pub async fn process(
        &self,
        delivery: &Delivery,
        now: i64,
        jitter: f64,
    ) -> (Decision, EventInfo) {
        let mut info = EventInfo {
            event_id: delivery.attributes.get(attr::EVENT_ID).cloned(),
            event_type: delivery.attributes.get(attr::EVENT_TYPE).cloned(),
            ..Default::default()
        };
        let parsed = hookline_telemetry::in_step(
            "unwrap",
            || {
                event_in(&delivery.body).and_then(|inbound| {
                    Envelope::parse(inbound.event).map(|envelope| (inbound, envelope))
                })
            },
            |parsed| match parsed {
                Ok((inbound, _)) => Ok(inbound.source.as_str()),
                Err(_) => Err("invalid_payload"),
            },
        );
        let (inbound, envelope) = match parsed {
            Ok(p) => p,
            Err(error) => {
                let reason = format!("invalid event payload: {error}");
                self.record_unparsed(&info, delivery, &reason, now).await;
                return (Decision::DeadLetter { reason }, info);
            }
        };
        info.event_id = Some(envelope.id.to_string());
        info.event_type = Some(envelope.event_type.clone());
        info.created = envelope.created;
        info.source = Some(inbound.source);
        let processed = self
            .process_event(
                &envelope,
                inbound.event,
                delivery,
                (now, jitter),
                inbound.source,
            )
            .await;
        info.attempts = processed.attempts;
        info.ignored = processed.ignored;
        info.tie = processed.tie;
        (processed.decision, info)
    }

    /// A body that is no event: its failure recorded against the id and
    /// type the message's attributes name, when they name them.
    async fn record_unparsed(&self, info: &EventInfo, delivery: &Delivery, reason: &str, now: i64) {
        let (Some(id), Some(event_type)) = (&info.event_id, &info.event_type) else {
            return;
        };
        let account = delivery.attributes.get(attr::ACCOUNT).map(String::as_str);
        let origin = Origin::new("", account, None);
        let id = EventId::new(id.clone());
        self.ledger()
            .record_failure_of(&id, event_type, origin, reason, now, WritePath::Apply)
            .await;
    }

    /// A parsed event: admitted (as the ingress admits; no ingress saw an
    /// EventBridge event), then routed; not admitted, completed `ignored`.
    async fn process_event(
        &self,
        envelope: &Envelope,
        event: &[u8],
        delivery: &Delivery,
        (now, jitter): (i64, f64),
        source: Source,
    ) -> Processed {
        // The trace the ledger records: this delivery's, else the one the
        // message names (spans not exported here, but by the ingress).
        let trace = hookline_telemetry::trace_id(&tracing::Span::current())
            .or_else(|| crate::trace::header_of(delivery).map(|h| h.trace_id_hex()));
        let a = Attempt {
            id: &envelope.id,
            event_type: &envelope.event_type,
            delivery,
            now,
            jitter,
            origin: Origin::new(
                source.as_str(),
                envelope.account.as_deref(),
                envelope.object_id.as_deref(),
            )
            .with_trace(trace.as_deref()),
        };
        match self.admitted(envelope) {
            Ok(()) => self.router().route(&a, envelope, event).await,
            Err(ignored) => {
                tracing::debug!(message = "Event not admitted; completing as ignored.", event_id = %a.id, reason = ignored.reason());
                self.ledger().ignore(&a, ignored).await
            }
        }
    }

    /// The admission rule, as a step of the trace.
    fn admitted(&self, envelope: &Envelope) -> Result<(), Ignored> {
        hookline_telemetry::in_step(
            "admit",
            || admit(envelope, self.app_env, &self.enabled),
            |admitted| match admitted {
                Ok(()) => Ok("admitted"),
                Err(why) => Ok(why.reason()),
            },
        )
    }
}
