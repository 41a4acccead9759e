//! facefleet's Lambda functions and their deployment.
//!
//! - `video-splitting` and `face-recognition` (binaries): the handlers of
//!   `facefleet-video` behind `lambda_runtime`, on S3 through
//!   `facefleet_aws::S3Store`. Configured by environment variables (see
//!   [`FunctionArgs`]; face-recognition also reads the model settings of
//!   `facefleet_app::ModelArgs`, set by [`deploy`] from the deploying
//!   command's own).
//! - [`package`]: the Lambda zip of a function (`bootstrap` + a static
//!   `ffmpeg`), deterministic so that an unchanged build redeploys nothing.
//! - [`deploy`]: idempotent creation/update of the functions, their role,
//!   the S3 invoke permissions and the bucket notifications
//!   (`deploy-video` binary, `scripts/deploy-video`).

pub mod deploy;
pub mod package;

use std::path::PathBuf;
use std::sync::Arc;

use facefleet_ports::{Names, ObjectStore};
use facefleet_video::{Sampling, SplitConfig};

/// Settings of both functions, from the environment the deployment sets
/// (or flags when run by hand).
#[derive(Debug, Clone, clap::Args)]
pub struct FunctionArgs {
    /// Prefix of every resource name (`<prefix>-input`, `<prefix>-stage-1`...).
    #[arg(long, env = "FACEFLEET_PREFIX", default_value = Names::DEFAULT_PREFIX, value_parser = facefleet_app::settings::parse_prefix)]
    pub prefix: String,
    /// Largest accepted video in bytes (refused before download).
    #[arg(long, env = "FACEFLEET_MAX_VIDEO_BYTES", default_value_t = facefleet_video::split::DEFAULT_MAX_VIDEO_BYTES)]
    pub max_video_bytes: u64,
    /// Frame sampling: `even`, `even:N`, `course` or `fps:RATE[:MAX]`.
    #[arg(long, env = "FACEFLEET_SAMPLING", default_value = "even:10")]
    pub sampling: Sampling,
    /// ffmpeg binary (default: `$FACEFLEET_FFMPEG`, then `ffmpeg` next to
    /// this executable, as packaged, then `PATH`).
    #[arg(long)]
    pub ffmpeg: Option<PathBuf>,
    /// Limit on one ffmpeg run, in seconds.
    #[arg(long, env = "FACEFLEET_FFMPEG_TIMEOUT_SECS", default_value_t = 120)]
    pub ffmpeg_timeout_secs: u64,
}

impl FunctionArgs {
    /// Resource names from the prefix.
    pub fn names(&self) -> Names {
        Names::new(&self.prefix)
    }

    /// Splitter settings.
    pub fn split_config(&self) -> SplitConfig {
        SplitConfig { max_video_bytes: self.max_video_bytes, sampling: self.sampling.clone(), temp_dir: None }
    }
}

/// JSON logs for CloudWatch (level from `RUST_LOG`, default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().json().with_env_filter(filter).with_current_span(false).try_init();
}

/// The S3 object store from the standard AWS chain (the function's role
/// inside Lambda; `AWS_ENDPOINT_URL` for an emulator).
pub async fn s3_store() -> Arc<dyn ObjectStore> {
    let (store, _queue) = facefleet_aws::connect(&facefleet_aws::AwsOptions::default()).await;
    store
}

/// A short JSON summary of what an invocation did (the function's result).
pub fn summary(outcomes: &[facefleet_video::Outcome]) -> serde_json::Value {
    serde_json::Value::Array(outcomes.iter().map(|o| serde_json::Value::String(format!("{o:?}"))).collect())
}
