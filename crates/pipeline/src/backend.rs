//! The adapters a process talks to ([`Deployment`], opened by the
//! composition root) and the resources (buckets, queues) every deployment
//! needs.

use std::sync::Arc;
use std::time::Duration;

use facefleet_ports::{Fleet, MessageQueue, Names, ObjectStore, PortError, QueueConfig};

/// Largest request-queue message (the course's 1 KiB): images travel
/// through the input bucket, never the queue.
pub const REQUEST_MESSAGE_LIMIT: usize = 1024;

/// Receives after which the request queue moves a message to its
/// dead-letter queue.
pub const MAX_RECEIVES: u32 = 5;

/// The adapters and resource names of one deployment.
#[derive(Clone)]
pub struct Deployment {
    /// Resource names.
    pub names: Names,
    /// Buckets.
    pub store: Arc<dyn ObjectStore>,
    /// Queues.
    pub queue: Arc<dyn MessageQueue>,
    /// Worker fleet, when this process can see it (the web tier and the
    /// workers usually cannot; `facefleet up` and the autoscaler can).
    pub fleet: Option<Arc<dyn Fleet>>,
}

/// Timings of the queues created by [`ensure_resources`].
#[derive(Debug, Clone, Copy)]
pub struct QueueTimings {
    /// Default visibility of request messages (workers extend it while
    /// they work).
    pub request_visibility: Duration,
}

impl Default for QueueTimings {
    fn default() -> Self {
        Self { request_visibility: Duration::from_secs(15) }
    }
}

/// Creates the buckets and queues of the image pipeline (idempotent): the
/// input, output and gallery buckets; the request queue (1 KiB messages,
/// dead-letter queue after [`MAX_RECEIVES`] receives), its dead-letter
/// queue and the response queue.
pub async fn ensure_resources(dep: &Deployment, timings: QueueTimings) -> Result<(), PortError> {
    let n = &dep.names;
    for bucket in [&n.in_bucket, &n.out_bucket, &n.gallery_bucket] {
        dep.store.create_bucket(bucket).await?;
    }
    let dlq = QueueConfig { visibility_timeout: Duration::from_secs(30), ..QueueConfig::default() };
    dep.queue.create_queue(&n.req_dlq, &dlq).await?;
    let req = QueueConfig {
        max_message_size: REQUEST_MESSAGE_LIMIT,
        visibility_timeout: timings.request_visibility,
        dead_letter: Some((n.req_dlq.clone(), MAX_RECEIVES)),
    };
    dep.queue.create_queue(&n.req_queue, &req).await?;
    let resp = QueueConfig { visibility_timeout: Duration::from_secs(30), ..QueueConfig::default() };
    dep.queue.create_queue(&n.resp_queue, &resp).await?;
    Ok(())
}
