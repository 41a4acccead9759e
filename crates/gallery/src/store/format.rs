//! What the gallery bucket holds, byte for byte: the keys of a collection,
//! the binary snapshot format and the log entries.
//!
//! Log entry (`collections/<c>/log/<seq: 13 digits>.json`): a [`LogRecord`],
//! the change ([`LogEntry`]) plus the random id of the writer's call, e.g.
//! `{"writer":"9f0c…","op":"remove_person","person":"Ann"}`. `seq` is the
//! entry's place in the collection's history (1, 2, …), claimed with
//! `put_if_absent`.
//!
//! Snapshot (`collections/<c>/snapshots/<seq: 12 digits>.bin`, named after
//! the last log entry it folds):
//!
//! ```text
//! "FFSNAP02"                      8 bytes, the magic
//! header length                   u32, little endian
//! header                          JSON: {"generation", "seq",
//!                                   "recent": [{"seq","writer","changed","conflict"}],
//!                                   "faces": [{"id","person","model","created_ms","dim"}]}
//! embeddings                      f32 little endian, one row of `dim` values
//!                                 per face, in the header's face order
//! ```
//!
//! `recent` holds the [`Outcome`] of the last [`RECENT_OUTCOMES`] folded
//! entries, so that a writer whose entry was compacted before it could look
//! learns what its change did.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::FaceRecord;

/// First bytes of every snapshot.
pub(crate) const MAGIC: &[u8; 8] = b"FFSNAP02";

/// Outcomes of this many of the last folded log entries are kept in each
/// snapshot's header.
pub(crate) const RECENT_OUTCOMES: usize = 256;

/// Digits of a log entry's sequence number in its key.
const LOG_DIGITS: usize = 13;

/// Everything of collection `c` lives under this prefix.
pub(crate) fn collection_prefix(c: &str) -> String {
    format!("collections/{c}/")
}

/// The object that says a collection exists.
pub(crate) fn marker_key(c: &str) -> String {
    format!("collections/{c}/collection.json")
}

/// Held (`put_if_absent`) by the one creator of collection `c` at a time;
/// outside the collection's prefix, so clearing leftovers keeps it.
pub(crate) fn creating_key(c: &str) -> String {
    format!("collections/{c}.creating")
}

/// Prefix of a collection's snapshots.
pub(crate) fn snapshots_prefix(c: &str) -> String {
    format!("collections/{c}/snapshots/")
}

/// Key of the snapshot that folds the log up to entry `seq`.
pub(crate) fn snapshot_key(c: &str, seq: u64) -> String {
    format!("collections/{c}/snapshots/{seq:012}.bin")
}

/// Prefix of a collection's log.
pub(crate) fn log_prefix(c: &str) -> String {
    format!("collections/{c}/log/")
}

/// Key of log entry `seq`.
pub(crate) fn log_key(c: &str, seq: u64) -> String {
    format!("collections/{c}/log/{seq:013}.json")
}

/// Key of a face's thumbnail.
pub(crate) fn thumb_key(c: &str, face_id: &str) -> String {
    format!("collections/{c}/thumbs/{face_id}.jpg")
}

/// The sequence number of a snapshot key under `prefix` (`None`: not a
/// snapshot).
pub(crate) fn snapshot_seq(prefix: &str, key: &str) -> Option<u64> {
    let digits = key.strip_prefix(prefix)?.strip_suffix(".bin")?;
    (digits.len() == 12 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok())?
}

/// The sequence number of a log key under `prefix` (`None`: not a log
/// entry).
pub(crate) fn log_seq(prefix: &str, key: &str) -> Option<u64> {
    let digits = key.strip_prefix(prefix)?.strip_suffix(".json")?;
    (digits.len() == LOG_DIGITS && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok())?
}

/// True for a face id that can be part of a key (`[A-Za-z0-9_-]`, 1 to 64).
pub(crate) fn valid_face_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// One change of a collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum LogEntry {
    /// Faces enrolled.
    Add {
        /// The new faces.
        faces: Vec<FaceRecord>,
        /// Faces whose id the collection already has at this point are not
        /// added again: their ids come from the client's idempotency key
        /// (`Gallery::add_faces_once`), so a retried request adds nothing
        /// twice. Absent (false) in entries written before it existed.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        once: bool,
    },
    /// Every face of a person removed.
    RemovePerson {
        /// Whose faces.
        person: String,
    },
    /// One face removed.
    RemoveFace {
        /// Which face.
        id: String,
    },
    /// A person renamed (their faces move to the new name), unless the new
    /// name is taken at that point of the log: then nothing happens.
    Rename {
        /// Old name.
        from: String,
        /// New name.
        to: String,
    },
    /// Every face at this point removed: how `default` is emptied. An
    /// enrollment whose entry comes after it stays whole.
    Clear,
}

/// A log entry as stored: the change and the id of the call that wrote it
/// (how a writer recognises its own entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct LogRecord {
    /// Random id of the writing call (32 hex digits).
    pub(crate) writer: String,
    /// The change.
    #[serde(flatten)]
    pub(crate) change: LogEntry,
}

/// What one log entry did when applied at its place in the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Outcome {
    /// Faces added, removed or renamed.
    pub(crate) changed: usize,
    /// A rename that found its new name taken (and did nothing).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) conflict: bool,
}

impl Outcome {
    fn changed(changed: usize) -> Self {
        Self { changed, conflict: false }
    }
}

/// The outcome of a folded log entry, as kept in a snapshot header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Recent {
    /// The entry's sequence number.
    pub(crate) seq: u64,
    /// The id of the call that wrote it.
    pub(crate) writer: String,
    /// What it did.
    #[serde(flatten)]
    pub(crate) outcome: Outcome,
}

impl LogEntry {
    /// Applies the change to `faces` (kept in enrolment order) and says
    /// what it did; `removed` receives the ids of the faces it removed.
    ///
    /// This is the one rule every reader, writer and compactor follows, so
    /// that the state after entry `n` is the same for all: a remove removes
    /// what is there at that point; a rename onto a name that has faces at
    /// that point is a conflict and changes nothing (two people are never
    /// merged). A reader applies each entry once (entries up to the
    /// snapshot's `seq` are in it), and face ids are fresh, so an `add`
    /// never repeats a face.
    pub(crate) fn apply(&self, faces: &mut Vec<FaceRecord>, removed: &mut Vec<String>) -> Outcome {
        match self {
            LogEntry::Add { faces: new, once: false } => {
                faces.extend(new.iter().cloned());
                Outcome::changed(new.len())
            }
            LogEntry::Add { faces: new, once: true } => {
                let wanted: HashSet<&str> = new.iter().map(|f| f.id.as_str()).collect();
                let present: HashSet<&str> = faces.iter().map(|f| f.id.as_str()).filter(|id| wanted.contains(id)).collect();
                let fresh: Vec<FaceRecord> = new.iter().filter(|f| !present.contains(f.id.as_str())).cloned().collect();
                let added = fresh.len();
                faces.extend(fresh);
                Outcome::changed(added)
            }
            LogEntry::RemovePerson { person } => {
                let before = removed.len();
                faces.retain(|f| {
                    let keep = f.person != *person;
                    if !keep {
                        removed.push(f.id.clone());
                    }
                    keep
                });
                Outcome::changed(removed.len() - before)
            }
            LogEntry::RemoveFace { id } => {
                let before = faces.len();
                faces.retain(|f| f.id != *id);
                let changed = before - faces.len();
                if changed > 0 {
                    removed.push(id.clone());
                }
                Outcome::changed(changed)
            }
            LogEntry::Clear => {
                let cleared = faces.len();
                removed.extend(faces.drain(..).map(|f| f.id));
                Outcome::changed(cleared)
            }
            LogEntry::Rename { from, to } => {
                let moved = faces.iter().filter(|f| f.person == *from).count();
                if moved == 0 || from == to {
                    return Outcome::changed(moved);
                }
                if faces.iter().any(|f| f.person == *to) {
                    return Outcome { changed: 0, conflict: true };
                }
                for f in faces.iter_mut().filter(|f| f.person == *from) {
                    f.person.clone_from(to);
                }
                Outcome::changed(moved)
            }
        }
    }
}

#[derive(Serialize)]
struct HeaderOut<'a> {
    generation: u64,
    seq: u64,
    recent: &'a [Recent],
    faces: Vec<HeaderFaceOut<'a>>,
}

#[derive(Serialize)]
struct HeaderFaceOut<'a> {
    id: &'a str,
    person: &'a str,
    model: &'a str,
    created_ms: u64,
    dim: usize,
}

#[derive(Deserialize)]
struct HeaderIn {
    generation: u64,
    seq: u64,
    recent: Vec<Recent>,
    faces: Vec<HeaderFaceIn>,
}

#[derive(Deserialize)]
struct HeaderFaceIn {
    id: String,
    person: String,
    model: String,
    created_ms: u64,
    dim: usize,
}

/// A snapshot as stored.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DecodedSnapshot {
    /// How many compactions led to it (informative).
    pub(crate) generation: u64,
    /// The last log entry it folds (every entry up to it is in it).
    pub(crate) seq: u64,
    /// Outcomes of the last folded entries, by increasing `seq`.
    pub(crate) recent: Vec<Recent>,
    /// Its faces.
    pub(crate) faces: Vec<FaceRecord>,
}

/// Encodes a snapshot.
pub(crate) fn encode_snapshot(generation: u64, seq: u64, recent: &[Recent], faces: &[FaceRecord]) -> Vec<u8> {
    let header = HeaderOut {
        generation,
        seq,
        recent,
        faces: faces
            .iter()
            .map(|f| HeaderFaceOut {
                id: &f.id,
                person: &f.person,
                model: &f.model,
                created_ms: f.created_ms,
                dim: f.embedding.len(),
            })
            .collect(),
    };
    let header = serde_json::to_vec(&header).expect("a snapshot header serialises");
    let floats: usize = faces.iter().map(|f| f.embedding.len()).sum();
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + header.len() + floats * 4);
    out.extend_from_slice(MAGIC);
    let header_len = u32::try_from(header.len()).expect("a snapshot header under 4 GiB");
    out.extend_from_slice(&header_len.to_le_bytes());
    out.extend_from_slice(&header);
    for f in faces {
        for v in &f.embedding {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

/// Decodes a snapshot; the error says what is wrong with it.
pub(crate) fn decode_snapshot(bytes: &[u8]) -> Result<DecodedSnapshot, String> {
    let rest = bytes.strip_prefix(MAGIC.as_slice()).ok_or("not a gallery snapshot (bad magic)")?;
    let (len, rest) = rest.split_first_chunk::<4>().ok_or("truncated before the header length")?;
    let len = u32::from_le_bytes(*len) as usize;
    if len > rest.len() {
        return Err(format!("header of {len} bytes but only {} bytes follow", rest.len()));
    }
    let (header, mut floats) = rest.split_at(len);
    let header: HeaderIn = serde_json::from_slice(header).map_err(|e| format!("unreadable header: {e}"))?;
    let want: usize = header.faces.iter().try_fold(0usize, |acc, f| acc.checked_add(f.dim.checked_mul(4)?)).ok_or("face dimensions overflow")?;
    if want != floats.len() {
        return Err(format!("the header announces {want} bytes of embeddings, {} are there", floats.len()));
    }
    let faces = header
        .faces
        .into_iter()
        .map(|f| {
            let (row, tail) = floats.split_at(f.dim * 4);
            floats = tail;
            let embedding = row.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            FaceRecord { id: f.id, person: f.person, model: f.model, embedding, created_ms: f.created_ms }
        })
        .collect();
    Ok(DecodedSnapshot { generation: header.generation, seq: header.seq, recent: header.recent, faces })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(id: &str, person: &str, embedding: Vec<f32>) -> FaceRecord {
        FaceRecord { id: id.into(), person: person.into(), model: "m".into(), embedding, created_ms: 7 }
    }

    #[test]
    fn snapshots_roundtrip_with_mixed_dims() {
        let faces = vec![face("a", "Ann", vec![0.5, -1.25, 3.0]), face("b", "Bob", vec![]), face("c", "Ann", vec![f32::MIN_POSITIVE])];
        let recent = vec![
            Recent { seq: 6, writer: "x".into(), outcome: Outcome { changed: 2, conflict: false } },
            Recent { seq: 7, writer: "y".into(), outcome: Outcome { changed: 0, conflict: true } },
        ];
        let bytes = encode_snapshot(42, 7, &recent, &faces);
        assert_eq!(&bytes[..8], MAGIC);
        let back = decode_snapshot(&bytes).unwrap();
        assert_eq!(back, DecodedSnapshot { generation: 42, seq: 7, recent, faces });
        // The header is documented JSON.
        let len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[12..12 + len]).unwrap();
        assert_eq!(header["recent"][0], serde_json::json!({"seq": 6, "writer": "x", "changed": 2}));
        assert_eq!(header["recent"][1], serde_json::json!({"seq": 7, "writer": "y", "changed": 0, "conflict": true}));
    }

    #[test]
    fn damaged_snapshots_are_refused() {
        let bytes = encode_snapshot(1, 3, &[], &[face("a", "Ann", vec![1.0, 2.0])]);
        assert!(decode_snapshot(&bytes[..bytes.len() - 1]).unwrap_err().contains("embeddings"));
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(decode_snapshot(&extra).is_err());
        let mut magic = bytes.clone();
        magic[0] = b'X';
        assert!(decode_snapshot(&magic).unwrap_err().contains("magic"));
        assert!(decode_snapshot(&bytes[..10]).is_err());
        let mut long = bytes.clone();
        long[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_snapshot(&long).is_err());
        let mut json = bytes;
        json[12] = b'[';
        assert!(decode_snapshot(&json).unwrap_err().contains("header"));
    }

    #[test]
    fn keys_parse_back() {
        let p = snapshots_prefix("c");
        assert_eq!(snapshot_seq(&p, &snapshot_key("c", 17)), Some(17));
        for bad in ["collections/c/snapshots/17.bin", "collections/c/snapshots/00000000001x.bin", "collections/c/snapshots/000000000017.tmp"] {
            assert_eq!(snapshot_seq(&p, bad), None, "{bad}");
        }
        let p = log_prefix("c");
        assert_eq!(log_key("c", 42), "collections/c/log/0000000000042.json");
        assert_eq!(log_seq(&p, &log_key("c", 42)), Some(42));
        for bad in ["collections/c/log/42.json", "collections/c/log/1712345678901-x.json", "collections/c/log/a/0000000000042.json", "collections/c/log/0000000000042.txt", "collections/c/log/000000000004x.json"] {
            assert_eq!(log_seq(&p, bad), None, "{bad}");
        }
        assert!(valid_face_id("0f3c-_A"));
        for bad in ["", "a/b", "..", "a b", &"x".repeat(65)] {
            assert!(!valid_face_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn log_entries_have_the_documented_json_and_apply() {
        let add = LogEntry::Add { faces: vec![face("a", "Ann", vec![1.0])], once: false };
        let v: serde_json::Value = serde_json::to_value(&add).unwrap();
        assert_eq!(v["op"], "add");
        assert_eq!(v["faces"][0]["person"], "Ann");
        assert_eq!(v["faces"][0]["embedding"][0], 1.0);
        let rename = LogEntry::Rename { from: "Ann".into(), to: "Anna".into() };
        assert_eq!(serde_json::to_value(&rename).unwrap(), serde_json::json!({"op": "rename", "from": "Ann", "to": "Anna"}));
        assert_eq!(
            serde_json::to_value(LogEntry::RemovePerson { person: "Bob".into() }).unwrap(),
            serde_json::json!({"op": "remove_person", "person": "Bob"})
        );
        assert_eq!(serde_json::to_value(LogEntry::RemoveFace { id: "b".into() }).unwrap(), serde_json::json!({"op": "remove_face", "id": "b"}));
        for change in [rename.clone(), LogEntry::RemoveFace { id: "b".into() }, add.clone()] {
            let record = LogRecord { writer: "0123".into(), change };
            let json = serde_json::to_value(&record).unwrap();
            assert_eq!(json["writer"], "0123");
            assert_eq!(serde_json::from_value::<LogRecord>(json).unwrap(), record);
        }
        assert_eq!(
            serde_json::to_value(LogRecord { writer: "0123".into(), change: rename.clone() }).unwrap(),
            serde_json::json!({"writer": "0123", "op": "rename", "from": "Ann", "to": "Anna"})
        );
        assert!(serde_json::from_str::<LogRecord>(r#"{"writer":"1","op":"explode"}"#).is_err());
        assert!(serde_json::from_str::<LogRecord>(r#"{"op":"remove_face","id":"b"}"#).is_err(), "no writer id");

        let mut faces = Vec::new();
        let mut removed = Vec::new();
        assert_eq!(add.apply(&mut faces, &mut removed), Outcome::changed(1));
        let more = LogEntry::Add { faces: vec![face("b", "Bob", vec![2.0]), face("c", "Ann", vec![3.0])], once: false };
        assert_eq!(more.apply(&mut faces, &mut removed), Outcome::changed(2));
        assert_eq!(rename.apply(&mut faces, &mut removed), Outcome::changed(2));
        assert_eq!(faces.iter().map(|f| f.person.as_str()).collect::<Vec<_>>(), ["Anna", "Bob", "Anna"]);
        assert_eq!(rename.apply(&mut faces, &mut removed), Outcome::changed(0), "nobody left to rename");
        // Onto a name in use: a conflict, nothing moves.
        let onto_bob = LogEntry::Rename { from: "Anna".into(), to: "Bob".into() };
        assert_eq!(onto_bob.apply(&mut faces, &mut removed), Outcome { changed: 0, conflict: true });
        assert_eq!(faces.iter().map(|f| f.person.as_str()).collect::<Vec<_>>(), ["Anna", "Bob", "Anna"]);
        assert!(removed.is_empty());
        assert_eq!(LogEntry::RemoveFace { id: "a".into() }.apply(&mut faces, &mut removed), Outcome::changed(1));
        assert_eq!(LogEntry::RemoveFace { id: "a".into() }.apply(&mut faces, &mut removed), Outcome::changed(0), "gone already");
        assert_eq!(LogEntry::RemovePerson { person: "Bob".into() }.apply(&mut faces, &mut removed), Outcome::changed(1));
        assert_eq!(LogEntry::RemovePerson { person: "Bob".into() }.apply(&mut faces, &mut removed), Outcome::changed(0));
        assert_eq!(faces.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(), ["c"]);
        assert_eq!(removed, ["a", "b"]);

        // An add `once` leaves out the ids the collection has at that point;
        // a plain add says nothing about it (older entries read the same).
        assert!(!serde_json::to_value(&add).unwrap().as_object().unwrap().contains_key("once"));
        let once = LogEntry::Add { faces: vec![face("c", "Anna", vec![9.0]), face("d", "Anna", vec![4.0])], once: true };
        let json = serde_json::to_value(&once).unwrap();
        assert_eq!(json["once"], true);
        assert_eq!(serde_json::from_value::<LogEntry>(json).unwrap(), once);
        assert_eq!(once.apply(&mut faces, &mut removed), Outcome::changed(1));
        assert_eq!(once.apply(&mut faces, &mut removed), Outcome::changed(0), "the same entry again adds nothing");
        assert_eq!(faces.iter().map(|f| (f.id.as_str(), f.embedding[0])).collect::<Vec<_>>(), [("c", 3.0), ("d", 4.0)]);

        // A clear removes everybody there at its point.
        let clear = LogRecord { writer: "0123".into(), change: LogEntry::Clear };
        let json = serde_json::to_value(&clear).unwrap();
        assert_eq!(json, serde_json::json!({"writer": "0123", "op": "clear"}));
        assert_eq!(serde_json::from_value::<LogRecord>(json).unwrap(), clear);
        removed.clear();
        assert_eq!(LogEntry::Clear.apply(&mut faces, &mut removed), Outcome::changed(2));
        assert!(faces.is_empty());
        assert_eq!(removed, ["c", "d"]);
        assert_eq!(LogEntry::Clear.apply(&mut faces, &mut removed), Outcome::changed(0));
    }
}
