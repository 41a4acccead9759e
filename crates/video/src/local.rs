//! The embedded-mode trigger: S3-style notifications on one machine.
//!
//! [`spawn_trigger`] polls `<prefix>-input` and `<prefix>-stage-1` in the
//! object store and, for every new object, builds the same [`S3Event`]
//! ([`crate::event::object_created`]) that S3 would send and hands it to the
//! same handlers the Lambda functions run, at most `concurrency` at a time
//! per function (default 5, the course's minimum Lambda concurrency).
//!
//! Handled objects are remembered durably as marker objects in the state
//! bucket (`<prefix>-video-trigger`, keys `split/<input key>` and
//! `recognize/<frame key>`, body: the object's size), written only after
//! the handler finished. So a restart neither reprocesses finished work nor
//! loses work that was in progress (it is redone; the handlers are
//! idempotent). An object re-uploaded with a different size is processed
//! again; the port tells no more than key and size, so a re-upload of the
//! same size is announced with [`request_split`] (`POST /v1/videos` does):
//! a durable request `upload/<nonce>/<input key>` in the state bucket, which
//! makes the next scan split the video again, removed once that split is
//! done (one made meanwhile stays and splits it once more).
//! An invocation that fails with a retryable error is retried with
//! exponential backoff, at most `max_attempts` times; then the failure is
//! recorded (`<stem>.error`) and the object is marked done: no retry storm.
//!
//! [`S3Event`]: aws_lambda_events::event::s3::S3Event

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use facefleet_ports::{Names, ObjectStore, PortError};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use crate::event::object_created;
use crate::ffmpeg::Ffmpeg;
use crate::keys::{parse_frame_key, video_stem};
use crate::recognize::RecognizeHandler;
use facefleet_gallery::FaceEngine;
use crate::split::{SplitConfig, SplitHandler};
use crate::{metrics, VideoError};

/// Settings of the local trigger.
#[derive(Debug, Clone)]
pub struct TriggerConfig {
    /// Most invocations running at once, per function (default 5).
    pub concurrency: usize,
    /// Pause between two scans of the buckets (default 500 ms).
    pub poll_interval: Duration,
    /// Attempts of an invocation that keeps failing with a retryable error
    /// before its failure is recorded (default 3).
    pub max_attempts: u32,
    /// Delay before the first retry; doubled for each further one
    /// (default 1 s).
    pub retry_backoff: Duration,
    /// Settings of the splitter.
    pub split: SplitConfig,
    /// The ffmpeg binary (found by [`Ffmpeg::locate`] when `None`).
    pub ffmpeg: Option<PathBuf>,
    /// Bucket of the markers (`<prefix>-video-trigger` when `None`).
    /// [`crate::http::VideoApi`] announces re-uploads there: give it the
    /// same bucket ([`crate::http::VideoApi::with_trigger_state_bucket`]).
    pub state_bucket: Option<String>,
    /// How often the gallery is checked for changes while frames arrive
    /// (default 2 s, as the workers).
    pub gallery_refresh: Duration,
}

impl Default for TriggerConfig {
    fn default() -> Self {
        Self {
            concurrency: 5,
            poll_interval: Duration::from_millis(500),
            max_attempts: 3,
            retry_backoff: Duration::from_secs(1),
            split: SplitConfig::default(),
            ffmpeg: None,
            state_bucket: None,
            gallery_refresh: crate::recognize::GALLERY_REFRESH,
        }
    }
}

/// The two functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Function {
    Split,
    Recognize,
}

impl Function {
    fn marker_prefix(self) -> &'static str {
        match self {
            Function::Split => "split/",
            Function::Recognize => "recognize/",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Function::Split => metrics::SPLIT,
            Function::Recognize => metrics::RECOGNIZE,
        }
    }
}

/// Counters of a running trigger.
#[derive(Debug, Default)]
pub struct TriggerStats {
    split_running: AtomicUsize,
    split_max: AtomicUsize,
    split_done: AtomicUsize,
    recognize_running: AtomicUsize,
    recognize_max: AtomicUsize,
    recognize_done: AtomicUsize,
    idle_scans: AtomicUsize,
}

impl TriggerStats {
    fn counters(&self, f: Function) -> (&AtomicUsize, &AtomicUsize, &AtomicUsize) {
        match f {
            Function::Split => (&self.split_running, &self.split_max, &self.split_done),
            Function::Recognize => (&self.recognize_running, &self.recognize_max, &self.recognize_done),
        }
    }
    /// Most video-splitting invocations seen running at once.
    pub fn split_max_concurrency(&self) -> usize {
        self.split_max.load(Ordering::SeqCst)
    }
    /// Most face-recognition invocations seen running at once.
    pub fn recognize_max_concurrency(&self) -> usize {
        self.recognize_max.load(Ordering::SeqCst)
    }
    /// Finished video-splitting invocations.
    pub fn split_invocations(&self) -> usize {
        self.split_done.load(Ordering::SeqCst)
    }
    /// Consecutive scans that found nothing to do, with nothing running
    /// and no retry pending (0 while busy).
    pub fn idle_scans(&self) -> usize {
        self.idle_scans.load(Ordering::SeqCst)
    }
    /// Finished face-recognition invocations.
    pub fn recognize_invocations(&self) -> usize {
        self.recognize_done.load(Ordering::SeqCst)
    }
}

#[derive(Default)]
struct State {
    /// Handled objects and the size they had.
    done: HashMap<(Function, String), u64>,
    in_flight: HashSet<(Function, String)>,
    /// Failed attempts and when the next may start.
    retries: HashMap<(Function, String), (u32, Instant)>,
}

struct Shared {
    store: Arc<dyn ObjectStore>,
    names: Names,
    state_bucket: String,
    config: TriggerConfig,
    split: SplitHandler,
    recognize: RecognizeHandler,
    split_slots: Semaphore,
    recognize_slots: Semaphore,
    state: Mutex<State>,
    wake: Notify,
    stats: Arc<TriggerStats>,
}

/// A running local trigger.
pub struct Trigger {
    task: JoinHandle<()>,
    stop: watch::Sender<bool>,
    stats: Arc<TriggerStats>,
}

impl Trigger {
    /// Counters (concurrency reached, invocations).
    pub fn stats(&self) -> Arc<TriggerStats> {
        self.stats.clone()
    }

    /// Stops scanning, lets the running invocations finish, and returns.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Stops at once, abandoning running invocations (they are redone after
    /// a restart: their markers were not written).
    pub fn abort(self) {
        self.task.abort();
    }
}

/// Starts the local trigger: creates the buckets, loads the markers, and
/// spawns the polling task. `engine` is the face model.
pub async fn spawn_trigger(
    store: Arc<dyn ObjectStore>,
    names: Names,
    engine: Arc<dyn FaceEngine>,
    config: TriggerConfig,
) -> Result<Trigger, VideoError> {
    let ffmpeg = Ffmpeg::locate(config.ffmpeg.as_deref())?;
    let state_bucket = config.state_bucket.clone().unwrap_or_else(|| names.video_trigger_state.clone());
    for bucket in [&names.video_input, &names.video_stage1, &names.video_output, &names.gallery_bucket, &state_bucket]
    {
        store.create_bucket(bucket).await?;
    }
    let mut state = State::default();
    for f in [Function::Split, Function::Recognize] {
        for meta in store.list_all(&state_bucket, f.marker_prefix()).await? {
            let body = store.get(&state_bucket, &meta.key).await?;
            let size = String::from_utf8_lossy(&body).trim().parse::<u64>().unwrap_or(u64::MAX);
            let key = &meta.key[f.marker_prefix().len()..];
            state.done.insert((f, key.to_string()), size);
        }
    }
    // What a crashed process left in the split folder (`crate::temp`).
    let swept = sweep_split_folder(&config).await;
    tracing::info!(
        ffmpeg = %ffmpeg.path().display(), concurrency = config.concurrency, remembered = state.done.len(),
        input = names.video_input, swept, "local video trigger started"
    );
    let concurrency = config.concurrency.max(1);
    let stats = Arc::new(TriggerStats::default());
    let shared = Arc::new(Shared {
        split: SplitHandler::new(store.clone(), names.clone(), ffmpeg, config.split.clone()),
        recognize: RecognizeHandler::new(store.clone(), names.clone(), engine).with_gallery_refresh(config.gallery_refresh),
        store,
        names,
        state_bucket,
        config,
        split_slots: Semaphore::new(concurrency),
        recognize_slots: Semaphore::new(concurrency),
        state: Mutex::new(state),
        wake: Notify::new(),
        stats: stats.clone(),
    });
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run(shared, stop_rx));
    Ok(Trigger { task, stop, stats })
}

/// Removes the leftover split folders of a crashed process; returns how
/// many (0 when the folder cannot be read: logged).
async fn sweep_split_folder(config: &TriggerConfig) -> usize {
    let (dir, min_age) = crate::temp::sweep_policy(config.split.temp_dir.as_deref());
    let swept = tokio::task::spawn_blocking(move || {
        let swept = crate::temp::sweep(&dir, crate::temp::SPLIT_PREFIX, min_age);
        swept.map_err(|e| (dir, e))
    })
    .await;
    match swept {
        Ok(Ok(n)) => n,
        Ok(Err((dir, e))) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot sweep the split folder");
            0
        }
        Err(e) => {
            tracing::warn!(error = %e, "the sweep of the split folder failed");
            0
        }
    }
}

/// Prefix of the split requests in the state bucket.
const REQUEST_PREFIX: &str = "upload/";

/// Asks the local trigger to split the video `key` of the input bucket
/// again, even if it already split an object of that key and size: call it
/// after storing a re-upload. `state_bucket` is the trigger's
/// ([`TriggerConfig::state_bucket`]). The request is durable: a trigger
/// that is down honours it when it starts. Returns `false` when the state
/// bucket does not exist: no local trigger ever ran on this store (on AWS,
/// S3 notifies every upload by itself).
pub async fn request_split(store: &dyn ObjectStore, state_bucket: &str, key: &str) -> Result<bool, PortError> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let nonce = format!("{nanos:x}-{:x}-{:x}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    match store.put(state_bucket, &format!("{REQUEST_PREFIX}{nonce}/{key}"), Bytes::new()).await {
        Ok(()) => Ok(true),
        Err(PortError::NoSuchBucket(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The pending split requests, by input key: the request objects' keys.
async fn split_requests(shared: &Shared) -> Result<HashMap<String, Vec<String>>, VideoError> {
    let mut requests: HashMap<String, Vec<String>> = HashMap::new();
    for meta in shared.store.list_all(&shared.state_bucket, REQUEST_PREFIX).await? {
        if let Some((_, key)) = meta.key[REQUEST_PREFIX.len()..].split_once('/') {
            requests.entry(key.to_string()).or_default().push(meta.key.clone());
        }
    }
    Ok(requests)
}

/// Deletes split requests (done, or for a video no longer there).
async fn drop_requests(shared: &Shared, requests: &[String]) {
    for request in requests {
        if let Err(e) = shared.store.delete(&shared.state_bucket, request).await {
            tracing::warn!(request, error = %e, "cannot delete a split request; the video will be split again");
        }
    }
}

async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut jobs = JoinSet::new();
    let mut last_sweep = Instant::now();
    loop {
        if *stop.borrow() {
            break;
        }
        if last_sweep.elapsed() >= crate::temp::SWEEP_EVERY {
            last_sweep = Instant::now();
            let shared = shared.clone();
            jobs.spawn(async move {
                sweep_split_folder(&shared.config).await;
            });
        }
        let mut busy = false;
        for (f, bucket) in
            [(Function::Split, &shared.names.video_input), (Function::Recognize, &shared.names.video_stage1)]
        {
            match scan(&shared, f, bucket, &mut jobs).await {
                Ok(dispatched) => busy |= dispatched > 0,
                Err(e) => {
                    busy = true;
                    tracing::warn!(bucket, error = %e, "local video trigger: scan failed");
                }
            }
        }
        {
            let state = shared.state.lock().expect("trigger state lock");
            busy |= !state.in_flight.is_empty() || !state.retries.is_empty();
        }
        if busy {
            shared.stats.idle_scans.store(0, Ordering::SeqCst);
        } else {
            shared.stats.idle_scans.fetch_add(1, Ordering::SeqCst);
        }
        while jobs.try_join_next().is_some() {}
        tokio::select! {
            _ = tokio::time::sleep(shared.config.poll_interval) => {}
            _ = shared.wake.notified() => {}
            _ = stop.changed() => {}
        }
    }
    while jobs.join_next().await.is_some() {}
    tracing::info!("local video trigger stopped");
}

async fn scan(
    shared: &Arc<Shared>,
    f: Function,
    bucket: &str,
    jobs: &mut JoinSet<()>,
) -> Result<usize, VideoError> {
    let mut dispatched = 0;
    // Requests first: one is written after its video was stored, so a
    // request whose video is not listed next is for a deleted video.
    let mut requests = match f {
        Function::Split => split_requests(shared).await?,
        Function::Recognize => HashMap::new(),
    };
    let listed = shared.store.list_all(bucket, "").await?;
    let now = Instant::now();
    {
        let mut state = shared.state.lock().expect("trigger state lock");
        for meta in listed {
            if f == Function::Recognize && parse_frame_key(&meta.key).is_none() {
                continue;
            }
            let requested = requests.remove(&meta.key).unwrap_or_default();
            let id = (f, meta.key.clone());
            let done = requested.is_empty() && state.done.get(&id) == Some(&meta.size);
            if done || state.in_flight.contains(&id) {
                continue;
            }
            if state.retries.get(&id).is_some_and(|(_, at)| *at > now) {
                continue;
            }
            state.in_flight.insert(id);
            let shared = shared.clone();
            let bucket = bucket.to_string();
            jobs.spawn(async move { invoke(shared, f, bucket, meta.key, meta.size, requested).await });
            dispatched += 1;
        }
    }
    let orphans: Vec<String> = requests.into_values().flatten().collect();
    drop_requests(shared, &orphans).await;
    Ok(dispatched)
}

/// Runs one invocation; `requests` are the split requests it answers,
/// deleted once it is done.
async fn invoke(shared: Arc<Shared>, f: Function, bucket: String, key: String, size: u64, requests: Vec<String>) {
    let slots = match f {
        Function::Split => &shared.split_slots,
        Function::Recognize => &shared.recognize_slots,
    };
    let _permit = slots.acquire().await.expect("semaphore never closed");
    let (running, max, done) = shared.stats.counters(f);
    let now_running = running.fetch_add(1, Ordering::SeqCst) + 1;
    max.fetch_max(now_running, Ordering::SeqCst);
    metrics::in_flight(f.name(), now_running);
    tracing::debug!(function = f.name(), key, concurrency = now_running, "invocation start");

    let event = object_created(&bucket, &key, size);
    let result = match f {
        Function::Split => shared.split.handle(&event).await,
        Function::Recognize => shared.recognize.handle(&event).await,
    };
    let left = running.fetch_sub(1, Ordering::SeqCst) - 1;
    metrics::in_flight(f.name(), left);
    done.fetch_add(1, Ordering::SeqCst);

    let id = (f, key.clone());
    let finished = match result {
        Ok(_) => true,
        Err(e) => {
            let attempts = {
                let mut state = shared.state.lock().expect("trigger state lock");
                let entry = state.retries.entry(id.clone()).or_insert((0, Instant::now()));
                entry.0 += 1;
                let backoff = shared.config.retry_backoff * 2u32.saturating_pow(entry.0 - 1);
                entry.1 = Instant::now() + backoff;
                entry.0
            };
            if attempts >= shared.config.max_attempts {
                tracing::error!(function = f.name(), key, attempts, error = %e, "invocation failed; giving up");
                let reason = format!("gave up after {attempts} attempts: {}", e.public_message());
                let recorded = match f {
                    Function::Split => shared.split.record_failure(&key, reason).await,
                    Function::Recognize => shared.recognize.record_failure(&key, reason).await,
                };
                match recorded {
                    Ok(_) => true,
                    Err(e2) => {
                        tracing::error!(key, error = %e2, "cannot record the failure; will retry");
                        false
                    }
                }
            } else {
                tracing::warn!(function = f.name(), key, attempts, error = %e, "invocation failed; will retry");
                false
            }
        }
    };
    if f == Function::Split && finished {
        // The splitter replaced this video's frames: forget that the old
        // ones were recognised, or identical new frames would be skipped.
        if let Err(e) = forget_frames(&shared, video_stem(&key)).await {
            tracing::warn!(key, error = %e, "cannot reset the frame markers; will split again");
            shared.state.lock().expect("trigger state lock").in_flight.remove(&id);
            return;
        }
        shared.wake.notify_one();
    }
    if finished {
        let marker = format!("{}{}", f.marker_prefix(), key);
        match shared.store.put(&shared.state_bucket, &marker, Bytes::from(size.to_string())).await {
            Ok(()) => {
                {
                    let mut state = shared.state.lock().expect("trigger state lock");
                    state.done.insert(id.clone(), size);
                    state.retries.remove(&id);
                }
                drop_requests(&shared, &requests).await;
            }
            Err(e) => tracing::warn!(key, error = %e, "cannot write the trigger marker; the object will be handled again"),
        }
    }
    shared.state.lock().expect("trigger state lock").in_flight.remove(&id);
}

/// Drops the recognition markers of the frames of `stem`, durably.
async fn forget_frames(shared: &Shared, stem: &str) -> Result<(), VideoError> {
    let of_stem = |frame_key: &str| parse_frame_key(frame_key).is_some_and(|(s, _)| s == stem);
    let prefix = format!("{}{stem}/", Function::Recognize.marker_prefix());
    for meta in shared.store.list_all(&shared.state_bucket, &prefix).await? {
        let frame = &meta.key[Function::Recognize.marker_prefix().len()..];
        if of_stem(frame) {
            shared.store.delete(&shared.state_bucket, &meta.key).await?;
        }
    }
    let mut state = shared.state.lock().expect("trigger state lock");
    state.done.retain(|(f, k), _| !(*f == Function::Recognize && of_stem(k)));
    Ok(())
}

/// Runs the local trigger until `shutdown` completes, then lets running
/// invocations finish: the shape `facefleet up` runs background tasks in.
///
/// ```no_run
/// # async fn demo(store: std::sync::Arc<dyn facefleet_ports::ObjectStore>, names: facefleet_ports::Names,
/// #               engine: std::sync::Arc<dyn facefleet_gallery::FaceEngine>, stop: tokio::sync::oneshot::Receiver<()>)
/// #               -> Result<(), facefleet_video::VideoError> {
/// use facefleet_video::{local, TriggerConfig};
/// local::run_until(store, names, engine, TriggerConfig::default(), async { let _ = stop.await; }).await
/// # }
/// ```
pub async fn run_until(
    store: Arc<dyn ObjectStore>,
    names: Names,
    engine: Arc<dyn FaceEngine>,
    config: TriggerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), VideoError> {
    let trigger = spawn_trigger(store, names, engine, config).await?;
    shutdown.await;
    trigger.shutdown().await;
    Ok(())
}
