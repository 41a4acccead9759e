//! facefleet's face model, in pure Rust on [candle](https://github.com/huggingface/candle):
//! MTCNN face detection, 5-point alignment, MobileFaceNet (default, 192-d)
//! or dlib ResNet (128-d) embeddings, and a gallery of known people matched
//! by cosine similarity. All weights are embedded in the binary.
//!
//! ```no_run
//! use facefleet_model::{decode_image, Answer, DecodeLimits, FaceModel, Gallery, ModelConfig};
//! # fn main() -> Result<(), facefleet_model::ModelError> {
//! let model = FaceModel::load(&ModelConfig::default())?; // Send + Sync: share in an Arc
//! let paul = decode_image(&std::fs::read("paul.jpg").unwrap(), &DecodeLimits::default())?;
//! let faces = model.detect(&paul)?; // largest first
//! let mut gallery = Gallery::new(model.recognizer_kind());
//! gallery.enroll("Paul", vec![model.embed(&paul, &faces[0])?])?;
//!
//! let query = decode_image(&std::fs::read("who.jpg").unwrap(), &DecodeLimits::default())?;
//! let found = model.recognize(&query, &gallery)?;
//! println!("{}", Answer::from_faces(&found)); // "Paul", "Unknown" or "NoFace"
//! # Ok(()) }
//! ```
//!
//! Every call is synchronous and CPU-heavy: from async code, call it inside
//! `tokio::task::spawn_blocking`. Untrusted bytes go through
//! [`decode_image`], which refuses oversized images from their header.
//! [`local`] holds the `facefleet enroll` / `facefleet recognize` flows.

mod config;
mod error;
mod face_model;
mod gallery;
mod image_io;
mod types;

pub mod align;
pub mod depthwise;
pub mod dlib_resnet;
pub mod eval;
mod int16;
pub mod local;
pub mod memory;
pub mod mobilefacenet;
pub mod mtcnn;
pub mod pointwise;
mod recognizer;
pub mod simd;
pub mod weights;

pub use config::{ModelConfig, WEIGHTS_DIR_ENV};
pub use error::{ModelError, Result};
pub use face_model::{Answer, FaceModel, RecognizedFace};
pub use gallery::{
    default_threshold, open_set_threshold, Gallery, ImpostorTail, Match, FORMAT_VERSION as GALLERY_FORMAT_VERSION,
    OPEN_SET_FAR,
};
pub use image_io::{decode_image, DecodeLimits};
pub use mtcnn::{DetectParams, Mtcnn};
pub use recognizer::{load_recognizer, Recognizer};
pub use types::{BoundingBox, Embedding, Face, Landmarks, RecognizerKind};

/// Re-export of the `image` crate version used in this API ([`image::RgbImage`]).
pub use image;
