//! Extractors whose rejections are the API's JSON errors (axum's own answer
//! in plain text).

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Multipart, Request};
use axum::http::request::Parts;

use super::ApiError;

/// A query string, or a 400 naming what is wrong with it.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueryParams<T>(pub T);

impl<T, S> FromRequestParts<S> for QueryParams<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(q) => Ok(QueryParams(q.0)),
            Err(e) => Err(query_error(e)),
        }
    }
}

fn query_error(e: QueryRejection) -> ApiError {
    ApiError::bad_request(format!("bad query string: {}", e.body_text()))
}

/// A JSON body, or a 400/415 saying what is wrong with it.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(j) => Ok(JsonBody(j.0)),
            Err(e) => Err(json_error(e)),
        }
    }
}

fn json_error(e: JsonRejection) -> ApiError {
    ApiError::new(e.status(), format!("bad JSON body: {}", e.body_text()))
}

/// A multipart body, or a 400/415 saying that the request is not one.
pub struct Form(pub Multipart);

impl<S> FromRequest<S> for Form
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Multipart::from_request(req, state).await {
            Ok(m) => Ok(Form(m)),
            Err(e) => Err(ApiError::new(e.status(), format!("expected a multipart/form-data upload: {}", e.body_text()))),
        }
    }
}
