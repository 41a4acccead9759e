//! Recognition accuracy on lfw-dev (63 people x 6 photos) and a threshold sweep.
//!
//! ```text
//! cargo run -p facefleet-model --example eval_lfw -- [--recognizer mobilefacenet|dlib-resnet] [--dir PATH] [--sweep FROM TO STEP]
//! ```
//! Closed set: the first photo of each person is enrolled, the other five
//! are queried (top-1 accuracy). Open set: half of the people are left out
//! of the gallery (two folds); for each threshold, the share of left-out
//! queries answered Unknown and of enrolled queries answered correctly.
//! The data folder defaults to `$FACEFLEET_SHARED_DIR/datasets/lfw-dev`
//! (or `<workspace>/../shared/datasets/lfw-dev`).

use std::time::Instant;

use anyhow::{bail, Context, Result};
use facefleet_model::eval::{dataset_dir, PeopleSet};
use facefleet_model::{default_threshold, FaceModel, ModelConfig, RecognizerKind};

fn main() -> Result<()> {
    let mut recognizer = RecognizerKind::default();
    let mut dir = None;
    let mut sweep_range = (0.0f32, 1.0f32, 0.01f32);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--recognizer" => {
                recognizer = args
                    .next()
                    .context("--recognizer needs a value")?
                    .parse()
                    .map_err(anyhow::Error::msg)?
            }
            "--dir" => dir = Some(std::path::PathBuf::from(args.next().context("--dir needs a value")?)),
            "--sweep" => {
                let mut next = || -> Result<f32> {
                    Ok(args.next().context("--sweep needs FROM TO STEP")?.parse()?)
                };
                sweep_range = (next()?, next()?, next()?);
                if !(sweep_range.2 > 0.0 && sweep_range.1 >= sweep_range.0) {
                    bail!("--sweep FROM TO STEP needs FROM <= TO and STEP > 0");
                }
            }
            other => bail!(
                "unknown argument {other} (expected --recognizer NAME, --dir PATH, --sweep FROM TO STEP)"
            ),
        }
    }
    let dir = match dir {
        Some(d) => d,
        None => dataset_dir("lfw-dev")?,
    };
    let model = FaceModel::load(&ModelConfig::with_recognizer(recognizer))?;
    let start = Instant::now();
    let set = PeopleSet::embed_folder(&model, &dir)?;
    let photos: usize = set.people.iter().map(|p| p.photos.len()).sum();
    println!(
        "{recognizer}: {} people, {photos} photos embedded in {:.1} s ({:.0} ms/photo, detect + embed; CPU {}, SIMD path {})",
        set.people.len(),
        start.elapsed().as_secs_f64(),
        start.elapsed().as_secs_f64() * 1000.0 / photos as f64,
        facefleet_model::simd::cpu_model(),
        facefleet_model::simd::simd_summary()
    );
    for p in set.no_face() {
        println!("  no face found: {}", p.display());
    }

    let closed = set.closed_set();
    println!(
        "closed set: top-1 {:.2} % ({}/{} queries; {} photos without a face)",
        closed.top1(),
        closed.correct,
        closed.queries,
        closed.no_face
    );

    for (photo, nearest, sim, own) in set.closed_set_failures() {
        println!(
            "  wrong: {} -> {nearest} ({sim:.3}; own first photo {own:.3})",
            photo.file_name().unwrap_or_default().to_string_lossy()
        );
    }

    let (from, to, step) = sweep_range;
    let steps = ((to - from) / step + 1e-3).floor() as usize;
    let thresholds: Vec<f32> = (0..=steps).map(|i| from + i as f32 * step).collect();
    let sweep = set.open_set(&thresholds);
    println!("open set (half the people left out, two folds):");
    println!("  threshold  unknown->Unknown  enrolled->correct  enrolled->Unknown");
    for r in &sweep {
        println!(
            "  {:9.4}  {:15.2} %  {:15.2} %  {:15.2} %",
            r.threshold,
            r.unknown_pct(),
            r.enrolled_pct(),
            100.0 * r.enrolled_unknown as f64 / r.enrolled_queries.max(1) as f64
        );
    }
    let feasible: Vec<_> = sweep
        .iter()
        .filter(|r| r.unknown_pct() >= 90.0 && r.enrolled_pct() >= 95.0)
        .collect();
    match (feasible.first(), feasible.last()) {
        (Some(lo), Some(hi)) => println!(
            "thresholds meeting unknown >= 90 % and enrolled >= 95 %: {:.4} ..= {:.4}",
            lo.threshold, hi.threshold
        ),
        _ => println!("no threshold meets unknown >= 90 % and enrolled >= 95 %"),
    }
    // The threshold farthest from failing either bar: max of the smaller margin.
    let margin = |r: &&facefleet_model::eval::OpenSet| (r.unknown_pct() - 90.0).min(r.enrolled_pct() - 95.0);
    let best = sweep
        .iter()
        .max_by(|a, b| margin(a).total_cmp(&margin(b)))
        .expect("sweep is not empty");
    println!(
        "largest-margin threshold: {:.4} (unknown {:.2} %, enrolled {:.2} %)",
        best.threshold,
        best.unknown_pct(),
        best.enrolled_pct()
    );
    let t = default_threshold(recognizer);
    let at_default = &set.open_set(&[t])[0];
    println!(
        "default threshold {t}: unknown {:.2} %, enrolled {:.2} %",
        at_default.unknown_pct(),
        at_default.enrolled_pct()
    );
    Ok(())
}
