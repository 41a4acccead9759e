//! Times the model's kernels on each SIMD level, interleaved (so that a busy
//! machine slows the levels alike): the whole MobileFaceNet on one chip, the
//! matrix products of MobileFaceNet and of MTCNN's dense layers at their
//! real shapes ([`sgemm`], kept for comparison: the `gemm pnet/rnet/onet ...
//! (conv...)` lines are the im2col products MTCNN's convolutions used before
//! their direct kernel, the `(dense...)` and `(head logits/embed)` lines the
//! general products those layers used before their own kernels, which the
//! `net` line and `recognize_bench` include), the depthwise convolutions and
//! the fused 1x1 convolutions.
//!
//! ```text
//! RAYON_NUM_THREADS=1 cargo run --release -p facefleet-model --example kernel_bench -- \
//!     [--levels avx512,avx2] [--runs N] [--filter SUBSTRING]
//! ```
//! Prints, per kernel, the median time on each level in microseconds and the
//! speed of every level relative to the first (1.00 = as fast).

use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use facefleet_model::{image::RgbImage, load_recognizer, RecognizerKind};
use facefleet_model::depthwise::DepthwiseConv2d;
use facefleet_model::pointwise::Pointwise;
use facefleet_model::simd::{self, gemm_parallelism, sgemm, SimdLevel};

type Job = Box<dyn FnMut(SimdLevel)>;

fn gemm_job(m: usize, n: usize, k: usize) -> Job {
    let a: Vec<f32> = (0..m * k).map(|i| (i % 17) as f32 * 0.1 - 0.8).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 13) as f32 * 0.1 - 0.6).collect();
    let mut c = vec![0f32; m * n];
    Box::new(move |level| {
        sgemm(level, m, n, k, &mut c, &a, &b, false, gemm_parallelism());
        std::hint::black_box(&c);
    })
}

fn dw_job(c: usize, hw: usize, k: usize, stride: usize) -> Job {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1., (1, c, hw, hw), &dev).unwrap();
    let layer = DepthwiseConv2d::new(
        Tensor::randn(0f32, 1., (c, 1, k, k), &dev).unwrap(),
        Tensor::randn(0f32, 1., c, &dev).unwrap(),
        Some(Tensor::randn(0f32, 1., c, &dev).unwrap()),
        stride,
        k == 3,
    )
    .unwrap();
    Box::new(move |level| {
        simd::with_level(level, || std::hint::black_box(layer.forward(&x).unwrap()));
    })
}

fn pw_job(cin: usize, cout: usize, hw: usize, residual: bool) -> Job {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1., (1, cin, hw, hw), &dev).unwrap();
    let r = Tensor::randn(0f32, 1., (1, cout, hw, hw), &dev).unwrap();
    let layer = Pointwise::new(
        &Tensor::randn(0f32, 1., (cout, cin), &dev).unwrap(),
        &Tensor::randn(0f32, 1., cout, &dev).unwrap(),
        (!residual).then(|| Tensor::randn(0f32, 1., cout, &dev).unwrap()).as_ref(),
    )
    .unwrap();
    Box::new(move |level| {
        simd::with_level(level, || std::hint::black_box(layer.forward(&x, residual.then_some(&r)).unwrap()));
    })
}

/// The whole recognizer network on one chip (aligned input, no alignment).
fn net_job(kind: RecognizerKind) -> Job {
    let file = match kind {
        RecognizerKind::MobileFaceNet => "mobilefacenet.safetensors",
        RecognizerKind::DlibResnet => "dlib_resnet.safetensors",
    };
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("weights").join(file);
    // SAFETY: the weight file is not modified while mapped.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[path], DType::F32, &Device::Cpu) }.unwrap();
    let rec = load_recognizer(kind, vb, &Device::Cpu).unwrap();
    let s = rec.chip_size();
    let chip = RgbImage::from_fn(s, s, |x, y| image::Rgb([(x * 7 % 256) as u8, (y * 13 % 256) as u8, ((x + y) % 256) as u8]));
    Box::new(move |level| {
        simd::with_level(level, || std::hint::black_box(rec.embed_chips(std::slice::from_ref(&chip)).unwrap()));
    })
}

fn main() -> Result<()> {
    // The allocator settings `FaceModel::load` makes, so that the kernels'
    // buffers are kept between runs as in the recognize path.
    facefleet_model::memory::keep_working_memory();
    let mut args = std::env::args().skip(1);
    let mut runs = 50usize;
    let mut levels: Vec<SimdLevel> = Vec::new();
    let mut filter = String::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().context("--runs needs a value")?.parse::<usize>()?.max(1),
            "--filter" => filter = args.next().context("--filter needs a value")?,
            "--levels" => {
                for l in args.next().context("--levels needs a value")?.split(',') {
                    levels.push(SimdLevel::parse_runnable(l).map_err(anyhow::Error::msg)?);
                }
            }
            other => bail!("unknown argument {other}"),
        }
    }
    if levels.is_empty() {
        levels = SimdLevel::ALL.into_iter().filter(|l| l.is_supported() && *l != SimdLevel::Baseline).collect();
    }
    let mut jobs: Vec<(String, Job)> = vec![
        ("net mobilefacenet (one 112x112 chip)".into(), net_job(RecognizerKind::MobileFaceNet)),
        // MobileFaceNet 1x1 convolutions: m = out channels, n = pixels, k = in channels.
        ("gemm mfn 64x3136x64 (stem project)".into(), gemm_job(64, 3136, 64)),
        ("gemm mfn 128x3136x64 (expand s1 56x56)".into(), gemm_job(128, 3136, 64)),
        ("gemm mfn 128x784x64 (expand 28x28)".into(), gemm_job(128, 784, 64)),
        ("gemm mfn 64x784x128 (project 28x28)".into(), gemm_job(64, 784, 128)),
        ("gemm mfn 256x784x64 (expand 28x28 t4)".into(), gemm_job(256, 784, 64)),
        ("gemm mfn 128x196x256 (project 14x14)".into(), gemm_job(128, 196, 256)),
        ("gemm mfn 256x196x128 (expand 14x14)".into(), gemm_job(256, 196, 128)),
        ("gemm mfn 512x196x128 (expand 14x14 t4)".into(), gemm_job(512, 196, 128)),
        ("gemm mfn 128x49x512 (project 7x7)".into(), gemm_job(128, 49, 512)),
        ("gemm mfn 512x49x128 (head conv)".into(), gemm_job(512, 49, 128)),
        ("gemm mfn 512x1x512 (head logits)".into(), gemm_job(512, 1, 512)),
        ("gemm mfn 192x1x512 (head embed)".into(), gemm_job(192, 1, 512)),
        // MTCNN (NHWC im2col): m = pixels, n = out channels, k = k*k*in.
        ("gemm pnet 21904x10x27 (conv1 @150)".into(), gemm_job(21904, 10, 27)),
        ("gemm pnet 5184x16x90 (conv2)".into(), gemm_job(5184, 16, 90)),
        ("gemm pnet 4900x32x144 (conv3)".into(), gemm_job(4900, 32, 144)),
        ("gemm pnet 4900x6x32 (conv4)".into(), gemm_job(4900, 6, 32)),
        ("gemm rnet 48400x28x27 (conv1, 100 crops)".into(), gemm_job(48400, 28, 27)),
        ("gemm rnet 8100x48x252 (conv2, 100 crops)".into(), gemm_job(8100, 48, 252)),
        ("gemm rnet 900x64x192 (conv3, 100 crops)".into(), gemm_job(900, 64, 192)),
        ("gemm rnet 100x128x576 (dense4)".into(), gemm_job(100, 128, 576)),
        ("gemm rnet 100x2x128 (dense5_1)".into(), gemm_job(100, 2, 128)),
        ("gemm onet 21160x32x27 (conv1, 10 crops)".into(), gemm_job(21160, 32, 27)),
        ("gemm onet 4410x64x288 (conv2, 10 crops)".into(), gemm_job(4410, 64, 288)),
        ("gemm onet 640x64x576 (conv3, 10 crops)".into(), gemm_job(640, 64, 576)),
        ("gemm onet 10x256x1152 (dense5)".into(), gemm_job(10, 256, 1152)),
        ("gemm onet 1x256x1152 (dense5, 1 crop)".into(), gemm_job(1, 256, 1152)),
        // Depthwise layers of MobileFaceNet.
        ("dw 64x56x56 s1".into(), dw_job(64, 56, 3, 1)),
        ("dw 128x56x56 s2".into(), dw_job(128, 56, 3, 2)),
        ("dw 128x28x28 s1".into(), dw_job(128, 28, 3, 1)),
        ("dw 256x28x28 s2".into(), dw_job(256, 28, 3, 2)),
        ("dw 256x14x14 s1".into(), dw_job(256, 14, 3, 1)),
        ("dw 512x14x14 s2".into(), dw_job(512, 14, 3, 2)),
        ("dw 256x7x7 s1".into(), dw_job(256, 7, 3, 1)),
        ("dw 512x7x7 k7 (gdc)".into(), dw_job(512, 7, 7, 1)),
        // Fused 1x1 convolutions (gemm + bias + PReLU / residual).
        ("pw 64->128 @56x56 prelu".into(), pw_job(64, 128, 56, false)),
        ("pw 128->64 @28x28 residual".into(), pw_job(128, 64, 28, true)),
        ("pw 128->256 @14x14 prelu".into(), pw_job(128, 256, 14, false)),
    ];
    jobs.retain(|(name, _)| name.contains(&filter));
    println!(
        "CPU: {}; RAYON_NUM_THREADS={}, {runs} runs, levels {:?}",
        simd::cpu_model(),
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "(unset)".into()),
        levels.iter().map(|l| l.name()).collect::<Vec<_>>()
    );
    print!("{:<42}", "kernel (median us)");
    for l in &levels {
        print!(" {:>10}", l.name());
    }
    for l in &levels[1..] {
        print!(" {:>10}", format!("x {}", l.name()));
    }
    println!();
    let mut totals = vec![0f64; levels.len()];
    for (name, job) in &mut jobs {
        let mut times = vec![Vec::with_capacity(runs); levels.len()];
        for &l in &levels {
            job(l); // warm-up
        }
        for _ in 0..runs {
            for (i, &l) in levels.iter().enumerate() {
                let t = Instant::now();
                job(l);
                times[i].push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        let med: Vec<f64> = times
            .iter_mut()
            .map(|t| {
                t.sort_by(f64::total_cmp);
                t[t.len() / 2]
            })
            .collect();
        print!("{name:<42}");
        for (i, m) in med.iter().enumerate() {
            print!(" {m:>10.1}");
            totals[i] += m;
        }
        for m in &med[1..] {
            print!(" {:>10.2}", med[0] / m);
        }
        println!();
    }
    print!("{:<42}", "total");
    for t in &totals {
        print!(" {t:>10.1}");
    }
    for t in &totals[1..] {
        print!(" {:>10.2}", totals[0] / t);
    }
    println!();
    Ok(())
}
