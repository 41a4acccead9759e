//! `POST /v1/videos` and `GET /v1/videos/{stem}`: upload a video to the
//! input bucket and read its result.
//!
//! - `POST /v1/videos`, multipart field `video` (its file name becomes the
//!   key: last path component only): stores the video in `<prefix>-input`
//!   and answers `202` with JSON `{"key", "stem", "status_url"}`. The
//!   trigger (local or S3) does the rest. Missing field, empty file, a
//!   bad file name: `400`; larger than the limit: `413`.
//! - `GET /v1/videos/{stem}`: `200` JSON `{"stem", "status", "name",
//!   "error", "frames_done"}` with status `done` (name set), `failed`
//!   (error set) or `pending`.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::{Bytes, BytesMut};
use facefleet_ports::{Names, ObjectStore};
use serde::Serialize;

use crate::keys;
use crate::split::DEFAULT_MAX_VIDEO_BYTES;

/// What the video routes need.
#[derive(Clone)]
pub struct VideoApi {
    /// The object store.
    pub store: Arc<dyn ObjectStore>,
    /// Resource names.
    pub names: Names,
    /// Largest accepted upload, in bytes (default 200 MB, as the splitter).
    pub max_video_bytes: u64,
}

impl VideoApi {
    /// Routes over `store` and `names` with the default size limit.
    pub fn new(store: Arc<dyn ObjectStore>, names: Names) -> Self {
        Self { store, names, max_video_bytes: DEFAULT_MAX_VIDEO_BYTES }
    }
}

/// The routes `POST /v1/videos` and `GET /v1/videos/{stem}`, to merge into
/// a web tier's router.
pub fn router(api: VideoApi) -> Router {
    // Room for the multipart framing around the file.
    let body_limit = usize::try_from(api.max_video_bytes).unwrap_or(usize::MAX).saturating_add(64 * 1024);
    Router::new()
        .route("/v1/videos", post(upload))
        .route("/v1/videos/{stem}", get(status))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(Arc::new(api))
}

/// Answer of a successful upload.
#[derive(Debug, Serialize)]
pub struct Accepted {
    /// Key of the video in the input bucket.
    pub key: String,
    /// Stem under which its frames and results appear.
    pub stem: String,
    /// Where to poll its result.
    pub status_url: String,
}

/// State of one video.
#[derive(Debug, Serialize)]
pub struct VideoStatus {
    /// The video's stem.
    pub stem: String,
    /// `done`, `failed` or `pending`.
    pub status: &'static str,
    /// The person (when done).
    pub name: Option<String>,
    /// Why it failed (when failed).
    pub error: Option<String>,
    /// Frames with a result so far.
    pub frames_done: u64,
}

fn plain(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, msg.into()).into_response()
}

async fn upload(State(api): State<Arc<VideoApi>>, mut multipart: Multipart) -> Response {
    loop {
        let mut field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => return plain(StatusCode::BAD_REQUEST, "missing multipart field `video`\n"),
            Err(e) => return plain(e.status(), format!("bad multipart body: {}\n", e.body_text())),
        };
        if field.name() != Some("video") {
            continue;
        }
        let Some(file_name) = field.file_name().map(str::to_string) else {
            return plain(StatusCode::BAD_REQUEST, "field `video` has no file name\n");
        };
        let key = match keys::upload_key(&file_name) {
            Ok(k) => k,
            Err(e) => return plain(StatusCode::BAD_REQUEST, format!("{e}\n")),
        };
        let mut body = BytesMut::new();
        loop {
            match field.chunk().await {
                Ok(Some(chunk)) => {
                    if (body.len() + chunk.len()) as u64 > api.max_video_bytes {
                        return plain(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            format!("video larger than the limit of {} bytes\n", api.max_video_bytes),
                        );
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return plain(e.status(), format!("reading the upload: {}\n", e.body_text())),
            }
        }
        if body.is_empty() {
            return plain(StatusCode::BAD_REQUEST, "empty video file\n");
        }
        let body: Bytes = body.freeze();
        if let Err(e) = api.store.put(&api.names.video_input, &key, body).await {
            tracing::error!(key, error = %e, "storing an uploaded video failed");
            return plain(StatusCode::SERVICE_UNAVAILABLE, format!("cannot store the video: {e}\n"));
        }
        let stem = keys::video_stem(&key).to_string();
        let status_url = format!("/v1/videos/{}", url_path_segment(&stem));
        tracing::info!(key, "video uploaded");
        return (StatusCode::ACCEPTED, Json(Accepted { key, stem, status_url })).into_response();
    }
}

async fn status(State(api): State<Arc<VideoApi>>, Path(stem): Path<String>) -> Response {
    if keys::check_video_key(&stem).is_err() || stem.contains('/') {
        return plain(StatusCode::BAD_REQUEST, "invalid video name\n");
    }
    let out = &api.names.video_output;
    let read = |key: String| {
        let store = api.store.clone();
        let out = out.clone();
        async move {
            match store.get(&out, &key).await {
                Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(e),
            }
        }
    };
    let (name, error, frames_done) = match (
        read(keys::video_result_key(&stem)).await,
        read(keys::video_error_key(&stem)).await,
        api.store.count(out, &keys::frame_results_prefix(&stem)).await,
    ) {
        (Ok(n), Ok(e), Ok(c)) => (n, e, c),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) if !e.is_not_found() => {
            return plain(StatusCode::SERVICE_UNAVAILABLE, format!("object store: {e}\n"))
        }
        _ => (None, None, 0),
    };
    let status = if name.is_some() {
        "done"
    } else if error.is_some() {
        "failed"
    } else {
        "pending"
    };
    Json(VideoStatus { stem, status, name, error, frames_done }).into_response()
}

/// Percent-encodes one URL path segment.
fn url_path_segment(s: &str) -> String {
    let mut out = String::new();
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
