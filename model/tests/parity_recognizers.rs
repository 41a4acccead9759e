//! Parity of the candle recognizers with their original runtimes.
//!
//! Golden embeddings (model/tests/golden/{mobilefacenet,dlib_resnet}.json)
//! come from scripts/parity/recognizers_reference.py: TFLite for
//! MobileFaceNet, face-api.js (tfjs wasm) for the dlib ResNet. Each case is a
//! synthetic chip or an LFW face aligned from recorded MTCNN landmarks; the
//! Rust side aligns the same way and must reach cosine >= 0.999.
//!
//! Needs the shared data sets (env FACEFLEET_SHARED_DIR or `<workspace>/../shared`);
//! fails when they are missing.

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use facefleet_model::{load_recognizer, BoundingBox, Embedding, Face, Recognizer, RecognizerKind};
use image::RgbImage;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shared_dir() -> PathBuf {
    let dir = std::env::var_os("FACEFLEET_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| model_dir().join("..").join("..").join("shared"));
    assert!(
        dir.join("datasets").join("lfw-dev").is_dir(),
        "shared data sets not found at {} (set FACEFLEET_SHARED_DIR to the directory holding datasets/lfw-dev)",
        dir.display()
    );
    dir
}

fn recognizer(kind: RecognizerKind) -> Box<dyn Recognizer> {
    let file = match kind {
        RecognizerKind::MobileFaceNet => "mobilefacenet.safetensors",
        RecognizerKind::DlibResnet => "dlib_resnet.safetensors",
    };
    let path = model_dir().join("weights").join(file);
    assert!(path.is_file(), "{} missing: run scripts/import-weights", path.display());
    // SAFETY: the weight file is not modified while mapped.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[path], DType::F32, &Device::Cpu) }.expect("weights");
    load_recognizer(kind, vb, &Device::Cpu).expect("load recognizer")
}

fn golden(name: &str) -> Value {
    let path = model_dir().join("tests").join("golden").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).expect("golden file")).expect("golden json")
}

fn synthetic_chip(size: u32) -> RgbImage {
    RgbImage::from_fn(size, size, |x, y| {
        let v = |c: u32| ((x * 7 + y * 13 + c * 29) % 256) as u8;
        image::Rgb([v(0), v(1), v(2)])
    })
}

fn face_from_landmarks(lm: &Value) -> Face {
    let mut landmarks = [[0f32; 2]; 5];
    for (i, p) in lm.as_array().expect("landmarks").iter().enumerate() {
        landmarks[i] = [p[0].as_f64().unwrap() as f32, p[1].as_f64().unwrap() as f32];
    }
    Face { bbox: BoundingBox { x1: 0.0, y1: 0.0, x2: 1.0, y2: 1.0 }, score: 1.0, landmarks }
}

fn check(kind: RecognizerKind, golden_file: &str) {
    let shared = shared_dir();
    let rec = recognizer(kind);
    let g = golden(golden_file);
    let size = g["chip_size"].as_u64().unwrap() as u32;
    assert_eq!(size, rec.chip_size());
    let mut chips = Vec::new();
    let mut wants = Vec::new();
    let mut names = Vec::new();
    for case in g["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap().to_string();
        let chip = if case.get("synthetic").is_some() {
            synthetic_chip(size)
        } else {
            let path: &Path = Path::new(case["image"].as_str().unwrap());
            let img = image::open(shared.join(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8();
            rec.align(&img, &face_from_landmarks(&case["landmarks"]))
        };
        // Alignment drift check (JPEG decoders differ by a level here and there).
        let sum: i64 = chip.as_raw().iter().map(|&v| v as i64).sum();
        let want_sum = case["chip_sum"].as_i64().unwrap();
        let per_sample = (sum - want_sum).abs() as f64 / chip.as_raw().len() as f64;
        assert!(per_sample < 1.0, "{name}: chip differs from the reference chip ({sum} vs {want_sum})");
        let want: Vec<f32> = case["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        assert_eq!(want.len(), kind.dim());
        chips.push(chip);
        wants.push(Embedding::normalized(want));
        names.push(name);
    }
    // One batch for all cases, then one by one: results must agree.
    let batch = rec.embed_chips(&chips).expect("embed");
    for (i, (got, want)) in batch.iter().zip(&wants).enumerate() {
        let cos = got.cosine(want);
        println!("{kind} {}: cosine vs reference {cos:.6}", names[i]);
        assert!(cos >= 0.999, "{kind} {}: cosine {cos} < 0.999 vs reference", names[i]);
        let single = rec.embed_chips(std::slice::from_ref(&chips[i])).expect("embed one");
        assert!(single[0].cosine(got) > 0.99999, "{kind} {}: batch and single embeddings differ", names[i]);
        assert!((got.0.iter().map(|v| v * v).sum::<f32>() - 1.0).abs() < 1e-4, "not L2-normalised");
    }
}

#[test]
fn mobilefacenet_matches_tflite() {
    check(RecognizerKind::MobileFaceNet, "mobilefacenet.json");
}

#[test]
fn dlib_resnet_matches_face_api() {
    check(RecognizerKind::DlibResnet, "dlib_resnet.json");
}

#[test]
fn wrong_chip_size_is_an_error() {
    let rec = recognizer(RecognizerKind::MobileFaceNet);
    assert!(rec.embed_chips(&[RgbImage::new(100, 100)]).is_err());
    assert!(rec.embed_chips(&[]).unwrap().is_empty());
}

/// Accuracy sanity check on lfw-dev (63 people x 6 photos): MTCNN finds the
/// largest face, each recognizer embeds it, and same-person pairs must score
/// well above different-person pairs. Prints the score distributions and the
/// best verification threshold (the full evaluation lives elsewhere).
#[test]
fn lfw_dev_same_person_scores_above_different_person() {
    let shared = shared_dir();
    let lfw = shared.join("datasets").join("lfw-dev");
    let mtcnn_path = model_dir().join("weights").join("mtcnn.safetensors");
    // SAFETY: the weight file is not modified while mapped.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[mtcnn_path], DType::F32, &Device::Cpu) }.expect("mtcnn weights");
    let mtcnn = facefleet_model::Mtcnn::load(vb, &Device::Cpu).expect("mtcnn");
    let mut people: Vec<PathBuf> = std::fs::read_dir(&lfw).unwrap().filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
    people.sort();
    assert!(people.len() >= 20, "lfw-dev looks incomplete at {}", lfw.display());
    // (person index, image, face)
    let mut samples = Vec::new();
    for (pi, dir) in people.iter().enumerate() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for f in files {
            let img = image::open(&f).unwrap().to_rgb8();
            let faces = mtcnn.detect(&img, &facefleet_model::DetectParams::default()).expect("detect");
            if let Some(face) = faces.iter().max_by(|a, b| a.bbox.area().total_cmp(&b.bbox.area())) {
                samples.push((pi, img.clone(), *face));
            }
        }
    }
    assert!(samples.len() >= people.len() * 5, "MTCNN found faces in only {} images", samples.len());
    for (kind, min_gap, min_acc) in [(RecognizerKind::MobileFaceNet, 0.3, 0.9), (RecognizerKind::DlibResnet, 0.1, 0.9)] {
        let rec = recognizer(kind);
        let chips: Vec<RgbImage> = samples.iter().map(|(_, img, face)| rec.align(img, face)).collect();
        let embs = rec.embed_chips(&chips).expect("embed");
        let (mut same, mut diff) = (Vec::new(), Vec::new());
        for i in 0..embs.len() {
            for j in i + 1..embs.len() {
                let s = embs[i].cosine(&embs[j]);
                if samples[i].0 == samples[j].0 { same.push(s) } else { diff.push(s) }
            }
        }
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
        let pct = |v: &mut Vec<f32>, q: f32| {
            v.sort_by(|a, b| a.total_cmp(b));
            v[((v.len() - 1) as f32 * q) as usize]
        };
        // Balanced accuracy at the best threshold.
        let (mut best_t, mut best_acc) = (0f32, 0f32);
        for k in 0..200 {
            let t = -0.2 + k as f32 * 0.006;
            let tpr = same.iter().filter(|&&s| s >= t).count() as f32 / same.len() as f32;
            let tnr = diff.iter().filter(|&&s| s < t).count() as f32 / diff.len() as f32;
            if (tpr + tnr) / 2.0 > best_acc {
                (best_t, best_acc) = (t, (tpr + tnr) / 2.0);
            }
        }
        let (ms, md) = (mean(&same), mean(&diff));
        println!(
            "{kind}: {} faces; same-person cosine mean {ms:.3} (p5 {:.3}, p50 {:.3}); different-person mean {md:.3} (p50 {:.3}, p95 {:.3}, p99 {:.3}); best threshold {best_t:.3}, balanced accuracy {best_acc:.3}",
            embs.len(),
            pct(&mut same, 0.05),
            pct(&mut same, 0.5),
            pct(&mut diff, 0.5),
            pct(&mut diff, 0.95),
            pct(&mut diff, 0.99),
        );
        assert!(ms - md > min_gap, "{kind}: same-person mean {ms} not above different-person mean {md} by {min_gap}");
        assert!(best_acc >= min_acc, "{kind}: best balanced verification accuracy {best_acc} < {min_acc}");
    }
}
