//! Every SIMD path gives the same answers: detection, alignment and
//! embedding of real photos on each level this CPU supports (forced with
//! `simd::with_level`) agree with the detected level within float
//! tolerance, and the forced level is the one reported. On aarch64 that
//! compares NEON with the baseline (`scripts/test-aarch64`, under qemu).
//!
//! Needs the shared data sets (env FACEFLEET_SHARED_DIR or
//! `<workspace>/../shared`); fails when they are missing.

use facefleet_model::eval::{dataset_dir, person_photos};
use facefleet_model::simd::{self, SimdLevel};
use facefleet_model::{decode_image, DecodeLimits, FaceModel, ModelConfig};

#[test]
fn every_level_agrees_with_the_detected_one() {
    let lfw = dataset_dir("lfw-dev").expect("shared lfw-dev data set");
    let model = FaceModel::load(&ModelConfig::default()).unwrap();
    let photos: Vec<_> = person_photos(&lfw).unwrap().into_iter().take(6).map(|(_, p)| p[0].clone()).collect();
    let levels: Vec<SimdLevel> = SimdLevel::ALL.into_iter().filter(|l| l.is_supported()).collect();
    // Every build checks its own SIMD level against the baseline: AVX2 (and
    // AVX-512 where the CPU has it) on x86_64, NEON on aarch64
    // (`scripts/test-aarch64` runs this under qemu).
    assert!(levels.contains(&SimdLevel::Baseline));
    #[cfg(target_arch = "aarch64")]
    assert!(levels.contains(&SimdLevel::Neon), "aarch64 without NEON? levels {levels:?}");
    let reference = simd::detected_level();
    for path in &photos {
        let img = decode_image(&std::fs::read(path).unwrap(), &DecodeLimits::default()).unwrap();
        let run = |level: SimdLevel| {
            simd::with_level(level, || {
                assert_eq!(simd::simd_path(), level.name());
                let faces = model.detect(&img).unwrap();
                let face = *faces.first().expect("a face");
                (face, model.embed(&img, &face).unwrap())
            })
        };
        let (want_face, want_emb) = run(reference);
        for &level in &levels {
            let (face, emb) = run(level);
            let b = (face.bbox, want_face.bbox);
            let box_diff = [b.0.x1 - b.1.x1, b.0.y1 - b.1.y1, b.0.x2 - b.1.x2, b.0.y2 - b.1.y2]
                .iter()
                .fold(0f32, |m, d| m.max(d.abs()));
            assert!(box_diff < 0.5, "{level} vs {reference} on {}: boxes differ by {box_diff} px", path.display());
            let cos = emb.cosine(&want_emb);
            assert!(cos > 0.9999, "{level} vs {reference} on {}: embedding cosine {cos}", path.display());
        }
    }
}
