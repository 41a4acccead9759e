//! Message bodies exchanged on the request and response queues (JSON).
//!
//! Images never travel through a queue (the course's request queue accepts
//! 1 KiB): the web tier stores the image in the input bucket and sends only
//! its key.

use serde::{Deserialize, Serialize};

/// What the caller wants back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The name of the largest face (the course's `POST /`).
    #[default]
    Name,
    /// Every face with its box, name and similarity (`POST /v1/recognize`).
    Faces,
}

/// A recognition request, sent by the web tier on the request queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Unique id the response is matched with.
    pub request_id: String,
    /// Key of the image in the input bucket.
    pub key: String,
    /// What to answer.
    #[serde(default)]
    pub mode: Mode,
    /// When the web tier stops waiting (Unix milliseconds): a response
    /// nobody claims after this is deleted instead of circulating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
}

/// Now in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A face box in image pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FaceBox {
    /// Left edge.
    pub x1: f32,
    /// Top edge.
    pub y1: f32,
    /// Right edge.
    pub x2: f32,
    /// Bottom edge.
    pub y2: f32,
}

/// One recognised face.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaceMatch {
    /// Where the face is.
    #[serde(rename = "box")]
    pub bbox: FaceBox,
    /// Best-matching enrolled person, `None` when nobody is similar enough.
    pub name: Option<String>,
    /// Cosine similarity with the best-matching person (0 when the gallery
    /// is empty).
    pub similarity: f32,
}

/// The result of recognising one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recognition {
    /// The course's answer: the largest face's name, `Unknown` or `NoFace`.
    pub name: String,
    /// All faces, largest first (empty in [`Mode::Name`] answers only when
    /// there was no face).
    pub faces: Vec<FaceMatch>,
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Recognition succeeded.
    Ok(Recognition),
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
            mode: Mode::Faces,
            expires_at_ms: Some(now_ms()),
        };
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.len() < 1024, "{}", json.len());
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), r);
        // mode defaults to Name
        let old: Request = serde_json::from_str(r#"{"request_id":"a","key":"b"}"#).unwrap();
        assert_eq!(old.mode, Mode::Name);
    }

    #[test]
    fn response_shapes() {
        let ok = Response {
            request_id: "1".into(),
            key: "a.jpg".into(),
            result: Outcome::Ok(Recognition { name: "Paul".into(), faces: vec![] }),
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
    fn stems() {
        assert_eq!(stem("test_00.jpg"), "test_00");
        assert_eq!(stem("a/b/c.tar.gz"), "c.tar");
        assert_eq!(stem("noext"), "noext");
        assert_eq!(stem(".hidden"), ".hidden");
        assert_eq!(stem("été.png"), "été");
    }
}
