//! `facefleet`: run the whole elastic stack on one machine (`up`), talk to
//! a running stack or a local gallery (`enroll`, `recognize`), load-test it
//! (`loadgen`), manage API keys, check a machine (`doctor`) and, built with
//! the `aws` feature, provision an AWS deployment. Everything is in
//! `facefleet-app`; this file only parses the command line.

use clap::{Parser, Subcommand};
use facefleet_app::commands::{self, EnrollArgs, KeysCommand, LoadgenArgs, RecognizeArgs};
use facefleet_app::{doctor, run, up, WorkerSettings};

#[derive(Parser)]
#[command(name = "facefleet", version, about = "Elastic face recognition: web tier, queues, autoscaled workers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the stack (web tier, autoscaler, workers on demand) on the
    /// embedded backends and serve until Ctrl-C.
    Up(up::UpArgs),
    /// Enroll photos of a person: into a running stack (`--url`) or a local
    /// gallery folder (`--gallery`). With `--labels CSV --dir DIR` (and
    /// `--url`), enroll every labelled photo of a folder.
    Enroll(EnrollArgs),
    /// Recognise photos: through a running stack (`--url`) or against a
    /// local gallery folder (`--gallery`). Prints `<stem>:<name>` lines, or
    /// all faces as JSON with `--json`.
    Recognize(RecognizeArgs),
    /// Send a folder of images with N requests in flight and check the
    /// answers against a labels CSV.
    Loadgen(LoadgenArgs),
    /// Manage API keys in a deployment's store (`--data-dir`, or
    /// `--backend aws ...`): every web tier of the deployment sees a change
    /// within seconds.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Check what `up` needs on this machine (CPU, ffmpeg, data folder,
    /// port, API keys, model, AWS resources) and say how to fix each
    /// problem. Exits with 1 when something cannot work.
    Doctor(doctor::DoctorArgs),
    /// Create or update every AWS resource of a deployment.
    #[cfg(feature = "aws")]
    Provision(facefleet_app::aws_cli::ProvisionArgs),
    /// Delete every AWS resource of a deployment (data included).
    #[cfg(feature = "aws")]
    Teardown(facefleet_app::aws_cli::TeardownArgs),
    /// Run one app-tier worker (what `up` spawns when `app-tier` is not
    /// installed beside this program).
    #[command(hide = true)]
    Worker(WorkerSettings),
}

/// Runs the command; an error is printed as one line (`error: what: why`),
/// without a backtrace even when `RUST_BACKTRACE` is set, and exits with 1.
fn main() -> std::process::ExitCode {
    run::init_tracing();
    match dispatch(Cli::parse().command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        // Before any tokio runtime: a worker template must fork with one
        // thread (`worker_main` starts the runtime).
        Command::Worker(settings) => run::worker_main(&settings),
        Command::Up(args) => block_on(async { up::up(&args, run::shutdown_on_signals()).await }),
        Command::Enroll(args) => block_on(commands::enroll(args)),
        Command::Recognize(args) => block_on(commands::recognize(args)),
        Command::Loadgen(args) => block_on(commands::loadgen(args)),
        Command::Keys { command } => block_on(commands::keys(command)),
        Command::Doctor(args) => block_on(doctor::run(args)),
        #[cfg(feature = "aws")]
        Command::Provision(a) => block_on(async { facefleet_app::aws_cli::run_provision(&a).await.map(|_| ()) }),
        #[cfg(feature = "aws")]
        Command::Teardown(a) => block_on(async { facefleet_app::aws_cli::run_teardown(&a).await.map(|_| ()) }),
    }
}

/// Runs `command` on a new multi-threaded tokio runtime.
fn block_on(command: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(command)
}
