//! `autoscaler`: sizes a local fleet of `app-tier` processes from the
//! request backlog (0..=max), logging a status table per change.

use clap::Parser;
use facefleet_pipeline::cli::{self, BackendArgs, ModelArgs, ScalerArgs};

#[derive(Parser)]
#[command(name = "autoscaler", version, about = "facefleet autoscaler")]
struct Args {
    #[command(flatten)]
    backend: BackendArgs,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    scaler: ScalerArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cli::init_tracing();
    let a = Args::parse();
    cli::run_autoscaler(&a.backend, &a.model, &a.scaler, cli::shutdown_on_signals()).await
}
