//! The gallery API: collections, people and their faces, enrollment,
//! renames, thumbnails and embedding export. The `/v1/people` routes are
//! the `default` collection's.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use bytes::Bytes;
use facefleet_gallery::names::{normalize_person, validate_collection, validate_person, validate_person_lookup};
use facefleet_gallery::store::{CollectionInfo, FaceRecord, NewFace, PersonSummary};
use facefleet_gallery::DEFAULT_COLLECTION;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::api::collection_param;
use super::extract::{Form, JsonBody, PathParams};
use super::guard::Caller;
use super::multipart::files;
use super::{ApiError, ErrorBody, WebState};
use crate::upload::check_image;

/// 404 for an unknown collection.
pub(crate) fn no_collection(c: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no collection named `{c}`"))
}

fn default_collection() -> String {
    DEFAULT_COLLECTION.to_string()
}

/// Path of the person routes (`c` absent on the `/v1/people` routes).
#[derive(Debug, Deserialize)]
pub(crate) struct PersonPath {
    #[serde(default = "default_collection")]
    c: String,
    name: String,
}

impl PersonPath {
    /// The collection and the person to look up (read, delete, rename).
    fn checked(self) -> Result<(String, String), ApiError> {
        collection_param(&self.c)?;
        let name = normalize_person(&self.name);
        validate_person_lookup(&name).map_err(|e| ApiError::bad_request(format!("invalid person name: {e}")))?;
        Ok((self.c, name))
    }

    /// The collection and the person to enroll: a name any new one must be.
    fn checked_new(self) -> Result<(String, String), ApiError> {
        let (c, name) = self.checked()?;
        validate_person(&name).map_err(|e| ApiError::bad_request(format!("invalid person name: {e}")))?;
        Ok((c, name))
    }
}

/// Path of a collection route (`c` absent on the `/v1/people` routes).
#[derive(Debug, Deserialize)]
pub(crate) struct CollectionPath {
    #[serde(default = "default_collection")]
    c: String,
}

impl CollectionPath {
    fn checked(self) -> Result<String, ApiError> {
        collection_param(&self.c)?;
        Ok(self.c)
    }
}

/// Path of a face route.
#[derive(Debug, Deserialize)]
pub(crate) struct FacePath {
    c: String,
    id: String,
}

/// Body of `POST /v1/collections`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewCollection {
    /// 1 to 64 characters of `a-z`, `0-9`, `-`, `_`.
    pub name: String,
}

/// `GET /v1/collections`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CollectionList {
    /// Collections this key may use, by name.
    pub collections: Vec<CollectionInfo>,
}

/// A collection's people.
#[derive(Debug, Serialize, ToSchema)]
pub struct PeopleList {
    /// The collection.
    pub collection: String,
    /// Enrolled people, by name.
    pub people: Vec<PersonSummary>,
}

/// One enrolled face as listed (its embedding is in the export).
#[derive(Debug, Serialize, ToSchema)]
pub struct FaceInfo {
    /// Face id.
    pub id: String,
    /// Model id of its embedding.
    pub model: String,
    /// Enrollment time, Unix milliseconds.
    pub created_ms: u64,
    /// Path of its thumbnail (JPEG).
    pub thumbnail: String,
}

/// One person with their faces.
#[derive(Debug, Serialize, ToSchema)]
pub struct PersonDetail {
    /// The collection.
    pub collection: String,
    /// The person.
    pub name: String,
    /// Their faces, oldest first.
    pub faces: Vec<FaceInfo>,
}

/// Answer of an enrollment.
#[derive(Debug, Serialize, ToSchema)]
pub struct Enrolled {
    /// The collection.
    pub collection: String,
    /// The person.
    pub name: String,
    /// Faces added by this call (with an `Idempotency-Key`: by this
    /// request, whichever of its sends stored them).
    pub added: usize,
    /// The person's faces now.
    pub faces: usize,
    /// Ids of the added faces.
    pub face_ids: Vec<String>,
}

/// Multipart body of an enrollment: one or more photos in `image` fields.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EnrollForm {
    /// Photos of the person (each must show a face; the largest is used).
    #[schema(value_type = Vec<String>, format = Binary)]
    image: Vec<Vec<u8>>,
}

/// Body of a rename.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Rename {
    /// The new name.
    pub name: String,
}

/// Answer of a removal.
#[derive(Debug, Serialize, ToSchema)]
pub struct Removed {
    /// The collection.
    pub collection: String,
    /// What was removed (person name, face id or collection).
    pub name: String,
    /// Faces removed.
    pub removed: usize,
}

/// An exported face: embedding plus model id.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExportedFace {
    /// Face id.
    pub id: String,
    /// The person.
    pub person: String,
    /// Model id of the embedding.
    pub model: String,
    /// The L2-normalised embedding.
    pub embedding: Vec<f32>,
    /// Enrollment time, Unix milliseconds.
    pub created_ms: u64,
}

/// `GET /v1/collections/{c}/embeddings`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingExport {
    /// The collection.
    pub collection: String,
    /// Snapshot generation the export was read from.
    pub generation: u64,
    /// Every face.
    pub faces: Vec<ExportedFace>,
}

fn face_info(c: &str, f: &FaceRecord) -> FaceInfo {
    FaceInfo { id: f.id.clone(), model: f.model.clone(), created_ms: f.created_ms, thumbnail: format!("/v1/collections/{c}/faces/{}/thumbnail", f.id) }
}

/// `GET /v1/collections`: collections with their sizes (only those the
/// caller's key may use).
#[utoipa::path(get, path = "/v1/collections", tag = "gallery",
    responses((status = 200, description = "Collections", body = CollectionList)),
    security(("api_key" = [])))]
pub(crate) async fn list_collections(State(state): State<WebState>, caller: Option<Extension<Caller>>) -> Result<Json<CollectionList>, ApiError> {
    let mut collections = state.gallery.collections().await?;
    if let Some(Extension(caller)) = caller {
        collections.retain(|c| caller.may_use(&c.name));
    }
    Ok(Json(CollectionList { collections }))
}

/// `POST /v1/collections` (JSON `{"name"}`): creates a collection.
#[utoipa::path(post, path = "/v1/collections", tag = "gallery",
    request_body = NewCollection,
    responses(
        (status = 201, description = "Created", body = CollectionInfo),
        (status = 400, description = "Bad name", body = ErrorBody),
        (status = 409, description = "Exists", body = ErrorBody),
    ),
    security(("api_key" = [])))]
pub(crate) async fn create_collection(
    State(state): State<WebState>,
    caller: Option<Extension<Caller>>,
    JsonBody(body): JsonBody<NewCollection>,
) -> Result<(StatusCode, Json<CollectionInfo>), ApiError> {
    validate_collection(&body.name).map_err(|e| ApiError::bad_request(format!("invalid collection name: {e}")))?;
    if let Some(Extension(caller)) = caller {
        if !caller.may_use(&body.name) {
            return Err(ApiError::new(StatusCode::FORBIDDEN, format!("this API key may not use collection `{}`", body.name)));
        }
    }
    if !state.gallery.create_collection(&body.name).await? {
        return Err(ApiError::new(StatusCode::CONFLICT, format!("collection `{}` exists", body.name)));
    }
    Ok((StatusCode::CREATED, Json(CollectionInfo { name: body.name, people: 0, faces: 0 })))
}

/// `GET /v1/collections/{c}`: one collection's size.
#[utoipa::path(get, path = "/v1/collections/{c}", tag = "gallery",
    params(("c" = String, Path, description = "Collection")),
    responses((status = 200, description = "The collection", body = CollectionInfo), (status = 404, description = "Unknown", body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn get_collection(State(state): State<WebState>, PathParams(p): PathParams<CollectionPath>) -> Result<Json<CollectionInfo>, ApiError> {
    let c = p.checked()?;
    let people = state.gallery.people(&c).await?;
    let faces = people.iter().map(|p| p.faces).sum();
    Ok(Json(CollectionInfo { name: c, people: people.len(), faces }))
}

/// `DELETE /v1/collections/{c}`: deletes a collection and all its faces.
#[utoipa::path(delete, path = "/v1/collections/{c}", tag = "gallery",
    params(("c" = String, Path, description = "Collection")),
    responses((status = 200, description = "Deleted", body = Removed), (status = 404, description = "Unknown", body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn delete_collection(State(state): State<WebState>, PathParams(p): PathParams<CollectionPath>) -> Result<Json<Removed>, ApiError> {
    let c = p.checked()?;
    let faces: usize = match state.gallery.people(&c).await {
        Ok(people) => people.iter().map(|p| p.faces).sum(),
        Err(facefleet_gallery::GalleryError::NoSuchCollection(_)) => return Err(no_collection(&c)),
        // Emptying an unreadable `default` is how it is repaired.
        Err(facefleet_gallery::GalleryError::Corrupt(why)) if c == facefleet_gallery::DEFAULT_COLLECTION => {
            tracing::warn!(error = %why, "emptying the unreadable `default` collection");
            0
        }
        Err(e) => return Err(e.into()),
    };
    if !state.gallery.delete_collection(&c).await? {
        return Err(no_collection(&c));
    }
    Ok(Json(Removed { collection: c.clone(), name: c, removed: faces }))
}

/// `GET /v1/people`: the `default` collection's people.
#[utoipa::path(get, path = "/v1/people", tag = "gallery",
    responses((status = 200, description = "People", body = PeopleList)),
    security(("api_key" = [])))]
pub(crate) async fn list_people_default(state: State<WebState>) -> Result<Json<PeopleList>, ApiError> {
    list_people(state, PathParams(CollectionPath { c: default_collection() })).await
}

/// `GET /v1/collections/{c}/people`: enrolled people with their face counts.
#[utoipa::path(get, path = "/v1/collections/{c}/people", tag = "gallery",
    params(("c" = String, Path, description = "Collection")),
    responses((status = 200, description = "People", body = PeopleList), (status = 404, description = "Unknown collection", body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn list_people(State(state): State<WebState>, PathParams(p): PathParams<CollectionPath>) -> Result<Json<PeopleList>, ApiError> {
    let c = p.checked()?;
    let people = state.gallery.people(&c).await?;
    Ok(Json(PeopleList { collection: c, people }))
}

/// `GET /v1/collections/{c}/people/{name}`: one person's faces.
#[utoipa::path(get, path = "/v1/collections/{c}/people/{name}", tag = "gallery",
    params(("c" = String, Path, description = "Collection"), ("name" = String, Path, description = "Person")),
    responses((status = 200, description = "The person", body = PersonDetail), (status = 404, description = "Unknown", body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn get_person(State(state): State<WebState>, PathParams(p): PathParams<PersonPath>) -> Result<Json<PersonDetail>, ApiError> {
    let (c, name) = p.checked()?;
    let faces = state.gallery.faces_of(&c, &name).await?;
    if faces.is_empty() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no person named `{name}` in collection `{c}`")));
    }
    let faces = faces.iter().map(|f| face_info(&c, f)).collect();
    Ok(Json(PersonDetail { collection: c, name, faces }))
}

/// `POST /v1/people/{name}/faces`: enrolls into the `default` collection.
#[utoipa::path(post, path = "/v1/people/{name}/faces", tag = "gallery",
    params(("name" = String, Path, description = "Person"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the same key with the same photos for the same person enrolls them once, and every send answers the same face ids (1 to 255 visible ASCII characters)")),
    request_body(content = EnrollForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "Enrolled", body = Enrolled),
        (status = 400, description = "Bad name, no photo or more than 20", body = ErrorBody),
        (status = 409, description = "The collection was emptied while the faces were added: nothing was added, send them again", body = ErrorBody),
        (status = 422, description = "A photo has no face, or is corrupt or too large", body = ErrorBody),
    ),
    security(("api_key" = [])))]
pub(crate) async fn enroll_default(state: State<WebState>, PathParams(name): PathParams<String>, headers: HeaderMap, form: Form) -> Result<(StatusCode, Json<Enrolled>), ApiError> {
    enroll(state, PathParams(PersonPath { c: default_collection(), name }), headers, form).await
}

/// The request header that makes an enrollment safe to send again.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The `Idempotency-Key` header, checked: `None` when absent.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(IDEMPOTENCY_KEY) else { return Ok(None) };
    let key = v.to_str().ok().filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()));
    match key {
        Some(k) => Ok(Some(k.to_string())),
        None => Err(ApiError::bad_request("invalid Idempotency-Key: use 1 to 255 visible ASCII characters (e.g. a UUID)")),
    }
}

/// The id of photo `index` of an enrollment sent with idempotency key
/// `key`: the same collection, person, key, place and photo bytes give the
/// same id (128 bits of SHA-256, hex), so a second send finds its faces
/// already there ([`facefleet_gallery::store::Gallery::add_faces_once`]).
fn idempotent_face_id(c: &str, name: &str, key: &str, index: usize, photo: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in ["facefleet enroll once", c, name, key, &index.to_string()] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.update(Sha256::digest(photo));
    hex::encode(&h.finalize()[..16])
}

/// Most photos one enrollment request takes (more: a 400).
pub const MAX_ENROLL_PHOTOS: usize = 20;

/// `POST /v1/collections/{c}/people/{name}/faces` (multipart `image`, 1 to
/// [`MAX_ENROLL_PHOTOS`]): embeds the largest face of every photo (each
/// must show one) and adds them to the person, created if new.
#[utoipa::path(post, path = "/v1/collections/{c}/people/{name}/faces", tag = "gallery",
    params(("c" = String, Path, description = "Collection"), ("name" = String, Path, description = "Person"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the same key with the same photos for the same person enrolls them once, and every send answers the same face ids (1 to 255 visible ASCII characters)")),
    request_body(content = EnrollForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "Enrolled", body = Enrolled),
        (status = 400, description = "Bad name, no photo or more than 20", body = ErrorBody),
        (status = 404, description = "Unknown collection", body = ErrorBody),
        (status = 409, description = "The collection was emptied while the faces were added: nothing was added, send them again", body = ErrorBody),
        (status = 422, description = "A photo has no face, or is corrupt or too large", body = ErrorBody),
    ),
    security(("api_key" = [])))]
pub(crate) async fn enroll(State(state): State<WebState>, PathParams(p): PathParams<PersonPath>, headers: HeaderMap, Form(mp): Form) -> Result<(StatusCode, Json<Enrolled>), ApiError> {
    let (c, name) = p.checked_new()?;
    let once = idempotency_key(&headers)?;
    if !state.gallery.collection_exists(&c).await? {
        return Err(no_collection(&c));
    }
    let uploads = files(mp, &["image"]).await?;
    if uploads.is_empty() {
        return Err(ApiError::bad_request("missing multipart file field `image` (one or more photos of the person)"));
    }
    if uploads.len() > MAX_ENROLL_PHOTOS {
        return Err(ApiError::bad_request(format!(
            "{} photos in one request; at most {MAX_ENROLL_PHOTOS} are taken at once: send the others in further requests",
            uploads.len()
        )));
    }
    let limits = state.config.image_limits;
    for (i, u) in uploads.iter().enumerate() {
        check_image(&u.bytes, &limits)
            .map_err(|e| ApiError::from(e).about(format_args!("image {} ({})", i + 1, u.file_name.as_deref().unwrap_or("unnamed"))))?;
    }
    let ids: Option<Vec<String>> =
        once.map(|key| uploads.iter().enumerate().map(|(i, u)| idempotent_face_id(&c, &name, &key, i, &u.bytes)).collect());
    let engine = state.engine().await?;
    let mut faces = Vec::with_capacity(uploads.len());
    for (i, u) in uploads.into_iter().enumerate() {
        // One photo decodes at a time in the web tier (bounded memory); the
        // slot is taken per photo, so enrollments of many photos take
        // turns with the others instead of holding them all up.
        let _slot = state.enroll_slot().await;
        let e = engine.clone();
        let label = u.file_name.clone().unwrap_or_else(|| "unnamed".into());
        let result = tokio::task::spawn_blocking(move || -> Result<Option<NewFace>, facefleet_gallery::EngineError> {
            let Some(face) = e.analyze(&u.bytes, 1, true)?.into_iter().next() else { return Ok(None) };
            let thumbnail = e.thumbnail(&u.bytes, &face).ok().map(Bytes::from);
            Ok(Some(NewFace { embedding: face.embedding, model: e.model_id().to_string(), thumbnail }))
        })
        .await
        .map_err(|e| ApiError::internal(format!("embedding panicked: {e}")))?;
        match result {
            Ok(Some(face)) => faces.push(face),
            Ok(None) => return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("image {} ({label}): no face found in the photo", i + 1))),
            Err(facefleet_gallery::EngineError::BadImage { message }) => {
                return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("image {} ({label}): {message}", i + 1)))
            }
            Err(e) => return Err(ApiError::internal(format!("embedding image {} ({label}): {e}", i + 1))),
        }
    }
    let added = match ids {
        Some(ids) => state.gallery.add_faces_once(&c, &name, faces, ids).await?,
        None => state.gallery.add_faces(&c, &name, faces).await?,
    };
    let total = state.gallery.faces_of(&c, &name).await?.len().max(added.len());
    let face_ids = added.iter().map(|f| f.id.clone()).collect();
    Ok((StatusCode::CREATED, Json(Enrolled { collection: c, name, added: added.len(), faces: total, face_ids })))
}

/// `PATCH /v1/collections/{c}/people/{name}` (JSON `{"name": new}`):
/// renames a person.
#[utoipa::path(patch, path = "/v1/collections/{c}/people/{name}", tag = "gallery",
    params(("c" = String, Path, description = "Collection"), ("name" = String, Path, description = "Person")),
    request_body = Rename,
    responses(
        (status = 200, description = "Renamed", body = PersonSummary),
        (status = 404, description = "Unknown person", body = ErrorBody),
        (status = 409, description = "The new name is taken", body = ErrorBody),
    ),
    security(("api_key" = [])))]
pub(crate) async fn rename_person(State(state): State<WebState>, PathParams(p): PathParams<PersonPath>, JsonBody(body): JsonBody<Rename>) -> Result<Json<PersonSummary>, ApiError> {
    let (c, name) = p.checked()?;
    let to = normalize_person(&body.name);
    validate_person(&to).map_err(|e| ApiError::bad_request(format!("invalid person name: {e}")))?;
    let moved = state.gallery.rename_person(&c, &name, &to).await?;
    if moved == 0 {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no person named `{name}` in collection `{c}`")));
    }
    Ok(Json(PersonSummary { name: to, faces: moved }))
}

/// `DELETE /v1/people/{name}`: forgets a person of the `default` collection.
#[utoipa::path(delete, path = "/v1/people/{name}", tag = "gallery",
    params(("name" = String, Path, description = "Person")),
    responses((status = 200, description = "Removed", body = Removed), (status = 404, description = "Unknown", body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn delete_person_default(state: State<WebState>, PathParams(name): PathParams<String>) -> Result<Json<Removed>, ApiError> {
    delete_person(state, PathParams(PersonPath { c: default_collection(), name })).await
}

/// `DELETE /v1/collections/{c}/people/{name}`: forgets a person.
#[utoipa::path(delete, path = "/v1/collections/{c}/people/{name}", tag = "gallery",
    params(("c" = String, Path, description = "Collection"), ("name" = String, Path, description = "Person")),
    responses((status = 200, description = "Removed", body = Removed), (status = 404, description = "Unknown", body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn delete_person(State(state): State<WebState>, PathParams(p): PathParams<PersonPath>) -> Result<Json<Removed>, ApiError> {
    let (c, name) = p.checked()?;
    let removed = state.gallery.remove_person(&c, &name).await?;
    if removed == 0 {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no person named `{name}` in collection `{c}`")));
    }
    Ok(Json(Removed { collection: c, name, removed }))
}

/// `DELETE /v1/collections/{c}/faces/{id}`: removes one enrolled face.
#[utoipa::path(delete, path = "/v1/collections/{c}/faces/{id}", tag = "gallery",
    params(("c" = String, Path, description = "Collection"), ("id" = String, Path, description = "Face id")),
    responses((status = 200, description = "Removed", body = Removed), (status = 404, description = "Unknown", body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn delete_face(State(state): State<WebState>, PathParams(p): PathParams<FacePath>) -> Result<Json<Removed>, ApiError> {
    collection_param(&p.c)?;
    if !state.gallery.remove_face(&p.c, &p.id).await? {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no face `{}` in collection `{}`", p.id, p.c)));
    }
    Ok(Json(Removed { collection: p.c, name: p.id, removed: 1 }))
}

/// `GET /v1/collections/{c}/faces/{id}/thumbnail`: the enrolled face, aligned
/// (JPEG).
#[utoipa::path(get, path = "/v1/collections/{c}/faces/{id}/thumbnail", tag = "gallery",
    params(("c" = String, Path, description = "Collection"), ("id" = String, Path, description = "Face id")),
    responses((status = 200, description = "JPEG", content_type = "image/jpeg", body = Vec<u8>), (status = 404, description = "Unknown", body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn thumbnail(State(state): State<WebState>, PathParams(p): PathParams<FacePath>) -> Result<impl IntoResponse, ApiError> {
    collection_param(&p.c)?;
    let Some(jpeg) = state.gallery.thumbnail(&p.c, &p.id).await? else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no thumbnail for face `{}` in collection `{}`", p.id, p.c)));
    };
    Ok(([(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, "private, max-age=3600")], jpeg))
}

/// `GET /v1/collections/{c}/embeddings`: every face with its embedding and
/// model id.
#[utoipa::path(get, path = "/v1/collections/{c}/embeddings", tag = "gallery",
    params(("c" = String, Path, description = "Collection")),
    responses((status = 200, description = "The export", body = EmbeddingExport), (status = 404, description = "Unknown collection", body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn export(State(state): State<WebState>, PathParams(p): PathParams<CollectionPath>) -> Result<Json<EmbeddingExport>, ApiError> {
    let c = p.checked()?;
    let snapshot = state.gallery.load(&c).await?;
    let faces = snapshot
        .faces
        .into_iter()
        .map(|f| ExportedFace { id: f.id, person: f.person, model: f.model, embedding: f.embedding, created_ms: f.created_ms })
        .collect();
    Ok(Json(EmbeddingExport { collection: c, generation: snapshot.generation, faces }))
}
