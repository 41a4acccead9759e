//! `facefleet doctor`: checks, before a first `facefleet up`, everything
//! `up` needs on this machine (CPU, ffmpeg, data folder and disk space, the
//! listen port and API keys, the model weights, and with `--backend aws`
//! the credentials and provisioned resources) and says how to fix each
//! problem.
//!
//! Every check prints one line, `ok`, `warn` or `FAIL`, followed by the fix
//! for a problem. The exit status is 1 when something asked for cannot work
//! (a `FAIL`), 0 otherwise (warnings included).

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::settings::{BackendArgs, BackendKind, ModelArgs, WebArgs};
use facefleet_ports::Names;
use facefleet_video::ffmpeg::{Ffmpeg, FfmpegError, FFMPEG_ENV};

/// Below this much free space in the data folder: a warning.
const LOW_DISK: u64 = 1 << 30;

/// Limit on `ffmpeg -version`.
const FFMPEG_VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Flags of `facefleet doctor`: the same meaning (and environment
/// fallbacks) as those of `facefleet up`.
#[derive(clap::Args, Debug, Clone)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub backend: BackendArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    /// `up`'s web flags (`--listen`, `--port`...).
    #[command(flatten)]
    pub web: WebArgs,
    /// `up`'s video flags: with `--no-video`, ffmpeg is not checked.
    #[command(flatten)]
    pub video: crate::video::VideoArgs,
}

impl DoctorArgs {
    /// `--data-dir D --prefix P` as `up` or `keys` would need them, for
    /// the commands of a fix (defaults left out).
    fn deployment_flags(&self) -> String {
        let mut s = String::new();
        match self.backend.backend {
            BackendKind::Embedded => {
                if self.backend.data_dir != Path::new("./data") {
                    let _ = write!(s, " --data-dir {}", shell_word(&self.backend.data_dir.display().to_string()));
                }
            }
            BackendKind::Aws => s.push_str(" --backend aws"),
        }
        if self.backend.prefix != Names::DEFAULT_PREFIX {
            let _ = write!(s, " --prefix {}", shell_word(&self.backend.prefix));
        }
        s
    }
}

/// How a check went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    /// Not run (not asked for).
    Skip,
    Ok,
    Warn,
    Fail,
}

impl Level {
    fn label(self) -> &'static str {
        match self {
            Level::Skip => "skip",
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        }
    }
}

/// One check's line, with notes under it and the fixes of a problem (each
/// fix one or more lines to type; the fixes are alternatives).
#[derive(Debug, Clone)]
struct Check {
    name: &'static str,
    level: Level,
    detail: String,
    notes: Vec<String>,
    fixes: Vec<Vec<String>>,
}

impl Check {
    fn new(name: &'static str, level: Level, detail: impl Into<String>) -> Self {
        Check { name, level, detail: detail.into(), notes: Vec::new(), fixes: Vec::new() }
    }
    fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Self::new(name, Level::Ok, detail)
    }
    fn warn(name: &'static str, detail: impl Into<String>) -> Self {
        Self::new(name, Level::Warn, detail)
    }
    fn fail(name: &'static str, detail: impl Into<String>) -> Self {
        Self::new(name, Level::Fail, detail)
    }
    fn note(mut self, line: impl Into<String>) -> Self {
        self.notes.push(line.into());
        self
    }
    fn fix<S: Into<String>>(mut self, lines: impl IntoIterator<Item = S>) -> Self {
        self.fixes.push(lines.into_iter().map(Into::into).collect());
        self
    }
}

/// Runs every check, prints the report and exits with status 1 when a
/// check failed.
pub async fn run(args: DoctorArgs) -> anyhow::Result<()> {
    let mut checks = vec![cpu_check()];
    if args.video.no_video {
        checks.push(Check::new("ffmpeg", Level::Skip, "not needed: video is off (--no-video)"));
    } else {
        checks.push(ffmpeg_check(args.video.ffmpeg.as_deref()).await);
    }
    match args.backend.backend {
        BackendKind::Embedded => checks.extend(data_dir_checks(&args)),
        BackendKind::Aws => checks.extend(aws_checks(&args).await),
    }
    checks.extend(port_checks(&args).await);
    checks.push(model_check(&args.model).await);

    let report = render(&checks);
    let mut out = std::io::stdout().lock();
    out.write_all(report.as_bytes())?;
    out.flush()?;
    if checks.iter().any(|c| c.level == Level::Fail) {
        std::process::exit(1);
    }
    Ok(())
}

/// The report: one aligned line per check, notes and fixes under it, and a
/// summary.
fn render(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    // "  LEVEL  name  " before the detail.
    let indent = " ".repeat(2 + 4 + 2 + width + 2);
    let mut s = String::from("facefleet doctor: what `facefleet up` needs on this machine\n\n");
    for c in checks {
        let _ = writeln!(s, "  {:<4}  {:<width$}  {}", c.level.label(), c.name, c.detail);
        for n in &c.notes {
            let _ = writeln!(s, "{indent}{n}");
        }
        for (i, fix) in c.fixes.iter().enumerate() {
            let label = if i == 0 { "fix:" } else { " or:" };
            for (j, line) in fix.iter().enumerate() {
                let _ = writeln!(s, "{indent}{} {line}", if j == 0 { label } else { "    " });
            }
        }
    }
    let fails = checks.iter().filter(|c| c.level == Level::Fail).count();
    let warns = checks.iter().filter(|c| c.level == Level::Warn).count();
    let plural = |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    s.push('\n');
    if fails > 0 {
        let _ = write!(s, "{}: `facefleet up` will not work until ", plural(fails, "problem", "problems"));
        s.push_str(if fails == 1 { "it is fixed" } else { "they are fixed" });
        if warns > 0 {
            let _ = write!(s, " ({})", plural(warns, "warning", "warnings"));
        }
        s.push_str(".\n");
    } else if warns > 0 {
        let _ = writeln!(s, "{}, no problem: `facefleet up` can start.", plural(warns, "warning", "warnings"));
    } else {
        s.push_str("Everything is in place: `facefleet up` can start.\n");
    }
    s
}

/// The SIMD path of the model's kernels, and the CPU they run on.
fn cpu_check() -> Check {
    let path = facefleet_model::simd::simd_path();
    let features = facefleet_model::simd::cpu_features();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let features = if features.is_empty() { "no SIMD features detected".to_string() } else { features.join(" ") };
    let detail = format!(
        "{path} kernels on {} ({features}), {} available",
        facefleet_model::simd::cpu_model(),
        if cpus == 1 { "1 CPU".to_string() } else { format!("{cpus} CPUs") }
    );
    if path == facefleet_model::simd::BASELINE {
        let check = Check::warn("cpu", detail);
        if cfg!(target_arch = "x86_64") {
            // The baseline runs the integer kernels in SSE2 (model README, "Without AVX2").
            check
                .note("no AVX2+FMA or AVX-512: the model runs its SSE2 kernels, about half as fast")
                .note("(about twice the time per photo of the same core with AVX2)")
        } else {
            check
                .note("no AVX2+FMA, AVX-512 or NEON: the model works but is several times slower")
                .note("(expect well over 100 ms per photo instead of about 20 ms)")
        }
    } else {
        Check::ok("cpu", detail)
    }
}

/// The fixes of a missing or broken ffmpeg.
fn ffmpeg_fixes(c: Check) -> Check {
    c.fix([
        "python3 -m pip install imageio-ffmpeg",
        "export FACEFLEET_FFMPEG=$(python3 -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())')",
    ])
    .fix(["sudo apt-get install ffmpeg"])
    .fix(["start with scripts/up, which provides one from PyPI in ./.venv"])
    .fix(["run without the video path: facefleet up --no-video"])
}

/// Finds ffmpeg the way the video path does and runs `ffmpeg -version`.
///
/// None found where nobody named one is a warning: `up` then starts with the
/// video path off. An ffmpeg named by `--ffmpeg` or `$FACEFLEET_FFMPEG` that
/// is missing, or one that does not run, is a problem.
async fn ffmpeg_check(configured: Option<&Path>) -> Check {
    let from_env = std::env::var_os(FFMPEG_ENV).filter(|v| !v.is_empty());
    let ff = match Ffmpeg::locate(configured) {
        Ok(ff) => ff,
        Err(FfmpegError::NotFound(_)) if configured.is_none() && from_env.is_none() => {
            let c = Check::warn("ffmpeg", "not found next to facefleet or on PATH: `up` starts with the video path off")
                .note("(POST /v1/videos answers 503 until an ffmpeg is found at start)");
            return ffmpeg_fixes(c);
        }
        Err(e) => {
            let why = match e {
                FfmpegError::NotFound(why) => why,
                other => other.to_string(),
            };
            let mut c = Check::fail("ffmpeg", format!("{why}; the video path needs it"));
            if configured.is_some() {
                c = c.fix(["give --ffmpeg the path of a working ffmpeg binary"]);
            } else if from_env.is_some() {
                c = c.note(format!("${FFMPEG_ENV} names a file that does not exist: correct it, or `unset {FFMPEG_ENV}` to search PATH"));
            }
            return ffmpeg_fixes(c);
        }
    };
    let source = if configured.is_some() {
        "--ffmpeg".to_string()
    } else if from_env.is_some() {
        format!("${FFMPEG_ENV}")
    } else if std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)).as_deref() == ff.path().parent() {
        "next to facefleet".to_string()
    } else {
        "PATH".to_string()
    };
    let shown = ff.path().display().to_string();
    match ff.clone().with_timeout(FFMPEG_VERSION_TIMEOUT).run(["-version"]).await {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out);
            let version = text
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("ffmpeg version "))
                .and_then(|l| l.split_whitespace().next())
                .unwrap_or("(unknown version)");
            Check::ok("ffmpeg", format!("{version} at {shown} (from {source})"))
        }
        Err(e) => {
            let c = Check::fail("ffmpeg", format!("{shown} (from {source}) does not run: {e}"));
            let c = if configured.is_some() {
                c.note("--ffmpeg comes before $FACEFLEET_FFMPEG and PATH: point it at a working ffmpeg, or leave it out")
            } else {
                c
            };
            ffmpeg_fixes(c)
        }
    }
}

/// The data folder (exists or can be created, is writable) and the free
/// space under it.
fn data_dir_checks(args: &DoctorArgs) -> Vec<Check> {
    let dir = &args.backend.data_dir;
    let shown = match std::path::absolute(dir) {
        Ok(abs) if abs != *dir => format!("{} ({})", dir.display(), abs.display()),
        _ => dir.display().to_string(),
    };
    let other_dir = ["facefleet up --data-dir ~/facefleet-data   (any folder you can write)".to_string()];
    // The folder, or the nearest existing folder above it that `up` would
    // create it in.
    let (existing, exists) = if dir.exists() {
        (dir.to_path_buf(), true)
    } else {
        let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        match abs.ancestors().skip(1).find(|a| a.exists()) {
            Some(a) => (a.to_path_buf(), false),
            None => return vec![Check::fail("data dir", format!("{shown}: no existing folder above it")).fix(other_dir)],
        }
    };
    if !existing.is_dir() {
        let file = existing.display().to_string();
        let detail = if exists { format!("{shown} is not a folder") } else { format!("{shown} cannot be created: {file} is not a folder") };
        return vec![Check::fail("data dir", detail).fix(other_dir).fix([format!("move the file {file} out of the way")])];
    }
    let dir_check = match probe_write(&existing) {
        Ok(()) if exists => Check::ok("data dir", format!("{shown}: writable")),
        Ok(()) => Check::ok("data dir", format!("{shown}: will be created (in {}, writable)", existing.display())),
        Err(e) => {
            let what = if exists { format!("{shown} is not writable") } else { format!("{shown} cannot be created: {} is not writable", existing.display()) };
            Check::fail("data dir", format!("{what} ({e})"))
                .fix(other_dir)
                .fix([format!("sudo mkdir -p {0} && sudo chown \"$USER\" {0}", shell_word(&dir.display().to_string()))])
        }
    };
    let space = match free_space(&existing) {
        Ok(free) if free < LOW_DISK => Check::warn("disk space", format!("only {} free under {}", bytes(free), existing.display()))
            .note("uploads, results, galleries and the queue live in the data folder")
            .fix(["free some space, or put the data folder on a bigger disk with --data-dir"]),
        Ok(free) => Check::ok("disk space", format!("{} free under {}", bytes(free), existing.display())),
        Err(e) => Check::warn("disk space", format!("cannot read the free space under {}: {e}", existing.display())),
    };
    vec![dir_check, space]
}

/// Creates and removes a file in `dir`.
fn probe_write(dir: &Path) -> std::io::Result<()> {
    let path = dir.join(format!(".facefleet-doctor-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&path)?;
    let written = f.write_all(b"facefleet doctor\n").and_then(|()| f.sync_all());
    drop(f);
    let removed = std::fs::remove_file(&path);
    written.and(removed)
}

/// Bytes available to this user on the file system holding `path`.
#[allow(clippy::unnecessary_cast)] // the field types differ between platforms
fn free_space(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path, `st` is written by statvfs
    // before it is read (only on success).
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs succeeded, so it filled `st`.
    let st = unsafe { st.assume_init() };
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// `n` bytes in words (`12.3 GiB`).
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} bytes")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The listen address can be bound now; off loopback, an API key exists.
async fn port_checks(args: &DoctorArgs) -> Vec<Check> {
    let addr = args.web.addr();
    let port_check = match std::net::TcpListener::bind(addr) {
        Ok(l) => {
            drop(l);
            Check::ok("port", format!("{addr} is free"))
        }
        Err(e) => {
            let another = free_port_near(addr).map_or_else(|| format!("{}:<port>", addr.ip()), |a| a.to_string());
            match e.kind() {
                std::io::ErrorKind::AddrInUse => Check::fail("port", format!("{addr} is in use by another program"))
                    .fix([format!("listen on another port: facefleet up --listen {another}")])
                    .fix([format!("stop the program holding port {}: `ss -ltnp 'sport = :{}'` names it", addr.port(), addr.port())]),
                std::io::ErrorKind::PermissionDenied => Check::fail("port", format!("not allowed to listen on {addr} (port {}): {e}", addr.port()))
                    .fix([format!("use a port above 1023: facefleet up --listen {}:8000", addr.ip())]),
                std::io::ErrorKind::AddrNotAvailable => Check::fail("port", format!("{addr}: {} is not an address of this machine", addr.ip()))
                    .fix([format!("listen on loopback, --listen 127.0.0.1:{}, or on every address, --listen 0.0.0.0:{}", addr.port(), addr.port())]),
                _ => Check::fail("port", format!("cannot listen on {addr} (port {}): {e}", addr.port()))
                    .fix([format!("listen elsewhere: facefleet up --listen {another}")]),
            }
        }
    };
    let mut checks = vec![port_check];
    if !addr.ip().is_loopback() {
        checks.push(keys_check(args, addr).await);
    }
    checks
}

/// A port that can be bound on `addr`'s address, a little above its port.
fn free_port_near(addr: SocketAddr) -> Option<SocketAddr> {
    (1..=20u16).filter_map(|d| addr.port().checked_add(d)).map(|p| SocketAddr::new(addr.ip(), p)).find(|a| std::net::TcpListener::bind(a).is_ok())
}

/// Off loopback `up` refuses to start while no API key exists.
async fn keys_check(args: &DoctorArgs, addr: SocketAddr) -> Check {
    let count = match count_keys(&args.backend).await {
        Ok(n) => n,
        Err(e) => return Check::warn("api keys", format!("cannot read the API keys: {e:#}")),
    };
    if count > 0 {
        return Check::ok("api keys", format!("{count} API key{}: {addr} is not loopback, requests need `x-api-key`", if count == 1 { " exists" } else { "s exist" }));
    }
    Check::warn("api keys", format!("none, and {addr} is not loopback: `up` refuses to start"))
        .fix([format!("facefleet keys create --scope admin{}", args.deployment_flags())])
        .fix([format!("listen on loopback only: --listen 127.0.0.1:{}", addr.port())])
        .fix(["facefleet up --insecure-open   (anyone who can reach the port may enroll, delete and read)"])
}

/// How many API keys the deployment has (0 when its store does not exist
/// yet).
async fn count_keys(backend: &BackendArgs) -> anyhow::Result<usize> {
    // Opening the embedded backend creates its folder: not for a check.
    if backend.backend == BackendKind::Embedded && !backend.data_dir.is_dir() {
        return Ok(0);
    }
    let dep = crate::backend::connect(backend, None).await?;
    if !dep.store.bucket_exists(&dep.names.gallery_bucket).await? {
        return Ok(0);
    }
    Ok(facefleet_pipeline::keys::list(dep.store.as_ref(), &dep.names.gallery_bucket).await?.len())
}

/// The face model loads (detector and recognizer weights).
async fn model_check(model: &ModelArgs) -> Check {
    let config = model.config();
    let weights = match config.effective_weights_dir() {
        Some(d) => format!("weights from {}", d.display()),
        None => "embedded weights".to_string(),
    };
    let recognizer = config.recognizer;
    let dir = config.effective_weights_dir();
    let started = Instant::now();
    let loaded = tokio::task::spawn_blocking(move || facefleet_model::FaceModel::load(&config).map(drop)).await;
    let took = started.elapsed().as_secs_f64();
    match loaded {
        Ok(Ok(())) => Check::ok("model", format!("MTCNN + {recognizer} load in {took:.2} s ({weights})")),
        Ok(Err(e)) => {
            let c = Check::fail("model", format!("MTCNN + {recognizer} do not load: {e}"));
            match dir {
                Some(d) => c
                    .fix([format!("drop --weights-dir (or unset {}) to use the weights built into facefleet", facefleet_model::WEIGHTS_DIR_ENV)])
                    .fix([format!(
                        "put mtcnn.safetensors and {} into {}",
                        facefleet_model::weights::recognizer_file(recognizer),
                        d.display()
                    )]),
                None => c.fix(["rebuild facefleet: cargo build --release -p facefleet"]),
            }
        }
        Err(e) => Check::fail("model", format!("loading the model crashed: {e}")),
    }
}

/// `s` quoted for a POSIX shell when it needs it.
fn shell_word(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./~=:,+@".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The error and its causes on one line.
#[cfg_attr(not(feature = "aws"), allow(dead_code))]
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// `--backend aws` in a build without the AWS backend.
#[cfg(not(feature = "aws"))]
async fn aws_checks(_args: &DoctorArgs) -> Vec<Check> {
    vec![Check::fail("aws", "this build of facefleet has no AWS backend (`--backend aws`)")
        .fix(["cargo build --release -p facefleet --features aws   (see docs/DEPLOY_AWS.md)"])
        .fix(["use the embedded backend: --backend embedded"])]
}

/// With `--backend aws`: region, endpoint, credentials, and that every
/// bucket and queue of the deployment exists.
#[cfg(feature = "aws")]
async fn aws_checks(args: &DoctorArgs) -> Vec<Check> {
    let aws = &args.backend.aws;
    // One quick attempt per call: a check should answer in seconds.
    let mut backend = args.backend.clone();
    backend.aws.max_attempts = 1;
    let mut opts = backend.aws.options();
    opts.attempt_timeout = Duration::from_secs(10);
    let config = facefleet_aws::load_sdk_config(&opts).await;
    let dep = match crate::backend::connect(&backend, None).await {
        Ok(dep) => dep,
        Err(e) => return vec![Check::fail("aws", format!("cannot open the AWS backend: {e:#}"))],
    };
    let (store, queue, names) = (dep.store, dep.queue, dep.names);
    let mut checks = Vec::new();

    // Region.
    let region = config.region().map_or_else(|| "us-east-1".to_string(), |r| r.to_string());
    let region_from = if aws.region.is_some() {
        "--aws-region"
    } else if std::env::var_os("AWS_REGION").is_some() {
        "$AWS_REGION"
    } else if std::env::var_os("AWS_DEFAULT_REGION").is_some() {
        "$AWS_DEFAULT_REGION"
    } else {
        "the AWS config, or the us-east-1 default"
    };
    checks.push(Check::ok("aws region", format!("{region} (from {region_from})")));

    // Endpoint override (an emulator): is anything answering there?
    let provision = format!("facefleet provision{}", provision_flags(args));
    let not_checked = |name: &'static str| Check::new(name, Level::Skip, "not checked: fix the problem above first");
    match config.endpoint_url() {
        None => checks.push(Check::ok("aws endpoint", "the AWS service endpoints (no override)")),
        Some(url) => {
            let http = reqwest::Client::builder().timeout(Duration::from_secs(3)).build();
            let reached = match http {
                Ok(h) => h.get(url).send().await.map(|_| ()).map_err(|e| error_chain(&e)),
                Err(e) => Err(error_chain(&e)),
            };
            match reached {
                Ok(()) => checks.push(Check::ok("aws endpoint", format!("{url} answers"))),
                Err(e) => {
                    checks.push(
                        Check::fail("aws endpoint", format!("nothing answers at {url}: {e}"))
                            .fix(["start the emulator there (scripts/test starts moto_server), or correct --aws-endpoint / $AWS_ENDPOINT_URL"]),
                    );
                    checks.extend([not_checked("aws credentials"), not_checked("aws resources")]);
                    return checks;
                }
            }
        }
    }

    // Credentials: one cheap signed call proves them.
    let creds_fixes = |c: Check| {
        c.fix(["aws configure   (writes ~/.aws/credentials)"])
            .fix(["export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...   (an emulator accepts any: test / test)"])
            .fix(["--aws-profile NAME, or run on an instance with an IAM role"])
    };
    if config.credentials_provider().is_none() {
        checks.push(creds_fixes(Check::fail("aws credentials", "no credentials provider is configured")));
        return checks;
    }
    match store.bucket_exists(&names.gallery_bucket).await {
        Ok(_) => checks.push(Check::ok("aws credentials", format!("accepted by S3 ({})", credentials_hint()))),
        Err(e) => {
            let text = e.to_string();
            let creds = text.to_ascii_lowercase().contains("credential");
            // PortError::AccessDenied (the ports crate is not a dependency here).
            let denied = text.starts_with("access denied");
            let mut c = if creds {
                creds_fixes(Check::fail("aws credentials", format!("none found ({})", credentials_hint())))
            } else if denied {
                creds_fixes(Check::fail("aws credentials", "refused by S3"))
                    .fix(["check who you are with `aws sts get-caller-identity`; the identity needs the S3 and SQS permissions"])
            } else {
                Check::fail("aws credentials", "could not be checked: S3 did not answer")
            };
            c.notes = sdk_message_lines(&text);
            checks.extend([c, not_checked("aws resources")]);
            return checks;
        }
    }

    // Buckets.
    let video = [&names.video_input, &names.video_stage1, &names.video_output];
    let mut missing = Vec::new();
    let mut missing_video = Vec::new();
    let mut errors = Vec::new();
    let buckets = [&names.in_bucket, &names.out_bucket, &names.gallery_bucket, &names.video_input, &names.video_stage1, &names.video_output];
    for b in buckets {
        match store.bucket_exists(b).await {
            Ok(true) => {}
            Ok(false) if args.video.no_video && video.contains(&b) => missing_video.push(b.as_str()),
            Ok(false) => missing.push(b.as_str()),
            Err(e) => errors.push(format!("{b}: {}", sdk_message_lines(&e.to_string()).join(" "))),
        }
    }
    checks.push(resources_check("s3 buckets", buckets.len(), &missing, &errors, &provision));
    if !missing_video.is_empty() {
        checks.push(Check::warn("s3 buckets", format!("video buckets missing (video is off): {}", missing_video.join(", "))).fix([provision.clone()]));
    }

    // Queues.
    let queues = [&names.req_queue, &names.resp_queue, &names.req_dlq];
    let mut missing = Vec::new();
    let mut errors = Vec::new();
    for q in queues {
        match queue.depth(q).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => missing.push(q.as_str()),
            Err(e) => errors.push(format!("{q}: {}", sdk_message_lines(&e.to_string()).join(" "))),
        }
    }
    checks.push(resources_check("sqs queues", queues.len(), &missing, &errors, &provision));
    checks
}

/// One line for a set of resources: all there, or which are missing or
/// could not be checked.
#[cfg(feature = "aws")]
fn resources_check(name: &'static str, total: usize, missing: &[&str], errors: &[String], provision: &str) -> Check {
    if missing.is_empty() && errors.is_empty() {
        return Check::ok(name, format!("all {total} exist"));
    }
    let mut c = if missing.is_empty() {
        Check::fail(name, format!("{} of {total} could not be checked", errors.len()))
    } else {
        Check::fail(name, format!("{} of {total} missing: {}", missing.len(), missing.join(", ")))
    };
    for e in errors {
        c = c.note(e.clone());
    }
    c.fix([provision.to_string()])
}

/// The flags of `facefleet provision` for this deployment.
#[cfg(feature = "aws")]
fn provision_flags(args: &DoctorArgs) -> String {
    let aws = &args.backend.aws;
    let mut s = String::new();
    if args.backend.prefix != Names::DEFAULT_PREFIX {
        let _ = write!(s, " --prefix {}", shell_word(&args.backend.prefix));
    }
    for (flag, v) in [("--aws-endpoint", &aws.endpoint), ("--aws-region", &aws.region), ("--aws-profile", &aws.profile)] {
        if let Some(v) = v {
            let _ = write!(s, " {flag} {}", shell_word(v));
        }
    }
    s
}

/// An AWS error message for people: without the `(DispatchFailure(...))`
/// debug dump the SDK's `DisplayErrorContext` ends with, one entry per
/// line (later lines indented).
#[cfg(feature = "aws")]
fn sdk_message_lines(text: &str) -> Vec<String> {
    let text = text.trim_end();
    let debug_tail = text.match_indices(" (").map(|(i, _)| i).find(|&i| {
        let rest = &text[i + 2..];
        let ident = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
        rest.starts_with(|c: char| c.is_ascii_uppercase()) && rest[ident..].trim_start_matches(' ').starts_with(['(', '{'])
    });
    let text = debug_tail.map_or(text, |i| &text[..i]);
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(i, l)| if i == 0 { l.to_string() } else { format!("  {l}") })
        .collect()
}

/// Where the credentials most likely come from, in words.
#[cfg(feature = "aws")]
fn credentials_hint() -> String {
    let set = |v: &str| std::env::var_os(v).is_some_and(|x| !x.is_empty());
    if set("AWS_ACCESS_KEY_ID") {
        "from $AWS_ACCESS_KEY_ID".into()
    } else if set("AWS_PROFILE") {
        format!("profile {}", std::env::var("AWS_PROFILE").unwrap_or_default())
    } else if set("AWS_WEB_IDENTITY_TOKEN_FILE") {
        "web identity token".into()
    } else if std::env::var_os("HOME").is_some_and(|h| Path::new(&h).join(".aws/credentials").is_file()) {
        "~/.aws/credentials".into()
    } else {
        "no key in the environment or ~/.aws/credentials; an instance role or SSO if any".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_is_aligned_and_counts_problems() {
        let checks = vec![
            Check::ok("cpu", "AVX2+FMA kernels"),
            ffmpeg_fixes(Check::fail("ffmpeg", "not found")),
            Check::warn("disk space", "only 10 MiB free"),
        ];
        let r = render(&checks);
        assert!(r.contains("  ok    cpu         AVX2+FMA kernels\n"), "{r}");
        assert!(r.contains("  FAIL  ffmpeg      not found\n"), "{r}");
        assert!(r.contains("                    fix: python3 -m pip install imageio-ffmpeg\n"), "{r}");
        assert!(r.contains("                     or: sudo apt-get install ffmpeg\n"), "{r}");
        assert!(r.contains("1 problem: `facefleet up` will not work until it is fixed (1 warning)."), "{r}");
        let r = render(&checks[2..]);
        assert!(r.contains("1 warning, no problem"), "{r}");
    }

    #[test]
    fn the_cpu_check_warns_on_the_baseline_and_says_how_slow() {
        use facefleet_model::simd::{with_level, SimdLevel};
        let check = with_level(SimdLevel::Baseline, cpu_check);
        assert_eq!((check.name, check.level), ("cpu", Level::Warn));
        assert!(check.detail.starts_with(facefleet_model::simd::BASELINE), "{}", check.detail);
        let notes = check.notes.join(" ");
        if cfg!(target_arch = "x86_64") {
            assert!(notes.contains("SSE2 kernels, about half as fast"), "{notes}");
        } else {
            assert!(notes.contains("several times slower"), "{notes}");
        }
        // The CPU's own level is no warning where it has SIMD kernels.
        let own = cpu_check();
        assert_eq!(own.level == Level::Warn, facefleet_model::simd::simd_path() == facefleet_model::simd::BASELINE);
    }

    #[cfg(feature = "aws")]
    #[test]
    fn sdk_messages_lose_their_debug_dump() {
        let m = "backend unavailable: HeadBucket on bucket `b`: dispatch failure: io error: client error (Connect): \
                 tcp connect error: Connection refused (os error 111) (DispatchFailure(DispatchFailure { source: x }))";
        assert_eq!(
            sdk_message_lines(m),
            ["backend unavailable: HeadBucket on bucket `b`: dispatch failure: io error: client error (Connect): tcp connect error: Connection refused (os error 111)"]
        );
        assert_eq!(sdk_message_lines("no credentials. Attempted:\n  Environment: not set (X { a })"), ["no credentials. Attempted:", "  Environment: not set"]);
    }

    #[test]
    fn sizes_and_shell_words() {
        assert_eq!(bytes(512), "512 bytes");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
        assert_eq!(shell_word("./data"), "./data");
        assert_eq!(shell_word("my data"), "'my data'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }
}
