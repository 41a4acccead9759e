//! In-memory ports, a fake engine and an in-process fleet.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use facefleet_pipeline::backend::Deployment;
use facefleet_pipeline::engine::{EngineError, Enroller, FaceEngine};
use facefleet_pipeline::gallery::GalleryEntry;
use facefleet_pipeline::protocol::{FaceBox, FaceMatch, Recognition};
use facefleet_pipeline::worker::{Worker, WorkerConfig};
use facefleet_ports::*;
use tokio_util::sync::CancellationToken;

/// Buckets in memory.
#[derive(Default)]
pub struct MemStore {
    buckets: Mutex<HashMap<String, BTreeMap<String, Bytes>>>,
    /// Bucket whose `put`s fail (transiently) while set.
    pub fail_puts_to: Mutex<Option<String>>,
}

impl MemStore {
    /// Keys of a bucket.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        self.buckets.lock().unwrap().get(bucket).map(|b| b.keys().cloned().collect()).unwrap_or_default()
    }
    /// One object.
    pub fn object(&self, bucket: &str, key: &str) -> Option<Bytes> {
        self.buckets.lock().unwrap().get(bucket)?.get(key).cloned()
    }
}

#[async_trait]
impl ObjectStore for MemStore {
    async fn create_bucket(&self, bucket: &str) -> Result<()> {
        self.buckets.lock().unwrap().entry(bucket.into()).or_default();
        Ok(())
    }
    async fn bucket_exists(&self, bucket: &str) -> Result<bool> {
        Ok(self.buckets.lock().unwrap().contains_key(bucket))
    }
    async fn put(&self, bucket: &str, key: &str, body: Bytes) -> Result<()> {
        validate_key(key)?;
        if self.fail_puts_to.lock().unwrap().as_deref() == Some(bucket) {
            return Err(PortError::Unavailable("injected put failure".into()));
        }
        let mut b = self.buckets.lock().unwrap();
        b.get_mut(bucket).ok_or_else(|| PortError::NoSuchBucket(bucket.into()))?.insert(key.into(), body);
        Ok(())
    }
    async fn put_if_absent(&self, bucket: &str, key: &str, body: Bytes) -> Result<bool> {
        validate_key(key)?;
        let mut b = self.buckets.lock().unwrap();
        let m = b.get_mut(bucket).ok_or_else(|| PortError::NoSuchBucket(bucket.into()))?;
        if m.contains_key(key) {
            return Ok(false);
        }
        m.insert(key.into(), body);
        Ok(true)
    }
    async fn get(&self, bucket: &str, key: &str) -> Result<Bytes> {
        let b = self.buckets.lock().unwrap();
        let m = b.get(bucket).ok_or_else(|| PortError::NoSuchBucket(bucket.into()))?;
        m.get(key).cloned().ok_or_else(|| PortError::NoSuchKey { bucket: bucket.into(), key: key.into() })
    }
    async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>> {
        let b = self.buckets.lock().unwrap();
        let m = b.get(bucket).ok_or_else(|| PortError::NoSuchBucket(bucket.into()))?;
        Ok(m.get(key).map(|v| ObjectMeta { key: key.into(), size: v.len() as u64 }))
    }
    async fn list(&self, bucket: &str, prefix: &str, token: Option<String>, max_keys: usize) -> Result<ListPage> {
        let b = self.buckets.lock().unwrap();
        let m = b.get(bucket).ok_or_else(|| PortError::NoSuchBucket(bucket.into()))?;
        let mut objects: Vec<ObjectMeta> = m
            .iter()
            .filter(|(k, _)| k.starts_with(prefix) && token.as_ref().is_none_or(|t| *k > t))
            .take(max_keys + 1)
            .map(|(k, v)| ObjectMeta { key: k.clone(), size: v.len() as u64 })
            .collect();
        let next_token = if objects.len() > max_keys {
            objects.pop();
            objects.last().map(|o| o.key.clone())
        } else {
            None
        };
        Ok(ListPage { objects, next_token })
    }
    async fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        let mut b = self.buckets.lock().unwrap();
        b.get_mut(bucket).ok_or_else(|| PortError::NoSuchBucket(bucket.into()))?.remove(key);
        Ok(())
    }
    async fn remove(&self, bucket: &str, key: &str) -> Result<bool> {
        let mut b = self.buckets.lock().unwrap();
        Ok(b.get_mut(bucket).ok_or_else(|| PortError::NoSuchBucket(bucket.into()))?.remove(key).is_some())
    }
}

struct Msg {
    id: String,
    body: String,
    receipt: String,
    visible_at: Instant,
    receive_count: u32,
}

#[derive(Default)]
struct Q {
    config: Option<QueueConfig>,
    msgs: Vec<Msg>,
}

/// SQS-like queues in memory (visibility, receive counts, dead-letter
/// redrive, size limit).
#[derive(Default)]
pub struct MemQueue {
    queues: Mutex<HashMap<String, Q>>,
    /// Deletes on this queue fail (once each) while > 0.
    pub fail_deletes: Mutex<HashMap<String, usize>>,
    /// Total receives per message id.
    pub receives: Mutex<HashMap<String, u32>>,
}

impl MemQueue {
    /// Bodies of all messages of a queue.
    pub fn bodies(&self, queue: &str) -> Vec<String> {
        self.queues.lock().unwrap().get(queue).map(|q| q.msgs.iter().map(|m| m.body.clone()).collect()).unwrap_or_default()
    }
}

#[async_trait]
impl MessageQueue for MemQueue {
    async fn create_queue(&self, queue: &str, config: &QueueConfig) -> Result<()> {
        self.queues.lock().unwrap().entry(queue.into()).or_default().config = Some(config.clone());
        Ok(())
    }
    async fn send(&self, queue: &str, body: &str) -> Result<String> {
        let mut qs = self.queues.lock().unwrap();
        let q = qs.get_mut(queue).ok_or_else(|| PortError::NoSuchQueue(queue.into()))?;
        let limit = q.config.as_ref().unwrap().max_message_size;
        if body.len() > limit {
            return Err(PortError::MessageTooLarge { queue: queue.into(), size: body.len(), limit });
        }
        let id = uuid::Uuid::new_v4().to_string();
        q.msgs.push(Msg { id: id.clone(), body: body.into(), receipt: String::new(), visible_at: Instant::now(), receive_count: 0 });
        Ok(id)
    }
    async fn receive(&self, queue: &str, max: usize, wait: Duration, visibility: Option<Duration>) -> Result<Vec<Message>> {
        let deadline = Instant::now() + wait;
        loop {
            {
                let mut qs = self.queues.lock().unwrap();
                let q = qs.get_mut(queue).ok_or_else(|| PortError::NoSuchQueue(queue.into()))?;
                let cfg = q.config.clone().unwrap();
                let vis = visibility.unwrap_or(cfg.visibility_timeout);
                let now = Instant::now();
                let mut out = Vec::new();
                let mut dead = Vec::new();
                let mut i = 0;
                while i < q.msgs.len() && out.len() < max {
                    let m = &mut q.msgs[i];
                    if m.visible_at <= now {
                        if let Some((_, n)) = &cfg.dead_letter {
                            if m.receive_count >= *n {
                                dead.push(q.msgs.remove(i));
                                continue;
                            }
                        }
                        m.receive_count += 1;
                        m.receipt = uuid::Uuid::new_v4().to_string();
                        m.visible_at = now + vis;
                        *self.receives.lock().unwrap().entry(m.id.clone()).or_default() += 1;
                        out.push(Message { id: m.id.clone(), body: m.body.clone(), receipt: m.receipt.clone(), receive_count: m.receive_count });
                    }
                    i += 1;
                }
                if let Some((dlq, _)) = &cfg.dead_letter {
                    let d = qs.get_mut(dlq).unwrap();
                    for mut m in dead {
                        m.visible_at = now;
                        d.msgs.push(m);
                    }
                }
                if !out.is_empty() {
                    return Ok(out);
                }
            }
            if Instant::now() >= deadline {
                return Ok(vec![]);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    async fn delete(&self, queue: &str, receipt: &str) -> Result<()> {
        {
            let mut f = self.fail_deletes.lock().unwrap();
            if let Some(n) = f.get_mut(queue) {
                if *n > 0 {
                    *n -= 1;
                    return Err(PortError::Unavailable("injected delete failure".into()));
                }
            }
        }
        let mut qs = self.queues.lock().unwrap();
        let q = qs.get_mut(queue).ok_or_else(|| PortError::NoSuchQueue(queue.into()))?;
        let i = q.msgs.iter().position(|m| m.receipt == receipt).ok_or_else(|| PortError::InvalidReceipt(queue.into()))?;
        q.msgs.remove(i);
        Ok(())
    }
    async fn change_visibility(&self, queue: &str, receipt: &str, timeout: Duration) -> Result<()> {
        let mut qs = self.queues.lock().unwrap();
        let q = qs.get_mut(queue).ok_or_else(|| PortError::NoSuchQueue(queue.into()))?;
        let m = q.msgs.iter_mut().find(|m| m.receipt == receipt).ok_or_else(|| PortError::InvalidReceipt(queue.into()))?;
        m.visible_at = Instant::now() + timeout;
        Ok(())
    }
    async fn depth(&self, queue: &str) -> Result<QueueDepth> {
        let qs = self.queues.lock().unwrap();
        let q = qs.get(queue).ok_or_else(|| PortError::NoSuchQueue(queue.into()))?;
        let now = Instant::now();
        let visible = q.msgs.iter().filter(|m| m.visible_at <= now).count() as u64;
        Ok(QueueDepth { visible, in_flight: q.msgs.len() as u64 - visible })
    }
    async fn purge(&self, queue: &str) -> Result<()> {
        self.queues.lock().unwrap().get_mut(queue).ok_or_else(|| PortError::NoSuchQueue(queue.into()))?.msgs.clear();
        Ok(())
    }
}

/// A fake face engine: an image's identity is the red channel of its
/// top-left pixel; a gallery entry's embedding is `[red]`.
#[derive(Default)]
pub struct FakeEngine {
    /// Time each recognition takes.
    pub delay: Duration,
    /// Images with this red value fail transiently every time.
    pub fail_red: Option<u8>,
    /// Recognitions run.
    pub calls: AtomicUsize,
    /// Recognitions running right now / most ever at once.
    pub running: AtomicUsize,
}

impl FakeEngine {
    fn red(image: &[u8]) -> Result<u8, EngineError> {
        let img = image::load_from_memory(image).map_err(|e| EngineError::BadImage(format!("cannot decode: {e}")))?;
        Ok(img.to_rgb8().get_pixel(0, 0)[0])
    }
}

impl FaceEngine for FakeEngine {
    type Gallery = Vec<GalleryEntry>;
    fn recognizer(&self) -> String {
        "fake".into()
    }
    fn build_gallery(&self, entries: &[GalleryEntry]) -> std::result::Result<Self::Gallery, EngineError> {
        Ok(entries.to_vec())
    }
    fn recognize(&self, image: &[u8], gallery: &Self::Gallery) -> std::result::Result<Recognition, EngineError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let red = Self::red(image)?;
        if self.fail_red == Some(red) {
            return Err(EngineError::Failed("injected model failure".into()));
        }
        std::thread::sleep(self.delay);
        let hit = gallery.iter().find(|e| e.embedding.first() == Some(&(red as f32)));
        let name = hit.map(|e| e.name.clone());
        let face = FaceMatch { bbox: FaceBox { x1: 0.0, y1: 0.0, x2: 10.0, y2: 10.0 }, name: name.clone(), similarity: if hit.is_some() { 1.0 } else { 0.0 } };
        Ok(Recognition { name: name.unwrap_or_else(|| "Unknown".into()), faces: vec![face] })
    }
}

impl Enroller for FakeEngine {
    fn recognizer(&self) -> String {
        "fake".into()
    }
    fn embed(&self, image: &[u8]) -> std::result::Result<Vec<f32>, EngineError> {
        let red = Self::red(image)?;
        if red == 0 {
            return Err(EngineError::BadImage("no face found".into()));
        }
        Ok(vec![red as f32])
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
}

impl FakeFleet {
    /// A fleet whose workers run over `dep`.
    pub fn new(dep: Deployment, engine: Arc<FakeEngine>) -> Self {
        Self { dep, engine, next: AtomicUsize::new(1), entries: Mutex::new(vec![]), peak: AtomicUsize::new(0), launches: AtomicUsize::new(0) }
    }
}

#[async_trait]
impl Fleet for FakeFleet {
    async fn list(&self) -> Result<Vec<Instance>> {
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
