//! One delivery in, one [`Decision`] out: parse, admit, handle, then write
//! by the handler's effect: `Replace` applies without a claim (two
//! conditional writes), `Once` claims, then commits in one transaction.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use hookline_core::envelope::{Envelope, EventId};
use hookline_core::handlers::{Effect, Registry};
use hookline_core::inbound::{admit, unwrap, Source};
use hookline_core::message::attr;
use hookline_core::ports::{Claim, Delivery, ErrorKind, Lease, PortError, Store, Tried};
use hookline_core::records::Completion;
use hookline_core::settings::{AppEnv, EventFilter};

use crate::decide::{after_dependency_failure, busy_delay, Backoff, Decision, Done};

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
        let parsed = unwrap(&delivery.body)
            .and_then(|inbound| Envelope::parse(inbound.event).map(|envelope| (inbound, envelope)));
        let (inbound, envelope) = match parsed {
            Ok(p) => p,
            Err(error) => {
                let reason = format!("invalid event payload: {error}");
                if let (Some(id), Some(t)) = (&info.event_id, &info.event_type) {
                    self.record_failure(id, t, &reason, now, Tried::Unclaimed)
                        .await;
                }
                return (Decision::DeadLetter { reason }, info);
            }
        };
        info.event_id = Some(envelope.id.to_string());
        info.event_type = Some(envelope.event_type.clone());
        let span = tracing::Span::current();
        span.record("event_id", envelope.id.as_str());
        span.record("event_type", envelope.event_type.as_str());
        info.created = envelope.created;
        info.source = Some(inbound.source);
        let decision = self
            .process_event(&envelope, inbound.event, delivery, now, unit, &mut info)
            .await;
        (decision, info)
    }

    async fn process_event(
        &self,
        envelope: &Envelope,
        event: &[u8],
        delivery: &Delivery,
        now: i64,
        unit: f64,
        info: &mut EventInfo,
    ) -> Decision {
        let id = &envelope.id;
        let event_type = envelope.event_type.as_str();

        let registered = (self.registry)(event_type);
        let source = info.source.unwrap_or(Source::Webhook).as_str();
        // An effect that replaces state needs no claim (see `Effect`).
        let tried = match registered.map_or(Effect::Replace, |(_, effect)| effect) {
            Effect::Replace => Tried::Unclaimed,
            Effect::Once => {
                match self
                    .claim(id, event_type, delivery, now, unit, source, info)
                    .await
                {
                    Ok(()) => Tried::Claimed,
                    Err(decision) => return decision,
                }
            }
        };

        // Admission (as the ingress applies it; no ingress saw an
        // EventBridge event), required fields, then the handler (pure).
        let handler = match admit(envelope, self.app_env, &self.enabled) {
            Ok(()) => registered.map(|(handle, _)| handle),
            Err(ignored) => {
                tracing::debug!(message = "Event not admitted; completing as ignored.", event_id = %id, reason = ignored.reason());
                None
            }
        };
        let projection = match (envelope.created, handler) {
            (None, _) => {
                let reason = "event has no created timestamp".to_owned();
                return self
                    .fail_permanently(id, event_type, reason, now, tried)
                    .await;
            }
            (Some(_), None) => None,
            (Some(_), Some(handle)) => match handle(event) {
                Ok(p) => Some(p),
                Err(e) => {
                    return self
                        .fail_permanently(id, event_type, e.to_string(), now, tried)
                        .await
                }
            },
        };

        let committed = match tried {
            Tried::Unclaimed => (|| {
                self.store
                    .apply(id, event_type, projection.as_ref(), source, now)
            })
            .retry(quick_retries())
            .when(PortError::is_retryable)
            .await
            .map(|applied| {
                info.attempts = applied.attempts;
                applied.completion
            }),
            Tried::Claimed => {
                (|| {
                    self.store
                        .complete(id, event_type, projection.as_ref(), now)
                })
                .retry(quick_retries())
                .when(PortError::is_retryable)
                .await
            }
        };
        match committed {
            Ok(Completion::Completed(outcome)) => Decision::Done(Done::Completed(outcome)),
            Ok(Completion::Duplicate) => Decision::Done(Done::Duplicate),
            Err(error) if error.kind() == ErrorKind::Permanent => {
                let reason = format!("store refused the write: {}", error.message());
                self.fail_permanently(id, event_type, reason, now, tried)
                    .await
            }
            Err(error) => {
                let decision = self.after_transient(&error, delivery, unit);
                self.record_failure(id.as_str(), event_type, &error.to_string(), now, tried)
                    .await;
                decision
            }
        }
    }

    /// The claim of the transactional path: `Err` with the decision when
    /// this delivery must not go on.
    #[allow(clippy::too_many_arguments)]
    async fn claim(
        &self,
        id: &EventId,
        event_type: &str,
        delivery: &Delivery,
        now: i64,
        unit: f64,
        source: &str,
        info: &mut EventInfo,
    ) -> Result<(), Decision> {
        // Unique per delivery: our own retried claim gets the lease back,
        // a redelivery (crash, expired visibility) is a new owner.
        let owner = format!("{}/{}", delivery.message_id, delivery.receive_count);
        let lease = Lease {
            owner: &owner,
            now,
            secs: self.lease.as_secs(),
            source,
        };
        let claim = (|| self.store.claim(id, event_type, lease))
            .retry(quick_retries())
            .when(PortError::is_retryable)
            .await;
        match claim {
            Ok(Claim::Completed) => Err(Decision::Done(Done::Duplicate)),
            Ok(Claim::Busy { lease_until }) => {
                let remaining = u64::try_from(lease_until.saturating_sub(now)).unwrap_or(0);
                Err(Decision::Busy {
                    delay: busy_delay(
                        self.backoff,
                        delivery.receive_count,
                        self.max_receives,
                        unit,
                        remaining,
                    ),
                })
            }
            Ok(Claim::Started { attempts }) => {
                tracing::debug!(message = "Event claimed.", event_id = %id, attempts);
                info.attempts = Some(attempts);
                Ok(())
            }
            Err(error) if error.kind() == ErrorKind::Permanent => Err(Decision::DeadLetter {
                reason: format!("store refused the claim: {}", error.message()),
            }),
            Err(error) => Err(self.after_transient(&error, delivery, unit)),
        }
    }

    /// The decision after a store call failed for a reason that may pass.
    fn after_transient(&self, error: &PortError, delivery: &Delivery, unit: f64) -> Decision {
        after_dependency_failure(
            error.clone(),
            delivery.receive_count,
            self.max_receives,
            self.backoff,
            unit,
        )
    }

    /// Dead-letters with `reason`, recording it in the ledger first.
    async fn fail_permanently(
        &self,
        id: &EventId,
        event_type: &str,
        reason: String,
        now: i64,
        tried: Tried,
    ) -> Decision {
        self.record_failure(id.as_str(), event_type, &reason, now, tried)
            .await;
        Decision::DeadLetter { reason }
    }

    /// Best effort: the ledger item `FAILED` with `lastError` (also for an
    /// event the queue may redrive, so `dlq list` can show the reason).
    async fn record_failure(
        &self,
        id: &str,
        event_type: &str,
        error: &str,
        now: i64,
        tried: Tried,
    ) {
        if let Err(e) = self
            .store
            .fail(&EventId::new(id.to_owned()), event_type, error, now, tried)
            .await
        {
            tracing::warn!(message = "Cannot record the failure in the ledger.", event_id = %id, error = %e);
        }
    }
}
