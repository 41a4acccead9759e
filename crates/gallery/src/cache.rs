//! What workers and the video path hold: one [`Index`] per collection, kept
//! fresh cheaply.
//!
//! A refresh lists the collection's log and snapshots (2 list calls) and
//! compares the listing with the one the index was built from; only when it
//! changed does it read again, and then only the objects it has not
//! already read (a new snapshot, new log entries).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::index::Index;
use crate::names::{self, DEFAULT_COLLECTION};
use crate::store::{Gallery, GalleryError, Listing, Reuse, Snapshot};

/// A collection's index and what it was built from.
#[derive(Debug)]
struct Current {
    listing: Listing,
    index: Arc<Index>,
    /// When the store was last compared (`None`: invalidated).
    checked: Option<Instant>,
    reuse: Reuse,
}

/// One collection's place in the cache; its lock makes concurrent callers
/// wait for one refresh instead of all doing it.
type Slot = Arc<tokio::sync::Mutex<Option<Current>>>;

/// Per-collection indexes for one model, re-checked against the store at
/// most every `refresh`.
#[derive(Debug)]
pub struct GalleryCache {
    gallery: Gallery,
    model: String,
    refresh: Duration,
    slots: Mutex<HashMap<String, Slot>>,
}

impl GalleryCache {
    /// A cache of `gallery`'s collections, matching embeddings of `model`.
    pub fn new(gallery: Gallery, model: &str, refresh: Duration) -> Self {
        Self { gallery, model: model.to_string(), refresh, slots: Mutex::default() }
    }

    /// The gallery it reads.
    pub fn gallery(&self) -> &Gallery {
        &self.gallery
    }

    /// The model whose embeddings it matches.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Forgets what is cached for `collection`: the next [`GalleryCache::index`]
    /// re-checks the store whatever `refresh` says (e.g. after this process
    /// changed the collection itself).
    pub fn invalidate(&self, collection: &str) {
        if let Some(slot) = self.slots().get(collection) {
            if let Ok(mut current) = slot.try_lock() {
                if let Some(c) = current.as_mut() {
                    c.checked = None;
                }
                return;
            }
        }
        self.slots().remove(collection);
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The collection's index; re-checks the store (2 lists) at most every
    /// `refresh`, re-reads only what changed. NoSuchCollection when it does
    /// not exist.
    pub async fn index(&self, collection: &str) -> Result<Arc<Index>, GalleryError> {
        names::validate_collection(collection)?;
        let slot = self.slots().entry(collection.to_string()).or_default().clone();
        let mut current = slot.lock().await;
        if let Some(c) = current.as_ref() {
            if c.checked.is_some_and(|t| t.elapsed() < self.refresh) {
                return Ok(c.index.clone());
            }
        }
        let result = self.refresh(collection, &mut current).await;
        if matches!(result, Err(GalleryError::NoSuchCollection(_))) {
            *current = None;
            drop(current);
            let mut slots = self.slots();
            if slots.get(collection).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                slots.remove(collection);
            }
        }
        result
    }

    async fn refresh(&self, collection: &str, current: &mut Option<Current>) -> Result<Arc<Index>, GalleryError> {
        let listing = self.gallery.listing(collection).await?;
        let unchanged = current.as_ref().is_some_and(|c| c.listing == listing);
        // An empty or changed listing may mean the collection was deleted.
        if (!unchanged || listing.is_empty())
            && collection != DEFAULT_COLLECTION
            && !self.gallery.marker_exists(collection).await?
        {
            return Err(GalleryError::NoSuchCollection(collection.to_string()));
        }
        if let (true, Some(c)) = (unchanged, current.as_mut()) {
            c.checked = Some(Instant::now());
            return Ok(c.index.clone());
        }
        let nothing = Reuse::default();
        let reuse = current.as_ref().map_or(&nothing, |c| &c.reuse);
        let (state, reuse) = self.gallery.read_state(collection, Some(listing), Some(reuse)).await?;
        let snapshot = Snapshot { collection: collection.to_string(), generation: state.generation(), faces: state.faces };
        let index = Arc::new(Index::build(&snapshot, &self.model));
        tracing::debug!(collection, faces = index.faces(), people = index.people(), "gallery index rebuilt");
        *current = Some(Current { listing: state.listing, index: index.clone(), checked: Some(Instant::now()), reuse });
        Ok(index)
    }
}
