//! Accuracy evaluation on a folder of people (the `eval_lfw` example and the
//! accuracy tests use it).
//!
//! The folder holds one sub-folder per person with their photos
//! (`Person/Person_0001.jpg`, ... as in `lfw-dev`). Each photo is decoded,
//! its largest face embedded (exactly what [`crate::FaceModel::recognize`]
//! does), and the embeddings are then matched in different protocols:
//!
//! * **closed set**: enroll each person's first photo, query the others;
//!   top-1 accuracy = share of queries whose nearest person is right.
//! * **open set**: enroll only half of the people (two folds: even, then
//!   odd positions in name order); a query of an enrolled person counts as
//!   correct when it is answered with their name, a query of a left-out
//!   person when it is answered Unknown.

use std::path::{Path, PathBuf};

use crate::error::{ModelError, Result};
use crate::{decode_image, DecodeLimits, Embedding, FaceModel, Gallery, RecognizerKind};

/// Environment variable naming the shared folder that holds `datasets/`.
pub const SHARED_DIR_ENV: &str = "FACEFLEET_SHARED_DIR";

/// The shared data folder: `$FACEFLEET_SHARED_DIR`, else `<workspace>/../shared`
/// (as seen from this crate's source tree). Errors with a clear message
/// when the folder does not exist.
pub fn shared_dir() -> Result<PathBuf> {
    let dir = match std::env::var_os(SHARED_DIR_ENV).filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"),
    };
    if !dir.is_dir() {
        return Err(ModelError::io(
            &dir,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("shared data folder not found; set {SHARED_DIR_ENV} to the folder holding datasets/"),
            ),
        ));
    }
    Ok(dir)
}

/// A shared dataset folder (`datasets/<name>` under [`shared_dir`]), or a clear error.
pub fn dataset_dir(name: &str) -> Result<PathBuf> {
    let dir = shared_dir()?.join("datasets").join(name);
    if !dir.is_dir() {
        return Err(ModelError::io(
            &dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "dataset folder not found"),
        ));
    }
    Ok(dir)
}

/// One person's photos and the embeddings of their largest faces.
#[derive(Debug, Clone)]
pub struct Person {
    /// Folder name.
    pub name: String,
    /// Photos in file-name order.
    pub photos: Vec<PathBuf>,
    /// Per photo: the embedding of its largest face, `None` when no face was found.
    pub embeddings: Vec<Option<Embedding>>,
}

/// Embeddings of a whole people folder.
#[derive(Debug, Clone)]
pub struct PeopleSet {
    /// The recognizer that made the embeddings.
    pub kind: RecognizerKind,
    /// People in name order.
    pub people: Vec<Person>,
}

/// Closed-set result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClosedSet {
    /// Queries made.
    pub queries: usize,
    /// Queries whose nearest enrolled person is right.
    pub correct: usize,
    /// Photos in which no face was found (queries counted as wrong,
    /// enrollment photos leave their person out of the gallery).
    pub no_face: usize,
}

impl ClosedSet {
    /// Top-1 accuracy in percent.
    pub fn top1(&self) -> f64 {
        percent(self.correct, self.queries)
    }
}

/// Open-set result at one threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpenSet {
    /// The threshold.
    pub threshold: f32,
    /// Queries of enrolled people.
    pub enrolled_queries: usize,
    /// ... answered with the right name.
    pub enrolled_correct: usize,
    /// ... answered Unknown (rejected although enrolled).
    pub enrolled_unknown: usize,
    /// Queries of people left out of the gallery.
    pub unknown_queries: usize,
    /// ... answered Unknown.
    pub unknown_correct: usize,
}

impl OpenSet {
    /// Share of enrolled people's queries answered with the right name (%).
    pub fn enrolled_pct(&self) -> f64 {
        percent(self.enrolled_correct, self.enrolled_queries)
    }
    /// Share of left-out people's queries answered Unknown (%).
    pub fn unknown_pct(&self) -> f64 {
        percent(self.unknown_correct, self.unknown_queries)
    }
}

fn percent(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        100.0 * a as f64 / b as f64
    }
}

/// The people of a folder with one sub-folder per person, by name, each
/// with its photos (`.jpg`, `.jpeg`, `.png`, `.webp`, `.bmp`); both sorted,
/// people without photos left out.
pub fn person_photos(dir: &Path) -> Result<Vec<(String, Vec<PathBuf>)>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ModelError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    entries.sort();
    let mut people = Vec::new();
    for person_dir in entries {
        let mut photos: Vec<PathBuf> = std::fs::read_dir(&person_dir)
            .map_err(|e| ModelError::io(&person_dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_image(p))
            .collect();
        photos.sort();
        if !photos.is_empty() {
            people.push((file_name(&person_dir), photos));
        }
    }
    Ok(people)
}

impl PeopleSet {
    /// Embeds the largest face of every photo under `dir` (one sub-folder
    /// per person; `.jpg`, `.jpeg`, `.png`, `.webp`, `.bmp` files).
    pub fn embed_folder(model: &FaceModel, dir: &Path) -> Result<Self> {
        let mut people = Vec::new();
        for (name, photos) in person_photos(dir)? {
            let embeddings = photos
                .iter()
                .map(|p| largest_face(model, p))
                .collect::<Result<Vec<_>>>()?;
            people.push(Person {
                name,
                photos,
                embeddings,
            });
        }
        Ok(PeopleSet {
            kind: model.recognizer_kind(),
            people,
        })
    }

    /// Photos without a face.
    pub fn no_face(&self) -> Vec<&Path> {
        self.people
            .iter()
            .flat_map(|p| {
                p.photos
                    .iter()
                    .zip(&p.embeddings)
                    .filter(|(_, e)| e.is_none())
                    .map(|(ph, _)| ph.as_path())
            })
            .collect()
    }

    /// Gallery of the first photo of the people selected by `keep(index)`.
    fn gallery(&self, keep: impl Fn(usize) -> bool) -> Gallery {
        let mut g = Gallery::new(self.kind);
        for (i, p) in self.people.iter().enumerate() {
            if let (true, Some(Some(e))) = (keep(i), p.embeddings.first()) {
                g.enroll(&p.name, vec![e.clone()]).expect("model embeddings are valid");
            }
        }
        g
    }

    /// Closed-set top-1 (first photo enrolled, the others queried).
    pub fn closed_set(&self) -> ClosedSet {
        let g = self.gallery(|_| true);
        let mut r = ClosedSet {
            queries: 0,
            correct: 0,
            no_face: self.no_face().len(),
        };
        for p in &self.people {
            for e in p.embeddings.iter().skip(1) {
                r.queries += 1;
                let nearest = e
                    .as_ref()
                    .and_then(|e| g.nearest(e).expect("same recognizer").map(|(n, _)| n.to_string()));
                if nearest.as_deref() == Some(p.name.as_str()) {
                    r.correct += 1;
                }
            }
        }
        r
    }

    /// Closed-set queries whose nearest person is wrong: (photo, nearest
    /// person, similarity with them, similarity with the true person's
    /// enrolled photo); similarities are NaN when the photo had no face.
    pub fn closed_set_failures(&self) -> Vec<(&Path, String, f32, f32)> {
        let g = self.gallery(|_| true);
        let mut out = Vec::new();
        for p in &self.people {
            let own = p.embeddings.first().cloned().flatten();
            for (photo, e) in p.photos.iter().zip(&p.embeddings).skip(1) {
                let Some(e) = e else {
                    out.push((photo.as_path(), "NoFace".into(), f32::NAN, f32::NAN));
                    continue;
                };
                let (nearest, sim) = match g.nearest(e).expect("same recognizer") {
                    Some((n, s)) => (n.to_string(), s),
                    None => ("<empty gallery>".into(), f32::NAN),
                };
                if nearest != p.name {
                    let own_sim = own.as_ref().map_or(f32::NAN, |o| o.cosine(e));
                    out.push((photo.as_path(), nearest, sim, own_sim));
                }
            }
        }
        out
    }

    /// Open-set results at each threshold (two folds summed: even-position
    /// people enrolled, then odd-position people enrolled).
    pub fn open_set(&self, thresholds: &[f32]) -> Vec<OpenSet> {
        // (is_enrolled, truth, nearest, similarity) per query, both folds.
        let mut queries: Vec<(bool, &str, Option<String>, f32)> = Vec::new();
        for fold in 0..2 {
            let enrolled = |i: usize| i % 2 == fold;
            let g = self.gallery(enrolled);
            for (i, p) in self.people.iter().enumerate() {
                for e in p.embeddings.iter().skip(1) {
                    let (nearest, sim) = match e {
                        Some(e) => match g.nearest(e).expect("same recognizer") {
                            Some((n, s)) => (Some(n.to_string()), s),
                            None => (None, -1.0),
                        },
                        // No face: the service answers NoFace, neither a name nor Unknown.
                        None => (None, f32::NAN),
                    };
                    queries.push((enrolled(i), &p.name, nearest, sim));
                }
            }
        }
        thresholds
            .iter()
            .map(|&t| {
                let mut r = OpenSet {
                    threshold: t,
                    enrolled_queries: 0,
                    enrolled_correct: 0,
                    enrolled_unknown: 0,
                    unknown_queries: 0,
                    unknown_correct: 0,
                };
                for (enrolled, truth, nearest, sim) in &queries {
                    let accepted = *sim >= t; // NaN (no face): never accepted
                    let rejected = *sim < t; // NaN (no face): never Unknown either
                    if *enrolled {
                        r.enrolled_queries += 1;
                        if accepted && nearest.as_deref() == Some(*truth) {
                            r.enrolled_correct += 1;
                        }
                        if rejected {
                            r.enrolled_unknown += 1;
                        }
                    } else {
                        r.unknown_queries += 1;
                        if rejected {
                            r.unknown_correct += 1;
                        }
                    }
                }
                r
            })
            .collect()
    }
}

/// Result of one open-set experiment with a chosen gallery (see
/// [`PeopleSet::open_set_split`]).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SplitResult {
    /// Queries of enrolled people (their photos after the first).
    pub enrolled_queries: usize,
    /// ... whose nearest enrolled person is right (closed-set top-1).
    pub enrolled_top1: usize,
    /// ... answered with the right name at the threshold.
    pub enrolled_correct: usize,
    /// Queries of people not enrolled (all their photos).
    pub unknown_queries: usize,
    /// ... answered Unknown at the threshold.
    pub unknown_rejected: usize,
}

impl SplitResult {
    /// Adds another experiment's counts.
    pub fn add(&mut self, o: &SplitResult) {
        self.enrolled_queries += o.enrolled_queries;
        self.enrolled_top1 += o.enrolled_top1;
        self.enrolled_correct += o.enrolled_correct;
        self.unknown_queries += o.unknown_queries;
        self.unknown_rejected += o.unknown_rejected;
    }
    /// Closed-set top-1 of the enrolled people's queries (%).
    pub fn top1_pct(&self) -> f64 {
        percent(self.enrolled_top1, self.enrolled_queries)
    }
    /// Enrolled people's queries answered with the right name (%).
    pub fn enrolled_pct(&self) -> f64 {
        percent(self.enrolled_correct, self.enrolled_queries)
    }
    /// Unknown people's queries answered Unknown (%).
    pub fn unknown_pct(&self) -> f64 {
        percent(self.unknown_rejected, self.unknown_queries)
    }
}

impl PeopleSet {
    /// Cosine similarities of every pair of photos (with a face) of two
    /// different people: the impostor score distribution.
    pub fn impostor_scores(&self, keep: impl Fn(usize) -> bool) -> Vec<f32> {
        let all: Vec<(usize, &Embedding)> = self
            .people
            .iter()
            .enumerate()
            .filter(|(i, _)| keep(*i))
            .flat_map(|(i, p)| p.embeddings.iter().flatten().map(move |e| (i, e)))
            .collect();
        let mut out = Vec::new();
        for (a, (pa, ea)) in all.iter().enumerate() {
            for (pb, eb) in &all[a + 1..] {
                if pa != pb {
                    out.push(ea.cosine(eb));
                }
            }
        }
        out
    }

    /// Cosine similarities of every pair of photos of the same person.
    pub fn genuine_scores(&self) -> Vec<f32> {
        let mut out = Vec::new();
        for p in &self.people {
            let es: Vec<&Embedding> = p.embeddings.iter().flatten().collect();
            for (a, ea) in es.iter().enumerate() {
                for eb in &es[a + 1..] {
                    out.push(ea.cosine(eb));
                }
            }
        }
        out
    }

    /// One open-set experiment: the people whose role is
    /// [`Role::Enrolled`] are enrolled with their first photo and queried
    /// with the others; the [`Role::Stranger`]s are queried with all their
    /// photos and should be answered Unknown; [`Role::Absent`] people take
    /// no part. `threshold(n)` gives the threshold for a gallery of `n`
    /// people. Photos without a face count as wrong answers.
    pub fn open_set_split(&self, roles: &[Role], threshold: impl Fn(usize) -> f32) -> SplitResult {
        let g = self.gallery(|i| roles[i] == Role::Enrolled);
        let t = threshold(g.people().len());
        let mut r = SplitResult::default();
        for (i, role, e) in self.open_set_queries(roles) {
            let nearest = e.and_then(|e| g.nearest(e).expect("same recognizer"));
            if role == Role::Enrolled {
                r.enrolled_queries += 1;
                if let Some((n, s)) = nearest {
                    if n == self.people[i].name {
                        r.enrolled_top1 += 1;
                        if s >= t {
                            r.enrolled_correct += 1;
                        }
                    }
                }
            } else {
                r.unknown_queries += 1;
                if matches!(nearest, Some((_, s)) if s < t) || (e.is_some() && nearest.is_none()) {
                    r.unknown_rejected += 1;
                }
            }
        }
        r
    }

    /// The queries of one open-set experiment, as (person, role, embedding
    /// of the photo, `None` without a face): an enrolled person's photos
    /// after the first (the first is the one enrolled), every photo of a
    /// stranger, none of an absent person.
    pub fn open_set_queries<'a>(&'a self, roles: &'a [Role]) -> impl Iterator<Item = (usize, Role, Option<&'a Embedding>)> + 'a {
        self.people.iter().zip(roles).enumerate().flat_map(|(i, (p, &role))| {
            let photos = match role {
                Role::Enrolled => &p.embeddings[1.min(p.embeddings.len())..],
                Role::Stranger => &p.embeddings[..],
                Role::Absent => &[],
            };
            photos.iter().map(move |e| (i, role, e.as_ref()))
        })
    }
}

/// A person's part in one open-set experiment
/// ([`PeopleSet::open_set_split`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Enrolled with the first photo, queried with the others.
    Enrolled,
    /// Not enrolled, queried with every photo.
    Stranger,
    /// Neither enrolled nor queried (held out of this experiment).
    Absent,
}

fn largest_face(model: &FaceModel, path: &Path) -> Result<Option<Embedding>> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
    let img = decode_image(&bytes, &DecodeLimits::default())?;
    let faces = model.detect(&img)?;
    match faces.first() {
        Some(f) => Ok(Some(model.embed(&img, f)?)),
        None => Ok(None),
    }
}

fn is_image(p: &Path) -> bool {
    p.is_file()
        && p.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .is_some_and(|e| ["jpg", "jpeg", "png", "webp", "bmp"].contains(&e.as_str()))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 192-d unit vector mostly along axis `axis`, tilted towards axis
    /// 191 by `tilt`.
    fn unit(axis: usize, tilt: f32) -> Option<Embedding> {
        let mut v = vec![0.0; 192];
        v[axis] = 1.0;
        v[191] = tilt;
        Some(Embedding::normalized(v))
    }

    fn person(name: &str, embeddings: Vec<Option<Embedding>>) -> Person {
        Person { name: name.into(), photos: vec![PathBuf::new(); embeddings.len()], embeddings }
    }

    #[test]
    fn open_set_split_counts_only_the_people_taking_part() {
        let set = PeopleSet {
            kind: RecognizerKind::MobileFaceNet,
            people: vec![
                person("ann", vec![unit(0, 0.0), unit(0, 0.1), None]),
                person("bob", vec![unit(1, 0.0), unit(0, 0.05)]),
                person("cy", vec![unit(2, 0.0), unit(2, 0.0), unit(2, 0.0)]),
                person("dee", vec![unit(3, 0.0)]),
            ],
        };
        let roles = [Role::Enrolled, Role::Stranger, Role::Absent, Role::Enrolled];
        let r = set.open_set_split(&roles, |n| {
            assert_eq!(n, 2, "ann and dee are enrolled");
            0.5
        });
        // ann's second photo is right, her third has no face; dee has no
        // photo left to query; cy takes no part.
        assert_eq!((r.enrolled_queries, r.enrolled_top1, r.enrolled_correct), (2, 1, 1));
        // bob's first photo is far from everybody enrolled, his second is
        // (nearly) ann's face: one stranger rejected, one falsely accepted.
        assert_eq!((r.unknown_queries, r.unknown_rejected), (2, 1));

        let everybody_strange = [Role::Stranger; 4];
        let r = set.open_set_split(&everybody_strange, |_| 0.5);
        assert_eq!((r.enrolled_queries, r.unknown_queries, r.unknown_rejected), (0, 9, 8), "the photo without a face counts as wrong");
    }
}
