//! Wires the serverless video path into `facefleet up`: the `POST /v1/videos`
//! routes and the local trigger that runs the video-splitting and
//! face-recognition handlers on uploads to `<prefix>-input`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use facefleet_model::FaceModel;
use facefleet_pipeline::cli::ModelArgs;
use facefleet_pipeline::up;
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

/// The routes and background task of the video path, for [`up::up`].
pub fn extras(args: &VideoArgs, model: &ModelArgs) -> up::Extras {
    if args.no_video {
        return up::Extras::default();
    }
    let config = TriggerConfig {
        concurrency: args.video_concurrency.max(1),
        ffmpeg: args.ffmpeg.clone(),
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
    // The `POST /v1/videos` routes over the stack's store.
    let routes: up::ExtraRoutes = Box::new(|dep| http::router(http::VideoApi::new(dep.store.clone(), dep.names.clone())));
    up::Extras {
        routes: vec![routes],
        tasks: vec![task],
    }
}
