//! The worker: ack after durable, idempotent retries, error answers instead
//! of hangs, dead-lettering, gallery reloads, graceful stop.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use facefleet_pipeline::protocol::{DeadLetter, ErrorKind, Mode, Outcome, Request, Response};
use facefleet_pipeline::worker::{Handled, Worker};

async fn put_image(dep: &facefleet_pipeline::Deployment, key: &str, bytes: Vec<u8>) {
    dep.store.put(&dep.names.in_bucket, key, Bytes::from(bytes)).await.unwrap();
}

async fn send_request(dep: &facefleet_pipeline::Deployment, id: &str, key: &str) {
    let body = serde_json::to_string(&Request::new(id, key, Mode::Name)).unwrap();
    dep.queue.send(&dep.names.req_queue, &body).await.unwrap();
}

async fn receive_one(dep: &facefleet_pipeline::Deployment, queue: &str) -> facefleet_ports::Message {
    for _ in 0..100 {
        let mut m = dep.queue.receive(queue, 1, Duration::from_millis(100), Some(Duration::from_secs(30))).await.unwrap();
        if let Some(m) = m.pop() {
            return m;
        }
    }
    panic!("no message on {queue}");
}

fn responses(queue: &MemQueue, name: &str) -> Vec<Response> {
    queue.bodies(name).iter().map(|b| serde_json::from_str(b).unwrap()).collect()
}

#[tokio::test]
async fn acknowledges_only_after_the_result_is_durable() {
    let (dep, store, queue) = memory_deployment().await;
    enroll_direct(&dep, "Paul", 7).await;
    put_image(&dep, "a.png", png(7, 8, 8)).await;
    send_request(&dep, "r1", "a.png").await;
    let engine = Arc::new(FakeEngine::default());
    let w = Worker::new(dep.clone(), engine, test_worker_config());

    // The output bucket is failing: no response, the request stays.
    *store.fail_puts_to.lock().unwrap() = Some(dep.names.out_bucket.clone());
    let m = receive_one(&dep, &dep.names.req_queue).await;
    assert!(matches!(w.handle(m).await, Handled::Retry(_)));
    assert!(responses(&queue, &dep.names.resp_queue).is_empty());
    assert_eq!(queue.bodies(&dep.names.req_queue).len(), 1);

    // The bucket recovers: answered, written, deleted.
    *store.fail_puts_to.lock().unwrap() = None;
    let m = receive_one(&dep, &dep.names.req_queue).await;
    assert_eq!(w.handle(m).await, Handled::Answered);
    assert_eq!(store.object(&dep.names.out_bucket, "a").as_deref(), Some(&b"Paul"[..]));
    assert!(queue.bodies(&dep.names.req_queue).is_empty());
    let r = responses(&queue, &dep.names.resp_queue);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].request_id, "r1");
}

#[tokio::test]
async fn a_retry_after_a_lost_ack_rewrites_the_same_single_object() {
    let (dep, store, queue) = memory_deployment().await;
    enroll_direct(&dep, "Paul", 7).await;
    put_image(&dep, "b.png", png(7, 8, 8)).await;
    send_request(&dep, "r2", "b.png").await;
    let w = Worker::new(dep.clone(), Arc::new(FakeEngine::default()), test_worker_config());
    // The delete is lost (as if the worker died right after answering).
    queue.fail_deletes.lock().unwrap().insert(dep.names.req_queue.clone(), 1);
    let m = receive_one(&dep, &dep.names.req_queue).await;
    assert_eq!(w.handle(m.clone()).await, Handled::Answered);
    dep.queue.change_visibility(&dep.names.req_queue, &m.receipt, Duration::ZERO).await.unwrap();
    let m = receive_one(&dep, &dep.names.req_queue).await;
    assert_eq!(m.receive_count, 2);
    assert_eq!(w.handle(m).await, Handled::Answered);
    assert_eq!(store.keys(&dep.names.out_bucket), vec!["b".to_string()]);
    assert_eq!(store.object(&dep.names.out_bucket, "b").as_deref(), Some(&b"Paul"[..]));
    assert!(queue.bodies(&dep.names.req_queue).is_empty());
    // Two identical responses; the web tier drops the duplicate.
    let r = responses(&queue, &dep.names.resp_queue);
    assert_eq!(r.len(), 2);
    assert_eq!(r[0], r[1]);
}

#[tokio::test]
async fn a_stuck_batch_lets_its_requests_go_after_the_lease_limit() {
    use facefleet_gallery::FaceEngine;
    use facefleet_pipeline::worker::WorkerConfig;
    let (dep, store, queue) = memory_deployment().await;
    enroll_direct(&dep, "Paul", 7).await;
    put_image(&dep, "c.png", png(7, 8, 8)).await;
    send_request(&dep, "r3", "c.png").await;
    // The engine holds its second batch until released (at most a minute):
    // spend the first, so the worker's model call is the one held, as if
    // the worker froze or never got a compute slot.
    let engine = Arc::new(FakeEngine::default());
    let (release, held) = std::sync::mpsc::channel();
    *engine.hold_second_batch.lock().unwrap() = Some(held);
    assert!(engine.analyze_many(&[], 1).is_empty());
    // A small lease limit: `MAX_LEASE_PERIODS` periods of 200 ms.
    let config = WorkerConfig { visibility: Duration::from_millis(200), heartbeat: Duration::from_millis(50), ..test_worker_config() };
    let stuck = Arc::new(Worker::new(dep.clone(), engine.clone(), config.clone()));
    let m = loop {
        let got = dep.queue.receive(&dep.names.req_queue, 1, Duration::from_millis(100), Some(config.visibility)).await.unwrap();
        if let Some(m) = got.into_iter().next() {
            break m;
        }
    };
    let handling = tokio::spawn({
        let stuck = stuck.clone();
        async move { stuck.handle(m).await }
    });
    // Renewed without end, the request would stay hidden for as long as
    // its batch is stuck; past the limit another worker gets it.
    let mut again = None;
    while again.is_none() && !engine.hold_ran_out.load(Ordering::SeqCst) {
        let got = dep.queue.receive(&dep.names.req_queue, 1, Duration::from_millis(100), Some(Duration::from_secs(30))).await.unwrap();
        again = got.into_iter().next();
    }
    let again = again.expect("the request of the stuck batch came back to the queue");
    assert_eq!(again.receive_count, 2);
    let peer = Worker::new(dep.clone(), Arc::new(FakeEngine::default()), test_worker_config());
    assert_eq!(peer.handle(again).await, Handled::Answered);
    assert!(queue.bodies(&dep.names.req_queue).is_empty(), "the peer deleted the request");

    // The stuck worker finishes after all: the same object again and a
    // duplicate response (which the dispatcher drops), nothing else.
    release.send(()).unwrap();
    assert_eq!(handling.await.unwrap(), Handled::Answered);
    assert!(!engine.hold_ran_out.load(Ordering::SeqCst));
    assert_eq!(store.keys(&dep.names.out_bucket), vec!["c".to_string()]);
    assert_eq!(store.object(&dep.names.out_bucket, "c").as_deref(), Some(&b"Paul"[..]));
    assert!(queue.bodies(&dep.names.req_queue).is_empty());
    let r = responses(&queue, &dep.names.resp_queue);
    assert_eq!(r.len(), 2);
    assert_eq!(r[0], r[1], "the same answer twice");
    assert_eq!(r[0].request_id, "r3");
}

#[tokio::test]
async fn undecodable_or_missing_images_are_answered_with_an_error_at_once() {
    let (dep, store, queue) = memory_deployment().await;
    put_image(&dep, "junk.jpg", b"\xff\xd8\xff garbage".to_vec()).await;
    send_request(&dep, "r3", "junk.jpg").await;
    send_request(&dep, "r4", "missing.jpg").await;
    let engine = Arc::new(FakeEngine::default());
    let w = Worker::new(dep.clone(), engine.clone(), test_worker_config());
    for _ in 0..2 {
        let m = receive_one(&dep, &dep.names.req_queue).await;
        assert_eq!(m.receive_count, 1);
        assert!(matches!(w.handle(m).await, Handled::Failed(_)));
    }
    assert!(queue.bodies(&dep.names.req_queue).is_empty());
    assert!(store.keys(&dep.names.out_bucket).is_empty());
    let r = responses(&queue, &dep.names.resp_queue);
    assert_eq!(r.len(), 2);
    for resp in r {
        match resp.result {
            Outcome::Err(e) => assert_eq!(e.kind, ErrorKind::BadInput),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(engine.calls.load(Ordering::SeqCst), 1, "the missing image never reaches the model");
}

#[tokio::test]
async fn a_request_for_a_deleted_collection_is_answered_as_such() {
    let (dep, _store, queue) = memory_deployment().await;
    put_image(&dep, "a.png", png(1, 8, 8)).await;
    let mut req = Request::new("r5", "a.png", Mode::Name);
    req.collection = "gone".into();
    dep.queue.send(&dep.names.req_queue, &serde_json::to_string(&req).unwrap()).await.unwrap();
    let w = Worker::new(dep.clone(), Arc::new(FakeEngine::default()), test_worker_config());
    let m = receive_one(&dep, &dep.names.req_queue).await;
    assert!(matches!(w.handle(m).await, Handled::Failed(_)));
    let r = responses(&queue, &dep.names.resp_queue);
    assert!(
        matches!(&r[0].result, Outcome::Err(e) if e.kind == ErrorKind::NoSuchCollection && e.message.contains("`gone`")),
        "{:?}",
        r[0].result
    );
    assert!(queue.bodies(&dep.names.req_queue).is_empty(), "not retried: no attempt can succeed");
}

#[tokio::test]
async fn a_request_that_keeps_failing_is_dead_lettered_and_answered_with_an_error() {
    let (dep, _store, queue) = memory_deployment().await;
    put_image(&dep, "bad.png", png(99, 8, 8)).await;
    send_request(&dep, "r5", "bad.png").await;
    let engine = Arc::new(FakeEngine { fail_red: Some(99), ..Default::default() });
    let w = Worker::new(dep.clone(), engine, test_worker_config());
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let m = receive_one(&dep, &dep.names.req_queue).await;
        outcomes.push(w.handle(m).await);
    }
    assert!(matches!(outcomes[0], Handled::Retry(_)));
    assert!(matches!(outcomes[1], Handled::Retry(_)));
    assert!(matches!(&outcomes[2], Handled::Failed(m) if m.contains("injected model failure")), "{outcomes:?}");
    assert!(queue.bodies(&dep.names.req_queue).is_empty());
    let dl: Vec<DeadLetter> = queue.bodies(&dep.names.req_dlq).iter().map(|b| serde_json::from_str(b).unwrap()).collect();
    assert_eq!(dl.len(), 1);
    assert!(dl[0].error.contains("injected model failure"));
    assert_eq!(dl[0].receive_count, 3);
    let r = responses(&queue, &dep.names.resp_queue);
    assert!(matches!(&r[0].result, Outcome::Err(e) if e.kind == ErrorKind::Failed));
}

#[tokio::test]
async fn a_worker_runs_the_model_on_one_thread_however_busy_the_blocking_pool() {
    let (dep, _store, _queue) = memory_deployment().await;
    put_image(&dep, "a.png", png(7, 8, 8)).await;
    let engine = Arc::new(FakeEngine::default());
    let w = Worker::new(dep.clone(), engine.clone(), test_worker_config());
    send_request(&dep, "r1", "a.png").await;
    let m = receive_one(&dep, &dep.names.req_queue).await;
    assert!(matches!(w.handle(m).await, Handled::Answered));
    // Tokio's blocking threads busy with other work (as file reads and
    // queue calls keep them in a worker): a call handed to that pool would
    // land on a thread the model has not run on.
    let (release, parked) = std::sync::mpsc::channel::<()>();
    let parked = Arc::new(std::sync::Mutex::new(parked));
    let busy: Vec<_> = (0..4)
        .map(|_| {
            let parked = parked.clone();
            tokio::task::spawn_blocking(move || {
                let _ = parked.lock().unwrap().recv();
            })
        })
        .collect();
    send_request(&dep, "r2", "a.png").await;
    let m = receive_one(&dep, &dep.names.req_queue).await;
    assert!(matches!(w.handle(m).await, Handled::Answered));
    drop(release);
    for b in busy {
        b.await.unwrap();
    }
    let threads = engine.threads.lock().unwrap().clone();
    assert_eq!(threads.len(), 2);
    assert_eq!(threads[0], threads[1], "the model's calls ran on different threads");
}

#[tokio::test]
async fn a_model_that_panics_fails_its_request_and_the_worker_goes_on() {
    let (dep, _store, queue) = memory_deployment().await;
    put_image(&dep, "boom.png", png(66, 8, 8)).await;
    put_image(&dep, "fine.png", png(200, 8, 8)).await;
    send_request(&dep, "r6", "boom.png").await;
    let engine = Arc::new(FakeEngine { panic_red: Some(66), ..Default::default() });
    let w = Worker::new(dep.clone(), engine.clone(), test_worker_config());
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let m = receive_one(&dep, &dep.names.req_queue).await;
        outcomes.push(w.handle(m).await);
    }
    assert!(matches!(outcomes[0], Handled::Retry(_)), "{outcomes:?}");
    assert!(matches!(outcomes[1], Handled::Retry(_)), "{outcomes:?}");
    assert!(matches!(&outcomes[2], Handled::Failed(m) if m.contains("injected model panic")), "{outcomes:?}");
    let dl: Vec<DeadLetter> = queue.bodies(&dep.names.req_dlq).iter().map(|b| serde_json::from_str(b).unwrap()).collect();
    assert_eq!(dl.len(), 1);
    assert!(dl[0].error.contains("injected model panic"), "{}", dl[0].error);
    // The same worker, its model thread included, answers the next request.
    send_request(&dep, "r7", "fine.png").await;
    let m = receive_one(&dep, &dep.names.req_queue).await;
    assert!(matches!(w.handle(m).await, Handled::Answered), "the worker stopped working after a panic");
    assert_eq!(engine.calls.load(Ordering::SeqCst), 4);
    let threads = engine.threads.lock().unwrap().clone();
    assert!(threads.iter().all(|t| *t == threads[0]), "a panic moved the model to another thread: {threads:?}");
    let r = responses(&queue, &dep.names.resp_queue);
    assert!(matches!(&r[0].result, Outcome::Err(e) if e.kind == ErrorKind::Failed));
    assert!(matches!(&r[1].result, Outcome::Ok(_)), "{:?}", r[1].result);
}

#[tokio::test]
async fn a_request_whose_workers_keep_crashing_is_answered_with_an_error() {
    let (dep, _store, queue) = memory_deployment().await;
    put_image(&dep, "crash.png", png(7, 8, 8)).await;
    send_request(&dep, "r9", "crash.png").await;
    // Three receivers take the request and vanish without a word (as a
    // worker killed by the model would): the message just comes back.
    for attempt in 1..=3 {
        let m = receive_one(&dep, &dep.names.req_queue).await;
        assert_eq!(m.receive_count, attempt);
        dep.queue.change_visibility(&dep.names.req_queue, &m.receipt, Duration::ZERO).await.unwrap();
    }
    let engine = Arc::new(FakeEngine::default());
    let w = Worker::new(dep.clone(), engine.clone(), test_worker_config());
    let m = receive_one(&dep, &dep.names.req_queue).await;
    assert_eq!(m.receive_count, 4);
    let outcome = w.handle(m).await;
    assert!(matches!(&outcome, Handled::Failed(m) if m.contains("abandoned 3 times")), "{outcome:?}");
    assert_eq!(engine.calls.load(Ordering::SeqCst), 0, "a suspected poison request is not run again");
    assert!(queue.bodies(&dep.names.req_queue).is_empty());
    let dl: Vec<DeadLetter> = queue.bodies(&dep.names.req_dlq).iter().map(|b| serde_json::from_str(b).unwrap()).collect();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].receive_count, 4);
    let r = responses(&queue, &dep.names.resp_queue);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].request_id, "r9");
    assert!(matches!(&r[0].result, Outcome::Err(e) if e.kind == ErrorKind::Failed && e.message.contains("crashed")));
}

#[tokio::test]
async fn malformed_bodies_are_dead_lettered_without_crashing() {
    let (dep, _store, queue) = memory_deployment().await;
    dep.queue.send(&dep.names.req_queue, "this is not json").await.unwrap();
    dep.queue.send(&dep.names.req_queue, r#"{"key": "no id"}"#).await.unwrap();
    enroll_direct(&dep, "Paul", 7).await;
    put_image(&dep, "ok.png", png(7, 8, 8)).await;
    send_request(&dep, "r6", "ok.png").await;
    let (stop, task) = spawn_worker(&dep, Arc::new(FakeEngine::default()));
    for _ in 0..200 {
        if queue.bodies(&dep.names.req_queue).is_empty() && queue.bodies(&dep.names.resp_queue).len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(queue.bodies(&dep.names.req_queue).is_empty());
    let dl: Vec<DeadLetter> = queue.bodies(&dep.names.req_dlq).iter().map(|b| serde_json::from_str(b).unwrap()).collect();
    assert_eq!(dl.len(), 2);
    assert!(dl.iter().any(|d| d.body == "this is not json" && d.error.contains("malformed")));
    assert_eq!(responses(&queue, &dep.names.resp_queue)[0].request_id, "r6");
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn a_stopped_worker_finishes_the_job_in_hand() {
    let (dep, store, queue) = memory_deployment().await;
    enroll_direct(&dep, "Paul", 7).await;
    put_image(&dep, "slow.png", png(7, 8, 8)).await;
    send_request(&dep, "r7", "slow.png").await;
    let engine = Arc::new(FakeEngine { delay: Duration::from_millis(600), ..Default::default() });
    let (stop, task) = spawn_worker(&dep, engine.clone());
    while engine.calls.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    task.await.unwrap();
    assert_eq!(store.object(&dep.names.out_bucket, "slow").as_deref(), Some(&b"Paul"[..]));
    assert!(queue.bodies(&dep.names.req_queue).is_empty());
    assert_eq!(responses(&queue, &dep.names.resp_queue).len(), 1);
}

#[tokio::test]
async fn gallery_changes_are_picked_up_without_a_restart() {
    let (dep, _store, queue) = memory_deployment().await;
    put_image(&dep, "g.png", png(5, 8, 8)).await;
    let w = Worker::new(dep.clone(), Arc::new(FakeEngine::default()), test_worker_config());
    send_request(&dep, "g1", "g.png").await;
    let m = receive_one(&dep, &dep.names.req_queue).await;
    w.handle(m).await;
    enroll_direct(&dep, "Zoe", 5).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    send_request(&dep, "g2", "g.png").await;
    let m = receive_one(&dep, &dep.names.req_queue).await;
    w.handle(m).await;
    let names: Vec<String> = responses(&queue, &dep.names.resp_queue)
        .into_iter()
        .map(|r| match r.result {
            Outcome::Ok(rec) => rec.name,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(names, vec!["Unknown".to_string(), "Zoe".to_string()]);
}
