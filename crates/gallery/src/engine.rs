//! The one seam between facefleet and its face model: [`FaceEngine`].
//!
//! The composition root plugs in the real model (`facefleet-app`'s
//! `ModelEngine`); tests plug in doubles. Matching against enrolled people
//! is not the engine's job: it is plain vector math done by
//! [`crate::index::Index`].

use serde::{Deserialize, Serialize};

/// A face box in image pixels (x right, y down).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FaceBox {
    /// Left edge.
    pub x1: f32,
    /// Top edge.
    pub y1: f32,
    /// Right edge.
    pub x2: f32,
    /// Bottom edge.
    pub y2: f32,
}

/// How usable a face is for recognition.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FaceQuality {
    /// Sharpness of the aligned face in 0..=1 (variance of the Laplacian,
    /// squashed): below about 0.2 the face is blurred.
    pub sharpness: f32,
    /// Head yaw in degrees estimated from the landmarks (0: frontal,
    /// positive: turned towards the image's right).
    pub yaw: f32,
    /// Head pitch in degrees estimated from the landmarks (positive: looking
    /// down).
    pub pitch: f32,
}

/// One face found in an image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalyzedFace {
    /// Where the face is.
    pub bbox: FaceBox,
    /// Left eye, right eye, nose tip, left and right mouth corners, in
    /// image pixels ("left": the image's left).
    pub landmarks: [[f32; 2]; 5],
    /// Detector confidence in 0..=1.
    pub score: f32,
    /// Face size: the shorter side of the box, in pixels.
    pub size: f32,
    /// Sharpness and pose.
    pub quality: FaceQuality,
    /// The L2-normalised embedding; empty when it was not asked for.
    pub embedding: Vec<f32>,
}

/// Why the engine could not process an image.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The image is unusable (undecodable, too large): retrying will not
    /// help.
    #[error("{message}")]
    BadImage {
        /// What is wrong with it, for the client.
        message: String,
    },
    /// Anything else; another attempt may succeed.
    #[error("{message}")]
    Failed {
        /// What failed.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl EngineError {
    /// A [`EngineError::BadImage`].
    pub fn bad_image(message: impl Into<String>) -> Self {
        EngineError::BadImage { message: message.into() }
    }

    /// A [`EngineError::Failed`] caused by `source`.
    pub fn failed(message: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        EngineError::Failed { message: message.into(), source: Some(Box::new(source)) }
    }

    /// True for [`EngineError::BadImage`].
    pub fn is_bad_image(&self) -> bool {
        matches!(self, EngineError::BadImage { .. })
    }
}

/// Detects, aligns and embeds faces.
///
/// Every method is synchronous and CPU-heavy: call them off the async
/// runtime. A caller that makes one call at a time does best on one
/// long-lived thread of its own, where the model's per-thread working
/// memory stays warm (the worker's `ModelThread`); callers whose calls run
/// concurrently (the video functions, the web tier's enrolment) use
/// `tokio::task::spawn_blocking`.
pub trait FaceEngine: Send + Sync + 'static {
    /// Id of the model the embeddings come from (e.g. `mobilefacenet`):
    /// embeddings of another id are not comparable.
    fn model_id(&self) -> &str;

    /// Cosine similarity at and above which two faces are the same person
    /// (calibrated; `POST /v1/verify` and the open-set decision start from
    /// it).
    fn threshold(&self) -> f32;

    /// Similarity at and above which a face is answered with the nearest
    /// of `people` enrolled people (open-set identification). Each extra
    /// person is one more chance of a false match, so a calibrated engine
    /// raises it as the gallery grows; by default it is [`Self::threshold`].
    fn open_set_threshold(&self, people: usize) -> f32 {
        let _ = people;
        self.threshold()
    }

    /// The faces of the encoded `image`, largest first, at most
    /// `max_faces`; embeddings are filled when `embed` is true. Empty when
    /// there is no face.
    fn analyze(&self, image: &[u8], max_faces: usize, embed: bool) -> Result<Vec<AnalyzedFace>, EngineError>;

    /// Faces of several images at once, embedded in batched network calls
    /// where the engine can (workers pass the images of several requests).
    /// One result per image, in order.
    fn analyze_many(&self, images: &[&[u8]], max_faces: usize) -> Vec<Result<Vec<AnalyzedFace>, EngineError>> {
        images.iter().map(|i| self.analyze(i, max_faces, true)).collect()
    }

    /// How many images [`Self::analyze_many`] is best given at once. 1
    /// (the default) where a batch is no cheaper per face, as on a CPU: the
    /// activations of a batch of face chips leave the cache, so embedding
    /// 10 at once costs more per chip than one at a time, and a batch
    /// delays every answer in it until the last face is done. More on a
    /// GPU, where a batch fills the device.
    fn preferred_batch(&self) -> usize {
        1
    }

    /// A small JPEG (about 112x112) of `face` aligned, for galleries and
    /// the console.
    fn thumbnail(&self, image: &[u8], face: &AnalyzedFace) -> Result<Vec<u8>, EngineError>;
}
