//! `web-tier`: the HTTP front (course contract `POST /`, JSON API). Stores
//! uploads, queues requests and routes responses back; several web tiers
//! may share the same queues.

use clap::Parser;
use facefleet_app::{run, BackendArgs, ModelArgs, WebArgs};

#[derive(Parser)]
#[command(name = "web-tier", version, about = "facefleet web tier")]
struct Args {
    #[command(flatten)]
    backend: BackendArgs,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    web: WebArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    run::init_tracing();
    let a = Args::parse();
    run::run_web(&a.backend, &a.model, &a.web, run::shutdown_on_signals()).await
}
