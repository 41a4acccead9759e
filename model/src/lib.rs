//! facefleet's face model (work in progress: see the model issue).
mod types;
pub use types::{BoundingBox, Embedding, Face, Landmarks, RecognizerKind};
