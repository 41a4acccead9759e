//! Compute slots: at most N local worker processes run the model at once.
//!
//! A local fleet starts up to `--max-instances` (15) worker processes on one
//! machine, whatever its cores. Left alone, every busy worker gets a slice
//! of the same cores, so all of them finish their requests late and at about
//! the same time. With one slot per core, workers take turns per image: the
//! requests come out one after another as fast as the cores allow, and the
//! web tier (which the workers yield to with `nice`) keeps its share.
//!
//! A slot is an exclusive `flock` on one of N files in a folder shared by the
//! fleet (`<data-dir>/fleet/compute-slots`). The kernel releases it when the
//! holder exits or dies, so a killed worker never keeps a slot.
//!
//! A waiter takes whichever slot frees first: it tries every slot in turn,
//! then waits for the *bell* and tries again. It never blocks on one slot
//! alone, so a holder that stops without dying (frozen, `kill -STOP`) takes
//! one slot out of the N, not the waiters queued on it.
//!
//! The bell is a named pipe beside the slot files (`released.fifo`): a
//! holder writes a byte into it after letting its slot go, which wakes the
//! waiters at once. They also look again every [`MAX_WAIT_STEP`] whatever
//! the bell says, for slots freed by a holder's death. Without the pipe
//! (it cannot be made) waiters look every [`MAX_WAIT_STEP`] / 10.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest wait for the bell before every slot is tried again: it bounds how
/// long a slot freed by its holder's death (no bell) stays idle.
pub const MAX_WAIT_STEP: Duration = Duration::from_millis(50);

/// A wait this long is logged once: a holder may be frozen.
const LONG_WAIT: Duration = Duration::from_secs(30);

use facefleet_gallery::{AnalyzedFace, EngineError, FaceEngine};

/// N slots shared by the processes (and threads) that open the same folder.
#[derive(Debug)]
pub struct ComputeSlots {
    paths: Vec<PathBuf>,
    /// The bell (see the module docs); `None` where it cannot be made.
    bell: Option<Arc<File>>,
}

/// A held slot: its own open lock file. Dropping it closes the file, which
/// releases the lock (as the process's death does), then rings the bell.
#[derive(Debug)]
pub struct Slot {
    file: Option<File>,
    bell: Option<Arc<File>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        drop(self.file.take());
        if let Some(bell) = &self.bell {
            // Full pipe (nobody listening for a while): the waiters will
            // find it ringing anyway.
            let _ = (&**bell).write(&[1]);
        }
    }
}

impl ComputeSlots {
    /// Creates (if needed) the `n` slot files and the bell in `dir`.
    pub fn open(dir: &Path, n: usize) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let paths: Vec<PathBuf> = (0..n.max(1)).map(|i| dir.join(format!("slot-{i}.lock"))).collect();
        for p in &paths {
            Self::open_file(p)?;
        }
        let bell = Self::open_bell(&dir.join("released.fifo"))
            .map_err(|e| tracing::warn!(error = %e, "no compute-slot bell; waiters will poll"))
            .ok()
            .map(Arc::new);
        Ok(Self { paths, bell })
    }

    /// The named pipe, made if missing, opened for reading and writing
    /// without blocking (so that opening never waits for the other end).
    fn open_bell(path: &Path) -> std::io::Result<File> {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
        // SAFETY: `c` is a valid NUL-terminated path for the call's duration.
        if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(e);
            }
        }
        let f = OpenOptions::new().read(true).write(true).custom_flags(libc::O_NONBLOCK).open(path)?;
        if !std::os::unix::fs::FileTypeExt::is_fifo(&f.metadata()?.file_type()) {
            return Err(std::io::Error::other("not a named pipe"));
        }
        Ok(f)
    }

    /// Waits until the bell rings or `timeout` passes, and empties it.
    fn wait_for_bell(bell: &File, timeout: Duration) {
        let mut fd = libc::pollfd { fd: bell.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, for the call's duration.
        unsafe { libc::poll(&mut fd, 1, timeout.as_millis().min(i32::MAX as u128) as i32) };
        Self::drain(bell);
    }

    fn drain(bell: &File) {
        let mut buf = [0u8; 64];
        while matches!((&*bell).read(&mut buf), Ok(n) if n > 0) {}
    }

    /// Each acquisition opens the file anew: a lock belongs to one open
    /// file, so two threads of one process exclude each other too.
    fn open_file(path: &Path) -> std::io::Result<File> {
        OpenOptions::new().create(true).truncate(false).write(true).open(path)
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Always false: there is at least one slot.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// A free slot now, if there is one.
    pub fn try_acquire(&self) -> Option<Slot> {
        self.paths.iter().find_map(|p| {
            let f = Self::open_file(p).map_err(|e| tracing::warn!(error = %e, "compute slot unusable; skipping it")).ok()?;
            match f.try_lock() {
                Ok(()) => Some(Slot { file: Some(f), bell: self.bell.clone() }),
                Err(TryLockError::WouldBlock) => None,
                Err(TryLockError::Error(e)) => {
                    tracing::warn!(error = %e, "compute slot unusable; skipping it");
                    None
                }
            }
        })
    }

    /// A slot, waiting for any one to free when all are taken (blocking:
    /// call it from a blocking thread). Each pass tries every slot, starting
    /// from one picked by process id so that workers spread over them; the
    /// next pass comes when the bell rings, [`MAX_WAIT_STEP`] later at most.
    /// If the slot files cannot be locked at all the work runs without one
    /// rather than not at all.
    pub fn acquire(&self) -> Option<Slot> {
        let n = self.paths.len();
        let first = std::process::id() as usize % n;
        // Each file is opened once for the whole wait.
        let mut files: Vec<File> = (0..n)
            .filter_map(|k| {
                Self::open_file(&self.paths[(first + k) % n])
                    .map_err(|e| tracing::warn!(error = %e, "compute slot unusable; skipping it"))
                    .ok()
            })
            .collect();
        let started = Instant::now();
        let mut warned = false;
        let mut drained = false;
        loop {
            let mut taken = false;
            for i in 0..files.len() {
                match files[i].try_lock() {
                    Ok(()) => return Some(Slot { file: Some(files.swap_remove(i)), bell: self.bell.clone() }),
                    Err(TryLockError::WouldBlock) => taken = true,
                    Err(TryLockError::Error(e)) => tracing::debug!(error = %e, "cannot lock a compute slot"),
                }
            }
            if taken && !drained {
                if let Some(bell) = &self.bell {
                    // Empty the bell (rings from before this wait), then
                    // look once more: a slot let go between the pass above
                    // and now has rung already and is free.
                    Self::drain(bell);
                    drained = true;
                    continue;
                }
            }
            if !taken {
                // No slot is held by anyone, yet none can be locked.
                tracing::warn!("cannot lock any compute slot; running without one");
                return None;
            }
            if !warned && started.elapsed() >= LONG_WAIT {
                warned = true;
                tracing::warn!(waited_s = started.elapsed().as_secs(), slots = n, "still waiting for a compute slot: a holder may be frozen");
            }
            match &self.bell {
                Some(bell) => Self::wait_for_bell(bell, MAX_WAIT_STEP),
                None => std::thread::sleep(MAX_WAIT_STEP / 10),
            }
        }
    }
}

/// A [`FaceEngine`] whose model work runs only while holding a compute slot.
pub struct SlottedEngine {
    inner: Arc<dyn FaceEngine>,
    slots: ComputeSlots,
}

impl SlottedEngine {
    /// `inner`, limited by `slots`.
    pub fn new(inner: Arc<dyn FaceEngine>, slots: ComputeSlots) -> Self {
        Self { inner, slots }
    }
}

impl FaceEngine for SlottedEngine {
    fn model_id(&self) -> &str {
        self.inner.model_id()
    }
    fn threshold(&self) -> f32 {
        self.inner.threshold()
    }
    fn open_set_threshold(&self, people: usize) -> f32 {
        self.inner.open_set_threshold(people)
    }
    fn analyze(&self, image: &[u8], max_faces: usize, embed: bool) -> Result<Vec<AnalyzedFace>, EngineError> {
        let _slot = self.slots.acquire();
        self.inner.analyze(image, max_faces, embed)
    }
    fn analyze_many(&self, images: &[&[u8]], max_faces: usize) -> Vec<Result<Vec<AnalyzedFace>, EngineError>> {
        let _slot = self.slots.acquire();
        self.inner.analyze_many(images, max_faces)
    }
    fn preferred_batch(&self) -> usize {
        self.inner.preferred_batch()
    }
    fn thumbnail(&self, image: &[u8], face: &AnalyzedFace) -> Result<Vec<u8>, EngineError> {
        let _slot = self.slots.acquire();
        self.inner.thumbnail(image, face)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_exclusive_across_openers_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        // Two openers stand for two worker processes.
        let a = ComputeSlots::open(dir.path(), 2).unwrap();
        let b = ComputeSlots::open(dir.path(), 2).unwrap();
        assert_eq!(a.len(), 2);
        let first = a.try_acquire().expect("a free slot");
        let second = b.try_acquire().expect("the other slot");
        assert!(a.try_acquire().is_none() && b.try_acquire().is_none(), "both slots are taken");
        drop(first);
        let again = b.try_acquire().expect("the released slot");
        drop((second, again));
        assert!(a.try_acquire().is_some());
    }

    #[test]
    fn letting_a_slot_go_rings_the_bell_for_every_opener() {
        let dir = tempfile::tempdir().unwrap();
        let a = ComputeSlots::open(dir.path(), 1).unwrap();
        let b = ComputeSlots::open(dir.path(), 1).unwrap();
        let bell = b.bell.as_ref().expect("a named pipe can be made here");
        ComputeSlots::drain(bell);
        let slot = a.try_acquire().expect("a free slot");
        let mut buf = [0u8; 8];
        assert!((&**bell).read(&mut buf).is_err(), "silent while the slot is held");
        drop(slot);
        assert_eq!((&**bell).read(&mut buf).unwrap(), 1, "one ring per slot let go");
        // A waiter that finds every slot taken is woken by the next release.
        let held = a.try_acquire().unwrap();
        let waiter = std::thread::spawn(move || b.acquire().is_some());
        std::thread::sleep(Duration::from_millis(20));
        drop(held);
        assert!(waiter.join().unwrap());
    }

    /// Locks slot `i` of `dir` directly, as another worker would.
    fn hold(dir: &Path, i: usize) -> File {
        let f = ComputeSlots::open_file(&dir.join(format!("slot-{i}.lock"))).unwrap();
        f.try_lock().expect("slot free");
        f
    }

    #[test]
    fn a_waiter_gets_any_slot_that_frees_not_only_the_one_it_prefers() {
        let dir = tempfile::tempdir().unwrap();
        let slots = ComputeSlots::open(dir.path(), 2).unwrap();
        // The slot this process prefers (by its id) is held by a worker
        // that never lets it go (frozen); the other is busy for a while.
        let preferred = std::process::id() as usize % 2;
        let _frozen = hold(dir.path(), preferred);
        let busy = hold(dir.path(), 1 - preferred);
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (tx, rx) = std::sync::mpsc::channel();
        let (done, looked) = std::sync::mpsc::channel::<()>();
        let waiter = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tid_tx.send(unsafe { libc::gettid() }).unwrap();
            let slot = slots.acquire();
            tx.send(slot.is_some()).unwrap();
            // Hold it until the test has looked.
            let _ = looked.recv();
            drop(slot);
        });
        // The waiter sleeps (in the kernel) only once it has found every
        // slot taken: then it is waiting.
        let tid = tid_rx.recv().unwrap();
        let sleeping = || {
            let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
            stat[stat.rfind(')').unwrap() + 2..].starts_with('S')
        };
        while !sleeping() {
            std::thread::yield_now();
        }
        assert!(rx.try_recv().is_err(), "both slots are taken");
        drop(busy);
        let got = rx.recv_timeout(Duration::from_secs(60)).expect("the waiter got the freed slot");
        assert!(got, "the waiter holds a slot");
        // It holds the freed slot: both are taken again.
        let other = ComputeSlots::open(dir.path(), 2).unwrap();
        assert!(other.try_acquire().is_none(), "the waiter holds the freed slot");
        done.send(()).unwrap();
        waiter.join().unwrap();
        assert!(other.try_acquire().is_some(), "released when the waiter drops it");
    }

    #[test]
    fn a_waiting_worker_gets_the_slot_when_it_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let a = ComputeSlots::open(dir.path(), 1).unwrap();
        let b = ComputeSlots::open(dir.path(), 1).unwrap();
        let held = a.acquire().expect("slot");
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let slot = b.acquire();
            tx.send(slot.is_some()).unwrap();
        });
        // The waiter cannot have it while it is held.
        assert!(rx.try_recv().is_err());
        drop(held);
        assert!(rx.recv().unwrap(), "the waiter got the slot");
        waiter.join().unwrap();
    }
}
