//! Workers forked from a template process ([`ProcessFleet::with_template`]).
//!
//! This test binary has its own `main` (`harness = false`): started with
//! the template variable set, it *is* the worker program's template (one
//! thread, as a real one); otherwise it runs the tests below in turn.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use facefleet_embedded::worker_template::{self, TEMPLATE_ENV};
use facefleet_embedded::ProcessFleet;
use facefleet_ports::contract::{eventually, HANG_GUARD};
use facefleet_ports::Fleet;

/// The test folder, passed to the template in its environment.
const DIR_ENV: &str = "FACEFLEET_TEST_TEMPLATE_DIR";

/// The template: records its start-up work in `<dir>/prepared`, then forks
/// workers that log their name, their parent and `$EXTRA`, wait for
/// SIGTERM, then finish (`<dir>/<name>.finished`).
fn template_main() -> ! {
    let dir = PathBuf::from(std::env::var(DIR_ENV).expect("test folder"));
    append(&dir.join("prepared"), &format!("{}\n", std::process::id()));
    let served = worker_template::serve(|name| {
        // SAFETY: plain signal-mask calls in a single-threaded process.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            println!(
                "started as {name} ({}) from template {} with {}",
                std::env::var("FACEFLEET_INSTANCE_NAME").unwrap_or_default(),
                libc::getppid(),
                std::env::var("EXTRA").unwrap_or_default()
            );
            let mut signal = 0;
            libc::sigwait(&set, &mut signal);
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        append(&dir.join(format!("{name}.finished")), "finished\n");
        0
    });
    eprintln!("template ended: {served:?}");
    std::process::exit(0)
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect()
}

fn template_fleet(dir: &Path) -> ProcessFleet {
    ProcessFleet::new(
        std::env::current_exe().unwrap(),
        vec![],
        vec![("EXTRA".into(), "extra-env".into()), (DIR_ENV.into(), dir.display().to_string())],
        dir.join("logs"),
    )
    .with_state_dir(dir.join("state"))
    .with_template(true)
}

async fn log_line(dir: &Path, name: &str) -> String {
    let log = dir.join(format!("logs/{name}.log"));
    eventually("the worker to log its start", HANG_GUARD, || async {
        std::fs::read_to_string(&log).ok().filter(|s| s.contains('\n'))
    })
    .await
    .trim()
    .to_string()
}

async fn wait_gone(fleet: &ProcessFleet, id: &str) {
    eventually("worker to exit", HANG_GUARD, || async {
        (!fleet.list().await.unwrap().iter().any(|i| i.id == id)).then_some(())
    })
    .await
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}

async fn workers_are_forked_from_one_template() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = template_fleet(dir.path());
    fleet.start_template().await.unwrap();
    let mut ids = Vec::new();
    for i in 1..=3 {
        ids.push(fleet.launch(&format!("app-tier-instance-{i}")).await.unwrap().id);
    }
    let prepared = lines(&dir.path().join("prepared"));
    assert_eq!(prepared.len(), 1, "the start-up work ran once: {prepared:?}");
    let template = &prepared[0];
    for (i, id) in ids.iter().enumerate() {
        let name = format!("app-tier-instance-{}", i + 1);
        assert_eq!(log_line(dir.path(), &name).await, format!("started as {name} ({name}) from template {template} with extra-env"));
        assert_ne!(id, template, "a worker is a process of its own");
        assert!(dir.path().join(format!("state/{name}.json")).exists(), "a forked worker has a pid record");
        let comm = |pid: &str| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap().trim_end().to_string();
        assert_eq!(comm(template), worker_template::TEMPLATE_PROCESS_NAME, "the template is told apart in `ps`");
        assert_eq!(comm(id), comm(&std::process::id().to_string()), "a worker has the program's name");
    }
    fleet.shutdown(HANG_GUARD).await;
    for i in 1..=3 {
        assert!(dir.path().join(format!("app-tier-instance-{i}.finished")).exists(), "shutdown is graceful");
    }
    assert!(!alive(template.parse().unwrap()), "shutdown ends the template");
}

async fn stop_is_graceful_and_kill_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = template_fleet(dir.path());
    let a = fleet.launch("app-tier-instance-1").await.unwrap();
    let b = fleet.launch("app-tier-instance-2").await.unwrap();
    log_line(dir.path(), "app-tier-instance-1").await;
    log_line(dir.path(), "app-tier-instance-2").await;
    fleet.stop(&a.id).await.unwrap();
    fleet.kill(&b.id).await.unwrap();
    wait_gone(&fleet, &a.id).await;
    wait_gone(&fleet, &b.id).await;
    assert!(dir.path().join("app-tier-instance-1.finished").exists(), "a stopped worker finishes its job");
    assert!(!dir.path().join("app-tier-instance-2.finished").exists(), "a killed one does not");
    use std::os::unix::process::ExitStatusExt;
    let exited = fleet.exited();
    let status = |id: &str| exited.iter().find(|e| e.0 == id).map(|e| e.2).expect("reaped");
    assert_eq!(status(&a.id).code(), Some(0), "the template reports the exit status");
    assert_eq!(status(&b.id).signal(), Some(libc::SIGKILL));
    assert!(!dir.path().join("state/app-tier-instance-1.json").exists(), "records go with the workers");
    fleet.shutdown(HANG_GUARD).await;
}

async fn a_dead_template_is_replaced_and_its_workers_stop() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = template_fleet(dir.path());
    let a = fleet.launch("app-tier-instance-1").await.unwrap();
    log_line(dir.path(), "app-tier-instance-1").await;
    let first: u32 = lines(&dir.path().join("prepared"))[0].parse().unwrap();
    // SAFETY: signals the template process this test started.
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    // Its worker gets SIGTERM, finishes its job and is reaped.
    wait_gone(&fleet, &a.id).await;
    assert!(dir.path().join("app-tier-instance-1.finished").exists(), "the orphaned worker finished its job");
    let b = fleet.launch("app-tier-instance-2").await.unwrap();
    let line = log_line(dir.path(), "app-tier-instance-2").await;
    let prepared = lines(&dir.path().join("prepared"));
    assert_eq!(prepared.len(), 2, "a new template: {prepared:?}");
    assert!(line.contains(&format!("from template {}", prepared[1])), "{line}");
    fleet.stop(&b.id).await.unwrap();
    wait_gone(&fleet, &b.id).await;
    fleet.shutdown(HANG_GUARD).await;
}

async fn a_program_that_serves_no_template_still_gets_workers() {
    let dir = tempfile::tempdir().unwrap();
    // As a template it exits at once; as a worker it runs until stopped.
    let script = format!(
        r#"if [ -n "${TEMPLATE_ENV}" ]; then echo x >> "$0.attempts"; exit 3; fi
        echo "started as $FACEFLEET_INSTANCE_NAME"; exec sleep 1000"#
    );
    let fleet = ProcessFleet::new(
        PathBuf::from("/bin/sh"),
        vec!["-c".into(), script, dir.path().join("template").display().to_string()],
        vec![],
        dir.path().join("logs"),
    )
    .with_template(true);
    let mut ids = Vec::new();
    for i in 1..=4 {
        let name = format!("app-tier-instance-{i}");
        ids.push(fleet.launch(&name).await.unwrap().id);
        assert_eq!(log_line(dir.path(), &name).await, format!("started as {name}"));
    }
    let attempts = lines(&dir.path().join("template.attempts"));
    assert_eq!(attempts.len(), 3, "three failed templates, then none is tried");
    for id in &ids {
        assert!(alive(id.parse().unwrap()));
    }
    fleet.shutdown(HANG_GUARD).await;
}

type Test = fn() -> Pin<Box<dyn Future<Output = ()>>>;

fn main() {
    if std::env::var_os(TEMPLATE_ENV).is_some() {
        template_main();
    }
    let tests: [(&str, Test); 4] = [
        ("workers_are_forked_from_one_template", || Box::pin(workers_are_forked_from_one_template())),
        ("stop_is_graceful_and_kill_is_not", || Box::pin(stop_is_graceful_and_kill_is_not())),
        ("a_dead_template_is_replaced_and_its_workers_stop", || Box::pin(a_dead_template_is_replaced_and_its_workers_stop())),
        ("a_program_that_serves_no_template_still_gets_workers", || Box::pin(a_program_that_serves_no_template_still_gets_workers())),
    ];
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let mut failed = Vec::new();
    for (name, test) in tests {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let outcome = std::panic::catch_unwind(|| runtime.block_on(test()));
        println!("test {name} ... {}", if outcome.is_ok() { "ok" } else { "FAILED" });
        if outcome.is_err() {
            failed.push(name);
        }
    }
    if !failed.is_empty() {
        eprintln!("failed: {failed:?}");
        std::process::exit(1);
    }
}
