//! What a port failure means for the event behind it: [`PortError`] and
//! its [`ErrorKind`], classified once, in the adapter that saw it.

/// What a port failure means for the event behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Worth retrying soon: throttling, timeout, 5xx, unreachable, lock contention.
    Transient,
    /// An operator must fix the setup (a missing table or queue, access
    /// denied, a KMS key the role cannot use, missing or expired
    /// credentials). The event is fine: the worker stops receiving until
    /// the setup is fixed (its circuit breaker), and never dead-letters an
    /// event for it.
    Configuration,
    /// Retrying cannot help: this very request or item is invalid.
    Permanent,
}

impl ErrorKind {
    /// Short label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Configuration => "configuration",
            Self::Permanent => "permanent",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A queue or store failure, classified once, where it happens: its kind,
/// what was being done (`UpdateItem on table hookline-events: …`), and the
/// underlying error when there is one.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct PortError {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
}

/// Two errors are equal when they say the same (kind and message); the
/// source is not compared.
impl PartialEq for PortError {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.message == other.message
    }
}

impl Eq for PortError {}

impl PortError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Transient, message)
    }
    pub fn configuration(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Configuration, message)
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Permanent, message)
    }
    /// Keeps the underlying error as this one's source.
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(std::sync::Arc::new(source));
        self
    }
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    /// What failed, without the kind.
    pub fn message(&self) -> &str {
        &self.message
    }
    /// Worth a quick in-process retry (a blip).
    pub fn is_retryable(&self) -> bool {
        self.kind == ErrorKind::Transient
    }
    /// The setup is wrong, not the event.
    pub fn is_configuration(&self) -> bool {
        self.kind == ErrorKind::Configuration
    }
}
