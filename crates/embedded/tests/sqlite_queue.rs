//! SQLite-queue behaviour beyond the contract: sharing one file between
//! handles and processes, crash safety, persistence, heavy concurrency.
//!
//! Multi-process cases re-run this test binary as a child process with
//! `FACEFLEET_QUEUE_CHILD` set; the `child_process_entry` test then plays
//! the child's role instead of being a test.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use facefleet_embedded::SqliteQueue;
use facefleet_ports::contract::{eventually, HangGuard, HANG_GUARD};
use facefleet_ports::{MessageQueue, QueueConfig, QueueDepth};

const CHILD_ENV: &str = "FACEFLEET_QUEUE_CHILD";

/// Starts this test binary as a child playing `role` on the database at
/// `db`; its stdout is piped.
fn spawn_child(role: &str, db: &Path, queue: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_process_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{role}|{}|{queue}", db.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("child process starts")
}

/// Reads the child's stdout until a line containing `marker`; returns
/// what follows it.
fn wait_for_line(child: &mut Child, marker: &str) -> String {
    let stdout = child.stdout.as_mut().unwrap();
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).unwrap();
        assert!(n > 0, "child exited before printing {marker}");
        // The harness may have written "test child_process_entry ... "
        // on the same line first.
        if let Some((_, rest)) = line.trim_end().split_once(marker) {
            return rest.to_string();
        }
    }
}

/// Writes a line to the real stdout (bypassing the test harness's capture)
/// for the parent to read.
fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|_| out.flush()).expect("stdout");
}

/// Not a test of its own: the body of the child processes.
#[test]
fn child_process_entry() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let mut parts = spec.splitn(3, '|');
    let (role, db, queue) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    match role {
        "send100" => rt.block_on(async {
            let q = SqliteQueue::open(db).unwrap();
            for i in 0..100 {
                q.send(queue, &format!("from child {i}")).await.unwrap();
            }
            say("SENT");
        }),
        "receive-and-hang" => rt.block_on(async {
            let q = SqliteQueue::open(db).unwrap();
            let got = q.receive(queue, 1, Duration::from_secs(10), Some(Duration::from_secs(10))).await.unwrap();
            say(&format!("RECEIVED {}", got[0].id));
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }),
        "lock-and-hang" => {
            // Holds the database's write lock with uncommitted changes.
            let conn = rusqlite::Connection::open(db).unwrap();
            conn.execute_batch(
                "BEGIN IMMEDIATE;
                 UPDATE messages SET visible_at_ms = visible_at_ms + 3600000, receive_count = 99;",
            )
            .unwrap();
            say("LOCKED");
            std::thread::sleep(Duration::from_secs(3600));
        }
        other => panic!("unknown child role {other}"),
    }
}

async fn new_db() -> (tempfile::TempDir, std::path::PathBuf, SqliteQueue) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queues.sqlite3");
    let q = SqliteQueue::open(&path).unwrap();
    q.create_queue("req", &QueueConfig::default()).await.unwrap();
    (dir, path, q)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_from_another_process_are_received() {
    let (_dir, path, q) = new_db().await;
    let mut child = spawn_child("send100", &path, "req");
    let mut bodies = HashSet::new();
    let guard = HangGuard::new("100 messages from the child", HANG_GUARD);
    while bodies.len() < 100 {
        guard.check();
        for m in q.receive("req", 10, Duration::from_secs(1), None).await.unwrap() {
            q.delete("req", &m.receipt).await.unwrap();
            assert!(bodies.insert(m.body), "duplicate delivery");
        }
    }
    assert!(child.wait().unwrap().success());
    assert!(bodies.contains("from child 99"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn message_of_a_killed_receiver_comes_back() {
    let (_dir, path, q) = new_db().await;
    let id = q.send("req", "job").await.unwrap();
    let mut child = spawn_child("receive-and-hang", &path, "req");
    assert_eq!(wait_for_line(&mut child, "RECEIVED "), id);
    // The child holds the message (10 s visibility); kill it.
    assert_eq!(q.depth("req").await.unwrap(), QueueDepth { visible: 0, in_flight: 1 });
    child.kill().unwrap();
    child.wait().unwrap();
    let m = eventually("the message to come back", HANG_GUARD, || async {
        q.receive("req", 1, Duration::from_secs(1), None).await.unwrap().pop()
    })
    .await;
    assert_eq!(m.id, id);
    assert_eq!(m.receive_count, 2);
    q.delete("req", &m.receipt).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_process_killed_inside_a_transaction_leaves_nothing_behind() {
    let (_dir, path, q) = new_db().await;
    let id = q.send("req", "job").await.unwrap();
    let mut child = spawn_child("lock-and-hang", &path, "req");
    wait_for_line(&mut child, "LOCKED");
    child.kill().unwrap();
    child.wait().unwrap();
    // The uncommitted update is gone and the lock released.
    let m = q.receive("req", 1, Duration::from_secs(5), None).await.unwrap().pop().expect("message visible");
    assert_eq!((m.id.as_str(), m.receive_count), (id.as_str(), 1));
    q.send("req", "after").await.expect("the write lock is free");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_handles_share_one_file_without_double_delivery() {
    let (_dir, path, a) = new_db().await;
    let b = SqliteQueue::open(&path).unwrap();
    // A long poll on one handle sees a send through the other.
    let (got, id) = tokio::join!(
        b.receive("req", 1, Duration::from_secs(20), None),
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            a.send("req", "cross-handle").await.unwrap()
        }
    );
    let got = got.unwrap();
    assert_eq!(got[0].id, id);
    b.delete("req", &got[0].receipt).await.unwrap();
    // Concurrent receivers on both handles split the messages.
    for i in 0..200 {
        a.send("req", &i.to_string()).await.unwrap();
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for k in 0..16 {
        let q = if k % 2 == 0 { a.clone() } else { b.clone() };
        let seen = Arc::clone(&seen);
        tasks.push(tokio::spawn(async move {
            loop {
                let batch = q.receive("req", 10, Duration::from_millis(500), None).await.unwrap();
                if batch.is_empty() {
                    return;
                }
                for m in batch {
                    seen.lock().unwrap().push(m.body);
                    q.delete("req", &m.receipt).await.unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let seen = seen.lock().unwrap();
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(seen.len(), 200, "deliveries");
    assert_eq!(unique.len(), 200, "distinct messages");
}

#[tokio::test]
async fn messages_survive_reopening() {
    let (dir, path, q) = new_db().await;
    q.send("req", "durable").await.unwrap();
    let in_flight = q.send("req", "in flight").await.unwrap();
    let cfg = QueueConfig { visibility_timeout: Duration::from_secs(1), ..QueueConfig::default() };
    q.create_queue("req", &cfg).await.unwrap();
    drop(q);
    let q = SqliteQueue::open(&path).unwrap();
    let mut bodies = Vec::new();
    for m in q.receive("req", 10, Duration::from_secs(1), None).await.unwrap() {
        bodies.push(m.body);
    }
    bodies.sort();
    assert_eq!(bodies, vec!["durable", "in flight"]);
    drop(q);
    // Attributes persist too: the 1 s visibility applies after reopening.
    let q = SqliteQueue::open(&path).unwrap();
    let mut back = Vec::new();
    let guard = HangGuard::new("both messages to reappear", HANG_GUARD);
    while back.len() < 2 {
        guard.check();
        back.extend(q.receive("req", 10, Duration::from_secs(1), None).await.unwrap());
    }
    assert_eq!(back.len(), 2);
    assert!(back.iter().all(|m| m.receive_count == 2));
    assert!(back.iter().any(|m| m.id == in_flight));
    drop(dir);
}

#[tokio::test]
async fn bad_names_and_configs_are_refused() {
    let (_dir, _path, q) = new_db().await;
    for name in ["", "has space", "slash/y", "dot.q", &"x".repeat(81)] {
        assert!(
            matches!(q.create_queue(name, &QueueConfig::default()).await, Err(facefleet_ports::PortError::InvalidArgument(_))),
            "{name:?}"
        );
    }
    let missing_dlq = QueueConfig { dead_letter: Some(("nope".into(), 3)), ..QueueConfig::default() };
    assert!(matches!(q.create_queue("q2", &missing_dlq).await, Err(facefleet_ports::PortError::NoSuchQueue(_))));
    let zero = QueueConfig { dead_letter: Some(("req".into(), 0)), ..QueueConfig::default() };
    assert!(matches!(q.create_queue("q2", &zero).await, Err(facefleet_ports::PortError::InvalidArgument(_))));
}
