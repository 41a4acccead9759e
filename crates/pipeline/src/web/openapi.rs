//! `GET /openapi.json`: the OpenAPI 3.1 document of the web tier,
//! generated with utoipa from the handlers' annotations and types.

use axum::extract::State;
use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{api, console, course, gallery_api, history, keys_api, WebState};

/// The web tier's own routes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "facefleet",
        description = "Elastic face recognition: upload photos, get names back; manage collections of enrolled people. \
Every /v1 error is JSON `{\"error\": {\"code\", \"message\"}}`. Send an API key as `x-api-key` or `Authorization: Bearer`.",
        license(name = "MIT")
    ),
    paths(
        course::upload,
        api::recognize_default,
        api::recognize,
        api::detect,
        api::verify,
        api::status,
        gallery_api::list_collections,
        gallery_api::create_collection,
        gallery_api::get_collection,
        gallery_api::delete_collection,
        gallery_api::list_people_default,
        gallery_api::list_people,
        gallery_api::get_person,
        gallery_api::enroll_default,
        gallery_api::enroll,
        gallery_api::rename_person,
        gallery_api::delete_person_default,
        gallery_api::delete_person,
        gallery_api::delete_face,
        gallery_api::thumbnail,
        gallery_api::export,
        keys_api::list,
        keys_api::create,
        keys_api::revoke,
        history::handler,
        console::root,
        console::index,
        console::asset,
        console::to_index,
        console::frames,
        console::frame,
        healthz,
        metrics,
        openapi_json,
    ),
    modifiers(&Security),
    tags(
        (name = "recognition", description = "Recognize, detect and verify faces"),
        (name = "gallery", description = "Collections, people and their enrolled faces"),
        (name = "keys", description = "API keys"),
        (name = "stack", description = "Health, status and metrics"),
        (name = "video", description = "The video path"),
        (name = "console", description = "The web console"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme("api_key", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))));
        components.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
    }
}

/// Liveness: `ok`.
#[utoipa::path(get, path = "/healthz", tag = "stack", responses((status = 200, description = "Alive", body = String, content_type = "text/plain")))]
#[allow(dead_code)]
fn healthz() {}

/// Prometheus metrics of this web tier.
#[utoipa::path(get, path = "/metrics", tag = "stack",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")),
    security(("api_key" = [])))]
#[allow(dead_code)]
fn metrics() {}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "stack", responses((status = 200, description = "OpenAPI 3.1", body = Object)))]
#[allow(dead_code)]
fn openapi_json() {}

/// The whole document: the web tier's routes and those merged in by the
/// composition root (e.g. the video path's).
pub fn document(extra: &[utoipa::openapi::OpenApi]) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    for e in extra {
        doc.merge(e.clone());
    }
    doc
}

/// `GET /openapi.json`.
pub(crate) async fn serve(State(state): State<WebState>) -> Json<utoipa::openapi::OpenApi> {
    Json(document(&state.api_docs))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every `.route("<path>", <method>(...)...)` of the router's source
    /// (`mod.rs` and the routers it merges), as (METHOD, path).
    fn routes_in_source() -> BTreeSet<(String, String)> {
        let source = [include_str!("mod.rs"), include_str!("console.rs")].concat();
        let mut out = BTreeSet::new();
        for chunk in source.split(".route(").skip(1) {
            let Some(path) = chunk.trim_start().strip_prefix('"').and_then(|r| r.split('"').next()) else { continue };
            // The handlers of this route: up to the call's closing paren.
            let mut depth = 1;
            let mut end = chunk.len();
            for (i, ch) in chunk.char_indices() {
                match ch {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            end = i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            for method in ["get", "post", "put", "patch", "delete"] {
                let call = format!("{method}(");
                let hit = chunk[..end].match_indices(&call).any(|(i, _)| i == 0 || !chunk.as_bytes()[i - 1].is_ascii_alphanumeric() && chunk.as_bytes()[i - 1] != b'_');
                if hit {
                    out.insert((method.to_uppercase(), path.to_string()));
                }
            }
        }
        out
    }

    fn documented(doc: &serde_json::Value) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
        out
    }

    #[test]
    fn every_route_is_documented() {
        let routes = routes_in_source();
        assert!(routes.len() >= 25, "the source scan found too few routes: {routes:?}");
        let doc = serde_json::to_value(document(&[])).unwrap();
        let docs = documented(&doc);
        let missing: Vec<_> = routes.difference(&docs).collect();
        assert!(missing.is_empty(), "routes missing from the OpenAPI document: {missing:?}");
    }

    #[test]
    fn the_document_is_openapi_3_1_and_self_consistent() {
        let doc = serde_json::to_value(document(&[])).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        // Every $ref points at a component that exists.
        fn refs(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, x) in m {
                        if k == "$ref" {
                            out.push(x.as_str().unwrap().to_string());
                        } else {
                            refs(x, out);
                        }
                    }
                }
                serde_json::Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(!all.is_empty());
        for r in all {
            let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("unexpected $ref {r}"));
            assert!(schemas.contains_key(name), "dangling $ref {r}");
        }
        // Every operation answers something and has a summary.
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path} has no responses");
                assert!(op["summary"].is_string() || op["description"].is_string(), "{method} {path} is undocumented");
            }
        }
        // Written for the spec validator that scripts/test runs.
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
        if target.is_dir() {
            std::fs::write(target.join("openapi.json"), serde_json::to_string_pretty(&doc).unwrap()).unwrap();
        }
    }
}
