//! `app-tier`: one worker process. Long-polls the request queue, runs the
//! face model, writes the output bucket, answers; SIGTERM finishes the job
//! in hand, then exits. Spawned by the autoscaler's fleet.

use clap::Parser;
use facefleet_pipeline::cli::{self, BackendArgs, ModelArgs, WorkerArgs};

#[derive(Parser)]
#[command(name = "app-tier", version, about = "facefleet worker: request queue -> face model -> output bucket + response queue")]
struct Args {
    #[command(flatten)]
    backend: BackendArgs,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    worker: WorkerArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cli::init_tracing();
    let a = Args::parse();
    cli::run_worker(&a.backend, &a.model, &a.worker, cli::shutdown_on_signals()).await
}
