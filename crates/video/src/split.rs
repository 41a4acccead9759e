//! The video-splitting handler: input video → frames in stage-1.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use aws_lambda_events::event::s3::S3Event;
use bytes::Bytes;
use facefleet_ports::{Names, ObjectStore, PortError};

use crate::event::handle_objects;
use crate::ffmpeg::{Ffmpeg, Sampling};
use crate::keys::{self, check_video_key, safe_stem, video_stem};
use crate::{metrics, Manifest, Outcome, VideoError};

/// Default largest accepted video: 200 MB.
pub const DEFAULT_MAX_VIDEO_BYTES: u64 = 200 * 1000 * 1000;

/// Settings of the splitter.
#[derive(Debug, Clone)]
pub struct SplitConfig {
    /// Largest video accepted; a larger one is refused before it is
    /// downloaded (from the object's size).
    pub max_video_bytes: u64,
    /// Which frames to take.
    pub sampling: Sampling,
    /// Where temporary files go (the system's temporary directory if
    /// `None`; `/tmp` on Lambda). A folder set here is this stack's own:
    /// the local trigger removes every leftover `facefleet-split-*` in it at
    /// start; in the shared default only those untouched for an hour
    /// ([`crate::temp`]).
    pub temp_dir: Option<PathBuf>,
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self { max_video_bytes: DEFAULT_MAX_VIDEO_BYTES, sampling: Sampling::default(), temp_dir: None }
    }
}

/// Splits videos of `<prefix>-input` into frames in `<prefix>-stage-1`.
pub struct SplitHandler {
    store: Arc<dyn ObjectStore>,
    names: Names,
    ffmpeg: Ffmpeg,
    config: SplitConfig,
}

impl SplitHandler {
    /// A handler writing through `store` to the buckets of `names`.
    pub fn new(store: Arc<dyn ObjectStore>, names: Names, ffmpeg: Ffmpeg, config: SplitConfig) -> Self {
        Self { store, names, ffmpeg, config }
    }

    /// The resource names used.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// Handles every record of an S3 event, logging and recording metrics
    /// for each. Returns the outcomes, or the first error that calls for a
    /// retry (after handling the other records; handling is idempotent).
    pub async fn handle(&self, event: &S3Event) -> Result<Vec<Outcome>, VideoError> {
        handle_objects(event, metrics::SPLIT, |bucket, key| async move { self.split_object(&bucket, &key).await }).await
    }

    /// Splits the video `bucket`/`key`. Unusable input ends in a recorded
    /// failure (`Ok(Outcome::Failed)`); `Err` means: retry later.
    pub async fn split_object(&self, bucket: &str, key: &str) -> Result<Outcome, VideoError> {
        if bucket != self.names.video_input {
            return Ok(Outcome::Ignored { reason: format!("bucket `{bucket}` is not the input bucket") });
        }
        if let Err(reason) = check_video_key(key) {
            let reason = format!("unsafe video key {key:?}: {reason}");
            return self.fail(&safe_stem(key), reason).await;
        }
        let stem = video_stem(key).to_string();
        let Some(meta) = self.store.head(bucket, key).await? else {
            return Ok(Outcome::Ignored { reason: "the video no longer exists".into() });
        };
        clear_results(&*self.store, &self.names, &stem).await?;
        if meta.size == 0 {
            return self.fail(&stem, "empty file (0 bytes)".into()).await;
        }
        let limit = self.config.max_video_bytes;
        if meta.size > limit {
            let reason = format!("video too large: {} bytes, the limit is {limit} bytes", meta.size);
            return self.fail(&stem, reason).await;
        }
        let body = match self.store.get(bucket, key).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => {
                return Ok(Outcome::Ignored { reason: "the video no longer exists".into() })
            }
            Err(e) => return Err(e.into()),
        };
        if body.len() as u64 > limit {
            let reason = format!("video too large: {} bytes, the limit is {limit} bytes", body.len());
            return self.fail(&stem, reason).await;
        }

        // Registered while in use: the trigger's sweep removes only the
        // folders of a crashed process (`crate::temp`).
        let dir = crate::temp::Tracked::create(
            || {
                let mut tmp = tempfile::Builder::new();
                tmp.prefix(crate::temp::SPLIT_PREFIX);
                match &self.config.temp_dir {
                    Some(d) => tmp.tempdir_in(d),
                    None => tmp.tempdir(),
                }
            },
            tempfile::TempDir::path,
        )?;
        let input = dir.path().join("input");
        let frames_dir = dir.path().join("frames");
        tokio::fs::write(&input, &body).await?;
        drop(body);
        tokio::fs::create_dir(&frames_dir).await?;
        let started = Instant::now();
        let frames = match self.ffmpeg.split(&input, &frames_dir, &self.config.sampling).await {
            Ok(f) => f,
            Err(e) if e.is_input_error() => {
                // The detail names the temporary files: logged, not stored.
                tracing::info!(key, error = %e, "not a usable video");
                return self.fail(&stem, format!("not a usable video: {}", e.public_message())).await;
            }
            Err(e) => return Err(e.into()),
        };
        tracing::debug!(key, frames = frames.len(), ffmpeg_ms = started.elapsed().as_secs_f64() * 1000.0, "ffmpeg done");

        let manifest =
            Manifest { video_key: key.to_string(), frames: frames.len(), sampling: self.config.sampling.to_string() };
        let body = serde_json::to_vec(&manifest).expect("manifest serialises");
        self.store.put(&self.names.video_stage1, &keys::manifest_key(&stem), Bytes::from(body)).await?;

        // Upload in parallel; every task owns what it uses.
        let mut uploads = tokio::task::JoinSet::new();
        for (i, path) in frames.iter().enumerate() {
            let store = self.store.clone();
            let bucket = self.names.video_stage1.clone();
            let key = keys::frame_key(&stem, i);
            let path = path.clone();
            uploads.spawn(async move {
                let data = tokio::fs::read(&path).await?;
                store.put(&bucket, &key, Bytes::from(data)).await?;
                Ok::<_, VideoError>(())
            });
        }
        while let Some(joined) = uploads.join_next().await {
            joined.map_err(|e| VideoError::Io(std::io::Error::other(format!("frame upload task: {e}"))))??;
        }
        Ok(Outcome::Split { stem, frames: frames.len() })
    }

    /// Records `<stem>.error` with the reason, local paths replaced
    /// ([`crate::redact::scrub_paths`]): clients read it.
    async fn fail(&self, stem: &str, reason: String) -> Result<Outcome, VideoError> {
        let reason = crate::redact::scrub_paths(&reason);
        self.store
            .put(&self.names.video_output, &keys::video_error_key(stem), Bytes::from(reason.clone().into_bytes()))
            .await?;
        Ok(Outcome::Failed { stem: stem.to_string(), reason })
    }

    /// Records a failure for the video `key` that could not be handled
    /// (used by the local trigger after its last retry).
    pub async fn record_failure(&self, key: &str, reason: String) -> Result<Outcome, VideoError> {
        let stem = if check_video_key(key).is_ok() { video_stem(key).to_string() } else { safe_stem(key) };
        self.fail(&stem, reason).await
    }
}

/// Removes the results of the video `stem`: `<stem>.txt`, `<stem>.error`
/// and `<stem>/output-NN.*` in the output bucket, its frames and manifest in
/// stage-1. So a re-uploaded video gets a fresh result (`<stem>.txt` is
/// written once, with `put_if_absent`). Missing buckets hold nothing.
pub async fn clear_results(store: &dyn ObjectStore, names: &Names, stem: &str) -> Result<(), PortError> {
    let out = &names.video_output;
    for key in [keys::video_result_key(stem), keys::video_error_key(stem)] {
        delete_if_bucket(store, out, &key).await?;
    }
    for (bucket, prefix) in [(out, keys::frame_results_prefix(stem)), (&names.video_stage1, format!("{stem}/"))] {
        let listed = match store.list_all(bucket, &prefix).await {
            Ok(l) => l,
            Err(PortError::NoSuchBucket(_)) => continue,
            Err(e) => return Err(e),
        };
        for meta in listed {
            // Only our own files: `<stem>/output-NN.*` and the manifest.
            let file = &meta.key[prefix.len().min(meta.key.len())..];
            let ours = if bucket == out {
                keys::parse_frame_result_file(&format!("output-{file}")).is_some()
            } else {
                keys::parse_frame_key(&meta.key).is_some_and(|(s, _)| s == stem) || file == "manifest.json"
            };
            if ours {
                store.delete(bucket, &meta.key).await?;
            }
        }
    }
    Ok(())
}

async fn delete_if_bucket(store: &dyn ObjectStore, bucket: &str, key: &str) -> Result<(), PortError> {
    match store.delete(bucket, key).await {
        Ok(()) | Err(PortError::NoSuchBucket(_)) => Ok(()),
        Err(e) => Err(e),
    }
}
