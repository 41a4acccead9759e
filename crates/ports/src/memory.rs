//! In-memory adapters of the ports, for tests and single-process demos:
//! [`MemStore`] (an [`ObjectStore`]) and [`MemQueue`] (a [`MessageQueue`]).
//!
//! Both pass the port contracts (see `tests/memory.rs`) and keep a few
//! public hooks that tests use to look inside or inject failures
//! ([`MemStore::fail_puts_to`], [`MemStore::keys`], [`MemQueue::fail_deletes`],
//! [`MemQueue::bodies`]...). Nothing is persisted: everything lives as long as
//! the value.
//!
//! Times (visibility timeouts, long polls) use [`tokio::time`], so tests that
//! pause tokio's clock see the queue follow it.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::store::validate_key;
use crate::{validate_batch, ListPage, Message, MessageQueue, ObjectMeta, ObjectStore, PortError, QueueConfig, QueueDepth, Result};

/// Most keys one [`ObjectStore::list`] page may ask for (S3's limit).
const MAX_LIST_KEYS: usize = 1000;

/// Buckets of objects in memory.
#[derive(Debug, Default)]
pub struct MemStore {
    buckets: Mutex<HashMap<String, BTreeMap<String, Bytes>>>,
    /// Bucket whose writes (`put`, `put_if_absent`, `put_file`) fail with
    /// [`PortError::Unavailable`] while set: a failure-injection hook.
    pub fail_puts_to: Mutex<Option<String>>,
}

impl MemStore {
    /// An empty store (no buckets).
    pub fn new() -> Self {
        Self::default()
    }

    /// Keys of a bucket in byte order (empty for a missing bucket).
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        lock(&self.buckets).get(bucket).map(|b| b.keys().cloned().collect()).unwrap_or_default()
    }

    /// The body of one object, if it exists.
    pub fn object(&self, bucket: &str, key: &str) -> Option<Bytes> {
        lock(&self.buckets).get(bucket)?.get(key).cloned()
    }

    /// Number of objects in a bucket (0 for a missing bucket).
    pub fn len(&self, bucket: &str) -> usize {
        lock(&self.buckets).get(bucket).map_or(0, BTreeMap::len)
    }

    /// True when the bucket holds no object (or does not exist).
    pub fn is_empty(&self, bucket: &str) -> bool {
        self.len(bucket) == 0
    }

    fn check_write(&self, bucket: &str) -> Result<()> {
        if lock(&self.fail_puts_to).as_deref() == Some(bucket) {
            return Err(PortError::Unavailable(format!("injected write failure on bucket `{bucket}`")));
        }
        Ok(())
    }

    fn write(&self, bucket: &str, key: &str, body: Bytes, replace: bool) -> Result<bool> {
        validate_key(key)?;
        let mut buckets = lock(&self.buckets);
        let objects = buckets.get_mut(bucket).ok_or_else(|| PortError::NoSuchBucket(bucket.to_string()))?;
        self.check_write(bucket)?;
        if !replace && objects.contains_key(key) {
            return Ok(false);
        }
        objects.insert(key.to_string(), body);
        Ok(true)
    }
}

/// Locks a mutex, carrying on after a panic elsewhere (the data are plain
/// maps that a panicking holder cannot leave half-updated).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[async_trait]
impl ObjectStore for MemStore {
    async fn create_bucket(&self, bucket: &str) -> Result<()> {
        lock(&self.buckets).entry(bucket.to_string()).or_default();
        Ok(())
    }

    async fn bucket_exists(&self, bucket: &str) -> Result<bool> {
        Ok(lock(&self.buckets).contains_key(bucket))
    }

    async fn put(&self, bucket: &str, key: &str, body: Bytes) -> Result<()> {
        self.write(bucket, key, body, true).map(drop)
    }

    async fn put_if_absent(&self, bucket: &str, key: &str, body: Bytes) -> Result<bool> {
        self.write(bucket, key, body, false)
    }

    async fn get(&self, bucket: &str, key: &str) -> Result<Bytes> {
        validate_key(key)?;
        let buckets = lock(&self.buckets);
        let objects = buckets.get(bucket).ok_or_else(|| PortError::NoSuchBucket(bucket.to_string()))?;
        objects
            .get(key)
            .cloned()
            .ok_or_else(|| PortError::NoSuchKey { bucket: bucket.to_string(), key: key.to_string() })
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>> {
        validate_key(key)?;
        let buckets = lock(&self.buckets);
        let objects = buckets.get(bucket).ok_or_else(|| PortError::NoSuchBucket(bucket.to_string()))?;
        Ok(objects.get(key).map(|body| ObjectMeta { key: key.to_string(), size: body.len() as u64 }))
    }

    async fn list(&self, bucket: &str, prefix: &str, token: Option<String>, max_keys: usize) -> Result<ListPage> {
        if max_keys == 0 || max_keys > MAX_LIST_KEYS {
            return Err(PortError::InvalidArgument(format!("max_keys must be 1..={MAX_LIST_KEYS}, not {max_keys}")));
        }
        let buckets = lock(&self.buckets);
        let objects = buckets.get(bucket).ok_or_else(|| PortError::NoSuchBucket(bucket.to_string()))?;
        // The token is the last key of the previous page: continue after it,
        // or at the prefix, whichever comes later.
        let start = match &token {
            Some(t) if t.as_str() >= prefix => Bound::Excluded(t.as_str()),
            _ => Bound::Included(prefix),
        };
        let mut page: Vec<ObjectMeta> = objects
            .range::<str, _>((start, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(max_keys + 1)
            .map(|(k, v)| ObjectMeta { key: k.clone(), size: v.len() as u64 })
            .collect();
        let next_token = if page.len() > max_keys {
            page.pop();
            page.last().map(|m| m.key.clone())
        } else {
            None
        };
        Ok(ListPage { objects: page, next_token })
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        self.remove(bucket, key).await.map(drop)
    }

    /// Exact: true only for the call that removed the object.
    async fn remove(&self, bucket: &str, key: &str) -> Result<bool> {
        validate_key(key)?;
        let mut buckets = lock(&self.buckets);
        let objects = buckets.get_mut(bucket).ok_or_else(|| PortError::NoSuchBucket(bucket.to_string()))?;
        Ok(objects.remove(key).is_some())
    }
}

/// One message of a [`MemQueue`].
#[derive(Debug)]
struct Stored {
    /// Arrival order, unique within the [`MemQueue`]; the first part of
    /// every receipt.
    seq: u64,
    id: String,
    body: String,
    /// Token of the latest receive (`None`: never received, or moved to a
    /// dead-letter queue since).
    token: Option<String>,
    visible_at: Instant,
    receive_count: u32,
}

#[derive(Debug)]
struct Queue {
    config: QueueConfig,
    messages: Vec<Stored>,
}

#[derive(Debug, Default)]
struct Queues {
    queues: HashMap<String, Queue>,
    next_seq: u64,
}

/// SQS-like queues in memory: visibility timeouts, receive counts,
/// dead-letter redrive, long polls woken by arrivals, the size limit.
///
/// Receipts are `<seq>.<token>`; a new receive makes the previous receipt
/// stale (refused with [`PortError::InvalidReceipt`]), and deleting an
/// already deleted message succeeds.
#[derive(Debug, Default)]
pub struct MemQueue {
    state: Mutex<Queues>,
    /// Woken whenever a message may have become receivable.
    arrivals: Notify,
    /// Queue name → number of next `delete` calls on it that fail with
    /// [`PortError::Unavailable`] (one per call): a failure-injection hook.
    pub fail_deletes: Mutex<HashMap<String, usize>>,
    /// Message id → how many times it was received in total (dead-letter
    /// moves keep counting): for tests of redelivery.
    pub receives: Mutex<HashMap<String, u32>>,
}

impl MemQueue {
    /// An empty set of queues.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bodies of every message of a queue (visible or not), oldest first;
    /// empty for a missing queue.
    pub fn bodies(&self, queue: &str) -> Vec<String> {
        lock(&self.state)
            .queues
            .get(queue)
            .map(|q| q.messages.iter().map(|m| m.body.clone()).collect())
            .unwrap_or_default()
    }

    /// Takes up to `max` receivable messages. Returns them, or when there is
    /// none the instant at which an invisible message becomes visible.
    fn try_receive(&self, queue: &str, max: usize, visibility: Option<Duration>) -> Result<(Vec<Message>, Option<Instant>)> {
        let mut state = lock(&self.state);
        let Queues { queues, .. } = &mut *state;
        let q = queues.get_mut(queue).ok_or_else(|| PortError::NoSuchQueue(queue.to_string()))?;
        let now = Instant::now();
        let hide_until = now + visibility.unwrap_or(q.config.visibility_timeout);
        let dead_letter = q.config.dead_letter.clone();
        // Oldest visibility first, then arrival order (as the SQLite queue).
        let mut ready: Vec<usize> = (0..q.messages.len()).filter(|&i| q.messages[i].visible_at <= now).collect();
        ready.sort_by_key(|&i| (q.messages[i].visible_at, q.messages[i].seq));
        let mut out = Vec::new();
        let mut to_dead = Vec::new();
        for i in ready {
            if out.len() >= max {
                break;
            }
            let m = &mut q.messages[i];
            if let Some((_, limit)) = &dead_letter {
                if m.receive_count >= *limit {
                    to_dead.push(m.seq);
                    continue;
                }
            }
            let token = uuid::Uuid::new_v4().simple().to_string();
            m.receive_count += 1;
            m.visible_at = hide_until;
            m.token = Some(token.clone());
            *lock(&self.receives).entry(m.id.clone()).or_default() += 1;
            out.push(Message {
                id: m.id.clone(),
                body: m.body.clone(),
                receipt: format!("{}.{token}", m.seq),
                receive_count: m.receive_count,
            });
        }
        if !to_dead.is_empty() {
            let mut moved = Vec::new();
            q.messages.retain_mut(|m| {
                if to_dead.contains(&m.seq) {
                    moved.push(Stored {
                        seq: m.seq,
                        id: std::mem::take(&mut m.id),
                        body: std::mem::take(&mut m.body),
                        token: None,
                        visible_at: now,
                        receive_count: m.receive_count,
                    });
                    false
                } else {
                    true
                }
            });
            let dlq_name = dead_letter.map(|d| d.0).unwrap_or_default();
            match queues.get_mut(&dlq_name) {
                Some(dlq) => {
                    dlq.messages.extend(moved);
                    self.arrivals.notify_waiters();
                }
                // The dead-letter queue was deleted: keep the messages where
                // they were rather than lose them (`create_queue` checks it
                // exists, and nothing deletes queues, so this does not happen).
                None => {
                    if let Some(q) = queues.get_mut(queue) {
                        q.messages.extend(moved);
                    }
                }
            }
        }
        if !out.is_empty() {
            return Ok((out, None));
        }
        let next = queues.get(queue).and_then(|q| q.messages.iter().map(|m| m.visible_at).filter(|&t| t > now).min());
        Ok((out, next))
    }
}

/// Splits a receipt into its sequence number and token.
fn parse_receipt<'r>(queue: &str, receipt: &'r str) -> Result<(u64, &'r str)> {
    receipt
        .split_once('.')
        .and_then(|(seq, token)| Some((seq.parse().ok()?, token)).filter(|(_, t)| !t.is_empty()))
        .ok_or_else(|| PortError::InvalidReceipt(queue.to_string()))
}

#[async_trait]
impl MessageQueue for MemQueue {
    async fn create_queue(&self, queue: &str, config: &QueueConfig) -> Result<()> {
        if queue.is_empty() {
            return Err(PortError::InvalidArgument("a queue name cannot be empty".into()));
        }
        if config.max_message_size == 0 {
            return Err(PortError::InvalidArgument("max_message_size must be at least 1 byte".into()));
        }
        let mut state = lock(&self.state);
        if let Some((dlq, max)) = &config.dead_letter {
            if *max == 0 {
                return Err(PortError::InvalidArgument("dead-letter receive count must be at least 1".into()));
            }
            if dlq == queue {
                return Err(PortError::InvalidArgument("a queue cannot be its own dead-letter queue".into()));
            }
            if !state.queues.contains_key(dlq) {
                return Err(PortError::NoSuchQueue(dlq.clone()));
            }
        }
        state
            .queues
            .entry(queue.to_string())
            .and_modify(|q| q.config = config.clone())
            .or_insert_with(|| Queue { config: config.clone(), messages: Vec::new() });
        Ok(())
    }

    async fn send(&self, queue: &str, body: &str) -> Result<String> {
        let id = {
            let mut state = lock(&self.state);
            let seq = state.next_seq;
            let q = state.queues.get_mut(queue).ok_or_else(|| PortError::NoSuchQueue(queue.to_string()))?;
            let limit = q.config.max_message_size;
            if body.len() > limit {
                return Err(PortError::MessageTooLarge { queue: queue.to_string(), size: body.len(), limit });
            }
            let id = uuid::Uuid::new_v4().to_string();
            q.messages.push(Stored {
                seq,
                id: id.clone(),
                body: body.to_string(),
                token: None,
                visible_at: Instant::now(),
                receive_count: 0,
            });
            state.next_seq += 1;
            id
        };
        self.arrivals.notify_waiters();
        Ok(id)
    }

    async fn receive(&self, queue: &str, max: usize, wait: Duration, visibility: Option<Duration>) -> Result<Vec<Message>> {
        validate_batch(max)?;
        let deadline = Instant::now() + wait;
        loop {
            // Register for wake-ups before looking, so that a send between
            // the look and the wait is not missed.
            let arrival = self.arrivals.notified();
            tokio::pin!(arrival);
            arrival.as_mut().enable();
            let (messages, next_visible) = self.try_receive(queue, max, visibility)?;
            if !messages.is_empty() || Instant::now() >= deadline {
                return Ok(messages);
            }
            let wake = next_visible.map_or(deadline, |t| t.min(deadline));
            tokio::select! {
                _ = &mut arrival => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    async fn delete(&self, queue: &str, receipt: &str) -> Result<()> {
        {
            let mut failures = lock(&self.fail_deletes);
            if let Some(n) = failures.get_mut(queue).filter(|n| **n > 0) {
                *n -= 1;
                return Err(PortError::Unavailable(format!("injected delete failure on queue `{queue}`")));
            }
        }
        let mut state = lock(&self.state);
        let q = state.queues.get_mut(queue).ok_or_else(|| PortError::NoSuchQueue(queue.to_string()))?;
        let (seq, token) = parse_receipt(queue, receipt)?;
        match q.messages.iter().position(|m| m.seq == seq) {
            // Already deleted (or moved away): deleting is idempotent.
            None => Ok(()),
            Some(i) if q.messages[i].token.as_deref() == Some(token) => {
                q.messages.remove(i);
                Ok(())
            }
            // Received again since: this receipt is stale.
            Some(_) => Err(PortError::InvalidReceipt(queue.to_string())),
        }
    }

    async fn change_visibility(&self, queue: &str, receipt: &str, timeout: Duration) -> Result<()> {
        {
            let mut state = lock(&self.state);
            let q = state.queues.get_mut(queue).ok_or_else(|| PortError::NoSuchQueue(queue.to_string()))?;
            let (seq, token) = parse_receipt(queue, receipt)?;
            let m = q
                .messages
                .iter_mut()
                .find(|m| m.seq == seq && m.token.as_deref() == Some(token))
                .ok_or_else(|| PortError::InvalidReceipt(queue.to_string()))?;
            m.visible_at = Instant::now() + timeout;
        }
        // Receivers sleeping until the old timeout must re-plan.
        self.arrivals.notify_waiters();
        Ok(())
    }

    async fn depth(&self, queue: &str) -> Result<QueueDepth> {
        let state = lock(&self.state);
        let q = state.queues.get(queue).ok_or_else(|| PortError::NoSuchQueue(queue.to_string()))?;
        let now = Instant::now();
        let visible = q.messages.iter().filter(|m| m.visible_at <= now).count() as u64;
        Ok(QueueDepth { visible, in_flight: q.messages.len() as u64 - visible })
    }

    async fn purge(&self, queue: &str) -> Result<()> {
        let mut state = lock(&self.state);
        let q = state.queues.get_mut(queue).ok_or_else(|| PortError::NoSuchQueue(queue.to_string()))?;
        q.messages.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_parse_or_are_invalid() {
        assert_eq!(parse_receipt("q", "12.abc").unwrap(), (12, "abc"));
        for bad in ["", "abc", "12", "12.", "x.abc", "-1.abc"] {
            assert_eq!(parse_receipt("q", bad), Err(PortError::InvalidReceipt("q".into())), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn dead_letter_move_keeps_the_message() {
        let q = MemQueue::new();
        q.create_queue("dlq", &QueueConfig::default()).await.unwrap();
        let cfg = QueueConfig { dead_letter: Some(("dlq".into(), 1)), ..QueueConfig::default() };
        q.create_queue("q", &cfg).await.unwrap();
        let id = q.send("q", "poison").await.unwrap();
        let m = q.receive("q", 1, Duration::ZERO, None).await.unwrap().pop().unwrap();
        q.change_visibility("q", &m.receipt, Duration::ZERO).await.unwrap();
        assert!(q.receive("q", 10, Duration::ZERO, None).await.unwrap().is_empty());
        assert!(q.bodies("q").is_empty());
        let dead = q.receive("dlq", 1, Duration::ZERO, None).await.unwrap().pop().unwrap();
        assert_eq!((dead.id.as_str(), dead.body.as_str(), dead.receive_count), (id.as_str(), "poison", 2));
        assert_eq!(q.receives.lock().unwrap().get(&id), Some(&2));
        // The receipt from the source queue no longer changes anything.
        assert_eq!(
            q.change_visibility("q", &m.receipt, Duration::ZERO).await,
            Err(PortError::InvalidReceipt("q".into()))
        );
        // A dead-letter queue must exist first.
        let missing = QueueConfig { dead_letter: Some(("nope".into(), 3)), ..QueueConfig::default() };
        assert_eq!(q.create_queue("r", &missing).await, Err(PortError::NoSuchQueue("nope".into())));
    }

    #[tokio::test]
    async fn injected_failures_fire_then_stop() {
        let s = MemStore::new();
        s.create_bucket("b").await.unwrap();
        *s.fail_puts_to.lock().unwrap() = Some("b".into());
        assert!(matches!(s.put("b", "k", Bytes::new()).await, Err(PortError::Unavailable(_))));
        assert!(matches!(s.put_if_absent("b", "k", Bytes::new()).await, Err(PortError::Unavailable(_))));
        *s.fail_puts_to.lock().unwrap() = None;
        s.put("b", "k", Bytes::from_static(b"v")).await.unwrap();
        assert_eq!(s.keys("b"), vec!["k".to_string()]);
        assert_eq!(s.object("b", "k").as_deref(), Some(&b"v"[..]));

        let q = MemQueue::new();
        q.create_queue("q", &QueueConfig::default()).await.unwrap();
        q.send("q", "m").await.unwrap();
        let m = q.receive("q", 1, Duration::ZERO, None).await.unwrap().pop().unwrap();
        q.fail_deletes.lock().unwrap().insert("q".into(), 1);
        assert!(matches!(q.delete("q", &m.receipt).await, Err(PortError::Unavailable(_))));
        assert_eq!(q.bodies("q"), vec!["m".to_string()]);
        q.delete("q", &m.receipt).await.unwrap();
        assert!(q.bodies("q").is_empty());
        assert_eq!(q.receives.lock().unwrap().get(&m.id), Some(&1));
    }
}
