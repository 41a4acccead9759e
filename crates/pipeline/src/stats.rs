//! A snapshot of the pipeline's state, shared by `GET /v1/status` and the
//! autoscaler's per-tick table.

use std::sync::Mutex;
use std::time::Duration;

use facefleet_ports::PortError;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

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

    /// The live numbers with the object counts of `objects` (see
    /// [`ObjectCounts::get`]: a recent count is reused).
    pub async fn collect(dep: &Deployment, objects: &ObjectCounts) -> Result<Stats, PortError> {
        let (mut stats, (input, output)) = futures::try_join!(Self::collect_live(dep), objects.get(dep))?;
        stats.input_objects = input;
        stats.output_objects = output;
        Ok(stats)
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

/// A count younger than this is always reused.
pub const OBJECT_COUNT_MIN_AGE: Duration = Duration::from_secs(5);

/// A count is reused for this many times the time it took, so counting
/// takes at most about a hundredth of the time (of one core, or of the
/// store's requests) however large the buckets grow.
pub const OBJECT_COUNT_COST_FACTOR: u32 = 100;

/// The object counts of the input and output buckets, kept for callers that
/// look often (the autoscaler's table, `GET /v1/status`). Counting lists
/// both buckets whole, so its cost grows with all the uploads and answers
/// ever stored; a count is reused until it is older than
/// [`OBJECT_COUNT_MIN_AGE`] and [`OBJECT_COUNT_COST_FACTOR`] times the
/// time it took, and callers asking together share one count.
#[derive(Debug)]
pub struct ObjectCounts {
    /// Held while counting: callers asking meanwhile wait for that count.
    counting: tokio::sync::Mutex<()>,
    last: Mutex<Option<Counted>>,
    min_age: Duration,
    cost_factor: u32,
}

impl Default for ObjectCounts {
    fn default() -> Self {
        Self::with_reuse(OBJECT_COUNT_MIN_AGE, OBJECT_COUNT_COST_FACTOR)
    }
}

#[derive(Debug, Clone, Copy)]
struct Counted {
    counts: (u64, u64),
    /// When the count may no longer be reused.
    until: Instant,
}

impl ObjectCounts {
    /// No count yet; counts reused as the module's constants say.
    pub fn new() -> Self {
        Self::default()
    }

    /// No count yet; a count is reused until it is older than `min_age`
    /// and `cost_factor` times the time it took.
    pub fn with_reuse(min_age: Duration, cost_factor: u32) -> Self {
        Self { counting: tokio::sync::Mutex::new(()), last: Mutex::new(None), min_age, cost_factor }
    }

    /// `(input, output)` objects: the last count while it may be reused,
    /// else a new one.
    pub async fn get(&self, dep: &Deployment) -> Result<(u64, u64), PortError> {
        let _counting = self.counting.lock().await;
        if let Some(c) = self.reusable() {
            return Ok(c.counts);
        }
        let start = Instant::now();
        let counts = Stats::count_objects(dep).await?;
        let (at, took) = (Instant::now(), start.elapsed());
        let reuse = self.min_age.max(took.saturating_mul(self.cost_factor));
        // An absurd factor saturates: reused for good rather than a panic.
        let until = at.checked_add(reuse).unwrap_or(at + Duration::from_secs(100 * 365 * 86_400));
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(Counted { counts, until });
        Ok(counts)
    }

    /// The last count, however old, without counting (`None` before the
    /// first).
    pub fn latest(&self) -> Option<(u64, u64)> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).map(|c| c.counts)
    }

    /// When the last count stops being reused (now if there is none).
    pub fn next_count_at(&self) -> Instant {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).map_or_else(Instant::now, |c| c.until)
    }

    fn reusable(&self) -> Option<Counted> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).filter(|c| Instant::now() < c.until)
    }
}
