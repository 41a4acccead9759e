//! facefleet's gallery of enrolled faces and the recognizer seam, shared by
//! the web tier, the workers, the video path and the Lambda functions:
//!
//! - [`engine`]: the one seam to the face model ([`FaceEngine`]);
//! - [`names`]: the rules for person and collection names;
//! - [`store`]: collections in the gallery bucket, as a compacted snapshot
//!   plus a short log of later changes;
//! - [`index`]: a collection's faces ready to match;
//! - [`cache`]: what a worker holds: indexes kept fresh cheaply.

#![warn(missing_docs)]

pub mod cache;
pub mod engine;
pub mod index;
pub mod names;
pub mod store;

pub use cache::GalleryCache;
pub use engine::{AnalyzedFace, EngineError, FaceBox, FaceEngine, FaceQuality};
pub use index::{Candidate, Index};
pub use names::DEFAULT_COLLECTION;
pub use store::{CollectionInfo, FaceRecord, Gallery, GalleryError, NewFace, PersonSummary, Snapshot};
