//! `app-tier`: one worker process. Long-polls the request queue, runs the
//! face model, writes the output bucket, answers; SIGTERM finishes the jobs
//! in hand, then exits. Spawned by the autoscaler's fleet, which passes its
//! own settings in the environment variables of these flags.

use clap::Parser;
use facefleet_app::{run, WorkerSettings};

#[derive(Parser)]
#[command(name = "app-tier", version, about = "facefleet worker: request queue -> face model -> output bucket + response queue")]
struct Args {
    #[command(flatten)]
    settings: WorkerSettings,
}

/// No tokio runtime here: a worker template must fork with one thread
/// ([`run::worker_main`] starts the runtime).
fn main() -> anyhow::Result<()> {
    run::init_tracing();
    let a = Args::parse();
    run::worker_main(&a.settings)
}
