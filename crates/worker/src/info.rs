//! What the worker learned of the event behind a delivery, for its log
//! line, its metrics and its trace span.

use hookline_core::inbound::{Ignored, Source};
use hookline_core::ports::Tie;

/// What the worker knows about the event behind a delivery.
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
