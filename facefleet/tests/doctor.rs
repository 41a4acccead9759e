//! `facefleet doctor` as a user runs it: the built binary, a temporary data
//! folder, a free port, and a machine without ffmpeg (none anywhere: a
//! warning; one named by `$FACEFLEET_FFMPEG` but missing: a problem).

use std::path::Path;
use std::process::{Command, Output};

/// Variables of the user's environment that would change what is checked.
const CLEARED: &[&str] = &[
    "FACEFLEET_FFMPEG",
    "FACEFLEET_NO_VIDEO",
    "FACEFLEET_LISTEN",
    "FACEFLEET_PORT",
    "FACEFLEET_BACKEND",
    "FACEFLEET_DATA_DIR",
    "FACEFLEET_PREFIX",
    "FACEFLEET_RECOGNIZER",
    "FACEFLEET_WEIGHTS_DIR",
];

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs `facefleet doctor` over `data` on `port` with `PATH` set to an
/// empty folder and `$FACEFLEET_FFMPEG` naming a file that does not exist,
/// so that no ffmpeg can be found.
fn doctor(data: &Path, port: u16, extra: &[&str]) -> (Output, String) {
    doctor_with(data, port, extra, true)
}

/// [`doctor`], with `$FACEFLEET_FFMPEG` set to a missing file only when
/// `name_an_ffmpeg`.
fn doctor_with(data: &Path, port: u16, extra: &[&str], name_an_ffmpeg: bool) -> (Output, String) {
    let empty_path = data.join("empty-path");
    std::fs::create_dir_all(&empty_path).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_facefleet"));
    for v in CLEARED {
        cmd.env_remove(v);
    }
    if name_an_ffmpeg {
        cmd.env("FACEFLEET_FFMPEG", data.join("no-such-ffmpeg"));
    }
    let out = cmd
        .arg("doctor")
        .arg("--data-dir")
        .arg(data.join("data"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .env("PATH", &empty_path)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out, text)
}

#[test]
fn doctor_warns_that_video_is_off_when_no_ffmpeg_is_anywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, text) = doctor_with(tmp.path(), free_port(), &[], false);
    // `up` starts without ffmpeg (video off), so this is no problem.
    assert!(out.status.success(), "doctor failed although up can start:\n{text}");
    assert!(!text.contains("FAIL"), "{text}");
    let line = text.lines().find(|l| l.contains("ffmpeg") && l.contains("warn")).unwrap_or_else(|| panic!("no ffmpeg warning:\n{text}"));
    assert!(line.contains("video path off"), "{line}");
    assert!(text.contains("pip install imageio-ffmpeg"), "the warning names the fix:\n{text}");
    assert!(text.contains(", no problem: `facefleet up` can start."), "{text}");
}

#[test]
fn doctor_fails_when_the_named_ffmpeg_is_missing_and_names_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, text) = doctor(tmp.path(), free_port(), &[]);
    assert!(!out.status.success(), "doctor succeeded without the ffmpeg it was given:\n{text}");
    assert_eq!(out.status.code(), Some(1), "{text}");
    let line = text.lines().find(|l| l.contains("ffmpeg") && l.contains("FAIL")).unwrap_or_else(|| panic!("no failed ffmpeg line:\n{text}"));
    assert!(line.contains("no-such-ffmpeg"), "{line}");
    assert!(text.contains("pip install imageio-ffmpeg"), "{text}");
    assert!(text.contains("--no-video"), "{text}");
    // The other checks pass on the temporary folder and the free port.
    for name in ["cpu", "data dir", "port", "model"] {
        assert!(!text.lines().any(|l| l.contains("FAIL") && l.contains(name)), "{name} failed:\n{text}");
    }
    // A check does not create the data folder.
    assert!(!tmp.path().join("data").exists(), "{text}");
}

#[test]
fn doctor_passes_with_no_video() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, text) = doctor(tmp.path(), free_port(), &["--no-video"]);
    assert!(out.status.success(), "doctor failed with --no-video:\n{text}");
    assert!(!text.contains("FAIL"), "{text}");
    assert!(text.contains("ffmpeg"), "the skipped check is still listed:\n{text}");
}

#[test]
fn doctor_fails_when_the_port_is_taken() {
    let tmp = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (out, text) = doctor(tmp.path(), port, &["--no-video"]);
    assert_eq!(out.status.code(), Some(1), "doctor succeeded on a taken port:\n{text}");
    let line = text.lines().find(|l| l.contains("FAIL") && l.contains("port")).unwrap_or_else(|| panic!("no failed port line:\n{text}"));
    assert!(line.contains(&port.to_string()), "{line}");
    assert!(text.contains("--listen"), "the fix names another --listen:\n{text}");
    drop(taken);
}
