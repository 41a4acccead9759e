//! `/v1/keys`: API-key management over HTTP (admin scope), the same
//! operations as `facefleet keys`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{ApiError, WebState};
use crate::keys::{self, KeyError, KeyRecord, NewKey, Scope};

/// A key as listed: never its secret or hash.
#[derive(Debug, Serialize)]
pub struct KeyInfo {
    /// Public id.
    pub id: String,
    /// Label.
    pub name: String,
    /// Scope.
    pub scope: Scope,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    /// Requests per second (`null`: unlimited).
    pub rate_per_sec: Option<u32>,
    /// Burst.
    pub burst: Option<u32>,
}

impl From<KeyRecord> for KeyInfo {
    fn from(r: KeyRecord) -> Self {
        Self { id: r.id, name: r.name, scope: r.scope, created_at: r.created_at, rate_per_sec: r.rate_per_sec, burst: r.burst }
    }
}

/// Body of `POST /v1/keys`.
#[derive(Debug, Deserialize)]
pub struct CreateKey {
    /// Scope of the new key.
    pub scope: Scope,
    /// Label.
    #[serde(default)]
    pub name: String,
    /// Requests per second.
    #[serde(default)]
    pub rate_per_sec: Option<u32>,
    /// Burst.
    #[serde(default)]
    pub burst: Option<u32>,
}

/// Answer of `POST /v1/keys`: the secret, shown this once.
#[derive(Debug, Serialize)]
pub struct CreatedKey {
    /// The key.
    #[serde(flatten)]
    pub key: KeyInfo,
    /// The secret to send in `x-api-key`.
    pub secret: String,
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Store(p) => p.into(),
            KeyError::NotFound(id) => ApiError::new(StatusCode::NOT_FOUND, format!("no API key with id `{id}`")),
            KeyError::Invalid(m) => ApiError::bad_request(m),
            KeyError::Random(m) => ApiError::internal(m),
        }
    }
}

/// `GET /v1/keys`.
pub(crate) async fn list(State(state): State<WebState>) -> Result<Json<Vec<KeyInfo>>, ApiError> {
    let all = keys::list(state.dep.store.as_ref(), &state.dep.names.gallery_bucket).await?;
    Ok(Json(all.into_iter().map(KeyInfo::from).collect()))
}

/// `POST /v1/keys` (JSON `{"scope", "name", "rate_per_sec", "burst"}`).
pub(crate) async fn create(
    State(state): State<WebState>,
    body: Result<Json<CreateKey>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let Json(req) = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    let new = NewKey { name: req.name, scope: req.scope, rate_per_sec: req.rate_per_sec, burst: req.burst };
    let (record, secret) = keys::create(state.dep.store.as_ref(), &state.dep.names.gallery_bucket, new).await?;
    // This web tier sees it at once; the others within their refresh.
    let _ = state.keys().refresh().await;
    Ok((StatusCode::CREATED, Json(CreatedKey { key: record.into(), secret })))
}

/// `DELETE /v1/keys/{id}`.
pub(crate) async fn revoke(State(state): State<WebState>, Path(id): Path<String>) -> Result<Json<KeyInfo>, ApiError> {
    let record = keys::revoke(state.dep.store.as_ref(), &state.dep.names.gallery_bucket, &id).await?;
    let _ = state.keys().refresh().await;
    Ok(Json(record.into()))
}
