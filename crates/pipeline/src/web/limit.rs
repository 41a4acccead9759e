//! Early refusal of uploads over the size limit.
//!
//! When a request declares a `Content-Length` over the limit, it is
//! refused with 413 before any handler runs. The declared body is read and
//! discarded first (up to [`DRAIN_CAP`]): a server that answers and closes
//! while the client is still sending makes most clients report a broken
//! connection instead of the 413.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use super::ApiError;

/// Largest body drained before answering 413; larger ones are answered at
/// once and the connection closed.
pub const DRAIN_CAP: u64 = 256 * 1024 * 1024;

/// Middleware: 413 for a declared length over `limit`.
pub(crate) async fn refuse_oversized(State(limit): State<usize>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(len) if len > limit as u64 => {
            let msg = format!("upload too large: {len} bytes exceeds the limit of {limit} bytes");
            if len <= DRAIN_CAP {
                let mut stream = req.into_body().into_data_stream();
                while let Some(chunk) = stream.next().await {
                    if chunk.is_err() {
                        break;
                    }
                }
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, msg).into_response()
            } else {
                let mut r = ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, msg).into_response();
                r.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
                r
            }
        }
        _ => next.run(req).await,
    }
}

