//! Temporary files of the video path and their clean-up after a crash.
//!
//! An upload is spooled to `facefleet-upload-*` in [`crate::http::VideoApi::spool_dir`],
//! a split works in a `facefleet-split-*` folder in
//! [`crate::SplitConfig::temp_dir`]; both are removed when done, but a
//! process killed meanwhile (`kill -9`, the OOM killer) leaves them. So
//! every one is registered here while in use, and [`sweep`] removes the
//! entries with our prefix that this process does not use:
//! [`crate::http::router`] sweeps the spool folder, and the local trigger
//! ([`crate::spawn_trigger`]) sweeps the split folder at start and then every
//! [`SWEEP_EVERY`]. A folder set explicitly is this stack's own: every
//! leftover in it goes. The system temporary folder (the default) is
//! shared with other processes, maybe other stacks: there only entries left
//! untouched for [`SHARED_MIN_AGE`] go.

use std::collections::HashSet;
use std::ffi::OsString;
use std::io;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// Name prefix of an upload's spool file.
pub const UPLOAD_PREFIX: &str = "facefleet-upload-";

/// Name prefix of a split's working folder.
pub const SPLIT_PREFIX: &str = "facefleet-split-";

/// In a shared folder, the age (time since the last change) after which an
/// entry with our prefix is a leftover: far beyond a live one's (an upload
/// writes at least every `chunk_timeout`, 60 s; a split runs ffmpeg twice,
/// 120 s each at most).
pub const SHARED_MIN_AGE: Duration = Duration::from_secs(3600);

/// How often the local trigger sweeps its split folder while it runs.
pub const SWEEP_EVERY: Duration = Duration::from_secs(600);

/// File names of the entries this process uses now. Creating an entry and
/// registering it happen under this lock, as does a sweep's check and
/// removal: a sweep never removes an entry being created.
static IN_USE: Mutex<Option<HashSet<OsString>>> = Mutex::new(None);

fn in_use() -> MutexGuard<'static, Option<HashSet<OsString>>> {
    IN_USE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A temporary file or folder registered as in use until dropped; dropping
/// removes it (the inner value's own `Drop`), then unregisters it.
pub(crate) struct Tracked<T> {
    inner: Option<T>,
    name: OsString,
}

impl<T> Tracked<T> {
    /// Creates an entry with `create` and registers it, as one step.
    pub(crate) fn create(create: impl FnOnce() -> io::Result<T>, path: impl Fn(&T) -> &Path) -> io::Result<Self> {
        let mut registry = in_use();
        let inner = create()?;
        let name = path(&inner).file_name().map(OsString::from).unwrap_or_default();
        registry.get_or_insert_with(HashSet::new).insert(name.clone());
        Ok(Self { inner: Some(inner), name })
    }
}

impl<T> Deref for Tracked<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.inner.as_ref().expect("present until dropped")
    }
}

impl<T> Drop for Tracked<T> {
    fn drop(&mut self) {
        drop(self.inner.take());
        if let Some(set) = in_use().as_mut() {
            set.remove(&self.name);
        }
    }
}

/// Removes the entries of `dir` whose name starts with `prefix`, that this
/// process does not use and that are at least `min_age` old (since their
/// last change): files, and folders with their content. A missing `dir` has
/// none. Returns how many were removed; an entry that cannot be removed is
/// logged and left.
pub fn sweep(dir: &Path, prefix: &str, min_age: Duration) -> io::Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let now = SystemTime::now();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_str().is_some_and(|n| n.starts_with(prefix) && n.len() > prefix.len()) {
            continue;
        }
        let path: PathBuf = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        let age = meta.modified().ok().and_then(|m| now.duration_since(m).ok()).unwrap_or(Duration::ZERO);
        if age < min_age {
            continue;
        }
        let registry = in_use();
        if registry.as_ref().is_some_and(|set| set.contains(&name)) {
            continue;
        }
        let result = if meta.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        drop(registry);
        match result {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot remove a leftover temporary file"),
        }
    }
    if removed > 0 {
        tracing::info!(dir = %dir.display(), prefix, removed, "removed leftover temporary files");
    }
    Ok(removed)
}

/// The folder and the minimum age [`sweep`] uses for temporary entries
/// created in `configured` (the system temporary folder, shared, when
/// `None`).
pub(crate) fn sweep_policy(configured: Option<&Path>) -> (PathBuf, Duration) {
    match configured {
        Some(dir) => (dir.to_path_buf(), Duration::ZERO),
        None => (std::env::temp_dir(), SHARED_MIN_AGE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_in_use_is_kept_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let live = Tracked::create(
            || tempfile::Builder::new().prefix(SPLIT_PREFIX).tempdir_in(dir.path()),
            tempfile::TempDir::path,
        )
        .unwrap();
        std::fs::write(live.path().join("input"), b"video").unwrap();
        let dead = dir.path().join(format!("{SPLIT_PREFIX}dead"));
        std::fs::create_dir(&dead).unwrap();
        assert_eq!(sweep(dir.path(), SPLIT_PREFIX, Duration::ZERO).unwrap(), 1);
        assert!(live.path().join("input").is_file(), "the folder in use was removed");
        assert!(!dead.exists());
        let path = live.path().to_path_buf();
        drop(live);
        assert!(!path.exists());
        assert!(in_use().as_ref().is_none_or(|s| !s.contains(path.file_name().unwrap())));
    }
}
