//! The whole image pipeline on the AWS adapters against the moto emulator:
//! the pipeline's web tier and workers (the real face model) with every
//! S3/SQS call going to the emulator. The 100-image CSE546 set is answered
//! 100/100 correctly, each bucket ends with 100 objects and both queues
//! empty; a foreign message on the request queue is dead-lettered without
//! disturbing anyone; the workers ride out an outage of the emulator.
//!
//! The web tier and workers run in this test process (the library the
//! `web-tier` and `app-tier` binaries wrap), talking to the emulator over
//! HTTP exactly as the processes do.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use facefleet_aws::{connect_with, AwsClients};
use facefleet_pipeline::backend::{ensure_resources, Deployment, QueueTimings};
use facefleet_app::loadgen::{self, LoadgenOptions};
use facefleet_app::ModelEngine;
use facefleet_pipeline::web::{build_router, serve, EngineFactory, WebConfig, WebState};
use facefleet_pipeline::worker::{Worker, WorkerConfig};
use facefleet_ports::Names;
use tokio_util::sync::CancellationToken;

/// The CSE546 dataset folder; fails clearly when it is missing.
fn cse546() -> PathBuf {
    let shared = std::env::var_os("FACEFLEET_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    let dir = shared.join("datasets/cse546");
    assert!(
        dir.join("face_images_100").is_dir() && dir.join("labels_100.csv").is_file(),
        "the CSE546 dataset is missing at {} (set FACEFLEET_SHARED_DIR to the folder holding datasets/)",
        dir.display()
    );
    dir
}

async fn deployment(clients: &AwsClients, names: &Names) -> Deployment {
    let (store, queue) = connect_with(clients);
    Deployment { names: names.clone(), store, queue, fleet: None }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cse546_set_through_the_pipeline_on_the_emulator() {
    let data = cse546();
    let shared = common::endpoint();
    let names = Names::new(&common::unique_prefix("pipeline"));

    // The web tier talks to the emulator directly; the workers through a
    // line that the test cuts for a while.
    let web_clients = AwsClients::load(&common::options_for(&shared)).await;
    let web_dep = deployment(&web_clients, &names).await;
    ensure_resources(&web_dep, QueueTimings::default()).await.expect("create the buckets and queues");
    let target: u16 = shared.rsplit(':').next().unwrap().parse().unwrap();
    let line = common::Outage::start(target).await;
    let mut worker_opts = common::options_for(&line.endpoint());
    worker_opts.connect_timeout = Duration::from_secs(1);
    let worker_clients = AwsClients::load(&worker_opts).await;

    // The real model, shared by the enroller and the workers.
    let engine = Arc::new(
        tokio::task::spawn_blocking(|| ModelEngine::load(&Default::default()))
            .await
            .unwrap()
            .expect("load the face model"),
    );
    let enroll_engine = engine.clone();
    let factory: EngineFactory = Arc::new(move || Ok(enroll_engine.clone() as _));
    let state = WebState::new(web_dep.clone(), WebConfig::default(), Some(factory));
    let app = build_router(state.clone(), vec![]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let web = {
        let (state, stop) = (state.clone(), stop.clone());
        tokio::spawn(async move { serve(listener, &state, app, stop).await })
    };

    // Enroll the people of the labelled set through the web tier.
    let http = reqwest::Client::new();
    let (people, photos) = facefleet_app::client::enroll_labelled(
        &http,
        &url,
        &data.join("face_images_100"),
        &data.join("labels_100.csv"),
    )
    .await
    .expect("enroll the gallery");
    eprintln!("enrolled {people} people from {photos} photos");

    // Two workers (this machine has two cores).
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let dep = Deployment {
                names: names.clone(),
                store: connect_with(&worker_clients).0,
                queue: connect_with(&worker_clients).1,
                fleet: None,
            };
            let w = Worker::new(dep, engine.clone(), WorkerConfig::default());
            tokio::spawn(w.run(stop.clone()))
        })
        .collect();

    // A message that is not ours, among the requests.
    let foreign = "hello from somebody else's producer";
    web_dep.queue.send(&names.req_queue, foreign).await.unwrap();

    // The load, with the workers' line cut for 3 s while it runs.
    let outage = {
        let line = line.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            line.down();
            let t = Instant::now();
            tokio::time::sleep(Duration::from_secs(3)).await;
            line.restore();
            t.elapsed()
        })
    };
    let report = loadgen::run(&LoadgenOptions {
        url: url.clone(),
        dir: data.join("face_images_100"),
        labels: Some(data.join("labels_100.csv")),
        concurrency: 20,
        limit: None,
        timeout: Duration::from_secs(120),
        progress: false,
    })
    .await
    .expect("load run");
    let down_for = outage.await.unwrap();
    eprintln!("{report}\n(the workers' line to the emulator was down for {down_for:?} during the run)");
    for o in report.outcomes.iter().filter(|o| o.correct != Some(true)) {
        eprintln!("not correct: {} -> {:?} {}", o.file, o.status, o.body);
    }
    assert_eq!(report.requests, 100);
    assert_eq!(report.completed, 100, "every request answered");
    assert_eq!(report.correct, 100, "every answer correct");

    // 100 objects in each bucket, queues empty, the foreign message in the DLQ.
    let store = &web_dep.store;
    assert_eq!(store.count(&names.in_bucket, "").await.unwrap(), 100);
    assert_eq!(store.count(&names.out_bucket, "").await.unwrap(), 100);
    let dead = facefleet_ports::contract::eventually("the foreign message in the DLQ", Duration::from_secs(60), || async {
        let got = web_dep.queue.receive(&names.req_dlq, 10, Duration::from_secs(1), None).await.unwrap();
        // The worker records it with the reason: {"body", "error", ...}.
        got.into_iter().find(|m| {
            serde_json::from_str::<serde_json::Value>(&m.body)
                .is_ok_and(|v| v["body"] == foreign && v["error"].as_str().is_some_and(|e| !e.is_empty()))
        })
    })
    .await;
    eprintln!("dead letter: {}", dead.body);
    web_dep.queue.delete(&names.req_dlq, &dead.receipt).await.unwrap();
    facefleet_ports::contract::eventually("both queues empty", Duration::from_secs(60), || async {
        let req = web_dep.queue.depth(&names.req_queue).await.unwrap();
        let resp = web_dep.queue.depth(&names.resp_queue).await.unwrap();
        (req.total() == 0 && resp.total() == 0).then_some(())
    })
    .await;

    stop.cancel();
    for w in workers {
        w.await.unwrap();
    }
    web.await.unwrap().unwrap();
}
