//! The serverless video path inside `facefleet up`: the `POST /v1/videos`
//! routes and the local trigger that runs the video-splitting and
//! face-recognition handlers on uploads to `<prefix>-input`, with the
//! stack's own face model.

use std::path::{Path, PathBuf};

use anyhow::Context;
use facefleet_pipeline::backend::Deployment;
use facefleet_video::ffmpeg::Ffmpeg;
use facefleet_video::{http, local, TriggerConfig};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::run::LazyEngine;
use crate::settings::at_least;

/// Video flags of `facefleet up`.
#[derive(clap::Args, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoArgs {
    /// Do not watch `<prefix>-input` for videos.
    #[arg(long, env = "FACEFLEET_NO_VIDEO")]
    pub no_video: bool,
    /// Video invocations running at once, per function (1 to 64).
    #[arg(long, env = "FACEFLEET_VIDEO_CONCURRENCY", default_value_t = 5, value_parser = at_most_64)]
    pub video_concurrency: usize,
    /// The ffmpeg binary (default: `$FACEFLEET_FFMPEG`, next to this program, or `PATH`).
    #[arg(long)]
    pub ffmpeg: Option<PathBuf>,
}

fn at_most_64(s: &str) -> Result<usize, String> {
    let v = at_least::<1>(s)?;
    if v <= 64 {
        Ok(v)
    } else {
        Err("must be at most 64".into())
    }
}

/// Why video is off without an ffmpeg, and the fix.
pub const VIDEO_OFF: &str = "no ffmpeg found (looked at --ffmpeg, $FACEFLEET_FFMPEG, next to facefleet, PATH); \
    fix: start with scripts/up (provides one from PyPI imageio-ffmpeg), or `apt-get install ffmpeg`, \
    or set FACEFLEET_FFMPEG to an ffmpeg binary";

/// The video path of one stack, as decided at start: on with an ffmpeg, or
/// off (and why).
pub enum VideoPath {
    /// `--no-video`: no routes, no trigger.
    Disabled,
    /// No ffmpeg: `POST /v1/videos` answers 503 with the reason and the fix.
    NoFfmpeg,
    /// On: routes and trigger.
    On {
        /// The ffmpeg found.
        ffmpeg: Ffmpeg,
        /// Invocations at once, per function.
        concurrency: usize,
    },
}

impl VideoPath {
    /// Decides from the flags; the ffmpeg is located now.
    pub fn plan(args: &VideoArgs) -> Self {
        if args.no_video {
            return VideoPath::Disabled;
        }
        match Ffmpeg::locate(args.ffmpeg.as_deref()) {
            Ok(ffmpeg) => VideoPath::On { ffmpeg, concurrency: args.video_concurrency },
            Err(e) => {
                tracing::warn!(error = %e, "video is off: no ffmpeg");
                VideoPath::NoFfmpeg
            }
        }
    }

    /// The line of the start-up banner and `/v1/status`.
    pub fn info(&self) -> (String, String) {
        let v = match self {
            VideoPath::Disabled => "off (--no-video)".to_string(),
            VideoPath::NoFfmpeg => format!("OFF: {VIDEO_OFF}"),
            VideoPath::On { ffmpeg, .. } => format!("on (ffmpeg {})", ffmpeg.path().display()),
        };
        ("video".to_string(), v)
    }

    /// The `/v1/videos` routes over the stack's store (uploads are spooled
    /// under `data_dir`).
    pub fn routes(&self, dep: &Deployment, data_dir: &Path) -> Option<axum::Router> {
        match self {
            VideoPath::Disabled => None,
            VideoPath::NoFfmpeg => Some(video_off_routes()),
            VideoPath::On { .. } => {
                let api = http::VideoApi::new(dep.store.clone(), dep.names.clone()).with_spool_dir(data_dir.join("spool"));
                Some(http::router(api))
            }
        }
    }

    /// The OpenAPI document of the routes [`VideoPath::routes`] mounts.
    pub fn api_docs(&self) -> Vec<utoipa::openapi::OpenApi> {
        match self {
            VideoPath::Disabled => Vec::new(),
            VideoPath::NoFfmpeg | VideoPath::On { .. } => vec![<http::VideoApiDoc as utoipa::OpenApi>::openapi()],
        }
    }

    /// Runs the local trigger until `stop` fires, with `engine` (loaded
    /// here, on a blocking thread). Nothing to do when video is off.
    pub async fn run(self, dep: Deployment, engine: LazyEngine, stop: CancellationToken) -> anyhow::Result<()> {
        let VideoPath::On { ffmpeg, concurrency } = self else { return Ok(()) };
        let engine = engine.load().await.context("loading the face model for the video path")?;
        let config = TriggerConfig { concurrency, ffmpeg: Some(ffmpeg.path().to_path_buf()), ..TriggerConfig::default() };
        local::run_until(dep.store, dep.names, engine, config, stop.cancelled_owned()).await.context("video trigger")?;
        Ok(())
    }
}

/// `/v1/videos` routes of a stack without ffmpeg: 503 with the reason.
fn video_off_routes() -> axum::Router {
    async fn off() -> facefleet_pipeline::web::ApiError {
        facefleet_pipeline::web::ApiError::coded(axum::http::StatusCode::SERVICE_UNAVAILABLE, "video_off", format!("video is off on this server: {VIDEO_OFF}"))
    }
    axum::Router::new().route("/v1/videos", axum::routing::post(off)).route("/v1/videos/{stem}", axum::routing::get(off))
}
