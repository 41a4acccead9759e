//! The settings of every facefleet process: flag groups with environment
//! fallbacks, validated when they are parsed, and passed on to other
//! processes without loss.
//!
//! **Validation.** Every flag is checked by its value parser (range,
//! finiteness, form) and the few rules that tie two flags together by
//! [`WebArgs::config`]; a bad value is refused with a message naming the flag,
//! never clamped into range.
//!
//! **Passing settings on.** A worker process (and a Lambda function) gets its
//! parent's settings as the environment variables its own flags fall back to:
//! [`to_env`] serialises a settings struct and maps each field to its flag's
//! variable through clap's own definition of the flags, so no field can be
//! forgotten (a field without a variable is an error, see the tests), and the
//! child parses them with the very same flags and checks. A field that is
//! `None` is left unset: the child inherits its parent's environment, which
//! does not hold that variable either (else the parent would have read it).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use facefleet_model::ModelConfig;
pub use facefleet_model::RecognizerKind;
use facefleet_pipeline::backend::MAX_RECEIVES;
use facefleet_pipeline::upload::ImageLimits;
use facefleet_pipeline::web::WebConfig;
use facefleet_pipeline::worker::WorkerConfig;
use facefleet_ports::Names;
use serde::{Deserialize, Serialize};

/// The backends facefleet can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Filesystem buckets and a SQLite queue under a data directory.
    Embedded,
    /// S3 buckets and SQS queues (builds with the `aws` feature;
    /// `facefleet provision` creates them).
    Aws,
}

impl BackendKind {
    /// The flag value.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Embedded => "embedded",
            BackendKind::Aws => "aws",
        }
    }
}

/// Where the pipeline's state lives.
#[derive(clap::Args, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendArgs {
    /// Backend of the buckets and queues.
    #[arg(long, env = "FACEFLEET_BACKEND", value_enum, default_value = "embedded")]
    pub backend: BackendKind,
    /// Data folder of the embedded backend.
    #[arg(long, env = "FACEFLEET_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Prefix every resource is named from (`<prefix>-in-bucket`, ...):
    /// 1 to 40 of a-z, 0-9 and `-`, starting and ending with a letter or
    /// digit (S3 bucket and SQS queue names are made from it).
    #[arg(long, env = "FACEFLEET_PREFIX", default_value = Names::DEFAULT_PREFIX, value_parser = parse_prefix)]
    pub prefix: String,
    /// AWS connection (backend `aws`; builds with the `aws` feature).
    #[cfg(feature = "aws")]
    #[command(flatten)]
    pub aws: crate::aws_cli::AwsArgs,
}

impl BackendArgs {
    /// Resource names.
    pub fn names(&self) -> Names {
        Names::new(&self.prefix)
    }

    /// The same settings with the data folder made absolute, as they are
    /// handed to a process that may run elsewhere.
    pub fn resolved(&self) -> anyhow::Result<Self> {
        let mut s = self.clone();
        s.data_dir = std::path::absolute(&self.data_dir).with_context(|| format!("resolving the data folder {}", self.data_dir.display()))?;
        Ok(s)
    }
}

/// Where workers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FleetKind {
    /// Local `app-tier` processes.
    Local,
    /// EC2 instances from the `<prefix>-app-tier` launch template.
    Ec2,
}

/// Face-model flags (also read by the face-recognition Lambda function,
/// whose deployment sets them from the deploying command's flags).
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelArgs {
    /// Embedding network: `mobilefacenet` or `dlib-resnet`.
    #[arg(long, env = "FACEFLEET_RECOGNIZER", default_value = "mobilefacenet")]
    pub recognizer: RecognizerKind,
    /// Cosine similarity at and above which a face is answered with the
    /// nearest enrolled person (default: the recognizer's calibrated
    /// threshold, 0.46 for mobilefacenet, 0.92 for dlib-resnet).
    #[arg(long, env = "FACEFLEET_THRESHOLD", value_parser = parse_threshold)]
    pub threshold: Option<f32>,
    /// Folder of weight files replacing the weights built into the binary
    /// (`mtcnn.safetensors`, `mobilefacenet.safetensors`,
    /// `dlib_resnet.safetensors`).
    #[arg(long, env = facefleet_model::WEIGHTS_DIR_ENV)]
    pub weights_dir: Option<PathBuf>,
    /// Smallest face side searched for, in pixels of the photo (of its
    /// detection copy, at most 640 pixels on its longer side): 8 to 640,
    /// default 20. Larger is faster and misses smaller faces: at 40, the
    /// smallest face face_recognition finds with its defaults, a 250x250
    /// photo takes about a fifth less time.
    #[arg(long, env = "FACEFLEET_MIN_FACE", value_parser = parse_min_face)]
    pub min_face: Option<f32>,
}

impl ModelArgs {
    /// The model configuration.
    pub fn config(&self) -> ModelConfig {
        let mut config = ModelConfig { threshold: self.threshold, weights_dir: self.weights_dir.clone(), ..ModelConfig::with_recognizer(self.recognizer) };
        config.detect.min_face_size = self.min_face();
        config
    }

    /// The smallest face side searched for, in pixels: `--min-face`, else
    /// the detector's default.
    pub fn min_face(&self) -> f32 {
        self.min_face.unwrap_or_else(|| facefleet_model::DetectParams::default().min_face_size)
    }

    /// The match threshold in use: `--threshold`, else the recognizer's
    /// calibrated one.
    pub fn threshold(&self) -> f32 {
        self.threshold.unwrap_or_else(|| facefleet_model::default_threshold(self.recognizer))
    }
}

/// Web-tier flags.
#[derive(clap::Args, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebArgs {
    /// Address and port to listen on. Loopback by default; any other
    /// address needs an API key to exist (or `--insecure-open`).
    #[arg(long, env = "FACEFLEET_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: std::net::SocketAddr,
    /// Port to listen on (replaces the port of `--listen`).
    #[arg(long, env = "FACEFLEET_PORT")]
    pub port: Option<u16>,
    /// Serve everyone without an API key even on a non-loopback address
    /// while no key exists. Dangerous: anyone who can reach the port can
    /// enroll, delete and read.
    #[arg(long, env = "FACEFLEET_INSECURE_OPEN")]
    pub insecure_open: bool,
    /// A route served without an API key even when keys exist (repeat, or
    /// comma-separate). `--open-route /` keeps the course route open for
    /// its workload generator while the rest stays protected.
    #[arg(long = "open-route", env = "FACEFLEET_OPEN_ROUTES", value_delimiter = ',', value_parser = parse_route)]
    pub open_routes: Vec<String>,
    /// Largest accepted upload in bytes (larger: 413); at least 1024.
    #[arg(long, env = "FACEFLEET_MAX_UPLOAD_BYTES", default_value_t = 10 * 1024 * 1024, value_parser = at_least::<1024>)]
    pub max_upload_bytes: usize,
    /// Bytes of uploads held in memory at once, over all requests (past
    /// it: 503); at least --max-upload-bytes.
    #[arg(long, env = "FACEFLEET_UPLOAD_BUDGET_BYTES", default_value_t = 256 * 1024 * 1024, value_parser = at_least::<1024>)]
    pub upload_budget_bytes: usize,
    /// Largest accepted image side in pixels (16 to 65535).
    #[arg(long, env = "FACEFLEET_MAX_IMAGE_SIDE", default_value_t = ImageLimits::default().max_side,
          value_parser = clap::value_parser!(u32).range(16..=65_535))]
    pub max_image_side: u32,
    /// Seconds a request waits for its result before a 504.
    #[arg(long, env = "FACEFLEET_REQUEST_TIMEOUT", default_value_t = 60.0, value_parser = parse_seconds)]
    pub request_timeout: f64,
    /// Requests handled at once by the whole server; more get 503.
    #[arg(long, env = "FACEFLEET_MAX_IN_FLIGHT", default_value_t = 512, value_parser = at_least::<1>)]
    pub max_in_flight: usize,
    /// Seconds a client has to send its request headers.
    #[arg(long, env = "FACEFLEET_HEADER_TIMEOUT", default_value_t = 10.0, value_parser = parse_seconds)]
    pub header_timeout: f64,
    /// Seconds a client has to send a request body (408 after).
    #[arg(long, env = "FACEFLEET_BODY_TIMEOUT", default_value_t = 30.0, value_parser = parse_seconds)]
    pub body_timeout: f64,
    /// Open connections at once.
    #[arg(long, env = "FACEFLEET_MAX_CONNECTIONS", default_value_t = 8192, value_parser = at_least::<1>)]
    pub max_connections: usize,
}

impl WebArgs {
    /// The address to listen on.
    pub fn addr(&self) -> std::net::SocketAddr {
        let mut a = self.listen;
        if let Some(p) = self.port {
            a.set_port(p);
        }
        a
    }

    /// The web-tier configuration. Each flag was checked when parsed; this
    /// refuses the combinations that cannot work.
    pub fn config(&self) -> anyhow::Result<WebConfig> {
        anyhow::ensure!(
            self.upload_budget_bytes >= self.max_upload_bytes,
            "--upload-budget-bytes ({}) must be at least --max-upload-bytes ({})",
            self.upload_budget_bytes,
            self.max_upload_bytes
        );
        let side = self.max_image_side;
        let body = Duration::from_secs_f64(self.body_timeout);
        Ok(WebConfig {
            max_upload_bytes: self.max_upload_bytes,
            // The pixel limit follows the side limit up to the decoder's own.
            image_limits: ImageLimits { max_side: side, max_pixels: (u64::from(side) * u64::from(side)).min(ImageLimits::default().max_pixels) },
            request_timeout: Duration::from_secs_f64(self.request_timeout),
            max_in_flight: self.max_in_flight,
            upload_budget_bytes: self.upload_budget_bytes,
            body_deadline: body,
            // A pause inside a body: the whole deadline when that is short.
            body_idle_timeout: body.min(Duration::from_secs(10)),
            header_timeout: Duration::from_secs_f64(self.header_timeout),
            max_connections: self.max_connections,
            ..WebConfig::default()
        })
    }
}

/// Worker flags.
#[derive(clap::Args, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerArgs {
    /// Seconds a received request stays invisible (renewed every third of
    /// it while working); 1 to 43200 (SQS's maximum).
    #[arg(long, env = "FACEFLEET_VISIBILITY", default_value_t = 15.0, value_parser = parse_visibility)]
    pub visibility: f64,
    /// Attempts before a failing request is given up (error answer + DLQ):
    /// 1 to 4, one less than the queue's dead-letter receive count (5), so
    /// that a request whose workers keep crashing is still answered.
    #[arg(id = "worker_max_attempts", long = "max-attempts", value_name = "N", env = "FACEFLEET_MAX_ATTEMPTS", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_RECEIVES - 1)))]
    #[serde(rename = "worker_max_attempts")]
    pub max_attempts: u32,
    /// Requests a worker takes from the queue at once (1 to 10, the
    /// queues' limit).
    #[arg(long, env = "FACEFLEET_WORKER_BATCH", default_value_t = WorkerConfig::MAX_BATCH, value_parser = parse_batch)]
    pub batch: usize,
    /// Images a worker runs through the model at once, their faces
    /// embedded in one batch (1 to 10; default: 1 on a CPU, where a batch
    /// is slower per face and delays its first answer, 10 on a GPU).
    #[arg(long, env = "FACEFLEET_EMBED_BATCH", value_parser = parse_batch)]
    pub embed_batch: Option<usize>,
    /// At most this many workers sharing the data folder run the model at
    /// once (0 to 1024; 0: no limit). A local fleet sets it to the
    /// machine's cores unless given, so that its workers take turns
    /// instead of slowing each other down; a worker on its own machine
    /// needs none.
    #[arg(long, env = "FACEFLEET_COMPUTE_SLOTS", value_parser = clap::value_parser!(u16).range(0..=1024))]
    pub compute_slots: Option<u16>,
}

impl Default for WorkerArgs {
    fn default() -> Self {
        Self { visibility: 15.0, max_attempts: 3, batch: WorkerConfig::MAX_BATCH, embed_batch: None, compute_slots: None }
    }
}

fn parse_batch(s: &str) -> Result<usize, String> {
    let v = at_least::<1>(s)?;
    if v <= WorkerConfig::MAX_BATCH {
        Ok(v)
    } else {
        Err(format!("must be at most {}", WorkerConfig::MAX_BATCH))
    }
}

impl WorkerArgs {
    /// The visibility timeout of a received request.
    pub fn visibility(&self) -> Duration {
        Duration::from_secs_f64(self.visibility)
    }

    /// The worker configuration.
    pub fn config(&self) -> WorkerConfig {
        let vis = self.visibility();
        WorkerConfig {
            visibility: vis,
            heartbeat: vis / 3,
            max_attempts: self.max_attempts,
            batch: self.batch,
            embed_batch: self.embed_batch,
            ..Default::default()
        }
    }
}

/// Everything a worker process runs with. The parent of a worker passes its
/// own on with [`to_env`]; the worker parses them back with these flags.
#[derive(clap::Args, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerSettings {
    /// Backend and naming.
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Face model.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Worker loop.
    #[command(flatten)]
    pub worker: WorkerArgs,
}

/// Autoscaler flags.
#[derive(clap::Args, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalerArgs {
    /// Most workers at once (at least 1).
    #[arg(long, env = "FACEFLEET_MAX_INSTANCES", default_value_t = 15, value_parser = at_least::<1>)]
    pub max_instances: usize,
    /// Backlog messages per worker (at least 1).
    #[arg(long, env = "FACEFLEET_PER_WORKER", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub per_worker: u64,
    /// Control-loop period in milliseconds (10 to 60000).
    #[arg(long, env = "FACEFLEET_SCALE_POLL_MS", default_value_t = 250, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub poll_ms: u64,
    /// Milliseconds the backlog must stay low before workers are stopped
    /// (at most an hour).
    #[arg(long, env = "FACEFLEET_SCALE_IN_DELAY_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub scale_in_delay_ms: u64,
    /// Worker program (default: `app-tier` next to this program, else this
    /// program's `worker` subcommand); a `facefleet` binary is run with
    /// `worker`.
    #[arg(long, env = "FACEFLEET_WORKER_PROGRAM")]
    pub worker_program: Option<PathBuf>,
    /// How much nicer (Unix `nice`) local worker processes run than the web
    /// tier, so that busy workers never starve it of the CPU it needs to
    /// take uploads and hand answers back (0 to 19; local fleet only).
    #[arg(long, env = "FACEFLEET_WORKER_NICE", default_value_t = 10, value_parser = clap::value_parser!(i32).range(0..=19))]
    pub worker_nice: i32,
    /// Start every local worker as a new process of the worker program,
    /// instead of forking it, model loaded, from one template process
    /// (the default for facefleet's own worker programs; see
    /// docs/ARCHITECTURE.md, "Workers").
    #[arg(long, env = "FACEFLEET_NO_WORKER_TEMPLATE")]
    pub no_worker_template: bool,
    /// Where workers run: local processes or EC2 instances (backend `aws`).
    #[arg(long, env = "FACEFLEET_FLEET", value_enum, default_value = "local")]
    pub fleet: FleetKind,
}

impl ScalerArgs {
    /// The scaling policy.
    pub fn policy(&self) -> facefleet_pipeline::autoscaler::ScalePolicy {
        facefleet_pipeline::autoscaler::ScalePolicy {
            per_worker: self.per_worker,
            max_instances: self.max_instances,
            scale_in_delay: Duration::from_millis(self.scale_in_delay_ms),
            poll: Duration::from_millis(self.poll_ms),
        }
    }
}

/// The environment variables that give a process parsing `T`'s flags
/// exactly `settings`: one per field, named by the field's flag (`env = ..`),
/// the value as the flag parses it. `None` fields are left out (see the
/// module documentation). Fails for a field whose flag has no environment
/// variable, so a new flag cannot silently stay behind.
pub fn to_env<T: clap::Args + Serialize>(settings: &T) -> Result<Vec<(String, String)>, EnvError> {
    let cmd = T::augment_args(clap::Command::new("settings"));
    let value = serde_json::to_value(settings).map_err(EnvError::Serialize)?;
    let mut out = Vec::new();
    collect_env(&cmd, &value, &mut out)?;
    Ok(out)
}

/// Why settings cannot be passed on as environment variables (a mistake
/// in a settings type, caught by the tests).
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// The settings do not serialise.
    #[error("serialising the settings: {0}")]
    Serialize(#[source] serde_json::Error),
    /// A serialised field that is no flag.
    #[error("setting `{0}` is not a flag (serde and clap names differ)")]
    NotAFlag(String),
    /// A flag without `env = ..`.
    #[error("--{0} has no environment variable, so it cannot be passed to another process")]
    NoVariable(String),
    /// A value that has no form as one variable.
    #[error("--{flag}: {why}")]
    Unsupported {
        /// The flag.
        flag: String,
        /// What is wrong.
        why: String,
    },
}

fn collect_env(cmd: &clap::Command, value: &serde_json::Value, out: &mut Vec<(String, String)>) -> Result<(), EnvError> {
    use serde_json::Value;
    let Value::Object(fields) = value else {
        return Err(EnvError::Unsupported { flag: "?".into(), why: "settings must serialise to an object".into() });
    };
    for (id, v) in fields {
        if let Value::Object(_) = v {
            // A flattened group: its flags are in the same command.
            collect_env(cmd, v, out)?;
            continue;
        }
        let arg = cmd.get_arguments().find(|a| a.get_id() == id.as_str()).ok_or_else(|| EnvError::NotAFlag(id.clone()))?;
        let flag = arg.get_long().unwrap_or(id.as_str());
        let unsupported = |why: String| EnvError::Unsupported { flag: flag.to_string(), why };
        let var = arg.get_env().and_then(|e| e.to_str()).ok_or_else(|| EnvError::NoVariable(flag.to_string()))?;
        let scalar = |v: &Value| -> Result<String, EnvError> {
            match v {
                Value::String(s) => Ok(s.clone()),
                Value::Bool(b) => Ok(b.to_string()),
                // An `f32` field arrives widened to `f64`: written back in
                // its own shortest form (0.4, not 0.4000000059604645). The
                // value is the same either way.
                Value::Number(n) => Ok(match n.as_f64() {
                    Some(x) if !n.is_i64() && !n.is_u64() && f64::from(x as f32) == x => (x as f32).to_string(),
                    _ => n.to_string(),
                }),
                other => Err(unsupported(format!("cannot pass {other} in an environment variable"))),
            }
        };
        let text = match v {
            Value::Null => continue,
            Value::Array(items) if items.is_empty() => continue,
            Value::Array(items) => {
                let d = arg.get_value_delimiter().ok_or_else(|| unsupported("takes several values but has no delimiter".into()))?;
                let parts = items.iter().map(scalar).collect::<Result<Vec<_>, _>>()?;
                if parts.iter().any(|p| p.contains(d)) {
                    return Err(unsupported(format!("a value contains the delimiter `{d}`")));
                }
                parts.join(&d.to_string())
            }
            v => scalar(v)?,
        };
        out.push((var.to_string(), text));
    }
    Ok(())
}

// ---- value parsers: each refuses a bad value with a message ----

/// A resource-name prefix.
pub fn parse_prefix(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let ok = (1..=40).contains(&b.len())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric();
    if ok {
        Ok(s.to_string())
    } else {
        Err("must be 1 to 40 of a-z, 0-9 and `-`, starting and ending with a letter or digit".into())
    }
}

/// A positive, finite number of seconds up to a day.
pub fn parse_seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if v.is_finite() && v > 0.0 && v <= 86_400.0 {
        Ok(v)
    } else {
        Err("must be a number of seconds above 0 and at most 86400".into())
    }
}

/// A number within `range` (so finite: NaN and infinities are outside any
/// finite range); `unit` names what it counts in the "not a number" message,
/// `why` is the message for a number outside the range.
fn number_in<T: std::str::FromStr + PartialOrd>(s: &str, range: std::ops::RangeInclusive<T>, unit: &str, why: &str) -> Result<T, String> {
    let v: T = s.trim().parse().map_err(|_| format!("`{s}` is not a {unit}"))?;
    if range.contains(&v) {
        Ok(v)
    } else {
        Err(why.into())
    }
}

/// A visibility timeout: 1 to 43200 seconds.
pub fn parse_visibility(s: &str) -> Result<f64, String> {
    number_in(s, 1.0..=43_200.0, "number of seconds", "must be between 1 and 43200 seconds")
}

/// A similarity threshold in -1..=1.
pub fn parse_threshold(s: &str) -> Result<f32, String> {
    number_in(s, -1.0..=1.0, "number", "must be a cosine similarity between -1 and 1")
}

/// A smallest face side: 8 to 640 pixels (the detector's own lower bound,
/// and the longer side of its detection copy of a photo).
pub fn parse_min_face(s: &str) -> Result<f32, String> {
    number_in(s, 8.0..=640.0, "number of pixels", "must be between 8 and 640 pixels")
}

/// A count of at least `MIN`.
pub fn at_least<const MIN: usize>(s: &str) -> Result<usize, String> {
    let v: usize = s.trim().parse().map_err(|_| format!("`{s}` is not a whole number"))?;
    if v >= MIN {
        Ok(v)
    } else {
        Err(format!("must be at least {MIN}"))
    }
}

/// A URL path such as `/` or `/v1/recognize`.
pub fn parse_route(s: &str) -> Result<String, String> {
    if s.starts_with('/') {
        Ok(s.to_string())
    } else {
        Err("takes a path such as `/`".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Up {
        #[command(flatten)]
        backend: BackendArgs,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        web: WebArgs,
        #[command(flatten)]
        worker: WorkerArgs,
        #[command(flatten)]
        scaler: ScalerArgs,
    }

    fn parse(args: &[&str]) -> Result<Up, String> {
        let mut argv = vec!["up"];
        argv.extend_from_slice(args);
        Up::try_parse_from(argv).map_err(|e| e.to_string())
    }

    #[test]
    fn bad_values_are_refused_not_clamped() {
        for bad in [
            &["--max-attempts", "0"][..],
            &["--max-attempts", "5"],
            &["--batch", "11"],
            &["--batch", "0"],
            &["--visibility", "0.5"],
            &["--visibility", "nan"],
            &["--per-worker", "0"],
            &["--scale-poll-ms", "1"],
            &["--worker-nice", "25"],
            &["--max-instances", "0"],
            &["--max-in-flight", "0"],
            &["--max-upload-bytes", "10"],
            &["--max-image-side", "8"],
            &["--request-timeout=-1"],
            &["--header-timeout", "inf"],
            &["--threshold", "1.5"],
            &["--min-face", "4"],
            &["--min-face", "641"],
            &["--min-face", "nan"],
            &["--open-route", "v1"],
            &["--prefix", "Bad_Prefix"],
            &["--prefix=x-"],
        ] {
            let e = parse(bad).expect_err(&format!("{bad:?} must be refused"));
            let flag = bad[0].split('=').next().unwrap();
            assert!(e.contains(flag), "{bad:?}: the message names the flag: {e}");
        }
        let ok = parse(&["--max-attempts", "4", "--visibility", "1", "--per-worker", "2", "--threshold", "0.5", "--prefix", "cse546"]).unwrap();
        assert_eq!(ok.worker.max_attempts, 4);
        assert_eq!(ok.scaler.per_worker, 2);
        assert_eq!(ok.model.config().threshold, Some(0.5));
        // The detector's default unless set.
        assert_eq!(ok.model.config().detect.min_face_size, facefleet_model::DetectParams::default().min_face_size);
        let larger = parse(&["--min-face", "40"]).unwrap();
        assert_eq!(larger.model.config().detect.min_face_size, 40.0);
        // The detector's arithmetic follows the recognizer (integer
        // convolutions for MobileFaceNet, f32 for the dlib ResNet), with
        // --min-face on top.
        assert!(!larger.model.config().detect.f32_convolutions);
        let dlib = parse(&["--recognizer", "dlib-resnet", "--min-face", "40"]).unwrap().model.config();
        assert!(dlib.detect.f32_convolutions);
        assert_eq!(dlib.detect.min_face_size, 40.0);
    }

    #[test]
    fn upload_budget_below_the_upload_limit_is_refused() {
        let up = parse(&["--max-upload-bytes", "4096", "--upload-budget-bytes", "2048"]).unwrap();
        let e = up.web.config().unwrap_err().to_string();
        assert!(e.contains("--upload-budget-bytes"), "{e}");
    }

    #[test]
    fn every_flag_of_every_group_has_an_environment_variable() {
        let up = parse(&["--open-route", "/,/healthz", "--port", "9000", "--threshold", "0.4", "--weights-dir", "/w", "--min-face", "40"]).unwrap();
        let mut vars = Vec::new();
        vars.extend(to_env(&up.backend).unwrap());
        vars.extend(to_env(&up.model).unwrap());
        vars.extend(to_env(&up.web).unwrap());
        vars.extend(to_env(&up.worker).unwrap());
        vars.extend(to_env(&up.scaler).unwrap());
        let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("FACEFLEET_OPEN_ROUTES"), Some("/,/healthz"));
        assert_eq!(get("FACEFLEET_MAX_ATTEMPTS"), Some("3"));
        assert_eq!(get("FACEFLEET_THRESHOLD"), Some("0.4"));
        assert_eq!(get("FACEFLEET_WEIGHTS_DIR"), Some("/w"));
        assert_eq!(get("FACEFLEET_MIN_FACE"), Some("40"));
        assert_eq!(get("FACEFLEET_BACKEND"), Some("embedded"));
        assert_eq!(get("FACEFLEET_FLEET"), Some("local"));
        // `None` stays unset.
        assert_eq!(get("FACEFLEET_WORKER_PROGRAM"), None);
    }

    #[test]
    fn a_flag_without_a_variable_cannot_be_passed_on() {
        #[derive(clap::Args, Serialize)]
        struct NoEnv {
            #[arg(long, default_value_t = 1)]
            level: u32,
        }
        let e = to_env(&NoEnv { level: 2 }).unwrap_err().to_string();
        assert!(e.contains("--level has no environment variable"), "{e}");
    }
}
