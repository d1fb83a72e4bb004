//! The optional capability some queues have: moving every DLQ message
//! back to the main queue server-side (SQS `StartMessageMoveTask`).

use async_trait::async_trait;

use super::PortError;

/// The state of a native redrive task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveState {
    Running,
    Completed,
    Failed,
    Cancelling,
    Cancelled,
}

/// Progress of a native redrive task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoveStatus {
    pub state: MoveState,
    pub moved: u64,
    pub total: Option<u64>,
}

/// A capability some backends have: moving every DLQ message back to the
/// main queue server-side (SQS `StartMessageMoveTask`).
#[async_trait]
pub trait NativeRedrive: Send + Sync + std::fmt::Debug {
    /// The dead-letter queue it moves from, for messages.
    fn source(&self) -> &str;
    /// Starts the move to the main queue, at most `rate` messages a second;
    /// returns the task handle.
    async fn start(&self, rate: Option<u32>) -> Result<String, PortError>;
    /// The most recent task's progress.
    async fn status(&self) -> Result<Option<MoveStatus>, PortError>;
}
