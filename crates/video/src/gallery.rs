//! The gallery of enrolled people, read from the gallery bucket.
//!
//! The layout is the pipeline's (`facefleet_pipeline::gallery`): one JSON
//! object per enrolled face, `people/<name>/<uuid>.json`, holding
//! `{"name", "recognizer", "embedding"}`. The video functions only read it.
//! [`GalleryCache`] re-lists the bucket on every use and rebuilds the
//! recognizer's gallery only when the listing changed.

use std::collections::HashMap;
use std::sync::Arc;

use facefleet_ports::ObjectStore;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::recognize::{FrameRecognizer, RecognizeError};
use crate::VideoError;

/// Key prefix of the gallery entries.
pub const PEOPLE_PREFIX: &str = "people/";

/// One enrolled face, as the pipeline stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GalleryEntry {
    /// The person's name.
    pub name: String,
    /// Recognizer that produced the embedding (e.g. `mobilefacenet`).
    pub recognizer: String,
    /// The L2-normalised embedding.
    pub embedding: Vec<f32>,
}

/// Key of a new entry for `name` (`people/<name>/<id>.json`).
pub fn entry_key(name: &str, id: &str) -> String {
    format!("{PEOPLE_PREFIX}{name}/{id}.json")
}

fn is_entry_key(key: &str) -> bool {
    key.strip_prefix(PEOPLE_PREFIX)
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(name, file)| !name.is_empty() && file.ends_with(".json") && !file.contains('/'))
}

struct Cached<G> {
    fingerprint: Vec<(String, u64)>,
    entries: HashMap<String, GalleryEntry>,
    gallery: Arc<G>,
}

/// The recognizer's gallery, kept in step with the gallery bucket.
pub struct GalleryCache<R: FrameRecognizer> {
    bucket: String,
    state: Mutex<Option<Cached<R::Gallery>>>,
}

impl<R: FrameRecognizer> GalleryCache<R> {
    /// A cache of the gallery in `bucket` (nothing loaded yet).
    pub fn new(bucket: &str) -> Self {
        Self { bucket: bucket.to_string(), state: Mutex::new(None) }
    }

    /// The current gallery: lists the bucket and rebuilds when the listing
    /// changed. A missing bucket is an empty gallery; entries of another
    /// recognizer and unreadable entries are skipped with a warning.
    pub async fn current(&self, store: &dyn ObjectStore, recognizer: &R) -> Result<Arc<R::Gallery>, VideoError> {
        let listing: Vec<(String, u64)> = match store.list_all(&self.bucket, PEOPLE_PREFIX).await {
            Ok(l) => l.into_iter().filter(|m| is_entry_key(&m.key)).map(|m| (m.key, m.size)).collect(),
            Err(facefleet_ports::PortError::NoSuchBucket(_)) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let mut state = self.state.lock().await;
        if let Some(c) = state.as_ref() {
            if c.fingerprint == listing {
                return Ok(c.gallery.clone());
            }
        }
        let mut old = state.take().map(|c| c.entries).unwrap_or_default();
        let mut entries = HashMap::with_capacity(listing.len());
        for (key, _) in &listing {
            if let Some(e) = old.remove(key) {
                entries.insert(key.clone(), e);
                continue;
            }
            match store.get(&self.bucket, key).await {
                Ok(body) => match serde_json::from_slice::<GalleryEntry>(&body) {
                    Ok(e) => {
                        entries.insert(key.clone(), e);
                    }
                    Err(err) => tracing::warn!(key, %err, "ignoring unreadable gallery entry"),
                },
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        let kind = recognizer.recognizer();
        let mut keys: Vec<&String> = entries.keys().collect();
        keys.sort();
        let usable: Vec<GalleryEntry> = keys
            .into_iter()
            .map(|k| &entries[k])
            .filter(|e| {
                let ok = e.recognizer == kind;
                if !ok {
                    tracing::warn!(name = e.name, entry = e.recognizer, recognizer = kind, "ignoring gallery entry of another recognizer");
                }
                ok
            })
            .cloned()
            .collect();
        let gallery = Arc::new(recognizer.build_gallery(&usable).map_err(|e| match e {
            RecognizeError::BadFrame(m) | RecognizeError::Failed(m) => VideoError::Corrupt(format!("gallery: {m}")),
        })?);
        tracing::info!(faces = usable.len(), "video gallery loaded");
        *state = Some(Cached { fingerprint: listing, entries, gallery: gallery.clone() });
        Ok(gallery)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_keys() {
        assert!(is_entry_key(&entry_key("Paul", "1")));
        assert!(!is_entry_key("people/Paul/x/1.json"));
        assert!(!is_entry_key("people//1.json"));
        assert!(!is_entry_key("gallery.bin"));
    }
}
