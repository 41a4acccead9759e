//! Plain-text error answers.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use facefleet_ports::PortError;

use crate::upload::UploadError;

/// An error answer: a status and a one-line plain-text message.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Message for the client.
    pub message: String,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }

    /// 400 Bad Request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        ::metrics::counter!("facefleet_http_errors_total", "status" => self.status.as_u16().to_string()).increment(1);
        let mut msg = self.message;
        if !msg.ends_with('\n') {
            msg.push('\n');
        }
        (self.status, [(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], msg).into_response()
    }
}

impl From<PortError> for ApiError {
    fn from(e: PortError) -> Self {
        let status = if e.is_transient() { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::INTERNAL_SERVER_ERROR };
        tracing::warn!(error = %e, "backend error");
        ApiError::new(status, format!("backend error: {e}"))
    }
}

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> Self {
        let status = match e {
            UploadError::Empty | UploadError::Corrupt(_) => StatusCode::BAD_REQUEST,
            UploadError::NotAnImage => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            UploadError::TooLarge { .. } => StatusCode::UNPROCESSABLE_ENTITY,
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

impl From<crate::gallery::GalleryError> for ApiError {
    fn from(e: crate::gallery::GalleryError) -> Self {
        use crate::gallery::GalleryError as G;
        match e {
            G::InvalidName(m) => ApiError::bad_request(format!("invalid person name: {m}")),
            G::Store(p) => p.into(),
            G::Engine(x) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, x.to_string()),
        }
    }
}
