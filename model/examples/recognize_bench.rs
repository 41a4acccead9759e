//! Times the full recognize path per stage on real photos: decode, MTCNN
//! (pyramid, P-Net, R-Net, O-Net), align, embed, match, and the whole
//! `FaceModel::recognize` call, on one or several SIMD paths.
//!
//! ```text
//! RAYON_NUM_THREADS=1 cargo run --release -p facefleet-model --example recognize_bench -- \
//!     [--runs N] [--recognizer mobilefacenet|dlib-resnet] [--levels avx512,avx2,baseline] \
//!     [--min-face PIXELS] [--f32-convolutions] [IMAGE...]
//! ```
//! Without images it uses the first photo of the first 20 people of the
//! shared lfw-dev set (250x250, one face each); the gallery is those 20
//! people. `RAYON_NUM_THREADS` sets the thread count of both the model's own
//! loops and its matmuls. `--levels` runs every photo on each listed SIMD
//! level in turn (interleaved, so that a busy machine slows them alike;
//! default: the level `FACEFLEET_SIMD` or the CPU selects) and prints a
//! table per level, then the ratio of the medians to the first level.
//! Prints the median and minimum per stage over all images and runs, and
//! the per-chip time of embedding 1, 4 and 10 aligned chips in one call.
//! `--min-face` sets the detector's smallest face (default 20 pixels).
//! `--f32-convolutions` runs MTCNN's convolutions in f32 where they would
//! run in 16-bit integers (`DetectParams::f32_convolutions`; the dlib
//! ResNet's configuration keeps f32 anyway).
//!
//! `--serve` is for side-by-side runs driven by another program
//! (`scripts/bench/side_by_side.py`): after loading the model and enrolling
//! the photos it reads lines `<level> <image path>` from stdin and answers
//! each with one line `<ms> <name|unknown|noface>`, the time of one whole
//! `FaceModel::recognize` call (decode..match) on that SIMD level.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use facefleet_model::eval::{dataset_dir, person_photos};
use facefleet_model::mtcnn::StageTimes;
use facefleet_model::simd::{self, SimdLevel};
use facefleet_model::{decode_image, DecodeLimits, FaceModel, Gallery, ModelConfig, RecognizerKind};

const STAGES: [&str; 10] = [
    "decode",
    "detect (MTCNN)",
    "  pyramid resample",
    "  P-Net (incl. pyramid)",
    "  R-Net",
    "  O-Net",
    "align",
    "embed",
    "match",
    "recognize (decode..match)",
];

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut runs = 20usize;
    let mut kind = RecognizerKind::MobileFaceNet;
    let mut images: Vec<PathBuf> = Vec::new();
    let mut levels: Vec<SimdLevel> = Vec::new();
    let mut serve_mode = false;
    let mut min_face: Option<f32> = None;
    let mut f32_convolutions = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().context("--runs needs a value")?.parse::<usize>()?.max(1),
            "--recognizer" => {
                kind = args.next().context("--recognizer needs a value")?.parse().map_err(anyhow::Error::msg)?
            }
            "--levels" => {
                for l in args.next().context("--levels needs a value")?.split(',') {
                    levels.push(SimdLevel::parse_runnable(l).map_err(anyhow::Error::msg)?);
                }
            }
            "--serve" => serve_mode = true,
            "--min-face" => min_face = Some(args.next().context("--min-face needs a value")?.parse()?),
            "--f32-convolutions" => f32_convolutions = true,
            _ => images.push(a.into()),
        }
    }
    if levels.is_empty() {
        levels.push(simd::simd_level());
    }
    if images.is_empty() {
        let lfw = dataset_dir("lfw-dev").context("no images given and the shared lfw-dev set is missing")?;
        images.extend(person_photos(&lfw)?.into_iter().take(20).filter_map(|(_, photos)| photos.into_iter().next()));
    }
    if images.is_empty() {
        bail!("no images");
    }

    let mut config = ModelConfig::with_recognizer(kind);
    // The dlib ResNet already keeps f32 (`ModelConfig::with_recognizer`).
    config.detect.f32_convolutions |= f32_convolutions;
    if let Some(m) = min_face {
        config.detect.min_face_size = m;
    }
    let model = FaceModel::load(&config)?;
    let limits = DecodeLimits::default();
    let photos: Vec<(PathBuf, Vec<u8>)> = images
        .into_iter()
        .map(|p| std::fs::read(&p).map(|b| (p.clone(), b)).with_context(|| p.display().to_string()))
        .collect::<Result<_>>()?;

    // Gallery: one embedding per photo, named after its file.
    let mut gallery = Gallery::new(kind);
    for (path, bytes) in &photos {
        let img = decode_image(bytes, &limits)?;
        if let Some(face) = model.detect(&img)?.first() {
            let name = path.file_stem().unwrap_or_default().to_string_lossy().into_owned();
            gallery.enroll(&name, vec![model.embed(&img, face)?])?;
        }
    }

    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    if serve_mode {
        return serve(&model, &gallery, &limits);
    }
    let mut stages: Vec<[Vec<f64>; STAGES.len()]> = vec![Default::default(); levels.len()];
    let candidates = std::cell::Cell::new((0usize, 0usize, 0usize)); // calls, P-Net out, R-Net out
    let one = |st: &mut [Vec<f64>; STAGES.len()], bytes: &[u8]| -> Result<()> {
        let t = Instant::now();
        let img = decode_image(bytes, &limits)?;
        st[0].push(ms(t));
        let mut times = StageTimes::default();
        let t = Instant::now();
        let faces = model.detect_timed(&img, &mut times)?;
        st[1].push(ms(t));
        st[2].push(times.pyramid.as_secs_f64() * 1e3);
        st[3].push(times.pnet.as_secs_f64() * 1e3);
        st[4].push(times.rnet.as_secs_f64() * 1e3);
        st[5].push(times.onet.as_secs_f64() * 1e3);
        let (calls, p, r) = candidates.get();
        candidates.set((calls + 1, p + times.pnet_candidates, r + times.rnet_candidates));
        let Some(face) = faces.first() else { return Ok(()) };
        let t = Instant::now();
        let chip = model.align(&img, face);
        st[6].push(ms(t));
        let t = Instant::now();
        let e = model.embed_chips(std::slice::from_ref(&chip))?.pop().context("no embedding")?;
        st[7].push(ms(t));
        let t = Instant::now();
        std::hint::black_box(gallery.identify(&e)?);
        st[8].push(ms(t));
        let t = Instant::now();
        let img = decode_image(bytes, &limits)?;
        std::hint::black_box(model.recognize(&img, &gallery)?);
        st[9].push(ms(t));
        Ok(())
    };
    // Warm-up on every level.
    for (i, &level) in levels.iter().enumerate() {
        simd::with_level(level, || one(&mut stages[i], &photos[0].1))?;
    }
    stages.iter_mut().flatten().for_each(Vec::clear);
    for _ in 0..runs {
        for (_, bytes) in &photos {
            for (i, &level) in levels.iter().enumerate() {
                simd::with_level(level, || one(&mut stages[i], bytes))?;
            }
        }
    }
    // Embedding in batches: per-chip time of one call over 1, 4 and 10
    // chips (a worker embeds the faces of up to 10 requests in one call).
    let chips: Vec<_> = photos
        .iter()
        .filter_map(|(_, b)| {
            let img = decode_image(b, &limits).ok()?;
            let face = model.detect(&img).ok()?.into_iter().next()?;
            Some(model.align(&img, &face))
        })
        .collect();
    let mut batch_rows = Vec::new();
    for &n in &[1usize, 4, 10] {
        if chips.len() < n {
            continue;
        }
        let mut per_level = Vec::new();
        for &level in &levels {
            let mut per_chip = Vec::new();
            simd::with_level(level, || -> Result<()> {
                model.embed_chips(&chips[..n])?; // warm-up at this size
                for r in 0..runs {
                    let start = (r * n) % (chips.len() - n + 1);
                    let t = Instant::now();
                    std::hint::black_box(model.embed_chips(&chips[start..start + n])?);
                    per_chip.push(ms(t) / n as f64);
                }
                Ok(())
            })?;
            per_chip.sort_by(f64::total_cmp);
            per_level.push((per_chip[per_chip.len() / 2], per_chip[0]));
        }
        batch_rows.push((n, per_level));
    }
    println!(
        "recognizer {kind}, {} photo(s) x {runs} runs, RAYON_NUM_THREADS={}, CPU: {} ({} cores; features {:?})",
        photos.len(),
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "(unset)".into()),
        simd::cpu_model(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        simd::cpu_features(),
    );
    let (calls, p, r) = candidates.get();
    println!(
        "MTCNN candidates per photo: {:.1} from P-Net to R-Net, {:.1} from R-Net to O-Net",
        p as f64 / calls.max(1) as f64,
        r as f64 / calls.max(1) as f64
    );
    let mut medians = vec![vec![f64::NAN; STAGES.len()]; levels.len()];
    for (li, &level) in levels.iter().enumerate() {
        let summary = simd::with_level(level, simd::simd_summary);
        println!("\nSIMD path: {summary}");
        println!("{:<28} {:>10} {:>10}", "stage", "median ms", "min ms");
        for (si, (name, times)) in STAGES.iter().zip(stages[li].iter_mut()).enumerate() {
            if times.is_empty() {
                continue;
            }
            times.sort_by(f64::total_cmp);
            medians[li][si] = times[times.len() / 2];
            println!("{name:<28} {:>10.2} {:>10.2}", medians[li][si], times[0]);
        }
    }
    println!("\nembedding in one call of n chips: ms per chip, median / min");
    print!("{:<10}", "n");
    for l in &levels {
        print!(" {:>22}", l.name());
    }
    println!();
    for (n, per_level) in &batch_rows {
        print!("{n:<10}");
        for (med, min) in per_level {
            print!(" {:>22}", format!("{med:.2} / {min:.2}"));
        }
        println!();
    }
    if levels.len() > 1 {
        println!("\nspeed relative to {} (median time of {} / median time of the other; 1.00 = as fast)", levels[0], levels[0]);
        print!("{:<28}", "stage");
        for l in &levels[1..] {
            print!(" {:>12}", l.name());
        }
        println!();
        for (si, name) in STAGES.iter().enumerate() {
            print!("{name:<28}");
            for m in &medians[1..] {
                print!(" {:>12.2}", medians[0][si] / m[si]);
            }
            println!();
        }
    }
    Ok(())
}

/// The `--serve` loop: one timed `recognize` per stdin line `<level> <path>`.
fn serve(model: &FaceModel, gallery: &Gallery, limits: &DecodeLimits) -> Result<()> {
    use std::io::{BufRead, Write};
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "ready {}", simd::simd_summary())?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let Some((level, path)) = line.trim().split_once(' ') else { bail!("expected `<level> <path>`, got {line:?}") };
        let level = SimdLevel::parse_runnable(level).map_err(anyhow::Error::msg)?;
        let bytes = std::fs::read(path).with_context(|| path.to_string())?;
        let (took, answer) = simd::with_level(level, || -> Result<(f64, String)> {
            let t = Instant::now();
            let img = decode_image(&bytes, limits)?;
            let faces = model.recognize(&img, gallery)?;
            let took = t.elapsed().as_secs_f64() * 1e3;
            let answer = match faces.first() {
                None => "noface".to_string(),
                Some(f) => f.name.clone().unwrap_or_else(|| "unknown".into()),
            };
            Ok((took, answer))
        })?;
        writeln!(out, "{took:.3} {answer}")?;
        out.flush()?;
    }
    Ok(())
}
