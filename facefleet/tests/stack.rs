//! The real stack (`facefleet up`, real worker processes, the real model)
//! against the course's data sets. Needs the shared data folder
//! (`$FACEFLEET_SHARED_DIR` or `<workspace>/../shared`): fails clearly when
//! it is missing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use facefleet_app::{client, loadgen};

fn dataset() -> PathBuf {
    let shared = std::env::var_os("FACEFLEET_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let d = shared.join("datasets/cse546");
    assert!(
        d.join("labels_100.csv").is_file() && d.join("face_images_1000").is_dir(),
        "the CSE546 data set is missing at {} (set FACEFLEET_SHARED_DIR to the folder holding datasets/cse546)",
        d.display()
    );
    d
}

struct Stack {
    child: Child,
    url: String,
    data: tempfile::TempDir,
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SIGINT: the stack drains and stops its workers.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::Signal::SIGINT);
        for _ in 0..300 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (bounded: a minute) until `url/healthz` answers 200.
async fn healthy(url: &str) -> bool {
    let c = reqwest::Client::new();
    for _ in 0..600 {
        if c.get(format!("{url}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn start_stack(max_instances: usize, env: &[(&str, &str)]) -> Stack {
    start_stack_in(tempfile::tempdir().unwrap(), max_instances, env, &[]).await
}

/// Starts `facefleet up` over `data` (a data folder that may hold an
/// earlier stack's state) with extra arguments.
async fn start_stack_in(data: tempfile::TempDir, max_instances: usize, env: &[(&str, &str)], extra: &[&str]) -> Stack {
    let port = free_port();
    let exe = env!("CARGO_BIN_EXE_facefleet");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(data.path().join("up.log")).unwrap();
    let mut child = Command::new(exe)
        .args(["up", "--listen", &format!("127.0.0.1:{port}"), "--max-instances", &max_instances.to_string()])
        .args(extra)
        .arg("--data-dir")
        .arg(data.path().join("data"))
        // Run workers from this very build (not a possibly stale app-tier).
        .args(["--worker-program", exe])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    if healthy(&url).await {
        return Stack { child, url, data };
    }
    // Do not leave a half-started stack behind the failed test.
    let _ = child.kill();
    let _ = child.wait();
    panic!("the stack did not come up; log:\n{}", std::fs::read_to_string(data.path().join("up.log")).unwrap_or_default());
}

impl Stack {
    /// Keys of a bucket of the embedded backend (walks its folders).
    fn bucket_keys(&self, bucket: &str) -> Vec<String> {
        fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()) {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                match e.file_type() {
                    Ok(t) if t.is_dir() => walk(&e.path(), &format!("{prefix}{name}/"), out),
                    Ok(t) if t.is_file() => out.push(format!("{prefix}{name}")),
                    _ => {}
                }
            }
        }
        let mut keys = Vec::new();
        walk(&self.data.path().join("data/buckets").join(bucket), "", &mut keys);
        keys.sort();
        keys
    }

    async fn status(&self) -> serde_json::Value {
        reqwest::get(format!("{}/v1/status", self.url)).await.unwrap().json().await.unwrap()
    }

    /// Samples `running_instances` every 100 ms; returns the peak seen.
    fn watch_instances(&self) -> (Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
        let peak = Arc::new(AtomicU64::new(0));
        let p = peak.clone();
        let url = self.url.clone();
        let task = tokio::spawn(async move {
            let c = reqwest::Client::new();
            loop {
                if let Ok(r) = c.get(format!("{url}/v1/status?objects=false")).send().await {
                    if let Ok(v) = r.json::<serde_json::Value>().await {
                        p.fetch_max(v["running_instances"].as_u64().unwrap_or(0), Ordering::SeqCst);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        (peak, task)
    }

    async fn wait_for_zero_instances(&self) {
        // A hang guard, not a performance bar (scale-in is measured by the benchmark).
        for _ in 0..1200 {
            if self.status().await["running_instances"] == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the fleet never scaled in to 0: {}", self.status().await);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("up.log")).unwrap_or_default()
    }
}

/// Load options over the course set `face_images_<size>` with its labels.
fn course_load(url: String, d: &Path, size: &str, concurrency: usize, limit: Option<usize>, timeout_s: u64) -> loadgen::LoadgenOptions {
    loadgen::LoadgenOptions {
        url,
        dir: d.join(format!("face_images_{size}")),
        labels: Some(d.join(format!("labels_{size}.csv"))),
        concurrency,
        limit,
        timeout: Duration::from_secs(timeout_s),
        progress: false,
    }
}

fn labels(d: &Path) -> HashMap<String, String> {
    loadgen::read_labels(&d.join("labels_1000.csv")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousand_images_at_100_concurrency_all_correct_and_scaled_0_max_0() {
    let d = dataset();
    let stack = start_stack(15, &[]).await;
    let c = reqwest::Client::new();
    let (people, faces) = client::enroll_labelled(&c, &stack.url, &d.join("face_images_100"), &d.join("labels_100.csv")).await.unwrap();
    assert_eq!(faces, 100);
    assert!(people >= 2);
    assert_eq!(stack.status().await["running_instances"], 0, "idle stack runs no worker");

    let (peak, watcher) = stack.watch_instances();
    let opts = course_load(stack.url.clone(), &d, "1000", 100, None, 300);
    let report = loadgen::run(&opts).await.unwrap();
    let failures: Vec<_> = report.outcomes.iter().filter(|o| o.correct != Some(true)).take(5).collect();
    assert_eq!((report.requests, report.completed, report.correct), (1000, 1000, 1000), "{report}\n{failures:?}");
    stack.wait_for_zero_instances().await;
    watcher.abort();
    assert_eq!(peak.load(Ordering::SeqCst), 15, "instances must reach max");
    let log = stack.log();
    assert!(log.contains("how=\"forked from the template\"") && !log.contains("how=\"new process\""), "workers are forked from the template:\n{log}");
    // The report is labelled with the SIMD path the workers ran.
    let label = report.stack.clone().expect("loadgen labels its report from GET /v1/status");
    let mut worker_logs = 0;
    for e in std::fs::read_dir(stack.data.path().join("data/logs")).unwrap().filter_map(|e| e.ok()) {
        if e.file_name().to_string_lossy().starts_with("app-tier-instance-") {
            let text = std::fs::read_to_string(e.path()).unwrap();
            assert!(text.contains(&format!("simd={} ", label.simd)), "loadgen's label {label:?}, a worker's log:\n{text}");
            worker_logs += 1;
        }
    }
    assert!(worker_logs >= 15, "{worker_logs} worker logs");

    let inputs = stack.bucket_keys("facefleet-in-bucket");
    let outputs = stack.bucket_keys("facefleet-out-bucket");
    assert_eq!(inputs.len(), 1000);
    assert_eq!(outputs.len(), 1000);
    let want = labels(&d);
    for stem in &outputs {
        let body = std::fs::read_to_string(stack.data.path().join("data/buckets/facefleet-out-bucket").join(stem)).unwrap();
        assert_eq!(Some(&body), want.get(stem), "{stem}");
    }
    let st = stack.status().await;
    assert_eq!((st["input_objects"].as_u64(), st["output_objects"].as_u64()), (Some(1000), Some(1000)), "{st}");
    assert_eq!(st["request_queue_depth"], 0);
    println!("{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_a_worker_mid_load_every_request_answered_once() {
    let d = dataset();
    // Short visibility so the killed worker's request comes back quickly.
    let stack = start_stack(4, &[("FACEFLEET_VISIBILITY", "4")]).await;
    let c = reqwest::Client::new();
    client::enroll_labelled(&c, &stack.url, &d.join("face_images_100"), &d.join("labels_100.csv")).await.unwrap();

    let opts = course_load(stack.url.clone(), &d, "1000", 50, Some(300), 300);
    let load = tokio::spawn(async move { loadgen::run(&opts).await.unwrap() });
    // Once results flow, SIGKILL one worker (a process this test started,
    // through the stack).
    let mut killed = None;
    let data_dir = stack.data.path().join("data");
    for _ in 0..1200 {
        let outs = stack.bucket_keys("facefleet-out-bucket").len();
        let workers = workers_of(&data_dir);
        if outs >= 20 && !workers.is_empty() {
            let victim = workers[0];
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
            killed = Some(victim);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let killed = killed.expect("no worker to kill appeared");
    let report = load.await.unwrap();
    assert_eq!((report.requests, report.completed, report.correct), (300, 300, 300), "{report}");
    let outputs = stack.bucket_keys("facefleet-out-bucket");
    assert_eq!(outputs.len(), 300, "exactly one result per image");
    let want = labels(&d);
    for stem in &outputs {
        let body = std::fs::read_to_string(stack.data.path().join("data/buckets/facefleet-out-bucket").join(stem)).unwrap();
        assert_eq!(Some(&body), want.get(stem), "{stem}");
    }
    stack.wait_for_zero_instances().await;
    let log = stack.log();
    assert!(log.contains(&format!("id={killed} status=signal: 9")), "the killed worker was reaped as killed:\n{log}");
}

/// Worker processes of the stack in `data_dir` (any parent): processes
/// whose command line names that data folder and run as workers.
fn workers_of(data_dir: &Path) -> Vec<u32> {
    let needle = data_dir.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmd) = std::fs::read(format!("/proc/{p}/cmdline")) else { continue };
        let args: Vec<String> = cmd.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        // A worker gets its settings (the data folder among them) in its
        // environment.
        let env = std::fs::read(format!("/proc/{p}/environ")).unwrap_or_default();
        let in_data_dir = env
            .split(|&b| b == 0)
            .any(|v| String::from_utf8_lossy(v).strip_prefix("FACEFLEET_DATA_DIR=").is_some_and(|d| d.starts_with(&needle)));
        // The worker template (the process workers are forked from) is
        // not a worker.
        let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
        if args.iter().any(|a| a == "worker") && in_data_dir && comm.trim_end() != facefleet_embedded::worker_template::TEMPLATE_PROCESS_NAME {
            // A zombie is already dead.
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            if stat.rsplit_once(')').is_some_and(|(_, r)| !r.trim_start().starts_with('Z')) {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_up_takes_its_workers_and_a_restart_stays_within_max() {
    let d = dataset();
    // Short request timeout: answers for the killed stack's waiters expire
    // soon after.
    let env = [("FACEFLEET_VISIBILITY", "4"), ("FACEFLEET_REQUEST_TIMEOUT", "15")];
    let stack = start_stack_in(tempfile::tempdir().unwrap(), 3, &env, &[]).await;
    let c = reqwest::Client::new();
    client::enroll_labelled(&c, &stack.url, &d.join("face_images_100"), &d.join("labels_100.csv")).await.unwrap();
    let opts = course_load(stack.url.clone(), &d, "1000", 30, Some(300), 120);
    let load = tokio::spawn(async move { loadgen::run(&opts).await });
    let data_dir = stack.data.path().join("data");
    let mut seen = Vec::new();
    for _ in 0..1200 {
        seen = workers_of(&data_dir);
        if seen.len() >= 2 && stack.bucket_keys("facefleet-out-bucket").len() >= 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(!seen.is_empty(), "no worker started");
    // kill -9 the whole `up` mid-load.
    let mut stack = stack;
    stack.child.kill().unwrap();
    stack.child.wait().unwrap();
    load.abort();
    // Its workers exit on their own (parent-death signal); a bounded wait.
    for _ in 0..300 {
        if workers_of(&data_dir).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(workers_of(&data_dir), Vec::<u32>::new(), "workers outlived their `up` (were {seen:?})");

    // Restart on the same data folder, under load: never more than max.
    let data = std::mem::replace(&mut stack.data, tempfile::tempdir().unwrap());
    drop(stack);
    let stack = start_stack_in(data, 3, &env, &[]).await;
    let data_dir = stack.data.path().join("data");
    let (peak, watcher) = stack.watch_instances();
    let opts = course_load(stack.url.clone(), &d, "1000", 30, Some(150), 300);
    let load = tokio::spawn(async move { loadgen::run(&opts).await.unwrap() });
    let mut most = 0;
    while !load.is_finished() {
        most = most.max(workers_of(&data_dir).len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = load.await.unwrap();
    assert_eq!((report.completed, report.correct), (150, 150), "{report}");
    watcher.abort();
    assert!(most <= 3, "{most} worker processes ran (max 3)");
    assert!(peak.load(Ordering::SeqCst) <= 3);
    // Responses for the dead stack's waiters expire instead of circulating.
    stack.wait_for_zero_instances().await;
    for _ in 0..600 {
        if stack.status().await["response_queue_depth"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let st = stack.status().await;
    assert_eq!(st["response_queue_depth"], 0, "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_api_keys_and_an_open_course_route() {
    let d = dataset();
    let data = tempfile::tempdir().unwrap();
    let exe = env!("CARGO_BIN_EXE_facefleet");
    let out = Command::new(exe)
        .args(["keys", "create", "--scope", "admin", "--name", "test", "--data-dir"])
        .arg(data.path().join("data"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let secret = stdout.lines().last().unwrap().trim().to_string();
    assert!(secret.starts_with("ffk_"), "the secret is alone on the last line: {stdout}");
    // Workers started as new processes (not forked from the template).
    let stack = start_stack_in(data, 3, &[], &["--open-route", "/", "--no-worker-template"]).await;

    let mut h = reqwest::header::HeaderMap::new();
    h.insert("x-api-key", secret.parse().unwrap());
    let admin = reqwest::Client::builder().default_headers(h).build().unwrap();
    let anon = reqwest::Client::new();
    assert_eq!(anon.get(format!("{}/v1/status", stack.url)).send().await.unwrap().status(), 401);
    assert_eq!(anon.get(format!("{}/v1/people", stack.url)).send().await.unwrap().status(), 401);
    client::enroll_labelled(&admin, &stack.url, &d.join("face_images_100"), &d.join("labels_100.csv")).await.unwrap();
    // The course's workload on the open route, without a key.
    let opts = course_load(stack.url.clone(), &d, "100", 50, None, 300);
    let report = loadgen::run(&opts).await.unwrap();
    assert_eq!((report.completed, report.correct), (100, 100), "{report}");
    if std::env::var_os("FACEFLEET_API_KEY").is_none() {
        assert_eq!(report.stack, None, "the status needs a key here; the report says its stack is not known");
        assert!(report.to_string().starts_with("stack:     not known"), "{report}");
    }
    let st: serde_json::Value = admin.get(format!("{}/v1/status", stack.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(st["input_objects"], 100, "{st}");
    // What the stack is, without its paths (those are on the operator's banner only).
    assert!(st["stack"]["backend"].as_str().is_some_and(|b| b.starts_with("embedded")), "{st}");
    assert!(!st.to_string().contains(&stack.data.path().display().to_string()), "a path in the status: {st}");
    // Nor the ffmpeg's (scripts/test provides one through FACEFLEET_FFMPEG).
    if let Some(ff) = std::env::var("FACEFLEET_FFMPEG").ok().filter(|f| !f.is_empty()) {
        assert!(st["stack"]["video"].as_str().is_some_and(|v| v.starts_with("on (frames even:10")), "{st}");
        assert!(!st.to_string().contains(&ff), "the ffmpeg's path in the status: {st}");
    }
    let log = stack.log();
    assert!(log.contains("how=\"new process\"") && !log.contains("forked from the template"), "{log}");
}

#[test]
fn refuses_a_public_address_without_a_key() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_facefleet"))
        .args(["up", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(data.path().join("data"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to listen on 0.0.0.0:0 with no API key") && err.contains("keys create"), "{err}");
}

/// The README's first command, as a new user runs it: `facefleet up` with
/// its defaults (data in `./data` of the working folder, loopback, port
/// changed only so tests can run side by side), then one photo and one
/// video. The video path needs an ffmpeg (`scripts/test` provides one in
/// `FACEFLEET_FFMPEG`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn first_run_as_the_readme_says_answers_a_photo_and_a_video() {
    let d = dataset();
    let ffmpeg = std::env::var("FACEFLEET_FFMPEG").expect("FACEFLEET_FFMPEG must name an ffmpeg (scripts/test sets it)");
    let work = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = std::fs::File::create(work.path().join("up.log")).unwrap();
    let mut up = Command::new(env!("CARGO_BIN_EXE_facefleet"))
        .args(["up", "--port", &port.to_string()])
        .current_dir(work.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let c = reqwest::Client::new();
    let up_ok = healthy(&url).await;
    let banner = || std::fs::read_to_string(work.path().join("up.log")).unwrap_or_default();
    assert!(up_ok, "the stack did not come up:\n{}", banner());
    assert!(banner().contains("video       on (frames even:10"), "the banner says video is on:\n{}", banner());
    assert!(banner().contains(&format!("ffmpeg      {ffmpeg}\n")), "the banner names the ffmpeg:\n{}", banner());
    assert!(work.path().join("data").is_dir(), "data in ./data");

    // One photo.
    client::enroll_labelled(&c, &url, &d.join("face_images_100"), &d.join("labels_100.csv")).await.unwrap();
    let photo = d.join("face_images_1000/test_000.jpg");
    let answer = client::recognize(&c, &url, &photo, false).await.unwrap();
    assert_eq!(Some(answer.split_once(':').unwrap().1), labels(&d).get("test_000").map(String::as_str), "{answer}");

    // One video: enroll its person from one of its frames, upload, poll.
    let still = work.path().join("still.jpg");
    let video = d.join("videos/test_0.mp4");
    let st = Command::new(&ffmpeg).args(["-loglevel", "error", "-y", "-i"]).arg(&video).args(["-frames:v", "1"]).arg(&still).status().unwrap();
    assert!(st.success());
    client::enroll(&c, &url, "Trump", &[still]).await.unwrap();
    let form = reqwest::multipart::Form::new().part("video", reqwest::multipart::Part::bytes(std::fs::read(&video).unwrap()).file_name("test_0.mp4"));
    let r = c.post(format!("{url}/v1/videos")).multipart(form).send().await.unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let mut last = serde_json::Value::Null;
    for _ in 0..1200 {
        last = c.get(format!("{url}/v1/videos/test_0")).send().await.unwrap().json().await.unwrap();
        if last["status"] != "pending" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!((last["status"].as_str(), last["name"].as_str()), (Some("done"), Some("Trump")), "{last}");

    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(up.id() as i32), nix::sys::signal::Signal::SIGINT);
    let status = up.wait().unwrap();
    assert!(status.success(), "{status}\n{}", banner());
}
