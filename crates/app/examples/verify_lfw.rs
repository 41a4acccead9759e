//! Verification accuracy on LFW-style pairs built from
//! `../shared/datasets/lfw-dev` (63 people x 6 photos), through the same
//! engine `POST /v1/verify` uses.
//!
//! Pairs: every same-person pair (15 per person, 945) and as many
//! different-person pairs, chosen deterministically (photo `j % 6` of
//! person `p` against photo `(j + 1) % 6` of person `p + 1 + j`, for
//! `j` in 0..15). A photo without a face makes its pairs count as errors.
//!
//! Reports the accuracy at the engine's calibrated threshold (what
//! `/v1/verify` answers) and the usual LFW protocol: 10 folds, the
//! threshold chosen on 9, accuracy on the 10th, averaged.
//!
//! ```sh
//! cargo run --release -p facefleet-app --example verify_lfw
//! ```

use std::path::PathBuf;

use anyhow::Context;
use facefleet_app::ModelEngine;
use facefleet_gallery::FaceEngine;
use facefleet_model::ModelConfig;

fn main() -> anyhow::Result<()> {
    let dir = facefleet_model::eval::dataset_dir("lfw-dev").context("the LFW pairs need ../shared/datasets/lfw-dev")?;
    let engine = ModelEngine::load(&ModelConfig::default())?;
    let mut people: Vec<(String, Vec<PathBuf>)> = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.is_dir() {
            let mut photos: Vec<PathBuf> = std::fs::read_dir(&path)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "jpg")).collect();
            photos.sort();
            people.push((path.file_name().unwrap().to_string_lossy().into_owned(), photos));
        }
    }
    people.sort();
    let started = std::time::Instant::now();
    let mut embeddings: Vec<Vec<Option<Vec<f32>>>> = Vec::new();
    let mut no_face = 0;
    for (_, photos) in &people {
        let mut row = Vec::new();
        for p in photos {
            let bytes = std::fs::read(p)?;
            let face = engine.analyze(&bytes, 1, true)?.into_iter().next().map(|f| f.embedding);
            no_face += usize::from(face.is_none());
            row.push(face);
        }
        embeddings.push(row);
    }
    let embed_s = started.elapsed().as_secs_f64();

    // (similarity or None, same person?)
    let mut pairs: Vec<(Option<f32>, bool)> = Vec::new();
    let sim = |a: &Option<Vec<f32>>, b: &Option<Vec<f32>>| -> Option<f32> {
        Some(a.as_ref()?.iter().zip(b.as_ref()?).map(|(x, y)| x * y).sum())
    };
    let n = people.len();
    for (p, row) in embeddings.iter().enumerate() {
        for i in 0..row.len() {
            for j in i + 1..row.len() {
                pairs.push((sim(&row[i], &row[j]), true));
            }
        }
        for j in 0..15 {
            let q = (p + 1 + j) % n;
            let (a, b) = (&row[j % row.len()], &embeddings[q][(j + 1) % embeddings[q].len()]);
            pairs.push((sim(a, b), false));
        }
    }
    let correct = |t: f32, pairs: &[&(Option<f32>, bool)]| -> usize {
        pairs.iter().filter(|(s, same)| s.is_some_and(|s| (s >= t) == *same)).count()
    };
    let all: Vec<&(Option<f32>, bool)> = pairs.iter().collect();
    let t0 = engine.threshold();
    let at_default = 100.0 * correct(t0, &all) as f64 / all.len() as f64;

    // 10-fold: folds interleave the pairs so each holds both kinds.
    let mut fold_acc = Vec::new();
    for k in 0..10 {
        let train: Vec<&(Option<f32>, bool)> = pairs.iter().enumerate().filter(|(i, _)| i % 10 != k).map(|(_, p)| p).collect();
        let test: Vec<&(Option<f32>, bool)> = pairs.iter().enumerate().filter(|(i, _)| i % 10 == k).map(|(_, p)| p).collect();
        let best = (0..=200).map(|i| i as f32 / 200.0).max_by_key(|&t| correct(t, &train)).unwrap();
        fold_acc.push(100.0 * correct(best, &test) as f64 / test.len() as f64);
    }
    let mean = fold_acc.iter().sum::<f64>() / 10.0;
    let positives = pairs.iter().filter(|p| p.1).count();
    println!("cpu: {}  simd: {}", facefleet_model::simd::cpu_model(), facefleet_model::simd::simd_path());
    println!("people: {n}  photos without a face: {no_face}  embedding time: {embed_s:.1} s");
    println!("pairs: {} ({} same, {} different)", pairs.len(), positives, pairs.len() - positives);
    println!("accuracy at the calibrated threshold {t0:.2}: {at_default:.2} %");
    println!("10-fold accuracy (threshold chosen on 9 folds): {mean:.2} %");
    Ok(())
}

