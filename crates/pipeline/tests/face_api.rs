//! The face API through `build_router(..).oneshot(..)`: collections and
//! their isolation, people and faces, detect, verify, search options,
//! export, collection-limited keys, JSON errors, batched workers.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use common::*;
use facefleet_pipeline::keys::{self, NewKey, Scope};
use facefleet_pipeline::web::{build_router, WebConfig, WebState};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// A router over in-memory adapters with one in-process worker (fake
/// engine) and the response dispatcher running.
struct Api {
    app: Router,
    dep: facefleet_pipeline::Deployment,
    keys: Arc<facefleet_pipeline::keys::KeyRing>,
    _stop: tokio_util::sync::DropGuard,
}

async fn api() -> Api {
    let (dep, _store, _queue) = memory_deployment().await;
    let engine = Arc::new(FakeEngine::default());
    let (worker_stop, _) = spawn_worker(&dep, engine.clone());
    let factory: facefleet_pipeline::web::EngineFactory = {
        let e = engine.clone();
        Arc::new(move || Ok(e.clone() as _))
    };
    let state = WebState::new(dep.clone(), WebConfig::default(), Some(factory));
    let keys = state.keys();
    keys.ensure_loaded().await.unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(state.dispatcher().run(stop.child_token()));
    let s = stop.clone();
    tokio::spawn(async move {
        s.cancelled().await;
        worker_stop.cancel();
    });
    Api { app: build_router(state, vec![]), dep, keys, _stop: stop.drop_guard() }
}

fn multipart(parts: &[(&str, &str, Vec<u8>)]) -> (String, Vec<u8>) {
    let boundary = "facefleet-test-boundary";
    let mut body = Vec::new();
    for (field, file, bytes) in parts {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{file}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

impl Api {
    async fn send(&self, req: Request<Body>) -> (StatusCode, Value) {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let ct = resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = if ct.starts_with("application/json") {
            serde_json::from_slice(&bytes).unwrap()
        } else {
            json!({ "raw": String::from_utf8_lossy(&bytes), "content_type": ct })
        };
        (status, v)
    }

    async fn call(&self, method: Method, uri: &str, key: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(k) = key {
            b = b.header("x-api-key", k);
        }
        let req = match body {
            Some(v) => b.header(header::CONTENT_TYPE, "application/json").body(Body::from(v.to_string())).unwrap(),
            None => b.body(Body::empty()).unwrap(),
        };
        self.send(req).await
    }

    async fn upload(&self, uri: &str, key: Option<&str>, parts: &[(&str, &str, Vec<u8>)]) -> (StatusCode, Value) {
        let (ct, body) = multipart(parts);
        let mut b = Request::builder().method(Method::POST).uri(uri).header(header::CONTENT_TYPE, ct);
        if let Some(k) = key {
            b = b.header("x-api-key", k);
        }
        self.send(b.body(Body::from(body)).unwrap()).await
    }

    async fn upload_once(&self, uri: &str, idempotency_key: &str, parts: &[(&str, &str, Vec<u8>)]) -> (StatusCode, Value) {
        let (ct, body) = multipart(parts);
        let req = Request::builder().method(Method::POST).uri(uri).header(header::CONTENT_TYPE, ct).header("idempotency-key", idempotency_key);
        self.send(req.body(Body::from(body)).unwrap()).await
    }

    async fn enroll(&self, collection: &str, name: &str, red: u8) -> (StatusCode, Value) {
        self.upload(&format!("/v1/collections/{collection}/people/{name}/faces"), None, &[("image", "p.png", png(red, 16, 16))]).await
    }

    async fn recognize(&self, collection: &str, red: u8) -> (StatusCode, Value) {
        self.upload(&format!("/v1/collections/{collection}/recognize"), None, &[("image", "q.png", png(red, 16, 16))]).await
    }

    /// Recognizes until the answer is `name`: workers see gallery changes
    /// at their next refresh (100 ms in tests), not at once.
    async fn recognized_as(&self, collection: &str, red: u8, name: &str) -> bool {
        for _ in 0..100 {
            let (_, v) = self.recognize(collection, red).await;
            if v["name"] == name {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        false
    }
}

fn assert_json_error(status: StatusCode, v: &Value, want: StatusCode) {
    assert_eq!(status, want, "{v}");
    assert!(v["error"]["code"].is_string() && v["error"]["message"].is_string(), "not a JSON error: {v}");
}

#[tokio::test]
async fn collections_are_created_listed_and_deleted() {
    let api = api().await;
    let (s, v) = api.call(Method::POST, "/v1/collections", None, Some(json!({"name": "tenant-a"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = api.call(Method::POST, "/v1/collections", None, Some(json!({"name": "tenant-a"}))).await;
    assert_json_error(s, &v, StatusCode::CONFLICT);
    let (s, v) = api.call(Method::POST, "/v1/collections", None, Some(json!({"name": "Bad Name"}))).await;
    assert_json_error(s, &v, StatusCode::BAD_REQUEST);
    let (s, v) = api.call(Method::POST, "/v1/collections", None, Some(json!({"nom": "x"}))).await;
    assert_json_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY);

    assert_eq!(api.enroll("tenant-a", "Paul", 7).await.0, StatusCode::CREATED);
    let (s, v) = api.call(Method::GET, "/v1/collections", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let names: Vec<&str> = v["collections"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"default") && names.contains(&"tenant-a"), "{v}");
    let (_, v) = api.call(Method::GET, "/v1/collections/tenant-a", None, None).await;
    assert_eq!((v["people"].as_u64(), v["faces"].as_u64()), (Some(1), Some(1)), "{v}");

    let (s, v) = api.call(Method::DELETE, "/v1/collections/tenant-a", None, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = api.call(Method::DELETE, "/v1/collections/tenant-a", None, None).await;
    assert_json_error(s, &v, StatusCode::NOT_FOUND);
    let (s, v) = api.recognize("tenant-a", 7).await;
    assert_json_error(s, &v, StatusCode::NOT_FOUND);
    let (s, v) = api.enroll("nowhere", "Paul", 7).await;
    assert_json_error(s, &v, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_person_enrolled_in_one_collection_is_never_answered_in_another() {
    let api = api().await;
    for c in ["a", "b"] {
        assert_eq!(api.call(Method::POST, "/v1/collections", None, Some(json!({"name": c}))).await.0, StatusCode::CREATED);
    }
    assert_eq!(api.enroll("a", "Paul", 7).await.0, StatusCode::CREATED);
    assert_eq!(api.enroll("b", "Zoe", 9).await.0, StatusCode::CREATED);

    let (s, v) = api.recognize("a", 7).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["name"], "Paul");
    assert_eq!(v["collection"], "a");
    for (c, red) in [("b", 7), ("default", 7), ("a", 9), ("default", 9)] {
        let (s, v) = api.recognize(c, red).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["name"], "Unknown", "red {red} in {c}: {v}");
        let candidates = v["faces"][0]["candidates"].as_array().cloned().unwrap_or_default();
        assert!(candidates.iter().all(|x| x["similarity"].as_f64().unwrap() < 0.5), "{v}");
    }
    // The course route and /v1/people are the default collection's.
    let (s, v) = api.upload("/", None, &[("inputFile", "t.png", png(7, 16, 16))]).await;
    assert_eq!((s, v["raw"].as_str()), (StatusCode::OK, Some("t:Unknown")), "{v}");
    let (_, v) = api.call(Method::GET, "/v1/people", None, None).await;
    assert_eq!(v["people"], json!([]), "{v}");
}

#[tokio::test]
async fn people_faces_rename_thumbnails_and_export() {
    let api = api().await;
    let (s, v) = api
        .upload("/v1/people/Ann/faces", None, &[("image", "1.png", png(3, 16, 16)), ("image", "2.png", png(3, 20, 20))])
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!((v["added"].as_u64(), v["faces"].as_u64()), (Some(2), Some(2)), "{v}");
    let (s, v) = api.upload("/v1/people/Ann/faces", None, &[("image", "none.png", png(0, 16, 16))]).await;
    assert_json_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY);

    let (s, person) = api.call(Method::GET, "/v1/collections/default/people/Ann", None, None).await;
    assert_eq!(s, StatusCode::OK, "{person}");
    let faces = person["faces"].as_array().unwrap();
    assert_eq!(faces.len(), 2);
    let thumb = faces[0]["thumbnail"].as_str().unwrap();
    let (s, v) = api.call(Method::GET, thumb, None, None).await;
    assert_eq!((s, v["content_type"].as_str()), (StatusCode::OK, Some("image/jpeg")), "{v}");

    let (s, v) = api.call(Method::GET, "/v1/collections/default/embeddings", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["faces"].as_array().unwrap().len(), 2);
    assert_eq!(v["faces"][0]["model"], "fake");
    assert_eq!(v["faces"][0]["embedding"].as_array().unwrap().len(), FAKE_DIM);

    // Rename: conflicts and unknowns are refused.
    assert_eq!(api.enroll("default", "Bob", 4).await.0, StatusCode::CREATED);
    let (s, v) = api.call(Method::PATCH, "/v1/collections/default/people/Ann", None, Some(json!({"name": "Bob"}))).await;
    assert_json_error(s, &v, StatusCode::CONFLICT);
    let (s, v) = api.call(Method::PATCH, "/v1/collections/default/people/Nobody", None, Some(json!({"name": "X"}))).await;
    assert_json_error(s, &v, StatusCode::NOT_FOUND);
    let (s, v) = api.call(Method::PATCH, "/v1/collections/default/people/Ann", None, Some(json!({"name": "Anna"}))).await;
    assert_eq!((s, v["faces"].as_u64()), (StatusCode::OK, Some(2)), "{v}");
    assert!(api.recognized_as("default", 3, "Anna").await, "the rename never reached the workers");

    // One face, then the person.
    let id = faces[0]["id"].as_str().unwrap();
    let (s, _) = api.call(Method::DELETE, &format!("/v1/collections/default/faces/{id}"), None, None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = api.call(Method::DELETE, &format!("/v1/collections/default/faces/{id}"), None, None).await;
    assert_json_error(s, &v, StatusCode::NOT_FOUND);
    let (_, v) = api.call(Method::GET, "/v1/collections/default/people/Anna", None, None).await;
    assert_eq!(v["faces"].as_array().unwrap().len(), 1, "{v}");
    let (s, v) = api.call(Method::DELETE, "/v1/people/Anna", None, None).await;
    assert_eq!((s, v["removed"].as_u64()), (StatusCode::OK, Some(1)), "{v}");
    assert!(api.recognized_as("default", 3, "Unknown").await, "the removal never reached the workers");
}

#[tokio::test]
async fn one_person_one_name_and_bounded_enrollments() {
    let api = api().await;
    // `É` as one character and as `E` + U+0301: one person, stored composed.
    let (s, v) = api.enroll("default", "E%CC%81mile", 3).await;
    assert_eq!((s, v["name"].as_str()), (StatusCode::CREATED, Some("\u{C9}mile")), "{v}");
    let (s, v) = api.enroll("default", "%C3%89mile", 3).await;
    assert_eq!((s, v["faces"].as_u64()), (StatusCode::CREATED, Some(2)), "{v}");
    // Names that look like another person's are refused.
    for spoof in ["Paul%E2%81%A4", "Pa%CD%8Ful", "%E3%85%A4", "%E2%A0%80"] {
        let (s, v) = api.enroll("default", spoof, 4).await;
        assert_json_error(s, &v, StatusCode::BAD_REQUEST);
    }
    // At most MAX_ENROLL_PHOTOS photos per request.
    let many: Vec<(&str, &str, Vec<u8>)> = (0..=facefleet_pipeline::web::MAX_ENROLL_PHOTOS).map(|_| ("image", "p.png", png(5, 16, 16))).collect();
    let (s, v) = api.upload("/v1/people/Many/faces", None, &many).await;
    assert_json_error(s, &v, StatusCode::BAD_REQUEST);
    assert!(v["error"]["message"].as_str().unwrap().contains("at most 20"), "{v}");
    let (s, v) = api.upload("/v1/people/Many/faces", None, &many[1..]).await;
    assert_eq!((s, v["added"].as_u64()), (StatusCode::CREATED, Some(20)), "{v}");
}

#[tokio::test]
async fn an_enrollment_sent_again_with_its_idempotency_key_is_stored_once() {
    let api = api().await;
    let photos = [("image", "1.png", png(3, 16, 16)), ("image", "2.png", png(3, 20, 20))];
    let ids = |v: &Value| v["face_ids"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().to_string()).collect::<Vec<_>>();
    let (s, first) = api.upload_once("/v1/people/Ann/faces", "retry-1", &photos).await;
    assert_eq!((s, first["added"].as_u64(), first["faces"].as_u64()), (StatusCode::CREATED, Some(2), Some(2)), "{first}");
    // A retry after a lost answer: the same answer, nothing added twice.
    let (s, again) = api.upload_once("/v1/people/Ann/faces", "retry-1", &photos).await;
    assert_eq!((s, again["faces"].as_u64()), (StatusCode::CREATED, Some(2)), "{again}");
    assert_eq!(ids(&again), ids(&first));
    // The same key in the other route to the same collection and person: the same request.
    let (s, v) = api.upload_once("/v1/collections/default/people/Ann/faces", "retry-1", &photos).await;
    assert_eq!((s, ids(&v)), (StatusCode::CREATED, ids(&first)), "{v}");
    // Other photos, another person or another key: other faces.
    let (s, v) = api.upload_once("/v1/people/Ann/faces", "retry-1", &[("image", "3.png", png(3, 24, 24))]).await;
    assert_eq!((s, v["faces"].as_u64()), (StatusCode::CREATED, Some(3)), "{v}");
    let (s, v) = api.upload_once("/v1/people/Bob/faces", "retry-1", &photos).await;
    assert_eq!((s, v["faces"].as_u64()), (StatusCode::CREATED, Some(2)), "{v}");
    assert!(ids(&v).iter().all(|id| !ids(&first).contains(id)), "{v}");
    let (s, v) = api.upload_once("/v1/people/Ann/faces", "retry-2", &photos).await;
    assert_eq!((s, v["faces"].as_u64()), (StatusCode::CREATED, Some(5)), "{v}");
    // Without a key, sending twice enrolls twice, as before.
    for faces in [1, 2] {
        let (s, v) = api.upload("/v1/people/Cid/faces", None, &photos[..1]).await;
        assert_eq!((s, v["faces"].as_u64()), (StatusCode::CREATED, Some(faces)), "{v}");
    }
    // Sent several times at once: stored once, every send answers the same ids.
    let sends = (0..6).map(|_| api.upload_once("/v1/people/Dee/faces", "burst", &photos));
    let answers = futures::future::join_all(sends).await;
    for (s, v) in &answers {
        assert_eq!(*s, StatusCode::CREATED, "{v}");
        assert_eq!(ids(v), ids(&answers[0].1));
    }
    let (s, v) = api.call(Method::GET, "/v1/collections/default/people/Dee", None, None).await;
    assert_eq!((s, v["faces"].as_array().map(Vec::len)), (StatusCode::OK, Some(2)), "{v}");
    // A key that is not 1 to 255 visible ASCII characters is refused.
    for bad in ["two words", &"k".repeat(256), "tab\there"] {
        let (s, v) = api.upload_once("/v1/people/Ann/faces", bad, &photos).await;
        assert_json_error(s, &v, StatusCode::BAD_REQUEST);
        assert!(v["error"]["message"].as_str().unwrap().contains("Idempotency-Key"), "{v}");
    }
    let (_, v) = api.call(Method::GET, "/v1/collections/default/people/Ann", None, None).await;
    assert_eq!(v["faces"].as_array().map(Vec::len), Some(5), "{v}");
}

#[tokio::test]
async fn search_options_candidates_and_thresholds() {
    let api = api().await;
    for (name, red) in [("A", 1), ("B", 2), ("C", 3), ("D", 4)] {
        assert_eq!(api.enroll("default", name, red).await.0, StatusCode::CREATED);
    }
    let (s, v) = api.upload("/v1/recognize?limit=3&max_faces=5", None, &[("image", "q.png", png(2, 16, 16))]).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let c = v["faces"][0]["candidates"].as_array().unwrap();
    assert_eq!(c.len(), 3, "{v}");
    assert_eq!(c[0]["person"], "B");
    assert!(c.windows(2).all(|w| w[0]["similarity"].as_f64() >= w[1]["similarity"].as_f64()), "{v}");
    assert_eq!(v["faces"][0]["landmarks"].as_array().unwrap().len(), 5);
    assert!(v["took_ms"].is_u64());
    // A threshold above every similarity makes everyone Unknown.
    let (_, v) = api.upload("/v1/recognize?threshold=1", None, &[("image", "q.png", png(2, 16, 16))]).await;
    assert_eq!(v["name"], "B", "similarity 1 reaches threshold 1: {v}");
    let (_, v) = api.upload("/v1/recognize?threshold=0.99&limit=1", None, &[("image", "q.png", png(9, 16, 16))]).await;
    assert_eq!(v["name"], "Unknown", "{v}");
    for bad in ["threshold=2", "limit=0", "limit=51", "max_faces=0", "max_faces=1000", "limit=x"] {
        let (s, v) = api.upload(&format!("/v1/recognize?{bad}"), None, &[("image", "q.png", png(2, 16, 16))]).await;
        assert_json_error(s, &v, StatusCode::BAD_REQUEST);
    }
}

#[tokio::test]
async fn detect_and_verify() {
    let api = api().await;
    let (s, v) = api.upload("/v1/detect", None, &[("image", "q.png", png(5, 40, 30))]).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let f = &v["faces"][0];
    assert_eq!(f["name"], Value::Null);
    assert_eq!(f["size"].as_f64(), Some(30.0));
    assert!(f["score"].is_f64() && f["quality"]["sharpness"].is_f64() && f["box"]["x2"].is_f64(), "{v}");
    let (_, v) = api.upload("/v1/detect", None, &[("image", "q.png", png(0, 40, 30))]).await;
    assert_eq!(v["faces"], json!([]));

    let (s, v) = api.upload("/v1/verify", None, &[("a", "x.png", png(5, 16, 16)), ("b", "x.png", png(5, 24, 24))]).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!((v["same"].as_bool(), v["similarity"].as_f64()), (Some(true), Some(1.0)), "{v}");
    assert_eq!(v["threshold"].as_f64(), Some(0.5));
    assert_eq!(v["model"], "fake");
    let (_, v) = api.upload("/v1/verify", None, &[("a", "x.png", png(5, 16, 16)), ("b", "y.png", png(6, 16, 16))]).await;
    assert_eq!(v["same"].as_bool(), Some(false), "{v}");
    let (s, v) = api.upload("/v1/verify", None, &[("a", "x.png", png(5, 16, 16)), ("b", "y.png", png(0, 16, 16))]).await;
    assert_json_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(v["error"]["message"].as_str().unwrap().contains("no face"), "{v}");
    let (s, v) = api.upload("/v1/verify", None, &[("a", "x.png", png(5, 16, 16))]).await;
    assert_json_error(s, &v, StatusCode::BAD_REQUEST);
    let (s, v) = api.upload("/v1/verify", None, &[("a", "x.png", png(5, 16, 16)), ("b", "y.txt", b"not an image".to_vec())]).await;
    assert!(s.is_client_error(), "{s}");
    assert!(v["error"]["message"].as_str().unwrap().starts_with("field `b`: "), "which photo: {v}");

    // Each route's own query parameters: the threshold decides `same`.
    let different = [("a", "x.png", png(5, 16, 16)), ("b", "y.png", png(6, 16, 16))];
    let (s, v) = api.upload("/v1/verify?threshold=-1", None, &different).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!((v["same"].as_bool(), v["threshold"].as_f64()), (Some(true), Some(-1.0)), "{v}");
    for bad in ["threshold=2", "threshold=x"] {
        let (s, v) = api.upload(&format!("/v1/verify?{bad}"), None, &different).await;
        assert_json_error(s, &v, StatusCode::BAD_REQUEST);
    }
    for bad in ["max_faces=0", "max_faces=101"] {
        let (s, v) = api.upload(&format!("/v1/detect?{bad}"), None, &[("image", "q.png", png(5, 40, 30))]).await;
        assert_json_error(s, &v, StatusCode::BAD_REQUEST);
    }
    let (_, doc) = api.call(Method::GET, "/openapi.json", None, None).await;
    let names = |path: &str| -> Vec<String> {
        doc["paths"][path]["post"]["parameters"].as_array().into_iter().flatten().map(|p| p["name"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(names("/v1/detect"), ["max_faces"]);
    assert_eq!(names("/v1/verify"), ["threshold"]);
}

#[tokio::test]
async fn every_v1_error_is_json() {
    let api = api().await;
    let (s, v) = api.call(Method::GET, "/v1/nothing-here", None, None).await;
    assert_json_error(s, &v, StatusCode::NOT_FOUND);
    // Not multipart.
    let req = Request::builder().method(Method::POST).uri("/v1/detect").header(header::CONTENT_TYPE, "text/plain").body(Body::from("x")).unwrap();
    let (s, v) = api.send(req).await;
    assert_json_error(s, &v, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(v["error"]["message"].as_str().unwrap().contains("got Content-Type `text/plain`"), "{v}");
    let req = Request::builder().method(Method::POST).uri("/v1/people/Ann/faces").body(Body::empty()).unwrap();
    let (s, v) = api.send(req).await;
    assert_json_error(s, &v, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(v["error"]["message"].as_str().unwrap().contains("no Content-Type"), "{v}");
    // Multipart without a boundary: a malformed upload.
    let req = Request::builder().method(Method::POST).uri("/v1/detect").header(header::CONTENT_TYPE, "multipart/form-data").body(Body::from("x")).unwrap();
    let (s, v) = api.send(req).await;
    assert_json_error(s, &v, StatusCode::BAD_REQUEST);
    // Not JSON.
    let req = Request::builder().method(Method::POST).uri("/v1/collections").header(header::CONTENT_TYPE, "application/json").body(Body::from("{")).unwrap();
    let (s, v) = api.send(req).await;
    assert_json_error(s, &v, StatusCode::BAD_REQUEST);
    let (s, v) = api.call(Method::GET, "/v1/collections/UPPER/people", None, None).await;
    assert_json_error(s, &v, StatusCode::BAD_REQUEST);
    let (s, v) = api.call(Method::GET, "/v1/collections/default/people/Nobody", None, None).await;
    assert_json_error(s, &v, StatusCode::NOT_FOUND);
    // A known route with another method: JSON 405, still naming the methods.
    for (method, uri) in [(Method::PUT, "/v1/collections"), (Method::DELETE, "/v1/status"), (Method::GET, "/v1/recognize")] {
        let req = Request::builder().method(method).uri(uri).body(Body::empty()).unwrap();
        let resp = api.app.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED, "{uri}");
        assert!(resp.headers().contains_key(header::ALLOW), "{uri}");
        let v: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(v["error"]["code"], "method_not_allowed", "{v}");
    }
    // A path segment that is not UTF-8.
    let (s, v) = api.call(Method::GET, "/v1/collections/%ff", None, None).await;
    assert_json_error(s, &v, StatusCode::BAD_REQUEST);
    assert!(v["error"]["message"].as_str().unwrap().contains("`c`"), "{v}");
    // JSON of the wrong shape: said without the server's type names.
    for (uri, body) in [("/v1/collections", json!(null)), ("/v1/keys", json!({"scope": "admin", "rate_per_sec": -1}))] {
        let (s, v) = api.call(Method::POST, uri, None, Some(body)).await;
        assert!(s.is_client_error(), "{uri}: {s}");
        assert_json_error(s, &v, s);
        let message = v["error"]["message"].as_str().unwrap();
        for internal in ["struct", "NewCollection", "CreateKey", "u32"] {
            assert!(!message.contains(internal), "{uri}: {message}");
        }
    }
    // The document is served without a key.
    let (s, v) = api.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["paths"]["/v1/verify"]["post"].is_object(), "{v}");
}

#[tokio::test]
async fn keys_limited_to_collections() {
    let api = api().await;
    let store = api.dep.store.clone();
    let bucket = api.dep.names.gallery_bucket.clone();
    let (_, admin) = keys::create(store.as_ref(), &bucket, NewKey { name: "root".into(), scope: Scope::Admin, rate_per_sec: None, burst: None, collections: None }).await.unwrap();
    let limited = NewKey { name: "a".into(), scope: Scope::Admin, rate_per_sec: None, burst: None, collections: Some(vec!["a".into()]) };
    let (_, tenant) = keys::create(store.as_ref(), &bucket, limited).await.unwrap();
    let bad = NewKey { name: "x".into(), scope: Scope::Admin, rate_per_sec: None, burst: None, collections: Some(vec!["Not/Valid".into()]) };
    assert!(keys::create(store.as_ref(), &bucket, bad).await.is_err());
    // The web tier re-reads keys every 2 s; read them now.
    api.keys.refresh().await.unwrap();
    let (s, v) = api.call(Method::GET, "/v1/collections", None, None).await;
    assert_json_error(s, &v, StatusCode::UNAUTHORIZED);

    for c in ["a", "b"] {
        assert_eq!(api.call(Method::POST, "/v1/collections", Some(&admin), Some(json!({"name": c}))).await.0, StatusCode::CREATED);
    }
    let (s, v) = api.call(Method::POST, "/v1/collections", Some(&tenant), Some(json!({"name": "c"}))).await;
    assert_json_error(s, &v, StatusCode::FORBIDDEN);
    let (_, v) = api.call(Method::GET, "/v1/collections", Some(&tenant), None).await;
    let names: Vec<&str> = v["collections"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["a"], "{v}");
    let (s, v) = api.upload("/v1/collections/b/recognize", Some(&tenant), &[("image", "q.png", png(1, 8, 8))]).await;
    assert_json_error(s, &v, StatusCode::FORBIDDEN);
    let (s, v) = api.upload("/", Some(&tenant), &[("inputFile", "q.png", png(1, 8, 8))]).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = api.upload("/v1/collections/a/recognize", Some(&tenant), &[("image", "q.png", png(1, 8, 8))]).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // A limited key cannot mint an unlimited one.
    let (s, v) = api.call(Method::POST, "/v1/keys", Some(&tenant), Some(json!({"scope": "admin"}))).await;
    assert_json_error(s, &v, StatusCode::FORBIDDEN);
    let (s, v) = api.call(Method::POST, "/v1/keys", Some(&admin), Some(json!({"scope": "recognize", "collections": ["b"]}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["collections"], json!(["b"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_answers_each_request_of_a_batch_before_analysing_the_next() {
    use facefleet_pipeline::worker::{Handled, Worker, WorkerConfig};
    let (dep, _store, queue) = memory_deployment().await;
    enroll_direct(&dep, "Paul", 7).await;
    for i in 0..3u8 {
        let key = format!("r{i}/q.png");
        dep.store.put(&dep.names.in_bucket, &key, png(7, 8, 8).into()).await.unwrap();
        let body = serde_json::to_string(&facefleet_pipeline::protocol::Request::new(format!("r{i}"), key, facefleet_pipeline::protocol::Mode::Name)).unwrap();
        dep.queue.send(&dep.names.req_queue, &body).await.unwrap();
    }
    let engine = Arc::new(FakeEngine::default());
    let (release, held) = std::sync::mpsc::channel();
    *engine.hold_second_batch.lock().unwrap() = Some(held);
    // The default group is the engine's preferred batch: one image (CPU).
    let w = Arc::new(Worker::new(dep.clone(), engine.clone(), WorkerConfig { batch: 10, ..test_worker_config() }));
    let mut messages = Vec::new();
    while messages.len() < 3 {
        messages.extend(dep.queue.receive(&dep.names.req_queue, 10, std::time::Duration::from_millis(100), None).await.unwrap());
    }
    let handling = tokio::spawn({
        let w = w.clone();
        async move { w.handle_batch(messages).await }
    });
    // The second image's analysis waits until the first answer is out: it
    // only comes if answers do not wait for the rest of their batch.
    while queue.bodies(&dep.names.resp_queue).is_empty() && !engine.hold_ran_out.load(Ordering::SeqCst) {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let _ = release.send(());
    let outcomes = handling.await.unwrap();
    assert!(!engine.hold_ran_out.load(Ordering::SeqCst), "the first answer waited for the rest of the batch");
    assert!(outcomes.iter().all(|o| *o == Handled::Answered), "{outcomes:?}");
    assert_eq!(engine.batches.load(Ordering::SeqCst), 3);
    assert_eq!(engine.largest_batch.load(Ordering::SeqCst), 1);
    assert_eq!(queue.bodies(&dep.names.resp_queue).len(), 3);
    assert!(queue.bodies(&dep.names.req_queue).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_renews_only_the_requests_still_in_hand() {
    use facefleet_pipeline::protocol::{Mode, Request as Job};
    use facefleet_pipeline::worker::{Handled, Worker, WorkerConfig};
    let (dep, _store, _queue) = memory_deployment().await;
    enroll_direct(&dep, "Paul", 7).await;
    // r0 fails transiently (left for a retry after a short back-off); r1 is
    // analysed next and held there.
    for (i, red) in [(0u8, 9u8), (1, 7)] {
        let key = format!("r{i}/q.png");
        dep.store.put(&dep.names.in_bucket, &key, png(red, 8, 8).into()).await.unwrap();
        let body = serde_json::to_string(&Job::new(format!("r{i}"), key, Mode::Name)).unwrap();
        dep.queue.send(&dep.names.req_queue, &body).await.unwrap();
    }
    let engine = Arc::new(FakeEngine { fail_red: Some(9), ..Default::default() });
    let (release, held) = std::sync::mpsc::channel();
    *engine.hold_second_batch.lock().unwrap() = Some(held);
    // A heartbeat well inside r0's 500 ms back-off.
    let config = WorkerConfig { batch: 10, heartbeat: std::time::Duration::from_millis(100), ..test_worker_config() };
    let w = Arc::new(Worker::new(dep.clone(), engine.clone(), config));
    let mut messages = Vec::new();
    while messages.len() < 2 {
        messages.extend(dep.queue.receive(&dep.names.req_queue, 10, std::time::Duration::from_millis(100), None).await.unwrap());
    }
    messages.sort_by_key(|m| !m.body.contains("\"r0\""));
    let handling = tokio::spawn({
        let w = w.clone();
        async move { w.handle_batch(messages).await }
    });
    // r0's back-off (500 ms) is shorter than the visibility the heartbeat
    // gives (2 s, renewed every 100 ms), so r0 comes back while r1 is still
    // held only if the heartbeat no longer renews it.
    let mut again = None;
    while again.is_none() && !engine.hold_ran_out.load(Ordering::SeqCst) {
        let got = dep.queue.receive(&dep.names.req_queue, 1, std::time::Duration::from_millis(100), Some(std::time::Duration::from_secs(30))).await.unwrap();
        again = got.into_iter().next();
    }
    let _ = release.send(());
    let outcomes = handling.await.unwrap();
    assert!(!engine.hold_ran_out.load(Ordering::SeqCst), "the retried request stayed hidden while the batch went on");
    assert!(again.unwrap().body.contains("\"r0\""));
    assert!(matches!(outcomes[0], Handled::Retry(_)), "{outcomes:?}");
    assert_eq!(outcomes[1], Handled::Answered);
}

#[tokio::test]
async fn a_worker_can_embed_a_whole_receive_in_one_batch() {
    use facefleet_pipeline::protocol::{Mode, Request as Job, Response};
    use facefleet_pipeline::worker::{Handled, Worker, WorkerConfig};
    let (dep, _store, queue) = memory_deployment().await;
    enroll_direct(&dep, "Paul", 7).await;
    for i in 0..10u8 {
        let key = format!("r{i}/q.png");
        dep.store.put(&dep.names.in_bucket, &key, png(if i % 2 == 0 { 7 } else { 8 }, 8, 8).into()).await.unwrap();
        let body = serde_json::to_string(&Job::new(format!("r{i}"), key, Mode::Name)).unwrap();
        dep.queue.send(&dep.names.req_queue, &body).await.unwrap();
    }
    let engine = Arc::new(FakeEngine::default());
    let w = Worker::new(dep.clone(), engine.clone(), WorkerConfig { batch: 10, embed_batch: Some(10), ..test_worker_config() });
    let mut messages = Vec::new();
    while messages.len() < 10 {
        let got = dep.queue.receive(&dep.names.req_queue, 10, std::time::Duration::from_millis(100), None).await.unwrap();
        messages.extend(got);
    }
    let outcomes = w.handle_batch(messages).await;
    assert!(outcomes.iter().all(|o| *o == Handled::Answered), "{outcomes:?}");
    assert_eq!(engine.batches.load(Ordering::SeqCst), 1);
    assert_eq!(engine.largest_batch.load(Ordering::SeqCst), 10);
    let mut answers: Vec<(String, String)> = queue
        .bodies(&dep.names.resp_queue)
        .iter()
        .map(|b| {
            let r: Response = serde_json::from_str(b).unwrap();
            let facefleet_pipeline::protocol::Outcome::Ok(rec) = r.result else { panic!("{b}") };
            (r.request_id, rec.name)
        })
        .collect();
    answers.sort();
    assert_eq!(answers.len(), 10);
    for (id, name) in answers {
        let i: u8 = id[1..].parse().unwrap();
        assert_eq!(name, if i.is_multiple_of(2) { "Paul" } else { "Unknown" }, "{id}");
    }
    assert!(queue.bodies(&dep.names.req_queue).is_empty());
}
