//! How request bodies come in: bounded in size, in time and in total
//! memory, and only then counted against the server's in-flight limit.
//!
//! For every route but the streaming video upload the body is read in full
//! before the handler runs:
//! - a declared `Content-Length` over the limit is refused with 413 at once:
//!   without reading the body when the client waits for `100 Continue`,
//!   else after draining what keeps coming (up to [`DRAIN_CAP`]) so
//!   clients see the answer;
//! - a body growing past the limit: 413;
//! - a body not received within the body deadline, or idle longer than
//!   the idle timeout between chunks: 408, so slow clients cannot hold a
//!   connection forever;
//! - a client that goes away mid-upload: 400 (a client error, counted in
//!   `facefleet_http_client_aborts_total`);
//! - every buffered byte is charged to one server-wide budget; when it is
//!   spent the request is refused with 503 rather than growing memory.
//!
//! Then the request takes one of the server's in-flight slots (one limit
//! for the whole server, shared by every route): none free → 503 at once.
//! Clients still sending their body hold no slot, so a crowd of slow or
//! idle connections cannot starve the others.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ApiError;

/// Largest body drained before answering 413; larger ones are answered at
/// once and the connection closed.
pub const DRAIN_CAP: u64 = 64 * 1024 * 1024;

/// How long the drain of a refused body waits for its next bytes.
const DRAIN_SILENCE: Duration = Duration::from_secs(1);

/// Granularity of the memory budget.
const UNIT: usize = 1024;

/// The server-wide limits on incoming requests.
pub struct Intake {
    /// Largest body of a buffered route, in bytes.
    pub max_body: usize,
    /// Whole time allowed to receive a body.
    pub body_deadline: Duration,
    /// Longest pause between two chunks of a body.
    pub idle_timeout: Duration,
    budget: Arc<Semaphore>,
    in_flight: Arc<Semaphore>,
}

impl Intake {
    /// Limits: `max_body` bytes per body, `budget_bytes` buffered at once
    /// over all requests, `max_in_flight` requests handled at once.
    pub fn new(max_body: usize, budget_bytes: usize, max_in_flight: usize, body_deadline: Duration, idle_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            max_body,
            body_deadline,
            idle_timeout,
            budget: Arc::new(Semaphore::new((budget_bytes / UNIT).max(1))),
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
        })
    }

    /// Requests being handled right now.
    pub fn in_flight(&self, max: usize) -> usize {
        max.saturating_sub(self.in_flight.available_permits())
    }
}

/// Routes whose handlers stream the body themselves (their own size limit
/// and concurrency bound apply).
fn streams_body(method: &Method, path: &str) -> bool {
    method == Method::POST && path.trim_end_matches('/') == "/v1/videos"
}

/// Why a request is shed.
#[derive(Clone, Copy)]
enum Shed {
    /// Every in-flight slot is taken.
    InFlight,
    /// The bytes of uploads being received at once reached the budget.
    UploadBudget,
}

fn overloaded(path: &str, why: Shed) -> Response {
    ::metrics::counter!("facefleet_http_shed_total").increment(1);
    let message = match why {
        Shed::InFlight => "server overloaded: too many requests in flight, retry later",
        Shed::UploadBudget => "server overloaded: too many uploads are being received at once, retry later",
    };
    let mut r = ApiError::coded(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message)
        .for_path(path)
        .into_response();
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// Middleware: reads the body under the limits, then takes an in-flight
/// slot for the handler.
pub(crate) async fn intake(State(intake): State<Arc<Intake>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if streams_body(req.method(), &path) {
        let Ok(_slot) = intake.in_flight.clone().try_acquire_owned() else {
            return overloaded(&path, Shed::InFlight);
        };
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared.filter(|&l| l > intake.max_body as u64) {
        let msg = format!("upload too large: {len} bytes exceeds the limit of {} bytes", intake.max_body);
        let mut r = ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, msg).for_path(&path).into_response();
        let waits_for_continue =
            parts.headers.get(header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if len <= DRAIN_CAP && !waits_for_continue {
            // Drain while the body keeps coming (bounded in time), so a
            // client that is sending reads the answer instead of a reset
            // connection; one that sends nothing gets it after DRAIN_SILENCE.
            let mut stream = body.into_data_stream();
            let drain = async {
                loop {
                    match tokio::time::timeout(DRAIN_SILENCE, stream.next()).await {
                        Ok(Some(Ok(_))) => {}
                        Ok(None) => return true,
                        _ => return false,
                    }
                }
            };
            // Stopped before the body's end: this connection cannot carry
            // another request.
            if !matches!(tokio::time::timeout(intake.body_deadline, drain).await, Ok(true)) {
                r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
        } else {
            // Too big to drain, or the client waits for `100 Continue`
            // (never sent: the body is not read) before sending it.
            r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        return r;
    }
    let (bytes, _held) = match read_body(&intake, body, &path).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Ok(_slot) = intake.in_flight.clone().try_acquire_owned() else {
        return overloaded(&path, Shed::InFlight);
    };
    next.run(Request::from_parts(parts, Body::from(bytes.freeze()))).await
}

async fn read_body(intake: &Intake, body: Body, path: &str) -> Result<(BytesMut, Option<OwnedSemaphorePermit>), Response> {
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::new();
    let mut held: Option<OwnedSemaphorePermit> = None;
    let deadline = tokio::time::Instant::now() + intake.body_deadline;
    loop {
        let next = tokio::time::timeout_at(deadline.min(tokio::time::Instant::now() + intake.idle_timeout), stream.next()).await;
        let chunk = match next {
            Err(_) => {
                ::metrics::counter!("facefleet_http_slow_clients_total").increment(1);
                let mut r = ApiError::new(StatusCode::REQUEST_TIMEOUT, "the request body was not received in time").for_path(path).into_response();
                r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                return Err(r);
            }
            Ok(None) => return Ok((buf, held)),
            Ok(Some(Err(e))) => {
                ::metrics::counter!("facefleet_http_client_aborts_total").increment(1);
                tracing::debug!(error = %e, "client aborted its upload");
                return Err(ApiError::coded(StatusCode::BAD_REQUEST, "aborted", "the upload was cut off before its end").for_path(path).into_response());
            }
            Ok(Some(Ok(c))) => c,
        };
        if buf.len() + chunk.len() > intake.max_body {
            let msg = format!("upload too large: the body exceeds the limit of {} bytes", intake.max_body);
            let mut r = ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, msg).for_path(path).into_response();
            r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            return Err(r);
        }
        // Charge the budget for whole units covering what is now held.
        let need_units = (buf.len() + chunk.len()).div_ceil(UNIT);
        let have_units = held.as_ref().map_or(0, |p| p.num_permits());
        if need_units > have_units {
            let more = (need_units - have_units) as u32;
            match intake.budget.clone().try_acquire_many_owned(more) {
                Ok(p) => match held.as_mut() {
                    Some(h) => h.merge(p),
                    None => held = Some(p),
                },
                Err(_) => return Err(overloaded(path, Shed::UploadBudget)),
            }
        }
        buf.extend_from_slice(&chunk);
    }
}
