//! The last ten minutes of the stack, one sample per second, kept in memory
//! by each web tier for the console's Fleet page: `GET /v1/status/history`.
//!
//! A task ([`History::run`], started by [`super::serve`]) reads the request
//! queue's depth and the fleet once a second; the request path
//! ([`super::course::submit`]) reports each answer it gets back with
//! [`History::record_completion`], from which each sample gets its
//! throughput and p50/p95 latency. Only cheap calls are made per sample (one
//! queue depth, one fleet list): no bucket is counted, so the sampler costs
//! next to nothing on AWS as well.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::Json;
use facefleet_ports::InstanceState;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{Intake, WebState};
use crate::backend::Deployment;

/// Samples kept: ten minutes at one a second.
pub(crate) const CAPACITY: usize = 600;

/// Time between samples.
pub(crate) const INTERVAL: Duration = Duration::from_secs(1);

/// Latencies kept per sample at most (the count stays exact past it).
const MAX_LATENCIES: usize = 100_000;

/// One second of the stack.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Sample {
    /// When it was taken, Unix milliseconds.
    pub t_ms: u64,
    /// Request messages waiting for a worker (`null`: the queue could not be read).
    pub queue_depth: Option<u64>,
    /// Requests this web tier is handling right now (as `in_flight` of `GET /v1/status`).
    pub in_flight: u64,
    /// Request messages a worker is working on (received, not yet deleted).
    pub working: Option<u64>,
    /// Worker instances pending or running (`null`: the fleet could not be read or is not visible).
    pub instances: Option<u64>,
    /// Of those, the ones running.
    pub running: Option<u64>,
    /// Of those, the ones starting.
    pub pending: Option<u64>,
    /// Requests answered per second since the previous sample.
    pub completed_per_s: f64,
    /// Median latency of the requests answered since the previous sample (`null`: none).
    pub p50_ms: Option<f64>,
    /// 95th percentile of the same (`null`: none).
    pub p95_ms: Option<f64>,
}

/// One worker of the fleet, at the latest sample.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WorkerRow {
    /// `app-tier-instance-<n>`.
    pub name: String,
    /// `pending`, `running`, `stopping`, `stopped` or `terminated`.
    pub state: &'static str,
}

/// `GET /v1/status/history`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HistoryResponse {
    /// Time between samples (1000).
    pub interval_ms: u64,
    /// Oldest first, at most ten minutes of them.
    pub samples: Vec<Sample>,
    /// The fleet at the latest sample, by name.
    pub workers: Vec<WorkerRow>,
    /// Whether this web tier sees the fleet (a lone `web-tier` may not).
    pub fleet_visible: bool,
}

/// The ring of samples and the answers gathered for the next one.
pub(crate) struct History {
    inner: Mutex<Inner>,
}

struct Inner {
    samples: Ring<Sample>,
    /// Latencies in ms of the answers since the last sample.
    latencies: Vec<f64>,
    /// Answers since the last sample (exact even past `MAX_LATENCIES`).
    completed: u64,
    workers: Vec<WorkerRow>,
    fleet_visible: bool,
}

/// A fixed-capacity ring: pushing past the capacity drops the oldest.
#[derive(Debug, Clone)]
pub(crate) struct Ring<T> {
    items: VecDeque<T>,
    capacity: usize,
}

impl<T: Clone> Ring<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { items: VecDeque::with_capacity(capacity), capacity: capacity.max(1) }
    }

    pub(crate) fn push(&mut self, item: T) {
        if self.items.len() == self.capacity {
            self.items.pop_front();
        }
        self.items.push_back(item);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// Oldest first.
    pub(crate) fn to_vec(&self) -> Vec<T> {
        self.items.iter().cloned().collect()
    }
}

/// The `q` quantile (0..=1) of `sorted` by the nearest-rank method: the
/// smallest value with at least `q` of the values at or below it. `None`
/// when empty.
pub(crate) fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn state_name(s: InstanceState) -> &'static str {
    match s {
        InstanceState::Pending => "pending",
        InstanceState::Running => "running",
        InstanceState::Stopping => "stopping",
        InstanceState::Stopped => "stopped",
        InstanceState::Terminated => "terminated",
    }
}

/// What the backends said at one tick (`None`: not readable).
#[derive(Debug, Default, Clone)]
pub(crate) struct Observed {
    pub queue_depth: Option<u64>,
    pub working: Option<u64>,
    pub in_flight: u64,
    /// The fleet, `None` when not visible or not readable.
    pub fleet: Option<Vec<(String, InstanceState)>>,
    pub fleet_visible: bool,
}

impl History {
    pub(crate) fn new() -> Self {
        Self {
            inner: Mutex::new(Inner {
                samples: Ring::new(CAPACITY),
                latencies: Vec::new(),
                completed: 0,
                workers: Vec::new(),
                fleet_visible: false,
            }),
        }
    }

    /// Records one answer that came back to this web tier after `latency`.
    pub(crate) fn record_completion(&self, latency: Duration) {
        let mut inner = self.inner.lock().expect("history lock");
        inner.completed += 1;
        if inner.latencies.len() < MAX_LATENCIES {
            inner.latencies.push(latency.as_secs_f64() * 1000.0);
        }
    }

    /// Closes the current second: a sample of `observed` at `t_ms`, with the
    /// answers recorded since the previous one over `elapsed`.
    pub(crate) fn sample(&self, t_ms: u64, elapsed: Duration, observed: Observed) {
        let mut inner = self.inner.lock().expect("history lock");
        let mut latencies = std::mem::take(&mut inner.latencies);
        let completed = std::mem::take(&mut inner.completed);
        latencies.sort_by(f64::total_cmp);
        let secs = elapsed.as_secs_f64().max(0.001);
        let round = |v: f64| (v * 10.0).round() / 10.0;
        let (instances, running, pending) = match &observed.fleet {
            Some(list) => {
                let count = |s: InstanceState| list.iter().filter(|(_, st)| *st == s).count() as u64;
                let (r, p) = (count(InstanceState::Running), count(InstanceState::Pending));
                (Some(r + p), Some(r), Some(p))
            }
            None => (None, None, None),
        };
        inner.samples.push(Sample {
            t_ms,
            queue_depth: observed.queue_depth,
            in_flight: observed.in_flight,
            working: observed.working,
            instances,
            running,
            pending,
            completed_per_s: round(completed as f64 / secs),
            p50_ms: percentile(&latencies, 0.50).map(round),
            p95_ms: percentile(&latencies, 0.95).map(round),
        });
        if let Some(list) = observed.fleet {
            let mut rows: Vec<WorkerRow> = list.into_iter().map(|(name, s)| WorkerRow { name, state: state_name(s) }).collect();
            // `app-tier-instance-2` before `app-tier-instance-10`.
            rows.sort_by_key(|r| natural_key(&r.name));
            inner.workers = rows;
        } else if !observed.fleet_visible {
            inner.workers.clear();
        }
        inner.fleet_visible = observed.fleet_visible;
    }

    /// The whole history, oldest sample first.
    pub(crate) fn snapshot(&self) -> HistoryResponse {
        let inner = self.inner.lock().expect("history lock");
        HistoryResponse {
            interval_ms: INTERVAL.as_millis() as u64,
            samples: inner.samples.to_vec(),
            workers: inner.workers.clone(),
            fleet_visible: inner.fleet_visible,
        }
    }

    /// Samples the stack every second until `shutdown` fires.
    pub(crate) async fn run(self: Arc<Self>, dep: Deployment, intake: Arc<Intake>, max_in_flight: usize, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            // A slow backend delays this sample, never the next ones by more.
            let observed = match tokio::time::timeout(INTERVAL, observe(&dep)).await {
                Ok(o) => o,
                Err(_) => {
                    tracing::debug!("status history: the backends took over a second to answer");
                    Observed { fleet_visible: dep.fleet.is_some(), ..Observed::default() }
                }
            };
            let observed = Observed { in_flight: intake.in_flight(max_in_flight) as u64, ..observed };
            let now = Instant::now();
            self.sample(crate::protocol::now_ms(), now.duration_since(last), observed);
            last = now;
        }
    }
}

fn natural_key(name: &str) -> (String, u64) {
    match name.rsplit_once('-') {
        Some((head, n)) if n.bytes().all(|b| b.is_ascii_digit()) && !n.is_empty() => (head.to_string(), n.parse().unwrap_or(u64::MAX)),
        _ => (name.to_string(), 0),
    }
}

/// One look at the request queue and the fleet.
async fn observe(dep: &Deployment) -> Observed {
    let fleet = async {
        match &dep.fleet {
            Some(f) => match f.list().await {
                Ok(list) => Some(list.into_iter().map(|i| (i.name, i.state)).collect::<Vec<_>>()),
                Err(e) => {
                    tracing::debug!(error = %e, "status history: listing the fleet failed");
                    None
                }
            },
            None => None,
        }
    };
    let (depth, fleet) = tokio::join!(dep.queue.depth(&dep.names.req_queue), fleet);
    let (queue_depth, working) = match depth {
        Ok(d) => (Some(d.visible), Some(d.in_flight)),
        Err(e) => {
            tracing::debug!(error = %e, "status history: reading the request queue failed");
            (None, None)
        }
    };
    Observed { queue_depth, working, in_flight: 0, fleet, fleet_visible: dep.fleet.is_some() }
}

/// `GET /v1/status/history`: the last ten minutes, one sample per second,
/// oldest first, and the workers at the latest sample.
#[utoipa::path(get, path = "/v1/status/history", tag = "stack",
    responses((status = 200, description = "The last ten minutes, one sample a second", body = HistoryResponse)),
    security(("api_key" = [])))]
pub(crate) async fn handler(State(state): State<WebState>) -> Json<HistoryResponse> {
    Json(state.history.snapshot())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(states: &[(&str, InstanceState)]) -> Option<Vec<(String, InstanceState)>> {
        Some(states.iter().map(|(n, s)| (n.to_string(), *s)).collect())
    }

    #[test]
    fn ring_keeps_the_newest_in_order() {
        let mut r = Ring::new(3);
        assert_eq!(r.len(), 0);
        for i in 0..5 {
            r.push(i);
        }
        assert_eq!(r.len(), 3);
        assert_eq!(r.to_vec(), vec![2, 3, 4]);
        let mut one = Ring::new(0);
        one.push(1);
        one.push(2);
        assert_eq!(one.to_vec(), vec![2]);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[7.0], 0.5), Some(7.0));
        assert_eq!(percentile(&[7.0], 0.95), Some(7.0));
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.50), Some(50.0));
        assert_eq!(percentile(&v, 0.95), Some(95.0));
        assert_eq!(percentile(&v, 1.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        let v = [10.0, 20.0, 30.0, 40.0];
        assert_eq!(percentile(&v, 0.50), Some(20.0));
        assert_eq!(percentile(&v, 0.95), Some(40.0));
    }

    #[test]
    fn a_sample_summarises_the_answers_of_its_second() {
        let h = History::new();
        for ms in [30, 10, 20, 40, 1000] {
            h.record_completion(Duration::from_millis(ms));
        }
        let observed = Observed {
            queue_depth: Some(4),
            working: Some(2),
            in_flight: 6,
            fleet: fleet(&[
                ("app-tier-instance-10", InstanceState::Running),
                ("app-tier-instance-2", InstanceState::Pending),
                ("app-tier-instance-1", InstanceState::Running),
                ("app-tier-instance-3", InstanceState::Stopping),
            ]),
            fleet_visible: true,
        };
        h.sample(1_000, Duration::from_millis(500), observed);
        let snap = h.snapshot();
        assert_eq!(snap.interval_ms, 1000);
        assert!(snap.fleet_visible);
        let s = &snap.samples[0];
        assert_eq!(s.t_ms, 1_000);
        assert_eq!((s.queue_depth, s.working, s.in_flight), (Some(4), Some(2), 6));
        assert_eq!((s.instances, s.running, s.pending), (Some(3), Some(2), Some(1)));
        assert_eq!(s.completed_per_s, 10.0);
        assert_eq!(s.p50_ms, Some(30.0));
        assert_eq!(s.p95_ms, Some(1000.0));
        let names: Vec<&str> = snap.workers.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["app-tier-instance-1", "app-tier-instance-2", "app-tier-instance-3", "app-tier-instance-10"]);
        assert_eq!(snap.workers[1].state, "pending");

        // The next second starts empty; a fleet that cannot be read keeps the last table.
        h.sample(2_000, Duration::from_secs(1), Observed { fleet_visible: true, ..Observed::default() });
        let snap = h.snapshot();
        let s = &snap.samples[1];
        assert_eq!((s.completed_per_s, s.p50_ms, s.p95_ms, s.instances, s.queue_depth), (0.0, None, None, None, None));
        assert_eq!(snap.workers.len(), 4);
    }

    #[test]
    fn ten_minutes_are_kept() {
        let h = History::new();
        for i in 0..(CAPACITY as u64 + 25) {
            h.sample(i, Duration::from_secs(1), Observed::default());
        }
        let snap = h.snapshot();
        assert_eq!(snap.samples.len(), CAPACITY);
        assert_eq!(snap.samples[0].t_ms, 25);
        assert_eq!(snap.samples.last().unwrap().t_ms, CAPACITY as u64 + 24);
        assert!(!snap.fleet_visible);
        assert!(snap.workers.is_empty());
    }

    #[test]
    fn latencies_past_the_cap_still_count() {
        let h = History::new();
        for _ in 0..(MAX_LATENCIES + 10) {
            h.record_completion(Duration::from_millis(5));
        }
        h.sample(0, Duration::from_secs(1), Observed::default());
        let s = &h.snapshot().samples[0];
        assert_eq!(s.completed_per_s, (MAX_LATENCIES + 10) as f64);
        assert_eq!(s.p95_ms, Some(5.0));
    }
}
