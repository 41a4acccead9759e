//! The local (no cloud) command-line flows as library functions: enroll
//! people into a gallery folder, recognise photos against it, and format the
//! answers. The `facefleet` binary wires these to `facefleet enroll` and
//! `facefleet recognize`.
//!
//! A gallery folder holds one file, [`GALLERY_FILE`], written atomically.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{ModelError, Result};
use crate::{decode_image, Answer, DecodeLimits, FaceModel, Gallery, RecognizedFace};

/// File name of the gallery inside a gallery folder.
pub const GALLERY_FILE: &str = "gallery.bin";

/// The gallery file of a gallery folder.
pub fn gallery_path(gallery_dir: &Path) -> PathBuf {
    gallery_dir.join(GALLERY_FILE)
}

/// Reads the gallery of `gallery_dir`; `Ok(None)` when the folder has none yet.
pub fn load_gallery(gallery_dir: &Path) -> Result<Option<Gallery>> {
    let path = gallery_path(gallery_dir);
    match std::fs::read(&path) {
        Ok(bytes) => Gallery::from_bytes(&bytes)
            .map(Some)
            .map_err(|e| match e {
                ModelError::InvalidGallery(why) => ModelError::InvalidGallery(format!("{}: {why}", path.display())),
                other => other,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ModelError::io(path, e)),
    }
}

/// Writes `gallery` to `gallery_dir` (created if needed) atomically: a
/// temporary file in the same folder, then a rename.
pub fn save_gallery(gallery_dir: &Path, gallery: &Gallery) -> Result<PathBuf> {
    std::fs::create_dir_all(gallery_dir).map_err(|e| ModelError::io(gallery_dir, e))?;
    let path = gallery_path(gallery_dir);
    let tmp = gallery_dir.join(format!(".{GALLERY_FILE}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, gallery.to_bytes()).map_err(|e| ModelError::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        ModelError::io(&path, e)
    })?;
    Ok(path)
}

/// Holds the gallery folder's lock (`.gallery.lock`, created with the
/// folder if needed) until dropped: one writer at a time.
fn lock_gallery(gallery_dir: &Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(gallery_dir).map_err(|e| ModelError::io(gallery_dir, e))?;
    let path = gallery_dir.join(".gallery.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| ModelError::io(&path, e))?;
    file.lock().map_err(|e| ModelError::io(&path, e))?;
    Ok(file)
}

/// What [`enroll`] did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnrollReport {
    /// The person.
    pub name: String,
    /// Photos whose largest face was enrolled.
    pub enrolled: Vec<PathBuf>,
    /// Photos that were skipped, with the reason (unreadable, no face...).
    pub skipped: Vec<(PathBuf, String)>,
    /// Embeddings this person now has in the gallery.
    pub person_embeddings: usize,
    /// People in the gallery after enrolling.
    pub people: usize,
    /// Where the gallery was written.
    pub gallery_file: PathBuf,
}

/// Enrolls the largest face of each photo in `image_paths` as `name` into
/// the gallery of `gallery_dir` (created with the model's recognizer when
/// absent) and saves it. Photos without a face, or that cannot be read, are
/// skipped and listed in the report; it is an error when none is usable, or
/// when the existing gallery belongs to another recognizer.
pub fn enroll(
    gallery_dir: &Path,
    name: &str,
    image_paths: &[PathBuf],
    model: &FaceModel,
) -> Result<EnrollReport> {
    // Read, change and write under the folder's lock, so that enrollments
    // running at once (several `facefleet enroll --gallery`) all land. The
    // gallery is read first: one of another recognizer fails before any
    // model work.
    let _lock = lock_gallery(gallery_dir)?;
    let mut gallery = match load_gallery(gallery_dir)? {
        Some(g) => {
            model.check_gallery(&g)?;
            g
        }
        None => Gallery::new(model.recognizer_kind()),
    };
    let mut enrolled = Vec::new();
    let mut skipped = Vec::new();
    let mut embeddings = Vec::new();
    for path in image_paths {
        match largest_face_embedding(path, model) {
            Ok(e) => {
                embeddings.push(e);
                enrolled.push(path.clone());
            }
            Err(reason) => skipped.push((path.clone(), reason)),
        }
    }
    if embeddings.is_empty() {
        let why: Vec<String> = skipped
            .iter()
            .map(|(p, r)| format!("{}: {r}", p.display()))
            .collect();
        return Err(ModelError::NothingEnrolled {
            name: name.to_string(),
            reasons: if why.is_empty() {
                "no photos given".into()
            } else {
                why.join("; ")
            },
        });
    }
    gallery.enroll(name, embeddings)?;
    let gallery_file = save_gallery(gallery_dir, &gallery)?;
    let people = gallery.people();
    let person_embeddings = people
        .iter()
        .find(|(n, _)| n == name)
        .map_or(0, |(_, c)| *c);
    Ok(EnrollReport {
        name: name.to_string(),
        enrolled,
        skipped,
        person_embeddings,
        people: people.len(),
        gallery_file,
    })
}

fn largest_face_embedding(path: &Path, model: &FaceModel) -> Result<crate::Embedding, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let img = decode_image(&bytes, &DecodeLimits::default()).map_err(|e| e.to_string())?;
    let faces = model.detect(&img).map_err(|e| e.to_string())?;
    let face = faces.first().ok_or_else(|| "no face found".to_string())?;
    model.embed(&img, face).map_err(|e| e.to_string())
}

/// The result for one photo of [`recognize`]: its file stem and its faces
/// (largest first; empty = no face) or why it could not be processed.
pub type PhotoResult = (String, Result<Vec<RecognizedFace>>);

/// Recognises each photo against the gallery of `gallery_dir`. Fails only
/// when the gallery cannot be used (missing, corrupt, other recognizer);
/// a bad photo gives an error in its own entry.
pub fn recognize(
    gallery_dir: &Path,
    image_paths: &[PathBuf],
    model: &FaceModel,
) -> Result<Vec<PhotoResult>> {
    let gallery = load_gallery(gallery_dir)?.ok_or_else(|| {
        ModelError::InvalidGallery(format!(
            "no gallery at {} (enroll someone first)",
            gallery_path(gallery_dir).display()
        ))
    })?;
    model.check_gallery(&gallery)?;
    Ok(image_paths
        .iter()
        .map(|path| {
            let result = std::fs::read(path)
                .map_err(|e| ModelError::io(path, e))
                .and_then(|bytes| decode_image(&bytes, &DecodeLimits::default()))
                .and_then(|img| model.recognize(&img, &gallery));
            (stem(path), result)
        })
        .collect())
}

/// The file stem of `path` (`photos/test_00.jpg` -> `test_00`).
pub fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// The classic `<stem>:<answer>` line (`test_00:Paul`, `x:Unknown`,
/// `y:NoFace`); for a photo that failed, `<stem>:Error: <message>`.
pub fn format_line(stem: &str, result: &Result<Vec<RecognizedFace>>) -> String {
    match result {
        Ok(faces) => format!("{stem}:{}", Answer::from_faces(faces)),
        Err(e) => format!("{stem}:Error: {e}"),
    }
}

/// One photo in the `--json` output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JsonPhoto<'a> {
    /// File stem.
    pub image: &'a str,
    /// Name / `Unknown` / `NoFace` (absent on error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// All faces, largest first (absent on error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub faces: Option<&'a [RecognizedFace]>,
    /// Why the photo failed (absent on success).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The `--json` form: an array with one object per photo, e.g.
/// `{"image":"test_00","answer":"Paul","faces":[{"face":{...},"name":"Paul","similarity":0.71}]}`
/// or `{"image":"x","error":"corrupt or truncated JPEG image: ..."}`.
pub fn format_json(results: &[PhotoResult]) -> String {
    let photos: Vec<JsonPhoto<'_>> = results
        .iter()
        .map(|(stem, r)| match r {
            Ok(faces) => JsonPhoto {
                image: stem,
                answer: Some(Answer::from_faces(faces).to_string()),
                faces: Some(faces),
                error: None,
            },
            Err(e) => JsonPhoto {
                image: stem,
                answer: None,
                faces: None,
                error: Some(e.to_string()),
            },
        })
        .collect();
    serde_json::to_string_pretty(&photos).expect("results serialise")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BoundingBox, Embedding, Face, RecognizerKind};

    fn rf(name: Option<&str>) -> RecognizedFace {
        RecognizedFace {
            face: Face {
                bbox: BoundingBox {
                    x1: 1.0,
                    y1: 2.0,
                    x2: 30.0,
                    y2: 40.0,
                },
                score: 0.99,
                landmarks: [[5.0, 6.0]; 5],
            },
            name: name.map(String::from),
            similarity: 0.7,
        }
    }

    #[test]
    fn lines_and_json() {
        let results: Vec<PhotoResult> = vec![
            ("a".into(), Ok(vec![rf(Some("Paul")), rf(None)])),
            ("b".into(), Ok(vec![rf(None)])),
            ("c".into(), Ok(vec![])),
            ("d".into(), Err(ModelError::EmptyImage)),
        ];
        let lines: Vec<String> = results.iter().map(|(s, r)| format_line(s, r)).collect();
        assert_eq!(
            lines,
            ["a:Paul", "b:Unknown", "c:NoFace", "d:Error: empty image: 0 bytes"]
        );
        let json: serde_json::Value = serde_json::from_str(&format_json(&results)).unwrap();
        assert_eq!(json[0]["answer"], "Paul");
        assert_eq!(json[0]["faces"][1]["name"], serde_json::Value::Null);
        assert_eq!(json[2]["answer"], "NoFace");
        assert_eq!(json[3]["error"], "empty image: 0 bytes");
        assert!(json[3].get("answer").is_none());
        assert_eq!(stem(Path::new("x/y/test_00.jpg")), "test_00");
    }

    #[test]
    fn gallery_files_roundtrip() {
        let dir = std::env::temp_dir().join(format!("ff-local-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(load_gallery(&dir).unwrap().is_none());
        let mut g = Gallery::new(RecognizerKind::MobileFaceNet);
        g.enroll("Paul", vec![Embedding::normalized(vec![1.0; 192])]).unwrap();
        let path = save_gallery(&dir, &g).unwrap();
        assert_eq!(path, dir.join("gallery.bin"));
        assert_eq!(load_gallery(&dir).unwrap().unwrap(), g);
        std::fs::write(&path, b"junk").unwrap();
        let err = load_gallery(&dir).unwrap_err().to_string();
        assert!(err.contains("gallery.bin") && err.contains("bad magic"), "{err}");
        assert_eq!(err.matches("invalid gallery").count(), 1, "said once: {err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
