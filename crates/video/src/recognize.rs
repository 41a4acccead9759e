//! The face-recognition handler: a frame in stage-1 → names in the output
//! bucket; the video's person once all its frames are done.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use aws_lambda_events::event::s3::S3Event;
use bytes::Bytes;
use facefleet_ports::{Names, ObjectStore};

use facefleet_gallery::cache::GalleryCache;
use facefleet_gallery::store::Gallery;
use facefleet_gallery::{EngineError, FaceEngine, DEFAULT_COLLECTION};

use crate::event::handle_objects;
use crate::keys;
use crate::{metrics, Manifest, Outcome, VideoError, UNKNOWN};

/// How often the gallery is checked for changes while frames arrive.
pub const GALLERY_REFRESH: std::time::Duration = std::time::Duration::from_secs(2);

/// Most faces recognised per frame, largest first.
const MAX_FACES_PER_FRAME: usize = 20;

/// Recognises the frames of `<prefix>-stage-1` into `<prefix>-output`.
/// Frames are matched against the `default` collection of the gallery,
/// the one behind the course route.
pub struct RecognizeHandler {
    store: Arc<dyn ObjectStore>,
    names: Names,
    engine: Arc<dyn FaceEngine>,
    gallery: GalleryCache,
}

impl RecognizeHandler {
    /// A handler reading frames and the gallery through `store`, with the
    /// face model `engine`.
    pub fn new(store: Arc<dyn ObjectStore>, names: Names, engine: Arc<dyn FaceEngine>) -> Self {
        let gallery = Gallery::new(store.clone(), &names.gallery_bucket);
        let gallery = GalleryCache::new(gallery, engine.model_id(), GALLERY_REFRESH);
        Self { store, names, engine, gallery }
    }

    /// The same handler checking the gallery for changes every `refresh`
    /// (0: before every frame).
    pub fn with_gallery_refresh(mut self, refresh: std::time::Duration) -> Self {
        let gallery = Gallery::new(self.store.clone(), &self.names.gallery_bucket);
        self.gallery = GalleryCache::new(gallery, self.engine.model_id(), refresh);
        self
    }

    /// Handles every record of an S3 event, logging and recording metrics
    /// for each. Returns the outcomes, or the first error that calls for a
    /// retry (after handling the other records; handling is idempotent).
    pub async fn handle(&self, event: &S3Event) -> Result<Vec<Outcome>, VideoError> {
        handle_objects(event, metrics::RECOGNIZE, |bucket, key| async move { self.recognize_object(&bucket, &key).await }).await
    }

    /// Recognises the frame `bucket`/`key` (`<stem>/output-NN.jpg`), writes
    /// `<stem>/output-NN.txt` (or `.error`), then completes the video if
    /// this was its last frame.
    pub async fn recognize_object(&self, bucket: &str, key: &str) -> Result<Outcome, VideoError> {
        if bucket != self.names.video_stage1 {
            return Ok(Outcome::Ignored { reason: format!("bucket `{bucket}` is not the stage-1 bucket") });
        }
        let Some((stem, index)) = keys::parse_frame_key(key) else {
            return Ok(Outcome::Ignored { reason: "not a frame (`<stem>/output-NN.jpg`)".into() });
        };
        let frame = match self.store.get(bucket, key).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(Outcome::Ignored { reason: "the frame no longer exists".into() }),
            Err(e) => return Err(e.into()),
        };
        let people = self.gallery.index(DEFAULT_COLLECTION).await?;
        let engine = self.engine.clone();
        let result = tokio::task::spawn_blocking(move || -> Result<Vec<Option<String>>, EngineError> {
            let threshold = engine.open_set_threshold(people.people());
            let faces = engine.analyze(&frame, MAX_FACES_PER_FRAME, true)?;
            Ok(faces
                .iter()
                .map(|f| people.search(&f.embedding, 1).into_iter().next().filter(|c| c.similarity >= threshold).map(|c| c.person))
                .collect())
        })
        .await
        .map_err(|e| VideoError::Model(EngineError::Failed { message: format!("recognition task failed: {e}"), source: None }))?;
        let out = &self.names.video_output;
        let (names, failure) = match result {
            Ok(faces) => {
                let names: Vec<String> =
                    faces.into_iter().map(|n| n.unwrap_or_else(|| UNKNOWN.to_string())).collect();
                let body = names.join("\n");
                self.store.put(out, &keys::frame_result_key(stem, index), Bytes::from(body)).await?;
                (names, None)
            }
            Err(EngineError::BadImage { message: reason }) => {
                tracing::info!(key, reason, "unusable frame");
                let reason = crate::redact::scrub_paths(&format!("frame {index} unusable: {reason}"));
                self.store.put(out, &keys::frame_error_key(stem, index), Bytes::from(reason.clone())).await?;
                (Vec::new(), Some(reason))
            }
            Err(e) => return Err(VideoError::Model(e)),
        };
        let video_result = self.complete_video(stem).await?;
        Ok(match failure {
            Some(reason) => Outcome::Failed { stem: stem.to_string(), reason },
            None => Outcome::Recognized { stem: stem.to_string(), index, names, video_result },
        })
    }

    /// Records that the frame `key` could not be recognised (used by the
    /// local trigger after its last retry), then completes the video if
    /// this was its last frame.
    pub async fn record_failure(&self, key: &str, reason: String) -> Result<Outcome, VideoError> {
        let Some((stem, index)) = keys::parse_frame_key(key) else {
            return Ok(Outcome::Ignored { reason: "not a frame".into() });
        };
        let out = &self.names.video_output;
        let reason = crate::redact::scrub_paths(&reason);
        self.store.put(out, &keys::frame_error_key(stem, index), Bytes::from(reason.clone())).await?;
        self.complete_video(stem).await?;
        Ok(Outcome::Failed { stem: stem.to_string(), reason })
    }

    /// If every frame of the video has a result, writes `<stem>.txt` (the
    /// most frequent known name, `Unknown` if none) — or `<stem>.error`
    /// when no frame could be recognised — unless it already exists.
    /// Returns what this call wrote.
    async fn complete_video(&self, stem: &str) -> Result<Option<String>, VideoError> {
        let manifest = match self.store.get(&self.names.video_stage1, &keys::manifest_key(stem)).await {
            Ok(b) => serde_json::from_slice::<Manifest>(&b)
                .map_err(|e| VideoError::Corrupt(format!("manifest of `{stem}` unreadable: {e}")))?,
            Err(e) if e.is_not_found() => {
                tracing::warn!(stem, "frame without manifest: cannot tell whether the video is complete");
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        let out = &self.names.video_output;
        let prefix = keys::frame_results_prefix(stem);
        let listed = self.store.list_all(out, &prefix).await?;
        let mut results: HashMap<usize, String> = HashMap::new();
        let mut failed: BTreeSet<usize> = BTreeSet::new();
        for meta in &listed {
            let file = format!("output-{}", &meta.key[prefix.len()..]);
            if let Some(i) = keys::parse_frame_result_file(&file) {
                if file.ends_with(".txt") {
                    results.insert(i, meta.key.clone());
                } else {
                    failed.insert(i);
                }
            }
        }
        let done = (0..manifest.frames).filter(|i| results.contains_key(i) || failed.contains(i)).count();
        if done < manifest.frames {
            return Ok(None);
        }
        let result_key = keys::video_result_key(stem);
        let error_key = keys::video_error_key(stem);
        if self.store.head(out, &result_key).await?.is_some() || self.store.head(out, &error_key).await?.is_some() {
            return Ok(None);
        }
        let mut frames: Vec<Vec<String>> = Vec::with_capacity(manifest.frames);
        for i in 0..manifest.frames {
            if let Some(k) = results.get(&i) {
                let body = match self.store.get(out, k).await {
                    Ok(b) => b,
                    Err(e) if e.is_not_found() => return Ok(None),
                    Err(e) => return Err(e.into()),
                };
                let text = String::from_utf8_lossy(&body);
                frames.push(text.lines().filter(|l| !l.is_empty()).map(str::to_string).collect());
            }
        }
        let (key, body) = if frames.is_empty() {
            (error_key, format!("none of the {} frames could be recognised", manifest.frames))
        } else {
            (result_key, most_frequent_known(&frames))
        };
        if self.store.put_if_absent(out, &key, Bytes::from(body.clone())).await? {
            Ok(Some(body))
        } else {
            Ok(None)
        }
    }
}

/// The known name seen most often over all faces of all frames (ties: the
/// one seen first); `Unknown` if there is none.
pub fn most_frequent_known(frames: &[Vec<String>]) -> String {
    let mut counts: HashMap<&str, (usize, usize)> = HashMap::new();
    let mut order = 0;
    for name in frames.iter().flatten() {
        if name.is_empty() || name == UNKNOWN {
            continue;
        }
        let e = counts.entry(name.as_str()).or_insert((0, order));
        e.0 += 1;
        order += 1;
    }
    counts
        .into_iter()
        .max_by(|a, b| a.1 .0.cmp(&b.1 .0).then(b.1 .1.cmp(&a.1 .1)))
        .map_or_else(|| UNKNOWN.to_string(), |(n, _)| n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn majority_of_known_names() {
        assert_eq!(most_frequent_known(&[]), "Unknown");
        assert_eq!(most_frequent_known(&[f(&[]), f(&["Unknown"])]), "Unknown");
        assert_eq!(most_frequent_known(&[f(&["Bob"]), f(&["Unknown", "Ann"]), f(&["Ann"])]), "Ann");
        // Ties go to the name seen first.
        assert_eq!(most_frequent_known(&[f(&["Bob"]), f(&["Ann"])]), "Bob");
        assert_eq!(most_frequent_known(&[f(&["Unknown"]), f(&["Unknown"]), f(&["Zed"])]), "Zed");
    }
}
