//! The web tier: axum router, shared state and server.
//!
//! Routes: `POST /` (the course contract), the JSON API under `/v1`,
//! `GET /healthz` and `GET /metrics`. Extra routers (e.g. the video path's
//! `POST /v1/videos`) can be merged in with [`build_router`].

mod api;
mod course;
pub mod dispatch;
mod error;
mod limit;
mod metrics;
mod multipart;

use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{BoxError, Router};
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;

use crate::backend::Deployment;
use crate::engine::Enroller;
use crate::upload::ImageLimits;

pub use dispatch::Dispatcher;
pub use error::ApiError;

/// Settings of the web tier.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Largest accepted request body in bytes (larger uploads get 413).
    pub max_upload_bytes: usize,
    /// Limits on uploaded images (decompression-bomb protection).
    pub image_limits: ImageLimits,
    /// How long a request waits for its result before answering 504.
    pub request_timeout: Duration,
    /// Requests handled at once; more are refused with 503 at once.
    pub max_in_flight: usize,
    /// Long-poll wait of the response dispatcher.
    pub response_poll_wait: Duration,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            max_upload_bytes: 10 * 1024 * 1024,
            image_limits: ImageLimits::default(),
            request_timeout: Duration::from_secs(60),
            max_in_flight: 512,
            response_poll_wait: Duration::from_secs(1),
        }
    }
}

/// Builds the enrollment model on first use (it is heavy and only
/// enrollment needs it in the web tier).
pub type EnrollerFactory = Arc<dyn Fn() -> Result<Arc<dyn Enroller>, String> + Send + Sync>;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct WebState {
    pub(crate) dep: Deployment,
    pub(crate) config: WebConfig,
    pub(crate) dispatcher: Arc<Dispatcher>,
    enroller_factory: Option<EnrollerFactory>,
    enroller: Arc<tokio::sync::OnceCell<Arc<dyn Enroller>>>,
    arrivals: Arc<tokio::sync::Notify>,
}

impl WebState {
    /// State over `dep`; `enroller` builds the enrollment model lazily
    /// (`None`: enrollment answers 501).
    pub fn new(dep: Deployment, config: WebConfig, enroller: Option<EnrollerFactory>) -> Self {
        let dispatcher = Dispatcher::new(dep.queue.clone(), &dep.names.resp_queue, config.response_poll_wait);
        Self {
            dep,
            config,
            dispatcher,
            enroller_factory: enroller,
            enroller: Arc::new(tokio::sync::OnceCell::new()),
            arrivals: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Notified each time this web tier queues a request: an autoscaler in
    /// the same process ([`crate::autoscaler::run_with_wake`]) reacts at
    /// once instead of at its next tick.
    pub fn request_arrivals(&self) -> Arc<tokio::sync::Notify> {
        self.arrivals.clone()
    }

    /// The response dispatcher; run it with [`Dispatcher::run`].
    pub fn dispatcher(&self) -> Arc<Dispatcher> {
        self.dispatcher.clone()
    }

    pub(crate) async fn enroller(&self) -> Result<Arc<dyn Enroller>, ApiError> {
        let Some(factory) = self.enroller_factory.clone() else {
            return Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, "enrollment is not available in this web tier"));
        };
        self.enroller
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || factory())
                    .await
                    .map_err(|e| format!("loading the model panicked: {e}"))?
            })
            .await
            .cloned()
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot load the face model: {e}")))
    }
}

/// The web tier's router, with `extra` routers merged in; every route is
/// behind the concurrency limit (overload → 503 at once).
pub fn build_router(state: WebState, extra: Vec<Router>) -> Router {
    let limit = state.config.max_upload_bytes;
    let max_in_flight = state.config.max_in_flight.max(1);
    let mut app = Router::new()
        .route("/", post(course::upload))
        .route("/v1/recognize", post(api::recognize))
        .route("/v1/people", get(api::list_people))
        .route("/v1/people/{name}", delete(api::delete_person))
        .route("/v1/people/{name}/faces", post(api::enroll))
        .route("/v1/status", get(api::status))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(limit, limit::refuse_oversized))
        .with_state(state)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics::render));
    for r in extra {
        app = app.merge(r);
    }
    app.layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(|e: BoxError| async move {
                if e.is::<tower::load_shed::error::Overloaded>() {
                    ::metrics::counter!("facefleet_http_shed_total").increment(1);
                    (StatusCode::SERVICE_UNAVAILABLE, "server overloaded: too many requests in flight, retry later\n".to_string())
                } else {
                    (StatusCode::INTERNAL_SERVER_ERROR, format!("internal error: {e}\n"))
                }
            }))
            .load_shed()
            .concurrency_limit(max_in_flight),
    )
}

/// Serves `app` on `listener` with the response dispatcher of `state`
/// running beside it, until `shutdown` fires (in-flight requests finish).
pub async fn serve(listener: tokio::net::TcpListener, state: &WebState, app: Router, shutdown: CancellationToken) -> std::io::Result<()> {
    metrics::install();
    let dispatcher = tokio::spawn(state.dispatcher().run(shutdown.child_token()));
    let s = shutdown.clone();
    let r = axum::serve(listener, app).with_graceful_shutdown(async move { s.cancelled().await }).await;
    shutdown.cancel();
    let _ = dispatcher.await;
    r
}
