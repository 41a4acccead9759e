//! The web console: static files embedded in the binary, served at `/ui/`
//! (the page) and `/ui/<asset>`, and `GET /` sending browsers there.
//!
//! The files are plain HTML, CSS and ES modules in `console/` (no build
//! step). Every answer carries a strict Content-Security-Policy (scripts,
//! styles and everything else from this origin only: no inline script or
//! style, no framing), `nosniff`, and `Cache-Control: no-cache` with an
//! `ETag`, so a browser revalidates each file (a cheap `304`) and never
//! runs a stale console against a newer server.
//!
//! Beside them, two data routes the Video page needs and the video API does
//! not give: the frames of a video and the names found in each
//! (`GET /v1/videos/{stem}/frames`, `GET /v1/videos/{stem}/frames/{index}`).

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use facefleet_gallery::names::url_segment;
use sha2::{Digest, Sha256};

use super::{ApiError, WebState};
use super::extract::PathParams;

/// The Content-Security-Policy of every console answer.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; \
connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $ct:expr) => {
        Asset { path: $path, content_type: $ct, body: include_bytes!(concat!("console/", $path)) }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("chart.js", JS),
    asset!("signin.js", JS),
    asset!("recognize.js", JS),
    asset!("gallery.js", JS),
    asset!("video.js", JS),
    asset!("fleet.js", JS),
];

/// The ETag of each asset, computed once.
fn etags() -> &'static Vec<String> {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let d = Sha256::digest(a.body);
                format!("\"{}\"", hex::encode(&d[..12]))
            })
            .collect()
    })
}

/// Headers every console answer carries.
fn secure(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    r
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.path == path) else {
        return secure(ApiError::new(StatusCode::NOT_FOUND, "no such console file").into_response());
    };
    let asset = &ASSETS[i];
    let etag = &etags()[i];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let cache = [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::ETAG, HeaderValue::from_str(etag).expect("hex etag")),
    ];
    if fresh {
        return secure((StatusCode::NOT_MODIFIED, cache).into_response());
    }
    secure((cache, [(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type))], asset.body).into_response())
}

/// The console's static files: `/ui` (to `/ui/`), `/ui/` and
/// `/ui/{asset}`. Open to everyone (no data in them: the console's API
/// calls carry the key); not part of the API document.
pub(crate) fn router() -> Router {
    Router::new().route("/ui", get(to_index)).route("/ui/", get(index)).route("/ui/{*asset}", get(asset))
}

/// `GET /ui/`: the console page.
#[utoipa::path(get, path = "/ui/", tag = "console",
    responses((status = 200, description = "The web console", body = String, content_type = "text/html")))]
pub(crate) async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// `GET /ui/{*asset}`: a console file.
#[utoipa::path(get, path = "/ui/{*asset}", tag = "console",
    params(("*asset" = String, Path, description = "File of the console (`app.js`, `style.css`...)")),
    responses((status = 200, description = "The file"), (status = 404, description = "No such file")))]
pub(crate) async fn asset(PathParams(path): PathParams<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

/// `GET /ui`: to `/ui/` (relative module URLs need the slash).
#[utoipa::path(get, path = "/ui", tag = "console", responses((status = 308, description = "To `/ui/`")))]
pub(crate) async fn to_index() -> Response {
    secure((StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, "/ui/")]).into_response())
}

/// `GET /`: browsers (an `Accept` naming `text/html`) go to the console
/// with a `303`; anything else is told that `/` takes a `POST`.
#[utoipa::path(get, path = "/", tag = "console",
    responses(
        (status = 303, description = "To the web console at `/ui/` (an `Accept` naming `text/html`)"),
        (status = 405, description = "Not a browser: `/` takes `POST` (one plain-text line)", body = String, content_type = "text/plain"),
    ))]
pub(crate) async fn root(headers: HeaderMap) -> Response {
    let html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("text/html"))));
    if html {
        return (StatusCode::SEE_OTHER, [(header::LOCATION, "/ui/")]).into_response();
    }
    let mut r = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "`/` takes `POST` with a multipart `inputFile` (the course route); the web console is at `/ui/`",
    )
    .plain()
    .into_response();
    r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
    r
}

/// One sampled frame of a video.
#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct Frame {
    /// Its number, from 0.
    pub index: usize,
    /// URL path of the JPEG.
    pub image: String,
    /// Names found in it (`null`: not recognized yet, or failed).
    pub names: Option<Vec<String>>,
    /// Whether its recognition failed.
    pub failed: bool,
}

/// `GET /v1/videos/{stem}/frames`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Frames {
    pub stem: String,
    /// Frames the video was split into (`null`: not split yet).
    pub total: Option<usize>,
    /// The frames split so far, in order.
    pub frames: Vec<Frame>,
}

/// A stem from a URL: one key segment of at most 200 bytes.
fn check_stem(stem: &str) -> Result<(), ApiError> {
    let ok = !stem.is_empty()
        && stem.len() <= 200
        && stem != "."
        && stem != ".."
        && !stem.contains(['/', '\\'])
        && !stem.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request("invalid video name in the URL"))
    }
}

/// `output-NN<ext>` → NN.
fn frame_number(file: &str, ext: &str) -> Option<usize> {
    let digits = file.strip_prefix("output-")?.strip_suffix(ext)?;
    (digits.len() >= 2 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
}

fn not_found_is_empty(e: facefleet_ports::PortError) -> Result<Vec<facefleet_ports::ObjectMeta>, ApiError> {
    if e.is_not_found() {
        Ok(Vec::new())
    } else {
        Err(e.into())
    }
}

/// `GET /v1/videos/{stem}/frames`: the frames split from a video
/// (`<prefix>-stage-1/<stem>/output-NN.jpg`) with the names found in each
/// (`<prefix>-output/<stem>/output-NN.txt`, one name a line), in order.
#[utoipa::path(get, path = "/v1/videos/{stem}/frames", tag = "video",
    params(("stem" = String, Path, description = "The video's file name without its extension")),
    responses(
        (status = 200, description = "The frames so far, with the names found in each", body = Frames),
        (status = 400, description = "Bad video name", body = super::ErrorBody),
    ),
    security(("api_key" = [])))]
pub(crate) async fn frames(State(state): State<WebState>, PathParams(stem): PathParams<String>) -> Result<Json<Frames>, ApiError> {
    check_stem(&stem)?;
    let names = &state.dep.names;
    let store = state.dep.store.as_ref();
    let prefix = format!("{stem}/output-");
    let manifest_key = format!("{stem}/manifest.json");
    let (images, results, manifest) = tokio::join!(
        store.list_all(&names.video_stage1, &prefix),
        store.list_all(&names.video_output, &prefix),
        store.get(&names.video_stage1, &manifest_key)
    );
    let total = match manifest {
        Ok(b) => serde_json::from_slice::<serde_json::Value>(&b).ok().and_then(|v| v["frames"].as_u64()).map(|n| n as usize),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e.into()),
    };
    let images = images.or_else(not_found_is_empty)?;
    let results = results.or_else(not_found_is_empty)?;
    let file = |key: &str| key.rsplit('/').next().unwrap_or("").to_string();
    let mut numbers: Vec<usize> = images.iter().filter_map(|o| frame_number(&file(&o.key), ".jpg")).collect();
    numbers.sort_unstable();
    let failed: std::collections::HashSet<usize> = results.iter().filter_map(|o| frame_number(&file(&o.key), ".error")).collect();
    let done: Vec<(usize, String)> = results.iter().filter_map(|o| frame_number(&file(&o.key), ".txt").map(|n| (n, o.key.clone()))).collect();
    let reads = futures::future::join_all(done.iter().map(|(n, key)| async move {
        let body = store.get(&names.video_output, key).await;
        (*n, body)
    }))
    .await;
    let mut found = std::collections::HashMap::new();
    for (n, body) in reads {
        match body {
            Ok(b) => {
                let list: Vec<String> = String::from_utf8_lossy(&b).lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
                found.insert(n, list);
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    let frames = numbers
        .into_iter()
        .map(|index| Frame {
            index,
            image: format!("/v1/videos/{}/frames/{index}", url_segment(&stem)),
            names: found.remove(&index),
            failed: failed.contains(&index),
        })
        .collect();
    Ok(Json(Frames { stem, total, frames }))
}

/// `GET /v1/videos/{stem}/frames/{index}`: one frame, `image/jpeg`.
#[utoipa::path(get, path = "/v1/videos/{stem}/frames/{index}", tag = "video",
    params(
        ("stem" = String, Path, description = "The video's file name without its extension"),
        ("index" = usize, Path, description = "The frame's number, from 0"),
    ),
    responses(
        (status = 200, description = "The frame", body = Vec<u8>, content_type = "image/jpeg"),
        (status = 404, description = "No such frame", body = super::ErrorBody),
    ),
    security(("api_key" = [])))]
pub(crate) async fn frame(State(state): State<WebState>, PathParams((stem, index)): PathParams<(String, String)>) -> Result<Response, ApiError> {
    check_stem(&stem)?;
    let index: usize = index.parse().map_err(|_| ApiError::bad_request("the frame number must be a whole number"))?;
    let key = format!("{stem}/output-{index:02}.jpg");
    let body = state.dep.store.get(&state.dep.names.video_stage1, &key).await.map_err(|e| {
        if e.is_not_found() {
            ApiError::new(StatusCode::NOT_FOUND, format!("video `{stem}` has no frame {index}"))
        } else {
            e.into()
        }
    })?;
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg")),
            (header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=3600")),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_embedded_with_a_type() {
        for a in ASSETS {
            assert!(!a.body.is_empty(), "{} is empty", a.path);
            assert!(!a.content_type.is_empty());
        }
        assert_eq!(etags().len(), ASSETS.len());
        // No inline script or style in the page: the CSP forbids them.
        let html = std::str::from_utf8(ASSETS[0].body).unwrap();
        assert!(!html.contains("<script>") && !html.contains("style=") && !html.contains("<style"));
        assert!(html.contains(r#"<script type="module" src="app.js">"#));
    }

    #[test]
    fn every_module_import_is_embedded() {
        for a in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            let src = std::str::from_utf8(a.body).unwrap();
            for line in src.lines().filter(|l| l.starts_with("import ")) {
                let target = line.split(['"', '\'']).nth(1).unwrap_or("");
                let target = target.trim_start_matches("./");
                assert!(ASSETS.iter().any(|x| x.path == target), "{} imports {target}, which is not embedded", a.path);
            }
        }
    }

    #[tokio::test]
    async fn assets_revalidate_with_etags() {
        let r = serve("app.js", &HeaderMap::new());
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_TYPE], JS);
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache");
        assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], CSP);
        let etag = r.headers()[header::ETAG].clone();
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(serve("app.js", &h).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(serve("../Cargo.toml", &HeaderMap::new()).status(), StatusCode::NOT_FOUND);
        assert_eq!(serve("style.css", &HeaderMap::new()).headers()[header::CONTENT_TYPE], "text/css; charset=utf-8");
    }

    #[tokio::test]
    async fn browsers_are_sent_to_the_console() {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static("text/html,application/xhtml+xml,*/*;q=0.8"));
        let r = root(h).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(r.headers()[header::LOCATION], "/ui/");
        let r = root(HeaderMap::new()).await;
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[header::ALLOW], "POST");
    }

    #[test]
    fn frame_files_and_stems() {
        assert_eq!(frame_number("output-07.jpg", ".jpg"), Some(7));
        assert_eq!(frame_number("output-123.txt", ".txt"), Some(123));
        assert_eq!(frame_number("output-7.jpg", ".jpg"), None);
        assert_eq!(frame_number("manifest.json", ".jpg"), None);
        assert!(check_stem("test_0").is_ok());
        assert!(check_stem("..").is_err());
        assert!(check_stem("a/b").is_err());
        assert!(check_stem("").is_err());
    }
}
