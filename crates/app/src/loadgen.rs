//! The load generator: sends a folder of images to `POST /` with N requests
//! in flight, checks the answers against a labels CSV (`Image,Results`) and
//! reports counts and latency percentiles, labelled with what the stack
//! says it runs (its SIMD path and recognizer, from `GET /v1/status`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::stream::{self, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};

/// What to send.
#[derive(Debug, Clone)]
pub struct LoadgenOptions {
    /// Base URL of the web tier (e.g. `http://127.0.0.1:8000`).
    pub url: String,
    /// Folder of images (`.jpg`, `.jpeg`, `.png`), sent in name order.
    pub dir: PathBuf,
    /// Labels CSV `Image,Results` (image stem → expected name).
    pub labels: Option<PathBuf>,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Send only the first `limit` images.
    pub limit: Option<usize>,
    /// Per-request client timeout.
    pub timeout: Duration,
    /// Show a progress bar.
    pub progress: bool,
}

/// One request's fate.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// File name sent.
    pub file: String,
    /// Latency (time to the full answer).
    pub latency: Duration,
    /// HTTP status (`None`: transport error).
    pub status: Option<u16>,
    /// Answer body (or transport error).
    pub body: String,
    /// `Some(true/false)` when a label was known and the answer was 200.
    pub correct: Option<bool>,
}

/// Totals of a run.
#[derive(Debug, Clone)]
pub struct Report {
    /// Requests sent.
    pub requests: usize,
    /// Answered with 200.
    pub completed: usize,
    /// Not answered with 200 (any other status or a transport error).
    pub failed: usize,
    /// 200 answers matching the label.
    pub correct: usize,
    /// 200 answers not matching the label.
    pub wrong: usize,
    /// Mean latency.
    pub avg: Duration,
    /// Median latency.
    pub p50: Duration,
    /// 95th percentile latency.
    pub p95: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Wall time of the whole run.
    pub total: Duration,
    /// Every request, in completion order.
    pub outcomes: Vec<Outcome>,
    /// Scaling seen through `GET /v1/status` (with `watch_scaling`).
    pub scaling: Option<Scaling>,
    /// What the stack says it runs, read before the load (`None`: its
    /// status could not be read, e.g. a stack with API keys and no key in
    /// `FACEFLEET_API_KEY` allowed to read it, or it does not say, as the
    /// `web-tier` binary started alone).
    pub stack: Option<StackLabel>,
}

/// What a stack runs, from the `stack` object of its `GET /v1/status`, so
/// that every load-test number carries the SIMD path it was measured on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackLabel {
    /// The model's SIMD path (`cpu`, e.g. `AVX2+FMA`): the web tier's. The
    /// embedded backend's workers run on the same machine with the same
    /// settings; AWS workers run on their instances' CPUs.
    pub simd: String,
    /// The recognizer with its threshold and smallest face.
    pub recognizer: String,
    /// The backend (embedded or aws).
    pub backend: String,
}

impl StackLabel {
    /// Reads the label from a `GET /v1/status` body; `None` without a
    /// `stack.cpu` string.
    pub fn from_status(status: &serde_json::Value) -> Option<Self> {
        let stack = &status["stack"];
        let text = |k: &str| stack[k].as_str().map(str::to_string);
        Some(Self { simd: text("cpu")?, recognizer: text("recognizer").unwrap_or_default(), backend: text("backend").unwrap_or_default() })
    }
}

/// The fleet's behaviour during a run.
#[derive(Debug, Clone, Copy)]
pub struct Scaling {
    /// Most `running_instances` seen.
    pub peak_instances: u64,
    /// From the last answer until `running_instances` read 0 (`None`: it
    /// did not within the timeout).
    pub scale_in: Option<Duration>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        match &self.stack {
            Some(s) => writeln!(f, "stack:     SIMD path {}; recognizer {}; backend {}", s.simd, s.recognizer, s.backend)?,
            None => writeln!(f, "stack:     not known (GET /v1/status did not say: a stack with API keys needs one in FACEFLEET_API_KEY; a web tier started alone does not report it)")?,
        }
        writeln!(f, "requests:  {}", self.requests)?;
        writeln!(f, "completed: {}", self.completed)?;
        writeln!(f, "failed:    {}", self.failed)?;
        writeln!(f, "correct:   {}", self.correct)?;
        writeln!(f, "wrong:     {}", self.wrong)?;
        writeln!(f, "latency avg {:.0} ms, p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms", ms(self.avg), ms(self.p50), ms(self.p95), ms(self.p99))?;
        write!(f, "total duration: {:.2} s", self.total.as_secs_f64())?;
        if let Some(s) = &self.scaling {
            write!(f, "\npeak instances: {}", s.peak_instances)?;
            match s.scale_in {
                Some(d) => write!(f, "\nscale-in to 0: {:.2} s after the last answer", d.as_secs_f64())?,
                None => write!(f, "\nscale-in to 0: not reached")?,
            }
        }
        Ok(())
    }
}

/// Reads a labels CSV `Image,Results` into stem → name. The header row is
/// optional; fields may be quoted (`"Smith, John"`); a UTF-8 BOM and CRLF
/// line ends are fine. An image labelled with two different names is an
/// error (the same label twice is not).
pub fn read_labels(path: &Path) -> anyhow::Result<HashMap<String, String>> {
    let file = std::fs::File::open(path).with_context(|| format!("reading labels {}", path.display()))?;
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).trim(csv::Trim::All).from_reader(file);
    let mut out: HashMap<String, String> = HashMap::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("reading labels {}", path.display()))?;
        let row = i + 1; // 1-based, the header included (`position().line()` is off by one after CRLF)
        if record.iter().all(str::is_empty) {
            continue;
        }
        let is_header = |r: &csv::StringRecord| r.len() == 2 && r[0].eq_ignore_ascii_case("image") && r[1].eq_ignore_ascii_case("results");
        if i == 0 && is_header(&record) {
            continue;
        }
        anyhow::ensure!(
            record.len() == 2 && !record[0].is_empty() && !record[1].is_empty(),
            "{}: row {row}: expected two columns `Image,Results`, found {} field(s)",
            path.display(),
            record.len()
        );
        let stem = facefleet_pipeline::protocol::stem(&record[0]).to_string();
        let name = record[1].to_string();
        if let Some(earlier) = out.get(&stem) {
            anyhow::ensure!(*earlier == name, "{}: row {row}: {stem} is labelled both {earlier:?} and {name:?}", path.display());
        }
        out.insert(stem, name);
    }
    Ok(out)
}

/// Image files of `dir`, sorted by name.
pub fn list_images(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Sends one image to `POST /` as multipart `inputFile`.
pub async fn send_one(client: &reqwest::Client, url: &str, path: &Path) -> anyhow::Result<(u16, String)> {
    let bytes = tokio::fs::read(path).await.with_context(|| format!("reading {}", path.display()))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("upload").to_string();
    let part = reqwest::multipart::Part::bytes(bytes).file_name(name);
    let form = reqwest::multipart::Form::new().part("inputFile", part);
    let resp = client.post(format!("{}/", url.trim_end_matches('/'))).multipart(form).send().await?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await?))
}

/// Runs the load and returns the report.
pub async fn run(opts: &LoadgenOptions) -> anyhow::Result<Report> {
    run_with(opts, false).await
}

/// Runs the load; with `watch_scaling`, also samples `GET /v1/status`
/// during the run, then waits (up to `opts.timeout`) for the fleet to scale
/// in to 0 and reports the peak instance count and how long after the last
/// answer the fleet reached 0.
pub async fn run_with(opts: &LoadgenOptions, watch_scaling: bool) -> anyhow::Result<Report> {
    let labels = match &opts.labels {
        Some(p) => read_labels(p)?,
        None => HashMap::new(),
    };
    let mut files = list_images(&opts.dir)?;
    if let Some(n) = opts.limit {
        files.truncate(n);
    }
    anyhow::ensure!(!files.is_empty(), "no images (.jpg, .jpeg, .png) in {}", opts.dir.display());
    anyhow::ensure!(opts.concurrency >= 1, "the concurrency must be at least 1");
    let client = crate::client::http_builder()?
        .timeout(opts.timeout)
        .pool_max_idle_per_host(opts.concurrency)
        .build()?;
    let bar = if opts.progress { ProgressBar::new(files.len() as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} [{elapsed_precise}] {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let stack = read_status(&client, &status_url(&opts.url)).await.as_ref().and_then(StackLabel::from_status);
    let labels = Arc::new(labels);
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let watcher = watch_scaling.then(|| {
        let (client, url, peak) = (client.clone(), status_url(&opts.url), peak.clone());
        tokio::spawn(async move {
            loop {
                if let Some(n) = running_instances(&client, &url).await {
                    peak.fetch_max(n, std::sync::atomic::Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    });
    let started = Instant::now();
    let outcomes: Vec<Outcome> = stream::iter(files)
        .map(|path| {
            let client = client.clone();
            let labels = labels.clone();
            let url = opts.url.clone();
            let bar = bar.clone();
            async move {
                let t = Instant::now();
                let file = path.file_name().and_then(|n| n.to_str()).unwrap_or("?").to_string();
                let (status, body) = match send_one(&client, &url, &path).await {
                    Ok((s, b)) => (Some(s), b),
                    Err(e) => (None, format!("{e:#}")),
                };
                let latency = t.elapsed();
                let stem = facefleet_pipeline::protocol::stem(&file).to_string();
                let correct = match (status, labels.get(&stem)) {
                    (Some(200), Some(want)) => Some(body.trim() == format!("{stem}:{want}")),
                    _ => None,
                };
                if status != Some(200) {
                    bar.set_message(format!("last failure: {file}: {} {}", status.map_or("transport".into(), |s| s.to_string()), body.trim()));
                }
                bar.inc(1);
                Outcome { file, latency, status, body, correct }
            }
        })
        .buffer_unordered(opts.concurrency)
        .collect()
        .await;
    let total = started.elapsed();
    let last_answer = Instant::now();
    bar.finish_and_clear();
    let scaling = match watcher {
        Some(w) => {
            let url = status_url(&opts.url);
            let mut scale_in = None;
            while last_answer.elapsed() < opts.timeout {
                if running_instances(&client, &url).await == Some(0) {
                    scale_in = Some(last_answer.elapsed());
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            w.abort();
            Some(Scaling { peak_instances: peak.load(std::sync::atomic::Ordering::SeqCst), scale_in })
        }
        None => None,
    };
    let mut lat: Vec<Duration> = outcomes.iter().map(|o| o.latency).collect();
    lat.sort();
    let completed = outcomes.iter().filter(|o| o.status == Some(200)).count();
    let avg = if lat.is_empty() { Duration::ZERO } else { lat.iter().sum::<Duration>() / lat.len() as u32 };
    Ok(Report {
        requests: outcomes.len(),
        completed,
        failed: outcomes.len() - completed,
        correct: outcomes.iter().filter(|o| o.correct == Some(true)).count(),
        wrong: outcomes.iter().filter(|o| o.correct == Some(false)).count(),
        avg,
        p50: percentile(&lat, 50.0),
        p95: percentile(&lat, 95.0),
        p99: percentile(&lat, 99.0),
        total,
        outcomes,
        scaling,
        stack,
    })
}

/// Why the requests of `report` failed, `(reason, count)`, most common
/// first: the status and the server's message, or the transport error.
pub fn failure_reasons(report: &Report) -> Vec<(String, usize)> {
    let mut counts: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for o in report.outcomes.iter().filter(|o| o.status != Some(200)) {
        let why = match o.status {
            Some(s) => format!("{s}: {}", crate::client::error_text(&o.body)),
            None => format!("no answer: {}", o.body.trim()),
        };
        *counts.entry(why).or_default() += 1;
    }
    let mut v: Vec<(String, usize)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

/// `GET /v1/status` without counting the buckets' objects: the watcher
/// polls it 20 times a second, and a count lists both buckets whole.
fn status_url(base: &str) -> String {
    format!("{}/v1/status?objects=false", base.trim_end_matches('/'))
}

/// The body of a successful `GET url` (the status), `None` on any failure.
async fn read_status(client: &reqwest::Client, url: &str) -> Option<serde_json::Value> {
    client.get(url).send().await.ok()?.error_for_status().ok()?.json().await.ok()
}

async fn running_instances(client: &reqwest::Client, url: &str) -> Option<u64> {
    read_status(client, url).await?["running_instances"].as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v[..1], 95.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn stack_label_from_status() {
        let status = serde_json::json!({"running_instances": 0, "stack": {
            "backend": "embedded (folder buckets, SQLite queue, local workers)", "cpu": "AVX2+FMA",
            "recognizer": "mobilefacenet (match threshold 0.46, faces from 20 px)"}});
        let label = StackLabel::from_status(&status).unwrap();
        assert_eq!(label.simd, "AVX2+FMA");
        assert_eq!(label.recognizer, "mobilefacenet (match threshold 0.46, faces from 20 px)");
        assert!(label.backend.starts_with("embedded"));
        assert_eq!(StackLabel::from_status(&serde_json::json!({"error": {"code": "unauthorized"}})), None);
        assert_eq!(StackLabel::from_status(&serde_json::json!({"stack": {"cpu": 1}})), None);

        let mut report = Report {
            requests: 1, completed: 1, failed: 0, correct: 1, wrong: 0, avg: Duration::ZERO, p50: Duration::ZERO,
            p95: Duration::ZERO, p99: Duration::ZERO, total: Duration::ZERO, outcomes: Vec::new(), scaling: None, stack: Some(label),
        };
        let text = report.to_string();
        assert!(text.starts_with("stack:     SIMD path AVX2+FMA; recognizer mobilefacenet"), "{text}");
        report.stack = None;
        assert!(report.to_string().starts_with("stack:     not known"), "{report}");
    }

    #[test]
    fn labels_csv() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.csv");
        std::fs::write(&p, "Image,Results\ntest_00,Paul\ntest_01.jpg, Emily \n\n").unwrap();
        let l = read_labels(&p).unwrap();
        assert_eq!(l["test_00"], "Paul");
        assert_eq!(l["test_01"], "Emily");
        std::fs::write(&p, "Image,Results\nbroken\n").unwrap();
        let err = read_labels(&p).unwrap_err().to_string();
        assert!(err.contains("l.csv: row 2") && err.contains("two columns"), "{err}");

        // Quoted names, a BOM, CRLF, no header, the same label twice.
        std::fs::write(&p, "\u{feff}test_00,\"Smith, John\"\r\ntest_01.png,\"Ana \"\"Bo\"\"\"\r\ntest_00,Smith, John\r\n").unwrap();
        let err = read_labels(&p).unwrap_err().to_string();
        assert!(err.contains("l.csv: row 3") && err.contains("found 3"), "an unquoted comma is a third column: {err}");
        std::fs::write(&p, "\u{feff}test_00,\"Smith, John\"\r\ntest_01.png,\"Ana \"\"Bo\"\"\"\r\ntest_00,\"Smith, John\"\r\n").unwrap();
        let l = read_labels(&p).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l["test_00"], "Smith, John");
        assert_eq!(l["test_01"], "Ana \"Bo\"");

        // One image, two names: refused with both.
        std::fs::write(&p, "Image,Results\ntest_00,Paul\ntest_00,Emily\n").unwrap();
        let err = read_labels(&p).unwrap_err().to_string();
        assert!(err.contains("l.csv: row 3") && err.contains("\"Paul\"") && err.contains("\"Emily\""), "{err}");
    }
}
