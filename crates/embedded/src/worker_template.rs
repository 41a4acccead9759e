//! Worker templates: a worker's start-up work done once, and workers forked
//! from it ready to run.
//!
//! A [`ProcessFleet`](crate::ProcessFleet) made
//! [`with_template`](crate::ProcessFleet::with_template) starts its worker
//! program once more as a *template*, with [`TEMPLATE_ENV`] set to the
//! fleet's log folder. The program does its start-up work (facefleet's
//! workers load and repack the face model's weights), then calls [`serve`],
//! which forks one worker per launch request. A forked worker shares the
//! template's memory copy-on-write: no new program to load and link, no
//! second copy of the weights, nothing done again.
//!
//! The protocol is lines over the template's stdin and stdout:
//!
//! - fleet to template: `<seq> <name>`, a launch request;
//! - template to fleet: `launched <seq> <pid>` or `failed <seq> <message>`,
//!   and `exited <pid> <wait status>` when a worker it forked has exited.
//!
//! A forked worker leads its own process group, gets SIGTERM when the
//! template exits (`PR_SET_PDEATHSIG`, Linux), has `/dev/null` as stdin and
//! `<log-dir>/<name>.log` as stdout and stderr, and
//! [`INSTANCE_NAME_ENV`](crate::INSTANCE_NAME_ENV) names it. The template
//! ends when its stdin closes (the fleet is gone); its workers then get
//! SIGTERM and finish the jobs in hand, as they do when a fleet that spawns
//! them directly dies.
//!
//! Forking is only safe in a process with one thread: [`serve`] refuses a
//! launch (and the fleet falls back to starting a new process) when the
//! template has more.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};

use crate::INSTANCE_NAME_ENV;

/// Set, to the fleet's log folder, in the environment of a template
/// process.
pub const TEMPLATE_ENV: &str = "FACEFLEET_WORKER_TEMPLATE_LOGS";

/// The template's process name (`/proc/<pid>/comm`, what `ps -e` and
/// `top` show); a forked worker gets the program's name back.
pub const TEMPLATE_PROCESS_NAME: &str = "fleet-template";

/// How often the template looks for exited workers while no request comes.
const REAP_EVERY_MS: libc::c_int = 100;

/// Serves launch requests on stdin until it closes, forking a worker for
/// each; `run` is the worker's whole life, called in the forked child with
/// the instance name, and its result is the child's exit code. Call it once
/// the start-up work is done, from the program's only thread.
///
/// Errors: [`TEMPLATE_ENV`] is not set, or stdin or stdout fail.
pub fn serve(mut run: impl FnMut(&str) -> i32) -> io::Result<()> {
    let log_dir = std::env::var_os(TEMPLATE_ENV)
        .map(PathBuf::from)
        .ok_or_else(|| io::Error::other(format!("{TEMPLATE_ENV} is not set: not started as a worker template")))?;
    // Replies go to a private copy of stdout; stdout itself then points at
    // stderr (the template's log), so that no stray print can enter the
    // protocol.
    // SAFETY: plain descriptor calls; the new descriptor is owned below.
    let replies_fd = unsafe { libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3) };
    if replies_fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `replies_fd` was just made and nothing else owns it.
    let mut replies = unsafe { File::from_raw_fd(replies_fd) };
    // SAFETY: as above.
    if unsafe { libc::dup2(2, 1) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let template = std::process::id();
    let program_name = process_name();
    set_process_name(TEMPLATE_PROCESS_NAME);
    let mut pending = Vec::new();
    loop {
        let mut poll = libc::pollfd { fd: 0, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut poll, 1, REAP_EVERY_MS) };
        if ready < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        report_exits(&mut replies)?;
        if ready == 0 {
            continue;
        }
        let mut chunk = [0u8; 4096];
        // SAFETY: reads into a buffer of the given length.
        let got = unsafe { libc::read(0, chunk.as_mut_ptr().cast(), chunk.len()) };
        if got < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if got == 0 {
            return Ok(()); // The fleet is gone.
        }
        pending.extend_from_slice(&chunk[..got as usize]);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..end]).into_owned();
            let Some((seq, name)) = line.split_once(' ') else { continue };
            let parent = Parent { pid: template, replies_fd: replies.as_raw_fd(), program_name: &program_name };
            let reply = match launch(name, &log_dir, &parent, &mut run) {
                Ok(pid) => format!("launched {seq} {pid}\n"),
                Err(e) => format!("failed {seq} {}\n", e.to_string().replace(['\n', '\r'], " ")),
            };
            replies.write_all(reply.as_bytes())?;
        }
    }
}

/// Reports every exited child (`exited <pid> <status>`).
fn report_exits(out: &mut File) -> io::Result<()> {
    loop {
        let mut status = 0;
        // SAFETY: waits for any child without blocking.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return Ok(()); // None exited (0) or no children at all (-1).
        }
        out.write_all(format!("exited {pid} {status}\n").as_bytes())?;
    }
}

/// What a forked worker needs to know of its template.
struct Parent<'a> {
    pid: u32,
    /// The template's end of the protocol, which the worker closes.
    replies_fd: i32,
    /// The program's process name, for the worker.
    program_name: &'a str,
}

/// This process's name (empty where the system does not tell).
fn process_name() -> String {
    std::fs::read_to_string("/proc/self/comm").map(|s| s.trim_end().to_string()).unwrap_or_default()
}

/// Renames this process (Linux; at most 15 bytes are kept).
fn set_process_name(name: &str) {
    #[cfg(target_os = "linux")]
    if let Ok(name) = std::ffi::CString::new(name) {
        // SAFETY: a NUL-terminated string that outlives the call.
        unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = name;
}

/// The number of threads of this process, where the system tells.
fn thread_count() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|n| n.trim().parse().ok())
}

/// Forks worker `name` and returns its pid (in the child: runs it, never
/// returns).
fn launch(name: &str, log_dir: &Path, parent: &Parent, run: &mut impl FnMut(&str) -> i32) -> io::Result<u32> {
    if name.is_empty() || name.contains(['/', '\0']) || name.starts_with('.') || name.chars().any(char::is_control) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid instance name `{name}`")));
    }
    match thread_count() {
        Some(1) => {}
        Some(n) => return Err(io::Error::other(format!("the template runs {n} threads; it forks only with one"))),
        None => return Err(io::Error::other("cannot count the template's threads (no /proc); it does not fork")),
    }
    // Opened before forking, so that a failure reaches the fleet.
    let log = OpenOptions::new().create(true).append(true).open(log_dir.join(format!("{name}.log")))?;
    let null = File::open("/dev/null")?;
    // SAFETY: this process has one thread (checked above), so the child
    // inherits no lock held by another thread.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            let ready = become_worker(name, parent, &log, &null);
            // Duplicated onto stdin, stdout and stderr by now.
            drop((log, null));
            let code = match ready {
                Ok(()) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(name))).unwrap_or(101),
                Err(e) => {
                    let _ = writeln!(io::stderr(), "worker {name}: cannot start from the template: {e}");
                    1
                }
            };
            std::process::exit(code)
        }
        pid => {
            // Also set here (as the child does), so that the group exists
            // before the fleet can signal it.
            // SAFETY: plain system call on our own child.
            unsafe { libc::setpgid(pid, pid) };
            Ok(pid as u32)
        }
    }
}

/// Makes the forked child a worker of its own (see the module
/// documentation).
fn become_worker(name: &str, parent: &Parent, log: &File, null: &File) -> io::Result<()> {
    let check = |r: libc::c_int| if r == -1 { Err(io::Error::last_os_error()) } else { Ok(r) };
    let template = parent.pid;
    set_process_name(parent.program_name);
    // SAFETY: descriptor and process calls on this (single-threaded) child.
    unsafe {
        libc::close(parent.replies_fd);
        check(libc::setpgid(0, 0))?;
        #[cfg(target_os = "linux")]
        {
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong, 0, 0, 0))?;
            // The template died before the line above.
            if libc::getppid() as u32 != template {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = template;
        check(libc::dup2(null.as_raw_fd(), 0))?;
        check(libc::dup2(log.as_raw_fd(), 1))?;
        check(libc::dup2(log.as_raw_fd(), 2))?;
    }
    // One thread: nothing reads the environment concurrently.
    std::env::set_var(INSTANCE_NAME_ENV, name);
    std::env::remove_var(TEMPLATE_ENV);
    Ok(())
}
