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

/// The scope a request needs; `None` for routes that are always open.
pub fn required_scope(method: &Method, path: &str) -> Option<Scope> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    match (method, segments.as_slice()) {
        (_, ["healthz"]) => None,
        (&Method::POST, []) => Some(Scope::Recognize),
        (&Method::POST, ["v1", "recognize"]) => Some(Scope::Recognize),
        (&Method::GET, ["v1", "videos", _]) => Some(Scope::Recognize),
        (&Method::POST, ["v1", "videos"]) => Some(Scope::Enroll),
        (&Method::GET, ["v1", "people"]) => Some(Scope::Enroll),
        (&Method::POST, ["v1", "people", _, "faces"]) => Some(Scope::Enroll),
        // Keys, deletes, status, metrics, and anything not listed.
        _ => Some(Scope::Admin),
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
            Ok(_) => return next.run(req).await,
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
        assert_eq!(s(Method::DELETE, "/v1/people/Ann"), Some(Scope::Admin));
        assert_eq!(s(Method::GET, "/v1/status"), Some(Scope::Admin));
        assert_eq!(s(Method::GET, "/metrics"), Some(Scope::Admin));
        assert_eq!(s(Method::POST, "/v1/keys"), Some(Scope::Admin));
        assert_eq!(s(Method::GET, "/"), Some(Scope::Admin));
    }
}
