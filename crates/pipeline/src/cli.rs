//! Command-line pieces shared by the binaries (`facefleet`, `web-tier`,
//! `app-tier`, `autoscaler`): flag groups with environment fallbacks, the
//! ONE place where a backend is chosen, and the process runners.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use facefleet_embedded::ProcessFleet;
use facefleet_model::{ModelConfig, RecognizerKind};
use facefleet_ports::Names;
use tokio_util::sync::CancellationToken;

use crate::autoscaler::ScalePolicy;
use crate::backend::{self, BackendKind, Deployment};
use crate::model_engine::ModelEngine;
use crate::upload::ImageLimits;
use crate::web::{self, EnrollerFactory, WebConfig, WebState};
use crate::worker::{Worker, WorkerConfig};

/// Where the pipeline's state lives.
#[derive(clap::Args, Debug, Clone)]
pub struct BackendArgs {
    /// Backend of the buckets and queues.
    #[arg(long, env = "FACEFLEET_BACKEND", default_value = "embedded")]
    pub backend: BackendKind,
    /// Data folder of the embedded backend.
    #[arg(long, env = "FACEFLEET_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Prefix every resource is named from (`<prefix>-in-bucket`, ...).
    #[arg(long, env = "FACEFLEET_PREFIX", default_value = Names::DEFAULT_PREFIX)]
    pub prefix: String,
    /// AWS connection (backend `aws`; builds with the `aws` feature).
    #[cfg(feature = "aws")]
    #[command(flatten)]
    pub aws: facefleet_aws::cli::AwsArgs,
}

/// The error of `--backend aws` in a build without the AWS backend.
#[cfg(not(feature = "aws"))]
fn no_aws() -> anyhow::Error {
    anyhow::anyhow!(
        "this build has no AWS backend; rebuild with it: `cargo build --release -p facefleet --features aws` (see docs/DEPLOY_AWS.md)"
    )
}

impl BackendArgs {
    /// Opens the chosen backend's buckets and queues (no fleet). This is
    /// the one place a backend is chosen.
    pub async fn connect(&self) -> anyhow::Result<Deployment> {
        let names = Names::new(&self.prefix);
        match self.backend {
            BackendKind::Embedded => backend::embedded(&self.data_dir, names),
            #[cfg(feature = "aws")]
            BackendKind::Aws => {
                let (store, queue) = facefleet_aws::connect(&self.aws.options()).await;
                Ok(Deployment { names, store, queue, fleet: None })
            }
            #[cfg(not(feature = "aws"))]
            BackendKind::Aws => Err(no_aws()),
        }
    }

    /// The same flags, to hand to a worker process (AWS credentials travel
    /// in the inherited environment).
    pub fn to_args(&self) -> anyhow::Result<Vec<String>> {
        let mut args = match self.backend {
            BackendKind::Embedded => {
                let dir = std::path::absolute(&self.data_dir).context("resolving the data folder")?;
                vec!["--backend".into(), "embedded".into(), "--data-dir".into(), dir.display().to_string()]
            }
            #[cfg(feature = "aws")]
            BackendKind::Aws => {
                let aws = &self.aws;
                let mut a = vec!["--backend".to_string(), "aws".to_string()];
                for (flag, value) in [("--aws-endpoint", &aws.endpoint), ("--aws-region", &aws.region), ("--aws-profile", &aws.profile)] {
                    if let Some(v) = value {
                        a.extend([flag.to_string(), v.clone()]);
                    }
                }
                a.extend(["--aws-max-attempts".to_string(), aws.max_attempts.to_string()]);
                a.extend(["--aws-retry-mode".to_string(), aws.retry_mode.to_string()]);
                a
            }
            #[cfg(not(feature = "aws"))]
            BackendKind::Aws => return Err(no_aws()),
        };
        args.extend(["--prefix".to_string(), self.prefix.clone()]);
        Ok(args)
    }
}

/// Where workers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FleetKind {
    /// Local `app-tier` processes.
    Local,
    /// EC2 instances from the `<prefix>-app-tier` launch template.
    Ec2,
}

/// Face-model flags.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// Embedding network: `mobilefacenet` or `dlib-resnet`.
    #[arg(long, env = "FACEFLEET_RECOGNIZER", default_value = "mobilefacenet")]
    pub recognizer: RecognizerKind,
}

impl ModelArgs {
    /// The model configuration.
    pub fn config(&self) -> ModelConfig {
        ModelConfig::with_recognizer(self.recognizer)
    }
}

/// Web-tier flags.
#[derive(clap::Args, Debug, Clone)]
pub struct WebArgs {
    /// Address and port to listen on. Loopback by default; any other
    /// address needs an API key to exist (or `--insecure-open`).
    #[arg(long, env = "FACEFLEET_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: std::net::SocketAddr,
    /// Port to listen on (replaces the port of `--listen`).
    #[arg(long, env = "FACEFLEET_PORT")]
    pub port: Option<u16>,
    /// Serve everyone without an API key even on a non-loopback address
    /// while no key exists. Dangerous: anyone who can reach the port can
    /// enroll, delete and read.
    #[arg(long, env = "FACEFLEET_INSECURE_OPEN")]
    pub insecure_open: bool,
    /// A route served without an API key even when keys exist (repeat, or
    /// comma-separate). `--open-route /` keeps the course route open for
    /// its workload generator while the rest stays protected.
    #[arg(long = "open-route", env = "FACEFLEET_OPEN_ROUTES", value_delimiter = ',')]
    pub open_routes: Vec<String>,
    /// Largest accepted upload in bytes (larger: 413).
    #[arg(long, env = "FACEFLEET_MAX_UPLOAD_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub max_upload_bytes: usize,
    /// Bytes of uploads held in memory at once, over all requests (past
    /// it: 503).
    #[arg(long, env = "FACEFLEET_UPLOAD_BUDGET_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub upload_budget_bytes: usize,
    /// Largest accepted image side in pixels.
    #[arg(long, env = "FACEFLEET_MAX_IMAGE_SIDE", default_value_t = ImageLimits::default().max_side)]
    pub max_image_side: u32,
    /// Seconds a request waits for its result before a 504.
    #[arg(long, env = "FACEFLEET_REQUEST_TIMEOUT", default_value_t = 60.0)]
    pub request_timeout: f64,
    /// Requests handled at once by the whole server; more get 503.
    #[arg(long, env = "FACEFLEET_MAX_IN_FLIGHT", default_value_t = 512)]
    pub max_in_flight: usize,
    /// Seconds a client has to send its request headers.
    #[arg(long, env = "FACEFLEET_HEADER_TIMEOUT", default_value_t = 10.0)]
    pub header_timeout: f64,
    /// Seconds a client has to send a request body (408 after).
    #[arg(long, env = "FACEFLEET_BODY_TIMEOUT", default_value_t = 30.0)]
    pub body_timeout: f64,
    /// Open connections at once.
    #[arg(long, env = "FACEFLEET_MAX_CONNECTIONS", default_value_t = 8192)]
    pub max_connections: usize,
}

/// A positive, finite number of seconds, or an error naming the flag.
fn seconds(flag: &str, v: f64) -> anyhow::Result<Duration> {
    anyhow::ensure!(v.is_finite() && v > 0.0 && v <= 86_400.0, "--{flag} must be a number of seconds above 0 and at most 86400 (got {v})");
    Ok(Duration::from_secs_f64(v))
}

impl WebArgs {
    /// The address to listen on.
    pub fn addr(&self) -> std::net::SocketAddr {
        let mut a = self.listen;
        if let Some(p) = self.port {
            a.set_port(p);
        }
        a
    }

    /// The web-tier configuration; bad values are refused with a message.
    pub fn config(&self) -> anyhow::Result<WebConfig> {
        let side = self.max_image_side;
        anyhow::ensure!((16..=65_535).contains(&side), "--max-image-side must be between 16 and 65535 (got {side})");
        anyhow::ensure!(self.max_upload_bytes >= 1024, "--max-upload-bytes must be at least 1024 (got {})", self.max_upload_bytes);
        anyhow::ensure!(
            self.upload_budget_bytes >= self.max_upload_bytes,
            "--upload-budget-bytes ({}) must be at least --max-upload-bytes ({})",
            self.upload_budget_bytes,
            self.max_upload_bytes
        );
        anyhow::ensure!(self.max_in_flight >= 1, "--max-in-flight must be at least 1");
        anyhow::ensure!(self.max_connections >= 1, "--max-connections must be at least 1");
        for r in &self.open_routes {
            anyhow::ensure!(r.starts_with('/'), "--open-route takes a path such as `/` (got `{r}`)");
        }
        let body = seconds("body-timeout", self.body_timeout)?;
        Ok(WebConfig {
            max_upload_bytes: self.max_upload_bytes,
            image_limits: ImageLimits { max_side: side, max_pixels: (u64::from(side) * u64::from(side)).min(ImageLimits::default().max_pixels) },
            request_timeout: seconds("request-timeout", self.request_timeout)?,
            max_in_flight: self.max_in_flight,
            upload_budget_bytes: self.upload_budget_bytes,
            body_deadline: body,
            body_idle_timeout: body.min(Duration::from_secs(10)),
            header_timeout: seconds("header-timeout", self.header_timeout)?,
            max_connections: self.max_connections,
            ..WebConfig::default()
        })
    }

    /// Applies the access rules to `state` for a server on `addr`: open
    /// while no key exists only on loopback (or with `--insecure-open`);
    /// refuses to start on any other address with no key.
    pub async fn secure(&self, state: WebState, addr: std::net::SocketAddr) -> anyhow::Result<WebState> {
        state.keys().refresh().await.context("reading the API keys")?;
        let loopback = addr.ip().is_loopback();
        let has_keys = state.keys().any();
        if !loopback && !has_keys {
            anyhow::ensure!(
                self.insecure_open,
                "refusing to listen on {addr} with no API key: create one first with `facefleet keys create --scope admin` \
                 (same --data-dir or backend), or pass --insecure-open to serve everyone without a key"
            );
        }
        if self.insecure_open && !loopback {
            tracing::warn!("INSECURE: --insecure-open on {addr}: while no API key exists, anyone who can reach this port can enroll, delete and read");
        }
        if !self.open_routes.is_empty() {
            tracing::info!(routes = ?self.open_routes, "routes open without an API key");
        }
        Ok(state.with_access(loopback || self.insecure_open, self.open_routes.clone()))
    }
}

/// Worker flags.
#[derive(clap::Args, Debug, Clone)]
pub struct WorkerArgs {
    /// Seconds a received request stays invisible (renewed while working).
    #[arg(long, env = "FACEFLEET_VISIBILITY", default_value_t = 15.0)]
    pub visibility: f64,
    /// Attempts before a failing request is given up (error answer + DLQ);
    /// at most one less than the queue's dead-letter receive count (5), so
    /// that a request whose workers keep crashing is still answered.
    #[arg(id = "worker_max_attempts", long = "max-attempts", env = "FACEFLEET_MAX_ATTEMPTS", default_value_t = 3)]
    pub max_attempts: u32,
}

impl WorkerArgs {
    /// The worker configuration.
    pub fn config(&self) -> WorkerConfig {
        let vis = Duration::from_secs_f64(self.visibility.max(1.0));
        WorkerConfig { visibility: vis, heartbeat: vis / 3, max_attempts: self.max_attempts.clamp(1, crate::backend::MAX_RECEIVES - 1), ..WorkerConfig::default() }
    }
}

/// Autoscaler flags.
#[derive(clap::Args, Debug, Clone)]
pub struct ScalerArgs {
    /// Most workers at once.
    #[arg(long, env = "FACEFLEET_MAX_INSTANCES", default_value_t = 15)]
    pub max_instances: usize,
    /// Backlog messages per worker.
    #[arg(long, env = "FACEFLEET_PER_WORKER", default_value_t = 1)]
    pub per_worker: u64,
    /// Control-loop period in milliseconds.
    #[arg(long, env = "FACEFLEET_SCALE_POLL_MS", default_value_t = 250)]
    pub poll_ms: u64,
    /// Milliseconds the backlog must stay low before workers are stopped.
    #[arg(long, env = "FACEFLEET_SCALE_IN_DELAY_MS", default_value_t = 500)]
    pub scale_in_delay_ms: u64,
    /// Worker program (default: `app-tier` next to this program, else this
    /// program's `worker` subcommand); a `facefleet` binary is run with
    /// `worker`.
    #[arg(long, env = "FACEFLEET_WORKER_PROGRAM")]
    pub worker_program: Option<PathBuf>,
    /// How much nicer (Unix `nice`) local worker processes run than the web
    /// tier, so that busy workers never starve it of the CPU it needs to
    /// take uploads and hand answers back (0 to 19; local fleet only).
    #[arg(long, env = "FACEFLEET_WORKER_NICE", default_value_t = 10)]
    pub worker_nice: i32,
    /// Where workers run: local processes or EC2 instances (backend `aws`).
    #[arg(long, env = "FACEFLEET_FLEET", value_enum, default_value = "local")]
    pub fleet: FleetKind,
}

impl ScalerArgs {
    /// The scaling policy.
    pub fn policy(&self) -> ScalePolicy {
        ScalePolicy {
            per_worker: self.per_worker.max(1),
            max_instances: self.max_instances,
            scale_in_delay: Duration::from_millis(self.scale_in_delay_ms),
            poll: Duration::from_millis(self.poll_ms.max(10)),
        }
    }
}

/// The worker program and the arguments that select its worker mode:
/// `app-tier` beside the running executable when it exists, else the
/// running executable itself with `worker` (the `facefleet` binary).
pub fn default_worker_program() -> anyhow::Result<(PathBuf, Vec<String>)> {
    let me = std::env::current_exe().context("finding the running executable")?;
    let sibling = me.with_file_name(format!("app-tier{}", std::env::consts::EXE_SUFFIX));
    if sibling.is_file() && sibling != me {
        return Ok((sibling, vec![]));
    }
    let stem = me.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    anyhow::ensure!(
        stem == "facefleet",
        "cannot find the worker program `app-tier` next to {} (build it with `cargo build -p app-tier`, or pass --worker-program)",
        me.display()
    );
    Ok((me, vec!["worker".into()]))
}

/// A process fleet of workers over `backend` (logs in `<data-dir>/logs`).
pub fn process_fleet(program: Option<&Path>, backend: &BackendArgs, model: &ModelArgs) -> anyhow::Result<ProcessFleet> {
    let (program, mut args) = match program {
        // The `facefleet` binary runs a worker with its `worker` subcommand.
        Some(p) if p.file_stem().and_then(|s| s.to_str()) == Some("facefleet") => (p.to_path_buf(), vec!["worker".to_string()]),
        Some(p) => (p.to_path_buf(), vec![]),
        None => default_worker_program()?,
    };
    args.extend(backend.to_args()?);
    args.extend(["--recognizer".to_string(), model.recognizer.name().to_string()]);
    // Parallelism comes from worker processes: one compute thread each
    // avoids oversubscribing the cores (override with RAYON_NUM_THREADS).
    let env = vec![
        ("RUST_LOG".to_string(), std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into())),
        ("RAYON_NUM_THREADS".to_string(), std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "1".into())),
    ];
    let logs = std::path::absolute(backend.data_dir.join("logs"))?;
    let records = std::path::absolute(backend.data_dir.join("fleet"))?;
    tracing::info!(program = %program.display(), ?args, "worker program");
    Ok(ProcessFleet::new(program, args, env, logs).with_state_dir(records))
}

/// The worker fleet `scaler.fleet` asks for. `shutdown` stops local
/// workers (EC2 workers are left to the autoscaler's scale-in).
pub async fn make_fleet(backend: &BackendArgs, model: &ModelArgs, scaler: &ScalerArgs) -> anyhow::Result<(Arc<dyn facefleet_ports::Fleet>, Option<Arc<ProcessFleet>>)> {
    match scaler.fleet {
        FleetKind::Local => {
            let f = Arc::new(process_fleet(scaler.worker_program.as_deref(), backend, model)?.with_niceness(scaler.worker_nice));
            // Workers of an earlier `up` on this data folder that died
            // without stopping them (they also exit by themselves when
            // their parent dies): never more than max after a restart.
            let killed = f.kill_leftovers().await.context("stopping the workers of an earlier stack")?;
            if !killed.is_empty() {
                let list: Vec<String> = killed.iter().map(ToString::to_string).collect();
                tracing::warn!(workers = %list.join(", "), "killed workers left running by an earlier stack on this data folder");
            }
            Ok((f.clone(), Some(f)))
        }
        #[cfg(not(feature = "aws"))]
        FleetKind::Ec2 => Err(no_aws()),
        #[cfg(feature = "aws")]
        FleetKind::Ec2 => {
            anyhow::ensure!(backend.backend == BackendKind::Aws, "--fleet ec2 needs --backend aws");
            let clients = facefleet_aws::AwsClients::load(&backend.aws.options()).await;
            let f = facefleet_aws::ec2_fleet(&clients, &backend.prefix, scaler.max_instances, scaler.max_instances);
            Ok((Arc::new(f), None))
        }
    }
}

/// Logs to stderr with `RUST_LOG` filtering (default `info`); colours only
/// on a terminal. Every facefleet binary calls this first.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Cancels the returned token on SIGTERM or SIGINT (Ctrl-C).
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM");
                let _ = tokio::signal::ctrl_c().await;
                t.cancel();
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: stopping"),
        }
        t.cancel();
    });
    token
}

/// Loads the model on a blocking thread.
pub async fn load_engine(model: &ModelArgs) -> anyhow::Result<Arc<ModelEngine>> {
    let config = model.config();
    let engine = tokio::task::spawn_blocking(move || ModelEngine::load(&config)).await?.context("loading the face model")?;
    Ok(Arc::new(engine))
}

/// An enroller factory that loads the real model on first use.
pub fn model_enroller(model: &ModelArgs) -> EnrollerFactory {
    let config = model.config();
    Arc::new(move || match ModelEngine::load(&config) {
        Ok(e) => Ok(Arc::new(e) as Arc<dyn crate::engine::Enroller>),
        Err(e) => Err(e.to_string()),
    })
}

/// The app-tier process: one worker until `stop` (SIGTERM) fires; the job
/// in hand is finished first.
pub async fn run_worker(backend: &BackendArgs, model: &ModelArgs, worker: &WorkerArgs, stop: CancellationToken) -> anyhow::Result<()> {
    let dep = backend.connect().await?;
    let engine = load_engine(model).await?;
    let instance = std::env::var(facefleet_embedded::INSTANCE_NAME_ENV).unwrap_or_else(|_| "app-tier".into());
    tracing::info!(%instance, "model loaded; polling {}", dep.names.req_queue);
    Worker::new(dep, engine, worker.config()).run(stop).await;
    Ok(())
}

/// A web-tier process (no fleet: `running_instances` is not visible).
pub async fn run_web(backend: &BackendArgs, model: &ModelArgs, web_args: &WebArgs, stop: CancellationToken) -> anyhow::Result<()> {
    let dep = backend.connect().await?;
    backend::ensure_resources(&dep, Default::default()).await?;
    let addr = web_args.addr();
    let state = WebState::new(dep, web_args.config()?, Some(model_enroller(model)));
    let state = web_args.secure(state, addr).await?;
    let app = web::build_router(state.clone(), vec![]);
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
    tracing::info!("web tier listening on http://{}", listener.local_addr()?);
    web::serve(listener, &state, app, stop).await?;
    Ok(())
}

/// An autoscaler process owning a local process fleet.
pub async fn run_autoscaler(backend: &BackendArgs, model: &ModelArgs, scaler: &ScalerArgs, stop: CancellationToken) -> anyhow::Result<()> {
    let mut dep = backend.connect().await?;
    backend::ensure_resources(&dep, Default::default()).await?;
    let (fleet, local) = make_fleet(backend, model, scaler).await?;
    dep.fleet = Some(fleet);
    crate::autoscaler::run(dep, scaler.policy(), stop, Duration::from_secs(30)).await?;
    if let Some(local) = local {
        local.shutdown(Duration::from_secs(10)).await;
    }
    Ok(())
}
