//! The probes of a hostile but bounded client, over real HTTP: answers
//! never cross between clients, API keys and scopes, slow clients, limits,
//! clean errors.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use facefleet_pipeline::keys::{self, NewKey, Scope};
use facefleet_pipeline::web::WebConfig;
use facefleet_pipeline::Deployment;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A deployment with people `P1`..`Pn` (the fake engine's identity is the
/// red channel: `Pi` has red `i`) and `workers` fake workers.
async fn crowd(n: u8, workers: usize) -> (Deployment, Arc<MemStore>) {
    let (dep, store, _q) = memory_deployment().await;
    for i in 1..=n {
        enroll_direct(&dep, &format!("P{i}"), i).await;
    }
    for _ in 0..workers {
        spawn_worker(&dep, Arc::new(FakeEngine { delay: Duration::from_millis(5), ..FakeEngine::default() }));
    }
    (dep, store)
}

/// Posts a photo of `Pi` as multipart `inputFile`, with or without a file
/// name.
async fn post_photo(c: &reqwest::Client, url: &str, i: u8, file_name: Option<&str>) -> (u16, String) {
    let mut part = reqwest::multipart::Part::bytes(png(i, 8, 8));
    if let Some(n) = file_name {
        part = part.file_name(n.to_string());
    }
    let form = reqwest::multipart::Form::new().part("inputFile", part);
    let r = c.post(format!("{url}/")).multipart(form).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Sends 32 photos of 32 different people at once, all with the same file
/// name (or none), alternating over `urls`; returns how many answers named
/// someone else.
async fn same_name_burst(urls: &[String], file_name: Option<&'static str>) -> usize {
    let c = reqwest::Client::new();
    let tasks: Vec<_> = (1..=32u8)
        .map(|i| {
            let (c, url) = (c.clone(), urls[i as usize % urls.len()].clone());
            tokio::spawn(async move { (i, post_photo(&c, &url, i, file_name).await) })
        })
        .collect();
    let stem = file_name.map_or("upload", |n| n.trim_end_matches(".jpg"));
    let mut wrong = 0;
    for t in tasks {
        let (i, (status, body)) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
        if body != format!("{stem}:P{i}") {
            eprintln!("request for P{i} got {body}");
            wrong += 1;
        }
    }
    wrong
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_uploads_with_one_file_name_get_their_own_answers() {
    let (dep, store) = crowd(32, 4).await;
    let web = start_web(dep.clone(), WebConfig::default()).await;
    let urls = vec![web.url.clone()];
    assert_eq!(same_name_burst(&urls, Some("same.jpg")).await, 0, "answers crossed between clients");
    assert_eq!(same_name_burst(&urls, None).await, 0, "answers crossed between clients (no file name)");
    // Every upload kept: 64 objects, each `<request id>/<file name>`.
    let keys = store.keys(&dep.names.in_bucket);
    assert_eq!(keys.len(), 64, "{keys:?}");
    assert!(keys.iter().all(|k| k.ends_with("/same.jpg") || k.ends_with("/upload")), "{keys:?}");
    // The course contract in the output bucket: `<stem>` = a name.
    assert!(store.object(&dep.names.out_bucket, "same").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_uploads_across_two_web_tiers_get_their_own_answers() {
    let (dep, _store) = crowd(32, 4).await;
    let a = start_web(dep.clone(), WebConfig::default()).await;
    let b = start_web(dep.clone(), WebConfig::default()).await;
    let urls = vec![a.url.clone(), b.url.clone()];
    assert_eq!(same_name_burst(&urls, Some("same.jpg")).await, 0);
    assert_eq!(same_name_burst(&urls, None).await, 0);
}

async fn status_of(r: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let r = r.send().await.unwrap();
    let s = r.status().as_u16();
    let text = r.text().await.unwrap();
    (s, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
}

/// Polls until `check` holds (key changes reach a web tier within its
/// refresh period); panics after a generous bound so a broken refresh
/// fails instead of hanging.
async fn eventually<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("condition never held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_keys_scopes_and_revocation() {
    let (dep, _store) = crowd(2, 1).await;
    let web = start_web_with(dep.clone(), WebConfig::default(), true, vec![]).await;
    let c = reqwest::Client::new();
    let u = web.url.clone();
    // No key exists: a loopback stack is open, and its status says so.
    assert_eq!(post_photo(&c, &u, 1, Some("a.png")).await, (200, "a:P1".to_string()));
    let (_, v) = status_of(c.get(format!("{u}/v1/status"))).await;
    assert!(v["stack"]["api keys"].as_str().is_some_and(|k| k.starts_with("open")), "{v}");

    let bucket = &dep.names.gallery_bucket;
    let new = |scope| NewKey { name: "t".into(), scope, rate_per_sec: None, burst: None, collections: None };
    let (_, recog) = keys::create(dep.store.as_ref(), bucket, new(Scope::Recognize)).await.unwrap();
    let (_, enroll) = keys::create(dep.store.as_ref(), bucket, new(Scope::Enroll)).await.unwrap();
    let (admin_rec, admin) = keys::create(dep.store.as_ref(), bucket, new(Scope::Admin)).await.unwrap();

    // Once a key exists, every route but /healthz needs one.
    eventually(|| async { post_photo(&c, &u, 1, Some("a.png")).await.0 == 401 }).await;
    let (s, v) = status_of(c.get(format!("{u}/v1/status"))).await;
    assert_eq!(s, 401);
    assert_eq!(v["error"]["code"], "unauthorized", "{v}");
    assert_eq!(c.get(format!("{u}/healthz")).send().await.unwrap().status(), 200);
    let (s, v) = status_of(c.get(format!("{u}/v1/status")).header("x-api-key", "ffk_000000000000_00")).await;
    assert_eq!((s, v["error"]["code"].as_str()), (401, Some("unauthorized")));
    // The status says what holds now, not what held at start.
    let (s, v) = status_of(c.get(format!("{u}/v1/status")).header("x-api-key", &admin)).await;
    assert_eq!(s, 200);
    assert!(v["stack"]["api keys"].as_str().is_some_and(|k| k.starts_with("required")), "{v}");

    // Scopes: recognize < enroll < admin.
    let form = || reqwest::multipart::Form::new().part("inputFile", reqwest::multipart::Part::bytes(png(2, 8, 8)).file_name("b.png"));
    let r = c.post(format!("{u}/")).header("x-api-key", &recog).multipart(form()).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.text().await.unwrap()), (200, "b:P2".to_string()));
    let r = c.post(format!("{u}/")).bearer_auth(&recog).multipart(form()).send().await.unwrap();
    assert_eq!(r.status(), 200, "Authorization: Bearer works too");
    let enroll_form = || reqwest::multipart::Form::new().part("image", reqwest::multipart::Part::bytes(png(9, 8, 8)).file_name("n.png"));
    let (s, v) = status_of(c.post(format!("{u}/v1/people/Nina/faces")).header("x-api-key", &recog).multipart(enroll_form())).await;
    assert_eq!((s, v["error"]["code"].as_str()), (403, Some("forbidden")), "{v}");
    let (s, _) = status_of(c.post(format!("{u}/v1/people/Nina/faces")).header("x-api-key", &enroll).multipart(enroll_form())).await;
    assert_eq!(s, 201);
    let (s, _) = status_of(c.delete(format!("{u}/v1/people/Nina")).header("x-api-key", &enroll)).await;
    assert_eq!(s, 403, "deletes need admin");
    let (s, _) = status_of(c.get(format!("{u}/v1/status")).header("x-api-key", &enroll)).await;
    assert_eq!(s, 403, "status needs admin");
    let (s, _) = status_of(c.get(format!("{u}/metrics")).header("x-api-key", &admin)).await;
    assert_eq!(s, 200);
    let (s, _) = status_of(c.delete(format!("{u}/v1/people/Nina")).header("x-api-key", &admin)).await;
    assert_eq!(s, 200);

    // Keys over HTTP (admin): list shows no secrets; revoke takes effect.
    let (s, v) = status_of(c.get(format!("{u}/v1/keys")).header("x-api-key", &admin)).await;
    assert_eq!(s, 200);
    assert_eq!(v.as_array().unwrap().len(), 3);
    assert!(!v.to_string().contains(&admin[20..]), "a listing must not show secrets");
    assert!(!v.to_string().contains("sha256"), "nor their hashes");
    let (s, v) = status_of(c.post(format!("{u}/v1/keys")).header("x-api-key", &admin).json(&serde_json::json!({"scope": "recognize", "name": "x"}))).await;
    assert_eq!(s, 201);
    let secret = v["secret"].as_str().unwrap().to_string();
    let r = c.post(format!("{u}/")).header("x-api-key", &secret).multipart(form()).send().await.unwrap();
    assert_eq!(r.status(), 200, "a key created over HTTP works at once on that web tier");
    let id = v["id"].as_str().unwrap();
    let (s, _) = status_of(c.delete(format!("{u}/v1/keys/{id}")).header("x-api-key", &admin)).await;
    assert_eq!(s, 200);
    let r = c.post(format!("{u}/")).header("x-api-key", &secret).multipart(form()).send().await.unwrap();
    assert_eq!(r.status(), 401, "a revoked key is refused");

    // A burst without a rate would be a key that looks limited but is not;
    // key names are shown to people: no hidden characters.
    for bad in [serde_json::json!({"scope": "recognize", "burst": 5}), serde_json::json!({"scope": "recognize", "name": "\u{202E}evil"})] {
        let (s, v) = status_of(c.post(format!("{u}/v1/keys")).header("x-api-key", &admin).json(&bad)).await;
        assert_eq!((s, v["error"]["code"].as_str()), (400, Some("bad_request")), "{bad}: {v}");
    }
    // HEAD needs what GET needs.
    let r = c.head(format!("{u}/v1/people")).header("x-api-key", &enroll).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c.head(format!("{u}/v1/status")).header("x-api-key", &enroll).send().await.unwrap();
    assert_eq!(r.status(), 403);
    // The last admin key for all collections cannot be revoked over HTTP:
    // that would lock every admin out (and open a loopback stack).
    let (s, v) = status_of(c.delete(format!("{u}/v1/keys/{}", admin_rec.id)).header("x-api-key", &admin)).await;
    assert_eq!(s, 409, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("last admin key"), "{v}");

    // Revoked out of band (the CLI): every web tier notices within its refresh.
    keys::revoke(dep.store.as_ref(), bucket, &admin_rec.id).await.unwrap();
    eventually(|| async { c.get(format!("{u}/v1/status")).header("x-api-key", &admin).send().await.unwrap().status() == 401 }).await;
    // Stored hashed: no secret appears in the store.
    for k in dep.store.list_all(bucket, keys::KEYS_PREFIX).await.unwrap() {
        let body = String::from_utf8(dep.store.get(bucket, &k.key).await.unwrap().to_vec()).unwrap();
        for secret in [&recog, &enroll, &admin] {
            assert!(!body.contains(&secret[17..]), "secret stored in clear: {body}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_non_loopback_policy_is_closed_without_keys_and_open_routes_stay_open() {
    let (dep, _store) = crowd(1, 1).await;
    // As `up --listen 0.0.0.0:... --open-route /` with no key would be after
    // --insecure-open is refused: closed, but the course route open.
    let web = start_web_with(dep.clone(), WebConfig::default(), false, vec!["/".into()]).await;
    let c = reqwest::Client::new();
    assert_eq!(post_photo(&c, &web.url, 1, Some("a.png")).await, (200, "a:P1".to_string()));
    let (s, v) = status_of(c.get(format!("{}/v1/people", web.url))).await;
    assert_eq!((s, v["error"]["code"].as_str()), (401, Some("unauthorized")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limits_answer_429_with_retry_after() {
    let (dep, _store) = crowd(1, 1).await;
    let (_, secret) = keys::create(
        dep.store.as_ref(),
        &dep.names.gallery_bucket,
        NewKey { name: "slow".into(), scope: Scope::Admin, rate_per_sec: Some(1), burst: Some(3), collections: None },
    )
    .await
    .unwrap();
    let web = start_web(dep.clone(), WebConfig::default()).await;
    let c = reqwest::Client::new();
    let mut limited = 0;
    for _ in 0..8 {
        let r = c.get(format!("{}/v1/people", web.url)).header("x-api-key", &secret).send().await.unwrap();
        if r.status() == 429 {
            let after: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!(after >= 1);
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["error"]["code"], "rate_limited");
            limited += 1;
        } else {
            assert_eq!(r.status(), 200);
        }
    }
    // A burst of 3 at 1/s: most of 8 back-to-back requests are refused.
    assert!(limited >= 4, "{limited} of 8 limited");
}

/// Opens a connection and sends the headers of a `POST /` with a body it
/// never sends.
async fn idle_upload(addr: &str) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = "POST / HTTP/1.1\r\nhost: x\r\ncontent-type: multipart/form-data; boundary=b\r\ncontent-length: 5000\r\n\r\n";
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_and_slow_clients_do_not_starve_real_ones() {
    let (dep, _store) = crowd(1, 1).await;
    let config = WebConfig { max_in_flight: 64, body_deadline: Duration::from_secs(2), body_idle_timeout: Duration::from_secs(2), ..WebConfig::default() };
    let web = start_web(dep.clone(), config).await;
    let addr = web.url.trim_start_matches("http://").to_string();
    // Far more idle uploads than in-flight slots.
    let mut idle = Vec::new();
    for _ in 0..600 {
        idle.push(idle_upload(&addr).await);
    }
    let c = reqwest::Client::new();
    assert_eq!(post_photo(&c, &web.url, 1, Some("real.png")).await, (200, "real:P1".to_string()));
    // The idle ones are answered 408 once their body deadline passes.
    let mut first = idle.remove(0);
    let mut buf = vec![0u8; 512];
    let n = first.read(&mut buf).await.unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    drop(idle);
    // A connection that never finishes its headers is closed.
    let mut half = tokio::net::TcpStream::connect(&addr).await.unwrap();
    half.write_all(b"POST / HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    let n = half.read(&mut buf).await.unwrap_or(0);
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || answer.starts_with("HTTP/1.1 408"), "{answer}");
}

/// Reads what the server sends until it closes the connection.
async fn read_until_closed(s: &mut tokio::net::TcpStream) -> Vec<u8> {
    let (mut got, mut buf) = (Vec::new(), [0u8; 4096]);
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_and_idle_connections_are_closed_but_waiting_ones_are_not() {
    let (dep, _store) = crowd(1, 1).await;
    let config = WebConfig { header_timeout: Duration::from_secs(1), max_connections: 4, ..WebConfig::default() };
    let web = start_web(dep, config).await;
    let addr = web.url.trim_start_matches("http://").to_string();
    // Every connection slot taken by a client that sends no request: nothing
    // at all, one byte (HTTP/1 or HTTP/2 cannot be told yet), the HTTP/2
    // preface alone, and a kept-alive connection after its one request.
    let connect = || tokio::net::TcpStream::connect(addr.clone());
    let mut silent = connect().await.unwrap();
    let mut one_byte = connect().await.unwrap();
    one_byte.write_all(b"P").await.unwrap();
    let mut preface = connect().await.unwrap();
    preface.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    let mut kept_alive = connect().await.unwrap();
    kept_alive.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    // The server closes each of them.
    for s in [&mut silent, &mut one_byte, &mut preface] {
        read_until_closed(s).await;
    }
    let answer = read_until_closed(&mut kept_alive).await;
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    // A client that shuts its sending side after its request still gets
    // the answer, and the request is carried out.
    let mut half_closed = connect().await.unwrap();
    let mut body = b"--b\r\ncontent-disposition: form-data; name=\"inputFile\"; filename=\"half.png\"\r\n\r\n".to_vec();
    body.extend(png(1, 8, 8));
    body.extend(b"\r\n--b--\r\n");
    let head = format!("POST / HTTP/1.1\r\nhost: x\r\ncontent-type: multipart/form-data; boundary=b\r\ncontent-length: {}\r\n\r\n", body.len());
    half_closed.write_all(head.as_bytes()).await.unwrap();
    half_closed.write_all(&body).await.unwrap();
    half_closed.shutdown().await.unwrap();
    let answer = String::from_utf8_lossy(&read_until_closed(&mut half_closed).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("half:P1"), "{answer}");
    // Their slots are free again.
    let c = reqwest::Client::new();
    assert_eq!(post_photo(&c, &web.url, 1, Some("real.png")).await, (200, "real:P1".to_string()));

    // A client waiting longer than that for its answer keeps its connection:
    // with no worker it gets the 504 of the request timeout, not a reset.
    let (dep, _store) = crowd(1, 0).await;
    let config = WebConfig { header_timeout: Duration::from_secs(1), request_timeout: Duration::from_secs(3), ..WebConfig::default() };
    let web = start_web(dep, config).await;
    let (status, _) = post_photo(&c, &web.url, 1, Some("slow.png")).await;
    assert_eq!(status, 504);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn huge_declared_images_are_checked_from_the_header() {
    let (dep, store) = crowd(1, 1).await;
    let web = start_web(dep.clone(), WebConfig::default()).await;
    let c = reqwest::Client::new();
    // A 9000x9000 PNG of zeros is tiny on the wire; the header alone
    // refuses it, nothing is decoded or stored.
    let img = image::GrayImage::new(9000, 9000);
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
    assert!(bytes.len() < 1_000_000, "{}", bytes.len());
    let (s, body) = post_file(&c, &format!("{}/", web.url), "inputFile", "bomb.png", bytes).await;
    assert_eq!(s, 422, "{body}");
    assert!(body.contains("9000x9000"), "{body}");
    assert!(store.keys(&dep.names.in_bucket).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_decompression_bombs_at_once_are_all_answered() {
    // 6000x6000 PNGs of zeros (36 Mpx, under the 40 Mpx limit, about 100 KB
    // each): the web tier checks their headers only and never decodes them;
    // the workers decode one at a time each.
    let (dep, _store) = crowd(1, 2).await;
    let web = start_web(dep.clone(), WebConfig::default()).await;
    let img = image::GrayImage::new(6000, 6000);
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
    let c = reqwest::Client::new();
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let (c, u, b) = (c.clone(), web.url.clone(), bytes.clone());
            tokio::spawn(async move { post_file(&c, &format!("{u}/"), "inputFile", &format!("bomb{i}.png"), b).await })
        })
        .collect();
    for t in tasks {
        let (s, body) = t.await.unwrap();
        // The fake engine finds no face in an all-zero image.
        assert_eq!((s, body.ends_with(":NoFace")), (200, true), "{s}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn errors_are_clear_json_without_internals() {
    let (dep, _store) = crowd(1, 1).await;
    let web = start_web(dep.clone(), WebConfig::default()).await;
    let c = reqwest::Client::new();
    let u = &web.url;
    // A person name of 64 emoji (256 bytes): 400, not 500.
    let name = "😀".repeat(64);
    let form = reqwest::multipart::Form::new().part("image", reqwest::multipart::Part::bytes(png(5, 8, 8)).file_name("e.png"));
    let (s, v) = status_of(c.post(format!("{u}/v1/people/{name}/faces")).multipart(form)).await;
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("bad_request")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("200 bytes"), "{v}");
    // Unknown routes and people: 404 JSON.
    let (s, v) = status_of(c.get(format!("{u}/v1/nothing"))).await;
    assert_eq!((s, v["error"]["code"].as_str()), (404, Some("not_found")));
    let (s, _) = status_of(c.delete(format!("{u}/v1/people/Nobody"))).await;
    assert_eq!(s, 404);
    // An upload cut off mid-body: a client error, not a 500.
    let addr = u.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /v1/recognize HTTP/1.1\r\nhost: x\r\ncontent-type: multipart/form-data; boundary=b\r\ntransfer-encoding: chunked\r\n\r\n10\r\n--b\r\ncontent-dispo")
        .await
        .unwrap();
    drop(s);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let m = c.get(format!("{u}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(!m.contains("status=\"500\""), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_deletes_and_listings_agree() {
    let (dep, _store) = crowd(0, 0).await;
    for _ in 0..20 {
        enroll_direct(&dep, "Ann", 3).await;
    }
    let web = start_web(dep.clone(), WebConfig::default()).await;
    let c = reqwest::Client::new();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (c, u) = (c.clone(), web.url.clone());
            tokio::spawn(async move {
                if i % 2 == 0 {
                    status_of(c.delete(format!("{u}/v1/people/Ann"))).await
                } else {
                    status_of(c.get(format!("{u}/v1/people"))).await
                }
            })
        })
        .collect();
    let mut removed = 0;
    for t in tasks {
        let (s, v) = t.await.unwrap();
        assert!(s == 200 || s == 404, "{s}: {v}");
        if let Some(n) = v["removed"].as_u64() {
            removed += n;
        }
    }
    assert!(removed <= 20, "{removed} faces reported removed out of 20");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn responses_nobody_waits_for_expire() {
    use facefleet_pipeline::protocol::{now_ms, Outcome, Recognition, Response};
    let (dep, _store, queue) = memory_deployment().await;
    // Answers for the waiters of a web tier that died: 25 expired ones (more
    // than one receive batch) and one still within its time.
    let answer = |id: String, expires_at_ms| Response {
        request_id: id,
        key: "r/x.jpg".into(),
        result: Outcome::Ok(Recognition { name: "Paul".into(), faces: vec![], threshold: 0.5, model: "fake".into() }),
        expires_at_ms: Some(expires_at_ms),
    };
    for i in 0..25 {
        let body = serde_json::to_string(&answer(format!("dead-{i}"), now_ms() - 60_000)).unwrap();
        dep.queue.send(&dep.names.resp_queue, &body).await.unwrap();
    }
    let fresh = serde_json::to_string(&answer("alive".into(), now_ms() + 600_000)).unwrap();
    dep.queue.send(&dep.names.resp_queue, &fresh).await.unwrap();
    // An idle web tier sweeps them away; the live one stays for its owner.
    let _web = start_web(dep.clone(), WebConfig::default()).await;
    eventually(|| async { queue.bodies(&dep.names.resp_queue).len() == 1 }).await;
    assert!(queue.bodies(&dep.names.resp_queue)[0].contains("alive"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_web_tier_deletes_the_responses_of_a_receive_together() {
    use facefleet_pipeline::backend::{ensure_resources, QueueTimings};
    use facefleet_pipeline::protocol::{now_ms, Outcome, Recognition, Response};
    let queue = Arc::new(DeleteCountingQueue::default());
    let dep = Deployment { names: facefleet_ports::Names::new("t"), store: Arc::new(MemStore::default()), queue: queue.clone(), fleet: None };
    ensure_resources(&dep, QueueTimings { request_visibility: Duration::from_secs(5) }).await.unwrap();
    // 25 answers nobody waits for (more than two receive batches), then
    // real requests answered by a worker.
    for i in 0..25 {
        let expired = Response {
            request_id: format!("dead-{i}"),
            key: "r/x.jpg".into(),
            result: Outcome::Ok(Recognition { name: "Paul".into(), faces: vec![], threshold: 0.5, model: "fake".into() }),
            expires_at_ms: Some(now_ms() - 60_000),
        };
        dep.queue.send(&dep.names.resp_queue, &serde_json::to_string(&expired).unwrap()).await.unwrap();
    }
    let web = start_web(dep.clone(), WebConfig::default()).await;
    eventually(|| async { queue.inner.bodies(&dep.names.resp_queue).is_empty() }).await;
    enroll_direct(&dep, "P1", 1).await;
    spawn_worker(&dep, Arc::new(FakeEngine::default()));
    let c = reqwest::Client::new();
    let asked: Vec<_> = (0..12).map(|_| post_photo(&c, &web.url, 1, Some("a.png"))).collect();
    for answer in futures::future::join_all(asked).await {
        assert_eq!(answer, (200, "a:P1".to_string()));
    }
    eventually(|| async { queue.inner.bodies(&dep.names.resp_queue).is_empty() }).await;
    let batches = queue.deletes.lock().unwrap().iter().filter(|(q, _, how)| *q == dep.names.resp_queue && *how == "batch").count();
    assert_eq!(queue.deleted(&dep.names.resp_queue, "delete"), 0, "responses deleted one at a time");
    assert_eq!(queue.deleted(&dep.names.resp_queue, "batch"), 25 + 12);
    // The 25 expired take at least 3 batches, the answers at least 1.
    assert!(batches >= 4, "{batches} batch deletes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_answers_the_requests_in_flight() {
    let (dep, _store, _q) = memory_deployment().await;
    enroll_direct(&dep, "P1", 1).await;
    spawn_worker(&dep, Arc::new(FakeEngine { delay: Duration::from_millis(1500), ..FakeEngine::default() }));
    let web = start_web(dep.clone(), WebConfig::default()).await;
    let c = reqwest::Client::new();
    let url = web.url.clone();
    let asked = tokio::spawn(async move { post_photo(&c, &url, 1, Some("inflight.png")).await });
    // Once the request is queued (the worker is still on it), shut down.
    eventually(|| async { dep.queue.depth(&dep.names.req_queue).await.is_ok_and(|d| d.in_flight + d.visible > 0) }).await;
    web.stop.cancel();
    assert_eq!(asked.await.unwrap(), (200, "inflight:P1".to_string()));
    web.task.await.unwrap().unwrap();
}
