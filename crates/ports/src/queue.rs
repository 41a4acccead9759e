//! The message-queue port (SQS-like, at-least-once delivery).

use std::time::Duration;

use async_trait::async_trait;

use crate::Result;

/// Most messages one `receive` call returns (SQS's limit).
pub const MAX_BATCH: usize = 10;

/// Checks a `receive` batch size: every adapter accepts 1..=[`MAX_BATCH`].
pub fn validate_batch(max: usize) -> Result<()> {
    if (1..=MAX_BATCH).contains(&max) {
        Ok(())
    } else {
        Err(crate::PortError::InvalidArgument(format!(
            "receive takes 1..={MAX_BATCH} messages at once, got {max}"
        )))
    }
}

/// A received message. It stays invisible to other receivers until its
/// visibility timeout ends; delete it with its `receipt` once handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Stable message id.
    pub id: String,
    /// Message body (UTF-8 text, usually JSON).
    pub body: String,
    /// Handle for `delete` / `change_visibility`; valid until the message
    /// is received again.
    pub receipt: String,
    /// How many times this message has been received, this time included.
    pub receive_count: u32,
}

/// Backlog of a queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Messages ready to be received.
    pub visible: u64,
    /// Messages received and not yet deleted (in flight).
    pub in_flight: u64,
}

impl QueueDepth {
    /// Visible plus in-flight messages.
    pub fn total(&self) -> u64 {
        self.visible + self.in_flight
    }
}

/// Attributes a queue is created with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    /// Largest accepted body, in bytes (SQS: 1 KiB..256 KiB).
    pub max_message_size: usize,
    /// Default visibility timeout of received messages.
    pub visibility_timeout: Duration,
    /// Dead-letter queue and the receive count after which a message moves
    /// there (`None`: no dead-letter queue).
    pub dead_letter: Option<(String, u32)>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_message_size: 256 * 1024,
            visibility_timeout: Duration::from_secs(30),
            dead_letter: None,
        }
    }
}

/// At-least-once message queues addressed by name.
#[async_trait]
pub trait MessageQueue: Send + Sync {
    /// Creates the queue with `config`; succeeds if it already exists
    /// (updating its attributes to `config`).
    async fn create_queue(&self, queue: &str, config: &QueueConfig) -> Result<()>;
    /// Sends a message; returns its id. A body larger than the queue's
    /// maximum fails with [`crate::PortError::MessageTooLarge`].
    async fn send(&self, queue: &str, body: &str) -> Result<String>;
    /// Receives up to `max` (1..=10) messages, waiting up to `wait` for the
    /// first one (long poll). Each message becomes invisible for
    /// `visibility` (queue default if `None`). A message received more than
    /// the dead-letter count moves to the dead-letter queue instead.
    async fn receive(
        &self,
        queue: &str,
        max: usize,
        wait: Duration,
        visibility: Option<Duration>,
    ) -> Result<Vec<Message>>;
    /// Deletes a received message (acknowledges it).
    async fn delete(&self, queue: &str, receipt: &str) -> Result<()>;
    /// Deletes several received messages: one result per receipt, in their
    /// order, each as [`MessageQueue::delete`] would answer it. Adapters
    /// that can do it in fewer round trips or writes do; by default, one
    /// `delete` after another.
    async fn delete_batch(&self, queue: &str, receipts: &[&str]) -> Vec<Result<()>> {
        let mut results = Vec::with_capacity(receipts.len());
        for receipt in receipts {
            results.push(self.delete(queue, receipt).await);
        }
        results
    }
    /// Changes the remaining invisibility of a received message (0 makes it
    /// visible again at once).
    async fn change_visibility(&self, queue: &str, receipt: &str, timeout: Duration) -> Result<()>;
    /// Approximate backlog.
    async fn depth(&self, queue: &str) -> Result<QueueDepth>;
    /// Deletes every message of the queue.
    async fn purge(&self, queue: &str) -> Result<()>;
}
