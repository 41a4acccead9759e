//! The app tier's loop: take a request, recognise the image, make the
//! result durable, answer, and only then acknowledge the request.
//!
//! Order per message (at-least-once, idempotent):
//! 1. receive (one at a time) with a visibility timeout, extended by a
//!    heartbeat while the job runs;
//! 2. fetch the image from the input bucket and run the engine on a
//!    blocking thread;
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

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use facefleet_ports::Message;
use tokio_util::sync::CancellationToken;

use crate::backend::Deployment;
use crate::engine::{EngineError, FaceEngine};
use crate::gallery::GalleryWatcher;
use crate::protocol::{stem, DeadLetter, ErrorKind, Outcome, Recognition, Request, Response, ResponseError};

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
    /// How often the gallery listing is checked for changes.
    pub gallery_refresh: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            visibility: Duration::from_secs(15),
            heartbeat: Duration::from_secs(5),
            poll_wait: Duration::from_secs(1),
            max_attempts: 3,
            gallery_refresh: Duration::from_secs(2),
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
pub struct Worker<E: FaceEngine> {
    dep: Deployment,
    engine: Arc<E>,
    config: WorkerConfig,
    gallery: GalleryWatcher<E>,
    last_refresh: Option<Instant>,
}

enum Failure {
    Permanent(String),
    Transient(String),
}

impl<E: FaceEngine> Worker<E> {
    /// A worker over `dep` using `engine`.
    pub fn new(dep: Deployment, engine: Arc<E>, config: WorkerConfig) -> Self {
        let gallery = GalleryWatcher::new(&dep.names.gallery_bucket);
        Self { dep, engine, config, gallery, last_refresh: None }
    }

    /// Runs until `stop` fires; the job in hand is always finished first.
    pub async fn run(mut self, stop: CancellationToken) {
        tracing::info!(queue = %self.dep.names.req_queue, "worker started");
        while !stop.is_cancelled() {
            // The receive is not cancelled midway (a message received and
            // dropped would stay invisible until its timeout): the short
            // long-poll bounds how long a stop takes to be noticed.
            let received = self
                .dep
                .queue
                .receive(&self.dep.names.req_queue, 1, self.config.poll_wait, Some(self.config.visibility))
                .await;
            match received {
                Ok(messages) => {
                    for m in messages {
                        let outcome = self.handle(m).await;
                        tracing::debug!(?outcome, "message handled");
                    }
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
    pub async fn handle(&mut self, m: Message) -> Handled {
        let names = self.dep.names.clone();
        let req: Request = match serde_json::from_str(&m.body) {
            Ok(r) => r,
            Err(e) => {
                let error = format!("malformed request body: {e}");
                tracing::warn!(%error, body = %m.body, "dead-lettering");
                return match self.dead_letter(&m, &error).await {
                    Ok(()) => {
                        self.ack(&m).await;
                        Handled::DeadLettered
                    }
                    Err(e) => Handled::Retry(e),
                };
            }
        };
        if m.receive_count > self.config.max_attempts {
            let msg = format!(
                "abandoned {} times: the worker handling it crashed or stopped responding",
                m.receive_count - 1
            );
            return self.give_up(&m, &req, ErrorKind::Failed, msg, true).await;
        }
        let started = Instant::now();
        let heartbeat = self.start_heartbeat(&m);
        let result = self.process(&req).await;
        heartbeat.cancel();
        match result {
            Ok(rec) => {
                let name = rec.name.clone();
                if let Err(e) = self.dep.store.put(&names.out_bucket, stem(&req.key), Bytes::from(name.clone())).await {
                    return self.retry(&m, format!("writing the result failed: {e}")).await;
                }
                if let Err(e) = self.respond(&req, Outcome::Ok(rec)).await {
                    return self.retry(&m, e).await;
                }
                self.ack(&m).await;
                metrics::histogram!("facefleet_worker_job_seconds").record(started.elapsed().as_secs_f64());
                tracing::info!(key = %req.key, %name, ms = started.elapsed().as_millis() as u64, "answered");
                Handled::Answered
            }
            Err(Failure::Permanent(msg)) => self.give_up(&m, &req, ErrorKind::BadInput, msg, false).await,
            Err(Failure::Transient(msg)) if m.receive_count >= self.config.max_attempts => {
                let msg = format!("gave up after {} attempts: {msg}", m.receive_count);
                self.give_up(&m, &req, ErrorKind::Failed, msg, true).await
            }
            Err(Failure::Transient(msg)) => self.retry(&m, msg).await,
        }
    }

    async fn process(&mut self, req: &Request) -> Result<Recognition, Failure> {
        let gallery = self.gallery().await?;
        let names = &self.dep.names;
        let image = match self.dep.store.get(&names.in_bucket, &req.key).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Err(Failure::Permanent(format!("image `{}` is not in the input bucket", req.key))),
            Err(e) => return Err(Failure::Transient(format!("reading the image failed: {e}"))),
        };
        let engine = self.engine.clone();
        let joined = tokio::task::spawn_blocking(move || engine.recognize(&image, &gallery)).await;
        match joined {
            Ok(Ok(rec)) => Ok(rec),
            Ok(Err(EngineError::BadImage(m))) => Err(Failure::Permanent(m)),
            Ok(Err(EngineError::Failed(m))) => Err(Failure::Transient(m)),
            Err(e) => Err(Failure::Transient(format!("the model panicked: {e}"))),
        }
    }

    /// The current gallery, re-listed when the refresh interval passed.
    async fn gallery(&mut self) -> Result<Arc<E::Gallery>, Failure> {
        let due = self.last_refresh.is_none_or(|t| t.elapsed() >= self.config.gallery_refresh);
        if due {
            match self.gallery.refresh(self.dep.store.as_ref(), self.engine.as_ref()).await {
                Ok((g, _)) => {
                    self.last_refresh = Some(Instant::now());
                    return Ok(g);
                }
                Err(e) => tracing::warn!(error = %e, "refreshing the gallery failed"),
            }
        }
        self.gallery.current().ok_or_else(|| Failure::Transient("the gallery could not be loaded".into()))
    }

    fn start_heartbeat(&self, m: &Message) -> CancellationToken {
        let token = CancellationToken::new();
        let t = token.clone();
        let queue = self.dep.queue.clone();
        let name = self.dep.names.req_queue.clone();
        let receipt = m.receipt.clone();
        let (every, vis) = (self.config.heartbeat, self.config.visibility);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = t.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                if let Err(e) = queue.change_visibility(&name, &receipt, vis).await {
                    tracing::warn!(error = %e, "extending visibility failed");
                }
            }
        });
        token
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
