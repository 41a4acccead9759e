//! The app tier's loop: take a request, recognise the image, make the
//! result durable, answer, and only then acknowledge the request.
//!
//! Order per message (at-least-once, idempotent):
//! 1. receive (one at a time) with a visibility timeout, extended by a
//!    heartbeat while the job runs;
//! 2. fetch the image from the input bucket and run the engine on the
//!    worker's one model thread;
//! 3. write the output object (key = image stem, body = name; a retry
//!    writes the same object again, so there is always exactly one);
//! 4. send the response; 5. delete the request.
//!
//! Failures: unusable input (undecodable image, missing object) is answered
//! with an error at once and deleted, never retried; a transient failure
//! leaves the message for redelivery; a message received
//! [`WorkerConfig::max_attempts`] times that fails again is recorded in the
//! dead-letter queue with its error and answered with an error, so the
//! client never hangs. A message received more than `max_attempts` times
//! was abandoned by each earlier receiver (a worker that crashed or hung on
//! it, since any error it reported would have counted): it is not tried
//! again but dead-lettered and answered with an error at once, before the
//! queue's own redrive would move it silently. A malformed body is moved to
//! the dead-letter queue.

//! Batches: a worker receives up to [`WorkerConfig::batch`] requests at
//! once (one queue round trip for ten) and fetches their images
//! concurrently. The model then runs over them in groups of
//! [`WorkerConfig::embed_batch`] images, each group one
//! [`FaceEngine::analyze_many`] call (its faces embedded together), and
//! every request of a group is made durable, answered and acknowledged on
//! its own as soon as its group is done, while the next group computes. By
//! default a group is what the engine prefers
//! ([`FaceEngine::preferred_batch`]): one image on a CPU, so that the first
//! answer of a batch does not wait for the last.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use facefleet_gallery::cache::GalleryCache;
use facefleet_gallery::index::Index;
use facefleet_gallery::store::Gallery;
use facefleet_gallery::{AnalyzedFace, EngineError, FaceEngine, GalleryError};
use facefleet_ports::Message;
use tokio_util::sync::CancellationToken;

use crate::backend::Deployment;
use crate::model_thread::ModelThread;
use crate::protocol::{
    stem, DeadLetter, ErrorKind, FaceResult, Mode, Outcome, Recognition, Request, Response, ResponseError, Verification, NO_FACE, UNKNOWN,
};

/// Settings of a worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Visibility a received request gets, renewed every `heartbeat`.
    pub visibility: Duration,
    /// How often the visibility is renewed while working.
    pub heartbeat: Duration,
    /// Long-poll wait of each receive (also the longest delay before a
    /// stop request is noticed while idle).
    pub poll_wait: Duration,
    /// Attempts after which a failing request is given up (must be below the
    /// queue's dead-letter receive count).
    pub max_attempts: u32,
    /// How often a collection's gallery is checked for changes.
    pub gallery_refresh: Duration,
    /// Requests taken from the queue at once (1 to 10).
    pub batch: usize,
    /// Images analysed in one model call (their faces embedded together);
    /// `None`: the engine's [`FaceEngine::preferred_batch`].
    pub embed_batch: Option<usize>,
}

impl WorkerConfig {
    /// Most requests one receive may take (the queues' limit).
    pub const MAX_BATCH: usize = 10;
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            visibility: Duration::from_secs(15),
            heartbeat: Duration::from_secs(5),
            poll_wait: Duration::from_secs(1),
            max_attempts: 3,
            gallery_refresh: Duration::from_secs(2),
            batch: Self::MAX_BATCH,
            embed_batch: None,
        }
    }
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Answered with a result and deleted.
    Answered,
    /// Answered with an error and deleted (bad input or given up).
    Failed(String),
    /// Left on the queue for another attempt.
    Retry(String),
    /// Malformed: moved to the dead-letter queue.
    DeadLettered,
}

/// One worker: a loop over the request queue.
pub struct Worker {
    dep: Deployment,
    engine: Arc<dyn FaceEngine>,
    config: WorkerConfig,
    gallery: GalleryCache,
    /// Where the model runs: one thread, so its memory stays warm.
    model_thread: ModelThread,
}

/// Receipts of the received requests not settled yet.
type InHand = Arc<std::sync::Mutex<std::collections::HashSet<String>>>;

enum Failure {
    Permanent(String),
    Transient(String),
    /// The request's collection does not exist.
    NoSuchCollection(String),
}

/// A request with everything fetched for it.
struct Job {
    message: Message,
    request: Request,
    /// The image(s): one, two for `verify`.
    images: Vec<Bytes>,
    /// The collection's faces (`name` and `faces` modes).
    index: Option<Arc<Index>>,
}

impl Worker {
    /// A worker over `dep` using `engine`.
    pub fn new(dep: Deployment, engine: Arc<dyn FaceEngine>, config: WorkerConfig) -> Self {
        let gallery = Gallery::new(dep.store.clone(), &dep.names.gallery_bucket);
        let gallery = GalleryCache::new(gallery, engine.model_id(), config.gallery_refresh);
        Self { dep, engine, config, gallery, model_thread: ModelThread::new("facefleet-model") }
    }

    /// Object reads this worker made to load and refresh galleries (for
    /// measurements: a cold load costs a constant number, whatever the
    /// gallery's size).
    pub fn gallery_reads(&self) -> u64 {
        self.gallery.gallery().reads()
    }

    /// Runs until `stop` fires; the jobs in hand are always finished first.
    pub async fn run(self, stop: CancellationToken) {
        tracing::info!(queue = %self.dep.names.req_queue, batch = self.config.batch, "worker started");
        let batch = self.config.batch.clamp(1, WorkerConfig::MAX_BATCH);
        while !stop.is_cancelled() {
            // The receive is not cancelled midway (a message received and
            // dropped would stay invisible until its timeout): the short
            // long-poll bounds how long a stop takes to be noticed.
            let received = self
                .dep
                .queue
                .receive(&self.dep.names.req_queue, batch, self.config.poll_wait, Some(self.config.visibility))
                .await;
            match received {
                Ok(messages) if messages.is_empty() => {}
                Ok(messages) => {
                    let outcomes = self.handle_batch(messages).await;
                    tracing::debug!(?outcomes, "messages handled");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "receive failed; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        }
        tracing::info!("worker stopped");
    }

    /// Handles one received message end to end.
    pub async fn handle(&self, m: Message) -> Handled {
        self.handle_batch(vec![m]).await.pop().expect("one outcome per message")
    }

    /// Handles received messages end to end: the model runs over them in
    /// groups of [`WorkerConfig::embed_batch`] images, and each request is
    /// finished (durable, answered, acknowledged) as soon as its group is
    /// done, while the next group computes. One outcome per message, in
    /// order.
    pub async fn handle_batch(&self, messages: Vec<Message>) -> Vec<Handled> {
        use futures::stream::{FuturesUnordered, StreamExt};
        let mut outcomes: Vec<Option<Handled>> = vec![None; messages.len()];
        let mut ready = Vec::new();
        for (i, m) in messages.into_iter().enumerate() {
            match self.admit(m).await {
                Ok(job) => ready.push((i, job)),
                Err(handled) => outcomes[i] = Some(handled),
            }
        }
        if !ready.is_empty() {
            let started = Instant::now();
            // The requests still in hand: the heartbeat renews these, and
            // each leaves the set once it is settled.
            let in_hand: InHand = Arc::new(std::sync::Mutex::new(ready.iter().map(|(_, (m, _))| m.receipt.clone()).collect()));
            let heartbeat = self.start_heartbeat(in_hand.clone());
            let fetched = futures::future::join_all(ready.into_iter().map(|(i, (m, r))| async move { (i, self.fetch(m, r).await) })).await;
            let mut jobs = Vec::new();
            for (i, f) in fetched {
                match f {
                    Ok(job) => jobs.push((i, job)),
                    Err((m, r, failure)) => {
                        outcomes[i] = Some(self.finish_failed(&m, &r, failure).await);
                        in_hand.lock().unwrap_or_else(|p| p.into_inner()).remove(&m.receipt);
                    }
                }
            }
            let group = self.config.embed_batch.unwrap_or_else(|| self.engine.preferred_batch()).max(1);
            // Answers in flight: each is made durable, sent and acknowledged
            // on its own, concurrently with the next group's model work, so
            // that neither a slow store round trip nor a later image delays
            // an answer.
            let mut finishing = FuturesUnordered::new();
            for chunk in jobs.chunks(group) {
                let compute = self.compute(chunk);
                tokio::pin!(compute);
                let results = loop {
                    tokio::select! {
                        results = &mut compute => break results,
                        Some((i, handled)) = finishing.next(), if !finishing.is_empty() => outcomes[i] = Some(handled),
                    }
                };
                for ((i, job), result) in chunk.iter().zip(results) {
                    let in_hand = &in_hand;
                    finishing.push(async move {
                        let handled = match result {
                            Ok(outcome) => self.finish(job, outcome, started).await,
                            Err(failure) => self.finish_failed(&job.message, &job.request, failure).await,
                        };
                        in_hand.lock().unwrap_or_else(|p| p.into_inner()).remove(&job.message.receipt);
                        (*i, handled)
                    });
                }
            }
            while let Some((i, handled)) = finishing.next().await {
                outcomes[i] = Some(handled);
            }
            heartbeat.cancel();
        }
        outcomes.into_iter().map(|o| o.expect("every message handled")).collect()
    }

    /// Parses a message; malformed and abandoned ones are settled here.
    async fn admit(&self, m: Message) -> Result<(Message, Request), Handled> {
        let req: Request = match serde_json::from_str(&m.body) {
            Ok(r) => r,
            Err(e) => {
                let error = format!("malformed request body: {e}");
                tracing::warn!(%error, body = %m.body, "dead-lettering");
                return Err(match self.dead_letter(&m, &error).await {
                    Ok(()) => {
                        self.ack(&m).await;
                        Handled::DeadLettered
                    }
                    Err(e) => Handled::Retry(e),
                });
            }
        };
        if m.receive_count > self.config.max_attempts {
            let msg = format!(
                "abandoned {} times: the worker handling it crashed or stopped responding",
                m.receive_count - 1
            );
            return Err(self.give_up(&m, &req, ErrorKind::Failed, msg, true).await);
        }
        Ok((m, req))
    }

    /// Fetches a request's images and its collection's faces.
    async fn fetch(&self, message: Message, request: Request) -> Result<Job, (Message, Request, Failure)> {
        let mut keys = vec![request.key.clone()];
        match (request.mode, &request.other_key) {
            (Mode::Verify, Some(other)) => keys.push(other.clone()),
            (Mode::Verify, None) => {
                return Err((message, request, Failure::Permanent("a verify request needs two images".into())));
            }
            _ => {}
        }
        let mut images = Vec::with_capacity(keys.len());
        for key in &keys {
            match self.dep.store.get(&self.dep.names.in_bucket, key).await {
                Ok(b) => images.push(b),
                Err(e) if e.is_not_found() => {
                    let f = Failure::Permanent(format!("image `{key}` is not in the input bucket"));
                    return Err((message, request, f));
                }
                Err(e) => return Err((message, request, Failure::Transient(format!("reading the image failed: {e}")))),
            }
        }
        let index = match request.mode {
            Mode::Name | Mode::Faces => match self.gallery.index(&request.collection).await {
                Ok(i) => Some(i),
                Err(GalleryError::NoSuchCollection(c)) => {
                    return Err((message, request, Failure::NoSuchCollection(format!("no collection named `{c}`"))));
                }
                Err(e) => return Err((message, request, Failure::Transient(format!("loading the gallery failed: {e}")))),
            },
            Mode::Detect | Mode::Verify => None,
        };
        Ok(Job { message, request, images, index })
    }

    /// Runs the model over every job on the worker's model thread: the
    /// faces of all `name`/`faces` images in one batch.
    async fn compute(&self, jobs: &[(usize, Job)]) -> Vec<Result<Outcome, Failure>> {
        if jobs.is_empty() {
            return Vec::new();
        }
        let engine = self.engine.clone();
        let inputs: Vec<ModelInput> =
            jobs.iter().map(|(_, j)| (j.request.clone(), j.images.clone(), j.index.clone())).collect();
        let n = inputs.len();
        match self.model_thread.run(move || compute_blocking(engine.as_ref(), &inputs)).await {
            Ok(results) => results,
            Err(e) => (0..n).map(|_| Err(Failure::Transient(format!("the model failed: {e}")))).collect(),
        }
    }

    /// Visibility periods ([`WorkerConfig::visibility`]) for which the
    /// heartbeat renews the requests of one batch at most: 60 s by default
    /// (the web tier's request timeout), against a few seconds for a batch's
    /// work. A worker that froze, or waits that long for a compute slot,
    /// then lets its requests go: they become visible again (within one
    /// more visibility period) and another worker answers them. If this
    /// one finishes later all the same, it rewrites the same output object,
    /// the dispatcher drops its duplicate response, and its delete, with a
    /// receipt made stale by the new receive, is refused and only logged.
    pub const MAX_LEASE_PERIODS: u32 = 4;

    /// Renews the visibility of the requests in hand every
    /// [`WorkerConfig::heartbeat`], for at most [`Self::MAX_LEASE_PERIODS`]
    /// visibility periods after the batch was received; cancel the token to
    /// stop it.
    fn start_heartbeat(&self, in_hand: InHand) -> CancellationToken {
        let token = CancellationToken::new();
        let t = token.clone();
        let queue = self.dep.queue.clone();
        let name = self.dep.names.req_queue.clone();
        let (every, vis) = (self.config.heartbeat, self.config.visibility);
        let limit = vis * Self::MAX_LEASE_PERIODS;
        let renew_until = Instant::now() + limit;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = t.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                if Instant::now() >= renew_until {
                    tracing::warn!(
                        requests = in_hand.lock().unwrap_or_else(|p| p.into_inner()).len(),
                        limit_s = limit.as_secs_f64(),
                        "batch still unfinished after the lease limit: no longer renewing its requests, which other workers will take"
                    );
                    return;
                }
                let receipts: Vec<String> = in_hand.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
                for receipt in &receipts {
                    if let Err(e) = queue.change_visibility(&name, receipt, vis).await {
                        tracing::warn!(error = %e, "extending visibility failed");
                    }
                }
            }
        });
        token
    }

    /// Makes a result durable, answers it, then acknowledges the request.
    async fn finish(&self, job: &Job, outcome: Outcome, started: Instant) -> Handled {
        let (m, req) = (&job.message, &job.request);
        if let Outcome::Ok(rec) = &outcome {
            if matches!(req.mode, Mode::Name | Mode::Faces) {
                let put = self.dep.store.put(&self.dep.names.out_bucket, stem(&req.key), Bytes::from(rec.name.clone())).await;
                if let Err(e) = put {
                    return self.retry(m, format!("writing the result failed: {e}")).await;
                }
            }
        }
        let summary = match &outcome {
            Outcome::Ok(rec) => rec.name.clone(),
            Outcome::Verified(v) => format!("same={} similarity={:.3}", v.same, v.similarity),
            Outcome::Err(e) => e.message.clone(),
        };
        if let Err(e) = self.respond(req, outcome).await {
            return self.retry(m, e).await;
        }
        self.ack(m).await;
        metrics::histogram!("facefleet_worker_job_seconds").record(started.elapsed().as_secs_f64());
        tracing::info!(key = %req.key, mode = ?req.mode, answer = %summary, ms = started.elapsed().as_millis() as u64, "answered");
        Handled::Answered
    }

    /// Settles a job that failed: an error answer for bad input or after
    /// the last attempt, otherwise another attempt later.
    async fn finish_failed(&self, m: &Message, req: &Request, failure: Failure) -> Handled {
        match failure {
            Failure::Permanent(msg) => self.give_up(m, req, ErrorKind::BadInput, msg, false).await,
            Failure::NoSuchCollection(msg) => self.give_up(m, req, ErrorKind::NoSuchCollection, msg, false).await,
            Failure::Transient(msg) if m.receive_count >= self.config.max_attempts => {
                let msg = format!("gave up after {} attempts: {msg}", m.receive_count);
                self.give_up(m, req, ErrorKind::Failed, msg, true).await
            }
            Failure::Transient(msg) => self.retry(m, msg).await,
        }
    }

    async fn respond(&self, req: &Request, result: Outcome) -> Result<(), String> {
        let resp = Response { request_id: req.request_id.clone(), key: req.key.clone(), result, expires_at_ms: req.expires_at_ms };
        let body = serde_json::to_string(&resp).expect("response serialises");
        self.dep.queue.send(&self.dep.names.resp_queue, &body).await.map(|_| ()).map_err(|e| format!("sending the response failed: {e}"))
    }

    async fn dead_letter(&self, m: &Message, error: &str) -> Result<(), String> {
        let record = DeadLetter { body: m.body.clone(), error: error.to_string(), receive_count: m.receive_count };
        let body = serde_json::to_string(&record).expect("dead letter serialises");
        self.dep.queue.send(&self.dep.names.req_dlq, &body).await.map(|_| ()).map_err(|e| format!("dead-lettering failed: {e}"))
    }

    async fn give_up(&self, m: &Message, req: &Request, kind: ErrorKind, message: String, record: bool) -> Handled {
        tracing::warn!(key = %req.key, %message, "answering with an error");
        metrics::counter!("facefleet_worker_failures_total").increment(1);
        if record {
            if let Err(e) = self.dead_letter(m, &message).await {
                return self.retry(m, e).await;
            }
        }
        if let Err(e) = self.respond(req, Outcome::Err(ResponseError { kind, message: message.clone() })).await {
            return self.retry(m, e).await;
        }
        self.ack(m).await;
        Handled::Failed(message)
    }

    async fn retry(&self, m: &Message, reason: String) -> Handled {
        tracing::warn!(%reason, attempt = m.receive_count, "leaving the request for another attempt");
        // Back off a little, longer with each attempt.
        let backoff = Duration::from_millis(500 * u64::from(m.receive_count.min(10)));
        let _ = self.dep.queue.change_visibility(&self.dep.names.req_queue, &m.receipt, backoff).await;
        Handled::Retry(reason)
    }

    async fn ack(&self, m: &Message) {
        if let Err(e) = self.dep.queue.delete(&self.dep.names.req_queue, &m.receipt).await {
            // The result is durable; a redelivery rewrites the same object.
            tracing::warn!(error = %e, "deleting the request failed; it may be processed again (idempotent)");
        }
    }
}

/// What the model needs of one job: the request, its images and the
/// gallery index it searches (none for `detect`).
type ModelInput = (Request, Vec<Bytes>, Option<Arc<Index>>);

/// The model work of a batch: one `analyze_many` over the images of every
/// `name`/`faces` job, then one call per `detect`/`verify` job.
fn compute_blocking(engine: &dyn FaceEngine, jobs: &[ModelInput]) -> Vec<Result<Outcome, Failure>> {
    let searched: Vec<usize> = (0..jobs.len()).filter(|&i| matches!(jobs[i].0.mode, Mode::Name | Mode::Faces)).collect();
    let max_faces = searched.iter().map(|&i| jobs[i].0.options.max_faces).max().unwrap_or(1);
    let images: Vec<&[u8]> = searched.iter().map(|&i| jobs[i].1[0].as_ref()).collect();
    let mut analyzed = if images.is_empty() { Vec::new() } else { engine.analyze_many(&images, max_faces) };
    analyzed.reverse();
    jobs.iter()
        .map(|(req, images, index)| match req.mode {
            Mode::Name | Mode::Faces => {
                let faces = analyzed.pop().expect("one analysis per searched image").map_err(engine_failure)?;
                let index = index.as_ref().expect("searched jobs carry their index");
                Ok(Outcome::Ok(identify(engine, req, faces, index)))
            }
            Mode::Detect => {
                let faces = engine.analyze(&images[0], req.options.max_faces, false).map_err(engine_failure)?;
                let name = if faces.is_empty() { NO_FACE } else { UNKNOWN };
                Ok(Outcome::Ok(Recognition {
                    name: name.to_string(),
                    faces: faces.iter().map(FaceResult::detected).collect(),
                    threshold: 0.0,
                    model: engine.model_id().to_string(),
                }))
            }
            Mode::Verify => verify(engine, req, &images[0], &images[1]).map(Outcome::Verified),
        })
        .collect()
}

/// Names the faces of one image from its collection's index.
fn identify(engine: &dyn FaceEngine, req: &Request, mut faces: Vec<AnalyzedFace>, index: &Index) -> Recognition {
    faces.truncate(req.options.max_faces);
    let threshold = req.options.threshold.unwrap_or_else(|| engine.open_set_threshold(index.people()));
    let results: Vec<FaceResult> = faces
        .iter()
        .map(|f| {
            let candidates = index.search(&f.embedding, req.options.limit);
            let (name, similarity) = match candidates.first() {
                Some(best) if best.similarity >= threshold => (Some(best.person.clone()), best.similarity),
                Some(best) => (None, best.similarity),
                None => (None, 0.0),
            };
            FaceResult { name, similarity, candidates, ..FaceResult::detected(f) }
        })
        .collect();
    let name = match results.first() {
        None => NO_FACE.to_string(),
        Some(f) => f.name.clone().unwrap_or_else(|| UNKNOWN.to_string()),
    };
    Recognition { name, faces: results, threshold, model: engine.model_id().to_string() }
}

/// Compares the largest faces of two images.
fn verify(engine: &dyn FaceEngine, req: &Request, a: &[u8], b: &[u8]) -> Result<Verification, Failure> {
    let largest = |image: &[u8], which: &str| -> Result<AnalyzedFace, Failure> {
        let mut faces = engine.analyze(image, 1, true).map_err(engine_failure)?;
        if faces.is_empty() {
            return Err(Failure::Permanent(format!("image `{which}` has no face")));
        }
        Ok(faces.swap_remove(0))
    };
    let (fa, fb) = (largest(a, "a")?, largest(b, "b")?);
    let similarity: f32 = fa.embedding.iter().zip(&fb.embedding).map(|(x, y)| x * y).sum();
    let threshold = req.options.threshold.unwrap_or_else(|| engine.threshold());
    Ok(Verification {
        similarity,
        same: similarity >= threshold,
        threshold,
        model: engine.model_id().to_string(),
        a: FaceResult::detected(&fa),
        b: FaceResult::detected(&fb),
    })
}

fn engine_failure(e: EngineError) -> Failure {
    match e {
        EngineError::BadImage { message } => Failure::Permanent(message),
        EngineError::Failed { message, source } => match source {
            Some(s) => Failure::Transient(format!("{message}: {s}")),
            None => Failure::Transient(message),
        },
    }
}
