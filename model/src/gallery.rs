//! The gallery of known people: enrolled embeddings, matching, persistence.
//!
//! Embeddings live in one contiguous row-major `f32` matrix (one row per
//! enrolled photo), so matching a query is a single matrix-vector product,
//! split over threads with rayon for large galleries: about 5 ms for 100 000
//! MobileFaceNet rows on a busy 2-core machine (`match/100000` in the
//! `model` benchmark).

use std::collections::HashMap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::{Embedding, RecognizerKind};

/// File magic of a serialised gallery.
const MAGIC: &[u8; 8] = b"FFGALLRY";
/// The only serialisation format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Longest accepted person name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Galleries with at least this many rows are matched on several threads.
const PARALLEL_ROWS: usize = 16_384;
/// Rows per parallel work item.
const CHUNK_ROWS: usize = 4_096;

/// Default similarity threshold of a recognizer: the lowest cosine similarity
/// between a query and its nearest enrolled face that is still answered with
/// that person's name. Calibrated on lfw-dev (see `model/README.md` and the
/// `eval_lfw` example).
pub fn default_threshold(kind: RecognizerKind) -> f32 {
    match kind {
        RecognizerKind::MobileFaceNet => 0.46,
        RecognizerKind::DlibResnet => 0.92,
    }
}

/// The outcome of matching one embedding against a [`Gallery`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Match {
    /// The recognised person, `None` (Unknown) when the best similarity is
    /// below the threshold or the gallery is empty.
    pub name: Option<String>,
    /// Cosine similarity with the nearest enrolled embedding (-1 when the
    /// gallery is empty).
    pub similarity: f32,
    /// The nearest enrolled person even when below the threshold.
    pub nearest: Option<String>,
}

/// Enrolled people of one recognizer, each with one or more embeddings.
#[derive(Debug, Clone, PartialEq)]
pub struct Gallery {
    kind: RecognizerKind,
    threshold: f32,
    /// Person index -> name.
    names: Vec<String>,
    /// Name -> person index.
    index: HashMap<String, u32>,
    /// Row-major `len() x dim` matrix of unit vectors.
    rows: Vec<f32>,
    /// Row -> person index.
    owners: Vec<u32>,
}

impl Gallery {
    /// An empty gallery for `kind`'s embeddings, with `kind`'s
    /// [`default_threshold`].
    pub fn new(kind: RecognizerKind) -> Self {
        Self::with_threshold(kind, default_threshold(kind))
    }

    /// An empty gallery with an explicit similarity threshold.
    pub fn with_threshold(kind: RecognizerKind, threshold: f32) -> Self {
        Gallery {
            kind,
            threshold,
            names: Vec::new(),
            index: HashMap::new(),
            rows: Vec::new(),
            owners: Vec::new(),
        }
    }

    /// The recognizer whose embeddings this gallery holds.
    pub fn recognizer_kind(&self) -> RecognizerKind {
        self.kind
    }

    /// Embedding dimension (that of [`Gallery::recognizer_kind`]).
    pub fn dim(&self) -> usize {
        self.kind.dim()
    }

    /// The similarity threshold below which a face is Unknown.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Changes the similarity threshold.
    pub fn set_threshold(&mut self, threshold: f32) {
        self.threshold = threshold;
    }

    /// Number of enrolled embeddings (all people together).
    pub fn len(&self) -> usize {
        self.owners.len()
    }

    /// True when nobody is enrolled.
    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    /// Enrolled people with their number of embeddings, sorted by name.
    pub fn people(&self) -> Vec<(String, usize)> {
        let mut counts = vec![0usize; self.names.len()];
        for &o in &self.owners {
            counts[o as usize] += 1;
        }
        let mut out: Vec<(String, usize)> = self.names.iter().cloned().zip(counts).collect();
        out.sort();
        out
    }

    /// True when `name` is enrolled.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Adds `embeddings` to `name` (creating the person if new). Each must
    /// have this gallery's dimension and be finite and non-zero; they are
    /// re-normalised to unit length. Nothing is added when any is invalid.
    pub fn enroll(&mut self, name: &str, embeddings: Vec<Embedding>) -> Result<()> {
        validate_name(name)?;
        let dim = self.dim();
        let mut rows = Vec::with_capacity(embeddings.len() * dim);
        for e in &embeddings {
            rows.extend(self.checked_unit(e)?);
        }
        if embeddings.is_empty() {
            return Err(ModelError::InvalidEmbedding(format!(
                "no embeddings given for {name:?}"
            )));
        }
        self.insert_rows(name, rows)
    }

    /// Appends unit-length rows (a multiple of `dim` floats) to `name`.
    fn insert_rows(&mut self, name: &str, rows: Vec<f32>) -> Result<()> {
        let person = match self.index.get(name) {
            Some(&p) => p,
            None => {
                let p = u32::try_from(self.names.len())
                    .map_err(|_| ModelError::InvalidGallery("too many people".into()))?;
                self.names.push(name.to_string());
                self.index.insert(name.to_string(), p);
                p
            }
        };
        let count = rows.len() / self.dim();
        self.rows.extend_from_slice(&rows);
        self.owners.extend(std::iter::repeat_n(person, count));
        Ok(())
    }

    /// Removes `name` and all its embeddings; false when not enrolled.
    pub fn remove(&mut self, name: &str) -> bool {
        let Some(person) = self.index.remove(name) else {
            return false;
        };
        let dim = self.dim();
        let mut rows = Vec::with_capacity(self.rows.len());
        let mut owners = Vec::with_capacity(self.owners.len());
        for (row, &o) in self.rows.chunks_exact(dim).zip(&self.owners) {
            if o != person {
                rows.extend_from_slice(row);
                owners.push(if o > person { o - 1 } else { o });
            }
        }
        self.rows = rows;
        self.owners = owners;
        self.names.remove(person as usize);
        for p in self.index.values_mut() {
            if *p > person {
                *p -= 1;
            }
        }
        true
    }

    /// The nearest enrolled person and its cosine similarity (the best over
    /// that person's embeddings), ignoring the threshold; `None` when empty.
    pub fn nearest(&self, query: &Embedding) -> Result<Option<(&str, f32)>> {
        let q = self.checked_unit(query)?;
        Ok(self
            .best_row(&q)
            .map(|(row, sim)| (self.names[self.owners[row] as usize].as_str(), sim)))
    }

    /// Matches `query` using the gallery's own threshold.
    pub fn identify(&self, query: &Embedding) -> Result<Match> {
        self.identify_with_threshold(query, self.threshold)
    }

    /// Matches `query`: the nearest person if their similarity is at least
    /// `threshold`, Unknown (`name: None`) otherwise.
    pub fn identify_with_threshold(&self, query: &Embedding, threshold: f32) -> Result<Match> {
        Ok(match self.nearest(query)? {
            Some((name, similarity)) => Match {
                name: (similarity >= threshold).then(|| name.to_string()),
                similarity,
                nearest: Some(name.to_string()),
            },
            None => Match {
                name: None,
                similarity: -1.0,
                nearest: None,
            },
        })
    }

    /// Index and similarity of the row most similar to the unit vector `q`.
    fn best_row(&self, q: &[f32]) -> Option<(usize, f32)> {
        let dim = q.len();
        let best_in = |rows: &[f32], first: usize| -> Option<(usize, f32)> {
            let mut best: Option<(usize, f32)> = None;
            for (i, row) in rows.chunks_exact(dim).enumerate() {
                let s = dot(row, q);
                if best.is_none_or(|(_, b)| s > b) {
                    best = Some((first + i, s));
                }
            }
            best
        };
        if self.len() < PARALLEL_ROWS {
            return best_in(&self.rows, 0);
        }
        self.rows
            .par_chunks(CHUNK_ROWS * dim)
            .enumerate()
            .filter_map(|(c, rows)| best_in(rows, c * CHUNK_ROWS))
            .reduce_with(|a, b| if b.1 > a.1 || (b.1 == a.1 && b.0 < a.0) { b } else { a })
    }

    fn checked_unit(&self, e: &Embedding) -> Result<Vec<f32>> {
        if e.dim() != self.dim() {
            return Err(ModelError::BadEmbeddingDim {
                kind: self.kind,
                expected: self.dim(),
                got: e.dim(),
            });
        }
        if e.0.iter().any(|x| !x.is_finite()) {
            return Err(ModelError::InvalidEmbedding("contains NaN or infinity".into()));
        }
        let unit = Embedding::normalized(e.0.clone());
        if unit.0.iter().all(|&x| x == 0.0) {
            return Err(ModelError::InvalidEmbedding("all zeros".into()));
        }
        Ok(unit.0)
    }

    /// Serialises the gallery: magic `FFGALLRY`, version (u32 LE), header
    /// length (u32 LE), a JSON header (recognizer, threshold, dimension,
    /// people with their counts, payload checksum), then the embeddings as
    /// little-endian `f32`, grouped by person in header order.
    pub fn to_bytes(&self) -> Vec<u8> {
        let dim = self.dim();
        let mut people: Vec<PersonHeader> = self
            .names
            .iter()
            .map(|n| PersonHeader {
                name: n.clone(),
                count: 0,
            })
            .collect();
        let mut grouped: Vec<Vec<f32>> = vec![Vec::new(); self.names.len()];
        for (row, &o) in self.rows.chunks_exact(dim).zip(&self.owners) {
            grouped[o as usize].extend_from_slice(row);
            people[o as usize].count += 1;
        }
        let mut payload = Vec::with_capacity(self.rows.len() * 4);
        for g in &grouped {
            for x in g {
                payload.extend_from_slice(&x.to_le_bytes());
            }
        }
        let header = Header {
            recognizer: self.kind,
            threshold: self.threshold,
            dim,
            people,
            checksum: format!("{:016x}", fnv1a(&payload)),
        };
        let header = serde_json::to_vec(&header).expect("gallery header serialises");
        let mut out = Vec::with_capacity(16 + header.len() + payload.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&payload);
        out
    }

    /// Reads a gallery written by [`Gallery::to_bytes`]. Refuses other
    /// files, unknown format versions, and truncated or corrupt data.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |m: String| ModelError::InvalidGallery(m);
        if bytes.len() < 16 || &bytes[..8] != MAGIC {
            return Err(bad("not a facefleet gallery (bad magic)".into()));
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
        if version != FORMAT_VERSION {
            return Err(bad(format!(
                "unsupported gallery format version {version} (this build reads version {FORMAT_VERSION})"
            )));
        }
        let header_len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
        let header_end = 16usize
            .checked_add(header_len)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| bad("truncated header".into()))?;
        let header: Header = serde_json::from_slice(&bytes[16..header_end])
            .map_err(|e| bad(format!("corrupt header: {e}")))?;
        if header.dim != header.recognizer.dim() {
            return Err(bad(format!(
                "header says dimension {} but {} embeddings have {}",
                header.dim,
                header.recognizer,
                header.recognizer.dim()
            )));
        }
        if !header.threshold.is_finite() {
            return Err(bad("threshold is not a finite number".into()));
        }
        let payload = &bytes[header_end..];
        let total: usize = header
            .people
            .iter()
            .try_fold(0usize, |acc, p| acc.checked_add(p.count))
            .ok_or_else(|| bad("entry counts overflow".into()))?;
        let expected = total
            .checked_mul(header.dim * 4)
            .ok_or_else(|| bad("entry counts overflow".into()))?;
        if payload.len() != expected {
            return Err(bad(format!(
                "payload is {} bytes, header announces {total} embeddings = {expected} bytes (truncated or corrupt)",
                payload.len()
            )));
        }
        if header.checksum != format!("{:016x}", fnv1a(payload)) {
            return Err(bad("checksum mismatch (corrupt embeddings)".into()));
        }
        let mut gallery = Gallery::with_threshold(header.recognizer, header.threshold);
        let mut floats = payload
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()));
        for p in &header.people {
            if gallery.contains(&p.name) {
                return Err(bad(format!("person {:?} listed twice", p.name)));
            }
            validate_name(&p.name).map_err(|e| bad(e.to_string()))?;
            let rows: Vec<f32> = floats.by_ref().take(p.count * header.dim).collect();
            for row in rows.chunks_exact(header.dim) {
                let norm = dot(row, row);
                if !norm.is_finite() || (norm - 1.0).abs() > 1e-3 {
                    return Err(bad(format!(
                        "person {:?}: embedding is not unit length (corrupt data)",
                        p.name
                    )));
                }
            }
            if p.count == 0 {
                return Err(bad(format!("person {:?} has no embeddings", p.name)));
            }
            gallery.insert_rows(&p.name, rows)?;
        }
        Ok(gallery)
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    recognizer: RecognizerKind,
    threshold: f32,
    dim: usize,
    people: Vec<PersonHeader>,
    checksum: String,
}

#[derive(Serialize, Deserialize)]
struct PersonHeader {
    name: String,
    count: usize,
}

fn validate_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > MAX_NAME_BYTES
        || name.chars().any(char::is_control)
        || name.trim() != name
    {
        return Err(ModelError::InvalidName(name.to_string()));
    }
    Ok(())
}

/// Dot product written so the compiler vectorises it (8 independent lanes).
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, ar) = a.split_at(a.len() / 8 * 8);
    let (bc, br) = b.split_at(ac.len());
    for (x, y) in ac.chunks_exact(8).zip(bc.chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ar.iter().zip(br).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// 64-bit FNV-1a, to detect corrupted payloads (not for security).
fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: RecognizerKind = RecognizerKind::DlibResnet;

    /// Deterministic pseudo-random unit vector.
    fn vec_for(seed: u64) -> Embedding {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let v = (0..K.dim())
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5
            })
            .collect();
        Embedding::normalized(v)
    }

    fn noisy(e: &Embedding, seed: u64, amount: f32) -> Embedding {
        let n = vec_for(seed);
        Embedding::normalized(e.0.iter().zip(&n.0).map(|(a, b)| a + amount * b).collect())
    }

    #[test]
    fn enroll_identify_remove() {
        let mut g = Gallery::with_threshold(K, 0.5);
        let (a, b) = (vec_for(1), vec_for(2));
        g.enroll("Alice", vec![a.clone(), noisy(&a, 10, 0.2)]).unwrap();
        g.enroll("Bob", vec![b.clone()]).unwrap();
        assert_eq!(g.people(), vec![("Alice".into(), 2), ("Bob".into(), 1)]);
        assert_eq!(g.len(), 3);

        let m = g.identify(&noisy(&b, 11, 0.3)).unwrap();
        assert_eq!(m.name.as_deref(), Some("Bob"));
        assert!(m.similarity > 0.8);
        // A stranger is Unknown but still has a nearest person.
        let m = g.identify(&vec_for(99)).unwrap();
        assert_eq!(m.name, None);
        assert!(m.nearest.is_some());

        assert!(g.remove("Alice"));
        assert!(!g.remove("Alice"));
        assert_eq!(g.people(), vec![("Bob".into(), 1)]);
        assert_eq!(g.identify(&b).unwrap().name.as_deref(), Some("Bob"));
        assert_eq!(g.identify(&a).unwrap().name, None);
        assert!(g.remove("Bob"));
        let m = g.identify(&b).unwrap();
        assert_eq!((m.name, m.nearest, m.similarity), (None, None, -1.0));
    }

    #[test]
    fn enrolling_more_photos_appends_to_the_person() {
        let mut g = Gallery::new(K);
        g.enroll("Alice", vec![vec_for(1)]).unwrap();
        g.enroll("Bob", vec![vec_for(2)]).unwrap();
        g.enroll("Alice", vec![vec_for(3)]).unwrap();
        assert_eq!(g.people(), vec![("Alice".into(), 2), ("Bob".into(), 1)]);
        assert_eq!(g.nearest(&vec_for(3)).unwrap().unwrap().0, "Alice");
        assert!(g.remove("Alice"));
        assert_eq!(g.nearest(&vec_for(3)).unwrap().unwrap().0, "Bob");
    }

    #[test]
    fn rejects_bad_embeddings_and_names() {
        let mut g = Gallery::new(K);
        let err = g.enroll("A", vec![Embedding(vec![1.0; 192])]).unwrap_err();
        assert!(err.to_string().contains("192 dimensions"), "{err}");
        let mut nan = vec_for(1);
        nan.0[3] = f32::NAN;
        assert!(g.enroll("A", vec![vec_for(2), nan]).is_err());
        assert!(g.enroll("A", vec![Embedding(vec![0.0; 128])]).is_err());
        assert!(g.enroll("A", vec![]).is_err());
        assert!(g.enroll("", vec![vec_for(1)]).is_err());
        assert!(g.enroll("a\nb", vec![vec_for(1)]).is_err());
        assert!(g.enroll(&"x".repeat(300), vec![vec_for(1)]).is_err());
        assert!(g.is_empty(), "nothing is added on error");
        assert!(g.identify(&Embedding(vec![0.5; 12])).is_err());
    }

    #[test]
    fn roundtrip_and_corruption() {
        let mut g = Gallery::with_threshold(K, 0.61);
        g.enroll("Alice", vec![vec_for(1), vec_for(2)]).unwrap();
        g.enroll("Bob \u{00e9}", vec![vec_for(3)]).unwrap();
        g.enroll("Alice", vec![vec_for(4)]).unwrap();
        let bytes = g.to_bytes();
        let back = Gallery::from_bytes(&bytes).unwrap();
        assert_eq!(back.threshold(), 0.61);
        assert_eq!(back.recognizer_kind(), K);
        assert_eq!(back.people(), g.people());
        for s in 1..=4 {
            assert_eq!(back.identify(&vec_for(s)).unwrap(), g.identify(&vec_for(s)).unwrap());
        }
        assert_eq!(Gallery::from_bytes(&Gallery::new(K).to_bytes()).unwrap().len(), 0);

        let msg = |b: &[u8]| Gallery::from_bytes(b).unwrap_err().to_string();
        assert!(msg(b"").contains("bad magic"));
        assert!(msg(b"GIF89a............").contains("bad magic"));
        let mut v2 = bytes.clone();
        v2[8] = 2;
        assert!(msg(&v2).contains("version 2"), "{}", msg(&v2));
        assert!(msg(&bytes[..bytes.len() - 3]).contains("truncated"));
        assert!(msg(&bytes[..20]).contains("truncated header"));
        let mut flipped = bytes.clone();
        let last = flipped.len() - 5;
        flipped[last] ^= 0x40;
        assert!(msg(&flipped).contains("checksum"), "{}", msg(&flipped));
        let mut bad_json = bytes.clone();
        bad_json[16] = b'[';
        assert!(msg(&bad_json).contains("corrupt header"));
    }

    #[test]
    fn parallel_matching_agrees_with_serial() {
        let mut g = Gallery::new(K);
        let n = PARALLEL_ROWS + 1000;
        let all: Vec<Embedding> = (0..n as u64).map(vec_for).collect();
        g.enroll("crowd", all[..n - 1].to_vec()).unwrap();
        g.enroll("target", vec![all[n - 1].clone()]).unwrap();
        for probe in [n as u64 - 1, 5, 17_000] {
            let q = noisy(&vec_for(probe), 7, 0.1);
            let fast = g.best_row(&g.checked_unit(&q).unwrap()).unwrap();
            let slow = g
                .rows
                .chunks_exact(K.dim())
                .enumerate()
                .map(|(i, r)| (i, dot(r, &g.checked_unit(&q).unwrap())))
                .fold((0, f32::MIN), |a, b| if b.1 > a.1 { b } else { a });
            assert_eq!(fast.0, slow.0);
        }
        let q = noisy(&all[n - 1], 9, 0.1);
        assert_eq!(g.nearest(&q).unwrap().unwrap().0, "target");
    }
}
