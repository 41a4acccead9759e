//! `facefleet`: run the whole elastic stack on one machine (`up`), talk to
//! a running stack or a local gallery (`enroll`, `recognize`), and load-test
//! it (`loadgen`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use facefleet_pipeline::cli::{self, BackendArgs, ModelArgs, ScalerArgs, WebArgs, WorkerArgs};
use facefleet_pipeline::{client, loadgen, up};

mod doctor;
mod video;

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
    Up {
        #[command(flatten)]
        backend: BackendArgs,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        web: WebArgs,
        #[command(flatten)]
        scaler: ScalerArgs,
        #[command(flatten)]
        video: video::VideoArgs,
    },
    /// Enroll photos of a person: into a running stack (`--url`) or a local
    /// gallery folder (`--gallery`). With `--labels CSV --dir DIR` (and
    /// `--url`), enroll every labelled photo of a folder.
    Enroll {
        /// Base URL of a running stack.
        #[arg(long, env = "FACEFLEET_URL", conflicts_with = "gallery")]
        url: Option<String>,
        /// Local gallery folder (holds gallery.bin).
        #[arg(long)]
        gallery: Option<PathBuf>,
        /// Labels CSV `Image,Results` naming the people of `--dir`.
        #[arg(long, requires = "dir")]
        labels: Option<PathBuf>,
        /// Folder of photos to enroll with `--labels`.
        #[arg(long, requires = "labels")]
        dir: Option<PathBuf>,
        #[command(flatten)]
        model: ModelArgs,
        /// Person's name (not with --labels).
        #[arg(required_unless_present = "labels")]
        name: Option<String>,
        /// Photos of the person.
        #[arg(required_unless_present = "labels")]
        images: Vec<PathBuf>,
    },
    /// Recognise photos: through a running stack (`--url`) or against a
    /// local gallery folder (`--gallery`). Prints `<stem>:<name>` lines, or
    /// all faces as JSON with `--json`.
    Recognize {
        /// Base URL of a running stack.
        #[arg(long, env = "FACEFLEET_URL", conflicts_with = "gallery")]
        url: Option<String>,
        /// Local gallery folder.
        #[arg(long)]
        gallery: Option<PathBuf>,
        /// Print every face as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        model: ModelArgs,
        /// Photos.
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Send a folder of images with N requests in flight and check the
    /// answers against a labels CSV.
    Loadgen {
        /// Base URL of the stack.
        #[arg(long, env = "FACEFLEET_URL", default_value = "http://127.0.0.1:8000")]
        url: String,
        /// Folder of images.
        #[arg(long)]
        dir: PathBuf,
        /// Labels CSV `Image,Results`.
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Requests in flight at once.
        #[arg(long, short = 'c', default_value_t = 100)]
        concurrency: usize,
        /// Send only the first N images.
        #[arg(long)]
        limit: Option<usize>,
        /// Per-request timeout in seconds.
        #[arg(long, default_value_t = 120.0)]
        timeout: f64,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
        /// Watch `GET /v1/status`: report peak instances and the scale-in
        /// time after the last answer.
        #[arg(long)]
        watch_scaling: bool,
    },
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
    Provision(facefleet_aws::cli::ProvisionArgs),
    /// Delete every AWS resource of a deployment (data included).
    #[cfg(feature = "aws")]
    Teardown(facefleet_aws::cli::TeardownArgs),
    /// Run one app-tier worker (what `up` spawns when `app-tier` is not
    /// installed beside this program).
    #[command(hide = true)]
    Worker {
        #[command(flatten)]
        backend: BackendArgs,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        worker: WorkerArgs,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key; its secret is printed alone on the last line, once.
    Create {
        /// What the key may do: recognize, enroll (and recognize), admin
        /// (everything).
        #[arg(long, value_enum)]
        scope: facefleet_pipeline::keys::Scope,
        /// A label for people.
        #[arg(long, default_value = "")]
        name: String,
        /// Requests per second allowed (default: no limit).
        #[arg(long)]
        rate: Option<u32>,
        /// Requests allowed in a burst (default: the rate).
        #[arg(long, requires = "rate")]
        burst: Option<u32>,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// List the keys (never their secrets).
    List {
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Revoke a key by id.
    Revoke {
        /// The key's id (`facefleet keys list`).
        id: String,
        #[command(flatten)]
        backend: BackendArgs,
    },
}

async fn keys_command(command: KeysCommand) -> anyhow::Result<()> {
    use facefleet_pipeline::keys;
    let connect = |backend: BackendArgs| async move {
        let dep = backend.connect().await?;
        dep.store.create_bucket(&dep.names.gallery_bucket).await.context("opening the deployment's store")?;
        anyhow::Ok(dep)
    };
    match command {
        KeysCommand::Create { scope, name, rate, burst, backend } => {
            let dep = connect(backend).await?;
            let new = keys::NewKey { name, scope, rate_per_sec: rate, burst };
            let (record, secret) = keys::create(dep.store.as_ref(), &dep.names.gallery_bucket, new).await?;
            let rate = record.rate_per_sec.map_or("no rate limit".to_string(), |r| format!("{r}/s, burst {}", record.burst.unwrap_or(r)));
            println!("created API key {} (scope {}, {rate}); send it as `x-api-key`. The secret is shown this once:", record.id, record.scope.name());
            println!("{secret}");
        }
        KeysCommand::List { backend } => {
            let dep = connect(backend).await?;
            let all = keys::list(dep.store.as_ref(), &dep.names.gallery_bucket).await?;
            println!("{:<12}  {:<9}  {:<12}  {:<10}  name", "id", "scope", "rate", "created");
            for k in &all {
                let rate = k.rate_per_sec.map_or("-".to_string(), |r| format!("{r}/s+{}", k.burst.unwrap_or(r)));
                println!("{:<12}  {:<9}  {:<12}  {:<10}  {}", k.id, k.scope.name(), rate, k.created_at, k.name);
            }
            if all.is_empty() {
                println!("(no keys: a loopback stack is open to everyone)");
            }
        }
        KeysCommand::Revoke { id, backend } => {
            let dep = connect(backend).await?;
            let r = keys::revoke(dep.store.as_ref(), &dep.names.gallery_bucket, &id).await?;
            println!("revoked API key {} ({}, scope {})", r.id, r.name, r.scope.name());
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cli::init_tracing();
    match Cli::parse().command {
        Command::Up { backend, model, web, scaler, video } => {
            let stop = cli::shutdown_on_signals();
            let extras = video::extras(&video, &model, &backend.data_dir);
            up::up(&up::UpOptions { backend, model, web, scaler }, extras, stop).await
        }
        Command::Keys { command } => keys_command(command).await,
        Command::Doctor(args) => doctor::run(args).await,
        #[cfg(feature = "aws")]
        Command::Provision(a) => facefleet_aws::cli::run_provision(&a).await.map(|_| ()),
        #[cfg(feature = "aws")]
        Command::Teardown(a) => facefleet_aws::cli::run_teardown(&a).await.map(|_| ()),
        Command::Worker { backend, model, worker } => cli::run_worker(&backend, &model, &worker, cli::shutdown_on_signals()).await,
        Command::Enroll { url, gallery, labels, dir, model, name, images } => {
            match (url, gallery) {
                (Some(url), None) => {
                    let c = client::http_client()?;
                    if let (Some(labels), Some(dir)) = (labels, dir) {
                        let (people, faces) = client::enroll_labelled(&c, &url, &dir, &labels).await?;
                        println!("enrolled {faces} photos of {people} people");
                    } else {
                        let name = name.context("NAME is required")?;
                        let v = client::enroll(&c, &url, &name, &images).await?;
                        println!("{v}");
                    }
                    Ok(())
                }
                (None, Some(gallery)) => {
                    anyhow::ensure!(labels.is_none(), "--labels needs --url");
                    let name = name.context("NAME is required")?;
                    let engine = cli::load_engine(&model).await?;
                    let report = tokio::task::spawn_blocking(move || {
                        facefleet_model::local::enroll(&gallery, &name, &images, engine.model())
                    })
                    .await??;
                    for (p, why) in &report.skipped {
                        eprintln!("skipped {}: {why}", p.display());
                    }
                    println!(
                        "enrolled {} photo(s) of {} ({} embeddings; {} people in {})",
                        report.enrolled.len(),
                        report.name,
                        report.person_embeddings,
                        report.people,
                        report.gallery_file.display()
                    );
                    Ok(())
                }
                _ => anyhow::bail!("give either --url URL (a running stack) or --gallery DIR (a local gallery)"),
            }
        }
        Command::Recognize { url, gallery, json, model, images } => match (url, gallery) {
            (Some(url), None) => {
                let c = client::http_client()?;
                let mut failed = 0;
                for img in &images {
                    match client::recognize(&c, &url, img, json).await {
                        Ok(out) => println!("{}", out.trim_end()),
                        Err(e) => {
                            failed += 1;
                            eprintln!("{}: {e:#}", img.display())
                        }
                    }
                }
                anyhow::ensure!(failed == 0, "{failed} of {} photos failed", images.len());
                Ok(())
            }
            (None, Some(gallery)) => {
                let engine = cli::load_engine(&model).await?;
                let results = tokio::task::spawn_blocking(move || facefleet_model::local::recognize(&gallery, &images, engine.model())).await??;
                if json {
                    println!("{}", facefleet_model::local::format_json(&results));
                } else {
                    for (stem, r) in &results {
                        println!("{}", facefleet_model::local::format_line(stem, r));
                    }
                }
                Ok(())
            }
            _ => anyhow::bail!("give either --url URL (a running stack) or --gallery DIR (a local gallery)"),
        },
        Command::Loadgen { url, dir, labels, concurrency, limit, timeout, quiet, watch_scaling } => {
            let opts = loadgen::LoadgenOptions {
                url,
                dir,
                labels,
                concurrency,
                limit,
                timeout: Duration::from_secs_f64(timeout),
                progress: !quiet,
            };
            let report = loadgen::run_with(&opts, watch_scaling).await?;
            println!("{report}");
            anyhow::ensure!(report.failed == 0 && report.wrong == 0, "{} failed, {} wrong", report.failed, report.wrong);
            Ok(())
        }
    }
}
