//! The real face model behind the pipeline's [`FaceEngine`] and
//! [`Enroller`] seams.

use std::collections::BTreeMap;

use facefleet_model::{decode_image, Answer, DecodeLimits, Embedding, FaceModel, Gallery, ModelConfig, ModelError};

use crate::engine::{EngineError, Enroller, FaceEngine};
use crate::gallery::GalleryEntry;
use crate::protocol::{FaceBox, FaceMatch, Recognition};

/// facefleet-model's [`FaceModel`] (MTCNN + MobileFaceNet by default).
pub struct ModelEngine {
    model: FaceModel,
    limits: DecodeLimits,
}

impl std::fmt::Debug for ModelEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelEngine").field("model", &self.model).finish()
    }
}

fn engine_error(e: ModelError) -> EngineError {
    if e.is_bad_input() {
        EngineError::BadImage(e.to_string())
    } else {
        EngineError::Failed(e.to_string())
    }
}

impl ModelEngine {
    /// Loads the model (embedded weights unless `config` says otherwise).
    pub fn load(config: &ModelConfig) -> Result<Self, ModelError> {
        Ok(Self { model: FaceModel::load(config)?, limits: DecodeLimits::default() })
    }

    /// The loaded model.
    pub fn model(&self) -> &FaceModel {
        &self.model
    }
}

impl FaceEngine for ModelEngine {
    type Gallery = Gallery;

    fn recognizer(&self) -> String {
        self.model.recognizer_kind().name().to_string()
    }

    fn build_gallery(&self, entries: &[GalleryEntry]) -> Result<Gallery, EngineError> {
        let mut by_name: BTreeMap<&str, Vec<Embedding>> = BTreeMap::new();
        for e in entries {
            by_name.entry(&e.name).or_default().push(Embedding(e.embedding.clone()));
        }
        let mut gallery = Gallery::new(self.model.recognizer_kind());
        for (name, embeddings) in by_name {
            // One bad entry must not take the whole gallery down.
            for emb in embeddings {
                if let Err(err) = gallery.enroll(name, vec![emb]) {
                    tracing::warn!(%name, %err, "skipping an unusable gallery entry");
                }
            }
        }
        Ok(gallery)
    }

    fn recognize(&self, image: &[u8], gallery: &Gallery) -> Result<Recognition, EngineError> {
        let img = decode_image(image, &self.limits).map_err(engine_error)?;
        let found = self.model.recognize(&img, gallery).map_err(engine_error)?;
        let name = Answer::from_faces(&found).to_string();
        let faces = found
            .into_iter()
            .map(|f| FaceMatch {
                bbox: FaceBox { x1: f.face.bbox.x1, y1: f.face.bbox.y1, x2: f.face.bbox.x2, y2: f.face.bbox.y2 },
                name: f.name,
                similarity: f.similarity,
            })
            .collect();
        Ok(Recognition { name, faces })
    }
}

impl Enroller for ModelEngine {
    fn recognizer(&self) -> String {
        FaceEngine::recognizer(self)
    }

    fn embed(&self, image: &[u8]) -> Result<Vec<f32>, EngineError> {
        let img = decode_image(image, &self.limits).map_err(engine_error)?;
        let faces = self.model.detect(&img).map_err(engine_error)?;
        let face = faces.first().ok_or_else(|| EngineError::BadImage("no face found in the photo".into()))?;
        Ok(self.model.embed(&img, face).map_err(engine_error)?.0)
    }
}
