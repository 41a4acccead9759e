//! Error answers: JSON `{"error": {"code", "message"}}` on the API, one
//! plain-text line on the course route `POST /`. Messages never carry
//! internals (paths, backend details): those are logged instead.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use facefleet_ports::PortError;
use serde::Serialize;

use crate::upload::UploadError;

/// An error answer: a status, a machine-readable code and a one-line
/// message for people.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable snake_case code (`bad_request`, `unauthorized`...).
    pub code: &'static str,
    /// Message for the client.
    pub message: String,
    /// Answer as one plain-text line (the course route) instead of JSON.
    pub plain: bool,
}

/// The JSON body of every `/v1` error (for the OpenAPI document).
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// Code and message of an error.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code: `bad_request`, `unauthorized`, `forbidden`,
    /// `not_found`, `conflict`, `too_large`, `unprocessable`,
    /// `rate_limited`, `unavailable`, `timeout`, `internal`...
    pub code: String,
    /// One line for people.
    pub message: String,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'a str,
    message: &'a str,
}

/// The default code of a status.
pub fn code_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        409 => "conflict",
        413 => "too_large",
        415 => "unsupported_media_type",
        422 => "unprocessable",
        429 => "rate_limited",
        501 => "not_implemented",
        503 => "unavailable",
        504 => "timeout",
        _ if status.is_client_error() => "bad_request",
        _ => "internal",
    }
}

impl ApiError {
    /// An error with `status` and `message` (code from the status).
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, code: code_of(status), message: message.into(), plain: false }
    }

    /// An error with an explicit code.
    pub fn coded(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), plain: false }
    }

    /// 400 Bad Request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// The same error with `what` (which photo or field) before its message.
    pub fn about(mut self, what: impl std::fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }

    /// The same error as a plain-text answer (the course route).
    pub fn plain(mut self) -> Self {
        self.plain = true;
        self
    }

    /// Plain text on the course route `/`, JSON elsewhere.
    pub fn for_path(self, path: &str) -> Self {
        if path == "/" {
            self.plain()
        } else {
            self
        }
    }

    /// A 500 whose detail is logged, not shown.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error (details are in the server log)")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = if self.status.is_client_error() { "client" } else { "server" };
        ::metrics::counter!("facefleet_http_errors_total", "status" => self.status.as_u16().to_string(), "kind" => kind).increment(1);
        if self.plain {
            let mut msg = self.message;
            if !msg.ends_with('\n') {
                msg.push('\n');
            }
            return (self.status, [(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], msg).into_response();
        }
        let body = Body { error: Detail { code: self.code, message: self.message.trim_end() } };
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<PortError> for ApiError {
    fn from(e: PortError) -> Self {
        if e.is_not_found() {
            tracing::debug!(error = %e, "not found");
            return ApiError::new(StatusCode::NOT_FOUND, "not found");
        }
        if e.is_transient() {
            tracing::warn!(error = %e, "backend unavailable");
            return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage or queue temporarily unavailable; retry later");
        }
        ApiError::internal(format!("backend error: {e}"))
    }
}

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> Self {
        let status = match e {
            UploadError::Empty => StatusCode::BAD_REQUEST,
            UploadError::NotAnImage => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            // A corrupt header here and corrupt pixels in the worker are the
            // same fault to the client: both are 422.
            UploadError::Corrupt(_) | UploadError::TooLarge { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<axum::extract::multipart::MultipartError> for ApiError {
    fn from(e: axum::extract::multipart::MultipartError) -> Self {
        let status = e.status();
        let msg = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "upload too large: the request exceeds the configured size limit".to_string()
        } else {
            format!("malformed multipart request: {}", e.body_text())
        };
        ApiError::new(status, msg)
    }
}

impl From<facefleet_gallery::GalleryError> for ApiError {
    fn from(e: facefleet_gallery::GalleryError) -> Self {
        use facefleet_gallery::GalleryError as G;
        match e {
            G::InvalidName(m) => ApiError::bad_request(format!("invalid name: {m}")),
            G::NoSuchCollection(c) => ApiError::new(StatusCode::NOT_FOUND, format!("no collection named `{c}`")),
            G::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
            G::Store(p) => p.into(),
            internal @ (G::Corrupt(_) | G::InvalidFace(_)) => ApiError::internal(internal),
        }
    }
}
