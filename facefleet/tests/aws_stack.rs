//! The real binaries on the AWS backend: `facefleet provision` and
//! `facefleet up --backend aws` (web tier, autoscaler, worker processes,
//! real model) with all S3/SQS traffic going to the AWS emulator that
//! `scripts/test` starts (`FACEFLEET_TEST_AWS_ENDPOINT`). Fails clearly
//! when the emulator or the shared data set is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use facefleet_app::{client, loadgen};

fn endpoint() -> String {
    std::env::var("FACEFLEET_TEST_AWS_ENDPOINT").expect(
        "FACEFLEET_TEST_AWS_ENDPOINT is not set: run this test through scripts/test, which starts the AWS emulator",
    )
}

fn cse546() -> PathBuf {
    let shared = std::env::var_os("FACEFLEET_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let d = shared.join("datasets/cse546");
    assert!(d.join("labels_100.csv").is_file(), "the CSE546 data set is missing at {}", d.display());
    d
}

/// Runs `facefleet` with the emulator's endpoint and test credentials.
fn facefleet(endpoint: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_facefleet"));
    cmd.env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .stdin(Stdio::null());
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cse546_100_through_the_binaries_on_the_emulator() {
    let endpoint = endpoint();
    let d = cse546();
    let prefix = format!("ffstack{}", std::process::id());

    let out = facefleet(&endpoint).args(["provision", "--prefix", &prefix]).output().unwrap();
    assert!(out.status.success(), "provision failed: {}", String::from_utf8_lossy(&out.stderr));

    let data = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let log = std::fs::File::create(data.path().join("up.log")).unwrap();
    let exe = env!("CARGO_BIN_EXE_facefleet");
    let mut child = facefleet(&endpoint)
        .args(["up", "--backend", "aws", "--fleet", "local", "--no-video", "--prefix", &prefix])
        .args(["--listen", &format!("127.0.0.1:{port}"), "--max-instances", "3"])
        .arg("--data-dir")
        .arg(data.path().join("data"))
        .args(["--worker-program", exe])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let log_text = || std::fs::read_to_string(data.path().join("up.log")).unwrap_or_default();
    let mut up = false;
    for _ in 0..600 {
        if http.get(format!("{url}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "the stack did not come up; log:\n{}", log_text());

    let (_, faces) = client::enroll_labelled(&http, &url, &d.join("face_images_100"), &d.join("labels_100.csv"))
        .await
        .unwrap();
    assert_eq!(faces, 100);
    let report = loadgen::run(&loadgen::LoadgenOptions {
        url: url.clone(),
        dir: d.join("face_images_100"),
        labels: Some(d.join("labels_100.csv")),
        concurrency: 20,
        limit: None,
        timeout: Duration::from_secs(300),
        progress: false,
    })
    .await
    .unwrap();
    assert_eq!((report.requests, report.completed, report.correct), (100, 100, 100), "{report}\n{}", log_text());

    // Both queues drain (responses are deleted as they are dispatched).
    let mut status = serde_json::Value::Null;
    for _ in 0..600 {
        status = http.get(format!("{url}/v1/status")).send().await.unwrap().json().await.unwrap();
        let drained = ["request_queue_depth", "request_queue_in_flight", "response_queue_depth"]
            .iter()
            .all(|k| status[*k] == 0);
        if drained {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status["request_queue_depth"], 0, "{status}");
    assert_eq!(status["request_queue_in_flight"], 0, "{status}");
    assert_eq!(status["response_queue_depth"], 0, "{status}");
    assert_eq!((status["input_objects"].as_u64(), status["output_objects"].as_u64()), (Some(100), Some(100)), "{status}");
    println!("{report}");

    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT);
    for _ in 0..300 {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    let out = facefleet(&endpoint).args(["teardown", "--yes", "--prefix", &prefix]).output().unwrap();
    assert!(out.status.success(), "teardown failed: {}", String::from_utf8_lossy(&out.stderr));
}
