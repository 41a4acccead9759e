//! The face-recognition Lambda function: S3 object-created events of
//! `<prefix>-stage-1` frames → names in `<prefix>-output`.

use std::sync::Arc;

use aws_lambda_events::event::s3::S3Event;
use clap::Parser;
use facefleet_functions::{init_tracing, s3_store, summary, FunctionArgs};
use facefleet_model::{FaceModel, ModelConfig};
use facefleet_video::{ModelRecognizer, RecognizeHandler};
use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let args = FunctionArgs::parse();
    let model = tokio::task::spawn_blocking(|| FaceModel::load(&ModelConfig::default())).await??;
    tracing::info!(prefix = args.prefix, recognizer = %model.recognizer_kind(), "face-recognition ready");
    let recognizer = Arc::new(ModelRecognizer::new(Arc::new(model)));
    let handler = Arc::new(RecognizeHandler::new(s3_store().await, args.names(), recognizer));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<S3Event>| {
        let handler = handler.clone();
        async move {
            let outcomes = handler.handle(&event.payload).await?;
            Ok::<_, Error>(summary(&outcomes))
        }
    }))
    .await
}
