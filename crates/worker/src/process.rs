//! One delivery in, one [`Decision`] out: parse, admit, handle, then write
//! by the handler's effect: `Replace` applies without a claim (two
//! conditional writes), `Once` claims, then commits in one transaction.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use hookline_core::envelope::{Envelope, EventId};
use hookline_core::handlers::{Effect, Handler, Registry};
use hookline_core::inbound::{admit, event_in, Source};
use hookline_core::message::attr;
use hookline_core::ports::{Claim, Delivery, ErrorKind, Lease, PortError, Store, Tried};
use hookline_core::records::{Completion, Projection};
use hookline_core::settings::{AppEnv, EventFilter};

use crate::decide::{after_dependency_failure, busy_delay, Backoff, Decision};

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

/// One processing try of one event: what the steps share.
struct Try<'a> {
    id: &'a EventId,
    event_type: &'a str,
    delivery: &'a Delivery,
    now: i64,
    unit: f64,
    source: &'a str,
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
        let parsed = event_in(&delivery.body)
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
        info.created = envelope.created;
        info.source = Some(inbound.source);
        let (decision, attempts) = self
            .process_event(
                &envelope,
                inbound.event,
                delivery,
                now,
                unit,
                inbound.source,
            )
            .await;
        info.attempts = attempts;
        (decision, info)
    }

    /// The decision for a parsed event, and the processing tries the
    /// ledger counts (when the store said): begin (claim, for an
    /// `Effect::Once` handler), project (admission, required fields, the
    /// handler), commit.
    async fn process_event(
        &self,
        envelope: &Envelope,
        event: &[u8],
        delivery: &Delivery,
        now: i64,
        unit: f64,
        source: Source,
    ) -> (Decision, Option<u32>) {
        let registered = (self.registry)(&envelope.event_type);
        let try_ = Try {
            id: &envelope.id,
            event_type: &envelope.event_type,
            delivery,
            now,
            unit,
            source: source.as_str(),
        };
        // An effect that replaces state needs no claim (see `Effect`).
        let (tried, claimed_attempts) = match registered.map_or(Effect::Replace, |(_, e)| e) {
            Effect::Replace => (Tried::Unclaimed, None),
            Effect::Once => match self.claim(&try_).await {
                Ok(attempts) => (Tried::Claimed, Some(attempts)),
                Err(decision) => return (decision, None),
            },
        };
        let projection = match self
            .project(envelope, event, registered.map(|(h, _)| h), tried, now)
            .await
        {
            Ok(p) => p,
            Err(decision) => return (decision, claimed_attempts),
        };
        let (decision, applied_attempts) = self.commit(&try_, projection.as_ref(), tried).await;
        (decision, claimed_attempts.or(applied_attempts))
    }

    /// Admission (as the ingress applies it; no ingress saw an EventBridge
    /// event), required fields, then the handler (pure). `None`: nothing to
    /// project (ignored); `Err`: the event cannot succeed.
    async fn project(
        &self,
        envelope: &Envelope,
        event: &[u8],
        handler: Option<Handler>,
        tried: Tried,
        now: i64,
    ) -> Result<Option<Projection>, Decision> {
        let (id, event_type) = (&envelope.id, envelope.event_type.as_str());
        let handler = match admit(envelope, self.app_env, &self.enabled) {
            Ok(()) => handler,
            Err(ignored) => {
                tracing::debug!(message = "Event not admitted; completing as ignored.", event_id = %id, reason = ignored.reason());
                None
            }
        };
        let failure = match (envelope.created, handler) {
            (None, _) => "event has no created timestamp".to_owned(),
            (Some(_), None) => return Ok(None),
            (Some(_), Some(handle)) => match handle(event) {
                Ok(p) => return Ok(Some(p)),
                Err(e) => e.to_string(),
            },
        };
        Err(self
            .fail_permanently(id, event_type, failure, now, tried)
            .await)
    }

    /// Writes the effect by the path `tried` says, with quick retries.
    async fn commit(
        &self,
        t: &Try<'_>,
        projection: Option<&Projection>,
        tried: Tried,
    ) -> (Decision, Option<u32>) {
        let (id, event_type, now) = (t.id, t.event_type, t.now);
        let mut attempts = None;
        let committed = match tried {
            Tried::Unclaimed => (|| self.store.apply(id, event_type, projection, t.source, now))
                .retry(quick_retries())
                .when(PortError::is_retryable)
                .await
                .map(|applied| {
                    attempts = applied.attempts;
                    applied.completion
                }),
            Tried::Claimed => {
                (|| self.store.complete(id, event_type, projection, now))
                    .retry(quick_retries())
                    .when(PortError::is_retryable)
                    .await
            }
        };
        let decision = match committed {
            Ok(Completion::Completed(outcome)) => Decision::Done(Completion::Completed(outcome)),
            Ok(Completion::Duplicate) => Decision::Done(Completion::Duplicate),
            Err(error) if error.kind() == ErrorKind::Permanent => {
                let reason = format!("store refused the write: {}", error.message());
                self.fail_permanently(id, event_type, reason, now, tried)
                    .await
            }
            Err(error) => {
                let decision = self.after_transient(&error, t.delivery, t.unit);
                self.record_failure(id.as_str(), event_type, &error.to_string(), now, tried)
                    .await;
                decision
            }
        };
        (decision, attempts)
    }

    /// The claim of the transactional path: the ledger's attempts, or `Err`
    /// with the decision when this delivery must not go on.
    async fn claim(&self, t: &Try<'_>) -> Result<u32, Decision> {
        // Unique per delivery: our own retried claim gets the lease back,
        // a redelivery (crash, expired visibility) is a new owner.
        let owner = format!("{}/{}", t.delivery.message_id, t.delivery.receive_count);
        let lease = Lease {
            owner: &owner,
            now: t.now,
            secs: self.lease.as_secs(),
            source: t.source,
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
            Err(error) => Err(self.after_transient(&error, t.delivery, t.unit)),
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
