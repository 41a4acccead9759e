//! `autoscaler`: sizes a fleet of `app-tier` workers from the request
//! backlog (0..=max), logging a status table per change. Its workers run
//! with its own backend, model and worker settings.

use clap::Parser;
use facefleet_app::{run, ScalerArgs, WorkerSettings};

#[derive(Parser)]
#[command(name = "autoscaler", version, about = "facefleet autoscaler")]
struct Args {
    #[command(flatten)]
    settings: WorkerSettings,
    #[command(flatten)]
    scaler: ScalerArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    run::init_tracing();
    let a = Args::parse();
    run::run_autoscaler(&a.settings, &a.scaler, run::shutdown_on_signals()).await
}
