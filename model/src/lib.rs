//! facefleet's face model (work in progress: networks being integrated).
mod error;
mod gallery;
mod image_io;
mod types;
pub mod align;
pub mod depthwise;
pub mod dlib_resnet;
pub mod mobilefacenet;
mod recognizer;
pub mod weights;
pub use error::ModelError;
pub use gallery::{default_threshold, Gallery, Match};
pub use image_io::{decode_image, DecodeLimits};
pub use types::{BoundingBox, Embedding, Face, Landmarks, RecognizerKind};
pub use recognizer::{load_recognizer, Recognizer};
pub mod mtcnn;
pub use mtcnn::{DetectParams, Mtcnn};
