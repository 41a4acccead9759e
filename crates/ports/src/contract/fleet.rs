//! Fleet contract cases. Workers are named `app-tier-instance-<n>` with a
//! random large `n`, so cases may share one backend; every case stops the
//! instances it launched.

use crate::{Fleet, Instance, InstanceState, Names, PortError};

use super::{eventually, unique_number, HANG_GUARD};

/// Names of every case, in the order [`run_all`] runs them.
pub const CASES: &[&str] = &[
    "launch_lists_named_instance",
    "launches_get_distinct_ids",
    "stop_makes_instance_inactive",
    "stop_unknown_instance_is_no_such_instance",
];

/// Runs every case in sequence.
pub async fn run_all(fleet: &dyn Fleet, ns: &str) {
    launch_lists_named_instance(fleet, ns).await;
    launches_get_distinct_ids(fleet, ns).await;
    stop_makes_instance_inactive(fleet, ns).await;
    stop_unknown_instance_is_no_such_instance(fleet, ns).await;
}

fn worker_name() -> String {
    Names::default().worker((unique_number() % 1_000_000_000) as usize + 1000)
}

async fn listed(fleet: &dyn Fleet, id: &str) -> Option<Instance> {
    fleet.list().await.unwrap().into_iter().find(|i| i.id == id)
}

async fn launch(fleet: &dyn Fleet, name: &str) -> Instance {
    let inst = fleet.launch(name).await.unwrap_or_else(|e| panic!("launch({name}) failed: {e}"));
    assert_eq!(inst.name, name, "launched instance's name");
    assert!(!inst.id.is_empty(), "empty instance id");
    assert!(inst.state.is_active(), "fresh instance is {:?}", inst.state);
    inst
}

async fn wait_inactive(fleet: &dyn Fleet, id: &str) {
    eventually(&format!("instance {id} to stop"), HANG_GUARD, || async {
        match listed(fleet, id).await {
            None => Some(()),
            Some(i) => (!i.state.is_active()).then_some(()),
        }
    })
    .await
}

/// A launched worker carries its name, is active and is listed.
pub async fn launch_lists_named_instance(fleet: &dyn Fleet, _ns: &str) {
    let name = worker_name();
    let inst = launch(fleet, &name).await;
    let seen = listed(fleet, &inst.id).await.expect("launched instance is listed");
    assert_eq!(seen.name, name);
    assert!(seen.state.is_active(), "listed state {:?}", seen.state);
    // It becomes (or already is) Running.
    eventually("instance to be running", HANG_GUARD, || async {
        let i = listed(fleet, &inst.id).await.expect("instance vanished while starting");
        assert!(i.state.is_active(), "instance left before running: {:?}", i.state);
        (i.state == InstanceState::Running).then_some(())
    })
    .await;
    fleet.stop(&inst.id).await.unwrap();
    wait_inactive(fleet, &inst.id).await;
}

/// Several launches give distinct ids, all listed with their own names.
pub async fn launches_get_distinct_ids(fleet: &dyn Fleet, _ns: &str) {
    let mut launched = Vec::new();
    for _ in 0..3 {
        launched.push(launch(fleet, &worker_name()).await);
    }
    let list = fleet.list().await.unwrap();
    for inst in &launched {
        let seen: Vec<&Instance> = list.iter().filter(|i| i.id == inst.id).collect();
        assert_eq!(seen.len(), 1, "instance {} listed {} times", inst.id, seen.len());
        assert_eq!(seen[0].name, inst.name);
    }
    let mut ids: Vec<&str> = launched.iter().map(|i| i.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "ids not distinct: {launched:?}");
    for inst in &launched {
        fleet.stop(&inst.id).await.unwrap();
    }
    for inst in &launched {
        wait_inactive(fleet, &inst.id).await;
    }
}

/// Stopping an instance makes it inactive (stopping, stopped, terminated or
/// gone from the list); other instances keep running.
pub async fn stop_makes_instance_inactive(fleet: &dyn Fleet, _ns: &str) {
    let victim = launch(fleet, &worker_name()).await;
    let bystander = launch(fleet, &worker_name()).await;
    fleet.stop(&victim.id).await.unwrap();
    wait_inactive(fleet, &victim.id).await;
    let other = listed(fleet, &bystander.id).await.expect("bystander still listed");
    assert!(other.state.is_active(), "bystander is {:?}", other.state);
    fleet.stop(&bystander.id).await.unwrap();
    wait_inactive(fleet, &bystander.id).await;
}

/// Stopping an id the fleet never had is `NoSuchInstance`.
pub async fn stop_unknown_instance_is_no_such_instance(fleet: &dyn Fleet, _ns: &str) {
    match fleet.stop("i-0123456789abcdef0").await {
        Err(PortError::NoSuchInstance(_)) => {}
        other => panic!("stop of an unknown id: expected NoSuchInstance, got {other:?}"),
    }
}
