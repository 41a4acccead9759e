//! The autoscaler loop with an in-process fleet: 0 → max → 0, never past
//! max, no job interrupted.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use facefleet_pipeline::autoscaler::{run, run_with_wake, AutoscalerError, ScalePolicy};
use facefleet_pipeline::backend::Deployment;
use facefleet_pipeline::protocol::{Mode, Request};
use facefleet_pipeline::stats::ObjectCounts;
use facefleet_ports::{Fleet, ObjectStore};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scales_zero_to_max_to_zero_without_interrupting_jobs() {
    let (mut dep, store, queue) = memory_deployment().await;
    enroll_direct(&dep, "Paul", 7).await;
    let engine = Arc::new(FakeEngine { delay: Duration::from_millis(30), ..Default::default() });
    let fleet = Arc::new(FakeFleet::new(dep.clone(), engine.clone()));
    dep.fleet = Some(fleet.clone());
    let policy = ScalePolicy { max_instances: 5, poll: Duration::from_millis(50), scale_in_delay: Duration::from_millis(100), per_worker: 1 };
    let stop = CancellationToken::new();
    let scaler = tokio::spawn(run(dep.clone(), policy, stop.clone(), Duration::from_secs(5)));

    // Idle: nothing runs.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(fleet.list().await.unwrap().is_empty());
    assert_eq!(fleet.launches.load(Ordering::SeqCst), 0);

    // A burst of 200 requests.
    for i in 0..200 {
        let key = format!("img_{i}.png");
        dep.store.put(&dep.names.in_bucket, &key, Bytes::from(png(7, 8, 8))).await.unwrap();
        let body = serde_json::to_string(&Request::new(format!("r{i}"), key, Mode::Name)).unwrap();
        dep.queue.send(&dep.names.req_queue, &body).await.unwrap();
    }
    let mut saw_max = false;
    loop {
        let active = fleet.list().await.unwrap().iter().filter(|i| i.state.is_active()).count();
        assert!(active <= 5, "{active} instances");
        saw_max |= active == 5;
        if store.keys(&dep.names.out_bucket).len() == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(saw_max, "the fleet never reached max");
    // Drained: back to zero.
    loop {
        if fleet.list().await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fleet.peak.load(Ordering::SeqCst), 5);
    // Every request answered exactly once, none received twice (no job was
    // interrupted by a scale-in).
    assert_eq!(queue.bodies(&dep.names.resp_queue).len(), 200);
    assert_eq!(engine.calls.load(Ordering::SeqCst), 200);
    assert!(queue.receives.lock().unwrap().values().all(|&n| n == 1));
    stop.cancel();
    scaler.await.unwrap().unwrap();
}

/// An autoscaler over a fake fleet of at most `max_instances` that ticks
/// once at start, then not for an hour: only wake-ups can make it tick.
struct WokenScaler {
    dep: Deployment,
    fleet: Arc<FakeFleet>,
    stop: CancellationToken,
    wake: Arc<tokio::sync::Notify>,
    scaler: tokio::task::JoinHandle<Result<(), AutoscalerError>>,
}

impl WokenScaler {
    async fn start(max_instances: usize) -> Self {
        let (mut dep, _store, _queue) = memory_deployment().await;
        let fleet = Arc::new(FakeFleet::new(dep.clone(), Arc::new(FakeEngine::default())));
        dep.fleet = Some(fleet.clone());
        let policy = ScalePolicy { max_instances, poll: Duration::from_secs(3600), scale_in_delay: Duration::from_secs(3600), per_worker: 1 };
        let stop = CancellationToken::new();
        let wake = Arc::new(tokio::sync::Notify::new());
        let scaler = tokio::spawn(run_with_wake(dep.clone(), policy, stop.clone(), Duration::from_secs(5), wake.clone()));
        Self { dep, fleet, stop, wake, scaler }
    }

    async fn finish(self) {
        self.stop.cancel();
        self.scaler.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wake_up_scales_out_without_waiting_for_the_next_tick() {
    let scaler = WokenScaler::start(3).await;
    let (dep, fleet, wake) = (&scaler.dep, &scaler.fleet, &scaler.wake);
    // Let the first (immediate) tick pass on an empty queue.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fleet.launches.load(Ordering::SeqCst), 0);
    let body = serde_json::to_string(&Request::new("r1", "missing.png", Mode::Name)).unwrap();
    dep.queue.send(&dep.names.req_queue, &body).await.unwrap();
    wake.notify_one();
    // Without the wake-up this would wait for the next tick, an hour away
    // (the test would hang rather than pass).
    while fleet.launches.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    scaler.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wake_up_while_the_fleet_is_full_is_let_go() {
    let scaler = WokenScaler::start(2).await;
    let (dep, fleet, wake) = (&scaler.dep, &scaler.fleet, &scaler.wake);
    // A tick lists the fleet twice: to plan, and for the table's row.
    let lists_after = |n: usize| {
        let fleet = fleet.clone();
        async move {
            while fleet.lists.load(Ordering::SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    lists_after(2).await;
    for i in 0..5 {
        let body = serde_json::to_string(&Request::new(format!("r{i}"), "missing.png", Mode::Name)).unwrap();
        dep.queue.send(&dep.names.req_queue, &body).await.unwrap();
    }
    // Not full yet: this wake-up ticks, and fills the fleet.
    wake.notify_one();
    lists_after(4).await;
    assert_eq!(fleet.launches.load(Ordering::SeqCst), 2);
    // Full: more requests and wake-ups (one per request, as the web tier
    // sends them) tick no more.
    for i in 5..10 {
        let body = serde_json::to_string(&Request::new(format!("r{i}"), "missing.png", Mode::Name)).unwrap();
        dep.queue.send(&dep.names.req_queue, &body).await.unwrap();
        wake.notify_one();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(fleet.lists.load(Ordering::SeqCst), 4, "a wake-up ticked while the fleet was full");
    assert_eq!(fleet.launches.load(Ordering::SeqCst), 2);
    scaler.finish().await;
}

/// The object counts of the table's last two columns list both buckets
/// whole; however long that takes, the loop goes on scaling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_never_waits_for_the_object_counts() {
    let (mut dep, mem, _queue) = memory_deployment().await;
    let store = Arc::new(GatedCountStore::new(mem));
    dep.store = store.clone();
    let fleet = Arc::new(FakeFleet::new(dep.clone(), Arc::new(FakeEngine::default())));
    dep.fleet = Some(fleet.clone());
    let policy = ScalePolicy { max_instances: 2, poll: Duration::from_millis(20), scale_in_delay: Duration::from_secs(3600), per_worker: 1 };
    let stop = CancellationToken::new();
    let scaler = tokio::spawn(run(dep.clone(), policy, stop.clone(), Duration::from_secs(5)));
    // A count has begun, and never ends: its gate stays closed.
    while store.counts.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let body = serde_json::to_string(&Request::new("r1", "missing.png", Mode::Name)).unwrap();
    dep.queue.send(&dep.names.req_queue, &body).await.unwrap();
    // A loop that counted inside its tick would wait here for good.
    while fleet.launches.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    scaler.await.unwrap().unwrap();
}

#[tokio::test]
async fn object_counts_are_reused_while_young_and_shared_by_callers() {
    let (mut dep, mem, _queue) = memory_deployment().await;
    let store = Arc::new(GatedCountStore::new(mem.clone()));
    dep.store = store.clone();
    let counted = || store.counts.load(Ordering::SeqCst);
    mem.put(&dep.names.in_bucket, "a.jpg", Bytes::from_static(b"a")).await.unwrap();

    // Reused for an hour: a second look lists nothing.
    let hour = ObjectCounts::with_reuse(Duration::from_secs(3600), 0);
    assert_eq!(hour.latest(), None);
    store.gate.add_permits(2);
    assert_eq!(hour.get(&dep).await.unwrap(), (1, 0));
    assert_eq!(counted(), 2, "one count of each bucket");
    mem.put(&dep.names.in_bucket, "b.jpg", Bytes::from_static(b"b")).await.unwrap();
    // (Permits for a count that must not happen: a test that fails, not hangs.)
    store.gate.add_permits(2);
    assert_eq!(hour.get(&dep).await.unwrap(), (1, 0));
    assert_eq!((counted(), hour.latest()), (2, Some((1, 0))));
    store.gate.forget_permits(2);

    // Never reused (no minimum age, no cost factor): every look counts.
    let never = ObjectCounts::with_reuse(Duration::ZERO, 0);
    store.gate.add_permits(4);
    assert_eq!(never.get(&dep).await.unwrap(), (2, 0));
    assert_eq!(never.get(&dep).await.unwrap(), (2, 0));
    assert_eq!(counted(), 6);

    // Reused for its cost times the factor: a count that took at least
    // 10 ms is reused for years.
    let costly = ObjectCounts::with_reuse(Duration::ZERO, u32::MAX);
    let (first, ()) = tokio::join!(costly.get(&dep), async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        store.gate.add_permits(2);
    });
    assert_eq!(first.unwrap(), (2, 0));
    mem.put(&dep.names.in_bucket, "c.jpg", Bytes::from_static(b"c")).await.unwrap();
    store.gate.add_permits(2);
    assert_eq!(costly.get(&dep).await.unwrap(), (2, 0));
    assert_eq!(counted(), 8);
    store.gate.forget_permits(2);

    // Callers asking while a count runs wait for it and share it.
    let shared = ObjectCounts::with_reuse(Duration::from_secs(3600), 0);
    let (a, b, ()) = tokio::join!(shared.get(&dep), shared.get(&dep), async {
        while counted() < 10 {
            tokio::task::yield_now().await;
        }
        // Enough for both callers had each counted: only one does.
        store.gate.add_permits(4);
    });
    assert_eq!((a.unwrap(), b.unwrap()), ((3, 0), (3, 0)));
    assert_eq!(counted(), 10);
}
