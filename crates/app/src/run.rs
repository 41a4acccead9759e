//! The process runners behind the binaries: one worker (`app-tier`), one
//! web tier (`web-tier`), one autoscaler (`autoscaler`), and what every
//! binary does first (logging, signals).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use facefleet_gallery::FaceEngine;
use facefleet_model::{ModelConfig, ModelError};
use facefleet_pipeline::backend::ensure_resources;
use facefleet_pipeline::web::{self, EngineFactory, WebState};
use facefleet_pipeline::worker::Worker;
use tokio_util::sync::CancellationToken;

use crate::backend::connect;
use crate::compute_slots::{ComputeSlots, SlottedEngine};
use crate::fleet::make_fleet;
use crate::model_engine::ModelEngine;
use crate::settings::{BackendArgs, ModelArgs, ScalerArgs, WebArgs, WorkerSettings};

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

/// The face model of a process, loaded once, on first use, and shared by
/// everything in the process that needs it (`up`'s enrollment and video
/// path).
#[derive(Clone)]
pub struct LazyEngine {
    config: ModelConfig,
    loaded: Arc<Mutex<Option<Arc<ModelEngine>>>>,
}

impl LazyEngine {
    /// A model of `model`'s settings, not loaded yet.
    pub fn new(model: &ModelArgs) -> Self {
        Self { config: model.config(), loaded: Arc::default() }
    }

    /// The model, loading it if it is not yet (blocking: call it from a
    /// blocking thread). Concurrent first calls load it once.
    pub fn get(&self) -> Result<Arc<ModelEngine>, ModelError> {
        let mut slot = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = slot.as_ref() {
            return Ok(e.clone());
        }
        let engine = Arc::new(ModelEngine::load(&self.config)?);
        *slot = Some(engine.clone());
        Ok(engine)
    }

    /// [`LazyEngine::get`] on a blocking thread.
    pub async fn load(&self) -> anyhow::Result<Arc<ModelEngine>> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.get()).await?.context("loading the face model")
    }

    /// The web tier's engine factory over this model.
    pub fn factory(&self) -> EngineFactory {
        let me = self.clone();
        Arc::new(move || me.get().map(|e| e as Arc<dyn FaceEngine>).map_err(|e| e.to_string()))
    }
}

/// Applies the access rules of `web` to `state` for a server on `addr`:
/// open while no key exists only on loopback (or with `--insecure-open`);
/// refuses to start on any other address with no key.
pub async fn secure(web: &WebArgs, state: WebState, addr: std::net::SocketAddr) -> anyhow::Result<WebState> {
    state.keys().refresh().await.context("reading the API keys")?;
    let loopback = addr.ip().is_loopback();
    if !loopback && !state.keys().any() {
        anyhow::ensure!(
            web.insecure_open,
            "refusing to listen on {addr} with no API key: create one first with `facefleet keys create --scope admin` \
             (same --data-dir or backend), or pass --insecure-open to serve everyone without a key"
        );
    }
    if web.insecure_open && !loopback {
        tracing::warn!("INSECURE: --insecure-open on {addr}: while no API key exists, anyone who can reach this port can enroll, delete and read");
    }
    if !web.open_routes.is_empty() {
        tracing::info!(routes = ?web.open_routes, "routes open without an API key");
    }
    Ok(state.with_access(loopback || web.insecure_open, web.open_routes.clone()))
}

/// A worker process's whole life, called by `main` before any tokio
/// runtime exists. Normally one worker ([`run_worker`] on a new runtime).
/// Started by a fleet as its worker template
/// ([`facefleet_embedded::worker_template`]): loads the model once, then
/// forks workers that share it, until the fleet goes.
pub fn worker_main(settings: &WorkerSettings) -> anyhow::Result<()> {
    if std::env::var_os(facefleet_embedded::worker_template::TEMPLATE_ENV).is_none() {
        return tokio::runtime::Runtime::new()?.block_on(async { run_worker(settings, shutdown_on_signals()).await });
    }
    let started = std::time::Instant::now();
    let engine = Arc::new(ModelEngine::load(&settings.model.config()).context("loading the face model")?);
    tracing::info!(
        recognizer = %settings.model.recognizer,
        simd = %facefleet_model::simd::simd_level(),
        model_ms = format!("{:.1}", started.elapsed().as_secs_f64() * 1e3),
        "worker template ready: forking workers on request"
    );
    facefleet_embedded::worker_template::serve(|_instance| {
        let runtime = match tokio::runtime::Runtime::new() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the worker's runtime");
                return 1;
            }
        };
        match runtime.block_on(async { run_worker_with(settings, Some(engine.clone()), shutdown_on_signals()).await }) {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "worker failed");
                1
            }
        }
    })
    .context("serving as the worker template")
}

/// The app-tier process: one worker until `stop` (SIGTERM) fires; the jobs
/// in hand are finished first.
pub async fn run_worker(settings: &WorkerSettings, stop: CancellationToken) -> anyhow::Result<()> {
    run_worker_with(settings, None, stop).await
}

/// [`run_worker`] with the model already loaded (`engine`, in a worker
/// forked from the template), or loading it (`None`).
async fn run_worker_with(settings: &WorkerSettings, engine: Option<Arc<ModelEngine>>, stop: CancellationToken) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let dep = connect(&settings.backend, None).await?;
    let connected_ms = started.elapsed().as_secs_f64() * 1e3;
    let forked = engine.is_some();
    let engine: Arc<dyn FaceEngine> = match engine {
        Some(e) => e,
        None => load_engine(&settings.model).await?,
    };
    let loaded_ms = started.elapsed().as_secs_f64() * 1e3 - connected_ms;
    let engine = match settings.worker.compute_slots {
        Some(n) if n > 0 => {
            let dir = settings.backend.data_dir.join("fleet").join("compute-slots");
            let slots = ComputeSlots::open(&dir, usize::from(n)).with_context(|| format!("opening the compute slots in {}", dir.display()))?;
            Arc::new(SlottedEngine::new(engine, slots)) as Arc<dyn FaceEngine>
        }
        _ => engine,
    };
    let instance = std::env::var(facefleet_embedded::INSTANCE_NAME_ENV).unwrap_or_else(|_| "app-tier".into());
    tracing::info!(
        %instance,
        recognizer = %settings.model.recognizer,
        threshold = engine.threshold(),
        min_face = settings.model.min_face(),
        simd = %facefleet_model::simd::simd_level(),
        forked,
        connect_ms = format!("{connected_ms:.1}"),
        model_ms = format!("{loaded_ms:.1}"),
        "model loaded; polling {}",
        dep.names.req_queue
    );
    Worker::new(dep, engine, settings.worker.config()).run(stop).await;
    Ok(())
}

/// A web-tier process (no fleet: `running_instances` is not visible). The
/// model is loaded on the first enrollment.
pub async fn run_web(backend: &BackendArgs, model: &ModelArgs, web_args: &WebArgs, stop: CancellationToken) -> anyhow::Result<()> {
    let config = web_args.config()?;
    let dep = connect(backend, None).await?;
    ensure_resources(&dep, Default::default()).await.context("creating buckets and queues")?;
    let addr = web_args.addr();
    let state = WebState::new(dep, config, Some(LazyEngine::new(model).factory()));
    let state = secure(web_args, state, addr).await?;
    let app = web::build_router(state.clone(), vec![]);
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
    tracing::info!("web tier listening on http://{}", listener.local_addr()?);
    web::serve(listener, &state, app, stop).await?;
    Ok(())
}

/// An autoscaler process owning the worker fleet; its workers run with
/// `settings`.
pub async fn run_autoscaler(settings: &WorkerSettings, scaler: &ScalerArgs, stop: CancellationToken) -> anyhow::Result<()> {
    let (fleet, local) = make_fleet(settings, scaler).await?;
    let dep = connect(&settings.backend, Some(fleet)).await?;
    ensure_resources(&dep, Default::default()).await.context("creating buckets and queues")?;
    let scaled = facefleet_pipeline::autoscaler::run(dep, scaler.policy(), stop, Duration::from_secs(30)).await;
    if let Some(local) = local {
        local.shutdown(Duration::from_secs(10)).await;
    }
    scaled.context("autoscaler")?;
    Ok(())
}
