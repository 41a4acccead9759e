//! [`ProcessFleet`] behaviour beyond the contract: the instance name
//! reaches the worker, stop is graceful (the job in hand finishes), kill
//! is not, exited workers are reaped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use facefleet_embedded::ProcessFleet;
use facefleet_ports::contract::{eventually, HANG_GUARD};
use facefleet_ports::{Fleet, InstanceState, PortError};

/// A worker that writes its name to its log, then "works" until SIGTERM,
/// after which it finishes its job (0.5 s) and records `finished`.
fn graceful_fleet(dir: &Path) -> ProcessFleet {
    let script = r#"
        echo "started as $FACEFLEET_INSTANCE_NAME with $EXTRA"
        trap 'sleep 0.5; echo finished > "$MARKERS/$FACEFLEET_INSTANCE_NAME"; exit 0' TERM
        while :; do sleep 0.1; done
    "#;
    ProcessFleet::new(
        PathBuf::from("/bin/sh"),
        vec!["-c".into(), script.into()],
        vec![("EXTRA".into(), "extra-env".into()), ("MARKERS".into(), dir.display().to_string())],
        dir.join("logs"),
    )
}

async fn wait_gone(fleet: &ProcessFleet, id: &str) {
    eventually("worker to exit", HANG_GUARD, || async {
        (!fleet.list().await.unwrap().iter().any(|i| i.id == id)).then_some(())
    })
    .await
}

#[tokio::test]
async fn name_and_environment_reach_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = graceful_fleet(dir.path());
    let inst = fleet.launch("app-tier-instance-1").await.unwrap();
    let log = dir.path().join("logs/app-tier-instance-1.log");
    let line = eventually("the worker to log its start", HANG_GUARD, || async {
        std::fs::read_to_string(&log).ok().filter(|s| s.contains('\n'))
    })
    .await;
    assert_eq!(line.trim(), "started as app-tier-instance-1 with extra-env");
    fleet.stop(&inst.id).await.unwrap();
    wait_gone(&fleet, &inst.id).await;
}

#[tokio::test]
async fn stop_lets_the_worker_finish_and_kill_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = graceful_fleet(dir.path());
    let a = fleet.launch("app-tier-instance-1").await.unwrap();
    let b = fleet.launch("app-tier-instance-2").await.unwrap();
    // Let both shells install their trap.
    let logs = dir.path().join("logs");
    eventually("both workers to start", HANG_GUARD, || async {
        let started = ["app-tier-instance-1", "app-tier-instance-2"]
            .iter()
            .all(|n| std::fs::read_to_string(logs.join(format!("{n}.log"))).is_ok_and(|s| s.contains('\n')));
        started.then_some(())
    })
    .await;
    fleet.stop(&a.id).await.unwrap();
    fleet.kill(&b.id).await.unwrap();
    let listed = fleet.list().await.unwrap();
    for i in &listed {
        assert_eq!(i.state, InstanceState::Stopping, "{i:?}");
    }
    wait_gone(&fleet, &a.id).await;
    wait_gone(&fleet, &b.id).await;
    let marker_a = std::fs::read_to_string(dir.path().join("app-tier-instance-1")).expect("stopped worker finished its job");
    assert_eq!(marker_a.trim(), "finished");
    assert!(!dir.path().join("app-tier-instance-2").exists(), "killed worker ran its handler");
    let exited = fleet.exited();
    let status_a = exited.iter().find(|e| e.0 == a.id).expect("a reaped").2;
    let status_b = exited.iter().find(|e| e.0 == b.id).expect("b reaped").2;
    assert!(status_a.success(), "{status_a}");
    assert!(!status_b.success(), "{status_b}");
    // Stopping an already reaped worker is fine.
    fleet.stop(&a.id).await.unwrap();
}

#[tokio::test]
async fn workers_that_exit_by_themselves_are_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = ProcessFleet::new(PathBuf::from("/bin/sh"), vec!["-c".into(), "exit 3".into()], vec![], dir.path());
    let inst = fleet.launch("app-tier-instance-9").await.unwrap();
    wait_gone(&fleet, &inst.id).await;
    let exited = fleet.exited();
    assert_eq!(exited.len(), 1);
    assert_eq!(exited[0].2.code(), Some(3));
}

#[tokio::test]
async fn bad_launches_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = ProcessFleet::new(PathBuf::from("/nonexistent/app-tier"), vec![], vec![], dir.path());
    assert!(matches!(fleet.launch("app-tier-instance-1").await, Err(PortError::Other(_))));
    assert!(matches!(fleet.launch("../evil").await, Err(PortError::InvalidArgument(_))));
    assert!(fleet.list().await.unwrap().is_empty());
    assert!(matches!(fleet.kill("12345678").await, Err(PortError::NoSuchInstance(_))));
}

#[tokio::test]
async fn shutdown_stops_everything() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = graceful_fleet(dir.path());
    for n in 1..=3 {
        fleet.launch(&format!("app-tier-instance-{n}")).await.unwrap();
    }
    fleet.shutdown(Duration::from_secs(30)).await;
    assert!(fleet.list().await.unwrap().is_empty());
    assert_eq!(fleet.exited().len(), 3);
}

#[tokio::test]
async fn workers_start_with_the_configured_niceness() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = graceful_fleet(dir.path()).with_niceness(7);
    let inst = fleet.launch("app-tier-instance-1").await.unwrap();
    // Field 19 of /proc/<pid>/stat is the nice value (the 17th after `(comm)`).
    let nice_of = |stat: &str| -> Option<i32> { stat[stat.rfind(')')? + 2..].split(' ').nth(16)?.parse().ok() };
    let nice = eventually("the worker's nice value", HANG_GUARD, || async {
        nice_of(&std::fs::read_to_string(format!("/proc/{}/stat", inst.id)).ok()?)
    })
    .await;
    let own = nice_of(&std::fs::read_to_string("/proc/self/stat").unwrap()).unwrap();
    assert_eq!(nice, (own + 7).min(19), "worker nice value");
    fleet.stop(&inst.id).await.unwrap();
    wait_gone(&fleet, &inst.id).await;
}
