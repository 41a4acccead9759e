//! The autoscaler: sizes the worker fleet from the request backlog.
//!
//! The decision ([`plan`]) is a pure function of the policy, the backlog,
//! the fleet listing and the time; [`run`] is the control loop around it.
//! Workers are only ever stopped gracefully ([`facefleet_ports::Fleet::stop`]:
//! the worker finishes its job in hand, and an unfinished message would be
//! redelivered by the queue anyway).

use std::sync::Arc;
use std::time::{Duration, Instant};

use facefleet_ports::{Fleet, Instance, InstanceState, Names};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::backend::Deployment;
use crate::stats::{ObjectCounts, Stats, OBJECT_COUNT_MIN_AGE};

/// Why the autoscaler cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AutoscalerError {
    /// The deployment has no fleet to size.
    #[error("the autoscaler needs a fleet (the deployment has none)")]
    NoFleet,
}

/// How the fleet is sized.
#[derive(Debug, Clone)]
pub struct ScalePolicy {
    /// Backlog messages per worker (desired = ceil(backlog / per_worker)).
    pub per_worker: u64,
    /// Most workers ever running (the course's limit is 15).
    pub max_instances: usize,
    /// How long the backlog must ask for fewer workers before they are
    /// stopped (avoids stopping workers between two bursts).
    pub scale_in_delay: Duration,
    /// Control-loop period.
    pub poll: Duration,
}

impl Default for ScalePolicy {
    fn default() -> Self {
        Self { per_worker: 1, max_instances: 15, scale_in_delay: Duration::from_millis(500), poll: Duration::from_millis(250) }
    }
}

/// Workers wanted for `backlog` messages: `clamp(ceil(backlog / per_worker), 0, max)`.
pub fn desired(backlog: u64, policy: &ScalePolicy) -> usize {
    let per = policy.per_worker.max(1);
    let want = backlog.div_ceil(per);
    want.min(policy.max_instances as u64) as usize
}

/// Memory of the control loop between ticks.
#[derive(Debug, Clone, Default)]
pub struct ScalerState {
    /// Since when fewer workers than are running have been wanted.
    pub low_since: Option<Instant>,
}

/// What to do this tick.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Names of workers to launch.
    pub launch: Vec<String>,
    /// Ids of workers to stop gracefully.
    pub stop: Vec<String>,
}

/// Workers that could still be launched: `max_instances` less the
/// instances not yet terminated or stopped (stopping ones count).
pub fn room(policy: &ScalePolicy, instances: &[Instance]) -> usize {
    let live = instances.iter().filter(|i| i.state != InstanceState::Terminated && i.state != InstanceState::Stopped).count();
    policy.max_instances.saturating_sub(live)
}

/// Decides launches and stops. Never plans more than `max_instances`
/// non-terminated instances (stopping ones included), launches at once when
/// more are wanted, and stops surplus workers once fewer have been wanted
/// for `scale_in_delay`, highest-numbered first.
pub fn plan(policy: &ScalePolicy, state: &mut ScalerState, backlog: u64, instances: &[Instance], names: &Names, now: Instant) -> Plan {
    let want = desired(backlog, policy);
    let mut active: Vec<&Instance> = instances.iter().filter(|i| i.state.is_active()).collect();
    let mut out = Plan::default();
    if want > active.len() {
        state.low_since = None;
        let n = (want - active.len()).min(room(policy, instances));
        let used: std::collections::HashSet<usize> = instances
            .iter()
            .filter(|i| i.state != InstanceState::Terminated)
            .filter_map(|i| names.worker_number(&i.name))
            .collect();
        out.launch = (1..).filter(|k| !used.contains(k)).take(n).map(|k| names.worker(k)).collect();
    } else if want < active.len() {
        let since = *state.low_since.get_or_insert(now);
        if now.duration_since(since) >= policy.scale_in_delay {
            active.sort_by_key(|i| std::cmp::Reverse(names.worker_number(&i.name).unwrap_or(usize::MAX)));
            out.stop = active.iter().take(active.len() - want).map(|i| i.id.clone()).collect();
            state.low_since = None;
        }
    } else {
        state.low_since = None;
    }
    out
}

/// Executes `plan` on `fleet`, logging (not failing on) individual errors.
pub async fn apply(fleet: &dyn Fleet, plan: &Plan) {
    for name in &plan.launch {
        match fleet.launch(name).await {
            Ok(i) => tracing::info!(name = %i.name, id = %i.id, "launched worker"),
            Err(e) => tracing::warn!(%name, error = %e, "launching a worker failed"),
        }
    }
    for id in &plan.stop {
        match fleet.stop(id).await {
            Ok(()) => tracing::info!(%id, "stopping worker (it finishes its job first)"),
            Err(e) => tracing::warn!(%id, error = %e, "stopping a worker failed"),
        }
    }
}

/// The control loop: every `policy.poll`, reads the request backlog
/// (visible + in flight), plans and applies; logs a table row whenever the
/// numbers change (and every 10 s). When `stop` fires, stops every worker
/// gracefully and waits (up to `drain`) for them to exit.
pub async fn run(dep: Deployment, policy: ScalePolicy, stop: CancellationToken, drain: Duration) -> Result<(), AutoscalerError> {
    run_with_wake(dep, policy, stop, drain, Arc::new(Notify::new())).await
}

/// How long a wake-up waits for the rest of a burst of requests before the
/// tick it triggers.
const WAKE_DEBOUNCE: Duration = Duration::from_millis(10);

/// Keeps `objects` counted beside the control loop, as often as
/// [`ObjectCounts`] allows (a failed count is tried again after
/// [`OBJECT_COUNT_MIN_AGE`]), until `stop` fires.
async fn keep_counting(dep: Deployment, objects: Arc<ObjectCounts>, stop: CancellationToken) {
    let counting = async {
        loop {
            let next = match objects.get(&dep).await {
                Ok(_) => objects.next_count_at(),
                Err(e) => {
                    tracing::warn!(error = %e, "counting the bucket objects failed");
                    tokio::time::Instant::now() + OBJECT_COUNT_MIN_AGE
                }
            };
            tokio::time::sleep_until(next).await;
        }
    };
    // A count in progress (a slow listing) is dropped too.
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = counting => {}
    }
}

/// [`run`], also ticking (after [`WAKE_DEBOUNCE`]) whenever `wake` is
/// notified, e.g. by a web tier in the same process that just queued a
/// request: scale-out then starts within milliseconds of the first upload
/// instead of up to one poll interval later. A wake while the last tick
/// found the fleet full ([`room`] 0) is let go: new requests can only ask
/// for more workers, which a full fleet cannot launch, and under load a
/// web tier wakes the loop for every request (up to about a hundred ticks a
/// second, each reading the queue three times and every worker's
/// `/proc` entry twice, on the cores the workers need).
pub async fn run_with_wake(
    dep: Deployment,
    policy: ScalePolicy,
    stop: CancellationToken,
    drain: Duration,
    wake: Arc<Notify>,
) -> Result<(), AutoscalerError> {
    let fleet = dep.fleet.clone().ok_or(AutoscalerError::NoFleet)?;
    let mut state = ScalerState::default();
    let mut last_row = String::new();
    let mut last_log = Instant::now();
    // The table's object counts list both buckets whole, which grow without
    // bound: they are counted beside the loop, whose ticks never wait for a
    // count (at 100,000 stored requests one took about a second).
    let objects = Arc::new(ObjectCounts::new());
    let counting = stop.child_token();
    tokio::spawn(keep_counting(dep.clone(), objects.clone(), counting.clone()));
    let _stop_counting = counting.drop_guard();
    tracing::info!(max = policy.max_instances, per_worker = policy.per_worker, "autoscaler started");
    tracing::info!(target: "facefleet::table", "{}", Stats::header());
    let mut ticker = tokio::time::interval(policy.poll);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut full = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
            _ = wake.notified() => {
                if full {
                    continue;
                }
                tokio::time::sleep(WAKE_DEBOUNCE).await;
                ticker.reset();
            }
        }
        let (depth, instances) = match tokio::try_join!(dep.queue.depth(&dep.names.req_queue), fleet.list()) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "autoscaler cannot read the backlog or the fleet");
                continue;
            }
        };
        let p = plan(&policy, &mut state, depth.total(), &instances, &dep.names, Instant::now());
        apply(fleet.as_ref(), &p).await;
        full = room(&policy, &instances) <= p.launch.len();
        match Stats::collect_live(&dep).await {
            Ok(mut s) => {
                if let Some((input, output)) = objects.latest() {
                    (s.input_objects, s.output_objects) = (input, output);
                }
                let row = s.row();
                if row != last_row || last_log.elapsed() >= Duration::from_secs(10) {
                    tracing::info!(target: "facefleet::table", "{row}");
                    last_row = row;
                    last_log = Instant::now();
                }
            }
            Err(e) => tracing::warn!(error = %e, "collecting stats failed"),
        }
    }
    stop_all(fleet.as_ref(), drain).await;
    Ok(())
}

/// Stops every worker gracefully and waits up to `drain` for them to exit.
pub async fn stop_all(fleet: &dyn Fleet, drain: Duration) {
    let deadline = Instant::now() + drain;
    if let Ok(list) = fleet.list().await {
        for i in list.iter().filter(|i| i.state.is_active()) {
            if let Err(e) = fleet.stop(&i.id).await {
                tracing::warn!(id = %i.id, error = %e, "stopping a worker failed");
            }
        }
    }
    while Instant::now() < deadline {
        match fleet.list().await {
            Ok(l) if l.iter().all(|i| matches!(i.state, InstanceState::Terminated | InstanceState::Stopped)) => return,
            Err(_) => return,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    tracing::warn!("some workers did not exit within {drain:?}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(n: usize, state: InstanceState) -> Instance {
        Instance { id: format!("id{n}"), name: Names::default().worker(n), state }
    }

    #[test]
    fn desired_is_clamped_ceiling() {
        let p = ScalePolicy { per_worker: 4, max_instances: 15, ..Default::default() };
        assert_eq!(desired(0, &p), 0);
        assert_eq!(desired(1, &p), 1);
        assert_eq!(desired(4, &p), 1);
        assert_eq!(desired(5, &p), 2);
        assert_eq!(desired(10_000, &p), 15);
        let p0 = ScalePolicy { per_worker: 0, ..p };
        assert_eq!(desired(3, &p0), 3);
    }

    #[test]
    fn scales_out_at_once_with_free_names_and_never_past_max() {
        let names = Names::default();
        let p = ScalePolicy { max_instances: 3, ..Default::default() };
        let mut s = ScalerState::default();
        let now = Instant::now();
        let got = plan(&p, &mut s, 100, &[inst(2, InstanceState::Running)], &names, now);
        assert_eq!(got.launch, vec![names.worker(1), names.worker(3)]);
        assert!(got.stop.is_empty());
        // A stopping worker still occupies a slot.
        let got = plan(&p, &mut s, 100, &[inst(1, InstanceState::Running), inst(2, InstanceState::Stopping)], &names, now);
        assert_eq!(got.launch, vec![names.worker(3)]);
        let full: Vec<_> = (1..=3).map(|n| inst(n, InstanceState::Pending)).collect();
        assert_eq!(plan(&p, &mut s, 100, &full, &names, now), Plan::default());
    }

    #[test]
    fn scales_in_after_the_delay_highest_first() {
        let names = Names::default();
        let p = ScalePolicy { scale_in_delay: Duration::from_millis(500), ..Default::default() };
        let mut s = ScalerState::default();
        let t0 = Instant::now();
        let fleet: Vec<_> = (1..=3).map(|n| inst(n, InstanceState::Running)).collect();
        assert_eq!(plan(&p, &mut s, 1, &fleet, &names, t0), Plan::default());
        assert_eq!(plan(&p, &mut s, 1, &fleet, &names, t0 + Duration::from_millis(499)), Plan::default());
        let got = plan(&p, &mut s, 1, &fleet, &names, t0 + Duration::from_millis(500));
        assert_eq!(got.stop, vec!["id3".to_string(), "id2".to_string()]);
        // Load returning resets the delay.
        let mut s = ScalerState::default();
        plan(&p, &mut s, 0, &fleet, &names, t0);
        plan(&p, &mut s, 3, &fleet, &names, t0 + Duration::from_millis(300));
        assert_eq!(plan(&p, &mut s, 0, &fleet, &names, t0 + Duration::from_millis(600)), Plan::default());
        let got = plan(&p, &mut s, 0, &fleet, &names, t0 + Duration::from_millis(1100));
        assert_eq!(got.stop.len(), 3);
    }

    #[test]
    fn zero_delay_scales_in_on_the_first_tick() {
        let names = Names::default();
        let p = ScalePolicy { scale_in_delay: Duration::ZERO, ..Default::default() };
        let mut s = ScalerState::default();
        let fleet = vec![inst(1, InstanceState::Running), inst(2, InstanceState::Stopping)];
        assert_eq!(plan(&p, &mut s, 0, &fleet, &names, Instant::now()).stop, vec!["id1".to_string()]);
    }
}
