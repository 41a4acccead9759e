//! The error type shared by every port.

/// Result alias for port operations.
pub type Result<T, E = PortError> = std::result::Result<T, E>;

/// What can go wrong talking to a backend. Adapters map their native errors
/// onto these variants so callers can react the same way on every backend.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PortError {
    /// The bucket does not exist.
    #[error("bucket `{0}` does not exist")]
    NoSuchBucket(String),
    /// The object does not exist.
    #[error("object `{key}` does not exist in bucket `{bucket}`")]
    NoSuchKey {
        /// Bucket that was asked.
        bucket: String,
        /// Key that was asked.
        key: String,
    },
    /// The queue does not exist.
    #[error("queue `{0}` does not exist")]
    NoSuchQueue(String),
    /// The object key is not acceptable (empty, too long, `..`, absolute...).
    #[error("invalid object key `{key}`: {reason}")]
    InvalidKey {
        /// The offending key.
        key: String,
        /// Why it was refused.
        reason: String,
    },
    /// A message is larger than the queue accepts.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes of queue `{queue}`")]
    MessageTooLarge {
        /// Queue name.
        queue: String,
        /// Size of the refused message.
        size: usize,
        /// The queue's maximum message size.
        limit: usize,
    },
    /// A receipt handle is unknown or no longer valid (message deleted or
    /// received again by someone else).
    #[error("receipt handle is not valid for queue `{0}` (message deleted or re-received)")]
    InvalidReceipt(String),
    /// A worker instance does not exist.
    #[error("instance `{0}` does not exist")]
    NoSuchInstance(String),
    /// The backend refused the call for lack of permissions.
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// Invalid argument given to a port call.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The backend is unreachable, throttling or failing; the call may
    /// succeed if retried later.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// Anything else, with the backend's message.
    #[error("{0}")]
    Other(String),
}

impl PortError {
    /// True when retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, PortError::Unavailable(_))
    }

    /// True when the error says the thing asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            PortError::NoSuchBucket(_)
                | PortError::NoSuchKey { .. }
                | PortError::NoSuchQueue(_)
                | PortError::NoSuchInstance(_)
        )
    }
}
