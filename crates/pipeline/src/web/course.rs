//! `POST /`: the course contract (multipart `inputFile` → `<stem>:<name>`),
//! and the submit path shared with `POST /v1/recognize`.

use std::time::Instant;

use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::multipart::{files, Upload};
use super::{ApiError, WebState};
use crate::protocol::{stem, ErrorKind, Mode, Outcome, Recognition, Request};
use crate::upload::{check_image, request_key};

/// `POST /`: stores `inputFile` in the input bucket, queues a request and
/// answers `200 text/plain` `<stem>:<name>` once a worker answered.
pub(crate) async fn upload(State(state): State<WebState>, mp: Multipart) -> Result<impl IntoResponse, ApiError> {
    let started = Instant::now();
    let upload = files(mp, &["inputFile"]).await.and_then(|u| single(u, "inputFile")).map_err(ApiError::plain)?;
    let (key, rec) = submit(&state, upload, Mode::Name).await.map_err(ApiError::plain)?;
    metrics::histogram!("facefleet_request_seconds", "route" => "/").record(started.elapsed().as_secs_f64());
    Ok((
        [(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{}:{}", stem(&key), rec.name),
    ))
}

/// The only upload of `field`, or a 400.
pub(crate) fn single(mut uploads: Vec<Upload>, field: &str) -> Result<Upload, ApiError> {
    match uploads.len() {
        0 => Err(ApiError::bad_request(format!("missing multipart file field `{field}`"))),
        1 => Ok(uploads.pop().expect("one upload")),
        n => Err(ApiError::bad_request(format!("expected one `{field}` field, got {n}"))),
    }
}

/// Validates the image, stores it, queues the request and waits for the
/// worker's answer. Returns the input-bucket key and the recognition.
pub(crate) async fn submit(state: &WebState, upload: Upload, mode: Mode) -> Result<(String, Recognition), ApiError> {
    let limits = state.config.image_limits;
    let bytes = upload.bytes;
    check_image(&bytes, &limits)?;
    let request_id = uuid::Uuid::new_v4().to_string();
    let key = request_key(&request_id, upload.file_name.as_deref());
    let names = &state.dep.names;
    state.dep.store.put(&names.in_bucket, &key, bytes).await?;

    let waiter = state.dispatcher.register(&request_id);
    let timeout = state.config.request_timeout;
    let request = Request { request_id: request_id.clone(), key: key.clone(), mode, expires_at_ms: Some(crate::protocol::now_ms() + timeout.as_millis() as u64) };
    let body = serde_json::to_string(&request).expect("request serialises");
    state.dep.queue.send(&names.req_queue, &body).await?;
    state.arrivals.notify_one();
    metrics::counter!("facefleet_requests_sent_total").increment(1);

    let Some(resp) = waiter.wait(timeout).await else {
        metrics::counter!("facefleet_request_timeouts_total").increment(1);
        return Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "no result for `{}` within {}s (request {request_id}); it stays queued and its result will be written to bucket `{}` under key `{}`",
                stem(&key),
                timeout.as_secs_f32(),
                names.out_bucket,
                stem(&key)
            ),
        ));
    };
    match resp.result {
        Outcome::Ok(rec) => Ok((key, rec)),
        Outcome::Err(e) => {
            let status = match e.kind {
                ErrorKind::BadInput => StatusCode::UNPROCESSABLE_ENTITY,
                ErrorKind::Failed => StatusCode::INTERNAL_SERVER_ERROR,
            };
            Err(ApiError::new(status, format!("recognition of `{}` failed: {}", stem(&key), e.message)))
        }
    }
}
