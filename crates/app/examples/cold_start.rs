//! A worker's cold start with a large gallery: from nothing loaded to its
//! first answer, and the object reads the gallery cost.
//!
//! Enrolls `--faces` random 192-d faces (10 per person, model
//! `mobilefacenet`) into the `default` collection when it holds fewer,
//! queues one recognition of a real photo, then, timed: loads the face
//! model, builds a worker and lets it answer that request (which loads the
//! gallery). Works on either backend:
//!
//! ```sh
//! cargo run --release -p facefleet-app --example cold_start -- --data-dir /tmp/cold --faces 10000
//! # the AWS emulator (moto on 127.0.0.1:5000):
//! AWS_ENDPOINT_URL=http://127.0.0.1:5000 cargo run --release -p facefleet-app --features aws --example cold_start -- --backend aws --faces 10000
//! ```

use std::time::{Duration, Instant};

use clap::Parser;
use facefleet_app::{BackendArgs, ModelEngine};
use facefleet_gallery::store::{Gallery, NewFace};
use facefleet_gallery::DEFAULT_COLLECTION;
use facefleet_model::ModelConfig;
use facefleet_pipeline::backend::{ensure_resources, QueueTimings};
use facefleet_pipeline::protocol::{Mode, Outcome, Request, Response};
use facefleet_pipeline::worker::{Worker, WorkerConfig};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    backend: BackendArgs,
    /// Faces in the gallery.
    #[arg(long, default_value_t = 10_000)]
    faces: usize,
}

/// A deterministic pseudo-random unit vector.
fn random_unit(seed: u64, dim: usize) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v: Vec<f32> = (0..dim)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    v.iter_mut().for_each(|a| *a /= n);
    v
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dep = facefleet_app::backend::connect(&args.backend, None).await?;
    ensure_resources(&dep, QueueTimings::default()).await?;
    let gallery = Gallery::new(dep.store.clone(), &dep.names.gallery_bucket);
    let have = gallery.load(DEFAULT_COLLECTION).await?.faces.len();
    if have < args.faces {
        let started = Instant::now();
        let mut i = have;
        while i < args.faces {
            let person = format!("person-{:06}", i / 10);
            let batch: Vec<NewFace> =
                (i..(i + 10).min(args.faces)).map(|k| NewFace { embedding: random_unit(k as u64, 192), model: "mobilefacenet".into(), thumbnail: None }).collect();
            i += batch.len();
            gallery.add_faces(DEFAULT_COLLECTION, &person, batch).await?;
        }
        println!("enrolled {} faces in {:.1} s", args.faces - have, started.elapsed().as_secs_f64());
    }
    let photo = facefleet_model::eval::dataset_dir("lfw-dev")?.join("Abdullah_Gul/Abdullah_Gul_0001.jpg");
    dep.store.put(&dep.names.in_bucket, "cold/probe.jpg", std::fs::read(&photo)?.into()).await?;
    dep.queue.purge(&dep.names.resp_queue).await?;
    dep.queue.send(&dep.names.req_queue, &serde_json::to_string(&Request::new("cold-probe", "cold/probe.jpg", Mode::Name))?).await?;

    // The worker's start: model, then the first message (which loads the gallery).
    let started = Instant::now();
    let engine = std::sync::Arc::new(tokio::task::spawn_blocking(|| ModelEngine::load(&ModelConfig::default())).await??);
    let model_ms = started.elapsed().as_millis();
    let worker = Worker::new(dep.clone(), engine, WorkerConfig::default());
    let mut messages = Vec::new();
    while messages.is_empty() {
        messages = dep.queue.receive(&dep.names.req_queue, 10, Duration::from_secs(1), None).await?;
    }
    let outcomes = worker.handle_batch(messages).await;
    let total_ms = started.elapsed().as_millis();
    let resp = dep.queue.receive(&dep.names.resp_queue, 1, Duration::from_secs(5), None).await?;
    let answer = resp
        .first()
        .and_then(|m| serde_json::from_str::<Response>(&m.body).ok())
        .map(|r| match r.result {
            Outcome::Ok(rec) => rec.name,
            other => format!("{other:?}"),
        })
        .unwrap_or_else(|| "no response".into());
    println!("backend: {:?}  faces: {}  simd: {}", args.backend.backend, args.faces, facefleet_model::simd::simd_path());
    println!("model load: {model_ms} ms; cold start to first answer: {total_ms} ms ({outcomes:?}, answer {answer})");
    println!("gallery object reads for the cold load: {}", worker.gallery_reads());
    Ok(())
}
