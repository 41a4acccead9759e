//! Embedding throughput of the recognizers (CPU). Run single-threaded with
//! `RAYON_NUM_THREADS=1 cargo bench -p facefleet-model --bench recognizers`.

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use facefleet_model::{load_recognizer, RecognizerKind};
use image::RgbImage;

fn bench(c: &mut Criterion) {
    eprintln!("SIMD path: {} (CPU features {:?})", facefleet_model::simd::simd_summary(), facefleet_model::simd::cpu_features());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("weights");
    for (kind, file) in [(RecognizerKind::MobileFaceNet, "mobilefacenet.safetensors"), (RecognizerKind::DlibResnet, "dlib_resnet.safetensors")] {
        // SAFETY: the weight file is not modified while mapped.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[dir.join(file)], DType::F32, &Device::Cpu) }.unwrap();
        let rec = load_recognizer(kind, vb, &Device::Cpu).unwrap();
        let s = rec.chip_size();
        let chip = RgbImage::from_fn(s, s, |x, y| image::Rgb([(x * 7 % 256) as u8, (y * 13 % 256) as u8, ((x + y) % 256) as u8]));
        let mut g = c.benchmark_group(format!("embed/{kind}"));
        g.sample_size(20);
        for n in [1usize, 16] {
            let chips = vec![chip.clone(); n];
            g.throughput(Throughput::Elements(n as u64));
            g.bench_with_input(BenchmarkId::from_parameter(n), &chips, |b, chips| b.iter(|| rec.embed_chips(chips).unwrap()));
        }
        g.finish();
    }
}

criterion_group!(benches, bench, ops);
criterion_main!(benches);

fn ops(c: &mut Criterion) {
    use candle_core::{Module, Tensor};
    let dev = Device::Cpu;
    let mut g = c.benchmark_group("ops");
    g.sample_size(20);
    let x = Tensor::randn(0f32, 1., (64, 3136), &dev).unwrap();
    let w = Tensor::randn(0f32, 1., (128, 64), &dev).unwrap();
    g.bench_function("matmul 128x64 @ 64x3136 (25.7 MMAC)", |b| b.iter(|| w.matmul(&x).unwrap()));
    let x4 = Tensor::randn(0f32, 1., (1, 3, 113, 113), &dev).unwrap();
    let w4 = Tensor::randn(0f32, 1., (64, 3, 3, 3), &dev).unwrap();
    g.bench_function("conv2d stem 3x3 s2 (5.4 MMAC)", |b| b.iter(|| x4.conv2d(&w4, 0, 2, 1, 1).unwrap()));
    let xd = Tensor::randn(0f32, 1., (1, 128, 56, 56), &dev).unwrap();
    let dw = facefleet_model::depthwise::DepthwiseConv2d::new(
        Tensor::randn(0f32, 1., (128, 1, 3, 3), &dev).unwrap(),
        Tensor::zeros(128, candle_core::DType::F32, &dev).unwrap(),
        Some(Tensor::ones(128, candle_core::DType::F32, &dev).unwrap()),
        1,
        true,
    )
    .unwrap();
    g.bench_function("depthwise 3x3 s1 128@56x56 (3.6 MMAC)", |b| b.iter(|| dw.forward(&xd).unwrap()));
    let p = Tensor::ones((2, 128), candle_core::DType::F32, &dev).unwrap();
    g.bench_function("bias_prelu 128@56x56", |b| b.iter(|| facefleet_model::depthwise::bias_prelu(&xd, &p).unwrap()));
    g.finish();
}
