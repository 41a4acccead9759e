//! Helpers shared by the video tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use facefleet_embedded::FsObjectStore;
use facefleet_ports::{ListPage, Names, ObjectMeta, ObjectStore, Result as PortResult};
use facefleet_gallery::{AnalyzedFace, EngineError, FaceBox, FaceEngine, FaceQuality};
use facefleet_video::TriggerStats;

/// `../shared/datasets/cse546/videos` (or `$FACEFLEET_SHARED_DIR/...`);
/// panics with a clear message when missing.
pub fn videos_dir() -> PathBuf {
    let shared = std::env::var_os("FACEFLEET_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    let dir = shared.join("datasets/cse546/videos");
    assert!(
        dir.join("test_0.mp4").is_file(),
        "the course videos are missing: expected {} (set FACEFLEET_SHARED_DIR to the folder holding datasets/)",
        dir.display()
    );
    dir
}

/// The course videos folder, or `None` after printing why the calling test
/// is skipped (for tests that only need one real clip).
pub fn videos_dir_or_skip(test: &str) -> Option<PathBuf> {
    let shared = std::env::var_os("FACEFLEET_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    let dir = shared.join("datasets/cse546/videos");
    if dir.join("test_0.mp4").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED {test}: the course videos are missing: expected {} (set FACEFLEET_SHARED_DIR to the folder holding datasets/)",
            dir.display()
        );
        None
    }
}

/// The 8 course videos: (stem, path, labelled person).
pub fn course_videos() -> Vec<(String, PathBuf, String)> {
    let dir = videos_dir();
    let labels = std::fs::read_to_string(dir.join("labels.csv")).expect("videos/labels.csv");
    let out: Vec<(String, PathBuf, String)> = labels
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(','))
        .map(|(stem, name)| (stem.to_string(), dir.join(format!("{stem}.mp4")), name.trim().to_string()))
        .collect();
    assert_eq!(out.len(), 8, "videos/labels.csv should name 8 videos");
    for (_, p, _) in &out {
        assert!(p.is_file(), "missing video {}", p.display());
    }
    out
}

/// The ffmpeg binary ($FACEFLEET_FFMPEG, as `scripts/test` sets it, or
/// PATH); panics with a clear message when missing.
pub fn ffmpeg() -> facefleet_video::Ffmpeg {
    facefleet_video::Ffmpeg::locate(None).unwrap_or_else(|e| {
        panic!("{e}: run the tests through scripts/test, which sets FACEFLEET_FFMPEG to imageio-ffmpeg's static ffmpeg")
    })
}

/// A fresh data dir and the embedded object store on it.
pub fn fs_store() -> (tempfile::TempDir, Arc<FsObjectStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FsObjectStore::new(dir.path()).unwrap());
    (dir, store)
}

/// Creates the video buckets of `names`.
pub async fn create_buckets(store: &dyn ObjectStore, names: &Names) {
    for b in [&names.video_input, &names.video_stage1, &names.video_output, &names.gallery_bucket] {
        store.create_bucket(b).await.unwrap();
    }
}

/// Test double of the face model: every JPEG frame shows one face, which
/// is the first enrolled person (or a stranger when nobody is enrolled);
/// with `faces = false`, no frame has a face. Anything that is not a JPEG
/// is a bad frame. Counts its calls.
pub struct FakeRecognizer {
    pub faces: bool,
    pub calls: AtomicUsize,
}

impl FakeRecognizer {
    pub fn new() -> Self {
        Self { faces: true, calls: AtomicUsize::new(0) }
    }
    pub fn faceless() -> Self {
        Self { faces: false, calls: AtomicUsize::new(0) }
    }
}

/// The fake's one embedding: every face it finds is the same person.
const FAKE_EMBEDDING: [f32; 4] = [1.0, 0.0, 0.0, 0.0];

impl FaceEngine for FakeRecognizer {
    fn model_id(&self) -> &str {
        "fake"
    }
    fn threshold(&self) -> f32 {
        0.5
    }
    fn analyze(&self, frame: &[u8], _max_faces: usize, embed: bool) -> Result<Vec<AnalyzedFace>, EngineError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if !frame.starts_with(&[0xFF, 0xD8, 0xFF]) {
            return Err(EngineError::bad_image("not a JPEG"));
        }
        // Some work, so that invocations overlap as real ones do.
        std::thread::sleep(Duration::from_millis(20));
        if !self.faces {
            return Ok(vec![]);
        }
        Ok(vec![AnalyzedFace {
            bbox: FaceBox { x1: 0.0, y1: 0.0, x2: 10.0, y2: 10.0 },
            landmarks: [[0.0; 2]; 5],
            score: 1.0,
            size: 10.0,
            quality: FaceQuality { sharpness: 1.0, yaw: 0.0, pitch: 0.0 },
            embedding: if embed { FAKE_EMBEDDING.to_vec() } else { vec![] },
        }])
    }
    fn thumbnail(&self, _frame: &[u8], _face: &AnalyzedFace) -> Result<Vec<u8>, EngineError> {
        Ok(vec![0xFF, 0xD8])
    }
}

/// Enrolls `name` in the gallery's `default` collection with the fake
/// recognizer's embedding.
pub async fn enroll_fake(store: Arc<dyn ObjectStore>, names: &Names, name: &str) {
    let gallery = facefleet_gallery::store::Gallery::new(store, &names.gallery_bucket);
    let face = facefleet_gallery::store::NewFace { embedding: FAKE_EMBEDDING.to_vec(), model: "fake".into(), thumbnail: None };
    gallery.add_faces(facefleet_gallery::DEFAULT_COLLECTION, name, vec![face]).await.unwrap();
}

/// Reads an object as text, `None` if missing.
pub async fn text(store: &dyn ObjectStore, bucket: &str, key: &str) -> Option<String> {
    match store.get(bucket, key).await {
        Ok(b) => Some(String::from_utf8(b.to_vec()).unwrap()),
        Err(e) if e.is_not_found() => None,
        Err(e) => panic!("get {bucket}/{key}: {e}"),
    }
}

/// Waits until `<stem>.txt` or `<stem>.error` exists in the output bucket;
/// returns (result, error). Fails when the trigger has gone idle (nothing
/// running, nothing left to do) without producing either.
pub async fn wait_result(
    store: &dyn ObjectStore,
    names: &Names,
    stem: &str,
    stats: &TriggerStats,
) -> (Option<String>, Option<String>) {
    let read = || async {
        let r = text(store, &names.video_output, &format!("{stem}.txt")).await;
        let e = text(store, &names.video_output, &format!("{stem}.error")).await;
        (r.is_some() || e.is_some()).then_some((r, e))
    };
    loop {
        if let Some(found) = read().await {
            return found;
        }
        if stats.idle_scans() >= 10 {
            if let Some(found) = read().await {
                return found;
            }
            panic!("the trigger went idle and `{stem}` has neither a result nor an error");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An object store that counts `get` calls and can pretend objects are
/// larger than they are (to test size limits without 2 GB of data).
pub struct SpyStore {
    pub inner: Arc<dyn ObjectStore>,
    pub gets: AtomicUsize,
    pub fake_sizes: std::sync::Mutex<std::collections::HashMap<(String, String), u64>>,
}

impl SpyStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self { inner, gets: AtomicUsize::new(0), fake_sizes: Default::default() }
    }
}

#[async_trait]
impl ObjectStore for SpyStore {
    async fn create_bucket(&self, bucket: &str) -> PortResult<()> {
        self.inner.create_bucket(bucket).await
    }
    async fn bucket_exists(&self, bucket: &str) -> PortResult<bool> {
        self.inner.bucket_exists(bucket).await
    }
    async fn put(&self, bucket: &str, key: &str, body: Bytes) -> PortResult<()> {
        self.inner.put(bucket, key, body).await
    }
    async fn put_if_absent(&self, bucket: &str, key: &str, body: Bytes) -> PortResult<bool> {
        self.inner.put_if_absent(bucket, key, body).await
    }
    async fn get(&self, bucket: &str, key: &str) -> PortResult<Bytes> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get(bucket, key).await
    }
    async fn head(&self, bucket: &str, key: &str) -> PortResult<Option<ObjectMeta>> {
        let meta = self.inner.head(bucket, key).await?;
        let fake = self.fake_sizes.lock().unwrap().get(&(bucket.to_string(), key.to_string())).copied();
        Ok(meta.map(|m| ObjectMeta { size: fake.unwrap_or(m.size), ..m }))
    }
    async fn list(&self, bucket: &str, prefix: &str, token: Option<String>, max: usize) -> PortResult<ListPage> {
        self.inner.list(bucket, prefix, token, max).await
    }
    async fn delete(&self, bucket: &str, key: &str) -> PortResult<()> {
        self.inner.delete(bucket, key).await
    }
}

/// Writes a video without any face (ffmpeg's test pattern) to `path`.
pub async fn make_faceless_video(path: &Path) {
    let ff = ffmpeg();
    ff.run([
        "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
        "testsrc=duration=2:size=640x360:rate=24", "-pix_fmt", "yuv420p", "-c:v", "mpeg4",
    ]
    .iter()
    .map(std::ffi::OsString::from)
    .chain([path.as_os_str().to_os_string()]))
    .await
    .expect("ffmpeg makes a test pattern video");
}

/// Writes an executable shell script `name` with `body` into `dir`: a
/// stand-in for ffmpeg.
pub fn fake_ffmpeg(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}
