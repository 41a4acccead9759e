//! Extractors whose rejections are the API's JSON errors (axum's own answer
//! in plain text).

use axum::extract::path::ErrorKind;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
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
    ApiError::bad_request(format!("bad query string: {}", without_type_names(&e.body_text())))
}

/// Path parameters, or a 400 naming the part of the path that is wrong.
#[derive(Debug, Clone, Copy, Default)]
pub struct PathParams<T>(pub T);

impl<T, S> FromRequestParts<S> for PathParams<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(p) => Ok(PathParams(p.0)),
            Err(e) => Err(path_error(e)),
        }
    }
}

fn path_error(e: PathRejection) -> ApiError {
    if e.status().is_server_error() {
        // A route declared with the wrong parameters: our bug, not the client's.
        return ApiError::internal(e.body_text());
    }
    let message = match &e {
        PathRejection::FailedToDeserializePathParams(inner) => match inner.kind() {
            ErrorKind::InvalidUtf8InPathParam { key } => format!("the `{key}` part of the path is not valid UTF-8"),
            ErrorKind::ParseErrorAtKey { key, .. } | ErrorKind::DeserializeError { key, .. } => format!("the `{key}` part of the path is not valid"),
            _ => "the path is not valid".to_string(),
        },
        _ => "the path is not valid".to_string(),
    };
    ApiError::bad_request(message)
}

/// A deserialiser's message in the API's words: Rust type names
/// (`struct NewCollection`, `u32`, `a sequence`) say what JSON was
/// expected instead.
fn without_type_names(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find("expected ") {
        let (head, tail) = rest.split_at(i + "expected ".len());
        out.push_str(head);
        let named = |kw: &str, tail: &str| -> Option<usize> {
            let after = tail.strip_prefix(kw)?;
            let ident = after.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(after.len());
            (ident > 0).then_some(kw.len() + ident)
        };
        let (said, used) = if let Some(n) = named("struct ", tail).or_else(|| named("tuple struct ", tail)).or_else(|| named("newtype struct ", tail)) {
            ("a JSON object", n)
        } else if let Some(n) = named("enum ", tail) {
            ("one of the documented values", n)
        } else {
            let word = tail.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(tail.len());
            match &tail[..word] {
                "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => ("a whole number of 0 or more", word),
                "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => ("a whole number", word),
                "f32" | "f64" => ("a number", word),
                "bool" => ("true or false", word),
                "char" => ("one character", word),
                _ if tail.starts_with("a sequence") => ("a JSON array", "a sequence".len()),
                _ if tail.starts_with("a map") => ("a JSON object", "a map".len()),
                _ => ("", 0),
            }
        };
        out.push_str(said);
        rest = &tail[used..];
    }
    out.push_str(rest);
    out
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
    ApiError::new(e.status(), format!("bad JSON body: {}", without_type_names(&e.body_text())))
}

/// A multipart body, or a 400/415 saying that the request is not one.
pub struct Form(pub Multipart);

impl<S> FromRequest<S> for Form
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = req.headers().get(axum::http::header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("?"));
        let essence = content_type.map(|t| t.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
        if essence.as_deref() != Some("multipart/form-data") {
            let got = match content_type {
                Some(t) => format!("Content-Type `{}`", t.chars().take(80).collect::<String>()),
                None => "no Content-Type".to_string(),
            };
            return Err(ApiError::new(
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("expected a multipart/form-data upload (e.g. `curl -F image=@photo.jpg`), got {got}"),
            ));
        }
        match Multipart::from_request(req, state).await {
            Ok(m) => Ok(Form(m)),
            Err(e) => Err(ApiError::new(e.status(), format!("expected a multipart/form-data upload: {}", e.body_text()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::without_type_names;

    #[test]
    fn deserialiser_messages_lose_their_type_names() {
        for (from, to) in [
            ("invalid type: null, expected struct NewCollection at line 1 column 4", "invalid type: null, expected a JSON object at line 1 column 4"),
            ("rate_per_sec: invalid value: integer `-1`, expected u32 at line 1 column 19", "rate_per_sec: invalid value: integer `-1`, expected a whole number of 0 or more at line 1 column 19"),
            ("invalid type: string \"x\", expected f32", "invalid type: string \"x\", expected a number"),
            ("invalid type: map, expected a sequence", "invalid type: map, expected a JSON array"),
            ("unknown variant `root`, expected one of `admin`, `enroll`, `recognize`", "unknown variant `root`, expected one of `admin`, `enroll`, `recognize`"),
            ("invalid type: integer `1`, expected enum Scope", "invalid type: integer `1`, expected one of the documented values"),
            ("missing field `name` at line 1 column 2", "missing field `name` at line 1 column 2"),
            ("expected struct Rename, expected struct CreateKey", "expected a JSON object, expected a JSON object"),
        ] {
            assert_eq!(without_type_names(from), to);
        }
    }
}
