//! The face-recognition Lambda function: S3 object-created events of
//! `<prefix>-stage-1` frames → names in `<prefix>-output`. Its model
//! settings (`FACEFLEET_RECOGNIZER`, `FACEFLEET_THRESHOLD`,
//! `FACEFLEET_WEIGHTS_DIR`, `FACEFLEET_MIN_FACE`) are those of the command
//! that deployed it.

use aws_lambda_events::event::s3::S3Event;
use clap::Parser;
use facefleet_app::ModelArgs;
use facefleet_functions::{init_tracing, s3_store, summary, FunctionArgs};
use facefleet_gallery::FaceEngine;
use facefleet_video::RecognizeHandler;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use std::sync::Arc;

/// Settings of the face-recognition function.
#[derive(Parser)]
#[command(about = "The face-recognition Lambda function (reads S3 events from the Lambda runtime API)")]
struct Args {
    #[command(flatten)]
    function: FunctionArgs,
    #[command(flatten)]
    model: ModelArgs,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let args = Args::parse();
    let engine = facefleet_app::run::load_engine(&args.model).await?;
    tracing::info!(prefix = args.function.prefix, model = engine.model_id(), threshold = engine.threshold(), "face-recognition ready");
    let handler = Arc::new(RecognizeHandler::new(s3_store().await, args.function.names(), engine));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<S3Event>| {
        let handler = handler.clone();
        async move {
            let outcomes = handler.handle(&event.payload).await?;
            Ok::<_, Error>(summary(&outcomes))
        }
    }))
    .await
}
