//! [`FrameRecognizer`] with the real face model.

use std::collections::BTreeMap;
use std::sync::Arc;

use facefleet_model::{decode_image, DecodeLimits, Embedding, FaceModel, Gallery};

use crate::gallery::GalleryEntry;
use crate::recognize::{FrameRecognizer, RecognizeError};

/// The real model (MTCNN + the configured recognizer) behind
/// [`FrameRecognizer`].
pub struct ModelRecognizer {
    model: Arc<FaceModel>,
    limits: DecodeLimits,
}

impl ModelRecognizer {
    /// Wraps a loaded model.
    pub fn new(model: Arc<FaceModel>) -> Self {
        Self { model, limits: DecodeLimits::default() }
    }

    /// The model.
    pub fn model(&self) -> &Arc<FaceModel> {
        &self.model
    }
}

impl FrameRecognizer for ModelRecognizer {
    type Gallery = Gallery;

    fn recognizer(&self) -> String {
        self.model.recognizer_kind().name().to_string()
    }

    fn build_gallery(&self, entries: &[GalleryEntry]) -> Result<Gallery, RecognizeError> {
        let mut by_name: BTreeMap<&str, Vec<Embedding>> = BTreeMap::new();
        for e in entries {
            by_name.entry(e.name.as_str()).or_default().push(Embedding::normalized(e.embedding.clone()));
        }
        let mut gallery = Gallery::new(self.model.recognizer_kind());
        for (name, embeddings) in by_name {
            gallery.enroll(name, embeddings).map_err(|e| RecognizeError::Failed(format!("enrolling {name}: {e}")))?;
        }
        Ok(gallery)
    }

    fn recognize(&self, frame: &[u8], gallery: &Gallery) -> Result<Vec<Option<String>>, RecognizeError> {
        let img = decode_image(frame, &self.limits).map_err(|e| RecognizeError::BadFrame(e.to_string()))?;
        let found = self.model.recognize(&img, gallery).map_err(|e| {
            if e.is_bad_input() {
                RecognizeError::BadFrame(e.to_string())
            } else {
                RecognizeError::Failed(e.to_string())
            }
        })?;
        Ok(found.into_iter().map(|f| f.name).collect())
    }
}
