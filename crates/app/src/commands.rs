//! The `facefleet` subcommands besides `up`, `doctor` and `worker`: API
//! keys, enrollment and recognition (through a running stack or a local
//! gallery folder) and the load generator.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use facefleet_pipeline::keys::{self, Scope};

use crate::settings::{at_least, parse_seconds, BackendArgs, ModelArgs};
use crate::{client, loadgen, run};

/// `facefleet keys ...`.
#[derive(clap::Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a key; its secret is printed alone on the last line, once.
    Create {
        /// What the key may do: recognize, enroll (and recognize), admin
        /// (everything).
        #[arg(long, value_parser = parse_scope)]
        scope: Scope,
        /// A label for people.
        #[arg(long, default_value = "")]
        name: String,
        /// Requests per second allowed (default: no limit; at least 1).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        rate: Option<u32>,
        /// Requests allowed in a burst (default: the rate; at least 1).
        #[arg(long, requires = "rate", value_parser = clap::value_parser!(u32).range(1..))]
        burst: Option<u32>,
        /// A gallery collection the key may use (repeat, or
        /// comma-separate; default: all).
        #[arg(long = "collection", value_delimiter = ',')]
        collections: Vec<String>,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// List the keys (never their secrets).
    List {
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Revoke a key by id.
    Revoke {
        /// The key's id (`facefleet keys list`).
        id: String,
        #[command(flatten)]
        backend: BackendArgs,
    },
}

/// A key scope by its name (`recognize`, `enroll`, `admin`).
fn parse_scope(s: &str) -> Result<Scope, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| "expected recognize, enroll or admin".to_string())
}

/// Listing or revoking keys reads a deployment: on the embedded backend its
/// data folder must exist (a mistyped `--data-dir` would otherwise make a
/// new, empty deployment and report it open).
fn existing_deployment(backend: &BackendArgs) -> anyhow::Result<()> {
    if backend.backend == crate::settings::BackendKind::Embedded {
        anyhow::ensure!(
            backend.data_dir.is_dir(),
            "no deployment in {}: check --data-dir (the folder `facefleet up` or `facefleet keys create` uses)",
            backend.data_dir.display()
        );
    }
    Ok(())
}

/// Runs `facefleet keys ...`.
pub async fn keys(command: KeysCommand) -> anyhow::Result<()> {
    let connect = |backend: BackendArgs| async move {
        let dep = crate::backend::connect(&backend, None).await?;
        dep.store.create_bucket(&dep.names.gallery_bucket).await.context("opening the deployment's store")?;
        anyhow::Ok(dep)
    };
    match command {
        KeysCommand::Create { scope, name, rate, burst, collections, backend } => {
            let dep = connect(backend).await?;
            let limited = (!collections.is_empty()).then_some(collections);
            let new = keys::NewKey { name, scope, rate_per_sec: rate, burst, collections: limited.clone() };
            let (record, secret) = keys::create(dep.store.as_ref(), &dep.names.gallery_bucket, new).await?;
            let rate = record.rate_per_sec.map_or("no rate limit".to_string(), |r| format!("{r}/s, burst {}", record.burst.unwrap_or(r)));
            let within = limited.map_or("all collections".to_string(), |c| format!("collections {}", c.join(", ")));
            println!(
                "created API key {} (scope {}, {rate}, {within}); send it as `x-api-key`. The secret is shown this once:",
                record.id,
                record.scope.name()
            );
            println!("{secret}");
        }
        KeysCommand::List { backend } => {
            existing_deployment(&backend)?;
            let dep = connect(backend).await?;
            let all = keys::list(dep.store.as_ref(), &dep.names.gallery_bucket).await?;
            println!("{:<12}  {:<9}  {:<12}  {:<20}  {:<20}  name", "id", "scope", "rate", "created (UTC)", "collections");
            for k in &all {
                let rate = k.rate_per_sec.map_or("-".to_string(), |r| format!("{r}/s+{}", k.burst.unwrap_or(r)));
                let within = k.collections.as_ref().map_or("all".to_string(), |c| c.join(","));
                let created = created_text(k.created_at);
                println!("{:<12}  {:<9}  {:<12}  {:<20}  {:<20}  {}", k.id, k.scope.name(), rate, created, within, k.name);
            }
            if all.is_empty() {
                println!("(no keys: a loopback stack is open to everyone)");
            }
        }
        KeysCommand::Revoke { id, backend } => {
            existing_deployment(&backend)?;
            let dep = connect(backend).await?;
            let r = keys::revoke(dep.store.as_ref(), &dep.names.gallery_bucket, &id).await?;
            println!("revoked API key {} ({}, scope {})", r.id, r.name, r.scope.name());
            let left = keys::list(dep.store.as_ref(), &dep.names.gallery_bucket).await?;
            if left.is_empty() {
                eprintln!("warning: no API key is left: a stack on loopback (or started with --insecure-open) is now open to everyone");
            } else if !left.iter().any(keys::KeyRecord::is_full_admin) {
                eprintln!("warning: no admin key for all collections is left: keys and deletes can only be managed with this command now");
            }
        }
    }
    Ok(())
}

/// A key's creation time (Unix seconds) as `YYYY-MM-DD HH:MM:SS`, UTC.
fn created_text(unix_secs: u64) -> String {
    i64::try_from(unix_secs)
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map_or_else(|| unix_secs.to_string(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

/// `facefleet enroll`.
#[derive(clap::Args, Debug)]
pub struct EnrollArgs {
    /// Base URL of a running stack.
    #[arg(long, env = "FACEFLEET_URL", conflicts_with = "gallery")]
    pub url: Option<String>,
    /// Local gallery folder (holds gallery.bin).
    #[arg(long)]
    pub gallery: Option<PathBuf>,
    /// Labels CSV `Image,Results` naming the people of `--dir` (header
    /// optional, names may be quoted).
    #[arg(long, requires = "dir")]
    pub labels: Option<PathBuf>,
    /// Folder of photos to enroll with `--labels`.
    #[arg(long, requires = "labels")]
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Person's name (not with --labels).
    #[arg(required_unless_present = "labels", conflicts_with = "labels")]
    pub name: Option<String>,
    /// Photos of the person.
    #[arg(required_unless_present = "labels", conflicts_with = "labels")]
    pub images: Vec<PathBuf>,
}

/// Runs `facefleet enroll`: into a running stack (`--url`) or a local
/// gallery folder (`--gallery`).
pub async fn enroll(a: EnrollArgs) -> anyhow::Result<()> {
    match (a.url, a.gallery) {
        (Some(url), None) => {
            client::check_url(&url)?;
            let c = client::http_client()?;
            if let (Some(labels), Some(dir)) = (a.labels, a.dir) {
                let (people, faces) = client::enroll_labelled(&c, &url, &dir, &labels).await?;
                println!("enrolled {faces} photos of {people} people");
            } else {
                let name = a.name.context("NAME is required")?;
                for answer in client::enroll_all(&c, &url, &name, &a.images).await? {
                    println!("{answer}");
                }
            }
            Ok(())
        }
        (None, Some(gallery)) => {
            anyhow::ensure!(a.labels.is_none(), "--labels needs --url");
            let name = facefleet_gallery::names::normalize_person(&a.name.context("NAME is required")?);
            // The same rule as the server's, so a name is valid in both places.
            facefleet_gallery::names::validate_person(&name).map_err(|e| anyhow::anyhow!("{e}"))?;
            let engine = run::load_engine(&a.model).await?;
            let images = a.images;
            let report = tokio::task::spawn_blocking(move || facefleet_model::local::enroll(&gallery, &name, &images, engine.model())).await??;
            for (p, why) in &report.skipped {
                eprintln!("skipped {}: {why}", p.display());
            }
            println!(
                "enrolled {} photo(s) of {} ({} embeddings; {} people in {})",
                report.enrolled.len(),
                report.name,
                report.person_embeddings,
                report.people,
                report.gallery_file.display()
            );
            Ok(())
        }
        _ => anyhow::bail!("give either --url URL (a running stack) or --gallery DIR (a local gallery)"),
    }
}

/// `facefleet recognize`.
#[derive(clap::Args, Debug)]
pub struct RecognizeArgs {
    /// Base URL of a running stack.
    #[arg(long, env = "FACEFLEET_URL", conflicts_with = "gallery")]
    pub url: Option<String>,
    /// Local gallery folder.
    #[arg(long)]
    pub gallery: Option<PathBuf>,
    /// Print every face as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Photos.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

/// Runs `facefleet recognize`: through a running stack (`--url`) or against
/// a local gallery folder (`--gallery`).
pub async fn recognize(a: RecognizeArgs) -> anyhow::Result<()> {
    match (a.url, a.gallery) {
        (Some(url), None) => {
            client::check_url(&url)?;
            let c = client::http_client()?;
            let mut failed = 0;
            for img in &a.images {
                match client::recognize(&c, &url, img, a.json).await {
                    Ok(out) => println!("{}", out.trim_end()),
                    Err(e) => {
                        failed += 1;
                        eprintln!("{}: {e:#}", img.display())
                    }
                }
            }
            anyhow::ensure!(failed == 0, "{failed} of {} photos failed", a.images.len());
            Ok(())
        }
        (None, Some(gallery)) => {
            let engine = run::load_engine(&a.model).await?;
            let images = a.images;
            let results = tokio::task::spawn_blocking(move || facefleet_model::local::recognize(&gallery, &images, engine.model())).await??;
            if a.json {
                println!("{}", facefleet_model::local::format_json(&results));
            } else {
                // Answers on stdout; a photo that could not be read on
                // stderr, as with `--url`.
                for (stem, r) in &results {
                    match r {
                        Ok(_) => println!("{}", facefleet_model::local::format_line(stem, r)),
                        Err(e) => eprintln!("{stem}: {e}"),
                    }
                }
            }
            let failed = results.iter().filter(|(_, r)| r.is_err()).count();
            anyhow::ensure!(failed == 0, "{failed} of {} photos failed", results.len());
            Ok(())
        }
        _ => anyhow::bail!("give either --url URL (a running stack) or --gallery DIR (a local gallery)"),
    }
}

/// `facefleet loadgen`.
#[derive(clap::Args, Debug)]
pub struct LoadgenArgs {
    /// Base URL of the stack.
    #[arg(long, env = "FACEFLEET_URL", default_value = "http://127.0.0.1:8000")]
    pub url: String,
    /// Folder of images.
    #[arg(long)]
    pub dir: PathBuf,
    /// Labels CSV `Image,Results`.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Requests in flight at once (at least 1).
    #[arg(long, short = 'c', default_value_t = 100, value_parser = at_least::<1>)]
    pub concurrency: usize,
    /// Send only the first N images (at least 1).
    #[arg(long, value_parser = at_least::<1>)]
    pub limit: Option<usize>,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 120.0, value_parser = parse_seconds)]
    pub timeout: f64,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Watch `GET /v1/status`: report peak instances and the scale-in
    /// time after the last answer.
    #[arg(long)]
    pub watch_scaling: bool,
}

/// Runs `facefleet loadgen` and fails when an answer failed or was wrong.
pub async fn loadgen(a: LoadgenArgs) -> anyhow::Result<()> {
    client::check_url(&a.url)?;
    let opts = loadgen::LoadgenOptions {
        url: a.url,
        dir: a.dir,
        labels: a.labels,
        concurrency: a.concurrency,
        limit: a.limit,
        timeout: Duration::from_secs_f64(a.timeout),
        progress: !a.quiet,
    };
    let report = loadgen::run_with(&opts, a.watch_scaling).await?;
    println!("{report}");
    // Why requests failed, most common first (a missing key and a server
    // that is down look alike in the counts).
    for (why, n) in loadgen::failure_reasons(&report).into_iter().take(3) {
        eprintln!("{n} failed with {why}");
    }
    anyhow::ensure!(report.failed == 0 && report.wrong == 0, "{} failed, {} wrong", report.failed, report.wrong);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn key_creation_times_read_as_utc_dates() {
        assert_eq!(super::created_text(0), "1970-01-01 00:00:00");
        assert_eq!(super::created_text(1_800_000_000), "2027-01-15 08:00:00");
        assert_eq!(super::created_text(u64::MAX), u64::MAX.to_string(), "out of range: the raw number");
    }
}
