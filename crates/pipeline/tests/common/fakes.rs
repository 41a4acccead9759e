//! A fake engine and an in-process fleet; the in-memory ports come from
//! `facefleet_ports::memory`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use facefleet_pipeline::backend::Deployment;
use facefleet_gallery::{AnalyzedFace, EngineError, FaceBox, FaceEngine, FaceQuality};
use facefleet_pipeline::worker::{Worker, WorkerConfig};
use facefleet_ports::*;
use tokio_util::sync::CancellationToken;

// The in-memory ports are the library's (`facefleet_ports::memory`), which
// pass the same contract suites as the other adapters.
pub use facefleet_ports::memory::{MemQueue, MemStore};

/// Dimension of the fake engine's embeddings (one per red value).
pub const FAKE_DIM: usize = 256;

/// The fake engine's embedding of an image whose red channel is `red`: the
/// one-hot vector at `red` (similarity 1 with the same red, 0 otherwise).
pub fn fake_embedding(red: u8) -> Vec<f32> {
    let mut v = vec![0.0; FAKE_DIM];
    v[red as usize] = 1.0;
    v
}

/// A fake face engine: an image's identity is the red channel of its
/// top-left pixel (red 0: no face); its one face fills the image.
#[derive(Default)]
pub struct FakeEngine {
    /// Time each analysis takes.
    pub delay: Duration,
    /// Images with this red value fail transiently every time.
    pub fail_red: Option<u8>,
    /// Images with this red value make the model panic.
    pub panic_red: Option<u8>,
    /// The thread of each analysis, in order.
    pub threads: Mutex<Vec<std::thread::ThreadId>>,
    /// Images analysed.
    pub calls: AtomicUsize,
    /// Calls of `analyze_many` (batches).
    pub batches: AtomicUsize,
    /// Most images in one batch.
    pub largest_batch: AtomicUsize,
    /// When set, the second `analyze_many` call waits (at most a minute)
    /// for a message on this channel before it analyses anything.
    pub hold_second_batch: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    /// Whether that wait ran out instead of being released.
    pub hold_ran_out: std::sync::atomic::AtomicBool,
}

impl FakeEngine {
    fn red(image: &[u8]) -> std::result::Result<(u8, u32, u32), EngineError> {
        let img = image::load_from_memory(image).map_err(|e| EngineError::bad_image(format!("cannot decode: {e}")))?;
        let rgb = img.to_rgb8();
        Ok((rgb.get_pixel(0, 0)[0], rgb.width(), rgb.height()))
    }
}

impl FaceEngine for FakeEngine {
    fn model_id(&self) -> &str {
        "fake"
    }
    fn threshold(&self) -> f32 {
        0.5
    }
    fn analyze(&self, image: &[u8], max_faces: usize, embed: bool) -> std::result::Result<Vec<AnalyzedFace>, EngineError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.threads.lock().unwrap().push(std::thread::current().id());
        let (red, w, h) = Self::red(image)?;
        if self.fail_red == Some(red) {
            return Err(EngineError::Failed { message: "injected model failure".into(), source: None });
        }
        if self.panic_red == Some(red) {
            panic!("injected model panic");
        }
        std::thread::sleep(self.delay);
        if red == 0 || max_faces == 0 {
            return Ok(Vec::new());
        }
        let (w, h) = (w as f32, h as f32);
        Ok(vec![AnalyzedFace {
            bbox: FaceBox { x1: 0.0, y1: 0.0, x2: w, y2: h },
            landmarks: [[0.3 * w, 0.4 * h], [0.7 * w, 0.4 * h], [0.5 * w, 0.6 * h], [0.35 * w, 0.8 * h], [0.65 * w, 0.8 * h]],
            score: 0.99,
            size: w.min(h),
            quality: FaceQuality { sharpness: 1.0, yaw: 0.0, pitch: 0.0 },
            embedding: if embed { fake_embedding(red) } else { Vec::new() },
        }])
    }
    fn analyze_many(&self, images: &[&[u8]], max_faces: usize) -> Vec<std::result::Result<Vec<AnalyzedFace>, EngineError>> {
        if self.batches.fetch_add(1, Ordering::SeqCst) == 1 {
            if let Some(release) = self.hold_second_batch.lock().unwrap().take() {
                if release.recv_timeout(Duration::from_secs(60)).is_err() {
                    self.hold_ran_out.store(true, Ordering::SeqCst);
                }
            }
        }
        self.largest_batch.fetch_max(images.len(), Ordering::SeqCst);
        images.iter().map(|i| self.analyze(i, max_faces, true)).collect()
    }
    fn thumbnail(&self, image: &[u8], _face: &AnalyzedFace) -> std::result::Result<Vec<u8>, EngineError> {
        let (red, _, _) = Self::red(image)?;
        Ok(vec![0xFF, 0xD8, red])
    }
}

/// Fast worker settings for tests.
pub fn test_worker_config() -> WorkerConfig {
    WorkerConfig {
        visibility: Duration::from_secs(2),
        heartbeat: Duration::from_millis(500),
        poll_wait: Duration::from_millis(100),
        max_attempts: 3,
        gallery_refresh: Duration::from_millis(100),
        batch: 1,
        embed_batch: None,
    }
}

/// Starts an in-process worker; cancel the token to stop it gracefully.
pub fn spawn_worker(dep: &Deployment, engine: Arc<FakeEngine>) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let w = Worker::new(dep.clone(), engine, test_worker_config());
    let s = stop.clone();
    (stop, tokio::spawn(async move { w.run(s).await }))
}

struct FleetEntry {
    inst: Instance,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// A fleet of in-process workers sharing one fake engine.
pub struct FakeFleet {
    dep: Deployment,
    engine: Arc<FakeEngine>,
    next: AtomicUsize,
    entries: Mutex<Vec<FleetEntry>>,
    /// Most instances ever active at once.
    pub peak: AtomicUsize,
    /// Launch calls.
    pub launches: AtomicUsize,
    /// List calls.
    pub lists: AtomicUsize,
}

impl FakeFleet {
    /// A fleet whose workers run over `dep`.
    pub fn new(dep: Deployment, engine: Arc<FakeEngine>) -> Self {
        Self { dep, engine, next: AtomicUsize::new(1), entries: Mutex::new(vec![]), peak: AtomicUsize::new(0), launches: AtomicUsize::new(0), lists: AtomicUsize::new(0) }
    }
}

#[async_trait]
impl Fleet for FakeFleet {
    async fn list(&self) -> Result<Vec<Instance>> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        let mut e = self.entries.lock().unwrap();
        e.retain(|x| !x.task.is_finished());
        Ok(e.iter().map(|x| x.inst.clone()).collect())
    }
    async fn launch(&self, name: &str) -> Result<Instance> {
        self.launches.fetch_add(1, Ordering::SeqCst);
        let (stop, task) = spawn_worker(&self.dep, self.engine.clone());
        let id = format!("fake-{}", self.next.fetch_add(1, Ordering::SeqCst));
        let inst = Instance { id, name: name.into(), state: InstanceState::Running };
        let mut e = self.entries.lock().unwrap();
        e.retain(|x| !x.task.is_finished());
        e.push(FleetEntry { inst: inst.clone(), stop, task });
        let active = e.iter().filter(|x| x.inst.state.is_active()).count();
        self.peak.fetch_max(active, Ordering::SeqCst);
        Ok(inst)
    }
    async fn stop(&self, id: &str) -> Result<()> {
        let mut e = self.entries.lock().unwrap();
        let x = e.iter_mut().find(|x| x.inst.id == id).ok_or_else(|| PortError::NoSuchInstance(id.into()))?;
        x.inst.state = InstanceState::Stopping;
        x.stop.cancel();
        Ok(())
    }
}

/// A [`MemStore`] whose `count` waits for `gate` (closed until the test
/// adds permits; one per bucket counted) and says how often it was called.
pub struct GatedCountStore {
    pub inner: Arc<MemStore>,
    pub gate: tokio::sync::Semaphore,
    pub counts: AtomicUsize,
}

impl GatedCountStore {
    /// A closed gate over `inner`.
    pub fn new(inner: Arc<MemStore>) -> Self {
        Self { inner, gate: tokio::sync::Semaphore::new(0), counts: AtomicUsize::new(0) }
    }
}

#[async_trait]
impl ObjectStore for GatedCountStore {
    async fn create_bucket(&self, bucket: &str) -> Result<()> {
        self.inner.create_bucket(bucket).await
    }
    async fn bucket_exists(&self, bucket: &str) -> Result<bool> {
        self.inner.bucket_exists(bucket).await
    }
    async fn put(&self, bucket: &str, key: &str, body: bytes::Bytes) -> Result<()> {
        self.inner.put(bucket, key, body).await
    }
    async fn put_if_absent(&self, bucket: &str, key: &str, body: bytes::Bytes) -> Result<bool> {
        self.inner.put_if_absent(bucket, key, body).await
    }
    async fn get(&self, bucket: &str, key: &str) -> Result<bytes::Bytes> {
        self.inner.get(bucket, key).await
    }
    async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>> {
        self.inner.head(bucket, key).await
    }
    async fn list(&self, bucket: &str, prefix: &str, token: Option<String>, max: usize) -> Result<ListPage> {
        self.inner.list(bucket, prefix, token, max).await
    }
    async fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        self.inner.delete(bucket, key).await
    }
    async fn count(&self, bucket: &str, prefix: &str) -> Result<u64> {
        self.counts.fetch_add(1, Ordering::SeqCst);
        self.gate.acquire().await.expect("the gate is never closed").forget();
        self.inner.count(bucket, prefix).await
    }
}

/// A [`MemQueue`] that counts the messages deleted one at a time and in
/// batches, per queue.
#[derive(Default)]
pub struct DeleteCountingQueue {
    pub inner: MemQueue,
    /// `(queue, receipts)` of each `delete` (1 receipt) and `delete_batch`.
    pub deletes: Mutex<Vec<(String, usize, &'static str)>>,
}

impl DeleteCountingQueue {
    /// Receipts deleted from `queue` by `how` (`"delete"` or `"batch"`).
    pub fn deleted(&self, queue: &str, how: &str) -> usize {
        self.deletes.lock().unwrap().iter().filter(|(q, _, h)| q == queue && *h == how).map(|(_, n, _)| n).sum()
    }
}

#[async_trait]
impl MessageQueue for DeleteCountingQueue {
    async fn create_queue(&self, queue: &str, config: &QueueConfig) -> Result<()> {
        self.inner.create_queue(queue, config).await
    }
    async fn send(&self, queue: &str, body: &str) -> Result<String> {
        self.inner.send(queue, body).await
    }
    async fn receive(&self, queue: &str, max: usize, wait: Duration, visibility: Option<Duration>) -> Result<Vec<Message>> {
        self.inner.receive(queue, max, wait, visibility).await
    }
    async fn delete(&self, queue: &str, receipt: &str) -> Result<()> {
        self.deletes.lock().unwrap().push((queue.to_string(), 1, "delete"));
        self.inner.delete(queue, receipt).await
    }
    async fn delete_batch(&self, queue: &str, receipts: &[&str]) -> Vec<Result<()>> {
        self.deletes.lock().unwrap().push((queue.to_string(), receipts.len(), "batch"));
        self.inner.delete_batch(queue, receipts).await
    }
    async fn change_visibility(&self, queue: &str, receipt: &str, timeout: Duration) -> Result<()> {
        self.inner.change_visibility(queue, receipt, timeout).await
    }
    async fn depth(&self, queue: &str) -> Result<QueueDepth> {
        self.inner.depth(queue).await
    }
    async fn purge(&self, queue: &str) -> Result<()> {
        self.inner.purge(queue).await
    }
}
