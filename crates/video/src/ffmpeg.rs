//! Running the real `ffmpeg` binary: locating it, sampling frames from a
//! video, timeouts and readable errors.
//!
//! ffmpeg is always started with an argument vector (never through a shell)
//! and every path is passed with ffmpeg's `file:` protocol prefix, so a file
//! name with spaces, quotes, `;`, or one that looks like another ffmpeg
//! protocol (`concat:`, `http:`...) is just a file name.
//!
//! # Sampling
//!
//! The course's function ran
//! `ffmpeg -ss 0 -r 1 -i <video> -vf fps=1/10 -start_number 0 -vframes 10 <dir>/output-%02d.jpg`
//! ([`Sampling::Course`]). Because `-r 1` before `-i` re-times the input to
//! one frame per second, that command keeps every 10th frame of the video,
//! at most 10: a 2 s clip at 24 fps (48 frames) yields only 5 frames (the
//! course's sample videos give 3 to 10). The default, [`Sampling::Even`],
//! keeps exactly `min(10, frame count)` frames spread evenly over the whole
//! video: frame `n` is kept when `(n * 10) mod N < 10`, which selects frame
//! `ceil(i * N / 10)` for `i = 0..10`. It first counts the video's frames
//! with a stream copy (no decoding, a few milliseconds).

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::time::Duration;

use tokio::io::AsyncReadExt;

/// Environment variable naming the ffmpeg binary to use.
pub const FFMPEG_ENV: &str = "FACEFLEET_FFMPEG";

/// Default limit on one ffmpeg run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// How many bytes of ffmpeg's stderr are kept for error messages.
const STDERR_TAIL: usize = 2000;

/// File name pattern of the frames (`output-00.jpg`, `output-01.jpg`...).
pub const FRAME_PATTERN: &str = "output-%02d.jpg";

/// What went wrong running ffmpeg.
#[derive(Debug, thiserror::Error)]
pub enum FfmpegError {
    /// No ffmpeg binary was found.
    #[error("ffmpeg not found: {0}")]
    NotFound(String),
    /// ffmpeg could not be started.
    #[error("cannot start ffmpeg `{path}`: {source}")]
    Spawn {
        /// The binary.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// ffmpeg ran longer than the limit and was killed.
    #[error("ffmpeg ran longer than {0:?} and was killed")]
    Timeout(Duration),
    /// ffmpeg exited with an error: the input is not a readable video.
    #[error("ffmpeg failed ({status}): {stderr}")]
    Failed {
        /// Exit status.
        status: String,
        /// The end of ffmpeg's stderr.
        stderr: String,
    },
    /// ffmpeg was killed by a signal (the OOM killer, an operator): this
    /// machine's trouble, not the input's, so worth a retry.
    #[error("ffmpeg was killed by signal {signal}: {stderr}")]
    Killed {
        /// The signal's number (9: SIGKILL).
        signal: i32,
        /// The end of ffmpeg's stderr.
        stderr: String,
    },
    /// The input has no video frame.
    #[error("no video frames in the input")]
    NoFrames,
    /// Reading the produced frames failed.
    #[error("reading ffmpeg's output: {0}")]
    Io(#[from] std::io::Error),
    /// The sampling specification is not valid.
    #[error("invalid sampling `{0}`: expected `even`, `even:N`, `course` or `fps:RATE[:MAX]`")]
    BadSampling(String),
}

impl FfmpegError {
    /// True when the error is about the input (a bad, truncated or empty
    /// video), so retrying will not help; false when it is about this
    /// machine (no ffmpeg, cannot spawn, ffmpeg killed by a signal, I/O).
    pub fn is_input_error(&self) -> bool {
        matches!(self, FfmpegError::Failed { .. } | FfmpegError::NoFrames | FfmpegError::Timeout(_))
    }

    /// The error in words fit for a client: no path of this machine (the
    /// temporary input, the ffmpeg binary), no memory address. For
    /// [`FfmpegError::Failed`], ffmpeg's last message line, cleaned. Log the
    /// `Display` form for the detail.
    pub fn public_message(&self) -> String {
        match self {
            FfmpegError::Failed { stderr, .. } => match last_message(stderr) {
                Some(line) => format!("ffmpeg could not decode the video ({line})"),
                None => "ffmpeg could not decode the video".to_string(),
            },
            FfmpegError::Killed { .. } => "ffmpeg was stopped by a signal on the server".to_string(),
            FfmpegError::NoFrames => "no video frames in the input".to_string(),
            FfmpegError::Timeout(t) => format!("ffmpeg ran longer than {t:?} and was killed"),
            FfmpegError::NotFound(_) | FfmpegError::Spawn { .. } => "ffmpeg is not available on the server".to_string(),
            FfmpegError::Io(_) => "reading ffmpeg's output failed".to_string(),
            FfmpegError::BadSampling(_) => "the server's frame sampling setting is invalid".to_string(),
        }
    }
}

/// ffmpeg's last non-empty stderr line without its `[demuxer @ 0x...]`
/// context or a leading path, at most 200 bytes, paths replaced.
fn last_message(stderr: &str) -> Option<String> {
    let line = stderr.lines().map(str::trim).rev().find(|l| !l.is_empty() && *l != "(no message)")?;
    let line = match line.strip_prefix('[').and_then(|l| l.split_once("] ")) {
        Some((_, rest)) => rest,
        None => line,
    };
    let line = crate::redact::scrub_paths(line);
    let placeholder = format!("{}: ", crate::redact::PATH_PLACEHOLDER);
    let mut line = line.strip_prefix(&placeholder).unwrap_or(&line).trim().to_string();
    if line.len() > 200 {
        let mut end = 197;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push_str("...");
    }
    (!line.is_empty()).then_some(line)
}

/// Which frames to take from a video.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sampling {
    /// Exactly `min(frames, frame count)` frames spread evenly over the
    /// video (default: 10).
    Even {
        /// Number of frames.
        frames: u32,
    },
    /// The course's command, verbatim:
    /// `-ss 0 -r 1 -i <video> -vf fps=1/10 -start_number 0 -vframes 10`
    /// (every 10th frame, at most 10; fewer for short clips).
    Course,
    /// ffmpeg's `fps` filter at `rate` (e.g. `1/2`: one frame every two
    /// seconds), at most `max_frames` frames.
    Fps {
        /// The `fps` filter's rate expression (digits, `/` and `.` only).
        rate: String,
        /// At most this many frames.
        max_frames: u32,
    },
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling::Even { frames: 10 }
    }
}

impl FromStr for Sampling {
    type Err = FfmpegError;
    /// Parses `even`, `even:N`, `course`, `fps:RATE` or `fps:RATE:MAX`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || FfmpegError::BadSampling(s.to_string());
        let parts: Vec<&str> = s.split(':').collect();
        let count = |p: &str| p.parse::<u32>().ok().filter(|n| (1..=100).contains(n)).ok_or_else(bad);
        match parts.as_slice() {
            ["even"] => Ok(Sampling::Even { frames: 10 }),
            ["even", n] => Ok(Sampling::Even { frames: count(n)? }),
            ["course"] => Ok(Sampling::Course),
            ["fps", rate] | ["fps", rate, _] => {
                let max_frames = if parts.len() == 3 { count(parts[2])? } else { 10 };
                let ok = !rate.is_empty()
                    && rate.chars().all(|c| c.is_ascii_digit() || c == '/' || c == '.')
                    && rate.chars().any(|c| c.is_ascii_digit() && c != '0');
                if !ok {
                    return Err(bad());
                }
                Ok(Sampling::Fps { rate: rate.to_string(), max_frames })
            }
            _ => Err(bad()),
        }
    }
}

/// Written as its text form (`even:10`), as in flags and the environment.
impl serde::Serialize for Sampling {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Sampling {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for Sampling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sampling::Even { frames } => write!(f, "even:{frames}"),
            Sampling::Course => f.write_str("course"),
            Sampling::Fps { rate, max_frames } => write!(f, "fps:{rate}:{max_frames}"),
        }
    }
}

/// The ffmpeg binary and the limit on each run.
#[derive(Debug, Clone)]
pub struct Ffmpeg {
    path: PathBuf,
    timeout: Duration,
}

/// `file:` + path: makes ffmpeg treat the argument as a plain file name.
fn file_arg(path: &Path) -> OsString {
    let mut s = OsString::from("file:");
    s.push(path.as_os_str());
    s
}

impl Ffmpeg {
    /// Uses the binary at `path` as is.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), timeout: DEFAULT_TIMEOUT }
    }

    /// Finds ffmpeg: `configured` if given, else `$FACEFLEET_FFMPEG`, else an
    /// `ffmpeg` next to the running executable (the Lambda package layout),
    /// else `ffmpeg` on `PATH`.
    pub fn locate(configured: Option<&Path>) -> Result<Self, FfmpegError> {
        if let Some(p) = configured {
            return Self::checked(p.to_path_buf(), "the configured path");
        }
        if let Some(p) = std::env::var_os(FFMPEG_ENV).filter(|v| !v.is_empty()) {
            return Self::checked(PathBuf::from(p), FFMPEG_ENV);
        }
        if let Some(dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
            let beside = dir.join("ffmpeg");
            if beside.is_file() {
                return Ok(Self::at(beside));
            }
        }
        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                let candidate = dir.join("ffmpeg");
                if candidate.is_file() {
                    return Ok(Self::at(candidate));
                }
            }
        }
        Err(FfmpegError::NotFound(format!(
            "set {FFMPEG_ENV} or the ffmpeg path option, or put `ffmpeg` on PATH"
        )))
    }

    fn checked(path: PathBuf, from: &str) -> Result<Self, FfmpegError> {
        if path.is_file() {
            Ok(Self::at(path))
        } else {
            Err(FfmpegError::NotFound(format!("{} (from {from}) is not a file", path.display())))
        }
    }

    /// Sets the limit on each ffmpeg run.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The binary.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The limit on each run.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs ffmpeg with `args` (no shell), stdin closed, killing it after the
    /// timeout. Returns its stdout on success.
    pub async fn run<I, S>(&self, args: I) -> Result<Vec<u8>, FfmpegError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut child = tokio::process::Command::new(&self.path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| FfmpegError::Spawn { path: self.path.clone(), source })?;
        let mut stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let work = async {
            let mut out = Vec::new();
            let mut err = Vec::new();
            let (r1, r2, status) =
                tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err), child.wait());
            r1?;
            r2?;
            Ok::<_, std::io::Error>((status?, out, err))
        };
        let (status, out, err) = match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r?,
            // Dropping `work` drops the child: kill_on_drop kills it.
            Err(_) => return Err(FfmpegError::Timeout(self.timeout)),
        };
        if status.success() {
            return Ok(out);
        }
        // Death by a signal says nothing about the input (SIGKILL: most
        // likely the OOM killer); only an exit with an error status does.
        #[cfg(unix)]
        if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
            return Err(FfmpegError::Killed { signal, stderr: stderr_tail(&err) });
        }
        Err(FfmpegError::Failed { status: status.to_string(), stderr: stderr_tail(&err) })
    }

    /// Number of video frames of `input`, counted by copying the first video
    /// stream to nowhere (demuxing only, no decoding).
    pub async fn count_frames(&self, input: &Path) -> Result<u64, FfmpegError> {
        let args: Vec<OsString> = vec![
            "-nostdin".into(),
            "-hide_banner".into(),
            "-loglevel".into(),
            "error".into(),
            "-i".into(),
            file_arg(input),
            "-map".into(),
            "0:v:0".into(),
            "-c".into(),
            "copy".into(),
            "-f".into(),
            "null".into(),
            "-progress".into(),
            "pipe:1".into(),
            "-".into(),
        ];
        let out = self.run(&args).await?;
        let text = String::from_utf8_lossy(&out);
        let frames = text
            .lines()
            .filter_map(|l| l.strip_prefix("frame="))
            .filter_map(|v| v.trim().parse::<u64>().ok())
            .next_back()
            .unwrap_or(0);
        Ok(frames)
    }

    /// The ffmpeg arguments that write the frames of `input` into `out_dir`
    /// as `output-00.jpg`, `output-01.jpg`... `frame_count` is the video's
    /// frame count (needed by [`Sampling::Even`] only).
    pub fn split_args(input: &Path, out_dir: &Path, sampling: &Sampling, frame_count: u64) -> Vec<OsString> {
        let mut args: Vec<OsString> =
            vec!["-nostdin".into(), "-hide_banner".into(), "-loglevel".into(), "error".into(), "-y".into()];
        let output = file_arg(&out_dir.join(FRAME_PATTERN));
        match sampling {
            Sampling::Course => {
                for a in ["-ss", "0", "-r", "1", "-i"] {
                    args.push(a.into());
                }
                args.push(file_arg(input));
                for a in ["-vf", "fps=1/10", "-start_number", "0", "-vframes", "10"] {
                    args.push(a.into());
                }
            }
            Sampling::Even { frames } => {
                let n = frame_count.max(1);
                args.push("-i".into());
                args.push(file_arg(input));
                args.push("-map".into());
                args.push("0:v:0".into());
                args.push("-vf".into());
                args.push(format!("select=lt(mod(n*{frames}\\,{n})\\,{frames})").into());
                for a in ["-fps_mode", "passthrough", "-start_number", "0", "-q:v", "2", "-frames:v"] {
                    args.push(a.into());
                }
                args.push(frames.to_string().into());
            }
            Sampling::Fps { rate, max_frames } => {
                args.push("-i".into());
                args.push(file_arg(input));
                args.push("-map".into());
                args.push("0:v:0".into());
                args.push("-vf".into());
                args.push(format!("fps={rate}").into());
                for a in ["-start_number", "0", "-q:v", "2", "-frames:v"] {
                    args.push(a.into());
                }
                args.push(max_frames.to_string().into());
            }
        }
        args.push(output);
        args
    }

    /// Samples frames of `input` into the (empty) directory `out_dir`;
    /// returns the frame files in order (`output-00.jpg`...). A file that is
    /// not a video, a truncated one or one without frames is an error with
    /// ffmpeg's own explanation.
    pub async fn split(&self, input: &Path, out_dir: &Path, sampling: &Sampling) -> Result<Vec<PathBuf>, FfmpegError> {
        let frame_count = match sampling {
            Sampling::Even { .. } => {
                let n = self.count_frames(input).await.map_err(map_no_video)?;
                if n == 0 {
                    return Err(FfmpegError::NoFrames);
                }
                n
            }
            _ => 0,
        };
        let args = Self::split_args(input, out_dir, sampling, frame_count);
        tracing::debug!(ffmpeg = %self.path.display(), ?args, "running ffmpeg");
        self.run(&args).await.map_err(map_no_video)?;
        let frames = list_frames(out_dir)?;
        if frames.is_empty() {
            return Err(FfmpegError::NoFrames);
        }
        Ok(frames)
    }
}

/// "Stream map matches no streams" means: no video stream at all.
fn map_no_video(e: FfmpegError) -> FfmpegError {
    match &e {
        FfmpegError::Failed { stderr, .. } if stderr.contains("matches no streams") => FfmpegError::NoFrames,
        _ => e,
    }
}

/// The `output-NN.jpg` files of `dir`, sorted.
pub fn list_frames(dir: &Path) -> Result<Vec<PathBuf>, std::io::Error> {
    let mut frames: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("output-") && n.ends_with(".jpg"))
        })
        .collect();
    frames.sort();
    Ok(frames)
}

fn stderr_tail(err: &[u8]) -> String {
    let text = String::from_utf8_lossy(err);
    let text = text.trim();
    if text.is_empty() {
        return "(no message)".to_string();
    }
    if text.len() <= STDERR_TAIL {
        return text.to_string();
    }
    let mut start = text.len() - STDERR_TAIL;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &text[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sampling() {
        assert_eq!("even".parse::<Sampling>().unwrap(), Sampling::Even { frames: 10 });
        assert_eq!("even:5".parse::<Sampling>().unwrap(), Sampling::Even { frames: 5 });
        assert_eq!("course".parse::<Sampling>().unwrap(), Sampling::Course);
        assert_eq!(
            "fps:1/2:4".parse::<Sampling>().unwrap(),
            Sampling::Fps { rate: "1/2".into(), max_frames: 4 }
        );
        for bad in ["", "even:0", "even:x", "fps:", "fps:0", "fps:1,split", "fps:1;rm", "other", "even:1:2"] {
            assert!(bad.parse::<Sampling>().is_err(), "{bad}");
        }
        for s in ["even:10", "course", "fps:1/2:4"] {
            assert_eq!(s.parse::<Sampling>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn course_arguments_are_the_course_command() {
        let args = Ffmpeg::split_args(Path::new("/v/a b.mp4"), Path::new("/o"), &Sampling::Course, 0);
        let args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        let tail = &args[5..];
        assert_eq!(
            tail,
            [
                "-ss", "0", "-r", "1", "-i", "file:/v/a b.mp4", "-vf", "fps=1/10", "-start_number", "0",
                "-vframes", "10", "file:/o/output-%02d.jpg"
            ]
        );
    }

    #[test]
    fn even_selection_picks_exactly_n_frames() {
        // The select expression, evaluated here as ffmpeg does.
        for total in [1u64, 5, 9, 10, 11, 25, 48, 63, 133, 1000] {
            let picked: Vec<u64> = (0..total).filter(|n| (n * 10) % total < 10).collect();
            assert_eq!(picked.len() as u64, total.min(10), "N={total}");
            assert_eq!(picked[0], 0);
        }
    }

    #[test]
    fn public_messages_carry_no_path() {
        let e = FfmpegError::Failed {
            status: "exit status: 183".into(),
            stderr: "[in#0 @ 0x55d0c0a1b2c0] Error opening input: Invalid data found when processing input\n\
                     Error opening input file file:/tmp/facefleet-split-XyZ/input.\n\
                     file:/tmp/facefleet-split-XyZ/input: Invalid data found when processing input"
                .into(),
        };
        assert_eq!(e.public_message(), "ffmpeg could not decode the video (Invalid data found when processing input)");
        let e = FfmpegError::Failed { status: "x".into(), stderr: "[mov,mp4 @ 0x1234] moov atom not found".into() };
        assert_eq!(e.public_message(), "ffmpeg could not decode the video (moov atom not found)");
        let e = FfmpegError::Failed { status: "x".into(), stderr: "(no message)".into() };
        assert_eq!(e.public_message(), "ffmpeg could not decode the video");
        let e = FfmpegError::Spawn { path: "/opt/x/ffmpeg".into(), source: std::io::Error::other("denied") };
        assert!(!e.public_message().contains('/'));
        let e = FfmpegError::NotFound("/opt/x/ffmpeg (from FACEFLEET_FFMPEG) is not a file".into());
        assert!(!e.public_message().contains('/'));
    }

    #[test]
    fn stderr_tail_keeps_the_end() {
        let long = "x".repeat(5000) + "the end";
        let t = stderr_tail(long.as_bytes());
        assert!(t.ends_with("the end") && t.len() < 2100);
        assert_eq!(stderr_tail(b"  "), "(no message)");
    }
}
