//! Which adapters a process talks to, chosen in ONE place.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use facefleet_pipeline::backend::Deployment;
use facefleet_ports::{Fleet, Names};

use crate::settings::{BackendArgs, BackendKind};

/// The error of `--backend aws` (or `--fleet ec2`) in a build without the
/// AWS backend.
#[cfg(not(feature = "aws"))]
pub(crate) fn no_aws() -> anyhow::Error {
    anyhow::anyhow!(
        "this build has no AWS backend; rebuild with it: `cargo build --release -p facefleet --features aws` (see docs/DEPLOY_AWS.md)"
    )
}

/// Opens the chosen backend's buckets and queues, with `fleet` as the
/// deployment's worker fleet (`None` for the processes that do not manage
/// workers: web tiers and workers themselves).
pub async fn connect(backend: &BackendArgs, fleet: Option<Arc<dyn Fleet>>) -> anyhow::Result<Deployment> {
    let names = backend.names();
    let mut dep = match backend.backend {
        BackendKind::Embedded => embedded(&backend.data_dir, names)?,
        #[cfg(feature = "aws")]
        BackendKind::Aws => {
            let (store, queue) = facefleet_aws::connect(&backend.aws.options()).await;
            Deployment { names, store, queue, fleet: None }
        }
        #[cfg(not(feature = "aws"))]
        BackendKind::Aws => return Err(no_aws()),
    };
    dep.fleet = fleet;
    Ok(dep)
}

/// Opens the embedded adapters rooted at `data_dir` (created if missing):
/// buckets in `<data_dir>/buckets`, queues in `<data_dir>/queues.sqlite3`.
/// No fleet.
pub fn embedded(data_dir: &Path, names: Names) -> anyhow::Result<Deployment> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating the data folder {}", data_dir.display()))?;
    let (store, queue) =
        facefleet_embedded::EmbeddedBackend::open(data_dir).with_context(|| format!("opening the embedded backend in {}", data_dir.display()))?;
    Ok(Deployment { names, store, queue, fleet: None })
}
