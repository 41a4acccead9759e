//! [`ProcessFleet`] behaviour beyond the contract: the instance name
//! reaches the worker, stop is graceful (the job in hand finishes), kill
//! is not, a worker that does not exit after its stop grace is killed,
//! exited workers are reaped.

use std::os::unix::process::CommandExt;
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

/// SIGKILLs the process groups of `pids` when dropped, so a failing test
/// leaves no worker behind that ignores the fleet's SIGTERM.
struct KillOnDrop(Vec<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for &pid in &self.0 {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

#[tokio::test]
async fn a_stopped_worker_that_does_not_exit_is_killed_after_the_grace_period() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    // The worker ignores SIGTERM, says `ready`, then becomes a `sleep`
    // (an ignored signal stays ignored across exec): one process that
    // forks nothing. (A shell loop that forks would not do: dash forks
    // with vfork, and a SIGSTOP to the group that lands between a vfork
    // and its exec stops the child before its exec, leaving the shell in
    // state D, waiting for that exec, never T.)
    let script = "trap '' TERM; echo ready; exec sleep 100000";
    let fleet = ProcessFleet::new(PathBuf::from("/bin/sh"), vec!["-c".into(), script.into()], vec![], dir.path().join("logs"))
        .with_stop_grace(Duration::from_millis(300));
    let deaf = fleet.launch("app-tier-instance-1").await.unwrap();
    let frozen = fleet.launch("app-tier-instance-2").await.unwrap();
    let _cleanup = KillOnDrop(vec![deaf.id.parse().unwrap(), frozen.id.parse().unwrap()]);
    let logs = dir.path().join("logs");
    eventually("both workers to start", HANG_GUARD, || async {
        let ready = ["app-tier-instance-1", "app-tier-instance-2"]
            .iter()
            .all(|n| std::fs::read_to_string(logs.join(format!("{n}.log"))).is_ok_and(|s| s.contains("ready")));
        ready.then_some(())
    })
    .await;
    // The second is frozen, as with `kill -STOP`: a SIGTERM stays pending.
    let frozen_pid: u32 = frozen.id.parse().unwrap();
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(frozen_pid as i32), nix::sys::signal::Signal::SIGSTOP).unwrap();
    eventually("the worker to be stopped", HANG_GUARD, || async {
        match proc_stat(frozen_pid) {
            Some(('T', _)) => Some(()),
            _ if alive(frozen_pid) => None,
            _ => {
                // Gone before the fleet touched it: say how, at once.
                let _ = fleet.list().await;
                let log = std::fs::read_to_string(logs.join("app-tier-instance-2.log")).unwrap_or_default();
                let how = fleet.exited().into_iter().find(|e| e.0 == frozen.id).map(|e| e.2.to_string());
                panic!("the worker ended before it was stopped (exit: {how:?}); its log: {log:?}")
            }
        }
    })
    .await;

    fleet.stop(&deaf.id).await.unwrap();
    fleet.stop(&frozen.id).await.unwrap();
    let listed = fleet.list().await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().all(|i| i.state == InstanceState::Stopping), "{listed:?}");
    // Past the grace period, listing the fleet kills them, which frees
    // their places.
    wait_gone(&fleet, &deaf.id).await;
    wait_gone(&fleet, &frozen.id).await;
    let exited = fleet.exited();
    for id in [&deaf.id, &frozen.id] {
        let status = exited.iter().find(|e| &e.0 == id).expect("reaped").2;
        assert_eq!(status.signal(), Some(nix::sys::signal::Signal::SIGKILL as i32), "worker {id}: {status}");
    }
    assert!(fleet.list().await.unwrap().is_empty());
}

// ---------------------------------------------------------------------
// Workers never outlive their parent unnoticed.

/// State and start time of a process (`/proc/<pid>/stat` fields 3 and 22).
fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.get(stat.rfind(')')? + 2..)?.split(' ');
    let state = fields.next()?.chars().next()?;
    Some((state, fields.nth(18)?.parse().ok()?))
}

/// True while `pid` runs (a zombie has exited: it only waits to be reaped).
fn alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| !matches!(state, 'Z' | 'X' | 'x'))
}

async fn wait_dead(pid: u32, what: &str) {
    eventually(what, HANG_GUARD, || async { (!alive(pid)).then_some(()) }).await
}

fn sigkill(pid: u32) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
}

/// Set (to a folder) when this test binary runs as the parent process of
/// [`workers_die_with_a_killed_parent`].
const PARENT_ENV: &str = "FACEFLEET_TEST_FLEET_PARENT";

/// Not a test of its own: with [`PARENT_ENV`] set, acts as a `facefleet
/// up` that launches a worker (`sleep 1000`), prints its pid, and waits to
/// be killed. Without it, does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helper_fleet_parent() {
    let Ok(dir) = std::env::var(PARENT_ENV) else { return };
    let fleet = ProcessFleet::new(PathBuf::from("/bin/sleep"), vec!["1000".into()], vec![], Path::new(&dir).join("logs"))
        .with_state_dir(Path::new(&dir).join("state"));
    let inst = fleet.launch("app-tier-instance-1").await.unwrap();
    println!("WORKER_PID={}", inst.id);
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    // Killed long before this ends; the bound only keeps a stray parent
    // from living forever.
    tokio::time::sleep(Duration::from_secs(120)).await;
}

#[tokio::test]
async fn workers_die_with_a_killed_parent() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut parent = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "helper_fleet_parent", "--nocapture", "--test-threads=1"])
        .env(PARENT_ENV, dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = parent.stdout.take().unwrap();
    // Read the worker's pid off a thread, so a silent parent cannot hang us.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some((_, pid)) = line.split_once("WORKER_PID=") {
                let _ = tx.send(pid.trim().parse::<u32>().unwrap());
            }
        }
    });
    let worker = match rx.recv_timeout(HANG_GUARD) {
        Ok(pid) => pid,
        Err(e) => {
            let _ = parent.kill();
            panic!("the parent never reported its worker: {e}");
        }
    };
    assert!(alive(worker), "the worker runs");
    let record = dir.path().join("state/app-tier-instance-1.json");
    assert!(record.exists(), "the launch wrote a pid record");
    parent.kill().unwrap(); // SIGKILL: no cleanup code runs in the parent
    parent.wait().unwrap();
    let gone = tokio::time::timeout(HANG_GUARD, wait_dead(worker, "the orphaned worker to die")).await;
    if gone.is_err() {
        sigkill(worker);
        panic!("worker {worker} outlived its SIGKILLed parent");
    }
    // The record stays (the parent could not remove it); a new fleet
    // cleans it up, killing nothing.
    let fleet = ProcessFleet::new(PathBuf::from("/bin/sleep"), vec![], vec![], dir.path().join("logs"))
        .with_state_dir(dir.path().join("state"));
    assert_eq!(fleet.kill_leftovers().await.unwrap(), vec![]);
    assert!(!record.exists(), "stale record removed");
}

fn sleep_fleet(dir: &Path) -> ProcessFleet {
    ProcessFleet::new(PathBuf::from("/bin/sleep"), vec!["1000".into()], vec![], dir.join("logs"))
        .with_state_dir(dir.join("state"))
}

#[tokio::test]
async fn records_follow_the_workers() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = sleep_fleet(dir.path());
    let inst = fleet.launch("app-tier-instance-3").await.unwrap();
    let record = dir.path().join("state/app-tier-instance-3.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    assert_eq!(json["name"], "app-tier-instance-3");
    assert_eq!(json["pid"].as_u64().unwrap().to_string(), inst.id);
    let pid: u32 = inst.id.parse().unwrap();
    assert_eq!(json["start_time"].as_u64(), proc_stat(pid).map(|s| s.1));
    // The fleet's own workers are no leftovers.
    assert_eq!(fleet.kill_leftovers().await.unwrap(), vec![]);
    assert!(alive(pid));
    fleet.kill(&inst.id).await.unwrap();
    wait_gone(&fleet, &inst.id).await;
    assert!(!record.exists(), "a reaped worker's record is removed");
}

#[tokio::test]
async fn kill_leftovers_kills_what_a_dead_fleet_left() {
    let dir = tempfile::tempdir().unwrap();
    // A fleet that "dies" without stopping its workers.
    let old = sleep_fleet(dir.path());
    let a = old.launch("app-tier-instance-1").await.unwrap();
    let b = old.launch("app-tier-instance-2").await.unwrap();
    std::mem::forget(old);
    let (a_pid, b_pid): (u32, u32) = (a.id.parse().unwrap(), b.id.parse().unwrap());
    assert!(alive(a_pid) && alive(b_pid));

    // Pid reuse: b's record now names another process start time, so the
    // process at that pid is not the recorded worker and must be spared.
    let b_record = dir.path().join("state/app-tier-instance-2.json");
    let mut json: serde_json::Value = serde_json::from_slice(&std::fs::read(&b_record).unwrap()).unwrap();
    json["start_time"] = (json["start_time"].as_u64().unwrap() + 1).into();
    std::fs::write(&b_record, serde_json::to_vec(&json).unwrap()).unwrap();

    let new = sleep_fleet(dir.path());
    let killed = new.kill_leftovers().await.unwrap();
    assert_eq!(killed.len(), 1, "{killed:?}");
    assert_eq!(killed[0].name, "app-tier-instance-1");
    assert_eq!(killed[0].pid, a_pid);
    assert!(!alive(a_pid), "kill_leftovers returns once the worker is gone");
    assert!(alive(b_pid), "a process whose start time differs from the record was hit");
    let left: Vec<_> = std::fs::read_dir(dir.path().join("state")).unwrap().collect();
    assert!(left.is_empty(), "records left: {left:?}");
    // Nothing left to kill the second time.
    assert_eq!(new.kill_leftovers().await.unwrap(), vec![]);
    sigkill(b_pid);
    wait_dead(b_pid, "the spared worker to die").await;
}

#[tokio::test]
async fn kill_leftovers_spares_the_workers_of_a_live_fleet() {
    let dir = tempfile::tempdir().unwrap();
    // A record whose launching process is alive and is not this one: a
    // `sleep` stands in for another running fleet.
    let mut other_parent = std::process::Command::new("/bin/sleep").arg("1000").spawn().unwrap();
    let mut worker = std::process::Command::new("/bin/sleep").arg("1000").process_group(0).spawn().unwrap();
    let (parent_pid, worker_pid) = (other_parent.id(), worker.id());
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let record = serde_json::json!({
        "name": "app-tier-instance-5",
        "pid": worker_pid,
        "start_time": proc_stat(worker_pid).unwrap().1,
        "parent_pid": parent_pid,
        "parent_start_time": proc_stat(parent_pid).unwrap().1,
    });
    std::fs::write(state.join("app-tier-instance-5.json"), record.to_string()).unwrap();
    let fleet = sleep_fleet(dir.path());
    assert_eq!(fleet.kill_leftovers().await.unwrap(), vec![]);
    assert!(alive(worker_pid), "the worker of a live fleet was killed");
    assert!(state.join("app-tier-instance-5.json").exists());
    // Once that fleet is dead, its worker is a leftover.
    other_parent.kill().unwrap();
    other_parent.wait().unwrap();
    let killed = fleet.kill_leftovers().await.unwrap();
    assert_eq!(killed.iter().map(|l| l.pid).collect::<Vec<_>>(), vec![worker_pid]);
    worker.wait().unwrap();
}
