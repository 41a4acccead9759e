//! Measures SqliteQueue throughput: `C` concurrent senders push `N`
//! messages while `C` concurrent receivers receive (batches of 10) and
//! delete them (one by one, then each batch at once); then one task doing
//! send → receive → delete in sequence; then the CPU that `C` long polls on an empty queue cost for 5 s (what
//! an idle fleet's workers and web tier spend waiting for work).
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

    // Concurrent senders and receivers, deleting what they receive one
    // message at a time, then each received batch at once.
    concurrent(&q, &body, n, c, false).await;
    concurrent(&q, &body, n, c, true).await;

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

    // Long polls on an empty queue: each re-checks the file every
    // POLL_INTERVAL until its wait ends.
    let wait = Duration::from_secs(5);
    let cpu_before = process_cpu();
    let start = Instant::now();
    let polls: Vec<_> = (0..c)
        .map(|_| {
            let q = q.clone();
            tokio::spawn(async move { q.receive("bench", 10, wait, None).await.unwrap() })
        })
        .collect();
    for p in polls {
        assert!(p.await.unwrap().is_empty());
    }
    let (secs, cpu) = (start.elapsed().as_secs_f64(), process_cpu() - cpu_before);
    println!(
        "idle: {c} long polls on an empty queue for {secs:.1} s used {cpu:.3} s of CPU = {:.1} µs per poll check",
        cpu * 1e6 / (c as f64 * secs / facefleet_embedded::sqlite_queue::POLL_INTERVAL.as_secs_f64())
    );
}

/// `c` senders push `n` messages while `c` receivers receive (batches of
/// 10) and delete them: one by one, or each batch with one `delete_batch`.
async fn concurrent(q: &SqliteQueue, body: &str, n: usize, c: usize, batch_delete: bool) {
    let start = Instant::now();
    let sent = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..c {
        let (q, sent, body) = (q.clone(), Arc::clone(&sent), body.to_string());
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
                if batch_delete {
                    let receipts: Vec<&str> = batch.iter().map(|m| m.receipt.as_str()).collect();
                    for r in q.delete_batch("bench", &receipts).await {
                        r.unwrap();
                    }
                } else {
                    for m in &batch {
                        q.delete("bench", &m.receipt).await.unwrap();
                    }
                }
                done.fetch_add(batch.len(), Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let how = if batch_delete { "each batch deleted at once" } else { "deleted one by one" };
    println!(
        "concurrent: {n} messages sent+received+deleted by {c} senders and {c} receivers ({how}) in {secs:.2} s = {:.0} msg/s",
        n as f64 / secs
    );
}

/// User plus system CPU time of this process so far, in seconds.
fn process_cpu() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}
