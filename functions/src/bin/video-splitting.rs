//! The video-splitting Lambda function: S3 object-created events of
//! `<prefix>-input` → frames in `<prefix>-stage-1`.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::s3::S3Event;
use clap::Parser;
use facefleet_functions::{init_tracing, s3_store, summary, FunctionArgs};
use facefleet_video::{Ffmpeg, SplitHandler};
use lambda_runtime::{service_fn, Error, LambdaEvent};

/// Settings of the video-splitting function.
#[derive(Parser)]
#[command(about = "The video-splitting Lambda function (reads S3 events from the Lambda runtime API)")]
struct Args {
    #[command(flatten)]
    function: FunctionArgs,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let args = Args::parse().function;
    let ffmpeg = Ffmpeg::locate(args.ffmpeg.as_deref())?.with_timeout(Duration::from_secs(args.ffmpeg_timeout_secs));
    // A sandbox runs one invocation at a time, so at start no split folder
    // is in use: remove what a killed (timed-out) invocation left in /tmp.
    match facefleet_video::temp::sweep(&std::env::temp_dir(), facefleet_video::temp::SPLIT_PREFIX, Duration::ZERO) {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "removed split folders left by an earlier invocation"),
        Err(e) => tracing::warn!(error = %e, "could not look for left-over split folders"),
    }
    tracing::info!(prefix = args.prefix, ffmpeg = %ffmpeg.path().display(), sampling = %args.sampling, "video-splitting ready");
    let handler = Arc::new(SplitHandler::new(s3_store().await, args.names(), ffmpeg, args.split_config()));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<S3Event>| {
        let handler = handler.clone();
        async move {
            // An Err makes Lambda retry the event (twice, asynchronous
            // invocation); bad input is recorded and returns Ok.
            let outcomes = handler.handle(&event.payload).await?;
            Ok::<_, Error>(summary(&outcomes))
        }
    }))
    .await
}
