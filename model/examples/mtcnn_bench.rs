//! Times MTCNN detection on images: median and min of N runs per image.
//!
//! ```text
//! RAYON_NUM_THREADS=1 cargo run -p facefleet-model --example mtcnn_bench -- [--runs N] IMAGE...
//! ```
//! `RAYON_NUM_THREADS` also sets candle's CPU thread count (its matmuls).
//! `--dump-rgb DIR` also writes each decoded image as raw RGB bytes to
//! `DIR/<index>.rgb` (to compare the JPEG decode with other decoders);
//! `--print` prints the detected faces.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use facefleet_model::{DetectParams, Mtcnn};

fn main() -> Result<()> {
    // The allocator settings `FaceModel::load` makes, so that the kernels'
    // buffers are kept between runs as in the recognize path.
    facefleet_model::memory::keep_working_memory();
    let mut args = std::env::args().skip(1).peekable();
    let mut runs = 50usize;
    let mut images = Vec::new();
    let mut dump: Option<std::path::PathBuf> = None;
    let mut print = false;
    while let Some(a) = args.next() {
        if a == "--runs" {
            runs = args.next().context("--runs needs a value")?.parse::<usize>()?.max(1);
        } else if a == "--print" {
            print = true;
        } else if a == "--dump-rgb" {
            dump = Some(args.next().context("--dump-rgb needs a directory")?.into());
        } else {
            images.push(a);
        }
    }
    if images.is_empty() {
        bail!("usage: mtcnn_bench [--runs N] [--print] [--dump-rgb DIR] IMAGE...");
    }
    let weights = concat!(env!("CARGO_MANIFEST_DIR"), "/weights/mtcnn.safetensors");
    let device = Device::Cpu;
    // SAFETY: the weight file is not modified while mapped.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &device)? };
    let mtcnn = Mtcnn::load(vb, &device)?;
    let params = DetectParams::default();
    println!("CPU: {}; threads: RAYON_NUM_THREADS={}", facefleet_model::simd::cpu_model(), std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "(unset)".into()));
    for (index, path) in images.into_iter().enumerate() {
        let img = image::open(&path).with_context(|| path.clone())?.to_rgb8();
        if let Some(dir) = &dump {
            std::fs::write(dir.join(format!("{index}.rgb")), img.as_raw())?;
        }
        let faces = mtcnn.detect(&img, &params)?; // warm-up
        if print {
            for f in &faces {
                println!("  {}", serde_json::to_string(f)?);
            }
        }
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t = Instant::now();
            std::hint::black_box(mtcnn.detect(&img, &params)?);
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{path}: {}x{}, {} face(s), median {:.2} ms, min {:.2} ms over {runs} runs",
            img.width(),
            img.height(),
            faces.len(),
            times[runs / 2],
            times[0]
        );
    }
    Ok(())
}
