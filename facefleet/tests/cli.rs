//! The `facefleet` command line as a user runs it, mistakes included: a
//! `--url` without a scheme, arguments that do not go together, and a local
//! gallery recognising photos some of which cannot be read. The local
//! gallery needs `$FACEFLEET_SHARED_DIR/datasets/cse546` (default
//! `<workspace>/../shared`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn facefleet(args: &[&str]) -> (Output, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_facefleet")).args(args).env_remove("FACEFLEET_URL").output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    (out, stdout, stderr)
}

fn photo(stem: &str) -> PathBuf {
    let shared = std::env::var_os("FACEFLEET_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let p = shared.join("datasets/cse546/face_images_100").join(format!("{stem}.jpg"));
    assert!(p.is_file(), "{} is missing: this test needs the shared cse546 data set", p.display());
    p
}

#[test]
fn a_url_without_a_scheme_is_refused_up_front() {
    for args in [&["enroll", "--url", "127.0.0.1:1", "Paul", "x.jpg"][..], &["recognize", "--url", "localhost:8000", "x.jpg"], &["loadgen", "--url", "not-a-url", "--dir", "."]] {
        let (out, _, stderr) = facefleet(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("is not an http:// or https:// address"), "{args:?}: {stderr}");
    }
}

#[test]
fn errors_are_one_line_without_a_backtrace() {
    let tmp = tempfile::tempdir().unwrap();
    let labels = tmp.path().join("labels.csv");
    std::fs::write(&labels, "Image,Results\ntest_00,Paul\ntest_00,Emily\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_facefleet"))
        .args(["enroll", "--url", "http://127.0.0.1:1", "--labels", labels.to_str().unwrap(), "--dir", "."])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("error: ") && stderr.contains("labelled both \"Paul\" and \"Emily\""), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line, no backtrace: {stderr}");
}

#[test]
fn enroll_refuses_a_name_and_photos_beside_labels() {
    let (out, _, stderr) = facefleet(&["enroll", "--url", "http://127.0.0.1:1", "--labels", "l.csv", "--dir", ".", "Paul", "x.jpg"]);
    assert_eq!(out.status.code(), Some(2), "a usage error: {stderr}");
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}

#[test]
fn local_recognize_answers_on_stdout_and_fails_for_unreadable_photos() {
    let gallery = tempfile::tempdir().unwrap();
    let g = gallery.path().to_str().unwrap();
    let paul = photo("test_00");
    let (out, _, stderr) = facefleet(&["enroll", "--gallery", g, "Paul", paul.to_str().unwrap()]);
    assert!(out.status.success(), "{stderr}");
    // The server's name rule holds for a local gallery too.
    let (out, _, stderr) = facefleet(&["enroll", "--gallery", g, "a/b", paul.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{stderr}");

    let missing = gallery.path().join("missing.jpg");
    let (out, stdout, stderr) = facefleet(&["recognize", "--gallery", g, paul.to_str().unwrap(), missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "one photo failed: {stdout} {stderr}");
    assert_eq!(stdout.trim(), "test_00:Paul", "answers only on stdout");
    assert!(stderr.contains("missing") && stderr.contains("1 of 2 photos failed"), "{stderr}");
}

#[test]
fn listing_keys_of_a_missing_data_folder_fails_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let typo = tmp.path().join("dtaa");
    for args in [&["keys", "list", "--data-dir"][..], &["keys", "revoke", "k1", "--data-dir"]] {
        let mut args = args.to_vec();
        args.push(typo.to_str().unwrap());
        let (out, stdout, stderr) = facefleet(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stdout} {stderr}");
        assert!(stderr.contains("no deployment in"), "{stderr}");
        assert!(!typo.exists(), "{args:?} created the folder");
    }
    // Creating a key is how a deployment can start: it makes the folder.
    let (out, _, stderr) = facefleet(&["keys", "create", "--scope", "admin", "--data-dir", typo.to_str().unwrap()]);
    assert!(out.status.success(), "{stderr}");
    let (out, stdout, _) = facefleet(&["keys", "list", "--data-dir", typo.to_str().unwrap()]);
    assert!(out.status.success() && stdout.contains("admin") && stdout.contains("created (UTC)"), "{stdout}");
}

#[test]
fn loadgen_refuses_a_zero_limit() {
    let (out, _, stderr) = facefleet(&["loadgen", "--url", "http://127.0.0.1:1", "--dir", ".", "--limit", "0"]);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
}

#[test]
fn loadgen_says_why_its_requests_failed() {
    let dir = photo("test_00").parent().unwrap().to_path_buf();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port(); // free, nobody listens
    let url = format!("http://127.0.0.1:{port}");
    let (out, _, stderr) = facefleet(&["loadgen", "--url", &url, "--dir", dir.to_str().unwrap(), "--limit", "2", "--quiet", "--timeout", "5"]);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("2 failed with no answer:"), "{stderr}");
}
