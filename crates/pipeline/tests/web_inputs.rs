//! The web tier refuses bad input with a 4xx (or a clean 503 under
//! overload) and keeps serving everyone else.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use facefleet_pipeline::web::WebConfig;

/// A PNG whose header declares `w`×`h` pixels, with only the start of its
/// pixel data.
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = b"IHDR".to_vec();
    chunk.extend_from_slice(&w.to_be_bytes());
    chunk.extend_from_slice(&h.to_be_bytes());
    chunk.extend_from_slice(&[8, 2, 0, 0, 0]);
    out.extend_from_slice(&13u32.to_be_bytes());
    out.extend_from_slice(&chunk);
    out.extend_from_slice(&crc32(&chunk).to_be_bytes());
    // The start of a zlib stream (one stored block of zeros): a bomb's
    // pixels would follow; the header alone must get the file refused.
    let mut idat = b"IDAT".to_vec();
    idat.extend_from_slice(&[0x78, 0x01, 0x00, 0x10, 0x00, 0xef, 0xff]);
    idat.extend_from_slice(&[0u8; 16]);
    out.extend_from_slice(&((idat.len() - 4) as u32).to_be_bytes());
    out.extend_from_slice(&idat);
    out.extend_from_slice(&crc32(&idat).to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(b"IEND");
    out.extend_from_slice(&crc32(b"IEND").to_be_bytes());
    out
}

struct Stack {
    web: WebTier,
    dep: facefleet_pipeline::Deployment,
    store: Arc<MemStore>,
    client: reqwest::Client,
}

async fn stack(config: WebConfig) -> Stack {
    let (dep, store, _q) = memory_deployment().await;
    enroll_direct(&dep, "Paul", 7).await;
    spawn_worker(&dep, Arc::new(FakeEngine::default()));
    let web = start_web(dep.clone(), config).await;
    Stack { web, dep, store, client: reqwest::Client::new() }
}

impl Stack {
    async fn good_request_still_works(&self) {
        let (s, body) = post_file(&self.client, &format!("{}/", self.web.url), "inputFile", "ok_1.png", png(7, 16, 16)).await;
        assert_eq!((s, body.as_str()), (200, "ok_1:Paul"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn answers_the_course_contract() {
    let s = stack(WebConfig::default()).await;
    let (status, body) = post_file(&s.client, &format!("{}/", s.web.url), "inputFile", "test_00.jpg", jpeg(7, 32, 32)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "test_00:Paul");
    // Stored under `<request id>/<file name>`: unique per request.
    let keys = s.store.keys(&s.dep.names.in_bucket);
    assert!(keys.len() == 1 && keys[0].ends_with("/test_00.jpg"), "{keys:?}");
    assert_eq!(s.store.object(&s.dep.names.out_bucket, "test_00").as_deref(), Some(&b"Paul"[..]));
    let (status, body) = post_file(&s.client, &format!("{}/", s.web.url), "inputFile", "stranger.png", png(9, 16, 16)).await;
    assert_eq!((status, body.as_str()), (200, "stranger:Unknown"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refuses_bad_uploads_with_4xx_plain_messages() {
    let s = stack(WebConfig::default()).await;
    let url = format!("{}/", s.web.url);
    let c = &s.client;

    // No `inputFile` field.
    let (st, body) = post_file(c, &url, "file", "a.png", png(7, 8, 8)).await;
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("inputFile"), "{body}");
    // Not multipart at all.
    let r = c.post(&url).body("hello").send().await.unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    // Empty file.
    let (st, body) = post_file(c, &url, "inputFile", "empty.jpg", vec![]).await;
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("empty"), "{body}");
    // A text file, even named .jpg.
    let (st, body) = post_file(c, &url, "inputFile", "notes.jpg", b"just some text\n".to_vec()).await;
    assert_eq!(st, 415, "{body}");
    assert!(body.contains("not an image"), "{body}");
    // A JPEG cut before its frame header.
    let j = jpeg(7, 64, 64);
    let (st, body) = post_file(c, &url, "inputFile", "cut.jpg", j[..20].to_vec()).await;
    assert_eq!(st, 422, "{body}");
    assert!(body.contains("corrupt or truncated"), "{body}");
    // A 30000x30000 PNG (decompression bomb), refused from its header.
    let (st, body) = post_file(c, &url, "inputFile", "bomb.png", png_header_only(30000, 30000)).await;
    assert_eq!(st, 422, "{body}");
    assert!(body.contains("30000x30000"), "{body}");
    // Nothing reached the buckets or the queue.
    assert!(s.store.keys(&s.dep.names.in_bucket).is_empty());
    // The web tier reads headers only: a JPEG truncated in its pixels is
    // answered by the worker that decodes it (what survives of it, or 422),
    // never a 5xx.
    let big = jpeg(7, 512, 512);
    let (st, body) = post_file(c, &url, "inputFile", "half.jpg", big[..big.len() / 2].to_vec()).await;
    assert!(st == 200 || st == 422, "{st}: {body}");
    s.good_request_still_works().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refuses_uploads_over_the_limit_with_413() {
    let s = stack(WebConfig { max_upload_bytes: 1024 * 1024, ..WebConfig::default() }).await;
    // 50 MB, far over the (configured) 1 MiB limit.
    let big = vec![0xffu8; 50 * 1024 * 1024];
    let (st, body) = post_file(&s.client, &format!("{}/", s.web.url), "inputFile", "big.jpg", big).await;
    assert_eq!(st, 413, "{body}");
    assert!(body.contains("too large"), "{body}");
    s.good_request_still_works().await;
}

/// Sends raw `head` and returns the first line of the answer.
async fn first_answer_line(addr: &str, head: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(2).any(|w| w == b"\r\n") {
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed without an answer: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).lines().next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_declared_oversized_body_is_refused_without_waiting_for_it() {
    // Deadlines far away: the answers below must not wait for them.
    let long = Duration::from_secs(3600);
    let s = stack(WebConfig { max_upload_bytes: 1024 * 1024, body_deadline: long, body_idle_timeout: long, ..WebConfig::default() }).await;
    let addr = s.web.url.trim_start_matches("http://").to_string();
    let head = |expect: &str| {
        format!("POST / HTTP/1.1\r\nhost: x\r\ncontent-type: multipart/form-data; boundary=b\r\ncontent-length: 20000000\r\n{expect}\r\n")
    };
    // Waiting for `100 Continue`: the 413 comes instead, and no body is asked for.
    assert!(first_answer_line(&addr, &head("expect: 100-continue\r\n")).await.starts_with("HTTP/1.1 413"));
    // Headers only, no body sent: the 413 comes once nothing arrives for a moment.
    assert!(first_answer_line(&addr, &head("")).await.starts_with("HTTP/1.1 413"));
    s.good_request_still_works().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sanitises_hostile_file_names() {
    let s = stack(WebConfig::default()).await;
    let url = format!("{}/", s.web.url);
    for (name, key, answer) in [
        ("../../../etc/evil.png", "evil.png", "evil:Paul"),
        ("sub/dir/pic.png", "pic.png", "pic:Paul"),
        ("été 北京.png", "été 北京.png", "été 北京:Paul"),
        ("..", "upload", "upload:Paul"),
    ] {
        let (st, body) = post_file(&s.client, &url, "inputFile", name, png(7, 8, 8)).await;
        assert_eq!((st, body.as_str()), (200, answer), "{name}");
        let keys = s.store.keys(&s.dep.names.in_bucket);
        assert!(keys.iter().any(|k| k.ends_with(&format!("/{key}"))), "{name} → {key}: {keys:?}");
    }
    // `<request id>/<clean name>`: exactly one folder level, never `..`.
    for k in s.store.keys(&s.dep.names.in_bucket) {
        assert!(k.matches('/').count() == 1 && !k.contains(".."), "{k}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sheds_load_cleanly_under_1000_concurrent_connections() {
    let s = stack(WebConfig { max_in_flight: 64, ..WebConfig::default() }).await;
    let url = format!("{}/", s.web.url);
    // Separate connections: one client each (no pooling between them).
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                let c = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
                post_file(&c, &url, "inputFile", &format!("c_{i}.png"), png(7, 8, 8)).await
            })
        })
        .collect();
    let (mut ok, mut shed) = (0, 0);
    for t in tasks {
        let (st, body) = t.await.unwrap();
        match st {
            200 => {
                assert!(body.ends_with(":Paul"), "{body}");
                ok += 1
            }
            503 => {
                assert!(body.contains("overloaded"), "{body}");
                shed += 1
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(ok + shed, 1000);
    assert!(ok > 0, "some requests must be served");
    s.good_request_still_works().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn times_out_with_504_and_the_result_still_lands() {
    let (dep, store, _q) = memory_deployment().await;
    enroll_direct(&dep, "Paul", 7).await;
    let web = start_web(dep.clone(), WebConfig { request_timeout: Duration::from_millis(300), ..WebConfig::default() }).await;
    let c = reqwest::Client::new();
    let (st, body) = post_file(&c, &format!("{}/", web.url), "inputFile", "late.png", png(7, 8, 8)).await;
    assert_eq!(st, 504, "{body}");
    assert!(body.contains("out-bucket") && body.contains("late"), "{body}");
    // A worker comes up later: the result lands in the output bucket.
    spawn_worker(&dep, Arc::new(FakeEngine::default()));
    for _ in 0..200 {
        if store.object(&dep.names.out_bucket, "late").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(store.object(&dep.names.out_bucket, "late").as_deref(), Some(&b"Paul"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn json_api_enrolls_lists_recognizes_and_deletes() {
    let (dep, _store, _q) = memory_deployment().await;
    spawn_worker(&dep, Arc::new(FakeEngine::default()));
    let web = start_web(dep.clone(), WebConfig::default()).await;
    let c = reqwest::Client::new();
    let form = reqwest::multipart::Form::new()
        .part("image", reqwest::multipart::Part::bytes(png(42, 8, 8)).file_name("a.png"))
        .part("image", reqwest::multipart::Part::bytes(png(42, 8, 8)).file_name("b.png"));
    let r = c.post(format!("{}/v1/people/Ann/faces", web.url)).multipart(form).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!((v["added"].as_u64(), v["faces"].as_u64()), (Some(2), Some(2)));
    // A photo without a face is refused, nothing is added.
    let form = reqwest::multipart::Form::new().part("image", reqwest::multipart::Part::bytes(png(0, 8, 8)).file_name("noface.png"));
    let r = c.post(format!("{}/v1/people/Bob/faces", web.url)).multipart(form).send().await.unwrap();
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("noface.png"));
    // Bad names.
    let form = reqwest::multipart::Form::new().part("image", reqwest::multipart::Part::bytes(png(3, 8, 8)).file_name("x.png"));
    let r = c.post(format!("{}/v1/people/%20bad/faces", web.url)).multipart(form).send().await.unwrap();
    assert_eq!(r.status(), 400);

    let v: serde_json::Value = c.get(format!("{}/v1/people", web.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["people"], serde_json::json!([{ "name": "Ann", "faces": 2 }]));

    let form = reqwest::multipart::Form::new().part("image", reqwest::multipart::Part::bytes(png(42, 8, 8)).file_name("q.png"));
    let r = c.post(format!("{}/v1/recognize", web.url)).multipart(form).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["name"], "Ann");
    assert_eq!(v["faces"][0]["name"], "Ann");
    assert!(v["faces"][0]["box"]["x2"].is_number());
    assert!(v["faces"][0]["similarity"].is_number());

    let st: serde_json::Value = c.get(format!("{}/v1/status", web.url)).send().await.unwrap().json().await.unwrap();
    for f in ["request_queue_depth", "response_queue_depth", "running_instances", "input_objects", "output_objects"] {
        assert!(st[f].is_u64(), "{f}: {st}");
    }
    assert_eq!(st["input_objects"], 1);
    assert_eq!(st["output_objects"], 1);
    // Without counting the buckets (for pollers): the live numbers only.
    let live: serde_json::Value = c.get(format!("{}/v1/status?objects=false", web.url)).send().await.unwrap().json().await.unwrap();
    for f in ["request_queue_depth", "response_queue_depth", "running_instances"] {
        assert_eq!(live[f], st[f], "{f}: {live}");
    }
    assert!(live.get("input_objects").is_none() && live.get("output_objects").is_none(), "{live}");
    let r = c.get(format!("{}/v1/status?objects=maybe", web.url)).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.json::<serde_json::Value>().await.unwrap()["error"]["message"].as_str().unwrap_or_default().contains("objects"));

    let r = c.delete(format!("{}/v1/people/Ann", web.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c.delete(format!("{}/v1/people/Ann", web.url)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    // The worker picks the change up without a restart.
    let mut last = String::new();
    for _ in 0..100 {
        let (_, body) = post_file(&c, &format!("{}/", web.url), "inputFile", "q.png", png(42, 8, 8)).await;
        last = body;
        if last == "q:Unknown" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last, "q:Unknown");

    assert_eq!(c.get(format!("{}/healthz", web.url)).send().await.unwrap().status(), 200);
    let m = c.get(format!("{}/metrics", web.url)).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("facefleet_requests_sent_total"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_upload_budget_is_named_in_the_503() {
    let s = stack(WebConfig { upload_budget_bytes: 8 * 1024, ..WebConfig::default() }).await;
    // One client holds 5 of the 8 KiB: headers and most of a body it never finishes.
    use tokio::io::AsyncWriteExt;
    let addr = s.web.url.trim_start_matches("http://").to_string();
    let mut holder = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = "POST / HTTP/1.1\r\nhost: x\r\ncontent-type: multipart/form-data; boundary=b\r\ncontent-length: 6000\r\n\r\n";
    holder.write_all(head.as_bytes()).await.unwrap();
    holder.write_all(&[b'x'; 5000]).await.unwrap();
    // Another 5 KiB upload does not fit beside it (once the server has read
    // the holder's bytes; until then it may still be served).
    let url = format!("{}/", s.web.url);
    let mut answer = (0, String::new());
    for _ in 0..200 {
        answer = post_file(&s.client, &url, "inputFile", "b.png", vec![0u8; 5000]).await;
        if answer.0 == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = answer;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("too many uploads are being received at once"), "{body}");
    drop(holder);
}
