//! [`ProcessFleet`]: app-tier workers as local child processes.
//!
//! Each launch spawns the worker program in its own process group with
//! `FACEFLEET_INSTANCE_NAME=<name>` and its output appended to
//! `<log-dir>/<name>.log`. The instance id is the process id. `stop` sends
//! SIGTERM (the worker finishes its job in hand, then exits); a worker
//! still alive [`DEFAULT_STOP_GRACE`] later (frozen, stopped with SIGSTOP,
//! or ignoring SIGTERM) gets SIGKILL, so that it frees its place in the
//! fleet ([`ProcessFleet::with_stop_grace`] changes the period). `kill`
//! sends SIGKILL at once (fault injection). Exited children are reaped, and
//! overdue ones killed, by `list`.
//!
//! With [`ProcessFleet::with_template`], a launch instead asks a template
//! process (one more run of the worker program, which has done its
//! start-up work) to fork the worker: see [`crate::worker_template`]. The
//! worker is then the template's child; the template reports its exit
//! status, and everything below holds for it as well. Because the template,
//! not this process, reaps such a worker, its pid may name another process
//! by the time the fleet signals it: the fleet signals a forked worker only
//! while the process at its pid has the start time recorded at launch.
//!
//! # Workers never outlive their parent unnoticed
//!
//! Two mechanisms, for when the parent (`facefleet up`) dies without
//! stopping its workers (`kill -9`, a crash, the OOM killer):
//!
//! - **Parent-death signal (Linux).** Each worker is started with
//!   `prctl(PR_SET_PDEATHSIG, SIGTERM)`, so the kernel sends it SIGTERM when
//!   its parent goes; a SIGTERMed worker finishes its job in hand and exits.
//!   If the parent died between `fork` and that call, the child notices
//!   (`getppid()` no longer names the parent) and does not start. Caveat:
//!   the kernel sends the signal when the *thread* that forked the child
//!   exits, not only the process. So the fleet forks every worker from one
//!   dedicated thread of its own that lives exactly as long as the fleet
//!   (never from tokio's threads, whose lifetime tokio decides: a blocking
//!   thread, or a worker thread after `block_in_place`, may exit while the
//!   runtime lives on). Dropping the fleet ends that thread, which SIGTERMs
//!   the workers just as [`Drop`] does.
//! - **Pid records.** With [`ProcessFleet::with_state_dir`], each launch
//!   writes `<state-dir>/<name>.json` (pid, process start time, name, and
//!   the launching process); reaping a worker removes its record. A fleet
//!   starting after a crash calls [`ProcessFleet::kill_leftovers`], which
//!   SIGKILLs the workers recorded by a dead fleet that are still running
//!   (checking the start time, so a recycled pid is never hit). Then the
//!   new fleet can never run more workers than it plans.

use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use facefleet_ports::{Fleet, Instance, InstanceState, PortError, Result};
use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::oneshot;

use crate::worker_template::TEMPLATE_ENV;

/// Environment variable carrying the instance name to the worker.
pub const INSTANCE_NAME_ENV: &str = "FACEFLEET_INSTANCE_NAME";

/// A fleet of worker processes started from one program.
#[derive(Debug)]
pub struct ProcessFleet {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log_dir: PathBuf,
    niceness: Option<i32>,
    /// Where pid records go (see the module documentation).
    state_dir: Option<PathBuf>,
    workers: Mutex<HashMap<String, Worker>>,
    /// Exit statuses of reaped workers, by id (most recent last).
    exited: Mutex<Vec<(String, String, ExitStatus)>>,
    /// The fleet's spawning thread (started by the first launch); it ends
    /// when the fleet drops this sender.
    spawner: Mutex<Option<mpsc::Sender<SpawnJob>>>,
    /// Whether workers are forked from a template process (see
    /// [`crate::worker_template`]).
    use_template: bool,
    /// The running template, if any.
    template: tokio::sync::Mutex<Option<Template>>,
    /// Launches the template failed; after [`MAX_TEMPLATE_FAILURES`] the
    /// fleet starts every worker as a new process.
    template_failures: AtomicU32,
    /// Exit statuses the templates reported, by pid.
    forked_exits: Arc<Mutex<HashMap<u32, ExitStatus>>>,
    /// How long a stopped worker may take to exit before it gets SIGKILL.
    stop_grace: Duration,
}

/// How long a worker told to stop (SIGTERM) may take to exit before it
/// gets SIGKILL: as long as systemd gives a worker on EC2
/// (`TimeoutStopSec=90`), and more than the 60 s for which a worker renews
/// the lease of its batch by default, so a healthy worker always finishes
/// its batch (a few seconds at most) and one killed has already let its
/// requests go to other workers.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(90);

/// Failed template launches after which a fleet stops using templates.
const MAX_TEMPLATE_FAILURES: u32 = 3;

/// How long a launch waits for the template's answer (the first one waits
/// for the template's start-up work).
const TEMPLATE_ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Answers awaited from a template, by request number.
type PendingLaunches = Arc<Mutex<HashMap<u64, oneshot::Sender<std::result::Result<u32, String>>>>>;

/// A running template process and the pipe of its requests.
#[derive(Debug)]
struct Template {
    child: Child,
    requests: ChildStdin,
    next_seq: u64,
    pending: PendingLaunches,
}

/// Work for the spawning thread.
type SpawnJob = Box<dyn FnOnce() + Send>;

/// A worker of a previous fleet that [`ProcessFleet::kill_leftovers`] killed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// Its instance name.
    pub name: String,
    /// Its process id.
    pub pid: u32,
}

impl std::fmt::Display for Leftover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (pid {})", self.name, self.pid)
    }
}

/// The pid record of one launched worker, `<state-dir>/<name>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    name: String,
    pid: u32,
    /// Start time of the worker process: field 22 of `/proc/<pid>/stat`
    /// (clock ticks since boot). A recycled pid has another one.
    start_time: u64,
    /// The process that launched the worker, and its start time.
    parent_pid: u32,
    parent_start_time: u64,
}

/// What the fleet reads of a process in `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy)]
struct ProcStat {
    /// Field 3: `R`, `S`, `Z` (zombie)...
    state: char,
    /// Field 4: the parent's pid.
    parent: u32,
    /// Field 22: clock ticks since boot at its start.
    start_time: u64,
}

/// State, parent and start time of a process; `None` if there is no such
/// process (or no `/proc`).
impl ProcStat {
    /// Neither a zombie nor dead.
    fn is_alive(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`: comm may hold spaces and parentheses,
    // so split after the last `)`. Field 3 (state) comes first, field 22
    // (starttime) 19 fields later.
    let mut fields = stat.get(stat.rfind(')')? + 2..)?.split(' ');
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    let start_time = fields.nth(17)?.parse().ok()?;
    Some(ProcStat { state, parent, start_time })
}

/// True if process `pid` exists, is not a zombie, and started at
/// `start_time` (so it is the very process recorded, not a recycled pid).
fn is_running(pid: u32, start_time: u64) -> bool {
    proc_stat(pid).is_some_and(|p| p.start_time == start_time && p.is_alive())
}

/// This process's id and start time.
fn own_identity() -> (u32, u64) {
    let pid = std::process::id();
    (pid, proc_stat(pid).map_or(0, |s| s.start_time))
}

/// SIGKILLs the process group led by `pid` (a worker leads its own), or
/// the process alone if it leads none.
fn kill_group(pid: u32) -> std::result::Result<(), Errno> {
    match killpg(Pid::from_raw(pid as i32), Signal::SIGKILL) {
        Err(Errno::ESRCH) => match kill(Pid::from_raw(pid as i32), Signal::SIGKILL) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(e) => Err(e),
        },
        other => other,
    }
}

/// Starts the thread that forks the workers (see the module documentation).
fn start_spawner() -> io::Result<mpsc::Sender<SpawnJob>> {
    let (tx, rx) = mpsc::channel::<SpawnJob>();
    std::thread::Builder::new().name("facefleet-spawner".into()).spawn(move || {
        // Ends when the fleet drops the sender.
        while let Ok(job) = rx.recv() {
            // Never let a panic end the thread: its exit would SIGTERM
            // every worker it forked.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        }
    })?;
    Ok(tx)
}

/// A failure the fleet reports without its filesystem path (errors may
/// reach HTTP clients): the path goes to the log.
fn path_err(what: &str, path: &Path, e: impl std::fmt::Display) -> PortError {
    tracing::error!(path = %path.display(), error = %e, "process fleet: cannot {what}");
    PortError::Other(format!("cannot {what}: {e}"))
}

#[derive(Debug)]
struct Worker {
    name: String,
    process: WorkerProcess,
    state: InstanceState,
    /// When it gets SIGKILL if it has not exited by then: set by `stop`,
    /// cleared once the SIGKILL is sent.
    kill_at: Option<std::time::Instant>,
    /// A forked worker: when it was first seen gone with no exit report
    /// (its live template's report may still be on the way).
    vanished_at: Option<std::time::Instant>,
}

/// How long a forked worker that is gone may wait for its live template's
/// exit report before its status is recorded as unknown: the template
/// reaps the worker first and reports it a moment later.
const EXIT_REPORT_WAIT: Duration = Duration::from_secs(2);

/// How a worker was started.
#[derive(Debug)]
enum WorkerProcess {
    /// As a new process of the worker program, a child of this one.
    Spawned(Child),
    /// Forked by the template (a child of the template), with its start
    /// time and the template's pid.
    Forked { pid: u32, start_time: u64, template: u32 },
}

impl WorkerProcess {
    fn pid(&self) -> Option<u32> {
        match self {
            WorkerProcess::Spawned(child) => child.id(),
            WorkerProcess::Forked { pid, .. } => Some(*pid),
        }
    }

    /// The pid to signal, if it still names this worker. A spawned worker
    /// is this process's child, so its pid stays its own until the fleet
    /// reaps it; a forked one is reaped by its template, after which the
    /// pid may name another process: it is checked against its start time.
    fn live_pid(&self) -> Option<u32> {
        match self {
            WorkerProcess::Spawned(child) => child.id(),
            WorkerProcess::Forked { pid, start_time, .. } => is_running(*pid, *start_time).then_some(*pid),
        }
    }
}

impl ProcessFleet {
    /// A fleet that runs `program args...` with the extra environment `env`,
    /// logging each worker to `<log_dir>/<name>.log` (created on launch).
    pub fn new(program: PathBuf, args: Vec<String>, env: Vec<(String, String)>, log_dir: impl AsRef<Path>) -> Self {
        Self {
            program,
            args,
            env,
            log_dir: log_dir.as_ref().to_path_buf(),
            niceness: None,
            state_dir: None,
            workers: Mutex::new(HashMap::new()),
            exited: Mutex::new(Vec::new()),
            spawner: Mutex::new(None),
            use_template: false,
            template: tokio::sync::Mutex::new(None),
            template_failures: AtomicU32::new(0),
            forked_exits: Arc::default(),
            stop_grace: DEFAULT_STOP_GRACE,
        }
    }

    /// Gives a worker told to stop `grace` to exit before it gets SIGKILL
    /// (default [`DEFAULT_STOP_GRACE`]). The deadline is checked whenever
    /// the fleet is listed, as the autoscaler does every tick.
    pub fn with_stop_grace(mut self, grace: Duration) -> Self {
        self.stop_grace = grace;
        self
    }

    /// Forks the workers from a template process instead of starting each
    /// as a new process (see [`crate::worker_template`]): the worker
    /// program must call [`crate::worker_template::serve`] when started
    /// with [`TEMPLATE_ENV`] set. A launch the template cannot serve starts
    /// a new process instead; after three such launches the fleet stops
    /// using templates.
    pub fn with_template(mut self, enabled: bool) -> Self {
        self.use_template = enabled;
        self
    }

    /// Starts the template now, so that the first launch finds its work
    /// done (with [`ProcessFleet::with_template`]; otherwise does nothing).
    pub async fn start_template(&self) -> Result<()> {
        if !self.use_template {
            return Ok(());
        }
        let mut template = self.template.lock().await;
        if template.is_none() {
            *template = Some(self.spawn_template().await?);
        }
        Ok(())
    }

    /// Keeps a pid record of each running worker in `dir` (created on
    /// launch), `<dir>/<name>.json`, so that a later fleet can kill the
    /// workers this one leaves behind if its process dies: see
    /// [`ProcessFleet::kill_leftovers`]. One fleet at a time per folder.
    pub fn with_state_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.state_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Kills the workers that a previous fleet with the same state folder
    /// left running (its process died without stopping them), and returns
    /// them. Call it before the first launch.
    ///
    /// For each record in the state folder: a worker of this fleet, or one
    /// whose launching process is another process still running (another
    /// live fleet), is left alone; otherwise, if the recorded process still
    /// runs with the recorded start time, its process group gets SIGKILL
    /// and this waits until it has exited. A process whose start time
    /// differs (the pid was recycled) is never signalled. The records are
    /// removed. Errors: the folder cannot be read, a process cannot be
    /// signalled or does not exit within a minute.
    pub async fn kill_leftovers(&self) -> Result<Vec<Leftover>> {
        let Some(dir) = &self.state_dir else { return Ok(Vec::new()) };
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(path_err("read the fleet's state folder", dir, e)),
        };
        let ours: HashSet<u32> = self.lock().keys().filter_map(|id| id.parse().ok()).collect();
        let me = own_identity();
        let mut dying = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(file) = entry.file_name().to_str().map(str::to_string) else { continue };
            if file.starts_with('.') && file.ends_with(".tmp") {
                let _ = fs::remove_file(&path); // a record being written when a fleet died
                continue;
            }
            if file.starts_with('.') || !file.ends_with(".json") {
                continue;
            }
            let read = fs::read(&path).map_err(|e| e.to_string());
            let record: Record = match read.and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string())) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "removing an unreadable worker record");
                    let _ = fs::remove_file(&path);
                    continue;
                }
            };
            if ours.contains(&record.pid) {
                continue;
            }
            if (record.parent_pid, record.parent_start_time) != me && is_running(record.parent_pid, record.parent_start_time) {
                tracing::warn!(
                    instance = %record.name,
                    pid = record.pid,
                    parent = record.parent_pid,
                    "worker record of another running fleet in this state folder: left alone"
                );
                continue;
            }
            if is_running(record.pid, record.start_time) {
                kill_group(record.pid).map_err(|e| {
                    PortError::Other(format!("cannot kill worker {} (pid {}) left by a previous fleet: {e}", record.name, record.pid))
                })?;
                tracing::warn!(instance = %record.name, pid = record.pid, "killed a worker left by a previous fleet");
                dying.push((record, path));
            } else {
                let _ = fs::remove_file(&path);
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut killed = Vec::new();
        for (record, path) in dying {
            while is_running(record.pid, record.start_time) {
                if tokio::time::Instant::now() > deadline {
                    return Err(PortError::Unavailable(format!(
                        "worker {} (pid {}) left by a previous fleet did not exit after SIGKILL",
                        record.name, record.pid
                    )));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = fs::remove_file(&path);
            killed.push(Leftover { name: record.name, pid: record.pid });
        }
        Ok(killed)
    }

    /// Starts workers `niceness` steps nicer than this process (Unix `nice`,
    /// capped at 19; nicer processes yield the CPU to the others).
    /// `facefleet up` uses it so that a machine full of busy workers still
    /// gives the web tier the CPU it needs to take uploads and hand answers
    /// back.
    pub fn with_niceness(mut self, niceness: i32) -> Self {
        self.niceness = Some(niceness.clamp(0, 19));
        self
    }

    /// Kills a worker at once with SIGKILL (its whole process group), for
    /// fault-injection tests. Its received messages are redelivered when
    /// their visibility timeout ends.
    pub async fn kill(&self, id: &str) -> Result<()> {
        self.signal(id, Signal::SIGKILL, InstanceState::Stopping)
    }

    /// Exit statuses of the workers reaped so far: `(id, name, status)`.
    pub fn exited(&self) -> Vec<(String, String, ExitStatus)> {
        self.reap();
        self.exited.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stops every worker: SIGTERM, then SIGKILL for those still running
    /// after `grace`. Returns once all are reaped.
    pub async fn shutdown(&self, grace: Duration) {
        let ids: Vec<String> = self.lock().keys().cloned().collect();
        for id in &ids {
            let _ = self.signal(id, Signal::SIGTERM, InstanceState::Stopping);
        }
        let deadline = tokio::time::Instant::now() + grace;
        while !self.live_ids().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for id in self.live_ids() {
            let _ = self.signal(&id, Signal::SIGKILL, InstanceState::Stopping);
        }
        while !self.live_ids().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(mut template) = self.template.lock().await.take() {
            // Closing its requests ends it.
            drop(template.requests);
            if tokio::time::timeout(grace, template.child.wait()).await.is_err() {
                let _ = template.child.kill().await;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Worker>> {
        self.workers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn live_ids(&self) -> Vec<String> {
        self.reap();
        self.lock().keys().cloned().collect()
    }

    /// Forgets workers that have exited, recording their status, and sends
    /// SIGKILL to those still alive past their stop deadline.
    fn reap(&self) {
        let mut workers = self.lock();
        let mut gone = Vec::new();
        let now = std::time::Instant::now();
        for (id, w) in workers.iter_mut() {
            let alive = match &mut w.process {
                WorkerProcess::Spawned(child) => match child.try_wait() {
                    Ok(Some(status)) => {
                        gone.push((id.clone(), status));
                        false
                    }
                    // Not reaped, so the pid is still this worker's.
                    Ok(None) => true,
                    Err(e) => {
                        tracing::warn!(instance = %w.name, error = %e, "cannot poll worker process");
                        false
                    }
                },
                WorkerProcess::Forked { pid, start_time, template } => {
                    let reported = self.forked_exits.lock().unwrap_or_else(|p| p.into_inner()).remove(pid);
                    if let Some(status) = reported {
                        gone.push((id.clone(), status));
                        false
                    } else if let Some(p) = proc_stat(*pid).filter(|p| p.start_time == *start_time && !(p.state == 'Z' && p.parent != *template)) {
                        // Checked against its start time: never a recycled
                        // pid. A zombie its template has yet to reap is
                        // no longer running (its report comes next).
                        p.is_alive()
                    } else {
                        // Gone without a report. A live template reports
                        // each exit just after reaping it: wait for that a
                        // little. Otherwise (its template died, and the
                        // worker was reaped, or is a zombie left to a new
                        // parent) the status is unknown.
                        let template_alive = proc_stat(*template).is_some_and(|t| t.is_alive());
                        let since = *w.vanished_at.get_or_insert(now);
                        if !template_alive || now.duration_since(since) >= EXIT_REPORT_WAIT {
                            tracing::warn!(instance = %w.name, id = %id, "worker gone with no exit report from its template; exit status unknown");
                            gone.push((id.clone(), ExitStatus::from_raw(255 << 8)));
                        }
                        false
                    }
                }
            };
            let overdue = alive && w.kill_at.is_some_and(|at| now >= at);
            // Only an overdue worker costs the pid check.
            if let Some(pid) = overdue.then(|| w.process.live_pid()).flatten().filter(|&pid| pid > 0) {
                match kill_group(pid) {
                    Ok(()) => {
                        tracing::warn!(
                            instance = %w.name,
                            id = %id,
                            grace_s = self.stop_grace.as_secs_f64(),
                            "worker still running after SIGTERM and its grace period: sent SIGKILL"
                        );
                        w.kill_at = None;
                    }
                    Err(e) => tracing::warn!(instance = %w.name, id = %id, error = %e, "cannot kill an overdue worker; will try again"),
                }
            }
        }
        let mut exited = self.exited.lock().unwrap_or_else(|p| p.into_inner());
        for (id, status) in gone {
            if let Some(w) = workers.remove(&id) {
                tracing::info!(instance = %w.name, id = %id, %status, "worker exited");
                self.remove_record(&w.name, &id);
                exited.push((id, w.name, status));
            }
        }
        let excess = exited.len().saturating_sub(1000);
        exited.drain(..excess);
    }

    /// Removes the pid record of worker `name` if it is the one of `id`
    /// (a later worker of the same name has its own).
    fn remove_record(&self, name: &str, id: &str) {
        let Some(dir) = &self.state_dir else { return };
        let path = dir.join(format!("{name}.json"));
        let Ok(bytes) = fs::read(&path) else { return };
        match serde_json::from_slice::<Record>(&bytes) {
            Ok(r) if r.pid.to_string() != id => {}
            _ => {
                if let Err(e) = fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove a worker record");
                }
            }
        }
    }

    /// Writes the pid record of a worker just started (write then rename,
    /// so a reader never sees half a record).
    fn write_record(&self, dir: &Path, name: &str, pid: u32) -> Result<()> {
        let (parent_pid, parent_start_time) = own_identity();
        let Some(ProcStat { start_time, .. }) = proc_stat(pid) else {
            // Not reaped yet, so it has a /proc entry unless there is no /proc.
            return Err(PortError::Other(format!("cannot read the start time of worker {name} (pid {pid})")));
        };
        let record = Record { name: name.to_string(), pid, start_time, parent_pid, parent_start_time };
        let path = dir.join(format!("{name}.json"));
        let tmp = dir.join(format!(".{name}.{pid}.tmp"));
        let body = serde_json::to_vec(&record).map_err(|e| PortError::Other(format!("cannot encode a worker record: {e}")))?;
        let write = || -> io::Result<()> {
            let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            path_err("write a worker record", &path, e)
        })
    }

    /// The worker program's command: its arguments and environment, its own
    /// process group, SIGTERM when this fleet's process dies (Linux), and
    /// the fleet's niceness.
    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args).envs(self.env.iter().map(|(k, v)| (k, v))).process_group(0);
        let niceness = self.niceness;
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure only makes async-signal-safe system calls
        // in the forked child.
        unsafe {
            command.pre_exec(move || {
                #[cfg(target_os = "linux")]
                {
                    // SIGTERM when the parent (the forking thread: see the
                    // module documentation) dies.
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong, 0, 0, 0) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // The parent died before the line above: do not start.
                    // (No allocation here: `from_raw_os_error` makes none.)
                    if libc::getppid() != parent {
                        return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                    }
                }
                #[cfg(not(target_os = "linux"))]
                let _ = parent;
                if let Some(n) = niceness {
                    // Lowering one's own priority is always permitted.
                    let current = libc::getpriority(libc::PRIO_PROCESS, 0);
                    if libc::setpriority(libc::PRIO_PROCESS, 0, (current + n).min(19)) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        command
    }

    /// Opens `path` for appending, as a process's output.
    fn open_log(what: &str, path: &Path) -> Result<(fs::File, fs::File)> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| path_err(&format!("open the log of {what}"), path, e))?;
        let log2 = log.try_clone().map_err(|e| path_err(&format!("open the log of {what}"), path, e))?;
        Ok((log, log2))
    }

    /// Starts worker `name` as a new process of the worker program.
    async fn spawn_worker(&self, name: &str, log_path: &Path) -> Result<Child> {
        let (log, log2) = Self::open_log(&format!("worker {name}"), log_path)?;
        let mut command = self.command();
        command.env(INSTANCE_NAME_ENV, name).stdin(Stdio::null()).stdout(log).stderr(log2);
        let program = self.program.file_name().map_or_else(|| "?".into(), |f| f.to_string_lossy());
        self.spawn(command)
            .await
            .map_err(|e| path_err(&format!("start worker program `{program}`"), &self.program, e))
    }

    /// Starts a template process (its log: `<log-dir>/worker-template.log`)
    /// and the task that reads its answers.
    async fn spawn_template(&self) -> Result<Template> {
        let log_path = self.log_dir.join("worker-template.log");
        fs::create_dir_all(&self.log_dir).map_err(|e| path_err("create the worker log folder", &self.log_dir, e))?;
        let (log, _) = Self::open_log("the worker template", &log_path)?;
        let mut command = self.command();
        command.env(TEMPLATE_ENV, &self.log_dir).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(log);
        let mut child = self
            .spawn(command)
            .await
            .map_err(|e| path_err("start the worker template", &self.program, e))?;
        let (Some(requests), Some(answers)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.start_kill();
            return Err(PortError::Other("the worker template has no pipes".into()));
        };
        let pending = PendingLaunches::default();
        let (waiting, exits) = (pending.clone(), self.forked_exits.clone());
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(answers).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut parts = line.splitn(3, ' ');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some("launched"), Some(seq), Some(pid)) => {
                        if let (Ok(seq), Ok(pid)) = (seq.parse::<u64>(), pid.parse::<u32>()) {
                            if let Some(tx) = waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(&seq) {
                                let _ = tx.send(Ok(pid));
                            }
                        }
                    }
                    (Some("failed"), Some(seq), message) => {
                        if let Ok(seq) = seq.parse::<u64>() {
                            if let Some(tx) = waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(&seq) {
                                let _ = tx.send(Err(message.unwrap_or("unknown error").to_string()));
                            }
                        }
                    }
                    (Some("exited"), Some(pid), Some(status)) => {
                        if let (Ok(pid), Ok(status)) = (pid.parse::<u32>(), status.parse::<i32>()) {
                            let mut exits = exits.lock().unwrap_or_else(|p| p.into_inner());
                            if exits.len() >= 4096 {
                                exits.clear(); // Only unclaimed ones pile up.
                            }
                            exits.insert(pid, ExitStatus::from_raw(status));
                        }
                    }
                    _ => tracing::warn!(%line, "unexpected line from the worker template"),
                }
            }
            // The template is gone: its pending launches fail.
            waiting.lock().unwrap_or_else(|p| p.into_inner()).clear();
        });
        tracing::info!(log = %log_path.display(), "started the worker template");
        Ok(Template { child, requests, next_seq: 0, pending })
    }

    /// Worker `name` forked by the template (started if need be), or `None`
    /// when this fleet uses no template or the template cannot serve the
    /// launch (then the caller starts a new process).
    async fn fork_from_template(&self, name: &str) -> Option<WorkerProcess> {
        if !self.use_template || self.template_failures.load(Ordering::Relaxed) >= MAX_TEMPLATE_FAILURES {
            return None;
        }
        match self.ask_template(name).await {
            Ok((pid, template)) => {
                let start_time = proc_stat(pid).map_or(0, |s| s.start_time);
                Some(WorkerProcess::Forked { pid, start_time, template })
            }
            Err(e) => {
                let failures = self.template_failures.fetch_add(1, Ordering::Relaxed) + 1;
                if failures >= MAX_TEMPLATE_FAILURES {
                    tracing::warn!(error = %e, "the worker template failed {failures} times: starting every worker as a new process from now on");
                } else {
                    tracing::warn!(error = %e, instance = name, "the worker template failed: starting this worker as a new process");
                }
                None
            }
        }
    }

    /// Asks the template for worker `name` and returns its pid. A template
    /// that has exited or does not answer is replaced by a new one on the
    /// next launch.
    async fn ask_template(&self, name: &str) -> std::result::Result<(u32, u32), String> {
        let answer = {
            let mut template = self.template.lock().await;
            if let Some(t) = template.as_mut() {
                if !matches!(t.child.try_wait(), Ok(None)) {
                    *template = None;
                }
            }
            if template.is_none() {
                *template = Some(self.spawn_template().await.map_err(|e| e.to_string())?);
            }
            let t = template.as_mut().expect("set above");
            let template_pid = t.child.id().unwrap_or(0);
            let seq = t.next_seq;
            t.next_seq += 1;
            let (tx, rx) = oneshot::channel();
            t.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(seq, tx);
            if let Err(e) = t.requests.write_all(format!("{seq} {name}\n").as_bytes()).await {
                *template = None;
                return Err(format!("cannot reach the worker template: {e}"));
            }
            (rx, template_pid)
        };
        let (answer, template_pid) = answer;
        match tokio::time::timeout(TEMPLATE_ANSWER_TIMEOUT, answer).await {
            Ok(Ok(answer)) => answer.map(|pid| (pid, template_pid)),
            Ok(Err(_)) => Err("the worker template exited".into()),
            Err(_) => {
                if let Some(mut t) = self.template.lock().await.take() {
                    let _ = t.child.start_kill();
                }
                Err(format!("the worker template did not answer within {} s", TEMPLATE_ANSWER_TIMEOUT.as_secs()))
            }
        }
    }

    /// Spawns `command` from the fleet's own thread (see the module
    /// documentation), inside the caller's tokio runtime.
    async fn spawn(&self, mut command: Command) -> io::Result<Child> {
        let handle = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: SpawnJob = Box::new(move || {
            let _runtime = handle.enter();
            let _ = reply.send(command.spawn());
        });
        {
            let mut spawner = self.spawner.lock().unwrap_or_else(|p| p.into_inner());
            if spawner.is_none() {
                *spawner = Some(start_spawner()?);
            }
            let gone = || io::Error::other("the fleet's spawning thread has stopped");
            spawner.as_ref().expect("started above").send(job).map_err(|_| gone())?;
        }
        answer.await.map_err(|_| io::Error::other("the fleet's spawning thread has stopped"))?
    }

    fn signal(&self, id: &str, signal: Signal, state: InstanceState) -> Result<()> {
        self.reap();
        let mut workers = self.lock();
        let Some(w) = workers.get_mut(id) else {
            // Already reaped: stopping it again is fine, killing too.
            let known = self.exited.lock().unwrap_or_else(|p| p.into_inner()).iter().any(|e| e.0 == id);
            return if known { Ok(()) } else { Err(PortError::NoSuchInstance(id.to_string())) };
        };
        let Some(pid) = w.process.live_pid() else {
            // A forked worker that has exited, whose exit the template has
            // yet to report: there is nothing left to signal.
            w.state = state;
            return Ok(());
        };
        // The worker leads its own process group: signal the group so
        // helpers it started go too.
        match killpg(Pid::from_raw(pid as i32), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {
                w.state = state;
                w.kill_at = match signal {
                    // A second stop keeps the first deadline.
                    Signal::SIGTERM => Some(w.kill_at.unwrap_or_else(|| std::time::Instant::now() + self.stop_grace)),
                    _ => None,
                };
                tracing::info!(instance = %w.name, id, ?signal, "signalled worker");
                Ok(())
            }
            Err(e) => Err(PortError::Other(format!("cannot signal worker {id}: {e}"))),
        }
    }
}

#[async_trait]
impl Fleet for ProcessFleet {
    async fn list(&self) -> Result<Vec<Instance>> {
        self.reap();
        let mut list: Vec<Instance> = self
            .lock()
            .iter()
            .map(|(id, w)| Instance { id: id.clone(), name: w.name.clone(), state: w.state })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        Ok(list)
    }

    async fn launch(&self, name: &str) -> Result<Instance> {
        if name.is_empty() || name.contains(['/', '\0']) || name.starts_with('.') || name.chars().any(char::is_control) {
            return Err(PortError::InvalidArgument(format!("invalid instance name `{name}`")));
        }
        // Error messages name no filesystem path (they may reach HTTP
        // clients); the log has the paths.
        fs::create_dir_all(&self.log_dir).map_err(|e| path_err("create the worker log folder", &self.log_dir, e))?;
        let log_path = self.log_dir.join(format!("{name}.log"));
        if let Some(dir) = &self.state_dir {
            fs::create_dir_all(dir).map_err(|e| path_err("create the fleet's state folder", dir, e))?;
        }
        let process = match self.fork_from_template(name).await {
            Some(forked) => forked,
            None => WorkerProcess::Spawned(self.spawn_worker(name, &log_path).await?),
        };
        let pid = process.pid().ok_or_else(|| PortError::Other("worker exited before it got a process id".into()))?;
        let id = pid.to_string();
        if let Some(dir) = &self.state_dir {
            if let Err(e) = self.write_record(dir, name, pid) {
                // Unrecorded, it could outlive a crash unnoticed: no.
                let _ = kill_group(pid);
                return Err(e);
            }
        }
        let how = if matches!(process, WorkerProcess::Forked { .. }) { "forked from the template" } else { "new process" };
        tracing::info!(instance = name, id = %id, log = %log_path.display(), how, "launched worker");
        self.lock().insert(id.clone(), Worker { name: name.to_string(), process, state: InstanceState::Running, kill_at: None, vanished_at: None });
        Ok(Instance { id, name: name.to_string(), state: InstanceState::Running })
    }

    async fn stop(&self, id: &str) -> Result<()> {
        self.signal(id, Signal::SIGTERM, InstanceState::Stopping)
    }
}

impl Drop for ProcessFleet {
    /// Asks every remaining worker to stop (SIGTERM) so none outlives the
    /// fleet by accident; tokio reaps them in the background.
    fn drop(&mut self) {
        let workers = self.workers.get_mut().unwrap_or_else(|p| p.into_inner());
        for (id, w) in workers.iter() {
            if let Some(pid) = w.process.live_pid() {
                let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGTERM);
                tracing::debug!(instance = %w.name, id, "stopping worker on fleet drop");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A forked worker that is gone, whose live template has not reported
    /// its exit yet (the template reaps first, reports a moment later).
    fn fleet_with_a_vanished_worker() -> (tempfile::TempDir, ProcessFleet, String) {
        let dir = tempfile::tempdir().unwrap();
        let fleet = ProcessFleet::new(PathBuf::from("/bin/true"), vec![], vec![], dir.path());
        // The template is this test process (alive); the worker's pid is
        // past the kernel's pid limit, so it never exists.
        let template = std::process::id();
        let process = WorkerProcess::Forked { pid: 4_194_305, start_time: 1, template };
        let id = "4194305".to_string();
        let worker = Worker { name: "app-tier-instance-1".into(), process, state: InstanceState::Running, kill_at: None, vanished_at: None };
        fleet.lock().insert(id.clone(), worker);
        (dir, fleet, id)
    }

    #[test]
    fn a_late_exit_report_from_a_live_template_is_waited_for() {
        let (_dir, fleet, id) = fleet_with_a_vanished_worker();
        fleet.reap();
        assert!(fleet.lock().contains_key(&id), "not given up before its report could come");
        fleet.forked_exits.lock().unwrap().insert(4_194_305, ExitStatus::from_raw(0));
        fleet.reap();
        assert!(!fleet.lock().contains_key(&id));
        let exited = fleet.exited();
        assert_eq!(exited.len(), 1);
        assert!(exited[0].2.success(), "the reported status, not an unknown one: {:?}", exited[0]);
        assert!(fleet.forked_exits.lock().unwrap().is_empty(), "the report was claimed");
    }

    /// A process in a process group of its own, stopped with SIGSTOP: what
    /// a forked worker's pid can name once its template has reaped it.
    /// Stopped, it keeps every signal but SIGKILL pending, and SIGKILL
    /// ends its stop, so whether anybody signalled it reads off `/proc` at
    /// once.
    struct Stranger(std::process::Child);

    impl Stranger {
        fn start() -> Self {
            use std::os::unix::process::CommandExt;
            let child = std::process::Command::new("/bin/sleep").arg("1000").process_group(0).spawn().unwrap();
            let stranger = Stranger(child);
            killpg(Pid::from_raw(stranger.pid() as i32), Signal::SIGSTOP).unwrap();
            // A hang guard, not a speed requirement.
            let start = std::time::Instant::now();
            while proc_stat(stranger.pid()).map(|p| p.state) != Some('T') {
                assert!(start.elapsed() < Duration::from_secs(60), "the stranger never stopped");
                std::thread::sleep(Duration::from_millis(10));
            }
            stranger
        }

        fn pid(&self) -> u32 {
            self.0.id()
        }

        /// Still stopped, with no signal pending: nobody signalled it.
        fn untouched(&self) -> bool {
            let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
            let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).map(str::to_string);
            let no_signal = |v: Option<String>| v.is_some_and(|v| v.chars().all(|c| c == '0'));
            field("State:").is_some_and(|s| s.starts_with('T')) && no_signal(field("SigPnd:")) && no_signal(field("ShdPnd:"))
        }
    }

    impl Drop for Stranger {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// A fleet with one forked worker at the stranger's pid whose recorded
    /// start time is the stranger's plus `offset` (0: it is the worker).
    fn fleet_with_a_forked_worker_at(stranger: &Stranger, offset: u64) -> (tempfile::TempDir, ProcessFleet, String) {
        let dir = tempfile::tempdir().unwrap();
        let fleet = ProcessFleet::new(PathBuf::from("/bin/true"), vec![], vec![], dir.path());
        let pid = stranger.pid();
        let start_time = proc_stat(pid).unwrap().start_time + offset;
        // The template is this test process: alive, so the fleet waits for
        // its exit report rather than forgetting the worker at once.
        let process = WorkerProcess::Forked { pid, start_time, template: std::process::id() };
        let worker = Worker { name: "app-tier-instance-1".into(), process, state: InstanceState::Running, kill_at: None, vanished_at: None };
        fleet.lock().insert(pid.to_string(), worker);
        (dir, fleet, pid.to_string())
    }

    #[test]
    fn a_recycled_pid_of_a_forked_worker_is_never_signalled() {
        let stranger = Stranger::start();
        let (_dir, fleet, id) = fleet_with_a_forked_worker_at(&stranger, 1);
        fleet.signal(&id, Signal::SIGTERM, InstanceState::Stopping).unwrap(); // stop
        assert!(stranger.untouched(), "stop signalled a process that is not the worker");
        fleet.signal(&id, Signal::SIGKILL, InstanceState::Stopping).unwrap(); // kill
        assert!(stranger.untouched(), "kill signalled a process that is not the worker");
        fleet.lock().get_mut(&id).unwrap().kill_at = Some(std::time::Instant::now());
        fleet.reap(); // past the stop grace
        assert!(stranger.untouched(), "the grace period's SIGKILL hit a process that is not the worker");
        drop(fleet);
        assert!(stranger.untouched(), "dropping the fleet signalled a process that is not the worker");
    }

    #[test]
    fn a_live_forked_worker_is_signalled() {
        let stranger = Stranger::start();
        let (_dir, fleet, id) = fleet_with_a_forked_worker_at(&stranger, 0);
        fleet.signal(&id, Signal::SIGTERM, InstanceState::Stopping).unwrap();
        assert!(!stranger.untouched(), "stop did not signal the worker");
        let stranger = Stranger::start();
        let (_dir, fleet, _) = fleet_with_a_forked_worker_at(&stranger, 0);
        drop(fleet);
        assert!(!stranger.untouched(), "dropping the fleet did not signal the worker");
    }

    #[test]
    fn with_no_report_the_status_is_unknown_after_the_wait() {
        let (_dir, fleet, id) = fleet_with_a_vanished_worker();
        fleet.reap();
        fleet.lock().get_mut(&id).unwrap().vanished_at = Some(std::time::Instant::now() - EXIT_REPORT_WAIT);
        fleet.reap();
        let exited = fleet.exited();
        assert_eq!(exited.len(), 1);
        assert_eq!(exited[0].2.code(), Some(255));
    }
}
