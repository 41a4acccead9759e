//! Measures SqliteQueue throughput: `C` concurrent senders push `N`
//! messages while `C` concurrent receivers receive (batches of 10) and
//! delete them; then one task doing send → receive → delete in sequence.
//!
//! `cargo run -p facefleet-embedded --example queue_throughput -- [N] [C] [DIR]`
//! (defaults 5000 messages, 100 tasks, a temporary folder).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use facefleet_embedded::SqliteQueue;
use facefleet_ports::{MessageQueue, QueueConfig};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse().expect("N: a number")).unwrap_or(5000);
    let c: usize = args.next().map(|a| a.parse().expect("C: a number")).unwrap_or(100);
    let tmp = tempfile::tempdir().expect("temporary folder");
    let dir = args.next().map(std::path::PathBuf::from).unwrap_or_else(|| tmp.path().to_path_buf());
    let q = SqliteQueue::open(dir.join("queues.sqlite3")).expect("queue opens");
    q.create_queue("bench", &QueueConfig::default()).await.unwrap();
    q.purge("bench").await.unwrap();
    let body = format!("{{\"request\":\"{}\"}}", "x".repeat(200));

    // Concurrent senders and receivers.
    let start = Instant::now();
    let sent = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..c {
        let (q, sent, body) = (q.clone(), Arc::clone(&sent), body.clone());
        tasks.push(tokio::spawn(async move {
            while sent.fetch_add(1, Ordering::Relaxed) < n {
                q.send("bench", &body).await.unwrap();
            }
        }));
    }
    for _ in 0..c {
        let (q, done) = (q.clone(), Arc::clone(&done));
        tasks.push(tokio::spawn(async move {
            while done.load(Ordering::Relaxed) < n {
                let batch = q.receive("bench", 10, Duration::from_millis(200), None).await.unwrap();
                for m in batch {
                    q.delete("bench", &m.receipt).await.unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "concurrent: {n} messages sent+received+deleted by {c} senders and {c} receivers in {secs:.2} s = {:.0} msg/s",
        n as f64 / secs
    );

    // One task, one message at a time.
    let rounds = 500.min(n);
    let start = Instant::now();
    for _ in 0..rounds {
        q.send("bench", &body).await.unwrap();
        let m = q.receive("bench", 1, Duration::from_secs(1), None).await.unwrap().pop().unwrap();
        q.delete("bench", &m.receipt).await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "sequential: {rounds} send→receive→delete round trips in {secs:.2} s = {:.0} round trips/s ({:.2} ms each)",
        rounds as f64 / secs,
        secs * 1000.0 / rounds as f64
    );
    let depth = q.depth("bench").await.unwrap();
    assert_eq!(depth.total(), 0, "messages left: {depth:?}");
}
