//! [`SqliteQueue`]: durable SQS-like queues in one SQLite file, shared by
//! every process that opens it.
//!
//! Each message is a row; receiving it sets its `visible_at` to now plus
//! the visibility timeout and gives it a fresh receipt token, all inside a
//! `BEGIN IMMEDIATE` transaction, so two receivers (threads or processes)
//! never get the same message while it is invisible. A process that dies
//! holding messages loses nothing: the rows become visible again when their
//! timeout ends, and SQLite rolls back any transaction it left open.
//!
//! Within one process every write goes through one connection (a mutex),
//! so writers never spin on SQLite's busy handler; reads (depth, the
//! long-poll checks) use a small pool of read connections, which WAL mode
//! lets run beside the writer. Long polls wake at once on sends made by the
//! same handle, and poll the file every [`POLL_INTERVAL`] for the others.
//! Each connection caches its statements and plans them once: with SQLite's
//! query-planner stability guarantee on, binding new values never re-plans.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use facefleet_ports::{Message, MessageQueue, PortError, QueueConfig, QueueDepth, Result};
use rusqlite::config::DbConfig;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::Notify;

/// How often a long poll re-checks the file for messages sent by other
/// processes (sends through the same handle wake it at once).
pub const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// How long a call waits for another process's write lock before failing
/// with `Unavailable`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Read connections kept per handle.
const MAX_IDLE_READERS: usize = 8;

/// Longest queue name (SQS's limit).
pub const MAX_QUEUE_NAME: usize = 80;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS queues (
    name             TEXT PRIMARY KEY,
    max_message_size INTEGER NOT NULL,
    visibility_ms    INTEGER NOT NULL,
    dead_letter      TEXT,
    max_receives     INTEGER
);
CREATE TABLE IF NOT EXISTS messages (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    queue         TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    body          TEXT    NOT NULL,
    sent_ms       INTEGER NOT NULL,
    visible_at_ms INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt       TEXT
);
CREATE INDEX IF NOT EXISTS messages_by_visibility ON messages (queue, visible_at_ms);
PRAGMA user_version = 1;
"#;

/// Whether a queue exists, and when its earliest message is or becomes
/// visible: the cheap read of every receive attempt and long-poll check.
const QUEUE_AND_EARLIEST_VISIBLE: &str = "SELECT EXISTS (SELECT 1 FROM queues WHERE name = ?1),
    (SELECT MIN(visible_at_ms) FROM messages WHERE queue = ?1)";

/// Up to `?3` messages of queue `?1` visible at time `?2`, oldest first.
const VISIBLE_CANDIDATES: &str = "SELECT seq, id, body, receive_count FROM messages
    WHERE queue = ?1 AND visible_at_ms <= ?2
    ORDER BY visible_at_ms, seq LIMIT ?3";

/// Durable message queues in one SQLite database file. Cheap to clone;
/// clones share connections. Several processes may open the same file.
#[derive(Clone)]
pub struct SqliteQueue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SqliteQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteQueue").field("path", &self.inner.path).finish()
    }
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    /// Woken whenever this handle makes a message visible.
    arrivals: Notify,
}

/// Queue attributes as stored.
struct QueueRow {
    max_message_size: usize,
    visibility_ms: i64,
    dead_letter: Option<(String, u32)>,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

fn db_err(e: rusqlite::Error) -> PortError {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            PortError::Unavailable(format!("queue database busy: {e}"))
        }
        _ => PortError::Other(format!("queue database error: {e}")),
    }
}

/// Checks a queue name: 1 to 80 ASCII letters, digits, `-` or `_` (SQS's
/// rule). Returns `InvalidArgument` otherwise.
pub fn validate_queue_name(queue: &str) -> Result<()> {
    if !queue.is_empty()
        && queue.len() <= MAX_QUEUE_NAME
        && queue.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(())
    } else {
        Err(PortError::InvalidArgument(format!(
            "invalid queue name `{queue}` (1-{MAX_QUEUE_NAME} of A-Z a-z 0-9 - _)"
        )))
    }
}

fn open_connection(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).map_err(|e| {
        // SQLite's "cannot open" message names the file: log it, and
        // answer without it (errors may reach HTTP clients).
        tracing::error!(path = %path.display(), error = %e, "cannot open the queue database");
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                PortError::Unavailable("queue database busy".into())
            }
            Some(code) => PortError::Other(format!("cannot open the queue database: {code:?}")),
            None => PortError::Other("cannot open the queue database".into()),
        }
    })?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
    // WAL: readers never block the writer; NORMAL sync: a commit survives
    // any process crash (power loss may lose the last commits).
    conn.pragma_update(None, "journal_mode", "WAL").map_err(db_err)?;
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(db_err)?;
    // A plan that never depends on bound values: otherwise SQLite re-plans
    // a cached statement on `messages` each time it is bound again (every
    // long-poll check, every receive), several times the cost of running it.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true).map_err(db_err)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

fn load_queue(conn: &Connection, queue: &str) -> Result<QueueRow> {
    conn.prepare_cached(
        "SELECT max_message_size, visibility_ms, dead_letter, max_receives FROM queues WHERE name = ?1",
    )
    .map_err(db_err)?
    .query_row([queue], |r| {
        let dlq: Option<String> = r.get(2)?;
        let max: Option<i64> = r.get(3)?;
        Ok(QueueRow {
            max_message_size: r.get::<_, i64>(0)? as usize,
            visibility_ms: r.get(1)?,
            dead_letter: dlq.zip(max.map(|m| m as u32)),
        })
    })
    .optional()
    .map_err(db_err)?
    .ok_or_else(|| PortError::NoSuchQueue(queue.to_string()))
}

/// A receipt handle: `<seq>.<token>`.
fn parse_receipt<'r>(queue: &str, receipt: &'r str) -> Result<(i64, &'r str)> {
    receipt
        .split_once('.')
        .and_then(|(seq, token)| Some((seq.parse::<i64>().ok()?, token)))
        .filter(|(_, token)| !token.is_empty())
        .ok_or_else(|| PortError::InvalidReceipt(queue.to_string()))
}

/// Outcome of one non-waiting receive attempt.
struct Attempt {
    messages: Vec<Message>,
    /// When the next invisible message becomes visible, if any.
    next_visible_ms: Option<i64>,
}

impl SqliteQueue {
    /// Opens (creating if needed) the queue database at `path`, e.g.
    /// `<data-dir>/queues.sqlite3`. Blocks briefly on file I/O.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                // No path in the message (errors may reach HTTP clients).
                tracing::error!(path = %dir.display(), error = %e, "cannot create the queue database's folder");
                PortError::Other(format!("cannot create the queue database's folder: {e}"))
            })?;
        }
        let writer = open_connection(&path)?;
        writer.execute_batch(SCHEMA).map_err(db_err)?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                writer: Mutex::new(writer),
                readers: Mutex::new(Vec::new()),
                arrivals: Notify::new(),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on the write connection, on the blocking pool.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let mut conn = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(|e| PortError::Other(format!("queue task failed: {e}")))?
    }

    /// Runs `f` on a pooled read connection, on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let pooled = inner.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let conn = match pooled {
                Some(c) => c,
                None => open_connection(&inner.path)?,
            };
            let result = f(&conn);
            let mut pool = inner.readers.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < MAX_IDLE_READERS {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(|e| PortError::Other(format!("queue task failed: {e}")))?
    }

    /// One receive attempt without waiting. A cheap read decides first
    /// whether anything is visible, so idle long polls do not take the
    /// write lock.
    async fn try_receive(&self, queue: &str, max: usize, visibility: Option<Duration>) -> Result<Attempt> {
        let q = queue.to_string();
        let (exists, earliest) = self
            .read(move |c| {
                c.prepare_cached(QUEUE_AND_EARLIEST_VISIBLE)
                .map_err(db_err)?
                .query_row([&q], |r| Ok((r.get::<_, bool>(0)?, r.get::<_, Option<i64>>(1)?)))
                .map_err(db_err)
            })
            .await?;
        if !exists {
            return Err(PortError::NoSuchQueue(queue.to_string()));
        }
        match earliest {
            None => return Ok(Attempt { messages: Vec::new(), next_visible_ms: None }),
            Some(t) if t > now_ms() => return Ok(Attempt { messages: Vec::new(), next_visible_ms: Some(t) }),
            Some(_) => {}
        }
        let q = queue.to_string();
        self.write(move |c| receive_tx(c, &q, max, visibility)).await
    }

    fn wake_receivers(&self) {
        self.inner.arrivals.notify_waiters();
    }
}

/// The receiving transaction: picks up to `max` visible messages, moving
/// those past their dead-letter count to the dead-letter queue.
fn receive_tx(c: &mut Connection, queue: &str, max: usize, visibility: Option<Duration>) -> Result<Attempt> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
    let cfg = load_queue(&tx, queue)?;
    let now = now_ms();
    let invisible_until = now.saturating_add(visibility.map(ms).unwrap_or(cfg.visibility_ms));
    let mut messages = Vec::with_capacity(max);
    loop {
        let want = max - messages.len();
        let candidates: Vec<(i64, String, String, u32)> = tx
            .prepare_cached(VISIBLE_CANDIDATES)
            .map_err(db_err)?
            .query_map(params![queue, now, want as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .map_err(db_err)?
            .collect::<rusqlite::Result<_>>()
            .map_err(db_err)?;
        if candidates.is_empty() {
            break;
        }
        let mut moved = false;
        for (seq, id, body, count) in candidates {
            if let Some((dlq, limit)) = &cfg.dead_letter {
                if count >= *limit {
                    tx.prepare_cached(
                        "UPDATE messages SET queue = ?2, visible_at_ms = ?3, receipt = NULL WHERE seq = ?1",
                    )
                    .map_err(db_err)?
                    .execute(params![seq, dlq, now])
                    .map_err(db_err)?;
                    tracing::info!(queue, dead_letter = %dlq, message = %id, receives = count, "message moved to the dead-letter queue");
                    moved = true;
                    continue;
                }
            }
            let token = uuid::Uuid::new_v4().simple().to_string();
            tx.prepare_cached(
                "UPDATE messages SET visible_at_ms = ?2, receive_count = receive_count + 1, receipt = ?3
                 WHERE seq = ?1",
            )
            .map_err(db_err)?
            .execute(params![seq, invisible_until, token])
            .map_err(db_err)?;
            messages.push(Message { id, body, receipt: format!("{seq}.{token}"), receive_count: count + 1 });
        }
        if !moved || messages.len() >= max {
            break;
        }
    }
    tx.commit().map_err(db_err)?;
    Ok(Attempt { messages, next_visible_ms: None })
}

/// Deletes one received message of `queue` (known to exist) by its receipt:
/// `Ok` if deleted now or before, `InvalidReceipt` if received again since.
fn delete_received(c: &Connection, queue: &str, receipt: &str) -> Result<()> {
    let (seq, token) = parse_receipt(queue, receipt)?;
    let deleted = c
        .prepare_cached("DELETE FROM messages WHERE seq = ?1 AND queue = ?2 AND receipt = ?3")
        .map_err(db_err)?
        .execute(params![seq, queue, token])
        .map_err(db_err)?;
    if deleted == 1 {
        return Ok(());
    }
    let current: Option<Option<String>> = c
        .prepare_cached("SELECT receipt FROM messages WHERE seq = ?1 AND queue = ?2")
        .map_err(db_err)?
        .query_row(params![seq, queue], |r| r.get(0))
        .optional()
        .map_err(db_err)?;
    match current {
        // Already deleted (or moved away): deleting is idempotent.
        None => Ok(()),
        // Received again since: this receipt is stale.
        Some(_) => Err(PortError::InvalidReceipt(queue.to_string())),
    }
}

#[async_trait]
impl MessageQueue for SqliteQueue {
    async fn create_queue(&self, queue: &str, config: &QueueConfig) -> Result<()> {
        validate_queue_name(queue)?;
        if config.max_message_size == 0 {
            return Err(PortError::InvalidArgument("max_message_size must be at least 1 byte".into()));
        }
        if let Some((dlq, max)) = &config.dead_letter {
            validate_queue_name(dlq)?;
            if *max == 0 {
                return Err(PortError::InvalidArgument("dead-letter receive count must be at least 1".into()));
            }
            if dlq == queue {
                return Err(PortError::InvalidArgument("a queue cannot be its own dead-letter queue".into()));
            }
        }
        let (q, cfg) = (queue.to_string(), config.clone());
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
            if let Some((dlq, _)) = &cfg.dead_letter {
                load_queue(&tx, dlq)?;
            }
            tx.execute(
                "INSERT INTO queues (name, max_message_size, visibility_ms, dead_letter, max_receives)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (name) DO UPDATE SET max_message_size = excluded.max_message_size,
                    visibility_ms = excluded.visibility_ms, dead_letter = excluded.dead_letter,
                    max_receives = excluded.max_receives",
                params![
                    q,
                    cfg.max_message_size as i64,
                    ms(cfg.visibility_timeout),
                    cfg.dead_letter.as_ref().map(|d| d.0.clone()),
                    cfg.dead_letter.as_ref().map(|d| i64::from(d.1)),
                ],
            )
            .map_err(db_err)?;
            tx.commit().map_err(db_err)
        })
        .await
    }

    async fn send(&self, queue: &str, body: &str) -> Result<String> {
        let (q, body) = (queue.to_string(), body.to_string());
        let id = self
            .write(move |c| {
                let cfg = load_queue(c, &q)?;
                if body.len() > cfg.max_message_size {
                    return Err(PortError::MessageTooLarge { queue: q, size: body.len(), limit: cfg.max_message_size });
                }
                let id = uuid::Uuid::new_v4().to_string();
                let now = now_ms();
                c.prepare_cached(
                    "INSERT INTO messages (queue, id, body, sent_ms, visible_at_ms) VALUES (?1, ?2, ?3, ?4, ?4)",
                )
                .map_err(db_err)?
                .execute(params![q, id, body, now])
                .map_err(db_err)?;
                Ok(id)
            })
            .await?;
        self.wake_receivers();
        Ok(id)
    }

    async fn receive(
        &self,
        queue: &str,
        max: usize,
        wait: Duration,
        visibility: Option<Duration>,
    ) -> Result<Vec<Message>> {
        facefleet_ports::validate_batch(max)?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register for wake-ups before looking, so a send between the
            // look and the wait is not missed.
            let arrival = self.inner.arrivals.notified();
            tokio::pin!(arrival);
            arrival.as_mut().enable();
            let attempt = self.try_receive(queue, max, visibility).await?;
            let now = tokio::time::Instant::now();
            if !attempt.messages.is_empty() || now >= deadline {
                return Ok(attempt.messages);
            }
            let mut nap = POLL_INTERVAL.min(deadline - now);
            if let Some(t) = attempt.next_visible_ms {
                let until = Duration::from_millis((t - now_ms()).max(1) as u64);
                nap = nap.min(until);
            }
            tokio::select! {
                _ = &mut arrival => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }

    async fn delete(&self, queue: &str, receipt: &str) -> Result<()> {
        let (q, receipt) = (queue.to_string(), receipt.to_string());
        self.write(move |c| {
            load_queue(c, &q)?;
            delete_received(c, &q, &receipt)
        })
        .await
    }

    /// All in one write transaction.
    async fn delete_batch(&self, queue: &str, receipts: &[&str]) -> Vec<Result<()>> {
        if receipts.is_empty() {
            return Vec::new();
        }
        let q = queue.to_string();
        let receipts: Vec<String> = receipts.iter().map(|r| r.to_string()).collect();
        let n = receipts.len();
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
            load_queue(&tx, &q)?;
            let results = receipts.iter().map(|r| delete_received(&tx, &q, r)).collect();
            tx.commit().map_err(db_err)?;
            Ok(results)
        })
        .await
        .unwrap_or_else(|e| vec![Err(e); n])
    }

    async fn change_visibility(&self, queue: &str, receipt: &str, timeout: Duration) -> Result<()> {
        let (q, receipt) = (queue.to_string(), receipt.to_string());
        self.write(move |c| {
            load_queue(c, &q)?;
            let (seq, token) = parse_receipt(&q, &receipt)?;
            let changed = c
                .prepare_cached("UPDATE messages SET visible_at_ms = ?4 WHERE seq = ?1 AND queue = ?2 AND receipt = ?3")
                .map_err(db_err)?
                .execute(params![seq, q, token, now_ms().saturating_add(ms(timeout))])
                .map_err(db_err)?;
            if changed == 1 {
                Ok(())
            } else {
                Err(PortError::InvalidReceipt(q))
            }
        })
        .await?;
        if timeout.is_zero() {
            self.wake_receivers();
        }
        Ok(())
    }

    async fn depth(&self, queue: &str) -> Result<QueueDepth> {
        let q = queue.to_string();
        self.read(move |c| {
            load_queue(c, &q)?;
            c.prepare_cached(
                "SELECT COALESCE(SUM(visible_at_ms <= ?2), 0), COALESCE(SUM(visible_at_ms > ?2), 0)
                 FROM messages WHERE queue = ?1",
            )
            .map_err(db_err)?
            .query_row(params![q, now_ms()], |r| {
                Ok(QueueDepth { visible: r.get::<_, i64>(0)? as u64, in_flight: r.get::<_, i64>(1)? as u64 })
            })
            .map_err(db_err)
        })
        .await
    }

    async fn purge(&self, queue: &str) -> Result<()> {
        let q = queue.to_string();
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
            load_queue(&tx, &q)?;
            tx.execute("DELETE FROM messages WHERE queue = ?1", [&q]).map_err(db_err)?;
            tx.commit().map_err(db_err)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::StatementStatus;

    #[test]
    fn receipts_parse_or_are_invalid() {
        assert_eq!(parse_receipt("q", "12.abc").unwrap(), (12, "abc"));
        for bad in ["", "abc", "12", "12.", "x.abc", ".abc"] {
            assert_eq!(parse_receipt("q", bad), Err(PortError::InvalidReceipt("q".into())), "{bad:?}");
        }
    }

    #[test]
    fn queue_names_follow_sqs_rules() {
        for ok in ["facefleet-req-queue", "a", "A_b-9", &"x".repeat(80)] {
            assert!(validate_queue_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "a.b", "a/b", "é", &"x".repeat(81)] {
            assert!(validate_queue_name(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn statements_are_planned_once_not_on_every_bind() {
        let dir = tempfile::tempdir().unwrap();
        let q = SqliteQueue::open(dir.path().join("q.sqlite3")).unwrap();
        q.create_queue("a", &QueueConfig::default()).await.unwrap();
        for batch in 1..=3 {
            for _ in 0..batch {
                q.send("a", "x").await.unwrap();
            }
            // A batch size that changes each time: its LIMIT is bound anew.
            let got = q.receive("a", batch, Duration::ZERO, None).await.unwrap();
            assert_eq!(got.len(), batch);
        }
        assert!(q.receive("a", 10, Duration::ZERO, None).await.unwrap().is_empty());
        // Sequential reads reuse the same pooled connection.
        let poll_replans = q
            .read(|c| Ok(c.prepare_cached(QUEUE_AND_EARLIEST_VISIBLE).map_err(db_err)?.get_status(StatementStatus::RePrepare)))
            .await
            .unwrap();
        let receive_replans = q
            .write(|c| Ok(c.prepare_cached(VISIBLE_CANDIDATES).map_err(db_err)?.get_status(StatementStatus::RePrepare)))
            .await
            .unwrap();
        assert_eq!((poll_replans, receive_replans), (0, 0));
    }

    #[tokio::test]
    async fn wal_mode_is_on() {
        let dir = tempfile::tempdir().unwrap();
        let q = SqliteQueue::open(dir.path().join("q.sqlite3")).unwrap();
        let mode: String = q
            .read(|c| c.query_row("PRAGMA journal_mode", [], |r| r.get(0)).map_err(db_err))
            .await
            .unwrap();
        assert_eq!(mode, "wal");
    }
}
