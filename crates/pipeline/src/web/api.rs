//! The face API under `/v1`: recognize, detect, verify, and the stack's
//! status. Each handler extracts, calls the submit path or a service, and
//! answers a typed JSON body (documented in `GET /openapi.json`).

use std::time::Instant;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::course::{single, submit, Ask};
use super::extract::{Form, PathParams, QueryParams};
use super::multipart::files;
use super::{ApiError, ErrorBody, WebState};
use crate::protocol::{FaceResult, Mode, Outcome, SearchOptions, Verification};
use crate::stats::Stats;

/// Query parameters of a search (`recognize`): all optional.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// Similarity a face needs to be named (-1..=1). Default: the model's
    /// calibrated open-set threshold for the collection's size.
    pub threshold: Option<f32>,
    /// Candidates returned per face, best first (1..=50, default 1).
    pub limit: Option<usize>,
    /// Faces analysed per image, largest first (1..=100, default 20).
    pub max_faces: Option<usize>,
}

impl SearchParams {
    /// The options, checked: a 400 names the bad parameter.
    pub fn options(&self) -> Result<SearchOptions, ApiError> {
        let d = SearchOptions::default();
        let o = SearchOptions { threshold: self.threshold, limit: self.limit.unwrap_or(d.limit), max_faces: self.max_faces.unwrap_or(d.max_faces) };
        o.validate().map_err(ApiError::bad_request)?;
        Ok(o)
    }
}

/// Multipart body with one photo in field `image`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ImageForm {
    /// The photo (JPEG, PNG, WebP or BMP).
    #[schema(value_type = String, format = Binary)]
    image: Vec<u8>,
}

/// Multipart body with the two photos to compare, `a` and `b`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct VerifyForm {
    /// The first photo.
    #[schema(value_type = String, format = Binary)]
    a: Vec<u8>,
    /// The second photo.
    #[schema(value_type = String, format = Binary)]
    b: Vec<u8>,
}

/// Answer of `recognize`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecognizeResponse {
    /// Key of the photo in the input bucket.
    pub key: String,
    /// The collection searched.
    pub collection: String,
    /// The largest face's name, `Unknown` or `NoFace` (the course answer).
    pub name: String,
    /// Similarity a face needed to be named.
    pub threshold: f32,
    /// Model id of the embeddings.
    pub model: String,
    /// Every face, largest first.
    pub faces: Vec<FaceResult>,
    /// Milliseconds from upload to answer.
    pub took_ms: u64,
}

/// Answer of `detect`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DetectResponse {
    /// Every face, largest first (`name` is always `null`).
    pub faces: Vec<FaceResult>,
    /// Model id.
    pub model: String,
    /// Milliseconds from upload to answer.
    pub took_ms: u64,
}

/// Answer of `verify`.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyResponse {
    /// The comparison.
    #[serde(flatten)]
    pub verification: Verification,
    /// Milliseconds from upload to answer.
    pub took_ms: u64,
}

/// Query parameters of `detect`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DetectParams {
    /// Faces returned, largest first (1..=100, default 20).
    pub max_faces: Option<usize>,
}

/// Query parameters of `verify` (it compares the largest face of each photo).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VerifyParams {
    /// The similarity at and above which the faces are the same person
    /// (-1..=1, default: the model's calibrated threshold).
    pub threshold: Option<f32>,
}

fn took(started: Instant) -> u64 {
    started.elapsed().as_millis() as u64
}

/// The collection path parameter, checked.
pub(crate) fn collection_param(c: &str) -> Result<(), ApiError> {
    facefleet_gallery::names::validate_collection(c).map_err(|e| ApiError::bad_request(format!("invalid collection name: {e}")))
}

/// `POST /v1/recognize`: every face of the photo in the `default`
/// collection.
#[utoipa::path(post, path = "/v1/recognize", tag = "recognition",
    params(SearchParams),
    request_body(content = ImageForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The faces, named", body = RecognizeResponse),
        (status = 400, description = "Bad request", body = ErrorBody),
        (status = 415, description = "Not an image", body = ErrorBody),
        (status = 422, description = "Unusable image", body = ErrorBody),
    ),
    security(("api_key" = [])))]
pub(crate) async fn recognize_default(state: State<WebState>, q: QueryParams<SearchParams>, form: Form) -> Result<Json<RecognizeResponse>, ApiError> {
    recognize(state, PathParams(facefleet_gallery::DEFAULT_COLLECTION.to_string()), q, form).await
}

/// `POST /v1/collections/{c}/recognize`: every face of the photo, with its
/// box, landmarks, quality, name (`null`: unknown), similarity and the
/// top-`limit` candidates.
#[utoipa::path(post, path = "/v1/collections/{c}/recognize", tag = "recognition",
    params(("c" = String, Path, description = "Collection"), SearchParams),
    request_body(content = ImageForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The faces, named", body = RecognizeResponse),
        (status = 400, description = "Bad request", body = ErrorBody),
        (status = 404, description = "No such collection", body = ErrorBody),
        (status = 422, description = "Unusable image", body = ErrorBody),
    ),
    security(("api_key" = [])))]
pub(crate) async fn recognize(
    State(state): State<WebState>,
    PathParams(c): PathParams<String>,
    QueryParams(q): QueryParams<SearchParams>,
    Form(mp): Form,
) -> Result<Json<RecognizeResponse>, ApiError> {
    let started = Instant::now();
    collection_param(&c)?;
    let options = q.options()?;
    if !state.gallery.collection_exists(&c).await? {
        return Err(super::gallery_api::no_collection(&c));
    }
    let upload = single(files(mp, &["image", "inputFile"]).await?, "image")?;
    let (key, outcome) = submit(&state, vec![upload], Ask { mode: Mode::Faces, collection: c.clone(), options }).await?;
    let Outcome::Ok(rec) = outcome else { return Err(ApiError::internal("unexpected answer to a recognition")) };
    Ok(Json(RecognizeResponse { key, collection: c, name: rec.name, threshold: rec.threshold, model: rec.model, faces: rec.faces, took_ms: took(started) }))
}

/// `POST /v1/detect`: the faces of a photo (box, five landmarks, detector
/// score, size, sharpness and pose), without identifying them.
#[utoipa::path(post, path = "/v1/detect", tag = "recognition",
    params(DetectParams),
    request_body(content = ImageForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The faces found", body = DetectResponse),
        (status = 400, description = "Bad request", body = ErrorBody),
        (status = 422, description = "Unusable image", body = ErrorBody),
    ),
    security(("api_key" = [])))]
pub(crate) async fn detect(State(state): State<WebState>, QueryParams(q): QueryParams<DetectParams>, Form(mp): Form) -> Result<Json<DetectResponse>, ApiError> {
    let started = Instant::now();
    let options = SearchParams { threshold: None, limit: None, max_faces: q.max_faces }.options()?;
    let upload = single(files(mp, &["image"]).await?, "image")?;
    let ask = Ask { mode: Mode::Detect, collection: facefleet_gallery::DEFAULT_COLLECTION.to_string(), options };
    let (_, outcome) = submit(&state, vec![upload], ask).await?;
    let Outcome::Ok(rec) = outcome else { return Err(ApiError::internal("unexpected answer to a detection")) };
    Ok(Json(DetectResponse { faces: rec.faces, model: rec.model, took_ms: took(started) }))
}

/// `POST /v1/verify`: whether the largest faces of photos `a` and `b` are
/// the same person, with their similarity and the calibrated threshold.
#[utoipa::path(post, path = "/v1/verify", tag = "recognition",
    params(VerifyParams),
    request_body(content = VerifyForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The comparison", body = VerifyResponse),
        (status = 400, description = "Bad request (missing `a` or `b`)", body = ErrorBody),
        (status = 422, description = "A photo has no face or is unusable", body = ErrorBody),
    ),
    security(("api_key" = [])))]
pub(crate) async fn verify(State(state): State<WebState>, QueryParams(q): QueryParams<VerifyParams>, Form(mp): Form) -> Result<Json<VerifyResponse>, ApiError> {
    let started = Instant::now();
    let options = SearchParams { threshold: q.threshold, limit: None, max_faces: None }.options()?;
    let uploads = files(mp, &["a", "b"]).await?;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for u in uploads {
        if u.field == "a" {
            a.push(u)
        } else {
            b.push(u)
        }
    }
    let pair = vec![single(a, "a")?, single(b, "b")?];
    let ask = Ask { mode: Mode::Verify, collection: facefleet_gallery::DEFAULT_COLLECTION.to_string(), options };
    let (_, outcome) = submit(&state, pair, ask).await?;
    let Outcome::Verified(verification) = outcome else { return Err(ApiError::internal("unexpected answer to a verification")) };
    Ok(Json(VerifyResponse { verification, took_ms: took(started) }))
}

/// Query parameters of `GET /v1/status`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatusParams {
    /// Count the objects in the input and output buckets (default true).
    /// Counting lists both buckets, so its cost grows with what they hold:
    /// a count is reused for at least 5 s, and for 100 times as long as it
    /// took (the counts may lag then; calls meanwhile share it). Pass
    /// `false` when polling often (queues and instances stay exact;
    /// `input_objects` and `output_objects` are then left out).
    #[serde(default = "counts_objects")]
    pub objects: bool,
}

fn counts_objects() -> bool {
    true
}

/// `GET /v1/status`: queue depths, instances and object counts, requests in
/// flight in this web tier, and under `stack` what this stack is (backend,
/// recognizer, video on or off...).
#[utoipa::path(get, path = "/v1/status", tag = "stack", params(StatusParams),
    responses((status = 200, description = "Queues, instances, objects, stack facts", body = Object)),
    security(("api_key" = [])))]
pub(crate) async fn status(
    State(state): State<WebState>,
    QueryParams(params): QueryParams<StatusParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    use serde_json::{json, Value};
    let stats = if params.objects { Stats::collect(&state.dep, &state.objects).await? } else { Stats::collect_live(&state.dep).await? };
    let mut v = serde_json::to_value(stats).expect("stats serialise");
    if !params.objects {
        let fields = v.as_object_mut().expect("stats are an object");
        fields.remove("input_objects");
        fields.remove("output_objects");
    }
    v["in_flight"] = json!(state.intake.in_flight(state.config.max_in_flight));
    let mut stack: serde_json::Map<String, Value> = state.info.iter().map(|(k, val)| (k.clone(), Value::String(val.clone()))).collect();
    // Keys are created and revoked while the stack runs: said as of now.
    stack.insert("api keys".to_string(), Value::String(state.access_summary().to_string()));
    v["stack"] = Value::Object(stack);
    Ok(Json(v))
}
