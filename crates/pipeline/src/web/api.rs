//! The JSON API under `/v1`.

use axum::extract::{Multipart, Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::course::{single, submit};
use super::multipart::files;
use super::{ApiError, WebState};
use crate::engine::EngineError;
use crate::gallery;
use crate::protocol::Mode;
use crate::stats::Stats;
use crate::upload::check_image;

/// `POST /v1/recognize` (multipart `image` or `inputFile`): every face with
/// its box, name (`null`: unknown) and similarity.
pub(crate) async fn recognize(State(state): State<WebState>, mp: Multipart) -> Result<Json<Value>, ApiError> {
    let upload = single(files(mp, &["image", "inputFile"]).await?, "image")?;
    let (key, rec) = submit(&state, upload, Mode::Faces).await?;
    Ok(Json(json!({ "key": key, "name": rec.name, "faces": rec.faces })))
}

/// `POST /v1/people/{name}/faces` (multipart `image`, one or more): embeds
/// every photo (all must contain a face) and adds them to the gallery.
pub(crate) async fn enroll(State(state): State<WebState>, Path(name): Path<String>, mp: Multipart) -> Result<(StatusCode, Json<Value>), ApiError> {
    gallery::validate_name(&name)?;
    let uploads = files(mp, &["image"]).await?;
    if uploads.is_empty() {
        return Err(ApiError::bad_request("missing multipart file field `image` (one or more photos of the person)"));
    }
    let limits = state.config.image_limits;
    for (i, u) in uploads.iter().enumerate() {
        check_image(&u.bytes, &limits).map_err(|e| {
            let mut err = ApiError::from(e);
            err.message = format!("image {} ({}): {}", i + 1, u.file_name.as_deref().unwrap_or("unnamed"), err.message);
            err
        })?;
    }
    let enroller = state.enroller().await?;
    // One enrollment decodes at a time: bounded memory in the web tier.
    let _slot = state.enroll_slot().await;
    let mut embeddings = Vec::with_capacity(uploads.len());
    for (i, u) in uploads.into_iter().enumerate() {
        let e = enroller.clone();
        let label = u.file_name.clone().unwrap_or_else(|| "unnamed".into());
        let result = tokio::task::spawn_blocking(move || e.embed(&u.bytes))
            .await
            .map_err(|e| ApiError::internal(format!("embedding panicked: {e}")))?;
        match result {
            Ok(v) => embeddings.push(v),
            Err(EngineError::BadImage(m)) => {
                return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("image {} ({label}): {m}", i + 1)))
            }
            Err(EngineError::Failed(m)) => return Err(ApiError::internal(format!("embedding image {} ({label}): {m}", i + 1))),
        }
    }
    let bucket = &state.dep.names.gallery_bucket;
    let added = gallery::add_faces(state.dep.store.as_ref(), bucket, &name, &enroller.recognizer(), embeddings).await?;
    let total = gallery::people(state.dep.store.as_ref(), bucket).await?.get(&name).copied().unwrap_or(added);
    Ok((StatusCode::CREATED, Json(json!({ "name": name, "added": added, "faces": total }))))
}

/// `GET /v1/people`: enrolled people with their face counts.
pub(crate) async fn list_people(State(state): State<WebState>) -> Result<Json<Value>, ApiError> {
    let people = gallery::people(state.dep.store.as_ref(), &state.dep.names.gallery_bucket).await?;
    let list: Vec<Value> = people.into_iter().map(|(name, faces)| json!({ "name": name, "faces": faces })).collect();
    Ok(Json(json!({ "people": list })))
}

/// `DELETE /v1/people/{name}`: forgets a person (404 if unknown).
pub(crate) async fn delete_person(State(state): State<WebState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let removed = gallery::remove_person(state.dep.store.as_ref(), &state.dep.names.gallery_bucket, &name).await?;
    if removed == 0 {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no person named `{name}` is enrolled")));
    }
    Ok(Json(json!({ "name": name, "removed": removed })))
}

/// `GET /v1/status`: queue depths, instances and object counts, requests in
/// flight in this web tier, and under `stack` what this stack is (backend,
/// recognizer, video on or off...).
pub(crate) async fn status(State(state): State<WebState>) -> Result<Json<Value>, ApiError> {
    let stats = Stats::collect(&state.dep).await?;
    let mut v = serde_json::to_value(stats).expect("stats serialise");
    v["in_flight"] = json!(state.intake.in_flight(state.config.max_in_flight));
    let stack: serde_json::Map<String, Value> = state.info.iter().map(|(k, val)| (k.clone(), Value::String(val.clone()))).collect();
    v["stack"] = Value::Object(stack);
    Ok(Json(v))
}
