//! Times the full recognize path per stage on real photos: decode, detect,
//! align + embed, match, and the whole `FaceModel::recognize` call.
//!
//! ```text
//! RAYON_NUM_THREADS=1 cargo run --release -p facefleet-model --example recognize_bench -- \
//!     [--runs N] [--recognizer mobilefacenet|dlib-resnet] [IMAGE...]
//! ```
//! Without images it uses the first photo of the first 20 people of the
//! shared lfw-dev set (250x250, one face each); the gallery is those 20
//! people. `RAYON_NUM_THREADS` sets the thread count of both the detector's
//! own loops and candle's matmuls. Prints the median and minimum per stage
//! over all images and runs.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use facefleet_model::eval::{dataset_dir, person_photos};
use facefleet_model::{
    decode_image, DecodeLimits, FaceModel, Gallery, ModelConfig, RecognizerKind,
};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut runs = 20usize;
    let mut kind = RecognizerKind::MobileFaceNet;
    let mut images: Vec<PathBuf> = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => {
                runs = args
                    .next()
                    .context("--runs needs a value")?
                    .parse::<usize>()?
                    .max(1)
            }
            "--recognizer" => {
                kind = args
                    .next()
                    .context("--recognizer needs a value")?
                    .parse()
                    .map_err(anyhow::Error::msg)?
            }
            _ => images.push(a.into()),
        }
    }
    if images.is_empty() {
        let lfw = dataset_dir("lfw-dev")
            .context("no images given and the shared lfw-dev set is missing")?;
        images.extend(person_photos(&lfw)?.into_iter().take(20).filter_map(|(_, photos)| photos.into_iter().next()));
    }
    if images.is_empty() {
        bail!("no images");
    }

    let model = FaceModel::load(&ModelConfig::with_recognizer(kind))?;
    let limits = DecodeLimits::default();
    let photos: Vec<(PathBuf, Vec<u8>)> = images
        .into_iter()
        .map(|p| {
            std::fs::read(&p)
                .map(|b| (p.clone(), b))
                .with_context(|| p.display().to_string())
        })
        .collect::<Result<_>>()?;

    // Gallery: one embedding per photo, named after its file.
    let mut gallery = Gallery::new(kind);
    for (path, bytes) in &photos {
        let img = decode_image(bytes, &limits)?;
        if let Some(face) = model.detect(&img)?.first() {
            let name = path
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            gallery.enroll(&name, vec![model.embed(&img, face)?])?;
        }
    }

    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    let mut stages: [Vec<f64>; 5] = Default::default();
    for _ in 0..runs {
        for (_, bytes) in &photos {
            let t = Instant::now();
            let img = decode_image(bytes, &limits)?;
            stages[0].push(ms(t));
            let t = Instant::now();
            let faces = model.detect(&img)?;
            stages[1].push(ms(t));
            let Some(face) = faces.first() else { continue };
            let t = Instant::now();
            let e = model.embed(&img, face)?;
            stages[2].push(ms(t));
            let t = Instant::now();
            std::hint::black_box(gallery.identify(&e)?);
            stages[3].push(ms(t));
            let t = Instant::now();
            let img = decode_image(bytes, &limits)?;
            std::hint::black_box(model.recognize(&img, &gallery)?);
            stages[4].push(ms(t));
        }
    }
    println!(
        "recognizer {kind}, {} photo(s) x {runs} runs, RAYON_NUM_THREADS={}",
        photos.len(),
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "(unset)".into())
    );
    println!("{:<28} {:>10} {:>10}", "stage", "median ms", "min ms");
    let names = [
        "decode",
        "detect (MTCNN)",
        "align + embed",
        "match",
        "recognize (decode..match)",
    ];
    for (name, times) in names.iter().zip(stages.iter_mut()) {
        if times.is_empty() {
            continue;
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{name:<28} {:>10.2} {:>10.2}",
            times[times.len() / 2],
            times[0]
        );
    }
    Ok(())
}
