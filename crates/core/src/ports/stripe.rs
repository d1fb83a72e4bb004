//! The Stripe API port, read only.

use async_trait::async_trait;
use bytes::Bytes;

use super::PortError;

/// Stripe's API, read only: what a thin event points to, an object's
/// current state, the events list `backfill` reads.
///
/// One implementation (`hookline-stripe`): a pinned `Stripe-Version`, a
/// timeout, a client-side rate limit, and Stripe's errors classified once:
/// 408, 429 and `Stripe-Should-Retry: true`, 5xx and network errors are
/// [`ErrorKind::Transient`](crate::ports::ErrorKind::Transient) (after the client's own retries); 401 and 403
/// are [`ErrorKind::Configuration`](crate::ports::ErrorKind::Configuration); 404 and other 4xx are
/// [`ErrorKind::Permanent`](crate::ports::ErrorKind::Permanent), with Stripe's message.
#[async_trait]
pub trait StripeApi: Send + Sync + std::fmt::Debug {
    /// `GET path` (`/v1/accounts/acct_…`, `/v2/core/events/evt_…`) with
    /// `query`, on behalf of the connected account `context` when given
    /// (`Stripe-Context`); the JSON body.
    async fn get(
        &self,
        path: &str,
        query: &[(String, String)],
        context: Option<&str>,
    ) -> Result<Bytes, PortError>;
}
