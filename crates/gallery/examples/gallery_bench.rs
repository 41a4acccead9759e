//! Measures a cold gallery load: enrolls N random 192-d faces into a
//! filesystem store in a temporary folder (through `add_faces`, in
//! batches), then, with a fresh store handle and gallery, times `load` plus
//! `Index::build` and counts the object reads.
//!
//! ```text
//! cargo run --release -p facefleet-gallery --example gallery_bench -- [faces] [faces per add]
//! ```
//! Defaults: 10000 faces, 100 per add.

use std::error::Error;
use std::time::Instant;

use facefleet_gallery::{Gallery, Index, NewFace, DEFAULT_COLLECTION};

const BUCKET: &str = "facefleet-gallery";
const MODEL: &str = "mobilefacenet";
const DIM: usize = 192;
/// Cold loads measured.
const RUNS: usize = 5;

/// Best and median of `v` (sorted in place).
fn best_median(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2])
}

/// xorshift64*: random enough for embeddings, no dependency.
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    fn unit(&mut self) -> Vec<f32> {
        let v: Vec<f32> = (0..DIM).map(|_| self.next_f32()).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / norm).collect()
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(10_000);
    let batch: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(100).max(1);
    let dir = tempfile::tempdir()?;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);

    let (store, _queue) = facefleet_embedded::EmbeddedBackend::open(dir.path())?;
    store.create_bucket(BUCKET).await?;
    let writer = Gallery::new(store, BUCKET);
    let start = Instant::now();
    let mut enrolled = 0;
    let mut person = 0;
    while enrolled < n {
        let count = batch.min(n - enrolled);
        let faces = (0..count).map(|_| NewFace::new(rng.unit(), MODEL)).collect();
        writer.add_faces(DEFAULT_COLLECTION, &format!("person {person:05}"), faces).await?;
        enrolled += count;
        person += 1;
    }
    let enroll = start.elapsed();
    println!("enrolled {n} faces of {DIM} dims in {person} add_faces calls: {:.2} s", enroll.as_secs_f64());

    // Cold: a new store handle and a new gallery (nothing cached in the
    // process; the OS file cache is warm).
    let (store, _queue) = facefleet_embedded::EmbeddedBackend::open(dir.path())?;
    let snapshot_bytes: u64 =
        store.list_all(BUCKET, "collections/default/snapshots/").await?.iter().map(|m| m.size).sum();
    let log_entries = store.count(BUCKET, "collections/default/log/").await?;
    println!(
        "stored: snapshot {:.1} MiB + {log_entries} log entries",
        snapshot_bytes as f64 / (1 << 20) as f64
    );
    // Several cold loads, each through a new gallery value: the reads of
    // each, the times as best and median.
    let mut loads = Vec::new();
    let mut builds = Vec::new();
    let mut reads = Vec::new();
    let mut last = None;
    for _ in 0..RUNS {
        let reader = Gallery::new(store.clone(), BUCKET);
        let start = Instant::now();
        let snapshot = reader.load(DEFAULT_COLLECTION).await?;
        let loaded = start.elapsed();
        let index = Index::build(&snapshot, MODEL);
        builds.push((start.elapsed() - loaded).as_secs_f64() * 1e3);
        loads.push(loaded.as_secs_f64() * 1e3);
        reads.push(reader.reads());
        last = Some((snapshot, index));
    }
    let (snapshot, index) = last.expect("at least one run");
    let (load_best, load_median) = best_median(&mut loads);
    let (build_best, build_median) = best_median(&mut builds);
    println!(
        "cold load of {} faces / {} people (generation {}), best / median of {RUNS}: load {load_best:.1} / {load_median:.1} ms, Index::build {build_best:.1} / {build_median:.1} ms",
        snapshot.faces.len(),
        index.people(),
        snapshot.generation,
    );
    println!("object reads per load: {reads:?}");

    let queries: Vec<Vec<f32>> = (0..200).map(|_| rng.unit()).collect();
    let start = Instant::now();
    let mut hits = 0usize;
    for q in &queries {
        hits += index.search(q, 5).len();
    }
    let per = start.elapsed().as_secs_f64() * 1e6 / queries.len() as f64;
    println!("search (top 5 of {} faces): {per:.0} µs per query ({hits} candidates)", index.faces());
    assert_eq!(snapshot.faces.len(), n, "faces lost");
    Ok(())
}
