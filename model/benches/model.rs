//! Per-stage speed of the face model (CPU), on real photos from the shared
//! data folder:
//!
//! ```text
//! cargo bench -p facefleet-model --bench model
//! ```
//! * `detect/64x64` (a CSE546 face crop), `detect/250x250` (an lfw-dev photo)
//! * `embed/<recognizer>/<n>`: align + embed n faces in one batch
//! * `match/<n>`: best match of one embedding against n gallery entries
//! * `recognize/250x250`: decode + detect + embed + match, one-face photo,
//!   100-person gallery, on the SIMD path the CPU (or `FACEFLEET_SIMD`) selects
//! * `recognize-per-path/<path>`: the same on every SIMD path this CPU can
//!   run (`AVX-512`, `AVX2+FMA`, ...), forced with `simd::with_level`
//!
//! The CPU model and the SIMD path are printed first: label every number
//! with them.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use facefleet_model::eval::dataset_dir;
use facefleet_model::simd;
use facefleet_model::{
    decode_image, DecodeLimits, Embedding, FaceModel, Gallery, ModelConfig, RecognizerKind,
};

fn read(path: std::path::PathBuf) -> Vec<u8> {
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn random_unit(seed: u64, dim: usize) -> Embedding {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    Embedding::normalized(
        (0..dim)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect(),
    )
}

fn bench(c: &mut Criterion) {
    eprintln!(
        "CPU: {} ({:?}); SIMD path: {}; RAYON_NUM_THREADS={}",
        simd::cpu_model(),
        simd::cpu_features(),
        simd::simd_summary(),
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "(unset)".into())
    );
    let lfw = dataset_dir("lfw-dev").expect("benchmarks need the shared lfw-dev data set");
    let cse = dataset_dir("cse546").expect("benchmarks need the shared cse546 data set");
    let photo_bytes = read(lfw.join("Tom_Cruise/Tom_Cruise_0001.jpg"));
    let photo = decode_image(&photo_bytes, &DecodeLimits::default()).unwrap();
    let crop = decode_image(&read(cse.join("face_images_100/test_00.jpg")), &DecodeLimits::default()).unwrap();

    let mfn = FaceModel::load(&ModelConfig::default()).unwrap();
    let mut g = c.benchmark_group("detect");
    g.sample_size(20);
    g.bench_function("64x64", |b| b.iter(|| mfn.detect(black_box(&crop)).unwrap()));
    g.bench_function("250x250", |b| b.iter(|| mfn.detect(black_box(&photo)).unwrap()));
    g.finish();

    let face = mfn.detect(&photo).unwrap()[0];
    for kind in [RecognizerKind::MobileFaceNet, RecognizerKind::DlibResnet] {
        let model = FaceModel::load(&ModelConfig::with_recognizer(kind)).unwrap();
        let mut g = c.benchmark_group(format!("embed/{kind}"));
        g.sample_size(10);
        for n in [1usize, 16] {
            let faces = vec![face; n];
            g.throughput(Throughput::Elements(n as u64));
            g.bench_with_input(BenchmarkId::from_parameter(n), &faces, |b, faces| {
                b.iter(|| model.embed_batch(black_box(&photo), faces).unwrap())
            });
        }
        g.finish();
    }

    let mut g = c.benchmark_group("match");
    let kind = RecognizerKind::MobileFaceNet;
    for n in [10_000usize, 100_000] {
        let mut gallery = Gallery::new(kind);
        // 10 embeddings per person.
        for p in 0..n / 10 {
            let es = (0..10).map(|i| random_unit((p * 10 + i) as u64, kind.dim())).collect();
            gallery.enroll(&format!("person {p}"), es).unwrap();
        }
        let query = random_unit(u64::MAX, kind.dim());
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &gallery, |b, gallery| {
            b.iter(|| gallery.identify(black_box(&query)).unwrap())
        });
    }
    g.finish();

    let mut gallery = Gallery::new(kind);
    gallery.enroll("Tom Cruise", vec![mfn.embed(&photo, &face).unwrap()]).unwrap();
    for p in 0..99 {
        gallery.enroll(&format!("person {p}"), vec![random_unit(p, kind.dim())]).unwrap();
    }
    let mut g = c.benchmark_group("recognize");
    g.sample_size(20);
    g.bench_function("250x250", |b| {
        b.iter(|| {
            let img = decode_image(black_box(&photo_bytes), &DecodeLimits::default()).unwrap();
            mfn.recognize(&img, &gallery).unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("recognize-per-path");
    g.sample_size(20);
    for level in simd::SimdLevel::ALL.into_iter().filter(|l| l.is_supported()) {
        g.bench_function(level.name(), |b| {
            b.iter(|| {
                simd::with_level(level, || {
                    let img = decode_image(black_box(&photo_bytes), &DecodeLimits::default()).unwrap();
                    mfn.recognize(&img, &gallery).unwrap()
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
