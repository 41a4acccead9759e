//! Who may call what: API-key authentication, scopes and per-key rate
//! limits, in front of every route but `/healthz`.
//!
//! A key comes in `x-api-key: <secret>` or `Authorization: Bearer <secret>`.
//! No key → 401, a key below the route's scope → 403, over the key's rate →
//! 429 with `Retry-After`; all with a JSON body. While the deployment has no
//! key at all, the stack is open if [`AccessPolicy::open_without_keys`]
//! (loopback, or `--insecure-open`); routes in
//! [`AccessPolicy::open_routes`] stay open whatever keys exist.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::keys::{Denied, KeyRing, Scope};

/// The access rules of one web tier.
#[derive(Clone)]
pub struct AccessPolicy {
    /// The deployment's keys.
    pub keys: Arc<KeyRing>,
    /// Serve without a key while no key exists (loopback-only stacks, or
    /// `--insecure-open`).
    pub open_without_keys: bool,
    /// Paths served without a key even when keys exist (`--open-route /`
    /// keeps the course route open for its workload generator).
    pub open_routes: Vec<String>,
}

impl AccessPolicy {
    /// Whether keys are needed now, for people (the start-up banner and
    /// `GET /v1/status`, which asks at each call: keys come and go).
    pub fn describe(&self) -> &'static str {
        if self.keys.any() {
            "required (x-api-key or Authorization: Bearer)"
        } else if self.open_without_keys {
            "open: no API key exists yet (`facefleet keys create --scope admin` to protect it)"
        } else {
            "required, and none exists yet: every route but /healthz answers 401"
        }
    }
}

/// The scope a request needs; `None` for routes that are always open.
///
/// `recognize`: the course route, recognize, detect, verify, listing
/// collections, reading a video's result. `enroll`: adding faces, listing
/// people and their faces, uploading videos. `admin`: everything else:
/// deleting and renaming, creating and deleting collections, exporting
/// embeddings, keys, status, metrics.
pub fn required_scope(method: &Method, path: &str) -> Option<Scope> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    // What follows `/v1/collections/{c}/`, matched like the `default` routes.
    let rest: &[&str] = match segments.as_slice() {
        ["v1", "collections", _, rest @ ..] => rest,
        _ => &[],
    };
    // HEAD is a GET without the body: the same scope.
    let method = if method == Method::HEAD { &Method::GET } else { method };
    match (method, segments.as_slice(), rest) {
        (_, ["healthz"], _) | (_, ["openapi.json"], _) => None,
        // The console's static files, and `GET /` sending browsers to them:
        // no data; the console's API calls carry the key.
        (&Method::GET, [] | ["ui", ..], _) => None,
        (&Method::POST, [], _) => Some(Scope::Recognize),
        (&Method::POST, ["v1", "recognize" | "detect" | "verify"], _) => Some(Scope::Recognize),
        (&Method::POST, ["v1", "collections", _, "recognize"], _) => Some(Scope::Recognize),
        (&Method::GET, ["v1", "collections"], _) => Some(Scope::Recognize),
        (&Method::GET, ["v1", "collections", _], _) => Some(Scope::Recognize),
        (&Method::GET, ["v1", "videos", _], _) => Some(Scope::Recognize),
        (&Method::GET, ["v1", "videos", _, "frames", ..], _) => Some(Scope::Recognize),
        (&Method::POST, ["v1", "videos"], _) => Some(Scope::Enroll),
        (&Method::GET, ["v1", "people", ..], _) => Some(Scope::Enroll),
        (&Method::POST, ["v1", "people", _, "faces"], _) => Some(Scope::Enroll),
        (&Method::GET, ["v1", "collections", ..], ["people", ..] | ["faces", _, "thumbnail"]) => Some(Scope::Enroll),
        (&Method::POST, ["v1", "collections", ..], ["people", _, "faces"]) => Some(Scope::Enroll),
        // Keys, deletes, renames, exports, status, metrics, and anything
        // not listed.
        _ => Some(Scope::Admin),
    }
}

/// The collection a request works on, when it works on one: `{c}` of
/// `/v1/collections/{c}/...`, `default` for the course route, the
/// `/v1/people` routes, `/v1/recognize` and videos.
pub fn collection_of(path: &str) -> Option<&str> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    match segments.as_slice() {
        ["v1", "collections", c, ..] => Some(*c),
        [] | ["v1", "recognize"] | ["v1", "people", ..] | ["v1", "videos", ..] => Some(facefleet_gallery::DEFAULT_COLLECTION),
        _ => None,
    }
}

/// Who is calling, as the handlers see it (set when a key was checked;
/// absent on an open stack, where everything may be used).
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key's id.
    pub key_id: String,
    /// The collections the key may use (`None`: all).
    pub collections: Option<Vec<String>>,
}

impl Caller {
    /// True when the key may use collection `c`.
    pub fn may_use(&self, c: &str) -> bool {
        self.collections.as_ref().is_none_or(|list| list.iter().any(|x| x == c))
    }
}

/// The secret a request presents, if any.
fn presented(req: &Request) -> Option<&str> {
    if let Some(v) = req.headers().get("x-api-key") {
        return v.to_str().ok().map(str::trim);
    }
    let auth = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = auth.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Middleware: authenticates and rate-limits before the body is read.
pub(crate) async fn authorize(State(policy): State<AccessPolicy>, req: Request, next: Next) -> Response {
    let Some(needs) = required_scope(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let path = req.uri().path();
    if policy.open_routes.iter().any(|r| r == path) || (policy.open_without_keys && !policy.keys.any()) {
        return next.run(req).await;
    }
    let denied = match presented(&req) {
        None => Denied::Missing,
        Some(secret) => match policy.keys.check(secret, needs) {
            Ok(record) => {
                let caller = Caller { key_id: record.id, collections: record.collections };
                if let Some(c) = collection_of(req.uri().path()) {
                    if !caller.may_use(c) {
                        let msg = format!("this API key may not use collection `{c}`");
                        return ApiError::coded(StatusCode::FORBIDDEN, "forbidden", msg).into_response();
                    }
                }
                let mut req = req;
                req.extensions_mut().insert(caller);
                return next.run(req).await;
            }
            Err(d) => d,
        },
    };
    let (status, code, message) = match denied {
        Denied::Missing => (
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "an API key is required: send it as `x-api-key: <key>` or `Authorization: Bearer <key>`".to_string(),
        ),
        Denied::Invalid => (StatusCode::UNAUTHORIZED, "unauthorized", "the API key is not valid (unknown, malformed or revoked)".to_string()),
        Denied::Scope { has, needs } => (
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this API key has scope `{}`; this route needs `{}`", has.name(), needs.name()),
        ),
        Denied::RateLimited(wait) => {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let mut r = ApiError::coded(StatusCode::TOO_MANY_REQUESTS, "rate_limited", format!("rate limit of this API key exceeded; retry in {secs} s"))
                .into_response();
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            return r;
        }
    };
    let mut r = ApiError::coded(status, code, message).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_map_to_scopes() {
        let s = |m: Method, p: &str| required_scope(&m, p);
        assert_eq!(s(Method::GET, "/healthz"), None);
        assert_eq!(s(Method::POST, "/"), Some(Scope::Recognize));
        assert_eq!(s(Method::POST, "/v1/recognize"), Some(Scope::Recognize));
        assert_eq!(s(Method::GET, "/v1/videos/test_0"), Some(Scope::Recognize));
        assert_eq!(s(Method::POST, "/v1/videos"), Some(Scope::Enroll));
        assert_eq!(s(Method::POST, "/v1/people/Ann/faces"), Some(Scope::Enroll));
        assert_eq!(s(Method::GET, "/v1/people"), Some(Scope::Enroll));
        assert_eq!(s(Method::HEAD, "/v1/people"), Some(Scope::Enroll), "HEAD as GET");
        assert_eq!(s(Method::HEAD, "/v1/collections"), Some(Scope::Recognize));
        assert_eq!(s(Method::HEAD, "/v1/status"), Some(Scope::Admin));
        assert_eq!(s(Method::HEAD, "/ui/app.js"), None);
        assert_eq!(s(Method::DELETE, "/v1/people/Ann"), Some(Scope::Admin));
        assert_eq!(s(Method::GET, "/v1/status"), Some(Scope::Admin));
        assert_eq!(s(Method::GET, "/metrics"), Some(Scope::Admin));
        assert_eq!(s(Method::POST, "/v1/keys"), Some(Scope::Admin));
        assert_eq!(s(Method::GET, "/"), None);
        assert_eq!(s(Method::GET, "/ui"), None);
        assert_eq!(s(Method::GET, "/ui/"), None);
        assert_eq!(s(Method::GET, "/ui/app.js"), None);
        assert_eq!(s(Method::POST, "/ui/app.js"), Some(Scope::Admin));
        assert_eq!(s(Method::GET, "/v1/status/history"), Some(Scope::Admin));
        assert_eq!(s(Method::GET, "/v1/videos/test_0/frames"), Some(Scope::Recognize));
        assert_eq!(s(Method::GET, "/v1/videos/test_0/frames/3"), Some(Scope::Recognize));
        assert_eq!(s(Method::GET, "/openapi.json"), None);
        assert_eq!(s(Method::POST, "/v1/detect"), Some(Scope::Recognize));
        assert_eq!(s(Method::POST, "/v1/verify"), Some(Scope::Recognize));
        assert_eq!(s(Method::POST, "/v1/collections/t1/recognize"), Some(Scope::Recognize));
        assert_eq!(s(Method::GET, "/v1/collections"), Some(Scope::Recognize));
        assert_eq!(s(Method::POST, "/v1/collections"), Some(Scope::Admin));
        assert_eq!(s(Method::DELETE, "/v1/collections/t1"), Some(Scope::Admin));
        assert_eq!(s(Method::GET, "/v1/collections/t1/people"), Some(Scope::Enroll));
        assert_eq!(s(Method::GET, "/v1/collections/t1/people/Ann"), Some(Scope::Enroll));
        assert_eq!(s(Method::POST, "/v1/collections/t1/people/Ann/faces"), Some(Scope::Enroll));
        assert_eq!(s(Method::PATCH, "/v1/collections/t1/people/Ann"), Some(Scope::Admin));
        assert_eq!(s(Method::DELETE, "/v1/collections/t1/faces/x"), Some(Scope::Admin));
        assert_eq!(s(Method::GET, "/v1/collections/t1/faces/x/thumbnail"), Some(Scope::Enroll));
        assert_eq!(s(Method::GET, "/v1/collections/t1/embeddings"), Some(Scope::Admin));
    }

    #[test]
    fn requests_name_their_collection() {
        assert_eq!(collection_of("/"), Some("default"));
        assert_eq!(collection_of("/v1/recognize"), Some("default"));
        assert_eq!(collection_of("/v1/people/Ann/faces"), Some("default"));
        assert_eq!(collection_of("/v1/collections/t1/people"), Some("t1"));
        assert_eq!(collection_of("/v1/collections/t1"), Some("t1"));
        assert_eq!(collection_of("/v1/collections"), None);
        assert_eq!(collection_of("/v1/detect"), None);
        assert_eq!(collection_of("/v1/keys"), None);
    }
}
