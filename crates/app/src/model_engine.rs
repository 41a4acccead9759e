//! The real face model behind the recognizer seam
//! ([`facefleet_gallery::FaceEngine`]): facefleet-model's MTCNN detector,
//! 5-point alignment and embedding network.
//!
//! Besides boxes, landmarks and embeddings, [`ModelEngine`] estimates how
//! usable each face is ([`FaceQuality`]):
//!
//! - **sharpness**: the variance `v` of the Laplacian (4-neighbour kernel)
//!   of the aligned chip in grey levels (0..=255), squashed to 0..=1 as
//!   `v / (v + 100)`: a sharp face chip scores above 0.5, a blurred one
//!   (`v` below 25) below 0.2;
//! - **yaw and pitch**: from the 5 landmarks, after undoing the roll (the
//!   tilt of the eye line), with a rigid face model whose nose tip stands
//!   `NOSE_DEPTH` = 0.5 eye distances in front of the plane of the eyes and
//!   mouth. Turning the head by yaw `ψ` moves the nose tip sideways by
//!   `0.5·d·sin ψ` while the eye distance shrinks to `d·cos ψ`, so
//!   `ψ = atan(offset / (d'/2) / (2·NOSE_DEPTH))` where `offset` is the nose
//!   tip's horizontal distance from the eyes' midpoint and `d'` the eye
//!   distance in the image (positive: the nose points to the image's right).
//!   Pitch `φ` moves the nose tip along the eye-to-mouth axis of length
//!   `h`: `φ = atan((t − t₀)·h / depth)`, with `t` the nose tip's position
//!   between eye line (0) and mouth line (1), `t₀` its frontal value in the
//!   ArcFace template, and `depth` = `NOSE_DEPTH`·`d` (positive: looking
//!   down). Both are estimates good to about 10 degrees near frontal,
//!   meant to flag profile and strongly tilted faces.

use std::sync::Arc;

use facefleet_gallery::{AnalyzedFace, EngineError, FaceBox, FaceEngine, FaceQuality};
use facefleet_model::image::{imageops, GrayImage, RgbImage};
use facefleet_model::{decode_image, BoundingBox, DecodeLimits, Face, FaceModel, ModelConfig, ModelError};

/// Nose-tip depth in front of the eye/mouth plane, in eye distances.
const NOSE_DEPTH: f32 = 0.5;

/// Side of the thumbnails, in pixels.
const THUMBNAIL_SIDE: u32 = 112;

/// facefleet-model's [`FaceModel`] (MTCNN + MobileFaceNet by default) behind
/// [`FaceEngine`].
pub struct ModelEngine {
    model: Arc<FaceModel>,
    limits: DecodeLimits,
    model_id: String,
    threshold: f32,
}

impl std::fmt::Debug for ModelEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelEngine").field("model", &self.model).field("threshold", &self.threshold).finish()
    }
}

/// A model error as an engine error: the image's fault
/// ([`ModelError::is_bad_input`]) or a failure another attempt may not have.
fn engine_error(e: ModelError) -> EngineError {
    if e.is_bad_input() {
        EngineError::bad_image(e.to_string())
    } else {
        EngineError::failed("the face model failed", e)
    }
}

impl ModelEngine {
    /// Loads the model (embedded weights unless `config` says otherwise).
    pub fn load(config: &ModelConfig) -> Result<Self, ModelError> {
        Ok(Self::new(Arc::new(FaceModel::load(config)?)))
    }

    /// Wraps a loaded model; the threshold is its configuration's, else the
    /// recognizer's calibrated one.
    pub fn new(model: Arc<FaceModel>) -> Self {
        let kind = model.recognizer_kind();
        let threshold = model.config().threshold.unwrap_or_else(|| facefleet_model::default_threshold(kind));
        Self { model_id: kind.name().to_string(), threshold, limits: DecodeLimits::default(), model }
    }

    /// The loaded model (shared with the video path).
    pub fn model(&self) -> &Arc<FaceModel> {
        &self.model
    }

    /// Decodes, detects (largest first) and keeps at most `max_faces`,
    /// with each face's aligned chip.
    fn detect(&self, image: &[u8], max_faces: usize) -> Result<(RgbImage, Vec<(Face, RgbImage)>), EngineError> {
        let img = decode_image(image, &self.limits).map_err(engine_error)?;
        let mut faces = self.model.detect(&img).map_err(engine_error)?;
        faces.truncate(max_faces);
        let aligned = faces.into_iter().map(|f| (f, self.model.align(&img, &f))).collect();
        Ok((img, aligned))
    }
}

/// A face as the seam describes it (no embedding yet).
fn analyzed(face: &Face, chip: &RgbImage) -> AnalyzedFace {
    let b = face.bbox;
    AnalyzedFace {
        bbox: FaceBox { x1: b.x1, y1: b.y1, x2: b.x2, y2: b.y2 },
        landmarks: face.landmarks,
        score: face.score,
        size: b.width().min(b.height()).max(0.0),
        quality: quality(chip, &face.landmarks),
        embedding: Vec::new(),
    }
}

impl FaceEngine for ModelEngine {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn threshold(&self) -> f32 {
        self.threshold
    }

    /// 1 on a CPU (see the trait); a whole receive (10) on a GPU.
    fn preferred_batch(&self) -> usize {
        if self.model.on_gpu() {
            10
        } else {
            1
        }
    }

    /// A configured threshold (`--threshold`) is used as it is; otherwise
    /// the model's open-set rule raises the calibrated one with the number
    /// of enrolled people, so that a stranger is taken for someone in at
    /// most `facefleet_model::OPEN_SET_FAR` of queries however large the
    /// collection grows.
    fn open_set_threshold(&self, people: usize) -> f32 {
        match self.model.config().threshold {
            Some(t) => t,
            None => facefleet_model::open_set_threshold(self.model.recognizer_kind(), people),
        }
    }

    fn analyze(&self, image: &[u8], max_faces: usize, embed: bool) -> Result<Vec<AnalyzedFace>, EngineError> {
        let (_, found) = self.detect(image, max_faces)?;
        let mut faces: Vec<AnalyzedFace> = found.iter().map(|(f, chip)| analyzed(f, chip)).collect();
        if embed && !found.is_empty() {
            let chips: Vec<RgbImage> = found.into_iter().map(|(_, chip)| chip).collect();
            let embeddings = self.model.embed_chips(&chips).map_err(engine_error)?;
            for (face, e) in faces.iter_mut().zip(embeddings) {
                face.embedding = e.0;
            }
        }
        Ok(faces)
    }

    fn analyze_many(&self, images: &[&[u8]], max_faces: usize) -> Vec<Result<Vec<AnalyzedFace>, EngineError>> {
        // Detect in each image, then embed the faces of all of them in one
        // batch.
        let mut results: Vec<Result<Vec<AnalyzedFace>, EngineError>> = Vec::with_capacity(images.len());
        let mut chips = Vec::new();
        for image in images {
            results.push(self.detect(image, max_faces).map(|(_, found)| {
                found
                    .into_iter()
                    .map(|(f, chip)| {
                        let face = analyzed(&f, &chip);
                        chips.push(chip);
                        face
                    })
                    .collect()
            }));
        }
        if chips.is_empty() {
            return results;
        }
        match self.model.embed_chips(&chips) {
            Ok(embeddings) => {
                let mut embeddings = embeddings.into_iter();
                for face in results.iter_mut().flatten().flatten() {
                    face.embedding = embeddings.next().map(|e| e.0).unwrap_or_default();
                }
                results
            }
            // The batch failed: each image on its own, so that one image's
            // failure is only its own.
            Err(e) => {
                tracing::warn!(error = %e, "batched embedding failed; embedding image by image");
                images
                    .iter()
                    .zip(results)
                    .map(|(image, r)| match r {
                        Ok(faces) if !faces.is_empty() => self.analyze(image, max_faces, true),
                        other => other,
                    })
                    .collect()
            }
        }
    }

    fn thumbnail(&self, image: &[u8], face: &AnalyzedFace) -> Result<Vec<u8>, EngineError> {
        let img = decode_image(image, &self.limits).map_err(engine_error)?;
        let b = face.bbox;
        let face = Face { bbox: BoundingBox { x1: b.x1, y1: b.y1, x2: b.x2, y2: b.y2 }, score: face.score, landmarks: face.landmarks };
        let mut chip = self.model.align(&img, &face);
        if chip.width() != THUMBNAIL_SIDE {
            chip = imageops::resize(&chip, THUMBNAIL_SIDE, THUMBNAIL_SIDE, imageops::FilterType::Triangle);
        }
        let mut out = std::io::Cursor::new(Vec::new());
        facefleet_model::image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
            .encode_image(&chip)
            .map_err(|e| EngineError::failed("encoding the thumbnail failed", e))?;
        Ok(out.into_inner())
    }
}

/// Sharpness and pose of a face (see the module documentation).
pub fn quality(chip: &RgbImage, landmarks: &[[f32; 2]; 5]) -> FaceQuality {
    let v = laplacian_variance(&imageops::grayscale(chip));
    let (yaw, pitch) = pose(landmarks);
    FaceQuality { sharpness: v / (v + 100.0), yaw, pitch }
}

/// Variance of the 4-neighbour Laplacian over the inner pixels.
fn laplacian_variance(g: &GrayImage) -> f32 {
    let (w, h) = g.dimensions();
    if w < 3 || h < 3 {
        return 0.0;
    }
    let px = |x: u32, y: u32| f64::from(g.get_pixel(x, y)[0]);
    let (mut sum, mut sum2, mut n) = (0.0f64, 0.0f64, 0.0f64);
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let l = px(x - 1, y) + px(x + 1, y) + px(x, y - 1) + px(x, y + 1) - 4.0 * px(x, y);
            sum += l;
            sum2 += l * l;
            n += 1.0;
        }
    }
    let mean = sum / n;
    (sum2 / n - mean * mean).max(0.0) as f32
}

/// Yaw and pitch in degrees (see the module documentation).
pub fn pose(l: &[[f32; 2]; 5]) -> (f32, f32) {
    let [le, re, nose, lm, rm] = *l;
    let (dx, dy) = (re[0] - le[0], re[1] - le[1]);
    let d = (dx * dx + dy * dy).sqrt();
    if d.is_nan() || d <= 1e-3 {
        return (0.0, 0.0);
    }
    // Undo the roll: coordinates along the eye line (u) and across it (v),
    // from the eyes' midpoint.
    let (c, s) = (dx / d, dy / d);
    let mid = [(le[0] + re[0]) / 2.0, (le[1] + re[1]) / 2.0];
    let local = |p: [f32; 2]| {
        let (x, y) = (p[0] - mid[0], p[1] - mid[1]);
        (x * c + y * s, -x * s + y * c)
    };
    let (nu, nv) = local(nose);
    let mouth = local([(lm[0] + rm[0]) / 2.0, (lm[1] + rm[1]) / 2.0]);
    let yaw = (nu / (d / 2.0) / (2.0 * NOSE_DEPTH)).atan().to_degrees();
    let h = mouth.1;
    let pitch = if h > 1e-3 {
        let t0 = frontal_nose_position();
        ((nv / h - t0) * h / (NOSE_DEPTH * d)).atan().to_degrees()
    } else {
        0.0
    };
    (yaw, pitch)
}

/// The nose tip's position between the eye line (0) and the mouth line (1)
/// in the ArcFace template (a frontal face): about 0.49.
fn frontal_nose_position() -> f32 {
    let t = facefleet_model::align::ARCFACE_112;
    let eyes = (t[0][1] + t[1][1]) / 2.0;
    let mouth = (t[3][1] + t[4][1]) / 2.0;
    (t[2][1] - eyes) / (mouth - eyes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_is_frontal() {
        let (yaw, pitch) = pose(&facefleet_model::align::ARCFACE_112);
        assert!(yaw.abs() < 3.0, "yaw {yaw}");
        assert!(pitch.abs() < 1.0, "pitch {pitch}");
    }

    #[test]
    fn pose_follows_the_nose_and_ignores_roll() {
        let mut turned = facefleet_model::align::ARCFACE_112;
        turned[2][0] += 10.0; // nose towards the image's right
        let (yaw, _) = pose(&turned);
        assert!(yaw > 20.0, "yaw {yaw}");
        let mut down = facefleet_model::align::ARCFACE_112;
        down[2][1] += 8.0; // nose tip lower: looking down
        let (_, pitch) = pose(&down);
        assert!(pitch > 15.0, "pitch {pitch}");
        // The same face rotated by 30 degrees in the image plane.
        let (c, s) = (30f32.to_radians().cos(), 30f32.to_radians().sin());
        let rolled = turned.map(|[x, y]| [x * c - y * s, x * s + y * c]);
        let (yaw_rolled, _) = pose(&rolled);
        assert!((yaw - yaw_rolled).abs() < 0.5, "{yaw} vs {yaw_rolled}");
    }

    #[test]
    fn sharpness_separates_noise_from_flat() {
        let flat = RgbImage::from_pixel(112, 112, facefleet_model::image::Rgb([128, 128, 128]));
        assert_eq!(quality(&flat, &facefleet_model::align::ARCFACE_112).sharpness, 0.0);
        let checker = RgbImage::from_fn(112, 112, |x, y| if (x + y) % 2 == 0 { facefleet_model::image::Rgb([0, 0, 0]) } else { facefleet_model::image::Rgb([255, 255, 255]) });
        assert!(quality(&checker, &facefleet_model::align::ARCFACE_112).sharpness > 0.99);
    }
}
