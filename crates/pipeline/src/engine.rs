//! The seam between the pipeline and the face model.
//!
//! Workers use a [`FaceEngine`] to recognise images against a gallery; the
//! web tier uses an [`Enroller`] to turn enrollment photos into embeddings.
//! [`crate::model_engine::ModelEngine`] implements both with the real model;
//! tests plug in doubles.

use crate::gallery::GalleryEntry;
use crate::protocol::Recognition;

/// Why the engine could not process an image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The image is unusable (not decodable, too large, no face when one is
    /// required): retrying will not help.
    #[error("{0}")]
    BadImage(String),
    /// Anything else; the request may succeed on another attempt.
    #[error("{0}")]
    Failed(String),
}

/// Recognises faces in images (used by the app tier).
///
/// All methods are synchronous and may be CPU-heavy: call them from
/// `tokio::task::spawn_blocking`.
pub trait FaceEngine: Send + Sync + 'static {
    /// The engine's ready-to-match form of a gallery.
    type Gallery: Send + Sync + 'static;

    /// Name of the recognizer; gallery entries of another recognizer are
    /// ignored.
    fn recognizer(&self) -> String;

    /// Builds a gallery from stored entries (all of this recognizer).
    fn build_gallery(&self, entries: &[GalleryEntry]) -> Result<Self::Gallery, EngineError>;

    /// Recognises every face of the encoded `image` against `gallery`.
    fn recognize(&self, image: &[u8], gallery: &Self::Gallery) -> Result<Recognition, EngineError>;
}

/// Turns an enrollment photo into one embedding (used by the web tier).
pub trait Enroller: Send + Sync + 'static {
    /// Name of the recognizer the embeddings come from.
    fn recognizer(&self) -> String;

    /// Embedding of the largest face of the encoded `image`;
    /// [`EngineError::BadImage`] when there is no face.
    fn embed(&self, image: &[u8]) -> Result<Vec<f32>, EngineError>;
}
