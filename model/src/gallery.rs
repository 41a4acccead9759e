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

/// Target of [`open_set_threshold`]: the share of queries of people who are
/// not enrolled that may still be answered with a name (false accepts per
/// query), whatever the number of enrolled people.
pub const OPEN_SET_FAR: f64 = 0.02;

/// The fitted upper tail of a recognizer's impostor scores: the cosine
/// similarity `s` of two photos of *different* people is modelled as normal,
/// `P(s >= t) = Q((t - mean) / sd)` (`Q` the standard normal tail), with
/// `mean` and `sd` fitted to the upper tail only (the empirical quantiles
/// between the 95th and the 99.9th percentile, by least squares of the
/// similarity on the normal quantile), which is where thresholds live.
/// On lfw-dev the far tail is no heavier than this normal one (an
/// exponential tail fitted to the same pairs overestimated the rate at
/// 0.6 twenty-fold). Fitted on lfw-dev's impostor pairs by `cargo run
/// --release -p facefleet-model --example calibrate_open_set` (see
/// `model/README.md`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImpostorTail {
    /// Location of the fitted normal tail (a similarity).
    pub mean: f32,
    /// Scale of the fitted normal tail.
    pub sd: f32,
}

/// Upper-tail probabilities whose empirical quantiles [`ImpostorTail::fit`]
/// uses: 5 % down to 0.1 %, evenly on a log scale.
const FIT_TAIL: (f64, f64, usize) = (5e-2, 1e-3, 12);

impl ImpostorTail {
    /// The shipped fit for `kind` (lfw-dev: 63 people, 70 308 impostor pairs
    /// for MobileFaceNet).
    pub fn of(kind: RecognizerKind) -> Self {
        match kind {
            RecognizerKind::MobileFaceNet => ImpostorTail { mean: 0.0121, sd: 0.1528 },
            RecognizerKind::DlibResnet => ImpostorTail { mean: 0.8487, sd: 0.0260 },
        }
    }

    /// Fits the tail to `impostor` similarities (see [`ImpostorTail`]).
    /// `None` with fewer than 2 000 finite scores (the 99.9th percentile
    /// needs a few pairs above it).
    pub fn fit(impostor: &[f32]) -> Option<Self> {
        let mut s: Vec<f32> = impostor.iter().copied().filter(|v| v.is_finite()).collect();
        if s.len() < 2000 {
            return None;
        }
        s.sort_by(|a, b| b.total_cmp(a));
        let (hi, lo, n) = FIT_TAIL;
        let pts: Vec<(f64, f64)> = (0..n)
            .map(|i| {
                let p = hi * (lo / hi).powf(i as f64 / (n - 1) as f64);
                let idx = ((s.len() as f64 * p) as usize).min(s.len() - 1);
                (normal_tail_inverse(p), s[idx] as f64)
            })
            .collect();
        let (mz, mt) = pts.iter().fold((0.0, 0.0), |(a, b), (z, t)| (a + z / n as f64, b + t / n as f64));
        let sxy: f64 = pts.iter().map(|(z, t)| (z - mz) * (t - mt)).sum();
        let sxx: f64 = pts.iter().map(|(z, _)| (z - mz) * (z - mz)).sum();
        let sd = sxy / sxx;
        Some(ImpostorTail { mean: (mt - sd * mz) as f32, sd: sd as f32 })
    }

    /// `p(t)`: the modelled share of impostor pairs scoring at least `t`.
    pub fn pair_rate(&self, t: f32) -> f64 {
        normal_tail(((t - self.mean) / self.sd) as f64)
    }

    /// The similarity that a share `p` of impostor pairs reaches:
    /// `mean + sd * Q^-1(p)`.
    pub fn threshold_for_pair_rate(&self, p: f64) -> f32 {
        self.mean + self.sd * normal_tail_inverse(p) as f32
    }

    /// Expected false-accept rate per query of an unknown person against
    /// `entries` enrolled embeddings at threshold `t`: the chance that the
    /// best of `entries` impostor scores reaches `t`, `1 - (1 - p(t))^entries`
    /// (treating the scores as independent).
    pub fn far_per_query(&self, t: f32, entries: usize) -> f64 {
        -(entries as f64 * (-self.pair_rate(t)).ln_1p()).exp_m1()
    }

    /// The threshold whose [`ImpostorTail::far_per_query`] is `far` with
    /// `entries` enrolled embeddings.
    pub fn threshold_for(&self, far: f64, entries: usize) -> f32 {
        let n = entries.max(1) as f64;
        // 1 - (1 - p)^n = far  <=>  p = 1 - (1 - far)^(1/n)   (about far / n)
        let p = -((-far).ln_1p() / n).exp_m1();
        self.threshold_for_pair_rate(p)
    }
}

/// `Q(z)`: the upper tail of the standard normal distribution (absolute
/// error below 1e-7; Abramowitz & Stegun 7.1.26 for `erfc`).
fn normal_tail(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t * (0.254_829_592 + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erfc = poly * (-x * x).exp();
    if z >= 0.0 {
        0.5 * erfc
    } else {
        1.0 - 0.5 * erfc
    }
}

/// `Q^-1(p)` for `0 < p < 1`: a rational first guess (Abramowitz & Stegun
/// 26.2.23) refined by Newton steps on [`normal_tail`].
fn normal_tail_inverse(p: f64) -> f64 {
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    let q = p.min(1.0 - p);
    let t = (-2.0 * q.ln()).sqrt();
    let mut z = t - (2.515_517 + t * (0.802_853 + t * 0.010_328)) / (1.0 + t * (1.432_788 + t * (0.189_269 + t * 0.001_308)));
    if p > 0.5 {
        z = -z;
    }
    for _ in 0..3 {
        let density = (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
        z += (normal_tail(z) - p) / density;
    }
    z
}

/// The open-set decision threshold for a gallery of `people` enrolled
/// people: the similarity a query of someone *not* enrolled reaches with
/// its best match in [`OPEN_SET_FAR`] (2 %) of cases, from the fitted
/// impostor tail ([`ImpostorTail::of`]): with a per-pair impostor rate
/// `p(t)`, the false-accept rate per query is `1 - (1 - p(t))^people`, so
/// `t` is chosen with `p(t) = 1 - (1 - 0.02)^(1 / people)` (about
/// `0.02 / people`). Each enrolled person is one more chance of a false
/// match, so the threshold rises with the gallery: for MobileFaceNet 0.46
/// up to 11 people, 0.503 for 31, 0.553 for 100, 0.588 for 248, 0.639 for
/// 1 000, 0.716 for 10 000 (`model/README.md` has the table, the measured
/// rejection and what it costs enrolled people). Never below
/// [`default_threshold`] (the 1:1 verification threshold), so small
/// galleries answer as before. People enrolled with several photos give a
/// query several chances each: the false-accept rate then lies between
/// the target and the target times the photos per person.
pub fn open_set_threshold(kind: RecognizerKind, people: usize) -> f32 {
    ImpostorTail::of(kind).threshold_for(OPEN_SET_FAR, people).max(default_threshold(kind))
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

    /// [`open_set_threshold`] for this gallery's number of enrolled people:
    /// the threshold that keeps false accepts of people who are not
    /// enrolled near [`OPEN_SET_FAR`] per query as the gallery grows.
    pub fn open_set_threshold(&self) -> f32 {
        open_set_threshold(self.kind, self.names.len())
    }

    /// The threshold [`crate::FaceModel::recognize`] applies (without a
    /// per-model override): the gallery's own threshold, raised to
    /// [`Gallery::open_set_threshold`] when that is the recognizer's
    /// [`default_threshold`] (a threshold set explicitly, with
    /// [`Gallery::with_threshold`] or [`Gallery::set_threshold`] to any
    /// other value, is kept as it is).
    pub fn effective_threshold(&self) -> f32 {
        if self.threshold == default_threshold(self.kind) {
            self.threshold.max(self.open_set_threshold())
        } else {
            self.threshold
        }
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

    /// Matches `query` using [`Gallery::effective_threshold`] (the gallery's
    /// own threshold, raised with the gallery's size when it is the default).
    pub fn identify(&self, query: &Embedding) -> Result<Match> {
        self.identify_with_threshold(query, self.effective_threshold())
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

    #[test]
    fn normal_tail_and_its_inverse() {
        assert!((normal_tail(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_tail(1.959_964) - 0.025).abs() < 1e-6);
        assert!((normal_tail(-1.0) - 0.841_344_7).abs() < 1e-6);
        for p in [0.3, 0.05, 1e-3, 1e-5, 1e-7] {
            let z = normal_tail_inverse(p);
            assert!((normal_tail(z) / p - 1.0).abs() < 1e-3, "{p}: z {z}");
        }
    }

    #[test]
    fn the_tail_fit_recovers_a_normal_distribution() {
        // Deterministic normal samples by inverse transform of a stratified grid.
        let n = 20_000;
        let samples: Vec<f32> = (0..n).map(|i| (0.1 + 0.2 * normal_tail_inverse((i as f64 + 0.5) / n as f64)) as f32).collect();
        let fit = ImpostorTail::fit(&samples).unwrap();
        assert!((fit.mean - 0.1).abs() < 0.01 && (fit.sd - 0.2).abs() < 0.01, "{fit:?}");
        assert!(ImpostorTail::fit(&samples[..100]).is_none());
    }

    #[test]
    fn open_set_threshold_rises_with_the_gallery_and_holds_the_target() {
        for kind in [RecognizerKind::MobileFaceNet, RecognizerKind::DlibResnet] {
            let tail = ImpostorTail::of(kind);
            let mut last = 0.0;
            for n in [1usize, 2, 8, 31, 100, 248, 1000, 10_000, 1_000_000] {
                let t = open_set_threshold(kind, n);
                assert!(t >= default_threshold(kind) && t >= last, "{kind} {n}: {t}");
                if t > default_threshold(kind) {
                    let far = tail.far_per_query(t, n);
                    assert!((far / OPEN_SET_FAR - 1.0).abs() < 0.01, "{kind} {n}: far {far}");
                }
                last = t;
            }
            assert_eq!(open_set_threshold(kind, 0), open_set_threshold(kind, 1));
        }
        assert_eq!(open_set_threshold(RecognizerKind::MobileFaceNet, 8), 0.46);
        assert!(open_set_threshold(RecognizerKind::MobileFaceNet, 248) > 0.55);
    }

    #[test]
    fn a_default_threshold_follows_the_gallery_size_a_chosen_one_does_not() {
        let mut g = Gallery::new(K);
        for p in 0..3000u64 {
            g.enroll(&format!("p{p}"), vec![vec_for(p)]).unwrap();
        }
        assert_eq!(g.threshold(), default_threshold(K));
        assert_eq!(g.effective_threshold(), open_set_threshold(K, 3000));
        assert!(g.effective_threshold() > g.threshold());
        g.set_threshold(0.5);
        assert_eq!(g.effective_threshold(), 0.5);
        let small = Gallery::new(K);
        assert_eq!(small.effective_threshold(), default_threshold(K));
    }

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
