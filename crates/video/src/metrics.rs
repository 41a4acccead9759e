//! Per-invocation logs and metrics of the video functions.
//!
//! Metrics (through the `metrics` facade; the process installs an exporter,
//! e.g. Prometheus in `facefleet up`):
//! - `facefleet_video_invocations_total{function, outcome}` (counter;
//!   outcome `ok`, `failed`, `ignored` or `error`),
//! - `facefleet_video_invocation_seconds{function}` (histogram),
//! - `facefleet_video_in_flight{function}` (gauge, local trigger only).

use std::time::Duration;

use crate::{Outcome, VideoError};

/// Name of the video-splitting function in logs and metrics.
pub const SPLIT: &str = "video-splitting";
/// Name of the face-recognition function in logs and metrics.
pub const RECOGNIZE: &str = "face-recognition";

/// Logs and records one handled object.
pub fn record(function: &'static str, key: &str, duration: Duration, result: &Result<Outcome, VideoError>) {
    let outcome = match result {
        Ok(o) => o.label(),
        Err(_) => "error",
    };
    metrics::counter!("facefleet_video_invocations_total", "function" => function, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("facefleet_video_invocation_seconds", "function" => function).record(duration.as_secs_f64());
    let ms = duration.as_secs_f64() * 1000.0;
    match result {
        Ok(Outcome::Split { stem, frames }) => {
            tracing::info!(function, key, outcome, duration_ms = ms, stem, frames, "invocation done")
        }
        Ok(Outcome::Recognized { stem, index, names, video_result }) => tracing::info!(
            function, key, outcome, duration_ms = ms, stem, index, names = ?names, video_result = ?video_result,
            "invocation done"
        ),
        Ok(Outcome::Failed { stem, reason }) => {
            tracing::warn!(function, key, outcome, duration_ms = ms, stem, reason, "input failed (recorded)")
        }
        Ok(Outcome::Ignored { reason }) => tracing::info!(function, key, outcome, duration_ms = ms, reason, "ignored"),
        Err(e) => tracing::error!(function, key, outcome, duration_ms = ms, error = %e, "invocation error"),
    }
}

/// Sets the in-flight gauge of `function`.
pub fn in_flight(function: &'static str, n: usize) {
    metrics::gauge!("facefleet_video_in_flight", "function" => function).set(n as f64);
}
