//! [`FaceModel`]: detector + recognizer, and the answers it gives.

use candle_core::Device;
use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::mtcnn::Mtcnn;
use crate::recognizer::{load_recognizer, Recognizer};
use crate::weights::{recognizer_file, var_builder, MTCNN_FILE};
use crate::{Embedding, Face, Gallery, ModelConfig, RecognizerKind};

/// Faces embedded per network call; bounds memory for crowded photos.
const MAX_BATCH: usize = 32;

/// One face found in a photo, with who it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecognizedFace {
    /// Where the face is.
    pub face: Face,
    /// The enrolled person, `None` when Unknown.
    pub name: Option<String>,
    /// Cosine similarity with the nearest enrolled embedding (-1 with an
    /// empty gallery).
    pub similarity: f32,
}

/// The one-word answer for a photo: the name of its largest face.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Answer {
    /// The largest face belongs to this enrolled person.
    Name(String),
    /// The largest face matches nobody in the gallery.
    Unknown,
    /// No face was found.
    NoFace,
}

impl Answer {
    /// The answer for faces as returned by [`FaceModel::recognize`]
    /// (largest first).
    pub fn from_faces(faces: &[RecognizedFace]) -> Self {
        match faces.first() {
            None => Answer::NoFace,
            Some(RecognizedFace { name: Some(n), .. }) => Answer::Name(n.clone()),
            Some(_) => Answer::Unknown,
        }
    }
}

impl std::fmt::Display for Answer {
    /// The name, `Unknown` or `NoFace`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Name(n) => f.write_str(n),
            Answer::Unknown => f.write_str("Unknown"),
            Answer::NoFace => f.write_str("NoFace"),
        }
    }
}

/// The face model: MTCNN detection, alignment and an embedding network.
///
/// Loading takes a fraction of a second; calls are synchronous and
/// CPU-heavy (run them on `tokio::task::spawn_blocking`). `FaceModel` is
/// `Send + Sync`: share one behind an `Arc`.
pub struct FaceModel {
    config: ModelConfig,
    detector: Mtcnn,
    recognizer: Box<dyn Recognizer>,
}

impl std::fmt::Debug for FaceModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaceModel")
            .field("recognizer", &self.recognizer_kind())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl FaceModel {
    /// Loads the detector and `config.recognizer` from the embedded weights,
    /// or from [`ModelConfig::effective_weights_dir`]. Also sets how the
    /// process's allocator keeps the calls' working memory, once
    /// ([`crate::memory::keep_working_memory`]).
    pub fn load(config: &ModelConfig) -> Result<Self> {
        crate::memory::keep_working_memory();
        let device = device();
        let dir = config.effective_weights_dir();
        let dir = dir.as_deref();
        let detector = Mtcnn::load(var_builder(MTCNN_FILE, dir, &device)?, &device)
            .map_err(|e| invalid(MTCNN_FILE, e))?;
        let file = recognizer_file(config.recognizer);
        let recognizer = load_recognizer(config.recognizer, var_builder(file, dir, &device)?, &device)
            .map_err(|e| invalid(file, e))?;
        tracing::debug!(recognizer = %config.recognizer, weights = ?dir, "face model loaded");
        Ok(FaceModel {
            config: config.clone(),
            detector,
            recognizer,
        })
    }

    /// Whether the networks run on a GPU (the `cuda` feature, with a device).
    pub fn on_gpu(&self) -> bool {
        self.detector.device().is_cuda()
    }

    /// The recognizer this model embeds with.
    pub fn recognizer_kind(&self) -> RecognizerKind {
        self.recognizer.kind()
    }

    /// The configuration the model was loaded with.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The threshold [`FaceModel::recognize`] applies with `gallery`:
    /// [`ModelConfig::threshold`] if set, else the gallery's
    /// [`Gallery::effective_threshold`] (its default threshold rises with
    /// the number of enrolled people, see [`crate::open_set_threshold`]).
    pub fn threshold_for(&self, gallery: &Gallery) -> f32 {
        self.config.threshold.unwrap_or(gallery.effective_threshold())
    }

    /// Detects faces, largest first (by the part of the box inside the
    /// image: a face cut by the border counts for what is visible of it).
    pub fn detect(&self, img: &RgbImage) -> Result<Vec<Face>> {
        let mut faces = self.detector.detect(img, &self.config.detect)?;
        sort_largest_first(&mut faces, img.width(), img.height());
        Ok(faces)
    }

    /// [`FaceModel::detect`], adding the time each MTCNN stage took to
    /// `times` (for profiling).
    pub fn detect_timed(&self, img: &RgbImage, times: &mut crate::mtcnn::StageTimes) -> Result<Vec<Face>> {
        let mut faces = self.detector.detect_timed(img, &self.config.detect, times)?;
        sort_largest_first(&mut faces, img.width(), img.height());
        Ok(faces)
    }

    /// Aligns `face` into the recognizer's input chip.
    pub fn align(&self, img: &RgbImage, face: &Face) -> RgbImage {
        self.recognizer.align(img, face)
    }

    /// Embeds one detected face (L2-normalised).
    pub fn embed(&self, img: &RgbImage, face: &Face) -> Result<Embedding> {
        let mut v = self.embed_batch(img, std::slice::from_ref(face))?;
        Ok(v.pop().expect("one embedding per face"))
    }

    /// Embeds several faces of one image in batched network calls.
    pub fn embed_batch(&self, img: &RgbImage, faces: &[Face]) -> Result<Vec<Embedding>> {
        let chips: Vec<RgbImage> = faces.iter().map(|f| self.align(img, f)).collect();
        self.embed_chips(&chips)
    }

    /// Embeds aligned chips (from [`FaceModel::align`], possibly of
    /// different images) in batched network calls.
    pub fn embed_chips(&self, chips: &[RgbImage]) -> Result<Vec<Embedding>> {
        let mut out = Vec::with_capacity(chips.len());
        for batch in chips.chunks(MAX_BATCH) {
            out.extend(self.recognizer.embed_chips(batch)?);
        }
        Ok(out)
    }

    /// Finds, embeds and identifies every face, largest first. An empty
    /// vector means no face was found. Fails if `gallery` was built with
    /// another recognizer.
    pub fn recognize(&self, img: &RgbImage, gallery: &Gallery) -> Result<Vec<RecognizedFace>> {
        self.check_gallery(gallery)?;
        let faces = self.detect(img)?;
        if faces.is_empty() {
            return Ok(Vec::new());
        }
        let embeddings = self.embed_batch(img, &faces)?;
        let threshold = self.threshold_for(gallery);
        faces
            .into_iter()
            .zip(embeddings)
            .map(|(face, e)| {
                let m = gallery.identify_with_threshold(&e, threshold)?;
                Ok(RecognizedFace {
                    face,
                    name: m.name,
                    similarity: m.similarity,
                })
            })
            .collect()
    }

    /// Errors unless `gallery` holds this model's kind of embeddings.
    pub fn check_gallery(&self, gallery: &Gallery) -> Result<()> {
        if gallery.recognizer_kind() != self.recognizer_kind() {
            return Err(ModelError::RecognizerMismatch {
                gallery: gallery.recognizer_kind(),
                model: self.recognizer_kind(),
            });
        }
        Ok(())
    }
}

/// Sorts faces by their box area inside a `width` x `height` image, largest
/// first (ties: higher score first).
pub(crate) fn sort_largest_first(faces: &mut [Face], width: u32, height: u32) {
    let visible = |f: &Face| {
        let (w, h) = (width as f32, height as f32);
        let x = f.bbox.x2.min(w) - f.bbox.x1.max(0.0);
        let y = f.bbox.y2.min(h) - f.bbox.y1.max(0.0);
        x.max(0.0) * y.max(0.0)
    };
    faces.sort_by(|a, b| {
        visible(b)
            .total_cmp(&visible(a))
            .then(b.score.total_cmp(&a.score))
    });
}

fn invalid(file: &str, e: candle_core::Error) -> ModelError {
    ModelError::WeightsInvalid {
        name: file.to_string(),
        detail: e.to_string(),
    }
}

#[cfg(feature = "cuda")]
fn device() -> Device {
    Device::cuda_if_available(0).unwrap_or(Device::Cpu)
}

#[cfg(not(feature = "cuda"))]
fn device() -> Device {
    Device::Cpu
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<FaceModel>();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BoundingBox;

    fn face(x: f32, size: f32, score: f32) -> RecognizedFace {
        RecognizedFace {
            face: Face {
                bbox: BoundingBox {
                    x1: x,
                    y1: 0.0,
                    x2: x + size,
                    y2: size,
                },
                score,
                landmarks: [[0.0; 2]; 5],
            },
            name: None,
            similarity: 0.1,
        }
    }

    #[test]
    fn answers() {
        assert_eq!(Answer::from_faces(&[]), Answer::NoFace);
        assert_eq!(Answer::from_faces(&[face(0.0, 10.0, 0.9)]), Answer::Unknown);
        let mut named = face(0.0, 10.0, 0.9);
        named.name = Some("Paul".into());
        assert_eq!(Answer::from_faces(&[named, face(0.0, 5.0, 0.9)]).to_string(), "Paul");
        assert_eq!(Answer::Unknown.to_string(), "Unknown");
        assert_eq!(Answer::NoFace.to_string(), "NoFace");
    }

    #[test]
    fn largest_face_first() {
        let mut faces: Vec<Face> = [
            face(0.0, 5.0, 0.99),
            face(9.0, 20.0, 0.8),
            face(3.0, 20.0, 0.9),
            face(-20.0, 30.0, 0.99), // 30 wide but only 10 inside the image
        ]
        .iter()
        .map(|f| f.face)
        .collect();
        sort_largest_first(&mut faces, 100, 100);
        assert_eq!(faces[0].bbox.x1, 3.0);
        assert_eq!(faces[1].bbox.x1, 9.0);
        assert_eq!(faces[2].bbox.x1, -20.0);
        assert_eq!(faces[3].bbox.x1, 0.0);
    }
}
