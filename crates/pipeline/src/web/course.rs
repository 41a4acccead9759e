//! `POST /`: the course contract (multipart `inputFile` → `<stem>:<name>`),
//! and the submit path shared with `POST /v1/recognize`.

use std::time::Instant;

use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::multipart::{files, Upload};
use super::{ApiError, WebState};
use crate::protocol::{stem, ErrorKind, Mode, Outcome, Request, SearchOptions};
use crate::upload::{check_image, request_key};

/// Multipart body of the course route.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct CourseForm {
    /// The photo.
    #[schema(value_type = String, format = Binary, rename = "inputFile")]
    input_file: Vec<u8>,
}

/// `POST /`: stores `inputFile` in the input bucket, queues a request and
/// answers `200 text/plain` `<stem>:<name>` once a worker answered.
#[utoipa::path(post, path = "/", tag = "recognition",
    request_body(content = CourseForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "`<image stem>:<name>` (`Unknown`, `NoFace`)", body = String, content_type = "text/plain"),
        (status = 400, description = "Bad upload (one plain-text line)", body = String, content_type = "text/plain"),
        (status = 415, description = "Not an image (one plain-text line)", body = String, content_type = "text/plain"),
        (status = 422, description = "Unusable image: corrupt or too large (one plain-text line)", body = String, content_type = "text/plain"),
    ),
    security(("api_key" = [])))]
pub(crate) async fn upload(State(state): State<WebState>, mp: Multipart) -> Result<impl IntoResponse, ApiError> {
    let started = Instant::now();
    let upload = files(mp, &["inputFile"]).await.and_then(|u| single(u, "inputFile")).map_err(ApiError::plain)?;
    let ask = Ask { mode: Mode::Name, collection: facefleet_gallery::DEFAULT_COLLECTION.to_string(), options: SearchOptions::default() };
    let (key, outcome) = submit(&state, vec![upload], ask).await.map_err(ApiError::plain)?;
    let Outcome::Ok(rec) = outcome else {
        return Err(ApiError::internal("a recognition was answered with a verification").plain());
    };
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

/// What a submitted request asks of the workers.
pub(crate) struct Ask {
    /// What to answer.
    pub mode: Mode,
    /// The collection to search.
    pub collection: String,
    /// Threshold, candidates, faces.
    pub options: SearchOptions,
}

/// Validates the image(s) (two for `verify`, in order `a`, `b`), stores
/// them, queues the request and waits for the worker's answer. Returns the
/// input-bucket key of the first image and the outcome (never
/// [`Outcome::Err`]: errors come back as [`ApiError`]).
pub(crate) async fn submit(state: &WebState, uploads: Vec<Upload>, ask: Ask) -> Result<(String, Outcome), ApiError> {
    let started = Instant::now();
    let limits = state.config.image_limits;
    for u in &uploads {
        check_image(&u.bytes, &limits).map_err(|e| {
            let err = ApiError::from(e);
            // Say which one (`a` or `b` of a verify).
            if uploads.len() > 1 { err.about(format_args!("field `{}`", u.field)) } else { err }
        })?;
    }
    let request_id = uuid::Uuid::new_v4().to_string();
    let names = &state.dep.names;
    let mut keys = Vec::with_capacity(uploads.len());
    for (i, u) in uploads.into_iter().enumerate() {
        // Each image of one request gets its own folder: `a` and `b` of a
        // verify may carry the same file name.
        let folder = if i == 0 { request_id.clone() } else { format!("{request_id}-{i}") };
        let key = request_key(&folder, u.file_name.as_deref());
        state.dep.store.put(&names.in_bucket, &key, u.bytes).await?;
        keys.push(key);
    }
    let mut keys = keys.into_iter();
    let key = keys.next().ok_or_else(|| ApiError::bad_request("no image"))?;

    let waiter = state.dispatcher.register(&request_id);
    let timeout = state.config.request_timeout;
    let request = Request {
        request_id: request_id.clone(),
        key: key.clone(),
        mode: ask.mode,
        collection: ask.collection,
        other_key: keys.next(),
        options: ask.options,
        expires_at_ms: Some(crate::protocol::now_ms() + timeout.as_millis() as u64),
    };
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
    state.history.record_completion(started.elapsed());
    match resp.result {
        Outcome::Err(e) => {
            let status = match e.kind {
                ErrorKind::BadInput => StatusCode::UNPROCESSABLE_ENTITY,
                ErrorKind::Failed => StatusCode::INTERNAL_SERVER_ERROR,
                ErrorKind::NoSuchCollection => return Err(ApiError::new(StatusCode::NOT_FOUND, e.message)),
            };
            Err(ApiError::new(status, format!("`{}`: {}", stem(&key), e.message)))
        }
        outcome => Ok((key, outcome)),
    }
}
