//! Timings of the video path (the issue's "Done when" numbers).
//!
//! ```text
//! cargo run -p facefleet-app --example video_bench -- table [REPS]
//!     per video: the split handler (store → ffmpeg → store) vs the same
//!     ffmpeg commands run by hand, mean of REPS runs (default 5)
//! cargo run -p facefleet-app --example video_bench -- commands VIDEO OUT_DIR
//!     prints the exact ffmpeg commands the handler runs for VIDEO (for hyperfine)
//! cargo run -p facefleet-app --example video_bench -- split VIDEO
//!     one handler invocation on a fresh embedded store (for hyperfine)
//! cargo run -p facefleet-app --example video_bench -- burst
//!     the 8 videos uploaded at once through the local trigger with the real
//!     model: total time, per-invocation times, most invocations at once
//! ```
//! Videos come from `$FACEFLEET_SHARED_DIR/datasets/cse546/videos` (default
//! `../shared/...`), ffmpeg from `$FACEFLEET_FFMPEG` or PATH.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use facefleet_embedded::FsObjectStore;
use facefleet_ports::{Names, ObjectStore};
use facefleet_video::{spawn_trigger, Ffmpeg, Sampling, SplitConfig, SplitHandler, TriggerConfig};

fn videos_dir() -> PathBuf {
    std::env::var_os("FACEFLEET_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"))
        .join("datasets/cse546/videos")
}

fn videos() -> anyhow::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(videos_dir())
        .with_context(|| format!("reading {}", videos_dir().display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "mp4"))
        .collect();
    v.sort();
    Ok(v)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn handler_once(ff: &Ffmpeg, video: &Path) -> anyhow::Result<Duration> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn ObjectStore> = Arc::new(FsObjectStore::new(dir.path())?);
    let names = Names::new("bench");
    for b in [&names.video_input, &names.video_stage1, &names.video_output] {
        store.create_bucket(b).await?;
    }
    let key = video.file_name().unwrap().to_string_lossy().into_owned();
    store.put(&names.video_input, &key, std::fs::read(video)?.into()).await?;
    let split = SplitHandler::new(store, names.clone(), ff.clone(), SplitConfig::default());
    let start = Instant::now();
    let out = split.split_object(&names.video_input, &key).await?;
    let took = start.elapsed();
    anyhow::ensure!(matches!(out, facefleet_video::Outcome::Split { frames: 10, .. }), "{out:?}");
    Ok(took)
}

async fn by_hand_once(ff: &Ffmpeg, video: &Path) -> anyhow::Result<Duration> {
    let dir = tempfile::tempdir()?;
    let start = Instant::now();
    let n = ff.count_frames(video).await?;
    ff.run(Ffmpeg::split_args(video, dir.path(), &Sampling::default(), n)).await?;
    Ok(start.elapsed())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
    ).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ff = Ffmpeg::locate(None)?;
    // Timings are labelled with the machine; only `burst` runs the model.
    eprintln!("CPU: {}; model SIMD path: {}", facefleet_model::simd::cpu_model(), facefleet_model::simd::simd_summary());
    match args.first().map(String::as_str) {
        Some("table") => {
            let reps: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(5);
            println!("| video | handler ms (mean of {reps}) | ffmpeg by hand ms | overhead |");
            println!("|---|---|---|---|");
            let (mut th, mut tf) = (0.0, 0.0);
            for v in videos()? {
                let (mut h, mut f) = (0.0, 0.0);
                // Interleaved, so machine noise hits both alike.
                for _ in 0..reps {
                    h += ms(handler_once(&ff, &v).await?);
                    f += ms(by_hand_once(&ff, &v).await?);
                }
                let (h, f) = (h / reps as f64, f / reps as f64);
                th += h;
                tf += f;
                println!("| {} | {h:.0} | {f:.0} | {:+.1} % |", v.file_name().unwrap().to_string_lossy(), (h / f - 1.0) * 100.0);
            }
            println!("| all 8 | {th:.0} | {tf:.0} | {:+.1} % |", (th / tf - 1.0) * 100.0);
        }
        Some("commands") => {
            let video = PathBuf::from(args.get(1).context("VIDEO")?);
            let out = PathBuf::from(args.get(2).context("OUT_DIR")?);
            let n = ff.count_frames(&video).await?;
            let quote = |a: &std::ffi::OsString| format!("'{}'", a.to_string_lossy().replace('\'', "'\\''"));
            println!(
                "{} -nostdin -hide_banner -loglevel error -i 'file:{}' -map 0:v:0 -c copy -f null -progress pipe:1 - >/dev/null && {} {}",
                ff.path().display(),
                video.display(),
                ff.path().display(),
                Ffmpeg::split_args(&video, &out, &Sampling::default(), n).iter().map(quote).collect::<Vec<_>>().join(" ")
            );
        }
        Some("split") => {
            let video = PathBuf::from(args.get(1).context("VIDEO")?);
            let took = handler_once(&ff, &video).await?;
            eprintln!("handler {:.0} ms", ms(took));
        }
        Some("burst") => {
            let dir = tempfile::tempdir()?;
            let store: Arc<dyn ObjectStore> = Arc::new(FsObjectStore::new(dir.path())?);
            let names = Names::new("burst");
            let engine = Arc::new(facefleet_app::ModelEngine::load(&facefleet_model::ModelConfig::default())?);
            let trigger = spawn_trigger(store.clone(), names.clone(), engine, TriggerConfig::default()).await?;
            let vids = videos()?;
            let start = Instant::now();
            // "Uploaded at once": all eight puts in parallel.
            let mut puts = tokio::task::JoinSet::new();
            for v in &vids {
                let (store, bucket, v) = (store.clone(), names.video_input.clone(), v.clone());
                puts.spawn(async move {
                    let key = v.file_name().unwrap().to_string_lossy().into_owned();
                    store.put(&bucket, &key, std::fs::read(&v).unwrap().into()).await
                });
            }
            while let Some(r) = puts.join_next().await {
                r??;
            }
            let mut split_done = None;
            loop {
                let mut done = 0;
                for v in &vids {
                    let stem = v.file_stem().unwrap().to_string_lossy();
                    if store.head(&names.video_output, &format!("{stem}.txt")).await?.is_some() {
                        done += 1;
                    }
                }
                if split_done.is_none() && trigger.stats().split_invocations() >= vids.len() {
                    split_done = Some(start.elapsed());
                }
                if done == vids.len() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let total = start.elapsed();
            let stats = trigger.stats();
            trigger.shutdown().await;
            println!("8 videos uploaded at once (real model, concurrency limit 5 per function):");
            println!("  all 8 splits done after {:.2} s", split_done.unwrap_or(total).as_secs_f64());
            println!("  all 8 results after     {:.2} s", total.as_secs_f64());
            println!("  most video-splitting invocations at once: {}", stats.split_max_concurrency());
            println!("  most face-recognition invocations at once: {}", stats.recognize_max_concurrency());
            for v in &vids {
                let stem = v.file_stem().unwrap().to_string_lossy();
                let r = store.get(&names.video_output, &format!("{stem}.txt")).await?;
                println!("  {stem}.txt = {}", String::from_utf8_lossy(&r));
            }
        }
        _ => anyhow::bail!("usage: video_bench table [REPS] | commands VIDEO OUT_DIR | split VIDEO | burst"),
    }
    Ok(())
}
