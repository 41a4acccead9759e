//! `POST /v1/videos` and `GET /v1/videos/{stem}`, through the axum router.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use bytes::Bytes;
use common::{create_buckets, fs_store, FakeRecognizer};
use facefleet_embedded::FsObjectStore;
use facefleet_ports::{ListPage, Names, ObjectMeta, ObjectStore, PortError, Result as PortResult};
use facefleet_video::http::{router, VideoApi};
use facefleet_video::redact::has_path;
use facefleet_video::{spawn_trigger, TriggerConfig};
use futures::channel::mpsc;
use tower::ServiceExt;

const BOUNDARY: &str = "XfacefleetX";

fn preamble(field: &str, file_name: &str) -> Vec<u8> {
    format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{file_name}\"\r\nContent-Type: video/mp4\r\n\r\n"
    )
    .into_bytes()
}

fn epilogue() -> Vec<u8> {
    format!("\r\n--{BOUNDARY}--\r\n").into_bytes()
}

fn post(body: Body) -> Request<Body> {
    Request::post("/v1/videos")
        .header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"))
        .body(body)
        .unwrap()
}

fn multipart(field: &str, file_name: &str, body: &[u8]) -> Request<Body> {
    post(Body::from([preamble(field, file_name), body.to_vec(), epilogue()].concat()))
}

type Chunks = mpsc::UnboundedSender<Result<Bytes, std::io::Error>>;

/// An upload whose body arrives as the test sends it: the preamble and
/// `first` now, the rest through the returned sender.
fn streaming(file_name: &str, first: &[u8]) -> (Chunks, Request<Body>) {
    let (tx, rx) = mpsc::unbounded();
    tx.unbounded_send(Ok(Bytes::from([preamble("video", file_name), first.to_vec()].concat()))).unwrap();
    (tx, post(Body::from_stream(rx)))
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

async fn send_full(app: &axum::Router, req: Request<Body>) -> (StatusCode, HeaderMap, String) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

async fn send(app: &axum::Router, req: Request<Body>) -> (StatusCode, String) {
    let (status, _, body) = send_full(app, req).await;
    (status, body)
}

/// The `(code, message)` of a JSON error body; panics on anything else.
fn error_of(body: &str) -> (String, String) {
    let json: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("error body is not JSON ({e}): {body:?}"));
    let code = json["error"]["code"].as_str().unwrap_or_else(|| panic!("no error.code: {body}"));
    let message = json["error"]["message"].as_str().unwrap_or_else(|| panic!("no error.message: {body}"));
    (code.to_string(), message.to_string())
}

/// Asserts a JSON error with `status` and `code`; returns the message.
fn expect_error(got: (StatusCode, String), status: StatusCode, code: &str) -> String {
    assert_eq!(got.0, status, "{}", got.1);
    let (c, message) = error_of(&got.1);
    assert_eq!(c, code, "{}", got.1);
    message
}

/// The start of an MP4 file: an `ftyp` box (24 bytes).
fn mp4_head() -> Vec<u8> {
    let mut v = 24u32.to_be_bytes().to_vec();
    v.extend_from_slice(b"ftypisom\0\0\x02\0isomiso2");
    v
}

/// Deterministic pseudo-random bytes.
fn random_bytes(n: usize, mut x: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn spool_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// A store with the video buckets, a spool folder, and the API over them.
struct Setup {
    _data: tempfile::TempDir,
    store: Arc<FsObjectStore>,
    names: Names,
    spool: tempfile::TempDir,
}

impl Setup {
    async fn new(prefix: &str) -> Self {
        let (data, store) = fs_store();
        let names = Names::new(prefix);
        create_buckets(&*store, &names).await;
        Self { _data: data, store, names, spool: tempfile::tempdir().unwrap() }
    }
    fn api(&self) -> VideoApi {
        VideoApi::new(self.store.clone(), self.names.clone()).with_spool_dir(self.spool.path())
    }
    async fn inputs(&self) -> u64 {
        self.store.count(&self.names.video_input, "").await.unwrap()
    }
}

#[tokio::test]
async fn upload_then_poll_the_result() {
    let Some(videos) = common::videos_dir_or_skip("upload_then_poll_the_result") else { return };
    let s = Setup::new("web").await;
    let (store, names) = (s.store.clone(), s.names.clone());
    let app = router(s.api());
    let video = std::fs::read(videos.join("test_7.mp4")).unwrap();

    let (status, body) = send(&app, multipart("video", "../../clips/my vidéo.mp4", &video)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["key"], "my vidéo.mp4");
    assert_eq!(json["stem"], "my vidéo");
    assert_eq!(json["status_url"], "/v1/videos/my%20vid%C3%A9o");
    assert_eq!(store.get(&names.video_input, "my vidéo.mp4").await.unwrap().len(), video.len());

    let (status, body) = send(&app, get("/v1/videos/my%20vid%C3%A9o")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("\"pending\""), "{body}");

    let trigger =
        spawn_trigger(store.clone(), names.clone(), Arc::new(FakeRecognizer::new()), TriggerConfig::default()).await.unwrap();
    common::wait_result(&*store, &names, "my vidéo", &trigger.stats()).await;
    trigger.shutdown().await;
    let (status, body) = send(&app, get("/v1/videos/my%20vid%C3%A9o")).await;
    assert_eq!(status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["status"], "done");
    assert_eq!(json["name"], "Unknown");
    assert_eq!(json["frames_done"], 10);
}

#[tokio::test]
async fn a_course_clip_is_accepted_and_stored() {
    let Some(videos) = common::videos_dir_or_skip("a_course_clip_is_accepted_and_stored") else { return };
    let s = Setup::new("clip").await;
    let app = router(s.api());
    let video = std::fs::read(videos.join("test_0.mp4")).unwrap();
    let (status, body) = send(&app, multipart("video", "test_0.mp4", &video)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((json["key"].as_str(), json["stem"].as_str()), (Some("test_0.mp4"), Some("test_0")));
    assert_eq!(json["status_url"], "/v1/videos/test_0");
    assert_eq!(s.store.get(&s.names.video_input, "test_0.mp4").await.unwrap(), Bytes::from(video));
    assert_eq!(spool_files(s.spool.path()), 0, "the spool file is removed once stored");
    let (status, body) = send(&app, get("/v1/videos/test_0")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("\"pending\""), "{body}");
}

#[tokio::test]
async fn random_bytes_are_refused_with_415_and_nothing_is_stored() {
    let s = Setup::new("junk").await;
    let app = router(s.api());
    for (name, body) in [
        ("noise.mp4", random_bytes(150_000, 0x2545_F491_4F6C_DD1D)),
        ("tiny.mp4", b"hello".to_vec()),
        ("notes.mp4", "just some text, not a video\n".repeat(100).into_bytes()),
        ("photo.mp4", [&[0xFF, 0xD8, 0xFF, 0xE0][..], &random_bytes(5000, 7)].concat()),
        ("sound.avi", [&b"RIFF\x24\x10\0\0WAVEfmt "[..], &random_bytes(5000, 9)].concat()),
    ] {
        let message =
            expect_error(send(&app, multipart("video", name, &body)).await, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
        assert!(message.contains("MP4") && message.contains("WebM") && message.contains("AVI"), "{message}");
    }
    assert_eq!(s.inputs().await, 0);
    assert_eq!(spool_files(s.spool.path()), 0);
}

#[tokio::test]
async fn webm_and_avi_headers_are_accepted() {
    let s = Setup::new("fmts").await;
    let app = router(s.api());
    let webm = [&[0x1A, 0x45, 0xDF, 0xA3, 0x9F, 0x42, 0x86, 0x81, 0x01, 0x42, 0xF7, 0x81][..], &random_bytes(3000, 3)].concat();
    let avi = [&b"RIFF\x24\x10\0\0AVI LIST"[..], &random_bytes(3000, 5)].concat();
    let mov = [&b"\0\0\0\x08wide\0\0\x10\0mdat"[..], &random_bytes(3000, 11)].concat();
    for (name, body) in [("a.webm", webm), ("b.avi", avi), ("c.mov", mov)] {
        let (status, text) = send(&app, multipart("video", name, &body)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{name}: {text}");
        assert_eq!(s.store.get(&s.names.video_input, name).await.unwrap().len(), body.len());
    }
}

#[tokio::test]
async fn over_the_size_limit_is_413_and_nothing_is_stored() {
    let s = Setup::new("big").await;
    let app = router(s.api().with_max_video_bytes(64 * 1024));
    // In one piece.
    let body = [mp4_head(), random_bytes(100_000, 1)].concat();
    let message = expect_error(send(&app, multipart("video", "big.mp4", &body)).await, StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    assert!(message.contains("65536 bytes"), "{message}");
    // Streamed: the first pieces are spooled, then the limit is crossed.
    let (tx, req) = streaming("streamed.mp4", &[mp4_head(), vec![7; 30_000]].concat());
    let spool = s.spool.path().to_path_buf();
    let feeder = tokio::spawn(async move {
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if tx.unbounded_send(Ok(Bytes::from(vec![7u8; 20_000]))).is_err() {
                return;
            }
        }
        let _ = tx.unbounded_send(Ok(Bytes::from(epilogue())));
    });
    expect_error(send(&app, req).await, StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    feeder.await.unwrap();
    // Exactly the limit is fine.
    let body = [mp4_head(), vec![1; 64 * 1024 - 24]].concat();
    let (status, text) = send(&app, multipart("video", "exact.mp4", &body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{text}");
    assert_eq!(s.store.list_all(&s.names.video_input, "").await.unwrap().len(), 1);
    assert!(s.store.head(&s.names.video_input, "exact.mp4").await.unwrap().is_some());
    assert_eq!(spool_files(&spool), 0, "partial spool files are removed");
}

#[tokio::test]
async fn bad_names_get_400() {
    let s = Setup::new("names").await;
    let app = router(s.api());
    let body = [mp4_head(), vec![0; 1000]].concat();
    let long = format!("{}.mp4", "a".repeat(296));
    assert_eq!(long.len(), 300);
    let message = expect_error(send(&app, multipart("video", &long, &body)).await, StatusCode::BAD_REQUEST, "bad_request");
    assert!(message.contains("300 bytes") && message.contains("limit is 200 bytes"), "{message}");
    // Multi-byte characters count in bytes: 120 'é' are 240 bytes.
    let wide = format!("{}.mp4", "é".repeat(120));
    let message = expect_error(send(&app, multipart("video", &wide, &body)).await, StatusCode::BAD_REQUEST, "bad_request");
    assert!(message.contains("244 bytes"), "{message}");
    for bad in ["..", ".hidden.mp4", "dir/"] {
        expect_error(send(&app, multipart("video", bad, &body)).await, StatusCode::BAD_REQUEST, "bad_request");
    }
    let message = expect_error(send(&app, get(&format!("/v1/videos/{}", "b".repeat(300)))).await, StatusCode::BAD_REQUEST, "bad_request");
    assert!(message.contains("limit is 200 bytes"), "{message}");
    expect_error(send(&app, get("/v1/videos/..")).await, StatusCode::BAD_REQUEST, "bad_request");
    expect_error(send(&app, get("/v1/videos/a%2Fb")).await, StatusCode::BAD_REQUEST, "bad_request");
    assert_eq!(s.inputs().await, 0);
}

#[tokio::test]
async fn malformed_uploads_get_json_400() {
    let s = Setup::new("webbad").await;
    let app = router(s.api());
    let video = [mp4_head(), vec![0; 100]].concat();
    let m = expect_error(send(&app, multipart("inputFile", "a.mp4", &video)).await, StatusCode::BAD_REQUEST, "bad_request");
    assert_eq!(m, "missing multipart field `video`");
    let m = expect_error(send(&app, multipart("video", "a.mp4", b"")).await, StatusCode::BAD_REQUEST, "bad_request");
    assert_eq!(m, "empty video file");
    let no_name = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"video\"\r\n\r\nxx\r\n--{BOUNDARY}--\r\n"
    );
    expect_error(send(&app, post(Body::from(no_name))).await, StatusCode::BAD_REQUEST, "bad_request");
    let plain = Request::post("/v1/videos").header("content-type", "text/plain").body(Body::from("hello")).unwrap();
    let (status, body) = send(&app, plain).await;
    assert!(status.is_client_error(), "{status} {body}");
    error_of(&body);
    // Cut short: the body ends inside the file.
    let cut = [preamble("video", "cut.mp4"), mp4_head(), vec![0; 100]].concat();
    expect_error(send(&app, post(Body::from(cut))).await, StatusCode::BAD_REQUEST, "bad_request");
    assert_eq!(s.inputs().await, 0);
    assert_eq!(spool_files(s.spool.path()), 0);
}

#[tokio::test]
async fn unknown_stem_is_404_and_an_uploaded_one_pending() {
    let s = Setup::new("stems").await;
    let app = router(s.api());
    let m = expect_error(send(&app, get("/v1/videos/never-uploaded")).await, StatusCode::NOT_FOUND, "not_found");
    assert!(m.contains("never-uploaded"), "{m}");
    // A video whose name only starts like the stem is another video.
    s.store.put(&s.names.video_input, "never-uploaded-2.mp4", Bytes::from_static(b"x")).await.unwrap();
    expect_error(send(&app, get("/v1/videos/never-uploaded")).await, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = send(&app, multipart("video", "clip.mov", &[mp4_head(), vec![0; 100]].concat())).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = send(&app, get("/v1/videos/clip")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((json["status"].as_str(), json["frames_done"].as_u64()), (Some("pending"), Some(0)));
    // A result without its input (deleted since) is still served.
    s.store.put(&s.names.video_output, "gone.txt", Bytes::from_static(b"Paul")).await.unwrap();
    let (status, body) = send(&app, get("/v1/videos/gone")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("\"done\"") && body.contains("Paul"), "{body}");
}

#[tokio::test]
async fn uploads_beyond_the_limit_get_503_with_retry_after() {
    let s = Setup::new("busy").await;
    let app = router(s.api().with_max_concurrent_uploads(2));
    let first = [mp4_head(), vec![5; 4000]].concat();
    let mut holders = Vec::new();
    for i in 0..2 {
        let (tx, req) = streaming(&format!("held{i}.mp4"), &first);
        let app = app.clone();
        holders.push((tx, tokio::spawn(async move { send(&app, req).await })));
    }
    // Both are past the sniff, spooling, and waiting for more.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while spool_files(s.spool.path()) < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the held uploads never started spooling");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let full = [mp4_head(), vec![0; 100]].concat();
    let (status, headers, body) = send_full(&app, multipart("video", "third.mp4", &full)).await;
    let m = expect_error((status, body), StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert!(m.contains("at most 2"), "{m}");
    assert_eq!(headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("5"));

    // One finishes: a slot frees up.
    let (tx, task) = holders.remove(0);
    tx.unbounded_send(Ok(Bytes::from(vec![5u8; 1000]))).unwrap();
    tx.unbounded_send(Ok(Bytes::from(epilogue()))).unwrap();
    drop(tx);
    let (status, body) = task.await.unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(s.store.get(&s.names.video_input, "held0.mp4").await.unwrap().len(), first.len() + 1000);
    let (status, body) = send(&app, multipart("video", "third.mp4", &full)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    // The other client goes away mid-file: nothing stored, spool file removed.
    let (tx, task) = holders.remove(0);
    drop(tx);
    let (status, body) = task.await.unwrap();
    assert!(status.is_client_error(), "{status} {body}");
    error_of(&body);
    assert!(s.store.head(&s.names.video_input, "held1.mp4").await.unwrap().is_none());
    assert_eq!(spool_files(s.spool.path()), 0);
}

#[tokio::test]
async fn a_stalled_upload_times_out_and_frees_its_slot() {
    let s = Setup::new("stall").await;
    let app = router(s.api().with_max_concurrent_uploads(1).with_chunk_timeout(Duration::from_millis(200)));
    let (tx, req) = streaming("slow.mp4", &[mp4_head(), vec![1; 4000]].concat());
    expect_error(send(&app, req).await, StatusCode::REQUEST_TIMEOUT, "timeout");
    drop(tx);
    let (status, body) = send(&app, multipart("video", "next.mp4", &[mp4_head(), vec![0; 100]].concat())).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert!(s.store.head(&s.names.video_input, "slow.mp4").await.unwrap().is_none());
    assert_eq!(spool_files(s.spool.path()), 0);
}

/// A store whose every call fails with `error`.
struct BrokenStore {
    error: PortError,
}

#[async_trait]
impl ObjectStore for BrokenStore {
    async fn create_bucket(&self, _: &str) -> PortResult<()> {
        Err(self.error.clone())
    }
    async fn bucket_exists(&self, _: &str) -> PortResult<bool> {
        Err(self.error.clone())
    }
    async fn put(&self, _: &str, _: &str, _: Bytes) -> PortResult<()> {
        Err(self.error.clone())
    }
    async fn put_if_absent(&self, _: &str, _: &str, _: Bytes) -> PortResult<bool> {
        Err(self.error.clone())
    }
    async fn get(&self, _: &str, _: &str) -> PortResult<Bytes> {
        Err(self.error.clone())
    }
    async fn head(&self, _: &str, _: &str) -> PortResult<Option<ObjectMeta>> {
        Err(self.error.clone())
    }
    async fn list(&self, _: &str, _: &str, _: Option<String>, _: usize) -> PortResult<ListPage> {
        Err(self.error.clone())
    }
    async fn delete(&self, _: &str, _: &str) -> PortResult<()> {
        Err(self.error.clone())
    }
    async fn put_file(&self, _: &str, _: &str, _: &Path) -> PortResult<()> {
        Err(self.error.clone())
    }
}

#[tokio::test]
async fn store_errors_are_generic_json_without_paths() {
    let spool = tempfile::tempdir().unwrap();
    let video = [mp4_head(), vec![0; 100]].concat();
    for (error, status, code) in [
        (
            PortError::Other("cannot write /home/me/facefleet/data/buckets/.tmp/1f2e.part: Permission denied".into()),
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
        ),
        (
            PortError::Unavailable("connect to http://10.1.2.3:9000/bucket refused (/etc/ssl/certs)".into()),
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
        ),
    ] {
        let transient = error.is_transient();
        let store = Arc::new(BrokenStore { error });
        let app = router(VideoApi::new(store, Names::new("broken")).with_spool_dir(spool.path()));
        for req in [multipart("video", "a.mp4", &video), get("/v1/videos/a")] {
            let (s, headers, body) = send_full(&app, req).await;
            let message = expect_error((s, body.clone()), status, code);
            for leak in ["/home", "/tmp", "/etc", "10.1.2.3", "Permission", "part", &*std::env::temp_dir().to_string_lossy()] {
                assert!(!body.contains(leak), "{body} leaks {leak:?}");
            }
            assert!(!has_path(&message), "{message}");
            assert_eq!(headers.contains_key("retry-after"), transient, "{body}");
        }
    }
    assert_eq!(spool_files(spool.path()), 0);
}

#[tokio::test]
async fn a_failed_video_reports_no_local_path() {
    let s = Setup::new("fail").await;
    let (store, names) = (s.store.clone(), s.names.clone());
    let app = router(s.api());
    // Passes the sniff (an ftyp box), but is no video: ffmpeg fails on it.
    let fake = [mp4_head(), "just some text, not a video\n".repeat(200).into_bytes()].concat();
    let (status, body) = send(&app, multipart("video", "fake.mp4", &fake)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let trigger =
        spawn_trigger(store.clone(), names.clone(), Arc::new(FakeRecognizer::new()), TriggerConfig::default()).await.unwrap();
    let (result, stored) = common::wait_result(&*store, &names, "fake", &trigger.stats()).await;
    trigger.shutdown().await;
    assert_eq!(result, None);
    let stored = stored.expect("an error is recorded");
    let (status, body) = send(&app, get("/v1/videos/fake")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["status"], "failed");
    let served = json["error"].as_str().expect("error text").to_string();
    assert!(served.contains("not a usable video") && served.contains("ffmpeg could not decode"), "{served}");
    let temp = std::env::temp_dir();
    for text in [&stored, &served] {
        assert!(!text.contains("/tmp") && !text.contains(&*temp.to_string_lossy()), "{text}");
        assert!(!text.contains("file:"), "{text}");
        assert!(!text.contains(" @ 0x"), "{text}");
        assert!(!has_path(text), "{text}");
        assert!(!text.split_whitespace().any(|w| w.trim_start_matches(['(', '\'', '"']).starts_with('/')), "{text}");
    }
}

#[tokio::test]
async fn a_re_upload_of_the_same_name_and_size_is_processed_again() {
    let Some(videos) = common::videos_dir_or_skip("a_re_upload_of_the_same_name_and_size_is_processed_again") else {
        return;
    };
    let s = Setup::new("reup").await;
    let (store, names) = (s.store.clone(), s.names.clone());
    let app = router(s.api());
    let video = std::fs::read(videos.join("test_7.mp4")).unwrap();
    // The enrollment below must reach the re-upload's frames.
    let config = TriggerConfig { gallery_refresh: Duration::ZERO, ..TriggerConfig::default() };
    let trigger = spawn_trigger(store.clone(), names.clone(), Arc::new(FakeRecognizer::new()), config).await.unwrap();
    let stats = trigger.stats();
    let (status, body) = send(&app, multipart("video", "test_7.mp4", &video)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (result, _) = common::wait_result(&*store, &names, "test_7", &stats).await;
    assert_eq!(result.as_deref(), Some("Unknown"));

    // Same name, same bytes; someone enrolled meanwhile: the new result
    // must say so, and the old one is never served for the new upload.
    common::enroll_fake(store.clone(), &names, "Ann").await;
    let (status, body) = send(&app, multipart("video", "test_7.mp4", &video)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    loop {
        let (status, body) = send(&app, get("/v1/videos/test_7")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_ne!(json["name"], "Unknown", "the old result was served for the re-upload: {body}");
        if json["status"] == "done" {
            assert_eq!(json["name"], "Ann", "{body}");
            break;
        }
        assert_eq!(json["status"], "pending", "{body}");
        assert!(stats.idle_scans() < 10, "the trigger went idle without processing the re-upload: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    trigger.shutdown().await;
    assert!(store.list_all(&names.video_trigger_state, "upload/").await.unwrap().is_empty(), "split requests left");
}

#[tokio::test]
async fn a_re_upload_while_the_trigger_is_down_is_processed_when_it_starts() {
    let Some(videos) = common::videos_dir_or_skip("a_re_upload_while_the_trigger_is_down_is_processed_when_it_starts")
    else {
        return;
    };
    let s = Setup::new("reup2").await;
    let (store, names) = (s.store.clone(), s.names.clone());
    let app = router(s.api());
    let video = std::fs::read(videos.join("test_7.mp4")).unwrap();
    let start = || spawn_trigger(store.clone(), names.clone(), Arc::new(FakeRecognizer::new()), TriggerConfig::default());
    let trigger = start().await.unwrap();
    assert_eq!(send(&app, multipart("video", "test_7.mp4", &video)).await.0, StatusCode::ACCEPTED);
    assert_eq!(common::wait_result(&*store, &names, "test_7", &trigger.stats()).await.0.as_deref(), Some("Unknown"));
    trigger.shutdown().await;

    common::enroll_fake(store.clone(), &names, "Ann").await;
    assert_eq!(send(&app, multipart("video", "test_7.mp4", &video)).await.0, StatusCode::ACCEPTED);
    let trigger = start().await.unwrap();
    let (result, error) = common::wait_result(&*store, &names, "test_7", &trigger.stats()).await;
    trigger.shutdown().await;
    assert_eq!((result.as_deref(), error), (Some("Ann"), None));
}
