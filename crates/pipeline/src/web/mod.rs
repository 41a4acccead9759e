//! The web tier: axum router, shared state and server.
//!
//! Routes: `POST /` (the course contract), the JSON API under `/v1`,
//! `GET /healthz` and `GET /metrics`. Extra routers (e.g. the video path's
//! `POST /v1/videos`) can be merged in with [`build_router`].

mod api;
mod console;
mod course;
pub mod dispatch;
mod error;
mod extract;
mod gallery_api;
mod history;
pub mod guard;
pub mod intake;
mod keys_api;
mod metrics;
mod multipart;
pub mod openapi;
mod server;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use facefleet_gallery::store::Gallery;
use facefleet_gallery::FaceEngine;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::backend::Deployment;
use crate::keys::KeyRing;
use crate::upload::ImageLimits;

pub use dispatch::Dispatcher;
pub use error::{ApiError, ErrorBody};
pub use gallery_api::MAX_ENROLL_PHOTOS;
pub use guard::AccessPolicy;
pub use intake::Intake;

/// Settings of the web tier.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Largest accepted request body in bytes (larger uploads get 413).
    pub max_upload_bytes: usize,
    /// Limits on uploaded images (decompression-bomb protection).
    pub image_limits: ImageLimits,
    /// How long a request waits for its result before answering 504.
    pub request_timeout: Duration,
    /// Requests handled at once by the whole server; more are refused with
    /// 503 at once.
    pub max_in_flight: usize,
    /// Bytes of request bodies held in memory at once over all requests;
    /// past it uploads are refused with 503.
    pub upload_budget_bytes: usize,
    /// Whole time a client has to send a request body (408 after).
    pub body_deadline: Duration,
    /// Longest pause inside a request body (408 after).
    pub body_idle_timeout: Duration,
    /// Time a client has to send its request headers (the connection is
    /// closed after).
    pub header_timeout: Duration,
    /// Open connections at once; more wait in the listen backlog.
    pub max_connections: usize,
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
            upload_budget_bytes: 256 * 1024 * 1024,
            body_deadline: Duration::from_secs(30),
            body_idle_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            max_connections: 8192,
            response_poll_wait: Duration::from_secs(1),
        }
    }
}

/// Builds the face model on first use (it is heavy and only enrollment
/// needs it in the web tier).
pub type EngineFactory = Arc<dyn Fn() -> Result<Arc<dyn FaceEngine>, String> + Send + Sync>;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct WebState {
    pub(crate) dep: Deployment,
    pub(crate) config: WebConfig,
    pub(crate) dispatcher: Arc<Dispatcher>,
    /// The gallery (collections, people, faces).
    pub(crate) gallery: Arc<Gallery>,
    engine_factory: Option<EngineFactory>,
    engine: Arc<tokio::sync::OnceCell<Arc<dyn FaceEngine>>>,
    /// One enrollment photo is embedded at a time: its decode is the only
    /// full image decode in the web tier, so this bounds its memory.
    enroll_slot: Arc<tokio::sync::Semaphore>,
    arrivals: Arc<tokio::sync::Notify>,
    pub(crate) access: AccessPolicy,
    pub(crate) intake: Arc<Intake>,
    pub(crate) info: Arc<Vec<(String, String)>>,
    /// The last ten minutes, one sample a second (`GET /v1/status/history`).
    pub(crate) history: Arc<history::History>,
    /// The buckets' object counts of `GET /v1/status` (a recent count is
    /// reused: counting lists both buckets whole).
    pub(crate) objects: Arc<crate::stats::ObjectCounts>,
    /// OpenAPI documents of routes merged in by the composition root.
    pub(crate) api_docs: Arc<Vec<utoipa::openapi::OpenApi>>,
}

impl WebState {
    /// State over `dep`; `engine` builds the face model lazily for
    /// enrollment (`None`: enrollment answers 501). The stack is open while
    /// no API key exists (see [`WebState::with_access`]).
    pub fn new(dep: Deployment, config: WebConfig, engine: Option<EngineFactory>) -> Self {
        let dispatcher = Dispatcher::new(dep.queue.clone(), &dep.names.resp_queue, config.response_poll_wait);
        let keys = KeyRing::new(dep.store.clone(), &dep.names.gallery_bucket);
        let intake = Intake::new(
            config.max_upload_bytes,
            config.upload_budget_bytes,
            config.max_in_flight,
            config.body_deadline,
            config.body_idle_timeout,
        );
        let gallery = Arc::new(Gallery::new(dep.store.clone(), &dep.names.gallery_bucket));
        Self {
            dep,
            config,
            dispatcher,
            gallery,
            engine_factory: engine,
            engine: Arc::new(tokio::sync::OnceCell::new()),
            enroll_slot: Arc::new(tokio::sync::Semaphore::new(1)),
            arrivals: Arc::new(tokio::sync::Notify::new()),
            access: AccessPolicy { keys, open_without_keys: true, open_routes: Vec::new() },
            intake,
            info: Arc::default(),
            history: Arc::new(history::History::new()),
            objects: Arc::default(),
            api_docs: Arc::default(),
        }
    }

    /// The same state with facts about the stack that `GET /v1/status`
    /// shows under `stack` (backend, recognizer, video on/off...).
    pub fn with_info(mut self, info: Vec<(String, String)>) -> Self {
        self.info = Arc::new(info);
        self
    }

    /// The same state with the OpenAPI documents of the routers merged in
    /// with [`build_router`] (served in `GET /openapi.json`).
    pub fn with_api_docs(mut self, docs: Vec<utoipa::openapi::OpenApi>) -> Self {
        self.api_docs = Arc::new(docs);
        self
    }

    /// The same state with access rules: whether the stack is open while
    /// no key exists, and the routes open to everyone.
    pub fn with_access(mut self, open_without_keys: bool, open_routes: Vec<String>) -> Self {
        self.access.open_without_keys = open_without_keys;
        self.access.open_routes = open_routes;
        self
    }

    /// Whether API keys are needed now, in words (see
    /// [`AccessPolicy::describe`]).
    pub fn access_summary(&self) -> &'static str {
        self.access.describe()
    }

    /// The deployment's API keys as this web tier sees them.
    pub fn keys(&self) -> Arc<KeyRing> {
        self.access.keys.clone()
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

    pub(crate) async fn engine(&self) -> Result<Arc<dyn FaceEngine>, ApiError> {
        let Some(factory) = self.engine_factory.clone() else {
            return Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, "enrollment is not available in this web tier"));
        };
        self.engine
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || factory())
                    .await
                    .map_err(|e| format!("loading the model panicked: {e}"))?
            })
            .await
            .cloned()
            .map_err(|e| ApiError::internal(format!("cannot load the face model: {e}")))
    }

    /// Waits for the enrollment slot (one enrollment photo decodes at a time).
    pub(crate) async fn enroll_slot(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.enroll_slot.clone().acquire_owned().await.expect("the enrollment semaphore is never closed")
    }
}

/// The web tier's router, with `extra` routers merged in. Every route but
/// `/healthz` is behind the API-key check ([`guard`]), then the body limits
/// and the server-wide in-flight limit ([`intake`]).
pub fn build_router(state: WebState, extra: Vec<Router>) -> Router {
    let access = state.access.clone();
    let intake = state.intake.clone();
    let mut app = Router::new()
        .route("/", get(console::root).post(course::upload))
        .route("/v1/recognize", post(api::recognize_default))
        .route("/v1/detect", post(api::detect))
        .route("/v1/verify", post(api::verify))
        .route("/v1/people", get(gallery_api::list_people_default))
        .route("/v1/people/{name}", delete(gallery_api::delete_person_default))
        .route("/v1/people/{name}/faces", post(gallery_api::enroll_default))
        .route("/v1/collections", get(gallery_api::list_collections).post(gallery_api::create_collection))
        .route("/v1/collections/{c}", get(gallery_api::get_collection).delete(gallery_api::delete_collection))
        .route("/v1/collections/{c}/recognize", post(api::recognize))
        .route("/v1/collections/{c}/people", get(gallery_api::list_people))
        .route(
            "/v1/collections/{c}/people/{name}",
            get(gallery_api::get_person).patch(gallery_api::rename_person).delete(gallery_api::delete_person),
        )
        .route("/v1/collections/{c}/people/{name}/faces", post(gallery_api::enroll))
        .route("/v1/collections/{c}/faces/{id}", delete(gallery_api::delete_face))
        .route("/v1/collections/{c}/faces/{id}/thumbnail", get(gallery_api::thumbnail))
        .route("/v1/collections/{c}/embeddings", get(gallery_api::export))
        .route("/v1/status", get(api::status))
        .route("/v1/status/history", get(history::handler))
        .route("/v1/videos/{stem}/frames", get(console::frames))
        .route("/v1/videos/{stem}/frames/{index}", get(console::frame))
        .route("/v1/keys", get(keys_api::list).post(keys_api::create))
        .route("/v1/keys/{id}", delete(keys_api::revoke))
        .route("/openapi.json", get(openapi::serve))
        // The body limit is enforced by `intake`; axum's own default (2 MB)
        // must not cut below it.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(console::router())
        .route("/metrics", get(metrics::render));
    for r in extra {
        app = app.merge(r);
    }
    // After every route is in: a known path with another method is a JSON
    // 405 (axum still adds the `Allow` header).
    app.method_not_allowed_fallback(|| async { ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "this route does not take that method") })
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .layer(axum::middleware::from_fn_with_state(intake, intake::intake))
        .layer(axum::middleware::from_fn_with_state(access, guard::authorize))
}

/// Serves `app` on `listener` with the response dispatcher and the key
/// refresher of `state` running beside it, until `shutdown` fires. Then it
/// stops accepting and lets in-flight requests finish: the dispatcher keeps
/// delivering their answers until the last connection is done.
/// Connections are capped and must send their headers within the header
/// timeout.
pub async fn serve(listener: tokio::net::TcpListener, state: &WebState, app: Router, shutdown: CancellationToken) -> std::io::Result<()> {
    metrics::install();
    state.keys().ensure_loaded().await.map_err(|e| std::io::Error::other(format!("reading the API keys: {e}")))?;
    // Stopped after the drain, not with `shutdown`: answers of requests in
    // flight at shutdown still need the dispatcher.
    let background = CancellationToken::new();
    let dispatcher = tokio::spawn(state.dispatcher().run(background.clone()));
    let refresher = tokio::spawn(state.keys().run(Duration::from_secs(2), background.clone()));
    let history = tokio::spawn(state.history.clone().run(state.dep.clone(), state.intake.clone(), state.config.max_in_flight, background.clone()));
    let limits = server::ConnLimits { header_timeout: state.config.header_timeout, max_connections: state.config.max_connections };
    let r = server::run(listener, app, limits, shutdown.clone()).await;
    shutdown.cancel();
    background.cancel();
    let _ = dispatcher.await;
    let _ = refresher.await;
    let _ = history.await;
    r
}
