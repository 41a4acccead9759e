//! `facefleet up`: the whole elastic stack: web tier, autoscaler and (on
//! demand) `app-tier` workers; by default on the embedded backends in
//! `--data-dir` with local worker processes (`--backend aws`, `--fleet ec2`
//! for AWS).

use std::time::Duration;

use anyhow::Context;
use axum::Router;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::backend::{self, Deployment};
use crate::cli::{make_fleet, model_enroller, BackendArgs, ModelArgs, ScalerArgs, WebArgs};
use crate::web::{self, WebState};

/// A task started beside the stack (e.g. the video path's local trigger):
/// it gets the deployment and a token that fires on shutdown.
pub type ExtraTask = Box<dyn FnOnce(Deployment, CancellationToken) -> BoxFuture<'static, anyhow::Result<()>> + Send>;

/// Routes merged into the web tier (e.g. `POST /v1/videos`), built over
/// the stack's own deployment.
pub type ExtraRoutes = Box<dyn FnOnce(&Deployment) -> Router + Send>;

/// What other parts of facefleet add to `up`.
#[derive(Default)]
pub struct Extras {
    /// Routers merged into the web tier.
    pub routes: Vec<ExtraRoutes>,
    /// Background tasks run for the stack's lifetime.
    pub tasks: Vec<ExtraTask>,
    /// Facts for the start-up banner and `GET /v1/status` (e.g.
    /// `("video", "on (ffmpeg /usr/bin/ffmpeg)")`).
    pub info: Vec<(String, String)>,
}

/// Everything `up` needs.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Backend and naming.
    pub backend: BackendArgs,
    /// Face model.
    pub model: ModelArgs,
    /// Web tier.
    pub web: WebArgs,
    /// Autoscaler.
    pub scaler: ScalerArgs,
}

/// Runs the stack until `stop` fires, then drains: the web tier finishes
/// its requests, workers finish their jobs and exit.
pub async fn up(opts: &UpOptions, extras: Extras, stop: CancellationToken) -> anyhow::Result<()> {
    let mut dep = opts.backend.connect().await?;
    backend::ensure_resources(&dep, Default::default()).await.context("creating buckets and queues")?;
    let (fleet, local) = make_fleet(&opts.backend, &opts.model, &opts.scaler).await?;
    dep.fleet = Some(fleet);

    let addr = opts.web.addr();
    let state = WebState::new(dep.clone(), opts.web.config()?, Some(model_enroller(&opts.model)));
    let state = opts.web.secure(state, addr).await?;
    let info = stack_info(opts, &state, extras.info);
    let state = state.with_info(info.clone());
    let routes = extras.routes.into_iter().map(|build| build(&dep)).collect();
    let app = web::build_router(state.clone(), routes);
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
    let addr = listener.local_addr()?;

    let scaler = tokio::spawn(crate::autoscaler::run_with_wake(
        dep.clone(),
        opts.scaler.policy(),
        stop.child_token(),
        Duration::from_secs(60),
        state.request_arrivals(),
    ));
    let mut tasks = Vec::new();
    for t in extras.tasks {
        let task = t(dep.clone(), stop.child_token());
        // Said when it happens, with its causes, not at shutdown: the part
        // of the stack the task runs (e.g. the video path) is down.
        tasks.push(tokio::spawn(async move {
            if let Err(e) = task.await {
                tracing::error!(error = format!("{e:#}"), "extra task failed; its part of the stack is not running");
            }
        }));
    }
    print_banner(&format!("http://{addr}"), &info);
    let served = web::serve(listener, &state, app, stop.clone()).await;
    stop.cancel();
    match scaler.await {
        Ok(Err(e)) => tracing::warn!(error = %e, "autoscaler failed"),
        Err(e) => tracing::warn!(error = %e, "autoscaler panicked"),
        Ok(Ok(())) => {}
    }
    if let Some(local) = local {
        local.shutdown(Duration::from_secs(10)).await;
    }
    for t in tasks {
        if let Err(e) = t.await {
            tracing::warn!(error = %e, "extra task panicked");
        }
    }
    served.context("web tier")?;
    tracing::info!("facefleet stopped");
    Ok(())
}

/// What this stack is, for people: the start-up banner and `/v1/status`.
fn stack_info(opts: &UpOptions, state: &WebState, extra: Vec<(String, String)>) -> Vec<(String, String)> {
    let b = &opts.backend;
    let backend = match b.backend {
        backend::BackendKind::Embedded => {
            let dir = std::path::absolute(&b.data_dir).unwrap_or_else(|_| b.data_dir.clone());
            format!("embedded, data in {}", dir.display())
        }
        backend::BackendKind::Aws => "aws (S3, SQS)".to_string(),
    };
    let kind = opts.model.recognizer;
    let recognizer = format!("{} (match threshold {:.2})", kind.name(), facefleet_model::default_threshold(kind));
    let fleet = format!("{:?} workers, 0..{}", opts.scaler.fleet, opts.scaler.max_instances).to_lowercase();
    let keys = if state.keys().any() {
        "required (x-api-key or Authorization: Bearer)".to_string()
    } else if state.access.open_without_keys {
        "open: no API key exists yet (`facefleet keys create --scope admin` to protect it)".to_string()
    } else {
        "required, and none exists yet: every route but /healthz answers 401".to_string()
    };
    let mut info = vec![
        ("backend".to_string(), backend),
        ("prefix".to_string(), b.prefix.clone()),
        ("recognizer".to_string(), recognizer),
        ("cpu".to_string(), facefleet_model::simd::simd_path().to_string()),
        ("fleet".to_string(), fleet),
        ("api keys".to_string(), keys),
    ];
    if !state.access.open_routes.is_empty() {
        info.push(("open routes".to_string(), state.access.open_routes.join(", ")));
    }
    info.extend(extra);
    info
}

/// Prints what the person who started the stack has: where it listens and
/// what is on or off.
fn print_banner(url: &str, info: &[(String, String)]) {
    let width = info.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = format!("\nfacefleet is up on {url}\n");
    for (k, v) in info {
        out.push_str(&format!("  {k:<width$}  {v}\n"));
    }
    out.push_str(&format!("  try: curl -F inputFile=@photo.jpg {url}/   (status: {url}/v1/status)\n"));
    println!("{out}");
    tracing::info!(%url, "facefleet is up");
}
