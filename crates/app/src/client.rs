//! A client of a running stack: `facefleet enroll --url` and
//! `facefleet recognize --url`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use facefleet_pipeline::web::MAX_ENROLL_PHOTOS;

/// Environment variable the CLI clients read their API key from.
pub const API_KEY_ENV: &str = "FACEFLEET_API_KEY";

/// An HTTP client builder that sends `FACEFLEET_API_KEY` (when set) as
/// `x-api-key` on every request.
pub fn http_builder() -> anyhow::Result<reqwest::ClientBuilder> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Ok(key) = std::env::var(API_KEY_ENV) {
        let key = key.trim();
        if !key.is_empty() {
            let mut v = reqwest::header::HeaderValue::from_str(key).context("FACEFLEET_API_KEY is not a valid header value")?;
            v.set_sensitive(true);
            headers.insert("x-api-key", v);
        }
    }
    Ok(reqwest::Client::builder().default_headers(headers))
}

/// A client as [`http_builder`] makes it.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(http_builder()?.build()?)
}

fn file_name(path: &Path) -> String {
    path.file_name().and_then(|n| n.to_str()).unwrap_or("upload").to_string()
}

fn part(path: &Path) -> anyhow::Result<reqwest::multipart::Part> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(reqwest::multipart::Part::bytes(bytes).file_name(file_name(path)))
}

fn percent_encode(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Checks a `--url` before use: an `http://` or `https://` address.
pub fn check_url(url: &str) -> anyhow::Result<()> {
    let ok = reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
    anyhow::ensure!(ok, "--url {url:?} is not an http:// or https:// address (e.g. http://127.0.0.1:8000)");
    Ok(())
}

/// The text of a failed answer: the message of a JSON error, else the body.
pub fn error_text(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string())
}

async fn check(resp: reqwest::Response) -> anyhow::Result<String> {
    let status = resp.status();
    let body = resp.text().await?;
    anyhow::ensure!(status.is_success(), "{status}: {}", error_text(&body));
    Ok(body)
}

/// Sends of one enrollment request at most (the first and the retries).
const ENROLL_SENDS: u32 = 4;

/// Whether an enrollment answered `status` is worth sending again: the
/// server was busy or a proxy in front of it failed.
fn transient(status: reqwest::StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

/// Enrolls `images` as `name` (`POST /v1/people/{name}/faces`); returns the
/// server's JSON answer. The request carries a fresh `Idempotency-Key`, so
/// it is sent again (up to [`ENROLL_SENDS`] times, after the server's
/// `Retry-After` up to 5 s, else 0.5, 1, 2 s) when the connection fails or
/// the server is busy, without enrolling any photo twice.
pub async fn enroll(client: &reqwest::Client, url: &str, name: &str, images: &[PathBuf]) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(!images.is_empty(), "no images to enroll for {name}");
    let photos = images.iter().map(|p| Ok((std::fs::read(p).with_context(|| format!("reading {}", p.display()))?, file_name(p)))).collect::<anyhow::Result<Vec<_>>>()?;
    let url = format!("{}/v1/people/{}/faces", url.trim_end_matches('/'), percent_encode(name));
    let key = uuid::Uuid::new_v4().to_string();
    let mut send = 1;
    loop {
        let mut form = reqwest::multipart::Form::new();
        for (bytes, file) in &photos {
            form = form.part("image", reqwest::multipart::Part::bytes(bytes.clone()).file_name(file.clone()));
        }
        let wait = match client.post(&url).header("idempotency-key", &key).multipart(form).send().await {
            Ok(resp) if send < ENROLL_SENDS && transient(resp.status()) => {
                let after = resp.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                after.map(|s| std::time::Duration::from_secs(s.min(5)))
            }
            Ok(resp) => return Ok(serde_json::from_str(&check(resp).await?)?),
            Err(e) if send < ENROLL_SENDS && (e.is_connect() || e.is_timeout() || e.is_request()) => {
                tracing::debug!(error = %e, send, "enrollment not answered; sending it again");
                None
            }
            Err(e) => return Err(e.into()),
        };
        tokio::time::sleep(wait.unwrap_or(std::time::Duration::from_millis(500 << (send - 1)))).await;
        send += 1;
    }
}

/// Enrolls all of `images` as `name`, in requests of at most
/// [`MAX_ENROLL_PHOTOS`] photos (what the server takes at once); returns
/// the server's answer to each request.
pub async fn enroll_all(client: &reqwest::Client, url: &str, name: &str, images: &[PathBuf]) -> anyhow::Result<Vec<serde_json::Value>> {
    anyhow::ensure!(!images.is_empty(), "no images to enroll for {name}");
    let mut answers = Vec::new();
    let mut done = 0;
    for chunk in images.chunks(MAX_ENROLL_PHOTOS) {
        let answer = enroll(client, url, name, chunk)
            .await
            .with_context(|| format!("enrolling {name:?} ({done} of {} photos enrolled before)", images.len()))?;
        answers.push(answer);
        done += chunk.len();
    }
    Ok(answers)
}

/// Groups the images of `dir` by the labels CSV (`Image,Results`): name →
/// image paths. Images without a label are skipped.
pub fn group_by_label(dir: &Path, labels: &Path) -> anyhow::Result<BTreeMap<String, Vec<PathBuf>>> {
    let labels = crate::loadgen::read_labels(labels)?;
    let mut out: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    let mut found = std::collections::HashSet::new();
    for img in crate::loadgen::list_images(dir)? {
        let stem = img.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        if let Some(name) = labels.get(&stem) {
            out.entry(name.clone()).or_default().push(img);
            found.insert(stem);
        }
    }
    anyhow::ensure!(!out.is_empty(), "no image of {} has a label", dir.display());
    let mut missing: Vec<&String> = labels.keys().filter(|s| !found.contains(*s)).collect();
    if !missing.is_empty() {
        missing.sort();
        tracing::warn!(count = missing.len(), first = %missing[0], dir = %dir.display(), "labelled images not found in the folder; skipped");
    }
    Ok(out)
}

/// Enrolls every labelled image of `dir`, person by person ([`enroll_all`]);
/// returns (people, faces) enrolled.
pub async fn enroll_labelled(client: &reqwest::Client, url: &str, dir: &Path, labels: &Path) -> anyhow::Result<(usize, usize)> {
    let groups = group_by_label(dir, labels)?;
    let mut faces = 0;
    for (done, (name, images)) in groups.iter().enumerate() {
        enroll_all(client, url, name, images).await.with_context(|| format!("labelled enrollment stopped after {faces} photos of {done} people"))?;
        faces += images.len();
    }
    Ok((groups.len(), faces))
}

/// Recognises one image: with `json`, `POST /v1/recognize` (all faces);
/// otherwise `POST /` (`<stem>:<name>`).
pub async fn recognize(client: &reqwest::Client, url: &str, image: &Path, json: bool) -> anyhow::Result<String> {
    let base = url.trim_end_matches('/');
    if json {
        let form = reqwest::multipart::Form::new().part("image", part(image)?);
        check(client.post(format!("{base}/v1/recognize")).multipart(form).send().await?).await
    } else {
        let form = reqwest::multipart::Form::new().part("inputFile", part(image)?);
        Ok(check(client.post(format!("{base}/")).multipart(form).send().await?).await?.trim().to_string())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn encodes_path_segments() {
        assert_eq!(super::percent_encode("Jean Luc/x"), "Jean%20Luc%2Fx");
        assert_eq!(super::percent_encode("Paul"), "Paul");
    }

    #[test]
    fn urls_and_error_texts() {
        use super::{check_url, error_text};
        for ok in ["http://127.0.0.1:8000", "https://faces.example.com/"] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for bad in ["127.0.0.1:8000", "localhost:8000", "not a url", "ftp://x", ""] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        assert_eq!(error_text(r#"{"error":{"code":"unsupported_media_type","message":"not an image"}}"#), "not an image");
        assert_eq!(error_text(" plain text\n"), "plain text");
    }

    /// A server that answers the first `busy` enrollments 503, then 201 with
    /// what it saw; it records the `Idempotency-Key` of every send.
    async fn flaky_server(busy: usize) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use axum::http::{HeaderMap, StatusCode};
        use axum::response::IntoResponse;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let log = seen.clone();
        let app = axum::Router::new().route(
            "/v1/people/{name}/faces",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let log = log.clone();
                async move {
                    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                    let mut seen = log.lock().unwrap();
                    seen.push(key);
                    if seen.len() <= busy {
                        return (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "0")], "busy").into_response();
                    }
                    let body = serde_json::json!({ "added": 1, "bytes": body.len() }).to_string();
                    (StatusCode::CREATED, [("content-type", "application/json")], body).into_response()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, seen)
    }

    #[tokio::test]
    async fn a_busy_server_gets_the_enrollment_again_with_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let photo = dir.path().join("p.jpg");
        std::fs::write(&photo, b"photo bytes").unwrap();
        let client = reqwest::Client::new();

        let (url, seen) = flaky_server(2).await;
        let answer = super::enroll(&client, &url, "Ann", std::slice::from_ref(&photo)).await.unwrap();
        assert_eq!(answer["added"], 1);
        let keys = seen.lock().unwrap().clone();
        assert_eq!(keys.len(), 3, "two busy answers, then the enrollment");
        assert!(!keys[0].is_empty() && keys.iter().all(|k| *k == keys[0]), "one key for every send: {keys:?}");

        // Another request gets another key; a server busy for good is given up.
        let (url, seen) = flaky_server(usize::MAX).await;
        let err = super::enroll(&client, &url, "Ann", std::slice::from_ref(&photo)).await.unwrap_err();
        assert!(err.to_string().contains("503"), "{err}");
        let again = seen.lock().unwrap().clone();
        assert_eq!(again.len(), super::ENROLL_SENDS as usize);
        assert_ne!(again[0], keys[0]);
    }
}
