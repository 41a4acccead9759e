//! The serverless video path inside `facefleet up`: the `POST /v1/videos`
//! routes and the local trigger that runs the video-splitting and
//! face-recognition handlers on uploads to `<prefix>-input`, with the
//! stack's own face model.

use std::path::{Path, PathBuf};

use anyhow::Context;
use facefleet_pipeline::backend::Deployment;
use facefleet_video::ffmpeg::Ffmpeg;
use facefleet_video::{http, local, Sampling, SplitConfig, TriggerConfig};
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
    /// Which frames of a video are recognized: `even:N` (N frames spread
    /// over the video, 1 to 100), `course` (the course's ffmpeg command:
    /// every 10th frame, at most 10) or `fps:RATE[:MAX]` (ffmpeg's `fps`
    /// filter, at most MAX frames, default 10). As the Lambda function's
    /// `FACEFLEET_SAMPLING`.
    #[arg(long, env = "FACEFLEET_SAMPLING", default_value = "even:10")]
    pub sampling: Sampling,
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
        /// Which frames are recognized.
        sampling: Sampling,
    },
}

impl VideoPath {
    /// Decides from the flags; the ffmpeg is located now.
    pub fn plan(args: &VideoArgs) -> Self {
        if args.no_video {
            return VideoPath::Disabled;
        }
        match Ffmpeg::locate(args.ffmpeg.as_deref()) {
            Ok(ffmpeg) => VideoPath::On { ffmpeg, concurrency: args.video_concurrency, sampling: args.sampling.clone() },
            Err(e) => {
                tracing::warn!(error = %e, "video is off: no ffmpeg");
                VideoPath::NoFfmpeg
            }
        }
    }

    /// The line of the start-up banner and `/v1/status` (no path: the
    /// ffmpeg's is on the banner only, [`VideoPath::ffmpeg_path`]).
    pub fn info(&self) -> (String, String) {
        let v = match self {
            VideoPath::Disabled => "off (--no-video)".to_string(),
            VideoPath::NoFfmpeg => format!("OFF: {VIDEO_OFF}"),
            VideoPath::On { concurrency, sampling, .. } => {
                format!("on (frames {sampling}, {concurrency} videos at once per function)")
            }
        };
        ("video".to_string(), v)
    }

    /// The ffmpeg in use, for the operator's start-up banner.
    pub fn ffmpeg_path(&self) -> Option<&Path> {
        match self {
            VideoPath::On { ffmpeg, .. } => Some(ffmpeg.path()),
            VideoPath::Disabled | VideoPath::NoFfmpeg => None,
        }
    }

    /// The local trigger's settings; `None` when video is off.
    fn trigger_config(&self) -> Option<TriggerConfig> {
        let VideoPath::On { ffmpeg, concurrency, sampling } = self else { return None };
        Some(TriggerConfig {
            concurrency: *concurrency,
            ffmpeg: Some(ffmpeg.path().to_path_buf()),
            split: SplitConfig { sampling: sampling.clone(), ..SplitConfig::default() },
            ..TriggerConfig::default()
        })
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
        let Some(config) = self.trigger_config() else { return Ok(()) };
        let engine = engine.load().await.context("loading the face model for the video path")?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        video: VideoArgs,
    }

    fn parse(args: &[&str]) -> Result<VideoArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("up").chain(args.iter().copied())).map(|c| c.video)
    }

    #[test]
    fn sampling_flag_reaches_the_trigger_and_the_status_names_no_path() {
        assert_eq!(parse(&[]).unwrap().sampling, Sampling::Even { frames: 10 });
        let args = parse(&["--sampling", "fps:1/2:5", "--video-concurrency", "3"]).unwrap();
        assert_eq!(args.sampling, Sampling::Fps { rate: "1/2".into(), max_frames: 5 });
        for bad in ["even:0", "every", "fps:0"] {
            assert!(parse(&["--sampling", bad]).is_err(), "{bad}");
        }
        let ffmpeg = Ffmpeg::at("/opt/secret/place/ffmpeg");
        let on = VideoPath::On { ffmpeg, concurrency: args.video_concurrency, sampling: args.sampling };
        let config = on.trigger_config().expect("video is on");
        assert_eq!(config.split.sampling.to_string(), "fps:1/2:5");
        assert_eq!(config.concurrency, 3);
        assert_eq!(on.ffmpeg_path(), Some(Path::new("/opt/secret/place/ffmpeg")));
        let (_, fact) = on.info();
        assert_eq!(fact, "on (frames fps:1/2:5, 3 videos at once per function)");
        assert!(VideoPath::NoFfmpeg.trigger_config().is_none() && VideoPath::Disabled.ffmpeg_path().is_none());
        // The settings round-trip through their serialised form (`to_env`).
        let json = serde_json::to_string(&parse(&["--sampling", "course"]).unwrap()).unwrap();
        assert!(json.contains("\"sampling\":\"course\""), "{json}");
        let back: VideoArgs = serde_json::from_str(&json).unwrap();
        assert_eq!(back.sampling, Sampling::Course);
    }
}
