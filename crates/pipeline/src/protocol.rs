//! Message bodies exchanged on the request and response queues (JSON).
//!
//! Images never travel through a queue (the course's request queue accepts
//! 1 KiB): the web tier stores the image in the input bucket and sends only
//! its key.

use facefleet_gallery::index::Candidate;
use facefleet_gallery::{AnalyzedFace, FaceBox, FaceQuality};
use serde::{Deserialize, Serialize};

/// The course answer for an image whose largest face matches nobody.
pub const UNKNOWN: &str = "Unknown";

/// The course answer for an image without a face.
pub const NO_FACE: &str = "NoFace";

/// What the caller wants back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The name of the largest face (the course's `POST /`).
    #[default]
    Name,
    /// Every face with its box, name, similarity and candidates
    /// (`POST /v1/recognize`).
    Faces,
    /// Faces found, without identifying them (`POST /v1/detect`).
    Detect,
    /// Whether the largest faces of `key` and `other_key` are the same
    /// person (`POST /v1/verify`).
    Verify,
}

/// Per-request settings of a search.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SearchOptions {
    /// Similarity a face needs to be named; `None`: the engine's calibrated
    /// open-set threshold for the collection's size (for `verify`, its
    /// verification threshold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
    /// Candidates returned per face, best first.
    #[serde(default = "SearchOptions::default_limit")]
    pub limit: usize,
    /// Faces analysed per image, largest first.
    #[serde(default = "SearchOptions::default_max_faces")]
    pub max_faces: usize,
}

impl SearchOptions {
    /// Most candidates a request may ask for.
    pub const MAX_LIMIT: usize = 50;
    /// Most faces a request may ask for.
    pub const MAX_FACES: usize = 100;

    fn default_limit() -> usize {
        1
    }

    fn default_max_faces() -> usize {
        20
    }

    /// Checks the ranges (`threshold` in -1..=1, `limit` 1..=50,
    /// `max_faces` 1..=100); the message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(t) = self.threshold {
            if !(-1.0..=1.0).contains(&t) {
                return Err(format!("`threshold` must be between -1 and 1 (got {t})"));
            }
        }
        if !(1..=Self::MAX_LIMIT).contains(&self.limit) {
            return Err(format!("`limit` must be between 1 and {} (got {})", Self::MAX_LIMIT, self.limit));
        }
        if !(1..=Self::MAX_FACES).contains(&self.max_faces) {
            return Err(format!("`max_faces` must be between 1 and {} (got {})", Self::MAX_FACES, self.max_faces));
        }
        Ok(())
    }
}

impl Default for SearchOptions {
    fn default() -> Self {
        Self { threshold: None, limit: Self::default_limit(), max_faces: Self::default_max_faces() }
    }
}

fn default_collection() -> String {
    facefleet_gallery::DEFAULT_COLLECTION.to_string()
}

fn is_default_collection(c: &str) -> bool {
    c == facefleet_gallery::DEFAULT_COLLECTION
}

fn is_default_options(o: &SearchOptions) -> bool {
    *o == SearchOptions::default()
}

/// A request, sent by the web tier on the request queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Unique id the response is matched with.
    pub request_id: String,
    /// Key of the image in the input bucket.
    pub key: String,
    /// What to answer.
    #[serde(default)]
    pub mode: Mode,
    /// The gallery collection to search.
    #[serde(default = "default_collection", skip_serializing_if = "is_default_collection")]
    pub collection: String,
    /// The second image of a [`Mode::Verify`] request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_key: Option<String>,
    /// Threshold, candidates and faces per image.
    #[serde(default, skip_serializing_if = "is_default_options")]
    pub options: SearchOptions,
    /// When the web tier stops waiting (Unix milliseconds): a response
    /// nobody claims after this is deleted instead of circulating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
}

impl Request {
    /// A request for `key` in `mode` against the default collection with
    /// default options.
    pub fn new(request_id: impl Into<String>, key: impl Into<String>, mode: Mode) -> Self {
        Self {
            request_id: request_id.into(),
            key: key.into(),
            mode,
            collection: default_collection(),
            other_key: None,
            options: SearchOptions::default(),
            expires_at_ms: None,
        }
    }
}

/// Now in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// One face of an answer: where it is, how good it is, and who it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FaceResult {
    /// Where the face is.
    #[serde(rename = "box")]
    pub bbox: FaceBox,
    /// Left eye, right eye, nose tip, left and right mouth corners (image
    /// pixels).
    pub landmarks: [[f32; 2]; 5],
    /// Detector confidence in 0..=1.
    pub score: f32,
    /// The shorter side of the box, in pixels.
    pub size: f32,
    /// Sharpness and pose.
    pub quality: FaceQuality,
    /// Best-matching enrolled person, `null` when nobody is similar enough
    /// (always `null` from `detect`).
    #[serde(default)]
    pub name: Option<String>,
    /// Cosine similarity with the best-matching person (0 when the
    /// collection is empty or the face was not searched).
    #[serde(default)]
    pub similarity: f32,
    /// The nearest enrolled people, best first, up to the request's
    /// `limit`, whatever the threshold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<Candidate>,
}

impl FaceResult {
    /// The face as detected, not identified.
    pub fn detected(f: &AnalyzedFace) -> Self {
        Self {
            bbox: f.bbox,
            landmarks: f.landmarks,
            score: f.score,
            size: f.size,
            quality: f.quality,
            name: None,
            similarity: 0.0,
            candidates: Vec::new(),
        }
    }
}

/// The result of recognising (or detecting the faces of) one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recognition {
    /// The course's answer: the largest face's name, `Unknown` or `NoFace`.
    pub name: String,
    /// All faces, largest first.
    pub faces: Vec<FaceResult>,
    /// Similarity a face needed to be named.
    #[serde(default)]
    pub threshold: f32,
    /// Model id of the embeddings.
    #[serde(default)]
    pub model: String,
}

/// The result of comparing the largest faces of two images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Verification {
    /// Cosine similarity of the two faces' embeddings.
    pub similarity: f32,
    /// Whether `similarity` reaches `threshold`: the same person.
    pub same: bool,
    /// The decision threshold used (the calibrated one unless the request
    /// set its own).
    pub threshold: f32,
    /// Model id of the embeddings.
    pub model: String,
    /// The largest face of image `a`.
    pub a: FaceResult,
    /// The largest face of image `b`.
    pub b: FaceResult,
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The input cannot be processed (not an image, corrupt, too large,
    /// missing object): retrying will not help.
    BadInput,
    /// Processing kept failing; the request was dead-lettered.
    Failed,
    /// The collection the request names no longer exists (deleted after
    /// the request was queued).
    NoSuchCollection,
}

/// The error half of a response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseError {
    /// Category of the failure.
    pub kind: ErrorKind,
    /// Human-readable reason.
    pub message: String,
}

/// Outcome carried by a response.
// A response lives only between the queue and its handler, one at a time:
// the size of the `Ok` variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Recognition or detection succeeded.
    Ok(Recognition),
    /// Verification succeeded.
    Verified(Verification),
    /// Recognition failed for good.
    Err(ResponseError),
}

/// A response, sent by a worker on the response queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Id of the request this answers.
    pub request_id: String,
    /// Key of the image in the input bucket.
    pub key: String,
    /// The result.
    pub result: Outcome,
    /// Copied from the request: after this no web tier waits for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
}

/// A record written to the dead-letter queue by a worker that gives up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The original message body (may not be valid JSON).
    pub body: String,
    /// Why it was given up.
    pub error: String,
    /// How many times it had been received.
    pub receive_count: u32,
}

/// The stem of an object key: its last path segment without the extension
/// (`dir/test_00.jpg` → `test_00`). This is the output bucket's key and the
/// left half of the course's `<stem>:<name>` answer.
pub fn stem(key: &str) -> &str {
    let base = key.rsplit('/').next().unwrap_or(key);
    match base.rfind('.') {
        Some(0) | None => base,
        Some(i) => &base[..i],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip_and_size() {
        let r = Request {
            request_id: uuid::Uuid::new_v4().to_string(),
            key: "x".repeat(255),
            mode: Mode::Verify,
            collection: "c".repeat(64),
            other_key: Some("y".repeat(255)),
            options: SearchOptions { threshold: Some(0.5), limit: 50, max_faces: 100 },
            expires_at_ms: Some(now_ms()),
        };
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.len() < 1024, "{}", json.len());
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), r);
        // mode defaults to Name
        let old: Request = serde_json::from_str(r#"{"request_id":"a","key":"b"}"#).unwrap();
        assert_eq!(old, Request::new("a", "b", Mode::Name));
        assert_eq!(old.collection, "default");
        // defaults are not sent
        assert_eq!(serde_json::to_string(&old).unwrap(), r#"{"request_id":"a","key":"b","mode":"name"}"#);
    }

    #[test]
    fn response_shapes() {
        let ok = Response {
            request_id: "1".into(),
            key: "a.jpg".into(),
            result: Outcome::Ok(Recognition { name: "Paul".into(), faces: vec![], threshold: 0.5, model: "m".into() }),
            expires_at_ms: None,
        };
        let v: serde_json::Value = serde_json::to_value(&ok).unwrap();
        assert_eq!(v["result"]["ok"]["name"], "Paul");
        let err = Response {
            request_id: "1".into(),
            key: "a.jpg".into(),
            result: Outcome::Err(ResponseError { kind: ErrorKind::BadInput, message: "m".into() }),
            expires_at_ms: None,
        };
        let v: serde_json::Value = serde_json::to_value(&err).unwrap();
        assert_eq!(v["result"]["err"]["kind"], "bad_input");
        assert_eq!(serde_json::from_value::<Response>(v).unwrap(), err);
    }

    #[test]
    fn options_are_checked() {
        assert!(SearchOptions::default().validate().is_ok());
        for bad in [
            SearchOptions { threshold: Some(1.5), ..Default::default() },
            SearchOptions { threshold: Some(f32::NAN), ..Default::default() },
            SearchOptions { limit: 0, ..Default::default() },
            SearchOptions { limit: 51, ..Default::default() },
            SearchOptions { max_faces: 0, ..Default::default() },
            SearchOptions { max_faces: 101, ..Default::default() },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stems() {
        assert_eq!(stem("test_00.jpg"), "test_00");
        assert_eq!(stem("a/b/c.tar.gz"), "c.tar");
        assert_eq!(stem("noext"), "noext");
        assert_eq!(stem(".hidden"), ".hidden");
        assert_eq!(stem("été.png"), "été");
    }
}
