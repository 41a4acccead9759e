//! `facefleet up`: the whole elastic stack: web tier, autoscaler, (on
//! demand) `app-tier` workers and the video path; by default on the
//! embedded backends in `--data-dir` with local worker processes
//! (`--backend aws`, `--fleet ec2` for AWS).
//!
//! One face model serves the process: enrollment and the video path share
//! it ([`LazyEngine`]); the workers are separate processes with their own.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use facefleet_pipeline::backend::ensure_resources;
use facefleet_pipeline::web::{self, WebState};
use tokio_util::sync::CancellationToken;

use crate::backend::connect;
use crate::fleet::make_fleet;
use crate::run::{secure, LazyEngine};
use crate::settings::{BackendKind, ScalerArgs, WebArgs, WorkerSettings};
use crate::video::{VideoArgs, VideoPath};

/// Everything `up` runs with.
#[derive(clap::Args, Debug, Clone)]
pub struct UpArgs {
    /// Backend, model and worker settings (the workers get exactly these).
    #[command(flatten)]
    pub settings: WorkerSettings,
    /// Web tier.
    #[command(flatten)]
    pub web: WebArgs,
    /// Autoscaler.
    #[command(flatten)]
    pub scaler: ScalerArgs,
    /// Video path.
    #[command(flatten)]
    pub video: VideoArgs,
}

/// Runs the stack until `stop` fires, then drains: the web tier finishes
/// its requests, workers finish their jobs and exit.
pub async fn up(opts: &UpArgs, stop: CancellationToken) -> anyhow::Result<()> {
    let web_config = opts.web.config()?;
    let (fleet, local) = make_fleet(&opts.settings, &opts.scaler).await?;
    let dep = connect(&opts.settings.backend, Some(fleet)).await?;
    ensure_resources(&dep, Default::default()).await.context("creating buckets and queues")?;

    let engine = LazyEngine::new(&opts.settings.model);
    let video = VideoPath::plan(&opts.video);
    let addr = opts.web.addr();
    let state = WebState::new(dep.clone(), web_config, Some(engine.factory()));
    let state = secure(&opts.web, state, addr).await?;
    let info = stack_info(opts, &state, video.info());
    let ffmpeg = video.ffmpeg_path().map(Path::to_path_buf);
    let state = state.with_info(info.clone()).with_api_docs(video.api_docs());
    let routes = video.routes(&dep, &opts.settings.backend.data_dir).into_iter().collect();
    let app = web::build_router(state.clone(), routes);
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
    let addr = listener.local_addr()?;

    // The fleet outlives `stop` until the web tier has drained: requests in
    // flight at shutdown are still answered by workers.
    let fleet_stop = CancellationToken::new();
    let scaler = tokio::spawn(facefleet_pipeline::autoscaler::run_with_wake(
        dep.clone(),
        opts.scaler.policy(),
        fleet_stop.clone(),
        Duration::from_secs(60),
        state.request_arrivals(),
    ));
    let video_task = {
        let (dep, engine, stop) = (dep.clone(), engine.clone(), stop.child_token());
        tokio::spawn(async move {
            // Said when it happens, with its causes, not at shutdown: the
            // video path is down, the rest of the stack serves on.
            if let Err(e) = video.run(dep, engine, stop).await {
                tracing::error!(error = format!("{e:#}"), "the video path failed and is not running");
            }
        })
    };
    print_banner(&format!("http://{addr}"), opts, &info, ffmpeg.as_deref());
    let served = web::serve(listener, &state, app, stop.clone()).await;
    stop.cancel();
    fleet_stop.cancel();
    match scaler.await {
        Ok(Err(e)) => tracing::warn!(error = %e, "autoscaler failed"),
        Err(e) => tracing::warn!(error = %e, "autoscaler panicked"),
        Ok(Ok(())) => {}
    }
    if let Some(local) = local {
        local.shutdown(Duration::from_secs(10)).await;
    }
    if let Err(e) = video_task.await {
        tracing::warn!(error = %e, "the video path panicked");
    }
    served.context("web tier")?;
    tracing::info!("facefleet stopped");
    Ok(())
}

/// What this stack is, for people: the start-up banner and `/v1/status`
/// (no paths: the data folder is on the banner only).
fn stack_info(opts: &UpArgs, state: &WebState, video: (String, String)) -> Vec<(String, String)> {
    let b = &opts.settings.backend;
    let backend = match b.backend {
        BackendKind::Embedded => "embedded (folder buckets, SQLite queue, local workers)".to_string(),
        BackendKind::Aws => "aws (S3, SQS)".to_string(),
    };
    let model = &opts.settings.model;
    let recognizer = format!(
        "{} (match threshold {:.2}, faces from {} px)",
        model.recognizer.name(),
        model.threshold(),
        model.min_face()
    );
    let fleet = format!("{:?} workers, 0..{}", opts.scaler.fleet, opts.scaler.max_instances).to_lowercase();
    let mut info = vec![
        ("backend".to_string(), backend),
        ("prefix".to_string(), b.prefix.clone()),
        ("recognizer".to_string(), recognizer),
        ("cpu".to_string(), facefleet_model::simd::simd_path().to_string()),
        ("fleet".to_string(), fleet),
        ("api keys".to_string(), state.access_summary().to_string()),
    ];
    if !opts.web.open_routes.is_empty() {
        info.push(("open routes".to_string(), opts.web.open_routes.join(", ")));
    }
    info.push(video);
    info
}

/// Prints what the person who started the stack has: where it listens,
/// where its data is (embedded), the ffmpeg in use and what is on or off.
fn print_banner(url: &str, opts: &UpArgs, info: &[(String, String)], ffmpeg: Option<&Path>) {
    let b = &opts.settings.backend;
    let mut lines = info.to_vec();
    if b.backend == BackendKind::Embedded {
        let dir = std::path::absolute(&b.data_dir).unwrap_or_else(|_| b.data_dir.clone());
        lines.insert(1, ("data".to_string(), dir.display().to_string()));
    }
    if let Some(ff) = ffmpeg {
        lines.push(("ffmpeg".to_string(), ff.display().to_string()));
    }
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = format!("\nfacefleet is up on {url}\n");
    for (k, v) in &lines {
        out.push_str(&format!("  {k:<width$}  {v}\n"));
    }
    out.push_str(&format!("  try: curl -F inputFile=@photo.jpg {url}/   (status: {url}/v1/status)\n"));
    println!("{out}");
    tracing::info!(%url, "facefleet is up");
}
