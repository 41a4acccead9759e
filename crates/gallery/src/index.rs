//! Matching a face against a collection: a row-major matrix of unit
//! embeddings, scored by dot products (cosine similarity).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::store::Snapshot;

/// Below this many matrix values (rows × dim) one thread scores everything:
/// splitting smaller galleries costs more than it saves.
const PARALLEL_FROM: usize = 4 << 20;

/// Most threads one search uses.
const MAX_THREADS: usize = 8;

/// One person a query may be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Candidate {
    /// The person.
    pub person: String,
    /// Their face most similar to the query.
    pub face_id: String,
    /// Cosine similarity of that face and the query (-1..=1).
    pub similarity: f32,
}

/// The faces of one collection for one model, ready to match (a row-major
/// matrix of unit rows).
#[derive(Debug, Clone, Default)]
pub struct Index {
    model: String,
    dim: usize,
    /// `faces × dim` values, each row of unit length.
    rows: Vec<f32>,
    face_ids: Vec<String>,
    /// Row → index into `people`.
    owner: Vec<u32>,
    people: Vec<String>,
}

/// Scales `v` to unit length; `None` for a zero or non-finite vector.
fn unit(v: &[f32]) -> Option<Vec<f32>> {
    let norm = dot(v, v).sqrt();
    (norm.is_finite() && norm > 0.0).then(|| v.iter().map(|x| x / norm).collect())
}

/// Dot product in 16 independent lanes, which the compiler turns into SIMD.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..LANES {
            acc[k] += x[k] * y[k];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}

/// Scores of every row of `rows` (`dim` wide) against `query`, into `out`.
fn score_rows(rows: &[f32], dim: usize, query: &[f32], out: &mut [f32]) {
    for (row, s) in rows.chunks_exact(dim).zip(out.iter_mut()) {
        *s = dot(row, query);
    }
}

impl Index {
    /// Rows of `snapshot` whose model is `model` (others are skipped with a
    /// warning; so are rows of another length than the model's usual one,
    /// and zero or non-finite ones). Rows are scaled to unit length.
    pub fn build(snapshot: &Snapshot, model: &str) -> Index {
        let mine: Vec<_> = snapshot.faces.iter().filter(|f| f.model == model).collect();
        let other_models = snapshot.faces.len() - mine.len();
        if other_models > 0 {
            tracing::warn!(collection = %snapshot.collection, model, skipped = other_models, "faces of another model are not matched");
        }
        // The model's dimension: the most common length (ties: the longer).
        let mut lengths: HashMap<usize, usize> = HashMap::new();
        for f in &mine {
            *lengths.entry(f.embedding.len()).or_default() += 1;
        }
        let dim = lengths.into_iter().filter(|(len, _)| *len > 0).max_by_key(|(len, n)| (*n, *len)).map_or(0, |(len, _)| len);
        let mut index = Index { model: model.to_string(), dim, ..Index::default() };
        index.rows.reserve(mine.len() * dim);
        let mut person_ids: HashMap<&str, u32> = HashMap::new();
        let mut bad = 0usize;
        for f in mine {
            let norm = if f.embedding.len() == dim { dot(&f.embedding, &f.embedding).sqrt() } else { 0.0 };
            if !(norm.is_finite() && norm > 0.0) {
                bad += 1;
                continue;
            }
            index.rows.extend(f.embedding.iter().map(|x| x / norm));
            index.face_ids.push(f.id.clone());
            let next = index.people.len() as u32;
            let p = *person_ids.entry(&f.person).or_insert_with(|| {
                index.people.push(f.person.clone());
                next
            });
            index.owner.push(p);
        }
        if bad > 0 {
            tracing::warn!(collection = %snapshot.collection, model, dim, skipped = bad, "faces with a wrong-sized, zero or non-finite embedding are not matched");
        }
        index
    }

    /// The model id of its embeddings.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Length of its embeddings (0 when empty).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of distinct people.
    pub fn people(&self) -> usize {
        self.people.len()
    }

    /// Number of faces.
    pub fn faces(&self) -> usize {
        self.face_ids.len()
    }

    /// Up to `limit` people, best first, each with their best face's
    /// similarity (ties: by name). Empty when the query's length is not the
    /// index's dimension or it is zero.
    pub fn search(&self, query: &[f32], limit: usize) -> Vec<Candidate> {
        if limit == 0 || self.face_ids.is_empty() || query.len() != self.dim {
            return Vec::new();
        }
        let Some(query) = unit(query) else { return Vec::new() };
        let scores = self.scores(&query);
        // Best face per person.
        let mut best: Vec<(f32, usize)> = vec![(f32::NEG_INFINITY, usize::MAX); self.people.len()];
        for (row, (&s, &p)) in scores.iter().zip(&self.owner).enumerate() {
            let b = &mut best[p as usize];
            if s > b.0 || b.1 == usize::MAX {
                *b = (s, row);
            }
        }
        let mut ranked: Vec<(f32, usize, usize)> = best
            .into_iter()
            .enumerate()
            .filter(|(_, (_, row))| *row != usize::MAX)
            .map(|(p, (s, row))| (s, p, row))
            .collect();
        let order = |a: &(f32, usize, usize), b: &(f32, usize, usize)| {
            b.0.total_cmp(&a.0).then_with(|| self.people[a.1].cmp(&self.people[b.1]))
        };
        if limit < ranked.len() {
            ranked.select_nth_unstable_by(limit - 1, order);
            ranked.truncate(limit);
        }
        ranked.sort_unstable_by(order);
        ranked
            .into_iter()
            .map(|(s, p, row)| Candidate {
                person: self.people[p].clone(),
                face_id: self.face_ids[row].clone(),
                similarity: s,
            })
            .collect()
    }

    /// Similarity of every row to the unit `query`; large galleries are
    /// split over threads.
    fn scores(&self, query: &[f32]) -> Vec<f32> {
        let n = self.face_ids.len();
        let mut out = vec![0f32; n];
        let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).min(MAX_THREADS);
        if self.rows.len() < PARALLEL_FROM || threads < 2 {
            score_rows(&self.rows, self.dim, query, &mut out);
            return out;
        }
        let per = n.div_ceil(threads);
        std::thread::scope(|s| {
            for (rows, out) in self.rows.chunks(per * self.dim).zip(out.chunks_mut(per)) {
                s.spawn(move || score_rows(rows, self.dim, query, out));
            }
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FaceRecord;

    fn face(id: &str, person: &str, model: &str, embedding: Vec<f32>) -> FaceRecord {
        FaceRecord { id: id.into(), person: person.into(), model: model.into(), embedding, created_ms: 0 }
    }

    fn snapshot(faces: Vec<FaceRecord>) -> Snapshot {
        Snapshot { collection: "c".into(), generation: 1, faces }
    }

    #[test]
    fn best_face_per_person_best_people_first() {
        let s = snapshot(vec![
            face("a1", "Ann", "m", vec![1.0, 0.0, 0.0]),
            face("b1", "Bob", "m", vec![0.6, 0.8, 0.0]),
            face("a2", "Ann", "m", vec![0.0, 0.0, 1.0]),
            face("c1", "Cid", "m", vec![0.0, 1.0, 0.0]),
            face("b2", "Bob", "m", vec![0.8, 0.6, 0.0]),
        ]);
        let index = Index::build(&s, "m");
        assert_eq!((index.faces(), index.people(), index.dim()), (5, 3, 3));
        let got = index.search(&[2.0, 0.0, 0.0], 10);
        let names: Vec<(&str, &str)> = got.iter().map(|c| (c.person.as_str(), c.face_id.as_str())).collect();
        assert_eq!(names, [("Ann", "a1"), ("Bob", "b2"), ("Cid", "c1")]);
        assert!((got[0].similarity - 1.0).abs() < 1e-6);
        assert!((got[1].similarity - 0.8).abs() < 1e-6);
        assert!(got[2].similarity.abs() < 1e-6);
        // The limit keeps the best ones.
        let top: Vec<String> = index.search(&[0.0, 1.0, 0.0], 2).into_iter().map(|c| c.person).collect();
        assert_eq!(top, ["Cid", "Bob"]);
        assert!(index.search(&[1.0, 0.0, 0.0], 0).is_empty());
    }

    #[test]
    fn other_models_bad_rows_and_bad_queries_are_skipped() {
        let s = snapshot(vec![
            face("x", "Xia", "other", vec![1.0, 0.0]),
            face("a", "Ann", "m", vec![1.0, 0.0]),
            face("b", "Bob", "m", vec![0.0, 3.0]),
            face("w", "Wes", "m", vec![1.0, 0.0, 0.0]),
            face("z", "Zed", "m", vec![0.0, 0.0]),
            face("n", "Nan", "m", vec![f32::NAN, 1.0]),
        ]);
        let index = Index::build(&s, "m");
        assert_eq!((index.faces(), index.people(), index.dim()), (2, 2, 2));
        let people: Vec<String> = index.search(&[1.0, 1.0], 10).into_iter().map(|c| c.person).collect();
        assert_eq!(people, ["Ann", "Bob"], "equal similarity: by name");
        assert!(index.search(&[1.0, 0.0, 0.0], 5).is_empty(), "wrong length");
        assert!(index.search(&[0.0, 0.0], 5).is_empty(), "zero query");
        let empty = Index::build(&s, "missing");
        assert_eq!((empty.faces(), empty.people()), (0, 0));
        assert!(empty.search(&[1.0, 0.0], 3).is_empty());
    }

    #[test]
    fn parallel_scores_match_the_single_thread_ones() {
        // Enough rows to cross the threshold: 5 x 2^20 values.
        let dim = 160;
        let n = (5 << 20) / dim;
        let mut seed = 12345u32;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            (seed as f32 / u32::MAX as f32) - 0.5
        };
        let faces: Vec<FaceRecord> = (0..n).map(|i| face(&format!("f{i}"), &format!("p{}", i % 997), "m", (0..dim).map(|_| next()).collect())).collect();
        let index = Index::build(&snapshot(faces), "m");
        assert!(index.rows.len() >= PARALLEL_FROM);
        let query: Vec<f32> = unit(&(0..dim).map(|_| next()).collect::<Vec<_>>()).unwrap();
        let mut single = vec![0f32; n];
        score_rows(&index.rows, dim, &query, &mut single);
        assert_eq!(index.scores(&query), single);
        let got = index.search(&query, 5);
        assert_eq!(got.len(), 5);
        let best = single.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(got[0].similarity, best);
        assert!(got.windows(2).all(|w| w[0].similarity >= w[1].similarity));
    }
}
