//! facefleet's serverless video path.
//!
//! A video dropped into `<prefix>-input` is split into frames by the
//! **video-splitting** handler ([`split::SplitHandler`]), which writes them to
//! `<prefix>-stage-1` with a manifest; each frame is recognised by the
//! **face-recognition** handler ([`recognize::RecognizeHandler`]), which
//! writes per-frame names and, once every frame of the video is done, the
//! video's person to `<prefix>-output` (exactly once). Failures are
//! recorded as `<stem>.error` objects. See [`keys`] for the object layout.
//!
//! Both handlers take S3 events ([`aws_lambda_events::event::s3::S3Event`]):
//! on AWS they run in Lambda functions (crate `facefleet-functions`), on one
//! machine the [`local`] trigger polls the buckets and delivers the same
//! events with bounded concurrency. [`http::router`] adds `POST /v1/videos`.

pub mod event;
pub mod ffmpeg;
pub mod http;
pub mod keys;
pub mod local;
pub mod metrics;
pub mod recognize;
pub mod redact;
pub mod sniff;
pub mod split;
pub mod temp;

use facefleet_ports::PortError;
use serde::{Deserialize, Serialize};

pub use ffmpeg::{Ffmpeg, FfmpegError, Sampling};
pub use local::{run_until, spawn_trigger, Trigger, TriggerConfig, TriggerStats};
pub use recognize::RecognizeHandler;
pub use split::{SplitConfig, SplitHandler};

/// An error that stops an invocation without recording a failure for the
/// video: the backend or this machine is at fault, not the input, so the
/// invocation should be retried later (Lambda retries it; the local trigger
/// retries a bounded number of times, then records a failure).
#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    /// The object store failed.
    #[error("object store: {0}")]
    Store(#[from] PortError),
    /// ffmpeg is missing or could not run.
    #[error(transparent)]
    Ffmpeg(#[from] FfmpegError),
    /// Local I/O (temporary files) failed.
    #[error("local I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The face model failed.
    #[error("face model: {0}")]
    Model(#[source] facefleet_gallery::EngineError),
    /// The gallery could not be read.
    #[error("gallery: {0}")]
    Gallery(#[from] facefleet_gallery::GalleryError),
    /// A stored object of ours is not readable.
    #[error("{0}")]
    Corrupt(String),
}

impl VideoError {
    /// The error in words fit for a client (stored in `<stem>.error` and
    /// served by `GET /v1/videos/{stem}`): its kind, without the backend's
    /// message, paths or file names. Log the `Display` form for the detail.
    pub fn public_message(&self) -> String {
        match self {
            VideoError::Store(e) if e.is_transient() => "the object store was unavailable".to_string(),
            VideoError::Store(_) => "the object store failed".to_string(),
            VideoError::Ffmpeg(e) => e.public_message(),
            VideoError::Io(_) => "a local I/O error on the server".to_string(),
            VideoError::Model(_) => "the face model failed".to_string(),
            VideoError::Gallery(_) => "the gallery could not be read".to_string(),
            VideoError::Corrupt(_) => "a stored object of the video path is unreadable".to_string(),
        }
    }
}

/// What one handler did with one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The video was split; its frames and manifest are in stage-1.
    Split {
        /// Video stem.
        stem: String,
        /// Number of frames written.
        frames: usize,
    },
    /// A frame was recognised and its result written.
    Recognized {
        /// Video stem.
        stem: String,
        /// Frame index.
        index: usize,
        /// Names of the faces found, largest first (`Unknown` for faces
        /// nobody enrolled matches); empty when there is no face.
        names: Vec<String>,
        /// `Some(result)` when this invocation completed the video and wrote
        /// its `<stem>.txt` (the name) or `<stem>.error`.
        video_result: Option<String>,
    },
    /// The input is unusable; the reason was recorded in the output bucket
    /// (`<stem>.error` or `<stem>/output-NN.error`).
    Failed {
        /// Stem the failure is recorded under.
        stem: String,
        /// Why.
        reason: String,
    },
    /// Nothing to do (another bucket, not a frame, object gone).
    Ignored {
        /// Why.
        reason: String,
    },
}

impl Outcome {
    /// Short label for logs and metrics: `ok`, `failed` or `ignored`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Split { .. } | Outcome::Recognized { .. } => "ok",
            Outcome::Failed { .. } => "failed",
            Outcome::Ignored { .. } => "ignored",
        }
    }
}

/// Written by the splitter to `<prefix>-stage-1/<stem>/manifest.json`
/// before any frame, so the recognizer knows when a video is complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Key of the video in the input bucket.
    pub video_key: String,
    /// Number of frames (`output-00.jpg` .. `output-{frames-1}.jpg`).
    pub frames: usize,
    /// The sampling used.
    pub sampling: String,
}

/// Body of `<stem>.txt` when no known person was found.
pub const UNKNOWN: &str = "Unknown";
