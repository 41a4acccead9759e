//! The shared gallery of enrolled people, kept in the object store.
//!
//! Layout of the gallery bucket (`<prefix>-gallery`): one small JSON object
//! per enrolled face, `people/<name>/<uuid>.json`, holding a
//! [`GalleryEntry`]. Enrolling only adds objects and removing a person only
//! deletes that person's objects, so concurrent enrollments from several web
//! tiers never lose each other's updates. Workers list `people/` every few
//! seconds and rebuild their in-memory gallery when the listing changes
//! ([`GalleryWatcher`]): no restart needed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use facefleet_ports::{ObjectStore, PortError};
use serde::{Deserialize, Serialize};

use crate::engine::{EngineError, FaceEngine};

/// Key prefix of all gallery entries.
pub const PEOPLE_PREFIX: &str = "people/";

/// Longest accepted person name, in characters.
pub const MAX_NAME_CHARS: usize = 100;

/// Longest accepted person name, in UTF-8 bytes (a name is one path
/// segment of a key, and file systems allow 255 bytes per segment).
pub const MAX_NAME_BYTES: usize = 200;

/// One enrolled face.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GalleryEntry {
    /// The person's name.
    pub name: String,
    /// Recognizer that produced the embedding (e.g. `mobilefacenet`).
    pub recognizer: String,
    /// The L2-normalised embedding.
    pub embedding: Vec<f32>,
}

/// Errors of gallery operations.
#[derive(Debug, thiserror::Error)]
pub enum GalleryError {
    /// The person name is not acceptable.
    #[error("invalid person name: {0}")]
    InvalidName(String),
    /// The object store failed.
    #[error(transparent)]
    Store(#[from] PortError),
    /// The engine refused the entries.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Checks a person name: 1 to 100 characters and at most 200 bytes, no `/`, `\` or control
/// characters, not `.` or `..`, no surrounding spaces.
pub fn validate_name(name: &str) -> Result<(), GalleryError> {
    let bad = |why: &str| Err(GalleryError::InvalidName(format!("{why} (got {name:?})")));
    if name.is_empty() {
        return bad("empty name");
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return bad("longer than 100 characters");
    }
    if name.len() > MAX_NAME_BYTES {
        return bad("longer than 200 bytes in UTF-8");
    }
    if name.trim() != name {
        return bad("leading or trailing spaces");
    }
    if name.contains('/') || name.contains('\\') || name.chars().any(char::is_control) {
        return bad("`/`, `\\` and control characters are not allowed");
    }
    if name == "." || name == ".." {
        return bad("`.` and `..` are not names");
    }
    Ok(())
}

fn person_prefix(name: &str) -> String {
    format!("{PEOPLE_PREFIX}{name}/")
}

/// Stores one entry per embedding for `name`; returns how many were added.
pub async fn add_faces(
    store: &dyn ObjectStore,
    bucket: &str,
    name: &str,
    recognizer: &str,
    embeddings: Vec<Vec<f32>>,
) -> Result<usize, GalleryError> {
    validate_name(name)?;
    let n = embeddings.len();
    for embedding in embeddings {
        let entry = GalleryEntry { name: name.to_string(), recognizer: recognizer.to_string(), embedding };
        let body = serde_json::to_vec(&entry).expect("entry serialises");
        let key = format!("{}{}.json", person_prefix(name), uuid::Uuid::new_v4());
        store.put(bucket, &key, Bytes::from(body)).await?;
    }
    Ok(n)
}

/// Enrolled people and how many faces each has, sorted by name.
pub async fn people(store: &dyn ObjectStore, bucket: &str) -> Result<BTreeMap<String, usize>, GalleryError> {
    let mut out = BTreeMap::new();
    for meta in store.list_all(bucket, PEOPLE_PREFIX).await? {
        if let Some(name) = name_of_key(&meta.key) {
            *out.entry(name.to_string()).or_insert(0) += 1;
        }
    }
    Ok(out)
}

/// Removes every face of `name`; returns how many this call removed (0:
/// unknown person, or another call removed them first). Concurrent calls
/// never count a face twice where the store can tell (the filesystem).
pub async fn remove_person(store: &dyn ObjectStore, bucket: &str, name: &str) -> Result<usize, GalleryError> {
    validate_name(name)?;
    let keys = store.list_all(bucket, &person_prefix(name)).await?;
    let mut removed = 0;
    for meta in &keys {
        if store.remove(bucket, &meta.key).await? {
            removed += 1;
        }
    }
    Ok(removed)
}

fn name_of_key(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(PEOPLE_PREFIX)?;
    let (name, file) = rest.split_once('/')?;
    (!name.is_empty() && file.ends_with(".json") && !file.contains('/')).then_some(name)
}

/// Keeps an engine gallery in step with the gallery bucket.
pub struct GalleryWatcher<E: FaceEngine> {
    bucket: String,
    fingerprint: Option<Vec<(String, u64)>>,
    cache: HashMap<String, GalleryEntry>,
    current: Option<Arc<E::Gallery>>,
}

impl<E: FaceEngine> GalleryWatcher<E> {
    /// A watcher of `bucket` that has loaded nothing yet.
    pub fn new(bucket: &str) -> Self {
        Self { bucket: bucket.to_string(), fingerprint: None, cache: HashMap::new(), current: None }
    }

    /// The gallery as of the last successful refresh.
    pub fn current(&self) -> Option<Arc<E::Gallery>> {
        self.current.clone()
    }

    /// Lists the bucket; when the set of entries changed since the last call,
    /// fetches the new entries and rebuilds the gallery. Returns the current
    /// gallery and whether it was rebuilt.
    pub async fn refresh(&mut self, store: &dyn ObjectStore, engine: &E) -> Result<(Arc<E::Gallery>, bool), GalleryError> {
        let listing: Vec<(String, u64)> = store
            .list_all(&self.bucket, PEOPLE_PREFIX)
            .await?
            .into_iter()
            .filter(|m| name_of_key(&m.key).is_some())
            .map(|m| (m.key, m.size))
            .collect();
        if let (Some(fp), Some(cur)) = (&self.fingerprint, &self.current) {
            if *fp == listing {
                return Ok((cur.clone(), false));
            }
        }
        let mut fresh = HashMap::with_capacity(listing.len());
        for (key, _) in &listing {
            if let Some(e) = self.cache.remove(key) {
                fresh.insert(key.clone(), e);
                continue;
            }
            match store.get(&self.bucket, key).await {
                Ok(body) => match serde_json::from_slice::<GalleryEntry>(&body) {
                    Ok(e) => {
                        fresh.insert(key.clone(), e);
                    }
                    Err(err) => tracing::warn!(%key, %err, "ignoring unreadable gallery entry"),
                },
                // Deleted between list and get: it is gone, ignore it.
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        let recognizer = engine.recognizer();
        let mut entries: Vec<GalleryEntry> = Vec::with_capacity(fresh.len());
        let mut keys: Vec<&String> = fresh.keys().collect();
        keys.sort();
        for key in keys {
            let e = &fresh[key];
            if e.recognizer == recognizer {
                entries.push(e.clone());
            } else {
                tracing::warn!(%key, entry = %e.recognizer, engine = %recognizer, "ignoring gallery entry of another recognizer");
            }
        }
        let gallery = Arc::new(engine.build_gallery(&entries)?);
        tracing::info!(faces = entries.len(), "gallery loaded");
        self.cache = fresh;
        self.fingerprint = Some(listing);
        self.current = Some(gallery.clone());
        Ok((gallery, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["Paul", "Jean-Luc Picard", "Émile", "王"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", " Paul", "a/b", "..", ".", "a\\b", "a\nb", &"x".repeat(101), &"😀".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keys() {
        assert_eq!(name_of_key("people/Paul/1.json"), Some("Paul"));
        assert_eq!(name_of_key("people/Paul/x/1.json"), None);
        assert_eq!(name_of_key("other/Paul/1.json"), None);
        assert_eq!(name_of_key("people//1.json"), None);
    }
}
