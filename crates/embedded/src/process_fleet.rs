//! [`ProcessFleet`]: app-tier workers as local child processes.
//!
//! Each launch spawns the worker program in its own process group with
//! `FACEFLEET_INSTANCE_NAME=<name>` and its output appended to
//! `<log-dir>/<name>.log`. The instance id is the process id. `stop` sends
//! SIGTERM (the worker finishes its job in hand, then exits); `kill` sends
//! SIGKILL (fault injection). Exited children are reaped by `list`.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use facefleet_ports::{Fleet, Instance, InstanceState, PortError, Result};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

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
    workers: Mutex<HashMap<String, Worker>>,
    /// Exit statuses of reaped workers, by id (most recent last).
    exited: Mutex<Vec<(String, String, ExitStatus)>>,
}

#[derive(Debug)]
struct Worker {
    name: String,
    child: Child,
    state: InstanceState,
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
            workers: Mutex::new(HashMap::new()),
            exited: Mutex::new(Vec::new()),
        }
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
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Worker>> {
        self.workers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn live_ids(&self) -> Vec<String> {
        self.reap();
        self.lock().keys().cloned().collect()
    }

    /// Forgets workers that have exited, recording their status.
    fn reap(&self) {
        let mut workers = self.lock();
        let mut gone = Vec::new();
        for (id, w) in workers.iter_mut() {
            match w.child.try_wait() {
                Ok(Some(status)) => gone.push((id.clone(), status)),
                Ok(None) => {}
                Err(e) => tracing::warn!(instance = %w.name, error = %e, "cannot poll worker process"),
            }
        }
        let mut exited = self.exited.lock().unwrap_or_else(|p| p.into_inner());
        for (id, status) in gone {
            if let Some(w) = workers.remove(&id) {
                tracing::info!(instance = %w.name, id = %id, %status, "worker exited");
                exited.push((id, w.name, status));
            }
        }
        let excess = exited.len().saturating_sub(1000);
        exited.drain(..excess);
    }

    fn signal(&self, id: &str, signal: Signal, state: InstanceState) -> Result<()> {
        self.reap();
        let mut workers = self.lock();
        let Some(w) = workers.get_mut(id) else {
            // Already reaped: stopping it again is fine, killing too.
            let known = self.exited.lock().unwrap_or_else(|p| p.into_inner()).iter().any(|e| e.0 == id);
            return if known { Ok(()) } else { Err(PortError::NoSuchInstance(id.to_string())) };
        };
        let pid = w.child.id().ok_or_else(|| PortError::NoSuchInstance(id.to_string()))?;
        // The worker leads its own process group: signal the group so
        // helpers it started go too.
        match killpg(Pid::from_raw(pid as i32), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {
                w.state = state;
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
        if name.is_empty() || name.contains(['/', '\0']) || name.starts_with('.') {
            return Err(PortError::InvalidArgument(format!("invalid instance name `{name}`")));
        }
        std::fs::create_dir_all(&self.log_dir)
            .map_err(|e| PortError::Other(format!("cannot create log folder {}: {e}", self.log_dir.display())))?;
        let log_path = self.log_dir.join(format!("{name}.log"));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| PortError::Other(format!("cannot open worker log {}: {e}", log_path.display())))?;
        let log2 = log
            .try_clone()
            .map_err(|e| PortError::Other(format!("cannot open worker log {}: {e}", log_path.display())))?;
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env(INSTANCE_NAME_ENV, name)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0);
        if let Some(n) = self.niceness {
            // SAFETY: the closure only makes async-signal-safe system calls
            // in the forked child.
            unsafe {
                command.pre_exec(move || {
                    // Lowering one's own priority is always permitted.
                    let current = libc::getpriority(libc::PRIO_PROCESS, 0);
                    if libc::setpriority(libc::PRIO_PROCESS, 0, (current + n).min(19)) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = command
            .spawn()
            .map_err(|e| PortError::Other(format!("cannot start worker {}: {e}", self.program.display())))?;
        let id = child
            .id()
            .ok_or_else(|| PortError::Other("worker exited before it got a process id".into()))?
            .to_string();
        tracing::info!(instance = name, id = %id, log = %log_path.display(), "launched worker");
        self.lock().insert(id.clone(), Worker { name: name.to_string(), child, state: InstanceState::Running });
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
            if let Some(pid) = w.child.id() {
                let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGTERM);
                tracing::debug!(instance = %w.name, id, "stopping worker on fleet drop");
            }
        }
    }
}
