//! Routes responses from the shared response queue to the requests waiting
//! for them in this web-tier process.
//!
//! One background task per web tier long-polls the response queue, but only
//! while some request of this process is waiting. A response whose
//! `request_id` belongs to a waiting request is handed over and deleted; one
//! for a request this process already finished (duplicate after a worker
//! retry, or a request that timed out) is deleted; any other response
//! belongs to another web tier sharing the queue and is made visible again
//! at once so that tier gets it, unless it has expired (its request's web
//! tier stopped waiting, or died): then it is deleted, so responses nobody
//! waits for never circulate for good. The responses of one receive that
//! are handed over or dropped are deleted together (one batch delete)
//! before their requests are answered.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use facefleet_ports::MessageQueue;
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;

use crate::protocol::Response;

/// How many finished request ids are remembered to recognise duplicates.
const FINISHED_MEMORY: usize = 20_000;

/// A foreign response received this many times is presumed orphaned (its
/// web tier died) and deleted; for responses without an expiry.
const ORPHAN_RECEIVES: u32 = 200;

/// How often an idle dispatcher looks for expired responses.
const IDLE_SWEEP: Duration = Duration::from_secs(5);

/// Grace after a response's expiry before another web tier deletes it.
const EXPIRY_GRACE_MS: u64 = 5_000;

#[derive(Default)]
struct Tables {
    pending: HashMap<String, oneshot::Sender<Response>>,
    finished: HashSet<String>,
    finished_order: VecDeque<String>,
}

impl Tables {
    fn finish(&mut self, id: String) {
        if self.finished.insert(id.clone()) {
            self.finished_order.push_back(id);
            while self.finished_order.len() > FINISHED_MEMORY {
                if let Some(old) = self.finished_order.pop_front() {
                    self.finished.remove(&old);
                }
            }
        }
    }
}

/// The response router of one web-tier process.
pub struct Dispatcher {
    queue: Arc<dyn MessageQueue>,
    resp_queue: String,
    tables: Mutex<Tables>,
    wake: Notify,
    poll_wait: Duration,
}

/// A registered wait for one response; dropping it (timeout, client gone)
/// forgets the request so a late response is discarded.
pub struct Waiter {
    dispatcher: Arc<Dispatcher>,
    id: String,
    rx: Option<oneshot::Receiver<Response>>,
}

impl Waiter {
    /// Waits for the response, at most `timeout`; `None` on timeout.
    pub async fn wait(mut self, timeout: Duration) -> Option<Response> {
        let rx = self.rx.take()?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(resp)) => Some(resp),
            _ => None,
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut t = self.dispatcher.tables.lock().unwrap();
        t.pending.remove(&self.id);
        t.finish(std::mem::take(&mut self.id));
    }
}

impl Dispatcher {
    /// A dispatcher for `resp_queue`, long-polling up to `poll_wait`.
    pub fn new(queue: Arc<dyn MessageQueue>, resp_queue: &str, poll_wait: Duration) -> Arc<Self> {
        Arc::new(Self {
            queue,
            resp_queue: resp_queue.to_string(),
            tables: Mutex::new(Tables::default()),
            wake: Notify::new(),
            poll_wait,
        })
    }

    /// Registers interest in `request_id`; call before sending the request.
    pub fn register(self: &Arc<Self>, request_id: &str) -> Waiter {
        let (tx, rx) = oneshot::channel();
        self.tables.lock().unwrap().pending.insert(request_id.to_string(), tx);
        self.wake.notify_one();
        Waiter { dispatcher: self.clone(), id: request_id.to_string(), rx: Some(rx) }
    }

    /// Number of requests waiting for a response.
    pub fn waiting(&self) -> usize {
        self.tables.lock().unwrap().pending.len()
    }

    /// The polling loop; returns when `cancel` fires.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        // An idle sweep that deleted expired responses looks again at once
        // (a batch is at most 10 messages).
        let mut sweep_on = false;
        loop {
            if cancel.is_cancelled() {
                return;
            }
            let idle = self.waiting() == 0;
            if idle && !sweep_on {
                // Idle: sleep until a request registers, but look at the
                // queue now and then so responses nobody waits for (their
                // web tier died) are seen and expire.
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = self.wake.notified() => continue,
                    _ = tokio::time::sleep(IDLE_SWEEP) => {}
                }
            }
            // An idle sweep only looks; it does not long-poll.
            let wait = if idle { Duration::ZERO } else { self.poll_wait };
            sweep_on = false;
            let received = self
                .queue
                .receive(&self.resp_queue, facefleet_ports::MAX_BATCH, wait, Some(Duration::from_secs(30)))
                .await;
            let messages = match received {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "receiving responses failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let mut foreign = 0usize;
            let total = messages.len();
            // Handled responses are deleted together, then delivered.
            let mut handled: Vec<String> = Vec::new();
            let mut deliveries = Vec::new();
            for m in messages {
                let resp: Response = match serde_json::from_str(&m.body) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(error = %e, body = %m.body, "deleting malformed response");
                        handled.push(m.receipt);
                        continue;
                    }
                };
                enum Fate {
                    Deliver(oneshot::Sender<Response>),
                    Duplicate,
                    Foreign,
                }
                let fate = {
                    let mut t = self.tables.lock().unwrap();
                    if let Some(tx) = t.pending.remove(&resp.request_id) {
                        t.finish(resp.request_id.clone());
                        Fate::Deliver(tx)
                    } else if t.finished.contains(&resp.request_id) {
                        Fate::Duplicate
                    } else {
                        Fate::Foreign
                    }
                };
                match fate {
                    Fate::Deliver(tx) => {
                        handled.push(m.receipt);
                        deliveries.push((tx, resp));
                    }
                    Fate::Duplicate => handled.push(m.receipt),
                    Fate::Foreign if resp.expires_at_ms.is_some_and(|t| crate::protocol::now_ms() > t + EXPIRY_GRACE_MS) => {
                        tracing::debug!(request_id = %resp.request_id, "deleting an expired response (nobody waits for it)");
                        metrics::counter!("facefleet_responses_expired_total").increment(1);
                        handled.push(m.receipt);
                        sweep_on = true;
                    }
                    Fate::Foreign if m.receive_count >= ORPHAN_RECEIVES => {
                        tracing::warn!(request_id = %resp.request_id, "deleting orphaned response (no web tier claimed it)");
                        handled.push(m.receipt);
                    }
                    Fate::Foreign => {
                        foreign += 1;
                        if let Err(e) = self.queue.change_visibility(&self.resp_queue, &m.receipt, Duration::ZERO).await {
                            tracing::debug!(error = %e, "releasing a foreign response failed (it reappears after its timeout)");
                        }
                    }
                }
            }
            // Delete first: the answers are also durable in the output bucket.
            let receipts: Vec<&str> = handled.iter().map(String::as_str).collect();
            for result in self.queue.delete_batch(&self.resp_queue, &receipts).await {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "deleting a response failed");
                }
            }
            for (tx, resp) in deliveries {
                let _ = tx.send(resp);
            }
            if total > 0 && foreign == total {
                // Everything was someone else's: give the other web tiers a
                // moment to pick their responses up.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
