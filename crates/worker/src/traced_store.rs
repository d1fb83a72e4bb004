//! A store whose writes are spans of the current trace: `claim`,
//! `complete`, `apply`, `fail` and `record_destination`, each with
//! `db.system.name`, `db.operation.name`, its outcome and error kind.
//! Installed only when spans are exported; reads pass through.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use hookline_core::envelope::EventId;
use hookline_core::ports::{
    Applied, Change, Claim, Holdings, Lease, Origin, PortError, RecentActivity, Store, Subject,
    WritePath,
};
use hookline_core::records::{Completion, DestinationState, EventRecord, StoredItem};

use crate::trace::completion_label;

/// A store whose writes are spans of the current trace.
#[derive(Debug)]
pub(crate) struct TracedStore {
    inner: Arc<dyn Store>,
}

impl TracedStore {
    pub(crate) fn new(inner: Arc<dyn Store>) -> Self {
        Self { inner }
    }

    async fn traced<T, F>(
        &self,
        operation: &'static str,
        label: fn(&T) -> &'static str,
        f: F,
    ) -> Result<T, PortError>
    where
        F: std::future::Future<Output = Result<T, PortError>>,
    {
        let span = hookline_telemetry::span::store(self.inner.system(), operation);
        hookline_telemetry::in_span(span, f, |result| match result {
            Ok(value) => Ok(label(value)),
            Err(error) => Err(error.kind().as_str()),
        })
        .await
    }
}

#[async_trait]
impl Store for TracedStore {
    fn system(&self) -> &'static str {
        self.inner.system()
    }

    async fn claim(
        &self,
        event_id: &EventId,
        event_type: &str,
        lease: Lease<'_>,
    ) -> Result<Claim, PortError> {
        let label = |c: &Claim| match c {
            Claim::Started { .. } => "claimed",
            Claim::Busy { .. } => "busy",
            Claim::Completed => "duplicate",
        };
        self.traced(
            "claim",
            label,
            self.inner.claim(event_id, event_type, lease),
        )
        .await
    }

    async fn complete(
        &self,
        event_id: &EventId,
        event_type: &str,
        change: Change<'_>,
        now: i64,
    ) -> Result<Completion, PortError> {
        self.traced(
            "complete",
            completion_label,
            self.inner.complete(event_id, event_type, change, now),
        )
        .await
    }

    async fn apply(
        &self,
        event_id: &EventId,
        event_type: &str,
        change: Change<'_>,
        origin: Origin<'_>,
        now: i64,
    ) -> Result<Applied, PortError> {
        self.traced(
            "apply",
            |a: &Applied| completion_label(&a.completion),
            self.inner.apply(event_id, event_type, change, origin, now),
        )
        .await
    }

    async fn fail(
        &self,
        event_id: &EventId,
        event_type: &str,
        origin: Origin<'_>,
        error: &str,
        now: i64,
        path: WritePath,
    ) -> Result<(), PortError> {
        self.traced(
            "fail",
            |_| "recorded",
            self.inner
                .fail(event_id, event_type, origin, error, now, path),
        )
        .await
    }

    async fn record_destination(
        &self,
        event_id: &EventId,
        event_type: &str,
        origin: Origin<'_>,
        destination: &str,
        state: &DestinationState,
        now: i64,
    ) -> Result<(), PortError> {
        self.traced(
            "record_destination",
            |_| "recorded",
            self.inner
                .record_destination(event_id, event_type, origin, destination, state, now),
        )
        .await
    }

    async fn event(&self, event_id: &str) -> Result<Option<EventRecord>, PortError> {
        self.inner.event(event_id).await
    }

    async fn destinations(
        &self,
        event_id: &str,
    ) -> Result<BTreeMap<String, DestinationState>, PortError> {
        self.inner.destinations(event_id).await
    }

    async fn item(&self, id: &str) -> Result<Option<StoredItem>, PortError> {
        self.inner.item(id).await
    }

    async fn ping(&self) -> Result<(), PortError> {
        self.inner.ping().await
    }

    async fn recent(&self, since: i64) -> Result<Option<RecentActivity>, PortError> {
        self.inner.recent(since).await
    }

    async fn housekeep(&self, now: i64) -> Result<u64, PortError> {
        self.inner.housekeep(now).await
    }

    async fn holdings(&self, subject: &Subject) -> Result<Holdings, PortError> {
        self.inner.holdings(subject).await
    }

    async fn deauthorized(&self, before: i64) -> Result<Vec<String>, PortError> {
        self.inner.deauthorized(before).await
    }

    async fn erase(&self, holdings: &Holdings) -> Result<Holdings, PortError> {
        self.inner.erase(holdings).await
    }
}
