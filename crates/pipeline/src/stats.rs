//! A snapshot of the pipeline's state, shared by `GET /v1/status` and the
//! autoscaler's per-tick table.

use facefleet_ports::PortError;
use serde::{Deserialize, Serialize};

use crate::backend::Deployment;

/// The numbers the course's grader watches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Request messages waiting to be received.
    pub request_queue_depth: u64,
    /// Request messages being worked on (received, not deleted).
    pub request_queue_in_flight: u64,
    /// Response messages not yet consumed (visible + in flight).
    pub response_queue_depth: u64,
    /// Worker instances pending or running (0 when this process cannot see
    /// the fleet; see `fleet_visible`).
    pub running_instances: u64,
    /// Whether `running_instances` comes from the fleet.
    pub fleet_visible: bool,
    /// Objects in the input bucket.
    pub input_objects: u64,
    /// Objects in the output bucket.
    pub output_objects: u64,
}

impl Stats {
    /// Reads every number from the deployment's backends.
    pub async fn collect(dep: &Deployment) -> Result<Stats, PortError> {
        let (mut stats, (input, output)) = futures::try_join!(Self::collect_live(dep), Self::count_objects(dep))?;
        stats.input_objects = input;
        stats.output_objects = output;
        Ok(stats)
    }

    /// The queue and fleet numbers only, leaving the object counts at 0:
    /// cheap whatever the buckets hold (counting objects lists a whole
    /// bucket), for callers that look often, like the autoscaler.
    pub async fn collect_live(dep: &Deployment) -> Result<Stats, PortError> {
        let n = &dep.names;
        let (req, resp) = futures::try_join!(dep.queue.depth(&n.req_queue), dep.queue.depth(&n.resp_queue))?;
        let (running, visible) = match &dep.fleet {
            Some(f) => (f.list().await?.iter().filter(|i| i.state.is_active()).count() as u64, true),
            None => (0, false),
        };
        Ok(Stats {
            request_queue_depth: req.visible,
            request_queue_in_flight: req.in_flight,
            response_queue_depth: resp.total(),
            running_instances: running,
            fleet_visible: visible,
            input_objects: 0,
            output_objects: 0,
        })
    }

    /// Objects in the input and output buckets (lists both buckets whole).
    pub async fn count_objects(dep: &Deployment) -> Result<(u64, u64), PortError> {
        let n = &dep.names;
        futures::try_join!(dep.store.count(&n.in_bucket, ""), dep.store.count(&n.out_bucket, ""))
    }

    /// Header of [`Stats::row`], as the course's grader prints it.
    pub fn header() -> String {
        format!(
            "{:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "req-vis", "req-fly", "resp", "instances", "in-objs", "out-objs"
        )
    }

    /// One fixed-width table row.
    pub fn row(&self) -> String {
        format!(
            "{:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            self.request_queue_depth,
            self.request_queue_in_flight,
            self.response_queue_depth,
            self.running_instances,
            self.input_objects,
            self.output_objects
        )
    }
}
