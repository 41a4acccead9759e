//! The crate's error type.

use std::path::PathBuf;

use crate::RecognizerKind;

/// Everything that can go wrong in the face model.
///
/// Image errors ([`ModelError::is_bad_input`]) are the caller's fault (an
/// HTTP service answers them with a 4xx); the others are the deployment's.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The image is zero bytes long.
    #[error("empty image: 0 bytes")]
    EmptyImage,
    /// The bytes are not an image in a supported format.
    #[error("unsupported image format: {0} (expected JPEG, PNG, WebP or BMP)")]
    UnsupportedFormat(String),
    /// The image is truncated or corrupt.
    #[error("corrupt or truncated {format} image: {detail}")]
    CorruptImage {
        /// The format the header announced.
        format: String,
        /// What the decoder said.
        detail: String,
    },
    /// The encoded image is bigger than allowed.
    #[error("image too large: {bytes} bytes (limit {limit} bytes)")]
    TooManyBytes {
        /// Size of the encoded image.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// The header announces more pixels than allowed.
    #[error("image too large: {width}x{height} = {pixels} pixels (limit {limit} pixels)")]
    TooManyPixels {
        /// Announced width.
        width: u32,
        /// Announced height.
        height: u32,
        /// width * height.
        pixels: u64,
        /// The limit.
        limit: u64,
    },
    /// The header announces a side longer than allowed.
    #[error("image too large: {width}x{height} (longest side limit {limit} pixels)")]
    SideTooLong {
        /// Announced width.
        width: u32,
        /// Announced height.
        height: u32,
        /// The limit.
        limit: u32,
    },
    /// The header announces a zero width or height.
    #[error("image has no pixels: {width}x{height}")]
    ZeroSized {
        /// Announced width.
        width: u32,
        /// Announced height.
        height: u32,
    },
    /// A gallery and an embedding (or a model) come from different recognizers.
    #[error("recognizer mismatch: the gallery says {gallery}, the model is {model}")]
    RecognizerMismatch {
        /// The gallery's recognizer.
        gallery: RecognizerKind,
        /// The model's (or embedding's) recognizer.
        model: RecognizerKind,
    },
    /// An embedding has the wrong number of dimensions.
    #[error("embedding has {got} dimensions, {kind} embeddings have {expected}")]
    BadEmbeddingDim {
        /// The recognizer.
        kind: RecognizerKind,
        /// What it should be.
        expected: usize,
        /// What it is.
        got: usize,
    },
    /// An embedding contains NaN or infinity, or is all zeros.
    #[error("invalid embedding: {0}")]
    InvalidEmbedding(String),
    /// A name that cannot be enrolled (empty, or too long).
    #[error("invalid person name {0:?}: must be 1..=256 bytes, no control characters")]
    InvalidName(String),
    /// None of the photos given to enroll a person had a usable face.
    #[error("nothing enrolled for {name:?}: {reasons}")]
    NothingEnrolled {
        /// The person.
        name: String,
        /// Why each photo was skipped.
        reasons: String,
    },
    /// A serialised gallery could not be read.
    #[error("invalid gallery data: {0}")]
    InvalidGallery(String),
    /// A weights file is missing.
    #[error("weights file missing: {} (set FACEFLEET_WEIGHTS_DIR or --weights-dir to a folder holding {file})", path.display())]
    WeightsMissing {
        /// Where it was looked for.
        path: PathBuf,
        /// Its file name.
        file: String,
    },
    /// A weights file exists but cannot be used.
    #[error("invalid weights {name}: {detail}")]
    WeightsInvalid {
        /// Which weights (file name).
        name: String,
        /// What went wrong.
        detail: String,
    },
    /// An I/O error, with the path it concerns.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An error inside the neural network runtime.
    #[error("neural network error: {0}")]
    Candle(#[from] candle_core::Error),
}

impl ModelError {
    /// True for errors caused by the input image itself (answer with a 4xx),
    /// false for errors of the model or its configuration.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            ModelError::EmptyImage
                | ModelError::UnsupportedFormat(_)
                | ModelError::CorruptImage { .. }
                | ModelError::TooManyBytes { .. }
                | ModelError::TooManyPixels { .. }
                | ModelError::SideTooLong { .. }
                | ModelError::ZeroSized { .. }
        )
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result with [`ModelError`].
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
