//! S3 object-created events ([`S3Event`]), shared by the Lambda functions
//! and the local trigger.
//!
//! S3 URL-encodes the keys of its notifications, with `+` for a space
//! (`my video.mp4` arrives as `my+video.mp4`, `é` as `%C3%A9`): every key
//! is decoded with [`decode_key`] before use.

use aws_lambda_events::event::s3::S3Event;
use serde_json::json;

/// One object named by an event record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    /// Bucket name.
    pub bucket: String,
    /// The decoded object key.
    pub key: String,
    /// Object size announced by the event, if any.
    pub size: Option<u64>,
}

/// A record that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The record lacks the bucket name or the key.
    #[error("event record without {0}")]
    Missing(&'static str),
    /// The key is not valid URL encoding of UTF-8.
    #[error("event key `{0}` is not valid URL-encoded UTF-8")]
    BadKey(String),
}

/// Decodes an S3 event key: `+` is a space, `%XX` a byte; the bytes must be
/// UTF-8.
pub fn decode_key(raw: &str) -> Result<String, EventError> {
    let bad = || EventError::BadKey(raw.to_string());
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
                let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// Encodes a key as S3 does in its notifications (the inverse of
/// [`decode_key`]): unreserved characters and `/` stay, a space becomes
/// `+`, everything else `%XX`.
pub fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for &b in key.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Runs `each(bucket, key)` on every object of `event`, recording the
/// metrics of `function` for each. Returns the outcomes, or the first error
/// that calls for a retry (after handling the other records: handling is
/// idempotent). A record that names no usable object is `Ignored`.
pub(crate) async fn handle_objects<F, Fut>(
    event: &S3Event,
    function: &'static str,
    mut each: F,
) -> Result<Vec<crate::Outcome>, crate::VideoError>
where
    F: FnMut(String, String) -> Fut,
    Fut: std::future::Future<Output = Result<crate::Outcome, crate::VideoError>>,
{
    let mut outcomes = Vec::new();
    let mut first_error = None;
    for object in objects(event) {
        let start = std::time::Instant::now();
        let (key, result) = match object {
            Ok(o) => {
                let r = each(o.bucket, o.key.clone()).await;
                (o.key, r)
            }
            Err(e) => (String::new(), Ok(crate::Outcome::Ignored { reason: e.to_string() })),
        };
        crate::metrics::record(function, &key, start.elapsed(), &result);
        match result {
            Ok(o) => outcomes.push(o),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(outcomes),
    }
}

/// The objects of an event, one result per record, keys decoded.
pub fn objects(event: &S3Event) -> Vec<Result<ObjectRef, EventError>> {
    event
        .records
        .iter()
        .map(|r| {
            let bucket = r.s3.bucket.name.clone().ok_or(EventError::Missing("bucket name"))?;
            let raw = r.s3.object.key.as_deref().ok_or(EventError::Missing("object key"))?;
            let key = decode_key(raw)?;
            let size = r.s3.object.size.and_then(|s| u64::try_from(s).ok());
            Ok(ObjectRef { bucket, key, size })
        })
        .collect()
}

/// An `ObjectCreated:Put` event for one object, shaped as S3 sends it
/// (key URL-encoded), as the local trigger delivers it to the handlers.
pub fn object_created(bucket: &str, key: &str, size: u64) -> S3Event {
    let value = json!({
        "Records": [{
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": "local",
            "eventTime": "1970-01-01T00:00:00.000Z",
            "eventName": "ObjectCreated:Put",
            "userIdentity": {"principalId": "facefleet-local"},
            "requestParameters": {"sourceIPAddress": "127.0.0.1"},
            "responseElements": {},
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "facefleet-local-trigger",
                "bucket": {
                    "name": bucket,
                    "ownerIdentity": {"principalId": "facefleet-local"},
                    "arn": format!("arn:aws:s3:::{bucket}")
                },
                "object": {"key": encode_key(key), "size": size}
            }
        }]
    });
    serde_json::from_value(value).expect("a well-formed S3 event")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_s3_keys() {
        assert_eq!(decode_key("my+video.mp4").unwrap(), "my video.mp4");
        assert_eq!(decode_key("vid%C3%A9o+%22x%22.mp4").unwrap(), "vidéo \"x\".mp4");
        assert_eq!(decode_key("a%2Bb.mp4").unwrap(), "a+b.mp4");
        assert_eq!(decode_key("..%2Fevil.mp4").unwrap(), "../evil.mp4");
        assert!(decode_key("bad%2").is_err());
        assert!(decode_key("bad%zz").is_err());
        assert!(decode_key("%FF%FE").is_err());
    }

    #[test]
    fn encode_round_trips() {
        for k in ["test_0.mp4", "my video.mp4", "vidéo \"x\" 'y'.mp4", "a+b/c&d.mp4", "日本.mp4"] {
            assert_eq!(decode_key(&encode_key(k)).unwrap(), k);
        }
        assert_eq!(encode_key("my video.mp4"), "my+video.mp4");
    }

    #[test]
    fn built_events_parse_back() {
        let e = object_created("b-input", "my vidéo.mp4", 42);
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains("my+vid%C3%A9o.mp4"), "{json}");
        let back: S3Event = serde_json::from_str(&json).unwrap();
        assert_eq!(
            objects(&back),
            vec![Ok(ObjectRef { bucket: "b-input".into(), key: "my vidéo.mp4".into(), size: Some(42) })]
        );
    }
}
