//! The pipeline's autoscaler driving the EC2 fleet on the moto emulator:
//! with a backlog, `app-tier-instance-*` running go from 0 to max and never
//! above; with the backlog gone, back to 0; a restarted autoscaler adopts
//! the running instances instead of launching more.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use facefleet_aws::{connect_with, ec2_fleet, provision, teardown, ProvisionSpec};
use facefleet_pipeline::autoscaler::{self, ScalePolicy};
use facefleet_pipeline::backend::Deployment;
use facefleet_ports::{Fleet, InstanceState};
use tokio_util::sync::CancellationToken;

async fn running_workers(fleet: &dyn Fleet, prefix: &str) -> usize {
    fleet
        .list()
        .await
        .unwrap()
        .iter()
        .filter(|i| i.state == InstanceState::Running && i.name.starts_with(prefix))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn autoscaler_sizes_the_ec2_fleet_and_adopts_after_restart() {
    let clients = common::clients().await;
    let mut spec = ProvisionSpec::new(&common::unique_prefix("autoscale"));
    spec.app_tier_ami = Some("ami-12c6146b".to_string());
    spec.video_buckets = false;
    provision(&clients, &spec).await.expect("provision");
    let names = spec.names.clone();
    let max = 15;
    let fleet = Arc::new(ec2_fleet(&clients, &names.prefix, max, max));
    let (store, queue) = connect_with(&clients);
    let dep = Deployment {
        names: names.clone(),
        store,
        queue: queue.clone(),
        fleet: Some(fleet.clone()),
    };
    let policy = ScalePolicy {
        max_instances: max,
        per_worker: 1,
        scale_in_delay: Duration::from_millis(500),
        poll: Duration::from_millis(250),
    };

    // A sampler records the most instances ever running (and ever alive).
    let most_running = Arc::new(AtomicUsize::new(0));
    let most_active = Arc::new(AtomicUsize::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (fleet, most_running, most_active, sampling) =
            (fleet.clone(), most_running.clone(), most_active.clone(), sampling.clone());
        let worker_prefix = names.worker_prefix.clone();
        tokio::spawn(async move {
            while sampling.load(Ordering::SeqCst) {
                let list = fleet.list().await.unwrap();
                let running = list
                    .iter()
                    .filter(|i| i.state == InstanceState::Running && i.name.starts_with(&worker_prefix))
                    .count();
                let active = list.iter().filter(|i| i.state.is_active()).count();
                most_running.fetch_max(running, Ordering::SeqCst);
                most_active.fetch_max(active, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // A backlog of 30 requests (never consumed: no worker runs on moto).
    for i in 0..30 {
        queue
            .send(&names.req_queue, &format!(r#"{{"request_id":"r{i}","key":"k{i}.jpg"}}"#))
            .await
            .unwrap();
    }
    assert_eq!(running_workers(fleet.as_ref(), &names.worker_prefix).await, 0);
    let start = Instant::now();
    let cancel = CancellationToken::new();
    let first = tokio::spawn(autoscaler::run(dep.clone(), policy.clone(), cancel.clone(), Duration::from_secs(5)));
    facefleet_ports::contract::eventually("max workers running", Duration::from_secs(60), || async {
        (running_workers(fleet.as_ref(), &names.worker_prefix).await == max).then_some(())
    })
    .await;
    eprintln!("scale-out 0 -> {max} running: {:?}", start.elapsed());
    tokio::time::sleep(Duration::from_secs(2)).await; // more ticks at full backlog
    let ids_before: Vec<String> = {
        let mut v: Vec<String> = fleet.list().await.unwrap().into_iter().map(|i| i.id).collect();
        v.sort();
        v
    };
    assert_eq!(ids_before.len(), max, "no instance beyond max: {ids_before:?}");

    // The autoscaler dies (no graceful shutdown); a new one starts with no
    // memory of the first and adopts the fleet.
    first.abort();
    let _ = first.await;
    let fleet2 = Arc::new(ec2_fleet(&clients, &names.prefix, max, max));
    let dep2 = Deployment { fleet: Some(fleet2.clone()), ..dep.clone() };
    let second = tokio::spawn(autoscaler::run(dep2, policy.clone(), cancel.clone(), Duration::from_secs(5)));
    tokio::time::sleep(Duration::from_secs(3)).await; // a dozen ticks at full backlog
    let ids_after: Vec<String> = {
        let mut v: Vec<String> = fleet2.list().await.unwrap().into_iter().map(|i| i.id).collect();
        v.sort();
        v
    };
    assert_eq!(ids_after, ids_before, "the restarted autoscaler launched or lost instances");

    // The backlog goes away: back to 0.
    queue.purge(&names.req_queue).await.unwrap();
    let drained = Instant::now();
    facefleet_ports::contract::eventually("no worker running", Duration::from_secs(60), || async {
        (running_workers(fleet2.as_ref(), &names.worker_prefix).await == 0).then_some(())
    })
    .await;
    let elapsed = drained.elapsed();
    eprintln!(
        "scale-in {max} -> 0: {elapsed:?} after the queue emptied (scale-in delay {:?}, poll {:?})",
        policy.scale_in_delay, policy.poll
    );

    sampling.store(false, Ordering::SeqCst);
    sampler.await.unwrap();
    assert_eq!(most_running.load(Ordering::SeqCst), max, "running went above (or never reached) max");
    assert!(most_active.load(Ordering::SeqCst) <= max, "pending+running above max");

    cancel.cancel();
    second.await.unwrap().unwrap();
    teardown(&clients, &spec, Duration::from_secs(30)).await.unwrap();
}
