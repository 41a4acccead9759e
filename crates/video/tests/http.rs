//! `POST /v1/videos` and `GET /v1/videos/{stem}`.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{create_buckets, fs_store, FakeRecognizer};
use facefleet_ports::{Names, ObjectStore};
use facefleet_video::http::{router, VideoApi};
use facefleet_video::{spawn_trigger, TriggerConfig};
use tower::ServiceExt;

const BOUNDARY: &str = "XfacefleetX";

fn multipart(field: &str, file_name: &str, body: &[u8]) -> Request<Body> {
    let mut data = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{file_name}\"\r\nContent-Type: video/mp4\r\n\r\n"
    )
    .into_bytes();
    data.extend_from_slice(body);
    data.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    Request::post("/v1/videos")
        .header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"))
        .body(Body::from(data))
        .unwrap()
}

async fn send(app: &axum::Router, req: Request<Body>) -> (StatusCode, String) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn upload_then_poll_the_result() {
    let (_dir, store) = fs_store();
    let names = Names::new("web");
    create_buckets(&*store, &names).await;
    let app = router(VideoApi::new(store.clone(), names.clone()));
    let video = std::fs::read(common::videos_dir().join("test_7.mp4")).unwrap();

    let (status, body) = send(&app, multipart("video", "../../clips/my vidéo.mp4", &video)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["key"], "my vidéo.mp4");
    assert_eq!(json["stem"], "my vidéo");
    assert_eq!(json["status_url"], "/v1/videos/my%20vid%C3%A9o");
    assert_eq!(store.get(&names.video_input, "my vidéo.mp4").await.unwrap().len(), video.len());

    let (status, body) = send(&app, Request::get("/v1/videos/my%20vid%C3%A9o").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("\"pending\""), "{body}");

    let trigger =
        spawn_trigger(store.clone(), names.clone(), Arc::new(FakeRecognizer::new()), TriggerConfig::default()).await.unwrap();
    common::wait_result(&*store, &names, "my vidéo", &trigger.stats()).await;
    trigger.shutdown().await;
    let (status, body) = send(&app, Request::get("/v1/videos/my%20vid%C3%A9o").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["status"], "done");
    assert_eq!(json["name"], "Unknown");
    assert_eq!(json["frames_done"], 10);
}

#[tokio::test]
async fn bad_uploads_get_clear_4xx() {
    let (_dir, store) = fs_store();
    let names = Names::new("webbad");
    create_buckets(&*store, &names).await;
    let mut api = VideoApi::new(store.clone(), names.clone());
    api.max_video_bytes = 1000;
    let app = router(api);
    let (s, b) = send(&app, multipart("inputFile", "a.mp4", b"xx")).await;
    assert_eq!((s, b.as_str()), (StatusCode::BAD_REQUEST, "missing multipart field `video`\n"));
    let (s, b) = send(&app, multipart("video", "a.mp4", b"")).await;
    assert_eq!((s, b.as_str()), (StatusCode::BAD_REQUEST, "empty video file\n"));
    let (s, b) = send(&app, multipart("video", "..", b"xx")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, b) = send(&app, multipart("video", "big.mp4", &[0u8; 5000])).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    let (s, _) = send(&app, Request::get("/v1/videos/..").body(Body::empty()).unwrap()).await;
    assert!(s.is_client_error());
    let (s, b) = send(
        &app,
        Request::post("/v1/videos").header("content-type", "text/plain").body(Body::from("hello")).unwrap(),
    )
    .await;
    assert!(s.is_client_error(), "{s} {b}");
    assert_eq!(store.count(&names.video_input, "").await.unwrap(), 0);
}
