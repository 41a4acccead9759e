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

fn part(path: &Path) -> anyhow::Result<reqwest::multipart::Part> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("upload").to_string();
    Ok(reqwest::multipart::Part::bytes(bytes).file_name(name))
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

/// Enrolls `images` as `name` (`POST /v1/people/{name}/faces`); returns the
/// server's JSON answer.
pub async fn enroll(client: &reqwest::Client, url: &str, name: &str, images: &[PathBuf]) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(!images.is_empty(), "no images to enroll for {name}");
    let mut form = reqwest::multipart::Form::new();
    for img in images {
        form = form.part("image", part(img)?);
    }
    let url = format!("{}/v1/people/{}/faces", url.trim_end_matches('/'), percent_encode(name));
    let body = check(client.post(url).multipart(form).send().await?).await?;
    Ok(serde_json::from_str(&body)?)
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
}
