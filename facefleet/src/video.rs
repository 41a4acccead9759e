//! Wires the serverless video path into `facefleet up`: the `POST /v1/videos`
//! routes and the local trigger that runs the video-splitting and
//! face-recognition handlers on uploads to `<prefix>-input`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use facefleet_model::FaceModel;
use facefleet_pipeline::cli::ModelArgs;
use facefleet_pipeline::up;
use facefleet_video::ffmpeg::Ffmpeg;
use facefleet_video::{http, local, ModelRecognizer, TriggerConfig};

/// Video flags of `facefleet up`.
#[derive(clap::Args, Debug, Clone)]
pub struct VideoArgs {
    /// Do not watch `<prefix>-input` for videos.
    #[arg(long, env = "FACEFLEET_NO_VIDEO")]
    pub no_video: bool,
    /// Video invocations running at once, per function.
    #[arg(long, env = "FACEFLEET_VIDEO_CONCURRENCY", default_value_t = 5)]
    pub video_concurrency: usize,
    /// The ffmpeg binary (default: `$FACEFLEET_FFMPEG`, next to this program, or `PATH`).
    #[arg(long)]
    pub ffmpeg: Option<PathBuf>,
}

/// The routes and background task of the video path, for [`up::up`]. The
/// ffmpeg is located here, at start: without one, video is off, and
/// `POST /v1/videos` answers 503 with the reason and the fix (the banner and
/// `/v1/status` say so too).
pub fn extras(args: &VideoArgs, model: &ModelArgs, data_dir: &Path) -> up::Extras {
    if args.no_video {
        return up::Extras { info: vec![("video".into(), "off (--no-video)".into())], ..up::Extras::default() };
    }
    let ffmpeg = match Ffmpeg::locate(args.ffmpeg.as_deref()) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "video is off: no ffmpeg");
            let routes: up::ExtraRoutes = Box::new(|_| video_off_routes());
            return up::Extras { routes: vec![routes], info: vec![("video".into(), format!("OFF: {VIDEO_OFF}"))], ..up::Extras::default() };
        }
    };
    let info = vec![("video".into(), format!("on (ffmpeg {})", ffmpeg.path().display()))];
    let config = TriggerConfig {
        concurrency: args.video_concurrency.max(1),
        ffmpeg: Some(ffmpeg.path().to_path_buf()),
        ..TriggerConfig::default()
    };
    let model_config = model.config();
    let task: up::ExtraTask = Box::new(move |dep, stop| {
        Box::pin(async move {
            let model = tokio::task::spawn_blocking(move || FaceModel::load(&model_config))
                .await
                .context("loading the face model for the video path")??;
            let recognizer = Arc::new(ModelRecognizer::new(Arc::new(model)));
            local::run_until(dep.store, dep.names, recognizer, config, stop.cancelled_owned())
                .await
                .context("video trigger")?;
            Ok(())
        })
    });
    // The `POST /v1/videos` routes over the stack's store; uploads are
    // spooled next to the data.
    let spool = data_dir.join("spool");
    let routes: up::ExtraRoutes =
        Box::new(move |dep| http::router(http::VideoApi::new(dep.store.clone(), dep.names.clone()).with_spool_dir(spool)));
    up::Extras { routes: vec![routes], tasks: vec![task], info }
}

/// Why video is off, and the fix.
const VIDEO_OFF: &str = "no ffmpeg found (looked at --ffmpeg, $FACEFLEET_FFMPEG, next to facefleet, PATH); \
    fix: start with scripts/up (provides one from PyPI imageio-ffmpeg), or `apt-get install ffmpeg`, \
    or set FACEFLEET_FFMPEG to an ffmpeg binary";

/// `/v1/videos` routes of a stack without ffmpeg: 503 with the reason.
fn video_off_routes() -> axum::Router {
    async fn off() -> facefleet_pipeline::web::ApiError {
        facefleet_pipeline::web::ApiError::coded(axum::http::StatusCode::SERVICE_UNAVAILABLE, "video_off", format!("video is off on this server: {VIDEO_OFF}"))
    }
    axum::Router::new().route("/v1/videos", axum::routing::post(off)).route("/v1/videos/{stem}", axum::routing::get(off))
}
