//! `POST /v1/videos` and `GET /v1/videos/{stem}`: upload a video to the
//! input bucket and read its result.
//!
//! - `POST /v1/videos`, multipart field `video` (its file name becomes the
//!   key: last path component only, at most [`keys::MAX_NAME_BYTES`]
//!   bytes): clears the stem's earlier result, stores the video in
//!   `<prefix>-input`, asks the local trigger to split it
//!   ([`crate::local::request_split`]: a re-upload of the same size is split
//!   again too) and answers `202` with JSON `{"key", "stem", "status_url"}`.
//!   The trigger (local or S3) does the rest.
//! - `GET /v1/videos/{stem}`: `200` JSON `{"stem", "status", "name",
//!   "error", "frames_done"}` with status `done` (name set), `failed`
//!   (error set) or `pending` (uploaded, no result yet); `404` when no video
//!   of that stem was uploaded and none has a result.
//!
//! Every error is JSON, `{"error": {"code", "message"}}`:
//!
//! | status | code | when |
//! |---|---|---|
//! | 400 | `bad_request` | not multipart, no `video` field or file name, empty file, bad or too long name |
//! | 404 | `not_found` | `GET` of a video never uploaded |
//! | 408 | `timeout` | the client sent nothing for [`VideoApi::chunk_timeout`] |
//! | 413 | `too_large` | the video is larger than [`VideoApi::max_video_bytes`] |
//! | 415 | `unsupported_media_type` | the file is not MP4/MOV/3GP, Matroska/WebM or AVI ([`crate::sniff`]) |
//! | 500 | `internal` | the object store refused the call, the spool folder failed |
//! | 503 | `unavailable` | [`VideoApi::max_concurrent_uploads`] uploads in progress, or the store is unavailable; with `Retry-After` |
//!
//! Messages never hold a local path or a backend's message: those are
//! logged. A failure text read from `<stem>.error` is served with its paths
//! replaced ([`crate::redact::scrub_paths`]).
//!
//! # Memory and disk
//!
//! An upload is never held in memory: the multipart field is read chunk by
//! chunk (one chunk is what one read of the connection delivers: kilobytes
//! to a few hundred) and written to a temporary file in
//! [`VideoApi::spool_dir`], so memory per upload is O(one chunk). Its first
//! [`crate::sniff::SNIFF_BYTES`] bytes are checked before anything is
//! written; the size limit is enforced while streaming (the temporary file
//! is removed at once). The finished file is handed to
//! [`ObjectStore::put_file`], which streams it from disk where the backend
//! can, then removed; a failed, refused or abandoned (client gone) upload
//! removes it too. Spool files a crashed process left are removed when the
//! router is built ([`crate::temp`]). At most [`VideoApi::max_concurrent_uploads`] uploads run
//! at once, others are answered `503` at once: spool disk use is at most
//! `max_concurrent_uploads × max_video_bytes`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use facefleet_ports::{Names, ObjectStore, PortError};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

use crate::keys;
use crate::redact::scrub_paths;
use crate::sniff::{sniff, ACCEPTED, SNIFF_BYTES};
use crate::split::DEFAULT_MAX_VIDEO_BYTES;

/// Default bound on uploads in progress at once.
pub const DEFAULT_MAX_CONCURRENT_UPLOADS: usize = 4;

/// Default longest wait for the next piece of an upload.
pub const DEFAULT_CHUNK_TIMEOUT: Duration = Duration::from_secs(60);

/// `Retry-After` of a `503`, in seconds.
pub const RETRY_AFTER_SECS: u64 = 5;

/// What the video routes need.
#[derive(Clone)]
pub struct VideoApi {
    /// The object store.
    pub store: Arc<dyn ObjectStore>,
    /// Resource names.
    pub names: Names,
    /// Largest accepted upload, in bytes (default 200 MB, as the splitter).
    pub max_video_bytes: u64,
    /// Folder of the temporary files uploads are streamed to before they
    /// are stored (created if missing); `None`: the system's temporary
    /// folder. Needs room for `max_concurrent_uploads × max_video_bytes`.
    /// A folder set here is this server's own: [`router`] removes every
    /// `facefleet-upload-*` left in it; in the shared default only those
    /// untouched for an hour ([`crate::temp`]).
    pub spool_dir: Option<PathBuf>,
    /// Most uploads in progress at once (default 4); more get `503`.
    pub max_concurrent_uploads: usize,
    /// Longest wait for the next piece of an upload (default 60 s), so a
    /// stalled client cannot hold an upload slot forever; then `408`.
    pub chunk_timeout: Duration,
    /// The local trigger's state bucket, where an upload asks for its video
    /// to be split again ([`crate::local::request_split`]);
    /// `names.video_trigger_state` when `None`.
    pub trigger_state_bucket: Option<String>,
}

impl VideoApi {
    /// Routes over `store` and `names` with the defaults: 200 MB, spooled in
    /// the system's temporary folder, 4 uploads at once.
    pub fn new(store: Arc<dyn ObjectStore>, names: Names) -> Self {
        Self {
            store,
            names,
            max_video_bytes: DEFAULT_MAX_VIDEO_BYTES,
            spool_dir: None,
            max_concurrent_uploads: DEFAULT_MAX_CONCURRENT_UPLOADS,
            chunk_timeout: DEFAULT_CHUNK_TIMEOUT,
            trigger_state_bucket: None,
        }
    }

    /// Spools uploads in `dir` (e.g. `<data-dir>/spool`).
    pub fn with_spool_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spool_dir = Some(dir.into());
        self
    }

    /// Sets the largest accepted upload.
    pub fn with_max_video_bytes(mut self, bytes: u64) -> Self {
        self.max_video_bytes = bytes;
        self
    }

    /// Sets the bound on uploads in progress at once (at least 1).
    pub fn with_max_concurrent_uploads(mut self, uploads: usize) -> Self {
        self.max_concurrent_uploads = uploads.max(1);
        self
    }

    /// Sets the local trigger's state bucket (as its
    /// [`crate::TriggerConfig::state_bucket`]).
    pub fn with_trigger_state_bucket(mut self, bucket: impl Into<String>) -> Self {
        self.trigger_state_bucket = Some(bucket.into());
        self
    }

    /// Sets the longest wait for the next piece of an upload.
    pub fn with_chunk_timeout(mut self, timeout: Duration) -> Self {
        self.chunk_timeout = timeout;
        self
    }
}

struct Shared {
    api: VideoApi,
    uploads: Arc<Semaphore>,
}

/// The routes `POST /v1/videos` and `GET /v1/videos/{stem}`, to merge into
/// a web tier's router. Removes the spool files a crashed process left
/// first.
pub fn router(api: VideoApi) -> Router {
    let (spool, min_age) = crate::temp::sweep_policy(api.spool_dir.as_deref());
    if let Err(e) = crate::temp::sweep(&spool, crate::temp::UPLOAD_PREFIX, min_age) {
        tracing::warn!(dir = %spool.display(), error = %e, "cannot sweep the spool folder");
    }
    // Room for the multipart framing around the file; the file itself is
    // limited while streaming.
    let body_limit = usize::try_from(api.max_video_bytes).unwrap_or(usize::MAX).saturating_add(64 * 1024);
    let uploads = Arc::new(Semaphore::new(api.max_concurrent_uploads.max(1)));
    Router::new()
        .route("/v1/videos", post(upload))
        .route("/v1/videos/{stem}", get(status))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(Arc::new(Shared { api, uploads }))
}

/// Answer of a successful upload.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// Key of the video in the input bucket.
    pub key: String,
    /// Stem under which its frames and results appear.
    pub stem: String,
    /// Where to poll its result.
    pub status_url: String,
}

/// State of one video.
#[derive(Debug, Serialize, utoipa::ToSchema)]
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

/// An error answer: `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with `status` and a message for the client.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), retry_after: None }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn unavailable(message: impl Into<String>) -> Self {
        Self { retry_after: Some(RETRY_AFTER_SECS), ..Self::new(StatusCode::SERVICE_UNAVAILABLE, message) }
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The snake_case code of the status.
    pub fn code(&self) -> &'static str {
        match self.status {
            StatusCode::BAD_REQUEST => "bad_request",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::REQUEST_TIMEOUT => "timeout",
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            s if s.is_server_error() => "internal",
            _ => "error",
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code(), message: &self.message } };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// Logs a store error with its detail and answers without it: `503` when
/// retrying may help, `500` otherwise.
fn store_error(doing: &'static str, bucket: &str, key: &str, e: PortError) -> ApiError {
    if e.is_transient() {
        tracing::warn!(bucket, key, error = %e, "{doing}: object store unavailable");
        ApiError::unavailable("the object store is unavailable; try again later")
    } else {
        tracing::error!(bucket, key, error = %e, "{doing}: object store error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("internal error: {doing} failed"))
    }
}

/// Logs a spool-file error and answers without its path.
fn spool_error(e: std::io::Error) -> ApiError {
    tracing::error!(error = %e, "spooling an upload to disk failed");
    if e.kind() == std::io::ErrorKind::StorageFull {
        ApiError::unavailable("no room to receive the video; try again later")
    } else {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error: the upload could not be received")
    }
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("video larger than the limit of {limit} bytes"))
}

fn multipart_error(e: axum::extract::multipart::MultipartError, limit: u64) -> ApiError {
    let status = e.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return too_large(limit);
    }
    tracing::debug!(error = %e.body_text(), "bad multipart upload");
    if status.is_server_error() {
        ApiError::new(StatusCode::BAD_REQUEST, "the upload was cut short")
    } else {
        ApiError::new(status, "malformed multipart body")
    }
}

/// Multipart body of a video upload.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct VideoForm {
    /// The video (MP4/MOV, Matroska/WebM or AVI).
    #[schema(value_type = String, format = Binary)]
    video: Vec<u8>,
}

/// The OpenAPI description of these routes, merged into the web tier's
/// `GET /openapi.json`.
#[derive(utoipa::OpenApi)]
#[openapi(paths(upload, status))]
pub struct VideoApiDoc;

/// `POST /v1/videos` (multipart `video`): stores the video in the input
/// bucket; the video path splits and recognizes it.
#[utoipa::path(post, path = "/v1/videos", tag = "video",
    request_body(content = VideoForm, content_type = "multipart/form-data"),
    responses(
        (status = 202, description = "Stored; poll `status_url`", body = Accepted),
        (status = 400, description = "Bad upload"),
        (status = 413, description = "Too large"),
        (status = 415, description = "Not a video"),
        (status = 503, description = "Video is off, or too many uploads at once"),
    ),
    security(("api_key" = [])))]
async fn upload(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    match receive(&shared, req).await {
        Ok(accepted) => (StatusCode::ACCEPTED, Json(accepted)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The spool file of one upload: removed when dropped. Registered as in
/// use meanwhile ([`crate::temp`]).
struct Spool {
    path: crate::temp::Tracked<tempfile::TempPath>,
    file: tokio::fs::File,
}

impl Spool {
    async fn create(dir: Option<PathBuf>) -> std::io::Result<Spool> {
        let (path, file) = tokio::task::spawn_blocking(move || {
            let dir = dir.unwrap_or_else(std::env::temp_dir);
            std::fs::create_dir_all(&dir)?;
            let mut file = None;
            let path = crate::temp::Tracked::create(
                || {
                    let tmp = tempfile::Builder::new().prefix(crate::temp::UPLOAD_PREFIX).tempfile_in(&dir)?;
                    file = Some(tmp.as_file().try_clone()?);
                    Ok(tmp.into_temp_path())
                },
                |p| p,
            )?;
            Ok::<_, std::io::Error>((path, file.expect("set on success")))
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(Spool { path, file: tokio::fs::File::from_std(file) })
    }
}

async fn receive(shared: &Shared, req: Request) -> Result<Accepted, ApiError> {
    let api = &shared.api;
    let Ok(_permit) = shared.uploads.clone().try_acquire_owned() else {
        tracing::warn!(limit = api.max_concurrent_uploads, "video upload refused: too many in progress");
        return Err(ApiError::unavailable(format!(
            "too many video uploads in progress (at most {}); try again later",
            api.max_concurrent_uploads.max(1)
        )));
    };
    let mut multipart = Multipart::from_request(req, &()).await.map_err(|r| {
        ApiError::new(r.status(), "expected a multipart/form-data body with a file field `video`")
    })?;
    let limit = api.max_video_bytes;
    let mut field = loop {
        match multipart.next_field().await {
            Ok(Some(f)) if f.name() == Some("video") => break f,
            Ok(Some(_)) => continue,
            Ok(None) => return Err(ApiError::bad_request("missing multipart field `video`")),
            Err(e) => return Err(multipart_error(e, limit)),
        }
    };
    let Some(file_name) = field.file_name().map(str::to_string) else {
        return Err(ApiError::bad_request("field `video` has no file name"));
    };
    let key = keys::upload_key(&file_name).map_err(ApiError::bad_request)?;

    // Sniff the first bytes, then stream the rest to the spool file.
    let mut head: Vec<u8> = Vec::with_capacity(SNIFF_BYTES);
    let mut spool: Option<Spool> = None;
    let mut total: u64 = 0;
    let not_a_video = || {
        ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("not a video: the accepted formats are {ACCEPTED}"))
    };
    loop {
        let chunk = match tokio::time::timeout(api.chunk_timeout, field.chunk()).await {
            Err(_) => {
                tracing::warn!(key, received = total, "video upload stalled; dropped");
                return Err(ApiError::new(StatusCode::REQUEST_TIMEOUT, "the upload stalled"));
            }
            Ok(Ok(Some(chunk))) => chunk,
            Ok(Ok(None)) => break,
            Ok(Err(e)) => return Err(multipart_error(e, limit)),
        };
        total += chunk.len() as u64;
        if total > limit {
            // Dropping `spool` removes the partial file.
            return Err(too_large(limit));
        }
        let rest = match spool.as_mut() {
            Some(s) => {
                s.file.write_all(&chunk).await.map_err(spool_error)?;
                continue;
            }
            None => {
                let take = (SNIFF_BYTES - head.len()).min(chunk.len());
                head.extend_from_slice(&chunk[..take]);
                if head.len() < SNIFF_BYTES {
                    continue;
                }
                chunk.slice(take..)
            }
        };
        let Some(kind) = sniff(&head) else { return Err(not_a_video()) };
        tracing::debug!(key, container = kind.name(), "receiving a video");
        let mut s = Spool::create(api.spool_dir.clone()).await.map_err(spool_error)?;
        s.file.write_all(&head).await.map_err(spool_error)?;
        s.file.write_all(&rest).await.map_err(spool_error)?;
        spool = Some(s);
    }
    if total == 0 {
        return Err(ApiError::bad_request("empty video file"));
    }
    let mut spool = match spool {
        Some(s) => s,
        // Shorter than the sniffed head.
        None => {
            sniff(&head).ok_or_else(not_a_video)?;
            let mut s = Spool::create(api.spool_dir.clone()).await.map_err(spool_error)?;
            s.file.write_all(&head).await.map_err(spool_error)?;
            s
        }
    };
    spool.file.flush().await.map_err(spool_error)?;
    drop(multipart);

    let bucket = &api.names.video_input;
    let stem = keys::video_stem(&key).to_string();
    // A re-upload replaces the earlier result: cleared first, so that a
    // poll never takes the old result for the new video's.
    crate::split::clear_results(&*api.store, &api.names, &stem)
        .await
        .map_err(|e| store_error("clearing the earlier result", &api.names.video_output, &stem, e))?;
    let stored = api.store.put_file(bucket, &key, &spool.path).await;
    drop(spool);
    // Then the local trigger is asked to split it, even if an earlier
    // upload of this key had the same size (it knows keys and sizes only).
    // Also when storing failed: the video there lost its result above.
    let state = api.trigger_state_bucket.as_ref().unwrap_or(&api.names.video_trigger_state);
    let requested = crate::local::request_split(&*api.store, state, &key).await;
    stored.map_err(|e| store_error("storing the video", bucket, &key, e))?;
    requested.map_err(|e| store_error("requesting the split", state, &key, e))?;
    let status_url = format!("/v1/videos/{}", facefleet_gallery::names::url_segment(&stem));
    tracing::info!(key, bytes = total, "video uploaded");
    Ok(Accepted { key, stem, status_url })
}

/// `GET /v1/videos/{stem}`: whether the video is done, and its person.
#[utoipa::path(get, path = "/v1/videos/{stem}", tag = "video",
    params(("stem" = String, Path, description = "The video's file name without extension")),
    responses((status = 200, description = "Its state", body = VideoStatus), (status = 404, description = "No such video")),
    security(("api_key" = [])))]
async fn status(State(shared): State<Arc<Shared>>, stem: Result<Path<String>, PathRejection>) -> Response {
    match video_status(&shared.api, stem).await {
        Ok(s) => Json(s).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn video_status(api: &VideoApi, stem: Result<Path<String>, PathRejection>) -> Result<VideoStatus, ApiError> {
    let Ok(Path(stem)) = stem else {
        return Err(ApiError::bad_request("invalid video name in the URL"));
    };
    keys::check_client_stem(&stem).map_err(ApiError::bad_request)?;
    let out = &api.names.video_output;
    let read = |key: String| async move {
        match api.store.get(out, &key).await {
            Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(store_error("reading the video's status", out, &key, e)),
        }
    };
    let name = read(keys::video_result_key(&stem)).await?;
    let error = read(keys::video_error_key(&stem)).await?.map(|e| scrub_paths(&e));
    let prefix = keys::frame_results_prefix(&stem);
    let frames_done = match api.store.count(out, &prefix).await {
        Ok(n) => n,
        Err(e) if e.is_not_found() => 0,
        Err(e) => return Err(store_error("reading the video's status", out, &prefix, e)),
    };
    let status = if name.is_some() {
        "done"
    } else if error.is_some() {
        "failed"
    } else if frames_done > 0 || was_uploaded(api, &stem).await? {
        "pending"
    } else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no video named `{stem}` was uploaded")));
    };
    Ok(VideoStatus { stem, status, name, error, frames_done })
}

/// True when `<prefix>-input` holds a video whose stem is `stem`
/// (`stem.mp4`, `stem`, `stem.webm`...).
async fn was_uploaded(api: &VideoApi, stem: &str) -> Result<bool, ApiError> {
    let bucket = &api.names.video_input;
    let mut token = None;
    loop {
        let page = match api.store.list(bucket, stem, token, 1000).await {
            Ok(p) => p,
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(store_error("reading the video's status", bucket, stem, e)),
        };
        if page.objects.iter().any(|o| keys::video_stem(&o.key) == stem) {
            return Ok(true);
        }
        match page.next_token {
            Some(t) => token = Some(t),
            None => return Ok(false),
        }
    }
}

