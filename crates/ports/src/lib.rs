//! The ports of facefleet (hexagonal architecture): small traits that the
//! pipeline talks to, with one adapter per backend (embedded, AWS).
//!
//! - [`ObjectStore`]: buckets of immutable objects (S3-like).
//! - [`MessageQueue`]: at-least-once queues with visibility timeouts and a
//!   dead-letter queue (SQS-like).
//! - [`Fleet`]: worker "instances" that can be listed, launched and stopped
//!   (EC2-like).
//! - [`Names`]: the resource names derived from one prefix (the course's
//!   naming contract).
//!
//! The `contract` feature exposes [`contract`], the test suites that every
//! adapter runs against itself.

mod error;
mod fleet;
mod names;
mod queue;
mod store;

pub mod memory;

#[cfg(feature = "contract")]
pub mod contract;

pub use error::{PortError, Result};
pub use fleet::{Fleet, Instance, InstanceState};
pub use names::Names;
pub use queue::{validate_batch, Message, MessageQueue, QueueConfig, QueueDepth, MAX_BATCH};
pub use store::{validate_key, ListPage, ObjectMeta, ObjectStore};
