//! `/v1/keys`: API-key management over HTTP (admin scope), the same
//! operations as `facefleet keys`.

use axum::extract::State;
use axum::Extension;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::extract::{JsonBody, PathParams};
use super::guard::Caller;
use super::{ApiError, ErrorBody, WebState};
use crate::keys::{self, KeyError, KeyRecord, NewKey, Scope};

/// A key as listed: never its secret or hash.
#[derive(Debug, Serialize, utoipa::ToSchema)]
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
    /// Collections the key may use (`null`: all).
    pub collections: Option<Vec<String>>,
}

impl From<KeyRecord> for KeyInfo {
    fn from(r: KeyRecord) -> Self {
        Self { id: r.id, name: r.name, scope: r.scope, created_at: r.created_at, rate_per_sec: r.rate_per_sec, burst: r.burst, collections: r.collections }
    }
}

/// Body of `POST /v1/keys`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
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
    /// Collections the key may use (absent: all).
    #[serde(default)]
    pub collections: Option<Vec<String>>,
}

/// Answer of `POST /v1/keys`: the secret, shown this once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
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
            e @ KeyError::LastAdmin(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            e @ KeyError::Busy => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }
}

/// Key management is for keys that may use every collection: a key limited
/// to some could otherwise mint itself an unlimited one.
fn unrestricted(caller: Option<Extension<Caller>>) -> Result<(), ApiError> {
    match caller {
        Some(Extension(c)) if c.collections.is_some() => {
            Err(ApiError::new(StatusCode::FORBIDDEN, "managing API keys needs an admin key that is not limited to collections"))
        }
        _ => Ok(()),
    }
}

/// `GET /v1/keys`: every key (never a secret or a hash).
#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    responses((status = 200, description = "Keys", body = Vec<KeyInfo>), (status = 403, description = "Not an unrestricted admin key", body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn list(State(state): State<WebState>, caller: Option<Extension<Caller>>) -> Result<Json<Vec<KeyInfo>>, ApiError> {
    unrestricted(caller)?;
    let all = keys::list(state.dep.store.as_ref(), &state.dep.names.gallery_bucket).await?;
    Ok(Json(all.into_iter().map(KeyInfo::from).collect()))
}

/// `POST /v1/keys` (JSON `{"scope", "name", "rate_per_sec", "burst",
/// "collections"}`): the secret is in this answer only.
#[utoipa::path(post, path = "/v1/keys", tag = "keys",
    request_body = CreateKey,
    responses((status = 201, description = "Created; `secret` is shown this once", body = CreatedKey), (status = 400, description = "Bad settings", body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn create(
    State(state): State<WebState>,
    caller: Option<Extension<Caller>>,
    JsonBody(req): JsonBody<CreateKey>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    unrestricted(caller)?;
    let new = NewKey { name: req.name, scope: req.scope, rate_per_sec: req.rate_per_sec, burst: req.burst, collections: req.collections };
    let (record, secret) = keys::create(state.dep.store.as_ref(), &state.dep.names.gallery_bucket, new).await?;
    // This web tier sees it at once; the others within their refresh.
    let _ = state.keys().refresh().await;
    Ok((StatusCode::CREATED, Json(CreatedKey { key: record.into(), secret })))
}

/// `DELETE /v1/keys/{id}`: revokes a key.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys",
    params(("id" = String, Path, description = "Key id")),
    responses(
        (status = 200, description = "Revoked", body = KeyInfo),
        (status = 404, description = "Unknown", body = ErrorBody),
        (status = 409, description = "The last admin key for all collections (revoke it with the CLI)", body = ErrorBody),
        (status = 503, description = "Another revoke held the revoke lock for 5 s; try again", body = ErrorBody),
    ),
    security(("api_key" = [])))]
pub(crate) async fn revoke(State(state): State<WebState>, caller: Option<Extension<Caller>>, PathParams(id): PathParams<String>) -> Result<Json<KeyInfo>, ApiError> {
    unrestricted(caller)?;
    let record = keys::revoke_keeping_an_admin(state.dep.store.as_ref(), &state.dep.names.gallery_bucket, &id).await?;
    let _ = state.keys().refresh().await;
    Ok(Json(record.into()))
}
