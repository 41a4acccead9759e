//! Message-queue contract cases. Each takes the queue port and a unique
//! namespace and creates its queues as `<ns>-<suffix>`.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::join_all;
use tokio::time::Instant;

use super::{eventually, HangGuard, HANG_GUARD};
use crate::{Message, MessageQueue, PortError, QueueConfig, QueueDepth};

/// Names of every case, in the order [`run_all`] runs them.
pub const CASES: &[&str] = &[
    "create_queue_is_idempotent",
    "send_then_receive_roundtrips",
    "receive_returns_at_most_max",
    "receive_rejects_bad_max",
    "long_poll_returns_empty_after_wait",
    "long_poll_returns_early_when_message_arrives",
    "invisible_message_reappears_after_timeout",
    "queue_default_visibility_applies",
    "delete_acknowledges",
    "change_visibility_zero_makes_visible",
    "change_visibility_extends_invisibility",
    "depth_counts_visible_and_in_flight",
    "purge_empties_queue",
    "message_size_limit_is_enforced",
    "dead_letter_after_max_receives",
    "missing_queue_is_no_such_queue",
    "stale_receipt_does_not_delete",
    "concurrent_traffic_loses_and_duplicates_nothing",
    "delete_batch_answers_each_receipt",
];

/// Runs every case in sequence, each in its own namespace derived from `ns`.
pub async fn run_all(q: &dyn MessageQueue, ns: &str) {
    create_queue_is_idempotent(q, &format!("{ns}-c1")).await;
    send_then_receive_roundtrips(q, &format!("{ns}-c2")).await;
    receive_returns_at_most_max(q, &format!("{ns}-c3")).await;
    receive_rejects_bad_max(q, &format!("{ns}-c4")).await;
    long_poll_returns_empty_after_wait(q, &format!("{ns}-c5")).await;
    long_poll_returns_early_when_message_arrives(q, &format!("{ns}-c6")).await;
    invisible_message_reappears_after_timeout(q, &format!("{ns}-c7")).await;
    queue_default_visibility_applies(q, &format!("{ns}-c8")).await;
    delete_acknowledges(q, &format!("{ns}-c9")).await;
    change_visibility_zero_makes_visible(q, &format!("{ns}-c10")).await;
    change_visibility_extends_invisibility(q, &format!("{ns}-c11")).await;
    depth_counts_visible_and_in_flight(q, &format!("{ns}-c12")).await;
    purge_empties_queue(q, &format!("{ns}-c13")).await;
    message_size_limit_is_enforced(q, &format!("{ns}-c14")).await;
    dead_letter_after_max_receives(q, &format!("{ns}-c15")).await;
    missing_queue_is_no_such_queue(q, &format!("{ns}-c16")).await;
    stale_receipt_does_not_delete(q, &format!("{ns}-c17")).await;
    concurrent_traffic_loses_and_duplicates_nothing(q, &format!("{ns}-c18")).await;
    delete_batch_answers_each_receipt(q, &format!("{ns}-c19")).await;
}

const LONG: Option<Duration> = Some(Duration::from_secs(60));
const SHORT: Option<Duration> = Some(Duration::from_secs(1));

async fn fresh_queue(q: &dyn MessageQueue, ns: &str, config: &QueueConfig) -> String {
    let name = format!("{ns}-q");
    q.create_queue(&name, config)
        .await
        .unwrap_or_else(|e| panic!("create_queue({name}) failed: {e}"));
    name
}

async fn default_queue(q: &dyn MessageQueue, ns: &str) -> String {
    fresh_queue(q, ns, &QueueConfig::default()).await
}

/// Receives exactly one message, waiting for it (bounded).
async fn receive_one(q: &dyn MessageQueue, queue: &str, visibility: Option<Duration>) -> Message {
    let mut got = eventually(&format!("a message in {queue}"), HANG_GUARD, || async {
        let batch = q.receive(queue, 1, Duration::from_secs(1), visibility).await.unwrap();
        (!batch.is_empty()).then_some(batch)
    })
    .await;
    assert_eq!(got.len(), 1, "receive(max=1) returned {} messages", got.len());
    got.pop().unwrap()
}

/// Asserts that nothing is receivable right now.
async fn assert_nothing_visible(q: &dyn MessageQueue, queue: &str, why: &str) {
    let got = q.receive(queue, 10, Duration::ZERO, LONG).await.unwrap();
    assert!(got.is_empty(), "{why}: received {got:?}");
}

async fn wait_depth(q: &dyn MessageQueue, queue: &str, want: QueueDepth) {
    eventually(&format!("depth of {queue} to become {want:?}"), HANG_GUARD, || async {
        (q.depth(queue).await.unwrap() == want).then_some(())
    })
    .await
}

/// Creating a queue twice succeeds and keeps its messages.
pub async fn create_queue_is_idempotent(q: &dyn MessageQueue, ns: &str) {
    let queue = default_queue(q, ns).await;
    q.send(&queue, "kept").await.unwrap();
    q.create_queue(&queue, &QueueConfig::default())
        .await
        .expect("creating an existing queue must succeed");
    assert_eq!(receive_one(q, &queue, LONG).await.body, "kept");
}

/// A sent message is received with its id and body, count 1 and a receipt.
pub async fn send_then_receive_roundtrips(q: &dyn MessageQueue, ns: &str) {
    let queue = default_queue(q, ns).await;
    let body = r#"{"image":"test_00.jpg","note":"ünïcödé ✓ \"quoted\"\nnew line"}"#;
    let id = q.send(&queue, body).await.unwrap();
    assert!(!id.is_empty(), "empty message id");
    let m = receive_one(q, &queue, LONG).await;
    assert_eq!(m.id, id);
    assert_eq!(m.body, body);
    assert_eq!(m.receive_count, 1);
    assert!(!m.receipt.is_empty(), "empty receipt");
    q.delete(&queue, &m.receipt).await.unwrap();
    wait_depth(q, &queue, QueueDepth::default()).await;
}

/// A receive returns at most `max` messages; repeated receives drain the
/// queue, each message once while invisible.
pub async fn receive_returns_at_most_max(q: &dyn MessageQueue, ns: &str) {
    let queue = default_queue(q, ns).await;
    let mut sent = HashSet::new();
    for i in 0..15 {
        sent.insert(q.send(&queue, &format!("m{i}")).await.unwrap());
    }
    let mut seen = HashSet::new();
    let mut batches = 0;
    let guard = HangGuard::new("all 15 messages received", HANG_GUARD);
    while seen.len() < 15 {
        guard.check();
        let batch = q.receive(&queue, 4, Duration::from_secs(1), LONG).await.unwrap();
        batches += 1;
        assert!(batch.len() <= 4, "receive(max=4) returned {}", batch.len());
        for m in batch {
            assert!(seen.insert(m.id.clone()), "message {} received twice while invisible", m.id);
        }
    }
    assert_eq!(seen, sent);
    assert!(batches >= 4, "15 messages in {batches} batches of at most 4");
    // A full batch is capped at MAX_BATCH.
    for i in 0..12 {
        q.send(&queue, &format!("n{i}")).await.unwrap();
    }
    let batch = q.receive(&queue, 10, Duration::from_secs(2), LONG).await.unwrap();
    assert!(!batch.is_empty() && batch.len() <= 10, "receive(max=10) returned {}", batch.len());
}

/// `max` outside 1..=10 is `InvalidArgument`.
pub async fn receive_rejects_bad_max(q: &dyn MessageQueue, ns: &str) {
    let queue = default_queue(q, ns).await;
    q.send(&queue, "x").await.unwrap();
    for max in [0usize, 11, 1000] {
        match q.receive(&queue, max, Duration::ZERO, None).await {
            Err(PortError::InvalidArgument(_)) => {}
            other => panic!("receive(max={max}): expected InvalidArgument, got {other:?}"),
        }
    }
    // The refused calls did not consume the message.
    assert_eq!(receive_one(q, &queue, LONG).await.receive_count, 1);
}

/// A long poll on an empty queue ends with an empty batch, not an error.
pub async fn long_poll_returns_empty_after_wait(q: &dyn MessageQueue, ns: &str) {
    let queue = default_queue(q, ns).await;
    let got = q.receive(&queue, 10, Duration::from_secs(1), None).await.unwrap();
    assert!(got.is_empty(), "empty queue returned {got:?}");
    let got = q.receive(&queue, 10, Duration::ZERO, None).await.unwrap();
    assert!(got.is_empty(), "empty queue returned {got:?}");
}

/// A long poll returns the message that arrives during the wait, before
/// the wait is over (the only time check: it must not sit out the whole
/// 20 s wait when a message arrived after a fraction of a second).
pub async fn long_poll_returns_early_when_message_arrives(q: &dyn MessageQueue, ns: &str) {
    let queue = default_queue(q, ns).await;
    let wait = Duration::from_secs(20);
    let receiver = async {
        let start = Instant::now();
        let got = q.receive(&queue, 10, wait, LONG).await.unwrap();
        (got, start.elapsed())
    };
    let sender = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        q.send(&queue, "arrived").await.unwrap()
    };
    let ((got, elapsed), id) = tokio::join!(receiver, sender);
    assert_eq!(got.len(), 1, "long poll got {got:?}");
    assert_eq!(got[0].id, id);
    assert!(elapsed < wait, "long poll sat out its whole wait ({elapsed:?}) though a message arrived");
}

/// A received message is invisible until its visibility timeout ends, then
/// is delivered again with a higher receive count and a new receipt.
pub async fn invisible_message_reappears_after_timeout(q: &dyn MessageQueue, ns: &str) {
    let queue = default_queue(q, ns).await;
    let id = q.send(&queue, "again").await.unwrap();
    let first = receive_one(q, &queue, SHORT).await;
    assert_eq!((first.id.as_str(), first.receive_count), (id.as_str(), 1));
    let second = receive_one(q, &queue, LONG).await;
    assert_eq!(second.id, id);
    assert_eq!(second.body, "again");
    assert_eq!(second.receive_count, 2);
    assert_ne!(second.receipt, first.receipt, "a new receive must give a new receipt");
    assert_nothing_visible(q, &queue, "message received with 60 s visibility").await;
    q.delete(&queue, &second.receipt).await.unwrap();
}

/// `receive(.., None)` uses the queue's configured visibility timeout.
pub async fn queue_default_visibility_applies(q: &dyn MessageQueue, ns: &str) {
    let short_cfg = QueueConfig { visibility_timeout: Duration::from_secs(1), ..QueueConfig::default() };
    let short = fresh_queue(q, &format!("{ns}-s"), &short_cfg).await;
    let long_cfg = QueueConfig { visibility_timeout: Duration::from_secs(120), ..QueueConfig::default() };
    let long = fresh_queue(q, &format!("{ns}-l"), &long_cfg).await;
    q.send(&short, "s").await.unwrap();
    q.send(&long, "l").await.unwrap();
    assert_eq!(receive_one(q, &short, None).await.receive_count, 1);
    assert_eq!(receive_one(q, &long, None).await.receive_count, 1);
    // The short queue's message comes back on its own...
    assert_eq!(receive_one(q, &short, None).await.receive_count, 2);
    // ...while the long queue's one is still hidden after that.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_nothing_visible(q, &long, "message within its 120 s default visibility").await;
}

/// A deleted message never comes back; others are unaffected.
pub async fn delete_acknowledges(q: &dyn MessageQueue, ns: &str) {
    let queue = default_queue(q, ns).await;
    let a = q.send(&queue, "a").await.unwrap();
    let b = q.send(&queue, "b").await.unwrap();
    let m1 = receive_one(q, &queue, SHORT).await;
    let m2 = receive_one(q, &queue, SHORT).await;
    let (ma, mb) = if m1.id == a { (m1, m2) } else { (m2, m1) };
    assert_eq!((ma.id.as_str(), mb.id.as_str()), (a.as_str(), b.as_str()));
    q.delete(&queue, &ma.receipt).await.unwrap();
    // b reappears after its 1 s visibility; a, whose timeout ended at the
    // same time, does not.
    let again = receive_one(q, &queue, LONG).await;
    assert_eq!(again.id, b);
    assert_eq!(again.receive_count, 2);
    let rest = q.receive(&queue, 10, Duration::from_secs(1), LONG).await.unwrap();
    assert!(rest.is_empty(), "deleted message came back: {rest:?}");
    q.delete(&queue, &again.receipt).await.unwrap();
    wait_depth(q, &queue, QueueDepth::default()).await;
}

/// Changing the visibility of a received message to zero makes it
/// receivable again at once.
pub async fn change_visibility_zero_makes_visible(q: &dyn MessageQueue, ns: &str) {
    let queue = default_queue(q, ns).await;
    let id = q.send(&queue, "back").await.unwrap();
    let m = receive_one(q, &queue, LONG).await;
    assert_nothing_visible(q, &queue, "just received with 60 s visibility").await;
    q.change_visibility(&queue, &m.receipt, Duration::ZERO).await.unwrap();
    let again = receive_one(q, &queue, LONG).await;
    assert_eq!(again.id, id);
    assert_eq!(again.receive_count, 2);
}

/// Changing the visibility to a longer timeout keeps the message hidden
/// past its original timeout.
pub async fn change_visibility_extends_invisibility(q: &dyn MessageQueue, ns: &str) {
    let queue = default_queue(q, ns).await;
    q.send(&queue, "held").await.unwrap();
    let m = receive_one(q, &queue, SHORT).await;
    q.change_visibility(&queue, &m.receipt, Duration::from_secs(120)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_nothing_visible(q, &queue, "visibility extended to 120 s").await;
    wait_depth(q, &queue, QueueDepth { visible: 0, in_flight: 1 }).await;
    q.delete(&queue, &m.receipt).await.expect("the receipt still deletes after extension");
    wait_depth(q, &queue, QueueDepth::default()).await;
}

/// Depth counts visible and in-flight messages.
pub async fn depth_counts_visible_and_in_flight(q: &dyn MessageQueue, ns: &str) {
    let queue = default_queue(q, ns).await;
    wait_depth(q, &queue, QueueDepth::default()).await;
    for i in 0..3 {
        q.send(&queue, &format!("d{i}")).await.unwrap();
    }
    wait_depth(q, &queue, QueueDepth { visible: 3, in_flight: 0 }).await;
    let a = receive_one(q, &queue, LONG).await;
    let _b = receive_one(q, &queue, LONG).await;
    wait_depth(q, &queue, QueueDepth { visible: 1, in_flight: 2 }).await;
    assert_eq!(q.depth(&queue).await.unwrap().total(), 3);
    q.delete(&queue, &a.receipt).await.unwrap();
    wait_depth(q, &queue, QueueDepth { visible: 1, in_flight: 1 }).await;
}

/// Purge deletes visible and in-flight messages; the queue stays usable.
pub async fn purge_empties_queue(q: &dyn MessageQueue, ns: &str) {
    let queue = default_queue(q, ns).await;
    for i in 0..5 {
        q.send(&queue, &format!("p{i}")).await.unwrap();
    }
    let _in_flight = receive_one(q, &queue, LONG).await;
    q.purge(&queue).await.unwrap();
    wait_depth(q, &queue, QueueDepth::default()).await;
    assert_nothing_visible(q, &queue, "after purge").await;
    let id = q.send(&queue, "after purge").await.unwrap();
    assert_eq!(receive_one(q, &queue, LONG).await.id, id);
}

/// Bodies up to the queue's limit (counted in UTF-8 bytes) are accepted,
/// larger ones refused with `MessageTooLarge`; re-creating the queue with a
/// new limit applies it.
pub async fn message_size_limit_is_enforced(q: &dyn MessageQueue, ns: &str) {
    let mut cfg = QueueConfig { max_message_size: 2048, ..QueueConfig::default() };
    let queue = fresh_queue(q, ns, &cfg).await;
    q.send(&queue, &"x".repeat(1500)).await.expect("1500 bytes under a 2048 limit");
    cfg.max_message_size = 1024;
    q.create_queue(&queue, &cfg).await.expect("updating the limit");
    let exact = "y".repeat(1024);
    let exact_id = q.send(&queue, &exact).await.expect("exactly 1024 bytes is accepted");
    for body in ["z".repeat(1025), format!("{}é", "z".repeat(1023))] {
        match q.send(&queue, &body).await {
            Err(PortError::MessageTooLarge { queue: name, size, limit }) => {
                assert_eq!(name, queue);
                assert_eq!(size, 1025);
                assert_eq!(limit, 1024);
            }
            other => panic!("send of 1025 bytes: expected MessageTooLarge, got {other:?}"),
        }
    }
    let mut bodies = Vec::new();
    let guard = HangGuard::new("both accepted messages received", HANG_GUARD);
    while bodies.len() < 2 {
        guard.check();
        for m in q.receive(&queue, 10, Duration::from_secs(1), LONG).await.unwrap() {
            bodies.push((m.id, m.body.len()));
        }
    }
    bodies.sort_by_key(|b| b.1);
    assert_eq!(bodies.len(), 2, "a refused message was stored: {bodies:?}");
    assert_eq!(bodies[0], (exact_id, 1024));
}

/// A message received more than the dead-letter count times moves to the
/// dead-letter queue instead of being delivered again.
pub async fn dead_letter_after_max_receives(q: &dyn MessageQueue, ns: &str) {
    let dlq = fresh_queue(q, &format!("{ns}-dl"), &QueueConfig::default()).await;
    let cfg = QueueConfig { dead_letter: Some((dlq.clone(), 2)), ..QueueConfig::default() };
    let queue = fresh_queue(q, ns, &cfg).await;
    q.send(&queue, "healthy").await.unwrap();
    let poison = q.send(&queue, "poison").await.unwrap();
    let mut poison_receives = 0u32;
    let mut healthy_done = false;
    // Receive everything; fail the poison message each time (visibility 0),
    // acknowledge the healthy one.
    let guard = HangGuard::new("the poison message to leave the queue", HANG_GUARD);
    loop {
        guard.check();
        for m in q.receive(&queue, 10, Duration::from_secs(1), LONG).await.unwrap() {
            if m.id == poison {
                poison_receives += 1;
                assert_eq!(m.receive_count, poison_receives);
                assert!(m.receive_count <= 2, "poison delivered {} times, limit 2", m.receive_count);
                q.change_visibility(&queue, &m.receipt, Duration::ZERO).await.unwrap();
            } else {
                q.delete(&queue, &m.receipt).await.unwrap();
                healthy_done = true;
            }
        }
        let depth = q.depth(&queue).await.unwrap();
        if poison_receives == 2 && healthy_done && depth.total() == 0 {
            break;
        }
    }
    let dead = receive_one(q, &dlq, LONG).await;
    assert_eq!(dead.id, poison);
    assert_eq!(dead.body, "poison");
    assert_nothing_visible(q, &queue, "poison message after its move").await;
}

/// Every call on a queue that does not exist is `NoSuchQueue`; nothing
/// creates it implicitly.
pub async fn missing_queue_is_no_such_queue(q: &dyn MessageQueue, ns: &str) {
    let queue = format!("{ns}-missing");
    let check = |what: &str, r: Result<(), PortError>| match r {
        Err(PortError::NoSuchQueue(name)) => assert_eq!(name, queue, "{what}"),
        other => panic!("{what} on a missing queue: expected NoSuchQueue, got {other:?}"),
    };
    check("send", q.send(&queue, "x").await.map(drop));
    check("receive", q.receive(&queue, 1, Duration::ZERO, None).await.map(drop));
    check("depth", q.depth(&queue).await.map(drop));
    check("purge", q.purge(&queue).await);
    check("delete", q.delete(&queue, "not-a-receipt").await);
    check("change_visibility", q.change_visibility(&queue, "not-a-receipt", Duration::ZERO).await);
    check("send again", q.send(&queue, "x").await.map(drop));
}

/// Receipts: garbage is `InvalidReceipt`; deleting twice succeeds; a
/// receipt made stale by a new receive may delete the message (SQS) or be
/// refused with `InvalidReceipt`, but the current receipt always deletes and
/// the message never comes back after.
pub async fn stale_receipt_does_not_delete(q: &dyn MessageQueue, ns: &str) {
    let queue = default_queue(q, ns).await;
    q.send(&queue, "r").await.unwrap();
    for call in ["delete", "change_visibility"] {
        let r = match call {
            "delete" => q.delete(&queue, "not-a-receipt").await,
            _ => q.change_visibility(&queue, "not-a-receipt", Duration::ZERO).await,
        };
        match r {
            Err(PortError::InvalidReceipt(name)) => assert_eq!(name, queue),
            other => panic!("{call} with a garbage receipt: expected InvalidReceipt, got {other:?}"),
        }
    }
    let first = receive_one(q, &queue, SHORT).await;
    let second = receive_one(q, &queue, LONG).await;
    assert_eq!(second.receive_count, 2);
    match q.delete(&queue, &first.receipt).await {
        Ok(()) | Err(PortError::InvalidReceipt(_)) => {}
        Err(e) => panic!("delete with a stale receipt: expected Ok or InvalidReceipt, got {e:?}"),
    }
    q.delete(&queue, &second.receipt).await.expect("the current receipt deletes");
    q.delete(&queue, &second.receipt).await.expect("deleting twice succeeds");
    wait_depth(q, &queue, QueueDepth::default()).await;
    assert_nothing_visible(q, &queue, "deleted message").await;
}

/// Many concurrent senders and receivers: every message is received, none
/// twice while invisible, and the queue ends empty.
pub async fn concurrent_traffic_loses_and_duplicates_nothing(q: &dyn MessageQueue, ns: &str) {
    const SENDERS: usize = 10;
    const PER_SENDER: usize = 10;
    const TOTAL: usize = SENDERS * PER_SENDER;
    let queue = default_queue(q, ns).await;
    let received: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let senders = join_all((0..SENDERS).map(|s| {
        let queue = &queue;
        async move {
            let mut ids = Vec::new();
            for i in 0..PER_SENDER {
                ids.push(q.send(queue, &format!("sender {s} message {i}")).await.unwrap());
            }
            ids
        }
    }));
    let receivers = join_all((0..4).map(|_| {
        let (queue, received) = (&queue, &received);
        async move {
            let start = Instant::now();
            while received.lock().unwrap().len() < TOTAL {
                assert!(start.elapsed() < HANG_GUARD * 2, "receivers gave up waiting");
                let batch = q.receive(queue, 10, Duration::from_secs(1), LONG).await.unwrap();
                for m in batch {
                    q.delete(queue, &m.receipt).await.unwrap();
                    received.lock().unwrap().push(m.id);
                }
            }
        }
    }));
    let (sent, ()) = tokio::join!(senders, async {
        receivers.await;
    });
    let sent: HashSet<String> = sent.into_iter().flatten().collect();
    assert_eq!(sent.len(), TOTAL, "message ids must be distinct");
    let received = received.into_inner().unwrap();
    let unique: HashSet<String> = received.iter().cloned().collect();
    assert_eq!(unique.len(), received.len(), "a message was delivered twice while invisible");
    assert_eq!(unique, sent, "messages lost or invented");
    wait_depth(q, &queue, QueueDepth::default()).await;
}

/// A batch delete answers each receipt as `delete` would, in order: the
/// good receipts delete their messages, a garbage one is `InvalidReceipt`
/// and deletes nothing; a missing queue is `NoSuchQueue` for every receipt.
pub async fn delete_batch_answers_each_receipt(q: &dyn MessageQueue, ns: &str) {
    let queue = default_queue(q, ns).await;
    for body in ["a", "b", "c"] {
        q.send(&queue, body).await.unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 3 {
        got.extend(q.receive(&queue, 10, Duration::from_secs(5), LONG).await.unwrap());
    }
    got.sort_by(|x, y| x.body.cmp(&y.body));
    assert!(q.delete_batch(&queue, &[]).await.is_empty());
    let results = q.delete_batch(&queue, &[&got[0].receipt, "not-a-receipt", &got[2].receipt]).await;
    assert_eq!(results.len(), 3, "{results:?}");
    assert_eq!(results[0], Ok(()));
    assert_eq!(results[1], Err(PortError::InvalidReceipt(queue.clone())));
    assert_eq!(results[2], Ok(()));
    // b is still there: made visible again, it is the only one received.
    q.change_visibility(&queue, &got[1].receipt, Duration::ZERO).await.unwrap();
    let again = receive_one(q, &queue, LONG).await;
    assert_eq!(again.body, "b");
    assert_nothing_visible(q, &queue, "messages deleted in a batch").await;
    assert_eq!(q.delete_batch(&queue, &[&again.receipt]).await, vec![Ok(())]);
    wait_depth(q, &queue, QueueDepth::default()).await;
    let missing = format!("{ns}-missing");
    for r in q.delete_batch(&missing, &[&again.receipt, &again.receipt]).await {
        assert_eq!(r, Err(PortError::NoSuchQueue(missing.clone())));
    }
}
