//! The ffmpeg runner against the real binary.

mod common;

use std::path::Path;
use std::time::Duration;

use facefleet_video::{Ffmpeg, FfmpegError, Sampling};

#[tokio::test]
async fn even_sampling_gives_exactly_ten_frames_for_every_course_video() {
    let ff = common::ffmpeg();
    for (stem, path, _) in common::course_videos() {
        let out = tempfile::tempdir().unwrap();
        let frames = ff.split(&path, out.path(), &Sampling::default()).await.unwrap();
        let names: Vec<String> =
            frames.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        let expected: Vec<String> = (0..10).map(|i| format!("output-{i:02}.jpg")).collect();
        assert_eq!(names, expected, "{stem}");
        for f in &frames {
            let bytes = std::fs::read(f).unwrap();
            assert!(bytes.starts_with(&[0xFF, 0xD8]) && bytes.len() > 1000, "{stem}: {} is not a JPEG", f.display());
        }
    }
}

#[tokio::test]
async fn course_sampling_is_the_course_command_and_gives_fewer_frames_on_short_clips() {
    // Documents why `even` is the default: the course command keeps every
    // 10th frame, so a 2 s clip at 24 fps (48 frames) gives 5.
    let ff = common::ffmpeg();
    let videos = common::videos_dir();
    let out = tempfile::tempdir().unwrap();
    let frames = ff.split(&videos.join("test_0.mp4"), out.path(), &Sampling::Course).await.unwrap();
    let count = ff.count_frames(&videos.join("test_0.mp4")).await.unwrap();
    assert_eq!(count, 48);
    assert_eq!(frames.len(), 5);
}

#[tokio::test]
async fn file_names_with_spaces_quotes_and_shell_syntax_are_just_names() {
    let ff = common::ffmpeg();
    let dir = tempfile::tempdir().unwrap();
    let name = "a b 'c' \"d\" $(touch facefleet-pwned) `touch facefleet-pwned` ; vidéo.mp4";
    let input = dir.path().join(name);
    std::fs::copy(common::videos_dir().join("test_7.mp4"), &input).unwrap();
    let out = dir.path().join("out dir 'x'");
    std::fs::create_dir(&out).unwrap();
    let frames = ff.split(&input, &out, &Sampling::Even { frames: 3 }).await.unwrap();
    assert_eq!(frames.len(), 3);
    assert!(!Path::new("facefleet-pwned").exists() && !dir.path().join("facefleet-pwned").exists(), "a shell ran the file name");
    // A name that looks like another ffmpeg protocol is still a file.
    let tricky = dir.path().join("concat:x|y.mp4");
    std::fs::copy(common::videos_dir().join("test_7.mp4"), &tricky).unwrap();
    assert_eq!(ff.count_frames(&tricky).await.unwrap(), 25);
}

#[tokio::test]
async fn bad_inputs_are_input_errors_with_ffmpegs_message() {
    let ff = common::ffmpeg();
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.mp4");
    std::fs::write(&text, "this is not a video\n".repeat(100)).unwrap();
    let empty = dir.path().join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    let truncated = dir.path().join("truncated.mp4");
    let full = std::fs::read(common::videos_dir().join("test_0.mp4")).unwrap();
    std::fs::write(&truncated, &full[..600]).unwrap();
    for input in [&text, &empty, &truncated] {
        let out = tempfile::tempdir().unwrap();
        let err = ff.split(input, out.path(), &Sampling::default()).await.unwrap_err();
        assert!(err.is_input_error(), "{}: {err}", input.display());
        if let FfmpegError::Failed { stderr, .. } = &err {
            assert!(!stderr.is_empty());
        }
    }
    // Cut after a third (this file has its index first): ffmpeg decodes
    // what is there.
    let third = dir.path().join("third.mp4");
    std::fs::write(&third, &full[..full.len() / 3]).unwrap();
    let out = tempfile::tempdir().unwrap();
    let frames = ff.split(&third, out.path(), &Sampling::default()).await.unwrap();
    assert!((1..=10).contains(&frames.len()), "{}", frames.len());
    let missing = ff.split(Path::new("/nonexistent/x.mp4"), dir.path(), &Sampling::default()).await.unwrap_err();
    assert!(missing.to_string().contains("No such file"), "{missing}");
}

#[tokio::test]
async fn an_audio_only_file_has_no_frames() {
    let ff = common::ffmpeg();
    let dir = tempfile::tempdir().unwrap();
    let audio = dir.path().join("tone.m4a");
    ff.run(["-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac"]
        .iter()
        .map(std::ffi::OsString::from)
        .chain([audio.as_os_str().to_os_string()]))
        .await
        .unwrap();
    let err = ff.split(&audio, dir.path(), &Sampling::default()).await.unwrap_err();
    assert!(matches!(err, FfmpegError::NoFrames), "{err}");
}

#[tokio::test]
async fn a_run_past_the_timeout_is_killed() {
    let ff = common::ffmpeg().with_timeout(Duration::from_millis(200));
    // An endless test pattern: never finishes by itself.
    let err = ff
        .run(["-nostdin", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc", "-f", "null", "-"])
        .await
        .unwrap_err();
    assert!(matches!(err, FfmpegError::Timeout(_)), "{err}");
}

#[test]
fn a_missing_configured_ffmpeg_is_a_clear_error() {
    let err = facefleet_video::Ffmpeg::locate(Some(Path::new("/nonexistent/ffmpeg"))).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/ffmpeg"), "{err}");
}

#[tokio::test]
async fn an_ffmpeg_killed_by_a_signal_is_worth_a_retry() {
    // As the OOM killer does: SIGKILL, whatever the input.
    let dir = tempfile::tempdir().unwrap();
    let script = common::fake_ffmpeg(dir.path(), "ffmpeg", "kill -KILL $$");
    let input = common::videos_dir().join("test_0.mp4");
    let out = tempfile::tempdir().unwrap();
    let err = loop {
        match Ffmpeg::at(&script).split(&input, out.path(), &Sampling::default()).await.unwrap_err() {
            // The script was just written: another test's fork may still
            // hold it open for a moment ("text file busy").
            FfmpegError::Spawn { source, .. } if source.raw_os_error() == Some(26) => continue,
            err => break err,
        }
    };
    assert!(matches!(err, FfmpegError::Killed { signal: 9, .. }), "{err}");
    assert!(!err.is_input_error(), "{err}");
    assert!(!err.public_message().contains("decode"), "{}", err.public_message());
}
