//! Object keys of the video path, all derived from the video's *stem* (its
//! key without the extension: `test_0.mp4` → `test_0`).
//!
//! | bucket            | key                        | what                           |
//! |-------------------|----------------------------|--------------------------------|
//! | `<prefix>-input`  | `<stem>.mp4`               | the uploaded video             |
//! | `<prefix>-stage-1`| `<stem>/manifest.json`     | frame count ([`crate::Manifest`]) |
//! | `<prefix>-stage-1`| `<stem>/output-NN.jpg`     | the sampled frames             |
//! | `<prefix>-output` | `<stem>/output-NN.txt`     | names found in frame NN        |
//! | `<prefix>-output` | `<stem>/output-NN.error`   | why frame NN failed            |
//! | `<prefix>-output` | `<stem>.txt`               | the person of the video        |
//! | `<prefix>-output` | `<stem>.error`             | why the video failed           |

use facefleet_ports::validate_key;

/// Longest uploaded file name (and so video stem) accepted, in bytes of
/// UTF-8. Object keys may be 1024 bytes long, but the embedded store keeps
/// each key segment as a file name, and file systems allow 255 bytes: 200
/// leaves room for the derived `<stem>.error` and the trigger's markers.
pub const MAX_NAME_BYTES: usize = 200;

/// The stem of a video key: the key without the extension of its last
/// segment (`dir/a.b.mp4` → `dir/a.b`; `noext` → `noext`; `.hidden` stays).
pub fn video_stem(key: &str) -> &str {
    let last_start = key.rfind('/').map_or(0, |i| i + 1);
    match key[last_start..].rfind('.') {
        Some(dot) if dot > 0 => &key[..last_start + dot],
        _ => key,
    }
}

/// Checks that outputs can be written for the video `key`: the key and its
/// stem-derived keys must be valid object keys (no `..`, `.` or empty
/// segment, no absolute path, no control characters). Returns the reason
/// otherwise.
pub fn check_video_key(key: &str) -> Result<(), String> {
    validate_key(key).map_err(|e| e.to_string())?;
    let stem = video_stem(key);
    validate_key(&frame_key(stem, 0)).map_err(|e| e.to_string())?;
    validate_key(&video_error_key(stem)).map_err(|e| e.to_string())
}

/// A stem that is always a valid key prefix, used to record the failure of
/// a video whose own key is unsafe: every `.`/`..`/empty segment and every
/// control character or backslash becomes `_`.
pub fn safe_stem(key: &str) -> String {
    let stem = video_stem(key);
    let mut out: Vec<String> = stem
        .split('/')
        .map(|seg| {
            let seg: String =
                seg.chars().map(|c| if c.is_control() || c == '\\' { '_' } else { c }).collect();
            match seg.as_str() {
                "" => "_".to_string(),
                "." | ".." => "_".repeat(seg.len()),
                _ => seg,
            }
        })
        .collect();
    if out.is_empty() {
        out.push("_".to_string());
    }
    let mut s = out.join("/");
    // Leave room for `/output-NN.error`.
    while s.len() > 1000 {
        s.pop();
    }
    s
}

/// `<stem>/output-NN.jpg` (at least two digits, as ffmpeg's `%02d`).
pub fn frame_key(stem: &str, index: usize) -> String {
    format!("{stem}/output-{index:02}.jpg")
}

/// `<stem>/manifest.json` in the stage-1 bucket.
pub fn manifest_key(stem: &str) -> String {
    format!("{stem}/manifest.json")
}

/// `<stem>/output-NN.txt` in the output bucket.
pub fn frame_result_key(stem: &str, index: usize) -> String {
    format!("{stem}/output-{index:02}.txt")
}

/// `<stem>/output-NN.error` in the output bucket.
pub fn frame_error_key(stem: &str, index: usize) -> String {
    format!("{stem}/output-{index:02}.error")
}

/// `<stem>/output-` : prefix of all per-frame results of a video.
pub fn frame_results_prefix(stem: &str) -> String {
    format!("{stem}/output-")
}

/// `<stem>.txt` in the output bucket: the person of the video.
pub fn video_result_key(stem: &str) -> String {
    format!("{stem}.txt")
}

/// `<stem>.error` in the output bucket: why the video failed.
pub fn video_error_key(stem: &str) -> String {
    format!("{stem}.error")
}

/// Splits a stage-1 frame key `<stem>/output-NN.jpg` into stem and index.
pub fn parse_frame_key(key: &str) -> Option<(&str, usize)> {
    let (stem, file) = key.rsplit_once('/')?;
    let index = parse_frame_file(file, ".jpg")?;
    (!stem.is_empty()).then_some((stem, index))
}

/// The frame index of a per-frame result file name `output-NN.txt` or
/// `output-NN.error`, if it is one.
pub fn parse_frame_result_file(file: &str) -> Option<usize> {
    parse_frame_file(file, ".txt").or_else(|| parse_frame_file(file, ".error"))
}

fn parse_frame_file(file: &str, ext: &str) -> Option<usize> {
    let digits = file.strip_prefix("output-")?.strip_suffix(ext)?;
    if digits.len() < 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Turns an uploaded file name into an input key: its last path component
/// (a client may send `C:\videos\a.mp4` or `../../a.mp4`), which must be a
/// valid, non-hidden key.
pub fn upload_key(file_name: &str) -> Result<String, String> {
    let base = file_name.rsplit(['/', '\\']).next().unwrap_or("").trim();
    if base.len() > MAX_NAME_BYTES {
        return Err(format!(
            "file name too long: {} bytes, the limit is {MAX_NAME_BYTES} bytes (UTF-8)",
            base.len()
        ));
    }
    if base.is_empty() || base == "." || base == ".." {
        return Err(format!("file name {file_name:?} has no usable base name"));
    }
    if base.starts_with('.') {
        return Err(format!("file name {file_name:?} is hidden (starts with a dot)"));
    }
    check_video_key(base)?;
    Ok(base.to_string())
}

/// Checks a stem given by a client (`GET /v1/videos/{stem}`): at most
/// [`MAX_NAME_BYTES`] bytes, a single segment (no `/`), and a valid video
/// key. Returns the reason otherwise.
pub fn check_client_stem(stem: &str) -> Result<(), String> {
    if stem.is_empty() {
        return Err("empty video name".into());
    }
    if stem.len() > MAX_NAME_BYTES {
        return Err(format!(
            "video name too long: {} bytes, the limit is {MAX_NAME_BYTES} bytes (UTF-8)",
            stem.len()
        ));
    }
    if stem.contains('/') {
        return Err("a video name has no `/`".into());
    }
    check_video_key(stem).map_err(|e| format!("invalid video name: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems() {
        assert_eq!(video_stem("test_0.mp4"), "test_0");
        assert_eq!(video_stem("dir/a.b.mp4"), "dir/a.b");
        assert_eq!(video_stem("noext"), "noext");
        assert_eq!(video_stem(".hidden"), ".hidden");
        assert_eq!(video_stem("d.x/file"), "d.x/file");
        assert_eq!(video_stem("my \"best\" vidéo.mp4"), "my \"best\" vidéo");
    }

    #[test]
    fn frame_keys_round_trip() {
        assert_eq!(frame_key("test_0", 3), "test_0/output-03.jpg");
        assert_eq!(parse_frame_key("test_0/output-03.jpg"), Some(("test_0", 3)));
        assert_eq!(parse_frame_key("a/b c/output-120.jpg"), Some(("a/b c", 120)));
        assert_eq!(parse_frame_key("test_0/manifest.json"), None);
        assert_eq!(parse_frame_key("output-03.jpg"), None);
        assert_eq!(parse_frame_key("x/output-3.jpg"), None);
        assert_eq!(parse_frame_result_file("output-07.txt"), Some(7));
        assert_eq!(parse_frame_result_file("output-07.error"), Some(7));
        assert_eq!(parse_frame_result_file("output-07.jpg"), None);
    }

    #[test]
    fn unsafe_keys_are_refused_and_have_a_safe_stem() {
        assert!(check_video_key("../evil.mp4").is_err());
        assert!(check_video_key("a/../../evil.mp4").is_err());
        assert!(check_video_key("/abs.mp4").is_err());
        assert!(check_video_key("ok dir/vidéo \"1\".mp4").is_ok());
        assert_eq!(safe_stem("../evil.mp4"), "__/evil");
        assert_eq!(safe_stem("a//b.mp4"), "a/_/b");
        assert_eq!(safe_stem("a\nb.mp4"), "a_b");
        for k in ["../evil.mp4", "/abs.mp4", "a//b.mp4", "./x", "..", "a\\b.mp4"] {
            let s = safe_stem(k);
            assert!(validate_key(&video_error_key(&s)).is_ok(), "{k:?} -> {s:?}");
        }
    }

    #[test]
    fn upload_names() {
        assert_eq!(upload_key("../../etc/passwd.mp4").unwrap(), "passwd.mp4");
        assert_eq!(upload_key("C:\\videos\\a b.mp4").unwrap(), "a b.mp4");
        assert_eq!(upload_key("vidéo \"x\".mp4").unwrap(), "vidéo \"x\".mp4");
        for bad in ["", "..", "dir/", ".hidden.mp4", "a\nb.mp4"] {
            assert!(upload_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn name_length_is_limited_in_bytes() {
        let ok = format!("{}.mp4", "a".repeat(MAX_NAME_BYTES - 4));
        assert_eq!(upload_key(&format!("dir/{ok}")).unwrap(), ok);
        let long = format!("{}.mp4", "a".repeat(MAX_NAME_BYTES - 3));
        let e = upload_key(&long).unwrap_err();
        assert!(e.contains("201 bytes") && e.contains("limit is 200 bytes"), "{e}");
        // 'é' is two bytes: 101 of them are over the limit.
        assert!(upload_key(&"é".repeat(101)).unwrap_err().contains("202 bytes"));
        assert!(check_client_stem(&"x".repeat(MAX_NAME_BYTES)).is_ok());
        assert!(check_client_stem(&"x".repeat(300)).unwrap_err().contains("limit is 200 bytes"));
        for bad in ["", "a/b", "..", "a\nb"] {
            assert!(check_client_stem(bad).is_err(), "{bad:?}");
        }
    }
}
