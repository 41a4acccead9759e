//! Two web tiers sharing the same queues each get their own answers.

mod common;

use std::sync::Arc;

use common::*;
use facefleet_pipeline::web::WebConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_web_tiers_sharing_queues_each_get_their_own_answers() {
    let (dep, _store, queue) = memory_deployment().await;
    // 20 people, red 1..=20.
    for red in 1..=20u8 {
        enroll_direct(&dep, &format!("P{red}"), red).await;
    }
    let engine = Arc::new(FakeEngine { delay: std::time::Duration::from_millis(5), ..Default::default() });
    for _ in 0..3 {
        spawn_worker(&dep, engine.clone());
    }
    let a = start_web(dep.clone(), WebConfig::default()).await;
    let b = start_web(dep.clone(), WebConfig::default()).await;
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..200usize {
        let url = if i % 2 == 0 { a.url.clone() } else { b.url.clone() };
        let c = client.clone();
        let red = (i % 20) as u8 + 1;
        tasks.push(tokio::spawn(async move {
            let (st, body) = post_file(&c, &format!("{url}/"), "inputFile", &format!("img_{i}.png"), png(red, 8, 8)).await;
            (i, red, st, body)
        }));
    }
    for t in tasks {
        let (i, red, st, body) = t.await.unwrap();
        assert_eq!(st, 200, "{body}");
        assert_eq!(body, format!("img_{i}:P{red}"));
    }
    // Every response was consumed; nothing is left behind.
    assert!(queue.bodies(&dep.names.resp_queue).is_empty());
    assert!(queue.bodies(&dep.names.req_queue).is_empty());
}
