//! Collections of enrolled faces in the gallery bucket, stored as a
//! compacted snapshot plus a short log of later changes.
//!
//! Layout, per collection `c` (see [`format`] for the bytes):
//!
//! - `collections/<c>/collection.json`: `{"name", "created_ms"}`; it exists
//!   exactly when the collection does. `default` exists implicitly (its
//!   marker is written on first use);
//! - `collections/<c>/log/<seq>.json`: one change each, numbered 1, 2, …
//!   in the order they happen;
//! - `collections/<c>/snapshots/<seq>.bin`: the state after log entry
//!   `seq` (every entry up to `seq` folded in);
//! - `collections/<c>/thumbs/<face id>.jpg`: optional thumbnails;
//! - `collections/<c>.creating`: the lock of the one creator at a time
//!   (outside the prefix, so clearing leftovers keeps it).
//!
//! **One order for everybody.** The log is a sequence: a writer claims the
//! next free number with `put_if_absent` (taking the next one when it is
//! taken), so number `n + 1` is only ever written by someone who saw `n`
//! exist. Hence an entry never shows up *before* one that somebody already
//! saw: every reader, writer and compactor applies the same entries in the
//! same order, with the same rule (`LogEntry::apply` in [`format`]),
//! and the state after entry `n` is the same for all of them. (Keys made
//! of a clock and a random part, as first designed, did not give this: an
//! entry whose `put` was slow could land before entries that had already
//! been read or compacted, and two readers would apply them in different
//! orders.)
//!
//! **Exact answers.** Changes are not checked against the state a writer
//! read before appending (ten concurrent removals of the same person would
//! all have seen it there); instead every entry's effect is defined by its
//! place in the log: a remove removes what is there at that point, a
//! rename whose new name already has faces at that point is a conflict and
//! does nothing (two people are never merged). After appending, a writer
//! reads the collection again and reports what *its* entry did there (the
//! faces it actually removed, whether its rename took place or
//! conflicted). If a compaction folded its entry in the meantime, the
//! outcome is in the snapshot: each snapshot header keeps the outcomes of
//! the last 256 folded entries (`RECENT_OUTCOMES`; by number and
//! writer id), carried from one snapshot to the next (a writer that looks
//! only after 256 further entries were folded cannot tell, and answers
//! `Unavailable` although its change is stored). An `add` always does what
//! it says, so its writer only checks that its claim was not late (an add
//! `once`, whose ids the caller chose, leaves out the ids already there at
//! its point of the log, and its writer reads its outcome as above). A writer
//! still checks the state first and writes nothing for an unknown person or
//! face, or a rename onto a name in use.
//!
//! **A late claim.** A writer that picked its number from an old listing
//! may `put_if_absent` a number whose entry was already folded and deleted:
//! the claim succeeds, but a snapshot at or past that number existed before
//! (a folded entry is only deleted once such a snapshot is the highest, and
//! the highest snapshot is never deleted). Everybody ignores log entries at
//! or below the snapshot they read, so that entry never has an effect; its
//! writer sees that the snapshot's outcome for its number carries another
//! writer's id, deletes its entry and claims again. The other way round, a
//! writer whose read listed the snapshots just before its own entry was
//! folded can fetch, under its number, the late claim that took the number
//! after the fold: it reads again, and finds its outcome in the snapshot.
//!
//! **Reading** lists the log, then the snapshots, gets the highest
//! snapshot and every listed log entry past it, and applies them in order:
//! `3 + log length` reads whatever the size of the collection (one more, a
//! `head` of the marker, for collections other than `default`). Listing
//! the log *before* the snapshots is what makes a read consistent: a log
//! entry is deleted only once a snapshot folding it is the highest, so an
//! entry missing from the log listing is in the snapshot found after it.
//! An object deleted between the listing and its `get` (a compaction
//! finished meanwhile) makes the reader start over, at most 8 times (`READ_TRIES`).
//!
//! **Writing** claims the next log number (never rewriting anything, so
//! concurrent writers cannot lose each other's changes), then lists the log
//! and snapshots again; from `compact_after` entries on, the writer
//! compacts: it writes the state as `snapshots/<last seq>.bin` with
//! `put_if_absent` (two compactors of the same entries write the same
//! state: one wins, the other gives up), checks that no higher snapshot
//! exists (a slow compactor may write a snapshot that a faster one already
//! replaced; such a snapshot is removed, and no log entry or other snapshot
//! is), and only then deletes the log entries it folded and the older
//! snapshots. Right after writing its snapshot, a compactor deletes the
//! thumbnails of the faces that the entries it folded removed (unless their
//! ids are back, at its point or when it reads the collection again): the
//! removing writers delete them too, but a writer that died after
//! appending, or whose entry was folded before it looked, cannot know every
//! face its entry removed.
//!
//! **Deleting** a collection removes its marker first (a writer that then
//! finds it gone takes its change back), then every object under its
//! prefix. `default` is emptied through its log instead: a `clear` entry
//! removes the faces before it and is folded at once, which deletes their
//! thumbnails; writers never
//! see `default` missing, so an enrollment lands whole before or after it.
//!
//! **Migration**: while `default` has no snapshot, the faces of the old
//! layout (`people/<name>/<uuid>.json`, `{name, recognizer, embedding}`) are
//! part of it (their ids are the old uuids, or derived from the key, so
//! that every reader gives them the same ids); the first reader or writer
//! folds them into a snapshot, then writes `people/MIGRATED` and deletes
//! them. A reader that finds `people/MIGRATED` but listed no snapshot was
//! overtaken by the migration and reads again.

pub(crate) mod format;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use facefleet_ports::{ObjectMeta, ObjectStore, PortError};
use futures::future::join_all;
use serde::{Deserialize, Serialize};

use crate::names::{self, DEFAULT_COLLECTION};
use format::{LogEntry, LogRecord, Outcome, Recent};

/// Compact once the log holds this many entries (unless configured).
pub const DEFAULT_COMPACT_AFTER: usize = 6;

/// Key prefix of the old, one-object-per-face layout.
pub const OLD_PEOPLE_PREFIX: &str = "people/";

/// Attempts at a consistent read before giving up. Each failed attempt
/// means that a compaction finished during it, so others are making
/// progress; with many writers at once that can happen several times in a
/// row.
const READ_TRIES: usize = 8;

/// Keys per list page asked for.
const LIST_PAGE: usize = 1000;

/// Log entries fetched at once by a read.
const LOG_READS_AT_ONCE: usize = 8;

/// Thumbnails deleted at once.
const DELETES_AT_ONCE: usize = 16;

/// Log numbers a writer tries (each taken by someone else) before giving up.
const CLAIM_TRIES: u64 = 1000;

/// Age after which a collection's creation lock is taken over (its
/// creator died; a creation takes a few store calls).
const CREATE_LOCK_STALE: std::time::Duration = std::time::Duration::from_secs(60);

/// Times a writer claims a log number again after a late claim (each one
/// means others claimed and folded numbers meanwhile: progress; with many
/// writers and frequent folds, 3 was seen to run out).
const APPEND_TRIES: usize = 8;

/// Written under the old layout's prefix once it has been folded into
/// `default` (see the module documentation).
const MIGRATED_KEY: &str = "people/MIGRATED";

/// One enrolled face.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FaceRecord {
    /// Unique id of the face (32 hex digits for new faces).
    pub id: String,
    /// The person it belongs to.
    pub person: String,
    /// Model id of the embedding (embeddings of other models do not compare).
    pub model: String,
    /// The L2-normalised embedding.
    pub embedding: Vec<f32>,
    /// When it was enrolled, in unix milliseconds (0: migrated from the old
    /// layout, time unknown).
    pub created_ms: u64,
}

/// A face to enroll.
#[derive(Debug, Clone, PartialEq)]
pub struct NewFace {
    /// The embedding (non-empty, finite values).
    pub embedding: Vec<f32>,
    /// Model id of the embedding.
    pub model: String,
    /// An optional JPEG thumbnail, stored next to the face.
    pub thumbnail: Option<Bytes>,
}

impl NewFace {
    /// A face without thumbnail.
    pub fn new(embedding: Vec<f32>, model: &str) -> Self {
        Self { embedding, model: model.to_string(), thumbnail: None }
    }

    /// The same face with a thumbnail.
    pub fn with_thumbnail(mut self, jpeg: Bytes) -> Self {
        self.thumbnail = Some(jpeg);
        self
    }
}

/// A collection and its size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CollectionInfo {
    /// Its name.
    pub name: String,
    /// Number of distinct people.
    pub people: usize,
    /// Number of faces.
    pub faces: usize,
}

/// A person and how many faces they have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PersonSummary {
    /// The person's name.
    pub name: String,
    /// Number of enrolled faces.
    pub faces: usize,
}

/// All faces of a collection at one moment (what workers match against).
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The collection.
    pub collection: String,
    /// Generation of the compacted snapshot this state starts from (0:
    /// none yet; each compaction adds one); later changes from the log are
    /// applied on top.
    pub generation: u64,
    /// The faces, in enrolment order.
    pub faces: Vec<FaceRecord>,
}

impl Snapshot {
    /// The people of the snapshot with their face counts, sorted by name.
    pub fn people(&self) -> Vec<PersonSummary> {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for f in &self.faces {
            *counts.entry(&f.person).or_default() += 1;
        }
        counts.into_iter().map(|(name, faces)| PersonSummary { name: name.to_string(), faces }).collect()
    }
}

/// What can go wrong with the gallery.
#[derive(Debug, thiserror::Error)]
pub enum GalleryError {
    /// A person or collection name breaks the rules.
    #[error("invalid name: {0}")]
    InvalidName(#[from] names::InvalidName),
    /// The collection does not exist.
    #[error("no collection named `{0}`")]
    NoSuchCollection(String),
    /// The change contradicts the current state (e.g. renaming onto an
    /// existing person).
    #[error("{0}")]
    Conflict(String),
    /// A face to enroll is unusable (empty or non-finite embedding, no
    /// model id): a bug of the caller, not of the client.
    #[error("invalid face: {0}")]
    InvalidFace(String),
    /// Stored gallery data cannot be decoded.
    #[error("gallery data is unreadable: {0}")]
    Corrupt(String),
    /// The object store failed.
    #[error(transparent)]
    Store(#[from] PortError),
}

/// The gallery of one deployment: collections in one bucket.
///
/// Cheap to clone; clones share the [`Gallery::reads`] counter.
#[derive(Clone)]
pub struct Gallery {
    store: Arc<dyn ObjectStore>,
    bucket: String,
    compact_after: usize,
    reads: Arc<AtomicU64>,
}

impl fmt::Debug for Gallery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gallery")
            .field("bucket", &self.bucket)
            .field("compact_after", &self.compact_after)
            .field("reads", &self.reads())
            .finish_non_exhaustive()
    }
}

/// The two listings a read starts from, log first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Listing {
    /// Log entries (key order), as listed.
    pub(crate) log: Vec<ObjectMeta>,
    /// Snapshots, as listed.
    pub(crate) snapshots: Vec<ObjectMeta>,
}

impl Listing {
    /// Nothing stored in the collection.
    pub(crate) fn is_empty(&self) -> bool {
        self.log.is_empty() && self.snapshots.is_empty()
    }
}

/// The state a read starts from: a decoded snapshot, or (for `default`
/// without snapshot) the faces of the old layout.
#[derive(Debug, Default)]
pub(crate) struct Base {
    /// Key of the snapshot (`None`: no snapshot).
    key: Option<String>,
    /// Size of the snapshot object (with the key, what a reuse checks).
    size: u64,
    generation: u64,
    /// The last log entry folded in (0: none).
    seq: u64,
    /// Outcomes of the last folded entries, by increasing `seq`.
    recent: Vec<Recent>,
    faces: Vec<FaceRecord>,
    /// Old-layout keys whose faces are in `faces`.
    migrated: Vec<String>,
}

/// What a previous read fetched and can be used again by the next one (the
/// cache keeps it between refreshes).
#[derive(Debug, Default)]
pub(crate) struct Reuse {
    base: Option<Arc<Base>>,
    /// Log entries by key, with the size they were listed with.
    entries: HashMap<String, (u64, Arc<LogRecord>)>,
}

/// A log entry applied on top of the base, and what it did.
#[derive(Debug)]
struct Applied {
    seq: u64,
    /// Id of the call that wrote it.
    writer: String,
    outcome: Outcome,
    /// Ids of the faces it removed.
    removed: Vec<String>,
}

/// A collection as read.
#[derive(Debug)]
pub(crate) struct State {
    /// The listing it was read from.
    pub(crate) listing: Listing,
    base: Arc<Base>,
    /// Every face, in order.
    pub(crate) faces: Vec<FaceRecord>,
    /// The last log entry in `faces` (the base's when none was applied).
    seq: u64,
    /// The entries applied on top of the base, in order.
    applied: Vec<Applied>,
}

impl State {
    /// Generation of the snapshot the state started from.
    pub(crate) fn generation(&self) -> u64 {
        self.base.generation
    }

    /// What entry `seq`, written by the call `id`, did.
    fn outcome_of(&self, seq: u64, id: &str) -> Resolved {
        if seq > self.base.seq {
            return match self.applied.iter().find(|a| a.seq == seq) {
                Some(a) if a.writer == id => Resolved::Mine(a.outcome, Some(a.removed.clone())),
                Some(_) => Resolved::Replaced,
                None => Resolved::Unknown("it vanished from the log"),
            };
        }
        match self.base.recent.iter().find(|r| r.seq == seq) {
            Some(r) if r.writer == id => Resolved::Mine(r.outcome, None),
            // Another entry with our number was folded before ours was written.
            Some(_) => Resolved::Late,
            None => Resolved::Unknown("it was folded into a snapshot too long ago to tell"),
        }
    }
}

/// What became of an appended entry.
#[derive(Debug)]
enum Resolved {
    /// It did this (and removed these faces, when known).
    Mine(Outcome, Option<Vec<String>>),
    /// Its number had already been used and folded: it has no effect.
    Late,
    /// Its number holds another writer's entry, past the snapshot read: the
    /// entry was folded and deleted while the collection was being read,
    /// and a late claim took the number again. A new read finds its
    /// outcome in the snapshot.
    Replaced,
    /// It cannot be told.
    Unknown(&'static str),
}

/// A change appended to a collection's log and what it did there.
#[derive(Debug)]
struct Appended {
    outcome: Outcome,
    /// Ids of the faces it removed (`None`: not known, it was folded
    /// before its writer looked).
    removed: Option<Vec<String>>,
    /// The collection as read after it (`None`: not read).
    after: Option<State>,
}

/// Unix time in milliseconds.
fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// An id for a face of the old layout whose file name cannot be one: the
/// same for every reader (two FNV-1a hashes of the key, 32 hex digits).
fn stable_id(key: &str) -> String {
    let fnv = |mut h: u64| {
        for b in key.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    };
    format!("{:016x}{:016x}", fnv(0xcbf2_9ce4_8422_2325), fnv(0x6c62_272e_07bb_0142))
}

/// The highest snapshot of a listing: its number and object.
fn highest_snapshot<'l>(c: &str, listing: &'l Listing) -> Option<(u64, &'l ObjectMeta)> {
    let prefix = format::snapshots_prefix(c);
    listing.snapshots.iter().filter_map(|m| Some((format::snapshot_seq(&prefix, &m.key)?, m))).max_by_key(|(seq, _)| *seq)
}

/// The first log number nobody had claimed when `listing` was made.
fn next_seq(c: &str, listing: &Listing) -> u64 {
    let prefix = format::log_prefix(c);
    let log = listing.log.iter().filter_map(|m| format::log_seq(&prefix, &m.key)).max().unwrap_or(0);
    let folded = highest_snapshot(c, listing).map_or(0, |(seq, _)| seq);
    log.max(folded) + 1
}

fn corrupt(key: &str, why: impl fmt::Display) -> GalleryError {
    GalleryError::Corrupt(format!("`{key}`: {why}"))
}

/// An old-layout gallery entry.
#[derive(Deserialize)]
struct OldEntry {
    name: String,
    recognizer: String,
    embedding: Vec<f32>,
}

#[derive(Serialize, Deserialize)]
struct Marker {
    name: String,
    created_ms: u64,
}

impl Marker {
    /// The stored body of collection `c`'s marker (or creation lock), made now.
    fn body(c: &str) -> Bytes {
        Bytes::from(serde_json::to_vec(&Marker { name: c.to_string(), created_ms: now_ms() }).expect("marker serialises"))
    }
}

impl Gallery {
    /// The gallery kept in `bucket` (which must exist) of `store`.
    pub fn new(store: Arc<dyn ObjectStore>, bucket: &str) -> Self {
        Self { store, bucket: bucket.to_string(), compact_after: DEFAULT_COMPACT_AFTER, reads: Arc::default() }
    }

    /// Compacts once a collection's log holds `n` entries (at least 1;
    /// default [`DEFAULT_COMPACT_AFTER`]). Reads cost up to `3 + n` object
    /// reads, writes rewrite the snapshot every `n` changes.
    pub fn with_compact_after(mut self, n: usize) -> Self {
        self.compact_after = n.max(1);
        self
    }

    /// The bucket it lives in.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The store it lives in.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Object reads (`get`, `head` and list pages) made through this value
    /// and its clones so far, for measurements.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    // ----- counted store access -------------------------------------------

    fn count_read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    async fn get(&self, key: &str) -> Result<Bytes, PortError> {
        self.count_read();
        self.store.get(&self.bucket, key).await
    }

    /// The object, or `None` when it does not exist.
    async fn get_opt(&self, key: &str) -> Result<Option<Bytes>, PortError> {
        match self.get(key).await {
            Ok(b) => Ok(Some(b)),
            Err(PortError::NoSuchKey { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn exists(&self, key: &str) -> Result<bool, PortError> {
        self.count_read();
        Ok(self.store.head(&self.bucket, key).await?.is_some())
    }

    /// Every key under `prefix`, one counted read per page.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, PortError> {
        let mut token = None;
        let mut all = Vec::new();
        loop {
            self.count_read();
            let page = self.store.list(&self.bucket, prefix, token, LIST_PAGE).await?;
            all.extend(page.objects);
            match page.next_token {
                Some(t) => token = Some(t),
                None => return Ok(all),
            }
        }
    }

    /// Deletes, logging instead of failing (clean-up that a later
    /// compaction or delete redoes).
    async fn delete_quietly(&self, key: &str) {
        if let Err(e) = self.store.delete(&self.bucket, key).await {
            tracing::warn!(bucket = %self.bucket, %key, error = %e, "could not delete a gallery object");
        }
    }

    // ----- reading ----------------------------------------------------------

    /// The log listing, then the snapshot listing (in that order: see the
    /// module documentation), keeping only well-formed keys.
    pub(crate) async fn listing(&self, c: &str) -> Result<Listing, PortError> {
        let log_prefix = format::log_prefix(c);
        let mut log = self.list(&log_prefix).await?;
        log.retain(|m| format::log_seq(&log_prefix, &m.key).is_some());
        let snapshots = self.snapshots(c).await?;
        Ok(Listing { log, snapshots })
    }

    /// The snapshot listing, keeping only well-formed keys.
    async fn snapshots(&self, c: &str) -> Result<Vec<ObjectMeta>, PortError> {
        let snap_prefix = format::snapshots_prefix(c);
        let mut snapshots = self.list(&snap_prefix).await?;
        snapshots.retain(|m| format::snapshot_seq(&snap_prefix, &m.key).is_some());
        Ok(snapshots)
    }

    /// Whether a collection's marker exists (`default`: always).
    pub(crate) async fn marker_exists(&self, c: &str) -> Result<bool, PortError> {
        if c == DEFAULT_COLLECTION {
            return Ok(true);
        }
        self.exists(&format::marker_key(c)).await
    }

    /// Reads collection `c` consistently, starting from `first` if given
    /// and using what `reuse` already holds. Returns the state and, when
    /// `reuse` was given, what the next read can reuse (otherwise nothing).
    /// Folds the old layout of `default` if found.
    pub(crate) async fn read_state(
        &self,
        c: &str,
        first: Option<Listing>,
        reuse: Option<&Reuse>,
    ) -> Result<(State, Reuse), GalleryError> {
        let empty = Reuse::default();
        let keep = reuse.is_some();
        let reuse = reuse.unwrap_or(&empty);
        let mut first = first;
        for attempt in 1..=READ_TRIES {
            let listing = match first.take() {
                Some(l) => l,
                None => self.listing(c).await?,
            };
            if let Some((state, next)) = self.read_once(c, listing, reuse, keep).await? {
                if !state.base.migrated.is_empty() {
                    self.fold_old_layout(c, &state).await;
                }
                return Ok((state, next));
            }
            tracing::debug!(collection = c, attempt, "gallery changed while it was read, reading again");
        }
        Err(GalleryError::Store(PortError::Unavailable(format!(
            "collection `{c}` kept changing during {READ_TRIES} attempts to read it"
        ))))
    }

    /// One read from `listing`; `None` when an object listed was deleted
    /// before it could be read (read again). `keep`: return what a later
    /// read can reuse (costs a copy of the snapshot's faces).
    async fn read_once(
        &self,
        c: &str,
        listing: Listing,
        reuse: &Reuse,
        keep: bool,
    ) -> Result<Option<(State, Reuse)>, GalleryError> {
        let mut base = match highest_snapshot(c, &listing) {
            Some((_, meta))
                if reuse.base.as_ref().is_some_and(|b| b.key.as_deref() == Some(meta.key.as_str()) && b.size == meta.size) =>
            {
                reuse.base.clone().expect("checked above")
            }
            Some((seq, meta)) => {
                let key = meta.key.as_str();
                let Some(bytes) = self.get_opt(key).await? else { return Ok(None) };
                let decoded = format::decode_snapshot(&bytes).map_err(|e| corrupt(key, e))?;
                if decoded.seq != seq {
                    return Err(corrupt(key, format!("holds the log up to entry {}", decoded.seq)));
                }
                Arc::new(Base {
                    key: Some(key.to_string()),
                    size: bytes.len() as u64,
                    generation: decoded.generation,
                    seq,
                    recent: decoded.recent,
                    faces: decoded.faces,
                    migrated: Vec::new(),
                })
            }
            None if c == DEFAULT_COLLECTION => match self.old_layout_base(c).await? {
                Some(base) => Arc::new(base),
                None => return Ok(None),
            },
            None => Arc::new(Base::default()),
        };

        // The log entries past the base, fetched a few at a time (their
        // order is kept). Entries at or below the base's number are in it
        // (or are late claims, which have no effect).
        let log_prefix = format::log_prefix(c);
        let wanted: Vec<(u64, &ObjectMeta)> = listing
            .log
            .iter()
            .filter_map(|m| Some((format::log_seq(&log_prefix, &m.key)?, m)))
            .filter(|(seq, _)| *seq > base.seq)
            .collect();
        let mut fetched = Vec::with_capacity(wanted.len());
        for chunk in wanted.chunks(LOG_READS_AT_ONCE) {
            let reads = chunk.iter().map(|(_, meta)| self.log_entry(meta, reuse));
            for ((seq, meta), entry) in chunk.iter().zip(join_all(reads).await) {
                let Some(entry) = entry? else { return Ok(None) };
                fetched.push((*seq, *meta, entry));
            }
        }

        // Only a kept base must stay whole; otherwise its faces move out.
        let mut faces = match Arc::get_mut(&mut base) {
            Some(b) if !keep => std::mem::take(&mut b.faces),
            _ => base.faces.clone(),
        };
        let mut entries = HashMap::with_capacity(fetched.len());
        let mut applied = Vec::with_capacity(fetched.len());
        let mut seq = base.seq;
        for (entry_seq, meta, record) in fetched {
            let mut removed = Vec::new();
            let outcome = record.change.apply(&mut faces, &mut removed);
            applied.push(Applied { seq: entry_seq, writer: record.writer.clone(), outcome, removed });
            seq = entry_seq;
            if keep {
                entries.insert(meta.key.clone(), (meta.size, record));
            }
        }
        let next = if keep { Reuse { base: Some(base.clone()), entries } } else { Reuse::default() };
        Ok(Some((State { listing, base, faces, seq, applied }, next)))
    }

    /// A log entry, from `reuse` or the store (`None`: it vanished).
    async fn log_entry(&self, meta: &ObjectMeta, reuse: &Reuse) -> Result<Option<Arc<LogRecord>>, GalleryError> {
        if let Some((size, e)) = reuse.entries.get(&meta.key) {
            if *size == meta.size {
                return Ok(Some(e.clone()));
            }
        }
        let key = meta.key.as_str();
        let Some(bytes) = self.get_opt(key).await? else { return Ok(None) };
        let entry: LogRecord = serde_json::from_slice(&bytes).map_err(|e| corrupt(key, e))?;
        Ok(Some(Arc::new(entry)))
    }

    /// The faces of the old layout, for collection `c` (`default`) that had
    /// no snapshot when listed (`None`: read again; the old layout was
    /// folded meanwhile).
    async fn old_layout_base(&self, c: &str) -> Result<Option<Base>, GalleryError> {
        let mut base = Base::default();
        let metas = self.list(OLD_PEOPLE_PREFIX).await?;
        if metas.iter().any(|m| m.key == MIGRATED_KEY) {
            // Folded into a snapshot, which we listed too early; unless that
            // is gone too (the collection was emptied since): then so is
            // the old layout.
            if self.snapshots(c).await?.is_empty() {
                return Ok(Some(base));
            }
            return Ok(None);
        }
        let mut ids = HashSet::new();
        for meta in metas {
            let Some((name, file)) = meta.key.strip_prefix(OLD_PEOPLE_PREFIX).and_then(|r| r.split_once('/')) else {
                continue;
            };
            let Some(stem) = file.strip_suffix(".json").filter(|s| !s.contains('/')) else { continue };
            let Some(bytes) = self.get_opt(&meta.key).await? else { return Ok(None) };
            let old: OldEntry = match serde_json::from_slice(&bytes) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(key = %meta.key, error = %e, "skipping an unreadable old-layout gallery entry");
                    continue;
                }
            };
            if old.name != name || names::validate_person_lookup(&old.name).is_err() || old.embedding.is_empty() {
                tracing::warn!(key = %meta.key, "skipping an old-layout gallery entry with a bad name or embedding");
                continue;
            }
            // Every reader must give a face the same id.
            let mut id = if format::valid_face_id(stem) { stem.to_string() } else { stable_id(&meta.key) };
            let mut n = 0;
            while ids.contains(&id) {
                n += 1;
                id = stable_id(&format!("{}#{n}", meta.key));
            }
            ids.insert(id.clone());
            base.faces.push(FaceRecord {
                id,
                person: old.name,
                model: old.recognizer,
                embedding: old.embedding,
                created_ms: 0,
            });
            base.migrated.push(meta.key);
        }
        Ok(Some(base))
    }

    /// Writes the snapshot that folds the old layout into `default`.
    async fn fold_old_layout(&self, c: &str, state: &State) {
        match self.compact_state(c, state).await {
            Ok(true) => tracing::info!(faces = state.base.migrated.len(), "old gallery layout folded into the `default` collection"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "could not fold the old gallery layout into `default` yet"),
        }
    }

    // ----- compaction -------------------------------------------------------

    /// Writes `state` as the snapshot of its last log entry. True when it
    /// did and cleaned up behind it; false when there was nothing new or
    /// another compactor got there first.
    async fn compact_state(&self, c: &str, state: &State) -> Result<bool, GalleryError> {
        let seq = state.seq;
        let key = format::snapshot_key(c, seq);
        if state.base.key.as_deref() == Some(key.as_str()) {
            return Ok(false);
        }
        // The outcomes of the newest entries, for writers that look late.
        let mut recent: Vec<Recent> = state.base.recent.clone();
        recent.extend(state.applied.iter().map(|a| Recent { seq: a.seq, writer: a.writer.clone(), outcome: a.outcome }));
        if recent.len() > format::RECENT_OUTCOMES {
            recent.drain(..recent.len() - format::RECENT_OUTCOMES);
        }
        let body = format::encode_snapshot(state.base.generation + 1, seq, &recent, &state.faces);
        // Another compactor got this far first (its base may differ; it
        // sweeps behind the entries it applied).
        if !self.store.put_if_absent(&self.bucket, &key, Bytes::from(body)).await? {
            return Ok(false);
        }
        // Whoever first writes a snapshot holding an entry has applied it,
        // so sweeping here (even for a snapshot that turns out stale)
        // reaches every removal, unless this process stops right here.
        self.sweep_thumbnails(c, state).await;
        // A faster compactor may have folded more entries already: this
        // snapshot is then stale (not the highest) and must not let
        // anything be deleted.
        let snap_prefix = format::snapshots_prefix(c);
        let snapshots = self.snapshots(c).await?;
        let seqs: Vec<(u64, &str)> =
            snapshots.iter().filter_map(|m| Some((format::snapshot_seq(&snap_prefix, &m.key)?, m.key.as_str()))).collect();
        let stale = seqs.iter().any(|(s, _)| *s > seq);
        // A collection deleted meanwhile must not come back.
        let gone = !stale && !self.marker_exists(c).await?;
        if stale || gone {
            tracing::debug!(collection = c, seq, stale, gone, "removing a snapshot that lost its race");
            self.delete_quietly(&key).await;
            return Ok(false);
        }
        let log_prefix = format::log_prefix(c);
        for meta in &state.listing.log {
            if format::log_seq(&log_prefix, &meta.key).is_some_and(|s| s <= seq) {
                self.delete_quietly(&meta.key).await;
            }
        }
        for (s, old) in seqs {
            if s < seq {
                self.delete_quietly(old).await;
            }
        }
        if !state.base.migrated.is_empty() {
            // Tells readers that listed no snapshot and then miss old
            // entries that they were overtaken (see `old_layout_base`).
            match self.store.put(&self.bucket, MIGRATED_KEY, Bytes::from_static(b"folded into collections/default/\n")).await {
                Ok(()) => {
                    for old in &state.base.migrated {
                        self.delete_quietly(old).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not mark the old gallery layout as folded; it stays until the next compaction"),
            }
        }
        tracing::debug!(collection = c, seq, faces = state.faces.len(), "gallery compacted");
        Ok(true)
    }

    /// Deletes the thumbnails of the faces that the entries applied in
    /// `state` removed, except ids that are back, in `state` or in the
    /// collection read again now (a retried idempotent enrollment; `state`
    /// may be old, or stale). The removing writers delete them too, but one
    /// that died after appending, or whose entry was folded before it looked
    /// (it then knows only the faces it saw before appending), would leave
    /// some behind. When the collection cannot be read again, nothing is
    /// deleted: a thumbnail left behind is better than a live face's lost.
    async fn sweep_thumbnails(&self, c: &str, state: &State) {
        let live: HashSet<&str> = state.faces.iter().map(|f| f.id.as_str()).collect();
        let mut gone: BTreeSet<&str> =
            state.applied.iter().flat_map(|a| a.removed.iter().map(String::as_str)).filter(|id| !live.contains(id)).collect();
        if gone.is_empty() {
            return;
        }
        match self.live_ids(c).await {
            Some(now) => gone.retain(|id| !now.contains(*id)),
            None => {
                tracing::warn!(collection = c, "could not read the collection again; its removed faces' thumbnails stay until their writers delete them");
                return;
            }
        }
        self.delete_thumbnails(c, gone).await;
    }

    /// The ids of the faces in collection `c` now (`None`: it kept changing,
    /// or could not be read). Does not fold the old layout.
    async fn live_ids(&self, c: &str) -> Option<HashSet<String>> {
        for _ in 0..READ_TRIES {
            let listing = self.listing(c).await.ok()?;
            if let Some((state, _)) = self.read_once(c, listing, &Reuse::default(), false).await.ok()? {
                return Some(state.faces.into_iter().map(|f| f.id).collect());
            }
        }
        None
    }

    /// Deletes the thumbnails of faces `ids` of collection `c`, a few at a
    /// time (failures are logged).
    async fn delete_thumbnails<'a>(&self, c: &str, ids: impl IntoIterator<Item = &'a str>) {
        let keys: Vec<String> = ids.into_iter().map(|id| format::thumb_key(c, id)).collect();
        for chunk in keys.chunks(DELETES_AT_ONCE) {
            join_all(chunk.iter().map(|key| self.delete_quietly(key))).await;
        }
    }

    /// Compacts collection `c` now, whatever the length of its log. True
    /// when this call wrote the new snapshot.
    pub async fn compact(&self, c: &str) -> Result<bool, GalleryError> {
        names::validate_collection(c)?;
        self.check_exists(c).await?;
        let (state, _) = self.read_state(c, None, None).await?;
        self.compact_state(c, &state).await
    }

    /// Compacts when the log of `listing` is long enough; failures are
    /// logged, not returned (the change is already stored; a later writer
    /// compacts).
    async fn maybe_compact(&self, c: &str, listing: Listing) {
        if listing.log.len() < self.compact_after {
            return;
        }
        let result = async {
            let (state, _) = self.read_state(c, Some(listing), None).await?;
            self.compact_state(c, &state).await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(collection = c, error = %e, "gallery compaction failed; a later change retries it");
        }
    }

    /// Compacts `state` when its log is long enough (as [`Self::maybe_compact`]).
    async fn maybe_compact_state(&self, c: &str, state: &State) {
        if state.listing.log.len() < self.compact_after {
            return;
        }
        if let Err(e) = self.compact_state(c, state).await {
            tracing::warn!(collection = c, error = %e, "gallery compaction failed; a later change retries it");
        }
    }

    // ----- writing ----------------------------------------------------------

    /// Fails with NoSuchCollection unless `c` exists; writes `default`'s
    /// marker on its first use.
    async fn check_exists(&self, c: &str) -> Result<(), GalleryError> {
        let marker = format::marker_key(c);
        if self.exists(&marker).await? {
            return Ok(());
        }
        if c != DEFAULT_COLLECTION {
            return Err(GalleryError::NoSuchCollection(c.to_string()));
        }
        self.store.put_if_absent(&self.bucket, &marker, Marker::body(c)).await?;
        Ok(())
    }

    /// Appends `change` to the log of `c` and finds out what it did at its
    /// place there; compacts when due. `listing` (recent) and `reuse` come
    /// from a read just made, if any.
    async fn append(
        &self,
        c: &str,
        change: &LogEntry,
        listing: Option<Listing>,
        reuse: Option<Reuse>,
    ) -> Result<Appended, GalleryError> {
        #[derive(Serialize)]
        struct Out<'a> {
            writer: &'a str,
            #[serde(flatten)]
            change: &'a LogEntry,
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let body = Bytes::from(serde_json::to_vec(&Out { writer: &id, change }).expect("a log entry serialises"));
        let mut listing = listing;
        let mut reuse = reuse.unwrap_or_default();
        for _ in 0..APPEND_TRIES {
            let before = match listing.take() {
                Some(l) => l,
                None => self.listing(c).await?,
            };
            let seq = self.claim(c, &before, &body).await?;
            let key = format::log_key(c, seq);
            // Deleted (or, for an unreadable `default`, wiped) while we wrote? Take the
            // change back so that nothing is left behind in a collection
            // that no longer exists, nor half of it (faces whose thumbnails
            // the delete removed) in an emptied `default`. Every writer
            // made sure the marker existed before (`check_exists`).
            if !self.exists(&format::marker_key(c)).await? {
                self.delete_quietly(&key).await;
                return Err(if c == DEFAULT_COLLECTION {
                    GalleryError::Conflict(format!(
                        "collection `{c}` was emptied while this change was made; nothing was changed: send it again"
                    ))
                } else {
                    GalleryError::NoSuchCollection(c.to_string())
                });
            }
            let after = self.listing(c).await?;
            if let LogEntry::Add { faces, once: false } = change {
                // No snapshot at or past our number: no other entry with it
                // was ever folded, the claim is good, and a plain add always
                // does what it says.
                if highest_snapshot(c, &after).is_none_or(|(s, _)| s < seq) {
                    self.maybe_compact(c, after).await;
                    return Ok(Appended { outcome: Outcome { changed: faces.len(), conflict: false }, removed: None, after: None });
                }
            }
            let (mut state, next) = self.read_state(c, Some(after), Some(&reuse)).await?;
            reuse = next;
            let mut resolved = state.outcome_of(seq, &id);
            for _ in 1..READ_TRIES {
                if !matches!(resolved, Resolved::Replaced) {
                    break;
                }
                tracing::debug!(collection = c, seq, "log entry folded while read, reading again");
                (state, reuse) = self.read_state(c, None, Some(&reuse)).await?;
                resolved = state.outcome_of(seq, &id);
            }
            match resolved {
                Resolved::Mine(outcome, removed) => {
                    self.maybe_compact_state(c, &state).await;
                    return Ok(Appended { outcome, removed, after: Some(state) });
                }
                Resolved::Late => {
                    tracing::debug!(collection = c, seq, "log number already used and folded, claiming another");
                    self.delete_quietly(&key).await;
                    listing = Some(state.listing);
                }
                Resolved::Replaced => {
                    return Err(GalleryError::Store(PortError::Unavailable(format!(
                        "the change to collection `{c}` was written as log entry {seq}, but its outcome is unknown: the collection kept changing while it was read"
                    ))));
                }
                Resolved::Unknown(why) => {
                    if !self.marker_exists(c).await? {
                        return Err(GalleryError::NoSuchCollection(c.to_string()));
                    }
                    return Err(GalleryError::Store(PortError::Unavailable(format!(
                        "the change to collection `{c}` was written as log entry {seq}, but its outcome is unknown: {why}"
                    ))));
                }
            }
        }
        Err(GalleryError::Store(PortError::Unavailable(format!(
            "collection `{c}` kept changing during {APPEND_TRIES} attempts to append to its log"
        ))))
    }

    /// Writes `body` as the first free log entry from what `listing` says;
    /// returns its number.
    async fn claim(&self, c: &str, listing: &Listing, body: &Bytes) -> Result<u64, GalleryError> {
        let first = next_seq(c, listing);
        for seq in first..first + CLAIM_TRIES {
            if self.store.put_if_absent(&self.bucket, &format::log_key(c, seq), body.clone()).await? {
                return Ok(seq);
            }
        }
        Err(GalleryError::Store(PortError::Unavailable(format!(
            "collection `{c}`: {CLAIM_TRIES} log entries were taken by others while this change waited"
        ))))
    }

    /// Reads an existing collection for a change (keeping what the read
    /// after the change can reuse).
    async fn current(&self, c: &str) -> Result<(State, Reuse), GalleryError> {
        self.check_exists(c).await?;
        self.read_state(c, None, Some(&Reuse::default())).await
    }

    // ----- public API ---------------------------------------------------------

    /// Creates collection `c`; false when it already existed (`default`
    /// always does).
    pub async fn create_collection(&self, c: &str) -> Result<bool, GalleryError> {
        names::validate_collection(c)?;
        if c == DEFAULT_COLLECTION {
            self.check_exists(c).await?;
            return Ok(false);
        }
        let marker = format::marker_key(c);
        if self.exists(&marker).await? {
            return Ok(false);
        }
        // One creator at a time clears the leftovers of a delete that
        // stopped half-way: without the lock, a creator that saw no marker
        // could delete the marker (and first changes) of a faster one.
        let lock = format::creating_key(c);
        if !self.store.put_if_absent(&self.bucket, &lock, Marker::body(c)).await? {
            // Another creation is under way (it answers "created"), unless
            // its creator died holding the lock long ago.
            if !self.lock_is_stale(&lock).await? {
                return Ok(false);
            }
            tracing::warn!(collection = c, "a creation of this collection stopped half-way; taking over");
            self.delete_quietly(&lock).await;
            if !self.store.put_if_absent(&self.bucket, &lock, Marker::body(c)).await? {
                return Ok(false);
            }
        }
        let created = async {
            // A creator that finished before we took the lock wrote its marker.
            if self.exists(&marker).await? {
                return Ok(false);
            }
            for meta in self.list(&format::collection_prefix(c)).await? {
                self.delete_quietly(&meta.key).await;
            }
            Ok(self.store.put_if_absent(&self.bucket, &marker, Marker::body(c)).await?)
        }
        .await;
        self.delete_quietly(&lock).await;
        created
    }

    /// Whether the creation lock `lock` is older than [`CREATE_LOCK_STALE`]
    /// (or unreadable): its creator died.
    async fn lock_is_stale(&self, lock: &str) -> Result<bool, GalleryError> {
        let body = match self.store.get(&self.bucket, lock).await {
            Ok(b) => b,
            // Released meanwhile: not stale, the creation just finished.
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        let since = serde_json::from_slice::<Marker>(&body).map(|m| now_ms().saturating_sub(m.created_ms)).unwrap_or(u64::MAX);
        Ok(since > CREATE_LOCK_STALE.as_millis() as u64)
    }

    /// Whether collection `c` exists (`default`: always).
    pub async fn collection_exists(&self, c: &str) -> Result<bool, GalleryError> {
        names::validate_collection(c)?;
        Ok(self.marker_exists(c).await?)
    }

    /// Every collection with its size, sorted by name; `default` included.
    pub async fn collections(&self) -> Result<Vec<CollectionInfo>, GalleryError> {
        let mut names = BTreeSet::from([DEFAULT_COLLECTION.to_string()]);
        for meta in self.list("collections/").await? {
            if let Some(c) = meta.key.strip_prefix("collections/").and_then(|k| k.strip_suffix("/collection.json")) {
                if names::validate_collection(c).is_ok() {
                    names.insert(c.to_string());
                }
            }
        }
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            match self.load(&name).await {
                Ok(snapshot) => {
                    let people = snapshot.faces.iter().map(|f| f.person.as_str()).collect::<HashSet<_>>().len();
                    out.push(CollectionInfo { name, people, faces: snapshot.faces.len() });
                }
                // Deleted since it was listed.
                Err(GalleryError::NoSuchCollection(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Deletes collection `c` and everything in it; false when it did not
    /// exist. Deleting `default` empties it: a `clear` log entry removes
    /// every face before it (the old layout's too) and their thumbnails go;
    /// enrollments that land after it stay whole. Only a `default` whose
    /// log cannot be read is emptied by deleting all its objects.
    pub async fn delete_collection(&self, c: &str) -> Result<bool, GalleryError> {
        names::validate_collection(c)?;
        if c == DEFAULT_COLLECTION {
            match self.clear(c).await {
                Err(GalleryError::Corrupt(why)) => {
                    tracing::warn!(error = %why, "collection `default` is unreadable: emptying it by deleting all its objects");
                }
                cleared => return cleared.map(|_| true),
            }
        }
        let marker = format::marker_key(c);
        // The marker first: writers that see it gone take their change back.
        let existed = self.store.remove(&self.bucket, &marker).await? || c == DEFAULT_COLLECTION;
        let prefix = format::collection_prefix(c);
        // A compactor or writer that was half-way may add an object after a
        // pass: go again until a pass finds nothing.
        for _ in 0..3 {
            let mut keys = self.list(&prefix).await?;
            if c == DEFAULT_COLLECTION {
                keys.extend(self.list(OLD_PEOPLE_PREFIX).await?);
            }
            if keys.is_empty() {
                break;
            }
            for meta in keys {
                self.store.delete(&self.bucket, &meta.key).await?;
            }
        }
        Ok(existed)
    }

    /// Enrolls `faces` for `person` in collection `c`; returns the stored
    /// records (with their new ids). NoSuchCollection when `c` does not
    /// exist (`default` always does).
    pub async fn add_faces(&self, c: &str, person: &str, faces: Vec<NewFace>) -> Result<Vec<FaceRecord>, GalleryError> {
        self.add(c, person, faces, None).await
    }

    /// [`Gallery::add_faces`] under ids the caller chose, once: a face whose
    /// id the collection already has when the change lands is not added
    /// again. With ids derived from a client's idempotency key and photos,
    /// a request sent twice (a retry after a lost answer, or two at once)
    /// enrolls its faces once, and both calls answer the same records.
    /// Ids: 1 to 64 of `[0-9A-Za-z_-]`, all different.
    pub async fn add_faces_once(&self, c: &str, person: &str, faces: Vec<NewFace>, ids: Vec<String>) -> Result<Vec<FaceRecord>, GalleryError> {
        if ids.len() != faces.len() {
            return Err(GalleryError::InvalidFace(format!("{} ids for {} faces", ids.len(), faces.len())));
        }
        if let Some(bad) = ids.iter().find(|id| !format::valid_face_id(id)) {
            return Err(GalleryError::InvalidFace(format!("invalid face id {bad:?}")));
        }
        if ids.iter().collect::<std::collections::HashSet<_>>().len() != ids.len() {
            return Err(GalleryError::InvalidFace("two faces with one id".into()));
        }
        self.add(c, person, faces, Some(ids)).await
    }

    async fn add(&self, c: &str, person: &str, faces: Vec<NewFace>, ids: Option<Vec<String>>) -> Result<Vec<FaceRecord>, GalleryError> {
        names::validate_collection(c)?;
        names::validate_person(person)?;
        for (i, f) in faces.iter().enumerate() {
            if f.model.is_empty() {
                return Err(GalleryError::InvalidFace(format!("face {i} has no model id")));
            }
            if f.embedding.is_empty() || !f.embedding.iter().all(|v| v.is_finite()) {
                return Err(GalleryError::InvalidFace(format!("face {i} has an empty or non-finite embedding")));
            }
        }
        self.check_exists(c).await?;
        if faces.is_empty() {
            return Ok(Vec::new());
        }
        let once = ids.is_some();
        let mut ids = ids.map(Vec::into_iter);
        let created_ms = now_ms();
        let mut records = Vec::with_capacity(faces.len());
        let mut thumbs = Vec::new();
        for f in faces {
            let id = ids.as_mut().and_then(Iterator::next).unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
            if let Some(jpeg) = f.thumbnail {
                thumbs.push((format::thumb_key(c, &id), jpeg));
            }
            records.push(FaceRecord { id, person: person.to_string(), model: f.model, embedding: f.embedding, created_ms });
        }
        // Thumbnails first: a face never shows up without its thumbnail. A
        // failed change removes its thumbnails again, unless its ids were
        // chosen by the caller: an earlier call may have stored those faces.
        for (i, (key, jpeg)) in thumbs.iter().enumerate() {
            if let Err(e) = self.store.put(&self.bucket, key, jpeg.clone()).await {
                if !once {
                    for (done, _) in &thumbs[..i] {
                        self.delete_quietly(done).await;
                    }
                }
                return Err(e.into());
            }
        }
        let entry = LogEntry::Add { faces: records, once };
        if let Err(e) = self.append(c, &entry, None, None).await {
            if !once {
                for (key, _) in &thumbs {
                    self.delete_quietly(key).await;
                }
            }
            return Err(e);
        }
        let LogEntry::Add { faces, .. } = entry else { unreachable!("built as an add above") };
        Ok(faces)
    }

    /// Every face of collection `c` now. NoSuchCollection when it does not
    /// exist.
    pub async fn load(&self, c: &str) -> Result<Snapshot, GalleryError> {
        names::validate_collection(c)?;
        if !self.marker_exists(c).await? {
            return Err(GalleryError::NoSuchCollection(c.to_string()));
        }
        let (state, _) = self.read_state(c, None, None).await?;
        Ok(Snapshot { collection: c.to_string(), generation: state.generation(), faces: state.faces })
    }

    /// The people of collection `c` with their face counts, sorted by name.
    pub async fn people(&self, c: &str) -> Result<Vec<PersonSummary>, GalleryError> {
        Ok(self.load(c).await?.people())
    }

    /// The faces of `person` in collection `c` (empty: unknown person).
    pub async fn faces_of(&self, c: &str, person: &str) -> Result<Vec<FaceRecord>, GalleryError> {
        names::validate_person_lookup(person)?;
        let mut faces = self.load(c).await?.faces;
        faces.retain(|f| f.person == person);
        Ok(faces)
    }

    /// Removes every face of `person`; returns how many faces this call
    /// removed (0: unknown person, or removed by a concurrent call first:
    /// the answers of concurrent calls add up to the faces there were).
    pub async fn remove_person(&self, c: &str, person: &str) -> Result<usize, GalleryError> {
        names::validate_collection(c)?;
        names::validate_person_lookup(person)?;
        let (state, reuse) = self.current(c).await?;
        let seen: Vec<String> = state.faces.iter().filter(|f| f.person == person).map(|f| f.id.clone()).collect();
        if seen.is_empty() {
            return Ok(0);
        }
        let entry = LogEntry::RemovePerson { person: person.to_string() };
        self.remove(c, &entry, state.listing, reuse, seen).await
    }

    /// Appends a removing `entry` to `c` (read just before: `listing`,
    /// `reuse`, the ids it may remove `seen`) and deletes the thumbnails of
    /// the faces it removed; when that is not known (folded before we
    /// looked), of those seen before that are gone. An id that is back
    /// after it (an enrollment retried with its idempotency key, whose
    /// faces keep their ids) keeps its thumbnail. Returns how many faces it
    /// removed.
    async fn remove(&self, c: &str, entry: &LogEntry, listing: Listing, reuse: Reuse, seen: Vec<String>) -> Result<usize, GalleryError> {
        let done = self.append(c, entry, Some(listing), Some(reuse)).await?;
        self.delete_removed_thumbnails(c, &done, &seen).await;
        Ok(done.outcome.changed)
    }

    /// Deletes the thumbnails of the faces the appended entry `done`
    /// removed (when not known: of those in `seen`), except ids back after
    /// it. The compaction that folds the entry sweeps them again
    /// ([`Self::sweep_thumbnails`]), catching faces enrolled between the
    /// writer's read and its entry.
    async fn delete_removed_thumbnails(&self, c: &str, done: &Appended, seen: &[String]) {
        let now: HashSet<&str> = done.after.iter().flat_map(|s| s.faces.iter().map(|f| f.id.as_str())).collect();
        let gone = done.removed.as_deref().unwrap_or(seen);
        self.delete_thumbnails(c, gone.iter().map(String::as_str).filter(|id| !now.contains(id))).await;
    }

    /// Appends a `clear` entry to `c` (when it has faces) and folds it at
    /// once, which deletes the thumbnails of the faces it removed (and when
    /// another writer folded it first, deletes them itself too); returns how
    /// many it removed. Writers never see the collection missing, so one
    /// whose thumbnails were written before the clear but whose faces land
    /// after it keeps both.
    async fn clear(&self, c: &str) -> Result<usize, GalleryError> {
        let (state, reuse) = self.current(c).await?;
        let seen: Vec<String> = state.faces.iter().map(|f| f.id.clone()).collect();
        if seen.is_empty() {
            return Ok(0);
        }
        let done = self.append(c, &LogEntry::Clear, Some(state.listing), Some(reuse)).await?;
        // Folded at once: a reader of an older release, which cannot read a
        // `clear` entry, reads the snapshot instead. Our fold swept the
        // thumbnails; when another writer's fold came first (it may have
        // stopped before its sweep) or ours failed, we delete them here.
        match self.compact(c).await {
            Ok(true) => {}
            Ok(false) => self.delete_removed_thumbnails(c, &done, &seen).await,
            Err(e) => {
                tracing::warn!(collection = c, error = %e, "gallery compaction after emptying failed; a later change retries it");
                self.delete_removed_thumbnails(c, &done, &seen).await;
            }
        }
        Ok(done.outcome.changed)
    }

    /// Removes one face; false when there is no such face (or a concurrent
    /// call removed it first: exactly one call answers true).
    pub async fn remove_face(&self, c: &str, face_id: &str) -> Result<bool, GalleryError> {
        names::validate_collection(c)?;
        if !format::valid_face_id(face_id) {
            self.check_exists(c).await?;
            return Ok(false);
        }
        let (state, reuse) = self.current(c).await?;
        if !state.faces.iter().any(|f| f.id == face_id) {
            return Ok(false);
        }
        let entry = LogEntry::RemoveFace { id: face_id.to_string() };
        let done = self.append(c, &entry, Some(state.listing), Some(reuse)).await?;
        // Gone for good (ids are never reused), whoever removed it.
        if done.after.is_none_or(|s| !s.faces.iter().any(|f| f.id == face_id)) {
            self.delete_quietly(&format::thumb_key(c, face_id)).await;
        }
        Ok(done.outcome.changed > 0)
    }

    /// Renames person `from` to `to`; returns how many faces moved (0:
    /// unknown `from`, or moved or removed by a concurrent call first).
    /// Conflict when `to` is already enrolled, including by a concurrent
    /// call that came first in the log: two people are never merged.
    pub async fn rename_person(&self, c: &str, from: &str, to: &str) -> Result<usize, GalleryError> {
        names::validate_collection(c)?;
        names::validate_person_lookup(from)?;
        names::validate_person(to)?;
        let (state, reuse) = self.current(c).await?;
        let moved = state.faces.iter().filter(|f| f.person == from).count();
        if moved == 0 || from == to {
            return Ok(moved);
        }
        let taken = || GalleryError::Conflict(format!("`{to}` is already enrolled in collection `{c}`"));
        if state.faces.iter().any(|f| f.person == to) {
            return Err(taken());
        }
        let entry = LogEntry::Rename { from: from.to_string(), to: to.to_string() };
        let done = self.append(c, &entry, Some(state.listing), Some(reuse)).await?;
        if done.outcome.conflict {
            return Err(taken());
        }
        Ok(done.outcome.changed)
    }

    /// The thumbnail of a face, if one was stored.
    pub async fn thumbnail(&self, c: &str, face_id: &str) -> Result<Option<Bytes>, GalleryError> {
        names::validate_collection(c)?;
        if !format::valid_face_id(face_id) {
            return Ok(None);
        }
        Ok(self.get_opt(&format::thumb_key(c, face_id)).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem_gallery() -> Gallery {
        let store = facefleet_ports::memory::MemStore::new();
        let store: Arc<dyn ObjectStore> = Arc::new(store);
        Gallery::new(store, "g").with_compact_after(100)
    }

    async fn ids(g: &Gallery, c: &str) -> Vec<String> {
        g.load(c).await.unwrap().faces.into_iter().map(|f| f.id).collect()
    }

    async fn log_seqs(g: &Gallery, c: &str) -> Vec<u64> {
        let p = format::log_prefix(c);
        g.listing(c).await.unwrap().log.iter().filter_map(|m| format::log_seq(&p, &m.key)).collect()
    }

    fn face(embedding: f32) -> Vec<NewFace> {
        vec![NewFace::new(vec![embedding], "m")]
    }

    /// Writers that listed the same log take the next free numbers.
    #[tokio::test]
    async fn log_numbers_are_claimed_in_order() {
        let g = mem_gallery();
        g.store.create_bucket("g").await.unwrap();
        let c = DEFAULT_COLLECTION;
        g.add_faces(c, "Ann", face(1.0)).await.unwrap();
        let listing = g.listing(c).await.unwrap();
        assert_eq!(next_seq(c, &listing), 2);
        let body = Bytes::from_static(b"{}");
        assert_eq!(g.claim(c, &listing, &body).await.unwrap(), 2);
        assert_eq!(g.claim(c, &listing, &body).await.unwrap(), 3, "2 is taken");
        g.store.delete("g", &format::log_key(c, 2)).await.unwrap();
        g.store.delete("g", &format::log_key(c, 3)).await.unwrap();
        assert!(g.compact(c).await.unwrap());
        // After a compaction the snapshot's number counts.
        let listing = g.listing(c).await.unwrap();
        assert!(listing.log.is_empty());
        assert_eq!(next_seq(c, &listing), 2);
    }

    /// A slow compactor writes a snapshot that a faster one already passed:
    /// it is removed again, and no log entry or other snapshot is deleted.
    #[tokio::test]
    async fn a_stale_compactor_deletes_nothing() {
        let g = mem_gallery();
        g.store.create_bucket("g").await.unwrap();
        let c = DEFAULT_COLLECTION;
        let e0 = g.add_faces(c, "Ann", face(1.0)).await.unwrap();
        assert!(g.compact(c).await.unwrap());
        // A lists the log before `e` is written...
        let before_e = g.listing(c).await.unwrap();
        let e = g.add_faces(c, "Bob", face(2.0)).await.unwrap();
        // ...B reads after, holding snapshot 1 and entry 2.
        let (b, _) = g.read_state(c, None, None).await.unwrap();
        assert_eq!((b.generation(), b.seq), (1, 2));
        // A has nothing new: it writes nothing.
        let (a, _) = g.read_state(c, Some(before_e), None).await.unwrap();
        assert!(!g.compact_state(c, &a).await.unwrap());
        // C folds entries 2 and 3 first.
        let f = g.add_faces(c, "Cid", face(3.0)).await.unwrap();
        assert!(g.compact(c).await.unwrap());
        assert!(log_seqs(&g, c).await.is_empty());
        // B's snapshot 2 is accepted by the store but stale.
        assert!(!g.compact_state(c, &b).await.unwrap(), "a stale compaction must report it lost");
        let mut want = vec![e0[0].id.clone(), e[0].id.clone(), f[0].id.clone()];
        want.sort();
        let mut got = ids(&g, c).await;
        got.sort();
        assert_eq!(got, want);
        let snaps = g.listing(c).await.unwrap().snapshots;
        assert_eq!(snaps.len(), 1, "the stale snapshot stays behind: {snaps:?}");
        assert!(snaps[0].key.ends_with("000000000003.bin"));
        assert_eq!(g.load(c).await.unwrap().generation, 2);
    }

    /// A writer whose number was used and folded meanwhile: its entry is
    /// ignored by everybody, and it claims another number.
    #[tokio::test]
    async fn a_late_claim_is_ignored_and_claimed_again() {
        let g = mem_gallery();
        g.store.create_bucket("g").await.unwrap();
        let c = DEFAULT_COLLECTION;
        g.add_faces(c, "Ann", face(1.0)).await.unwrap();
        let stale = g.listing(c).await.unwrap();
        g.add_faces(c, "Bob", face(2.0)).await.unwrap();
        assert!(g.compact(c).await.unwrap());
        // Number 2 (Bob's add) is folded and deleted: a late claim of it
        // succeeds, but has no effect on anybody...
        let late = LogRecord { writer: "late".into(), change: LogEntry::RemovePerson { person: "Ann".into() } };
        assert!(g.claim(c, &stale, &Bytes::from(serde_json::to_vec(&late).unwrap())).await.unwrap() == 2);
        assert_eq!(g.people(c).await.unwrap().len(), 2, "a late entry was applied");
        g.store.delete("g", &format::log_key(c, 2)).await.unwrap();
        // ...and a writer that made one finds out and claims again.
        let entry = LogEntry::RemovePerson { person: "Ann".into() };
        let done = g.append(c, &entry, Some(stale), None).await.unwrap();
        assert_eq!(done.outcome, Outcome { changed: 1, conflict: false });
        assert_eq!(log_seqs(&g, c).await, [3], "the late entry is gone");
        assert_eq!(g.people(c).await.unwrap(), vec![PersonSummary { name: "Bob".into(), faces: 1 }]);
    }

    /// A writer whose entry was folded before it looked finds its outcome
    /// in the snapshot.
    #[tokio::test]
    async fn an_outcome_folded_before_its_writer_looked_is_in_the_snapshot() {
        let g = mem_gallery();
        g.store.create_bucket("g").await.unwrap();
        let c = DEFAULT_COLLECTION;
        g.add_faces(c, "Ann", face(1.0)).await.unwrap();
        g.add_faces(c, "Ann", face(2.0)).await.unwrap();
        g.add_faces(c, "Bob", face(3.0)).await.unwrap();
        let listing = g.listing(c).await.unwrap();
        let record = |id: &str, change| Bytes::from(serde_json::to_vec(&LogRecord { writer: id.into(), change }).unwrap());
        let first = g.claim(c, &listing, &record("w1", LogEntry::RemovePerson { person: "Ann".into() })).await.unwrap();
        let second = g.claim(c, &listing, &record("w2", LogEntry::RemovePerson { person: "Ann".into() })).await.unwrap();
        let third = g.claim(c, &listing, &record("w3", LogEntry::Rename { from: "Bob".into(), to: "Cid".into() })).await.unwrap();
        let fourth = g.claim(c, &listing, &record("w4", LogEntry::Rename { from: "Ann".into(), to: "Cid".into() })).await.unwrap();
        assert_eq!((first, second, third, fourth), (4, 5, 6, 7));
        // Before compaction, from the log...
        let (state, _) = g.read_state(c, None, None).await.unwrap();
        let outcome = |state: &State, seq, id| match state.outcome_of(seq, id) {
            Resolved::Mine(o, _) => o,
            other => panic!("entry {seq}: {other:?}"),
        };
        assert_eq!(outcome(&state, 4, "w1"), Outcome { changed: 2, conflict: false });
        assert_eq!(outcome(&state, 5, "w2"), Outcome { changed: 0, conflict: false });
        assert_eq!(outcome(&state, 6, "w3"), Outcome { changed: 1, conflict: false });
        assert_eq!(outcome(&state, 7, "w4"), Outcome { changed: 0, conflict: false }, "Ann is gone by then");
        assert!(matches!(&state.outcome_of(4, "w2"), Resolved::Replaced), "w1's entry holds w2's number");
        // ...and after it, from the snapshot.
        assert!(g.compact(c).await.unwrap());
        let (folded, _) = g.read_state(c, None, None).await.unwrap();
        assert!(folded.applied.is_empty());
        for (seq, id) in [(4, "w1"), (5, "w2"), (6, "w3"), (7, "w4")] {
            assert_eq!(outcome(&folded, seq, id), outcome(&state, seq, id), "entry {seq}");
        }
        assert!(matches!(folded.outcome_of(5, "someone else"), Resolved::Late));
        assert_eq!(folded.faces, state.faces);
        // The outcomes outlive further compactions, up to RECENT_OUTCOMES.
        g.add_faces(c, "Dan", face(4.0)).await.unwrap();
        assert!(g.compact(c).await.unwrap());
        let (later, _) = g.read_state(c, None, None).await.unwrap();
        assert_eq!(outcome(&later, 6, "w3"), Outcome { changed: 1, conflict: false });
        assert_eq!(later.base.recent.iter().map(|r| r.seq).collect::<Vec<_>>(), (1..=8).collect::<Vec<_>>());
    }

    /// Folding a removal deletes the thumbnails of every face it removed,
    /// also when its writer died right after appending it (or looked only
    /// after the fold, knowing only the faces it had seen before); an id
    /// back after it keeps its thumbnail.
    #[tokio::test]
    async fn a_fold_sweeps_the_thumbnails_of_what_it_removed() {
        let g = mem_gallery();
        g.store.create_bucket("g").await.unwrap();
        let c = DEFAULT_COLLECTION;
        let thumbed = |v: f32| vec![NewFace::new(vec![v], "m").with_thumbnail(Bytes::from_static(b"jpeg"))];
        let retried = vec!["retried".to_string()];
        let mut ids = Vec::new();
        for (person, v) in [("Ann", 1.0), ("Bob", 2.0), ("Ann", 3.0)] {
            ids.push(g.add_faces(c, person, thumbed(v)).await.unwrap().remove(0).id);
        }
        g.add_faces_once(c, "Ann", thumbed(4.0), retried.clone()).await.unwrap();
        let listing = g.listing(c).await.unwrap();
        let record = LogRecord { writer: "died".into(), change: LogEntry::RemovePerson { person: "Ann".into() } };
        g.claim(c, &listing, &Bytes::from(serde_json::to_vec(&record).unwrap())).await.unwrap();
        // The enrollment retried with its key lands again after the removal.
        g.add_faces_once(c, "Ann", thumbed(4.0), retried).await.unwrap();
        let has = |id: String| {
            let g = &g;
            async move { g.thumbnail(c, &id).await.unwrap().is_some() }
        };
        assert!(has(ids[0].clone()).await && has(ids[2].clone()).await, "nobody swept yet");
        assert!(g.compact(c).await.unwrap());
        assert!(!has(ids[0].clone()).await, "removed, its thumbnail stayed");
        assert!(!has(ids[2].clone()).await, "removed, its thumbnail stayed");
        assert!(has(ids[1].clone()).await, "Bob was not removed");
        assert!(has("retried".into()).await, "back after the removal");
        assert_eq!(g.faces_of(c, "Ann").await.unwrap().len(), 1);
    }

    /// A compactor whose read is older than an enrollment retried with its
    /// key (its ids back after their removal) keeps that enrollment's
    /// thumbnails, whether its snapshot is then the highest or stale.
    #[tokio::test]
    async fn a_late_compactor_keeps_the_thumbnails_of_ids_back() {
        let g = mem_gallery();
        g.store.create_bucket("g").await.unwrap();
        let c = DEFAULT_COLLECTION;
        let thumbed = || vec![NewFace::new(vec![1.0], "m").with_thumbnail(Bytes::from_static(b"jpeg"))];
        for (id, stale) in [("dee-1", false), ("dee-2", true)] {
            g.add_faces_once(c, "Dee", thumbed(), vec![id.into()]).await.unwrap();
            g.remove_person(c, "Dee").await.unwrap();
            assert_eq!(g.thumbnail(c, id).await.unwrap(), None, "its remover deletes it");
            let (old, _) = g.read_state(c, None, None).await.unwrap();
            g.add_faces_once(c, "Dee", thumbed(), vec![id.into()]).await.unwrap();
            if stale {
                assert!(g.compact(c).await.unwrap());
            }
            assert_eq!(g.compact_state(c, &old).await.unwrap(), !stale);
            assert!(g.thumbnail(c, id).await.unwrap().is_some(), "{id}: a face back lost its thumbnail");
            assert_eq!(g.faces_of(c, "Dee").await.unwrap().len(), 1);
            g.remove_person(c, "Dee").await.unwrap();
        }
    }

    /// A reader that listed no snapshot and is then overtaken by the
    /// migration reads again instead of missing the old faces; every reader
    /// gives the old faces the same ids.
    #[tokio::test]
    async fn a_reader_overtaken_by_the_migration_reads_again() {
        let g = mem_gallery();
        g.store.create_bucket("g").await.unwrap();
        let c = DEFAULT_COLLECTION;
        for key in ["people/Ann/0b6f7e52-1f6b-4e7a-9d55-0c2f6b1d0001.json", "people/Ann/not an id.json", "people/Bob/x.y.json"] {
            let name = key.split('/').nth(1).unwrap();
            let body = serde_json::json!({"name": name, "recognizer": "m", "embedding": [1.0]});
            g.store.put("g", key, Bytes::from(body.to_string())).await.unwrap();
        }
        let one = g.old_layout_base(c).await.unwrap().unwrap();
        let two = g.old_layout_base(c).await.unwrap().unwrap();
        assert_eq!(one.faces.len(), 3);
        assert_eq!(one.faces, two.faces, "old faces got different ids");
        assert_eq!(one.faces[0].id, "0b6f7e52-1f6b-4e7a-9d55-0c2f6b1d0001");
        let stale = g.listing(c).await.unwrap();
        let (first, _) = g.read_state(c, Some(stale.clone()), Some(&Reuse::default())).await.unwrap();
        assert_eq!(first.faces, one.faces);
        // `first` migrated (a snapshot, the mark, the old objects gone).
        assert!(g.store.head("g", MIGRATED_KEY).await.unwrap().is_some());
        assert!(g.store.list_all("g", "people/Ann/").await.unwrap().is_empty());
        let (late, _) = g.read_state(c, Some(stale), None).await.unwrap();
        assert_eq!(late.faces, first.faces);
        assert!(late.base.key.is_some(), "read from the snapshot");
        // Emptied half-way (snapshot gone, mark left): empty, not stuck.
        g.store.delete("g", late.base.key.as_deref().unwrap()).await.unwrap();
        assert!(g.load(c).await.unwrap().faces.is_empty());
        assert!(g.delete_collection(c).await.unwrap());
        assert!(g.load(c).await.unwrap().faces.is_empty());
        g.add_faces(c, "Cy", vec![NewFace::new(vec![1.0], "m")]).await.unwrap();
        assert_eq!(g.load(c).await.unwrap().faces.len(), 1);
    }

    /// A compactor that was half-way when its collection was deleted does
    /// not bring it back.
    #[tokio::test]
    async fn a_compactor_does_not_resurrect_a_deleted_collection() {
        let g = mem_gallery();
        g.store.create_bucket("g").await.unwrap();
        g.create_collection("t").await.unwrap();
        g.add_faces("t", "Ann", vec![NewFace::new(vec![1.0], "m")]).await.unwrap();
        let (state, _) = g.read_state("t", None, None).await.unwrap();
        assert!(g.delete_collection("t").await.unwrap());
        assert!(!g.compact_state("t", &state).await.unwrap());
        assert!(g.store.list_all("g", "collections/t/").await.unwrap().is_empty());
        assert!(matches!(g.load("t").await, Err(GalleryError::NoSuchCollection(_))));
    }

    /// A log entry that vanishes between the listing and its get (a
    /// compaction finished meanwhile) makes the reader start over.
    #[tokio::test]
    async fn a_vanished_entry_means_reading_again() {
        let g = mem_gallery();
        g.store.create_bucket("g").await.unwrap();
        let c = DEFAULT_COLLECTION;
        g.add_faces(c, "Ann", vec![NewFace::new(vec![1.0], "m")]).await.unwrap();
        let stale = g.listing(c).await.unwrap();
        assert!(g.compact(c).await.unwrap());
        let before = g.reads();
        let (state, _) = g.read_state(c, Some(stale), None).await.unwrap();
        assert_eq!(state.faces.len(), 1);
        assert_eq!(state.generation(), 1);
        // The old-layout check (`default` had no snapshot yet) and the
        // failed get, then a fresh listing (2) and the snapshot.
        assert_eq!(g.reads() - before, 5);
    }

    #[test]
    fn snapshot_people_are_counted_and_sorted() {
        let f = |id: &str, person: &str| FaceRecord { id: id.into(), person: person.into(), model: "m".into(), embedding: vec![1.0], created_ms: 0 };
        let s = Snapshot { collection: "c".into(), generation: 0, faces: vec![f("1", "Zoe"), f("2", "Ann"), f("3", "Zoe")] };
        assert_eq!(
            s.people(),
            vec![PersonSummary { name: "Ann".into(), faces: 1 }, PersonSummary { name: "Zoe".into(), faces: 2 }]
        );
    }
}
