//! [`FsObjectStore`]: buckets as folders of files on the local filesystem.
//!
//! Layout: `<data-dir>/buckets/<bucket>/<key>`, where the `/`-separated key
//! becomes nested folders. Writes go to a temporary file in
//! `<data-dir>/buckets/.tmp` (same filesystem), are flushed to disk and then
//! renamed (`put`) or hard-linked (`put_if_absent`, which fails atomically
//! if the key exists) into place, so readers never see a partial object.
//!
//! Keys are checked with [`facefleet_ports::validate_key`] and bucket names
//! with [`validate_bucket_name`], so no call can reach outside the data
//! folder. Limitation of the folder layout: a key cannot be both an object
//! and the folder of other objects (`a` and `a/b`); such a put is refused
//! with `InvalidKey`.
//!
//! Listing tolerates concurrent deletes: an entry that vanishes during the
//! walk is skipped. Error messages name the bucket and key, never a
//! filesystem path (they may reach HTTP clients); the path is logged.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use facefleet_ports::{validate_key, ListPage, ObjectMeta, ObjectStore, PortError, Result};

/// Most keys one list page returns.
pub const MAX_LIST_KEYS: usize = 1000;

/// Name of the folder, under the buckets folder, that holds files being
/// written. Bucket names cannot start with a dot, so it never clashes.
const TMP_DIR: &str = ".tmp";

/// An [`ObjectStore`] keeping each bucket in a folder of the local
/// filesystem. Cheap to clone; every call runs its filesystem work on
/// tokio's blocking pool.
#[derive(Debug, Clone)]
pub struct FsObjectStore {
    inner: Arc<Layout>,
}

#[derive(Debug)]
struct Layout {
    /// `<data-dir>/buckets`.
    buckets: PathBuf,
    /// `<data-dir>/buckets/.tmp`.
    tmp: PathBuf,
}

/// Checks a bucket name: 1 to 63 characters among lowercase ASCII letters,
/// digits, `-`, `_` and `.`, starting with a letter or digit, without `..`.
/// Returns `InvalidArgument` otherwise.
pub fn validate_bucket_name(bucket: &str) -> Result<()> {
    let ok = !bucket.is_empty()
        && bucket.len() <= 63
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
        && bucket.as_bytes()[0].is_ascii_alphanumeric()
        && !bucket.contains("..");
    if ok {
        Ok(())
    } else {
        Err(PortError::InvalidArgument(format!(
            "invalid bucket name `{bucket}` (1-63 of a-z 0-9 - _ ., starting with a letter or digit)"
        )))
    }
}

impl FsObjectStore {
    /// A store rooted at `data_dir` (buckets live in `<data_dir>/buckets`).
    /// Creates the folders it needs; fails if they cannot be created.
    pub fn new(data_dir: impl AsRef<Path>) -> Result<Self> {
        let buckets = data_dir.as_ref().join("buckets");
        let tmp = buckets.join(TMP_DIR);
        fs::create_dir_all(&tmp).map_err(|e| path_err("create the buckets folder", &tmp, e))?;
        Ok(Self { inner: Arc::new(Layout { buckets, tmp }) })
    }

    /// The folder holding the buckets.
    pub fn buckets_dir(&self) -> &Path {
        &self.inner.buckets
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Layout) -> Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| PortError::Other(format!("filesystem task failed: {e}")))?
    }
}

/// A filesystem failure, reported without the path (logged instead).
fn path_err(what: &str, path: &Path, e: io::Error) -> PortError {
    tracing::warn!(path = %path.display(), error = %e, "filesystem store: cannot {what}");
    PortError::Other(format!("cannot {what}: {e}"))
}

/// A filesystem failure on an object, naming its bucket and key.
fn obj_err(what: &str, bucket: &str, key: &str, path: &Path, e: io::Error) -> PortError {
    path_err(&format!("{what} object `{key}` in bucket `{bucket}`"), path, e)
}

/// A filesystem failure on a bucket, naming it.
fn bucket_err(what: &str, bucket: &str, path: &Path, e: io::Error) -> PortError {
    path_err(&format!("{what} bucket `{bucket}`"), path, e)
}

/// True for the errors that mean "a path component is missing or is not a
/// folder".
fn is_missing(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory)
}

impl Layout {
    fn bucket_dir(&self, bucket: &str) -> Result<PathBuf> {
        validate_bucket_name(bucket)?;
        Ok(self.buckets.join(bucket))
    }

    /// The bucket folder, or `NoSuchBucket`.
    fn existing_bucket(&self, bucket: &str) -> Result<PathBuf> {
        let dir = self.bucket_dir(bucket)?;
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => Ok(dir),
            Ok(_) => Err(PortError::NoSuchBucket(bucket.to_string())),
            Err(e) if is_missing(&e) => Err(PortError::NoSuchBucket(bucket.to_string())),
            Err(e) => Err(bucket_err("open", bucket, &dir, e)),
        }
    }

    /// Bucket folder and object path of a valid key.
    fn object_path(&self, bucket: &str, key: &str) -> Result<(PathBuf, PathBuf)> {
        validate_key(key)?;
        let dir = self.existing_bucket(bucket)?;
        let mut path = dir.clone();
        let mut segments = key.split('/').peekable();
        while let Some(seg) = segments.next() {
            path.push(seg);
            if segments.peek().is_some() {
                // An intermediate folder must be a real folder: a symbolic
                // link planted in the bucket could lead outside the data dir.
                match fs::symlink_metadata(&path) {
                    Ok(m) if m.file_type().is_symlink() => {
                        return Err(PortError::InvalidKey {
                            key: key.to_string(),
                            reason: "the key's folder is a symbolic link".to_string(),
                        })
                    }
                    Ok(_) => {}
                    Err(_) => {
                        // Missing (or not a folder): nothing further to check.
                        for rest in segments {
                            path.push(rest);
                        }
                        break;
                    }
                }
            }
        }
        Ok((dir, path))
    }

    /// Creates a fresh temporary file, fills it with `fill`, syncs it to
    /// disk and returns its path. `bucket` and `key` name the object it is
    /// for, in errors.
    fn write_temp(
        &self,
        bucket: &str,
        key: &str,
        fill: impl FnOnce(&mut fs::File) -> io::Result<()>,
    ) -> Result<PathBuf> {
        let path = self.tmp.join(format!("{}.part", uuid::Uuid::new_v4().simple()));
        let open = || fs::OpenOptions::new().write(true).create_new(true).open(&path);
        let mut file = match open() {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Someone removed the temp folder: recreate it once.
                fs::create_dir_all(&self.tmp).map_err(|e| path_err("create the temporary folder", &self.tmp, e))?;
                open().map_err(|e| obj_err("write", bucket, key, &path, e))?
            }
            Err(e) => return Err(obj_err("write", bucket, key, &path, e)),
        };
        if let Err(e) = fill(&mut file).and_then(|()| file.sync_all()) {
            let _ = fs::remove_file(&path);
            return Err(obj_err("write", bucket, key, &path, e));
        }
        Ok(path)
    }

    /// Moves the temporary file into place at `dest` (`replace`: rename
    /// over any existing object; otherwise hard-link, failing if `dest`
    /// exists). Returns false if `dest` existed and `replace` is false.
    fn install(&self, bucket: &str, key: &str, tmp: &Path, dest: &Path, bucket_dir: &Path, replace: bool) -> Result<bool> {
        let conflict = || PortError::InvalidKey {
            key: key.to_string(),
            reason: "a key cannot be both an object and a prefix folder of other objects in this store"
                .to_string(),
        };
        let parent = dest.parent().expect("object path has a parent");
        // A concurrent delete may remove the (empty) parent folders between
        // creating them and linking: retry a few times.
        for _ in 0..8 {
            if let Err(e) = fs::create_dir_all(parent) {
                match e.kind() {
                    // A file where a folder must be is a conflict. A folder
                    // that a concurrent delete removed while it was being
                    // made (std reports AlreadyExists then) is not: retry.
                    io::ErrorKind::AlreadyExists | io::ErrorKind::NotADirectory => {
                        if file_on_path(parent, bucket_dir) {
                            return Err(conflict());
                        }
                        continue;
                    }
                    _ => return Err(obj_err("create the folder of", bucket, key, parent, e)),
                }
            }
            if let Ok(m) = fs::symlink_metadata(dest) {
                if m.is_dir() {
                    return Err(conflict());
                }
            }
            let done = if replace { fs::rename(tmp, dest) } else { fs::hard_link(tmp, dest) };
            match done {
                Ok(()) => {
                    sync_dir(parent);
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // The bucket itself may have gone.
                    if !bucket_dir.is_dir() {
                        return Err(PortError::NoSuchBucket(bucket.to_string()));
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::IsADirectory => return Err(conflict()),
                Err(e) if e.raw_os_error() == Some(36) => {
                    // ENAMETOOLONG: a segment longer than the filesystem allows.
                    return Err(PortError::InvalidKey {
                        key: key.to_string(),
                        reason: "a path segment is too long for this filesystem".to_string(),
                    });
                }
                Err(e) => return Err(obj_err("store", bucket, key, dest, e)),
            }
        }
        Err(PortError::Unavailable(format!(
            "could not store object `{key}` in bucket `{bucket}` (concurrent deletes); try again"
        )))
    }
}

/// True if something other than a folder stands at `dir` or at one of its
/// ancestors below `root`.
fn file_on_path(dir: &Path, root: &Path) -> bool {
    dir.ancestors()
        .take_while(|a| *a != root && a.starts_with(root))
        .any(|a| fs::symlink_metadata(a).is_ok_and(|m| !m.is_dir()))
}

/// Flushes a folder's entries to disk (best effort: durability of renames).
fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

fn put_blocking(layout: &Layout, bucket: &str, key: &str, body: &[u8], replace: bool) -> Result<bool> {
    let (bucket_dir, dest) = layout.object_path(bucket, key)?;
    let tmp = layout.write_temp(bucket, key, |f| f.write_all(body))?;
    let result = layout.install(bucket, key, &tmp, &dest, &bucket_dir, replace);
    if !replace || result.is_err() {
        // Hard-linked (or failed): the temporary name is no longer needed.
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Copies the file at `source` into a temporary file, then renames it over
/// `key`: the same atomicity as [`put_blocking`], without holding the body
/// in memory.
fn put_file_blocking(layout: &Layout, bucket: &str, key: &str, source: &Path) -> Result<()> {
    let (bucket_dir, dest) = layout.object_path(bucket, key)?;
    let mut src = fs::File::open(source).map_err(|e| {
        tracing::warn!(path = %source.display(), error = %e, "filesystem store: cannot read the file to upload");
        PortError::Other(format!("cannot read the file to upload: {}", e.kind()))
    })?;
    let tmp = layout.write_temp(bucket, key, |f| io::copy(&mut src, f).map(drop))?;
    let result = layout.install(bucket, key, &tmp, &dest, &bucket_dir, true);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(drop)
}

fn get_blocking(layout: &Layout, bucket: &str, key: &str) -> Result<Bytes> {
    let (_, path) = layout.object_path(bucket, key)?;
    let no_key = || PortError::NoSuchKey { bucket: bucket.to_string(), key: key.to_string() };
    match fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(no_key()),
        Err(e) if is_missing(&e) => return Err(no_key()),
        Err(e) => return Err(obj_err("read", bucket, key, &path, e)),
    }
    match fs::read(&path) {
        Ok(body) => Ok(Bytes::from(body)),
        Err(e) if is_missing(&e) || e.kind() == io::ErrorKind::IsADirectory => Err(no_key()),
        Err(e) => Err(obj_err("read", bucket, key, &path, e)),
    }
}

fn head_blocking(layout: &Layout, bucket: &str, key: &str) -> Result<Option<ObjectMeta>> {
    let (_, path) = layout.object_path(bucket, key)?;
    match fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() => Ok(Some(ObjectMeta { key: key.to_string(), size: m.len() })),
        Ok(_) => Ok(None),
        Err(e) if is_missing(&e) => Ok(None),
        Err(e) => Err(obj_err("look up", bucket, key, &path, e)),
    }
}

/// Deletes an object; true if this call unlinked it (of concurrent calls,
/// exactly one sees its unlink succeed). A symbolic link planted at the
/// key is removed too but was no object: false.
fn remove_blocking(layout: &Layout, bucket: &str, key: &str) -> Result<bool> {
    let (bucket_dir, path) = layout.object_path(bucket, key)?;
    let was_file = match fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() => true,
        Ok(m) if m.file_type().is_symlink() => false,
        Ok(_) => return Ok(false), // a prefix folder, not an object
        Err(e) if is_missing(&e) => return Ok(false),
        Err(e) => return Err(obj_err("look up", bucket, key, &path, e)),
    };
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if is_missing(&e) => return Ok(false),
        Err(e) => return Err(obj_err("delete", bucket, key, &path, e)),
    }
    // Remove the folders the key emptied, so the key's prefix may become an
    // object later. `remove_dir` only removes empty folders.
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d == bucket_dir || fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
    sync_dir(path.parent().unwrap_or(&bucket_dir));
    Ok(was_file)
}

fn list_blocking(
    layout: &Layout,
    bucket: &str,
    prefix: &str,
    token: Option<String>,
    max_keys: usize,
) -> Result<ListPage> {
    if max_keys == 0 || max_keys > MAX_LIST_KEYS {
        return Err(PortError::InvalidArgument(format!("max_keys must be 1..={MAX_LIST_KEYS}, not {max_keys}")));
    }
    let mut keys = walk_prefix(layout, bucket, prefix, token.as_deref(), Sizes::Read)?;
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    let more = keys.len() > max_keys;
    keys.truncate(max_keys);
    let next_token = if more { keys.last().map(|k| k.0.clone()) } else { None };
    Ok(ListPage {
        objects: keys.into_iter().map(|(key, size)| ObjectMeta { key, size }).collect(),
        next_token,
    })
}

/// Whether [`walk`] reads each object's size (one `stat` per object) or
/// leaves it 0 (counting needs only the names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sizes {
    Read,
    Skip,
}

/// `(key, size)` of every object whose key starts with `prefix` and sorts
/// after `after`, unsorted, in one walk of the folders the prefix can reach.
fn walk_prefix(layout: &Layout, bucket: &str, prefix: &str, after: Option<&str>, sizes: Sizes) -> Result<Vec<(String, u64)>> {
    let mut keys = Vec::new();
    walk_prefix_into(layout, bucket, prefix, after, sizes, &mut |key, size| keys.push((key, size)))?;
    Ok(keys)
}

/// [`walk_prefix`], handing each `(key, size)` to `out` instead of
/// collecting them (counting needs no key kept).
fn walk_prefix_into(
    layout: &Layout,
    bucket: &str,
    prefix: &str,
    after: Option<&str>,
    sizes: Sizes,
    out: &mut impl FnMut(String, u64),
) -> Result<()> {
    let bucket_dir = layout.existing_bucket(bucket)?;
    // Start from the folder named by the prefix's complete segments.
    let (dir_part, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
    let mut start = bucket_dir.clone();
    let mut start_key = String::new();
    for seg in dir_part.split('/').filter(|s| !s.is_empty()) {
        if seg == "." || seg == ".." {
            return Ok(()); // no valid key has such a prefix
        }
        start.push(seg);
        start_key.push_str(seg);
        start_key.push('/');
        // Never follow a symbolic link planted in the bucket (the walk
        // below does not either); a missing folder lists nothing.
        match fs::symlink_metadata(&start) {
            Ok(m) if m.is_dir() => {}
            _ => return Ok(()),
        }
    }
    walk(bucket, &start, &start_key, prefix, after, sizes, out)
}

/// Collects `(key, size)` of the files under `dir` (whose keys start with
/// `dir_key`) that start with `prefix` and sort after `after`. Skips
/// subtrees that cannot hold such keys, and never follows symbolic links.
/// Entries deleted while it runs (files, whole folders) are skipped: a
/// listing racing with deletes succeeds, with or without those keys.
fn walk(
    bucket: &str,
    dir: &Path,
    dir_key: &str,
    prefix: &str,
    after: Option<&str>,
    sizes: Sizes,
    out: &mut impl FnMut(String, u64),
) -> Result<()> {
    let list_err = |e: io::Error| bucket_err(&format!("list prefix `{dir_key}` of"), bucket, dir, e);
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if is_missing(&e) => return Ok(()),
        Err(e) => return Err(list_err(e)),
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            // The folder itself went away mid-walk.
            Err(e) if is_missing(&e) => return Ok(()),
            Err(e) => return Err(list_err(e)),
        };
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue; // not UTF-8: not written by us
        };
        let key = format!("{dir_key}{name}");
        let file_type = match entry.file_type() {
            Ok(t) => t,
            Err(e) if is_missing(&e) => continue, // deleted since read_dir
            Err(e) => return Err(list_err(e)),
        };
        if file_type.is_dir() {
            let sub = format!("{key}/");
            // Keys below start with `sub`: they can match only if `sub` and
            // `prefix` are prefixes of one another.
            if !(sub.starts_with(prefix) || prefix.starts_with(&sub)) {
                continue;
            }
            // They all sort before `after` unless `after` starts with `sub`
            // or `sub` sorts after it.
            if let Some(a) = after {
                if !a.starts_with(&sub) && sub.as_str() < a {
                    continue;
                }
            }
            walk(bucket, &entry.path(), &sub, prefix, after, sizes, out)?;
        } else if file_type.is_file() && key.starts_with(prefix) && after.is_none_or(|a| key.as_str() > a) {
            if sizes == Sizes::Skip {
                out(key, 0);
                continue;
            }
            match entry.metadata() {
                Ok(m) => out(key, m.len()),
                Err(e) if is_missing(&e) => {} // deleted since read_dir
                Err(e) => return Err(list_err(e)),
            }
        }
    }
    Ok(())
}

#[async_trait]
impl ObjectStore for FsObjectStore {
    async fn create_bucket(&self, bucket: &str) -> Result<()> {
        let bucket = bucket.to_string();
        self.blocking(move |l| {
            let dir = l.bucket_dir(&bucket)?;
            fs::create_dir_all(&dir).map_err(|e| bucket_err("create", &bucket, &dir, e))?;
            sync_dir(&l.buckets);
            Ok(())
        })
        .await
    }

    async fn bucket_exists(&self, bucket: &str) -> Result<bool> {
        let bucket = bucket.to_string();
        self.blocking(move |l| match l.existing_bucket(&bucket) {
            Ok(_) => Ok(true),
            Err(PortError::NoSuchBucket(_)) => Ok(false),
            Err(e) => Err(e),
        })
        .await
    }

    async fn put(&self, bucket: &str, key: &str, body: Bytes) -> Result<()> {
        let (bucket, key) = (bucket.to_string(), key.to_string());
        self.blocking(move |l| put_blocking(l, &bucket, &key, &body, true).map(drop)).await
    }

    async fn put_if_absent(&self, bucket: &str, key: &str, body: Bytes) -> Result<bool> {
        let (bucket, key) = (bucket.to_string(), key.to_string());
        self.blocking(move |l| put_blocking(l, &bucket, &key, &body, false)).await
    }

    async fn get(&self, bucket: &str, key: &str) -> Result<Bytes> {
        let (bucket, key) = (bucket.to_string(), key.to_string());
        self.blocking(move |l| get_blocking(l, &bucket, &key)).await
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>> {
        let (bucket, key) = (bucket.to_string(), key.to_string());
        self.blocking(move |l| head_blocking(l, &bucket, &key)).await
    }

    async fn list(&self, bucket: &str, prefix: &str, token: Option<String>, max_keys: usize) -> Result<ListPage> {
        let (bucket, prefix) = (bucket.to_string(), prefix.to_string());
        self.blocking(move |l| list_blocking(l, &bucket, &prefix, token, max_keys)).await
    }

    /// One walk of the bucket, without reading sizes or keeping keys (the
    /// trait's default pages through [`ObjectStore::list`], and each page
    /// walks the whole bucket here: quadratic in the number of objects).
    async fn count(&self, bucket: &str, prefix: &str) -> Result<u64> {
        let (bucket, prefix) = (bucket.to_string(), prefix.to_string());
        self.blocking(move |l| {
            let mut n = 0u64;
            walk_prefix_into(l, &bucket, &prefix, None, Sizes::Skip, &mut |_, _| n += 1)?;
            Ok(n)
        })
        .await
    }

    /// One walk of the bucket, sorted by key (see `count`).
    async fn list_all(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let (bucket, prefix) = (bucket.to_string(), prefix.to_string());
        self.blocking(move |l| {
            let mut keys = walk_prefix(l, &bucket, &prefix, None, Sizes::Read)?;
            keys.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(keys.into_iter().map(|(key, size)| ObjectMeta { key, size }).collect())
        })
        .await
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        let (bucket, key) = (bucket.to_string(), key.to_string());
        self.blocking(move |l| remove_blocking(l, &bucket, &key).map(drop)).await
    }

    /// Exact: true only for the one caller whose unlink removed the object.
    async fn remove(&self, bucket: &str, key: &str) -> Result<bool> {
        let (bucket, key) = (bucket.to_string(), key.to_string());
        self.blocking(move |l| remove_blocking(l, &bucket, &key)).await
    }

    /// Copies the file into a temporary file of the store's, then renames it
    /// into place (atomic, like `put`); never holds the body in memory.
    async fn put_file(&self, bucket: &str, key: &str, path: &Path) -> Result<()> {
        let (bucket, key, path) = (bucket.to_string(), key.to_string(), path.to_path_buf());
        self.blocking(move |l| put_file_blocking(l, &bucket, &key, &path)).await
    }
}

#[cfg(test)]
mod tests {
    use super::validate_bucket_name;

    #[test]
    fn bucket_names() {
        for ok in ["facefleet-in-bucket", "b", "a.b", "x_1", &"b".repeat(63)] {
            assert!(validate_bucket_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".tmp", "..", "a..b", "a/b", "A", "-a", "a b", &"b".repeat(64)] {
            assert!(validate_bucket_name(bad).is_err(), "{bad:?}");
        }
    }
}
