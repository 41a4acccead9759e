//! Packages and deploys facefleet's video functions.
//!
//! - `facefleet-lambda package --bootstrap BIN [--ffmpeg FFMPEG] --out ZIP`:
//!   a deterministic Lambda zip (`bootstrap` + `ffmpeg`).
//! - `facefleet-lambda deploy [...]`: creates or updates the functions,
//!   their role, the S3 invoke permissions and the bucket notifications.
//!   Idempotent: a second run reports everything unchanged.
//!
//! `scripts/package-lambdas` and `scripts/deploy-video` wrap these.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use facefleet_functions::deploy::{deploy, DeployClients, DeploySpec};
use facefleet_functions::package::package;
use facefleet_ports::Names;

#[derive(Debug, Parser)]
#[command(about = "Package and deploy facefleet's video functions (AWS Lambda)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Writes a Lambda zip: the handler as `bootstrap`, plus `ffmpeg`.
    Package {
        /// The handler binary (built for x86_64 Linux).
        #[arg(long)]
        bootstrap: PathBuf,
        /// A static ffmpeg to ship next to it (video-splitting only).
        #[arg(long)]
        ffmpeg: Option<PathBuf>,
        /// The zip to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Creates or updates everything (idempotent).
    Deploy(DeployArgs),
}

#[derive(Debug, clap::Args)]
struct DeployArgs {
    /// Prefix of every resource name.
    #[arg(long, env = "FACEFLEET_PREFIX", default_value = Names::DEFAULT_PREFIX, value_parser = facefleet_app::settings::parse_prefix)]
    prefix: String,
    /// Zip of the video-splitting function.
    #[arg(long, default_value = "target/lambda/video-splitting.zip")]
    split_zip: PathBuf,
    /// Zip of the face-recognition function.
    #[arg(long, default_value = "target/lambda/face-recognition.zip")]
    recognize_zip: PathBuf,
    /// Memory of video-splitting, MB (128 to 10240).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(i32).range(128..=10_240))]
    split_memory_mb: i32,
    /// Memory of face-recognition, MB (128 to 10240).
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(i32).range(128..=10_240))]
    recognize_memory_mb: i32,
    /// Timeout of each function, seconds (1 to 900).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(i32).range(1..=900))]
    timeout_secs: i32,
    /// Frame sampling of video-splitting (`even:10`, `course`, `fps:RATE[:MAX]`).
    #[arg(long, default_value = "even:10")]
    sampling: facefleet_video::Sampling,
    /// Largest accepted video, bytes.
    #[arg(long, default_value_t = facefleet_video::split::DEFAULT_MAX_VIDEO_BYTES)]
    max_video_bytes: u64,
    /// AWS endpoint (an emulator); default: the standard chain.
    #[arg(long, env = "FACEFLEET_AWS_ENDPOINT")]
    endpoint: Option<String>,
    /// AWS region; default: the standard chain.
    #[arg(long)]
    region: Option<String>,
    /// The face model of face-recognition (`--recognizer`, `--threshold`,
    /// `--min-face`, `--weights-dir`, a folder inside the function's
    /// package): the same flags as `facefleet up`, passed to the function as
    /// its environment.
    #[command(flatten)]
    model: facefleet_app::ModelArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
    match Cli::parse().command {
        Command::Package { bootstrap, ffmpeg, out } => {
            if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            let p = package(&bootstrap, ffmpeg.as_deref(), &out).context("packaging")?;
            println!("{} ({} bytes, sha256 {})", p.path.display(), p.size, p.sha256);
        }
        Command::Deploy(args) => {
            for zip in [&args.split_zip, &args.recognize_zip] {
                anyhow::ensure!(zip.is_file(), "{} does not exist: run scripts/package-lambdas first", zip.display());
            }
            let opts = facefleet_aws::AwsOptions {
                endpoint: args.endpoint.clone(),
                region: args.region.clone(),
                ..Default::default()
            };
            let clients = DeployClients::load(&opts).await;
            let mut spec = DeploySpec::new(Names::new(&args.prefix), &args.split_zip, &args.recognize_zip);
            spec.split_memory_mb = args.split_memory_mb;
            spec.recognize_memory_mb = args.recognize_memory_mb;
            spec.timeout_secs = args.timeout_secs;
            spec.environment = HashMap::from([
                ("FACEFLEET_SAMPLING".to_string(), args.sampling.to_string()),
                ("FACEFLEET_MAX_VIDEO_BYTES".to_string(), args.max_video_bytes.to_string()),
            ]);
            spec.model = args.model.clone();
            let report = deploy(&clients, &spec).await.context("deploying the video functions")?;
            print!("{report}");
            if report.is_unchanged() {
                println!("everything was already up to date");
            }
        }
    }
    Ok(())
}
