//! The fleet port: worker instances (local processes or EC2 instances).

use async_trait::async_trait;

use crate::Result;

/// Life-cycle state of an instance (EC2's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InstanceState {
    /// Starting; counts towards the running total.
    Pending,
    /// Up and working.
    Running,
    /// Asked to stop; finishing its job in hand.
    Stopping,
    /// Stopped; may be started again (EC2 warm pool).
    Stopped,
    /// Gone.
    Terminated,
}

impl InstanceState {
    /// Pending or running: the instance is, or will soon be, doing work.
    pub fn is_active(self) -> bool {
        matches!(self, InstanceState::Pending | InstanceState::Running)
    }
}

/// One worker instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Backend id (process id, EC2 instance id).
    pub id: String,
    /// Name, `app-tier-instance-<n>`.
    pub name: String,
    /// Current state.
    pub state: InstanceState,
}

/// A set of worker instances that can be sized.
#[async_trait]
pub trait Fleet: Send + Sync {
    /// All instances the fleet knows of that are not terminated.
    async fn list(&self) -> Result<Vec<Instance>>;
    /// Brings up one worker named `name` (re-using a stopped one if the
    /// backend keeps a pool).
    async fn launch(&self, name: &str) -> Result<Instance>;
    /// Asks an instance to stop gracefully: it finishes the job in hand and
    /// exits; its unfinished messages are redelivered by the queue.
    async fn stop(&self, id: &str) -> Result<()>;
}
