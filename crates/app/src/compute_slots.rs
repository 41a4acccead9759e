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

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use facefleet_gallery::{AnalyzedFace, EngineError, FaceEngine};

/// N slots shared by the processes (and threads) that open the same folder.
#[derive(Debug)]
pub struct ComputeSlots {
    paths: Vec<PathBuf>,
}

/// A held slot: its own open lock file. Dropping it closes the file, which
/// releases the lock (as the process's death does).
#[derive(Debug)]
pub struct Slot(#[allow(dead_code)] File);

impl ComputeSlots {
    /// Creates (if needed) the `n` slot files in `dir`.
    pub fn open(dir: &Path, n: usize) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let paths: Vec<PathBuf> = (0..n.max(1)).map(|i| dir.join(format!("slot-{i}.lock"))).collect();
        for p in &paths {
            Self::open_file(p)?;
        }
        Ok(Self { paths })
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
                Ok(()) => Some(Slot(f)),
                Err(TryLockError::WouldBlock) => None,
                Err(TryLockError::Error(e)) => {
                    tracing::warn!(error = %e, "compute slot unusable; skipping it");
                    None
                }
            }
        })
    }

    /// A slot, waiting for one when all are taken (blocking: call it from
    /// a blocking thread). If the slot files cannot be locked at all the
    /// work runs without one rather than not at all.
    pub fn acquire(&self) -> Option<Slot> {
        if let Some(slot) = self.try_acquire() {
            return Some(slot);
        }
        // All taken: wait on one, spread over the slots by process id.
        let path = &self.paths[std::process::id() as usize % self.paths.len()];
        match Self::open_file(path).and_then(|f| f.lock().map(|()| f)) {
            Ok(f) => Some(Slot(f)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot wait for a compute slot; running without one");
                None
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
