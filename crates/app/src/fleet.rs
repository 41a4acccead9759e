//! The worker fleet: local `app-tier` processes, or EC2 instances.
//!
//! A local worker gets exactly its parent's [`WorkerSettings`]: they are
//! passed as the environment variables of the worker's flags
//! ([`crate::settings::to_env`]), so every setting the parent was started
//! with (AWS profile and retries included) reaches the worker, checked again
//! by the same flags there.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use facefleet_embedded::ProcessFleet;
use facefleet_ports::Fleet;

use crate::settings::{to_env, FleetKind, ScalerArgs, WorkerSettings};

/// The worker program and the arguments that select its worker mode:
/// `app-tier` beside the running executable when it exists, else the
/// running executable itself with `worker` (the `facefleet` binary).
pub fn default_worker_program() -> anyhow::Result<(PathBuf, Vec<String>)> {
    let me = std::env::current_exe().context("finding the running executable")?;
    let sibling = me.with_file_name(format!("app-tier{}", std::env::consts::EXE_SUFFIX));
    if sibling.is_file() && sibling != me {
        return Ok((sibling, vec![]));
    }
    let stem = me.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    anyhow::ensure!(
        stem == "facefleet",
        "cannot find the worker program `app-tier` next to {} (build it with `cargo build -p app-tier`, or pass --worker-program)",
        me.display()
    );
    Ok((me, vec!["worker".into()]))
}

/// The environment of a local worker: its settings, and one compute thread
/// (parallelism comes from worker processes; override with
/// `RAYON_NUM_THREADS`).
pub fn worker_env(settings: &WorkerSettings) -> anyhow::Result<Vec<(String, String)>> {
    let mut settings = settings.clone();
    settings.backend = settings.backend.resolved()?;
    let mut env = to_env(&settings)?;
    env.push(("RUST_LOG".to_string(), std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into())));
    env.push(("RAYON_NUM_THREADS".to_string(), std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "1".into())));
    Ok(env)
}

/// A process fleet of workers running with `settings` (logs in
/// `<data-dir>/logs`, pid records in `<data-dir>/fleet`). With `template`,
/// and when the worker program is facefleet's own (`facefleet` or
/// `app-tier`, which serve as templates: see [`crate::run::worker_main`]),
/// workers are forked from a template process that loaded the model once.
pub fn process_fleet(program: Option<&Path>, settings: &WorkerSettings, template: bool) -> anyhow::Result<ProcessFleet> {
    let stem = |p: &Path| p.file_stem().and_then(|s| s.to_str()).map(str::to_string);
    let (program, args) = match program {
        // The `facefleet` binary runs a worker with its `worker` subcommand.
        Some(p) if stem(p).as_deref() == Some("facefleet") => (p.to_path_buf(), vec!["worker".to_string()]),
        Some(p) => (p.to_path_buf(), vec![]),
        None => default_worker_program()?,
    };
    let ours = matches!(stem(&program).as_deref(), Some("facefleet" | "app-tier"));
    let env = worker_env(settings)?;
    let data_dir = std::path::absolute(&settings.backend.data_dir)?;
    tracing::info!(program = %program.display(), ?args, template = template && ours, "worker program");
    Ok(ProcessFleet::new(program, args, env, data_dir.join("logs"))
        .with_state_dir(data_dir.join("fleet"))
        .with_template(template && ours))
}

/// The settings of local workers: `settings`, with one compute slot per
/// core of this machine unless `--compute-slots` was given (the workers
/// share its cores; see [`crate::compute_slots`]).
pub fn local_worker_settings(settings: &WorkerSettings) -> WorkerSettings {
    let mut settings = settings.clone();
    if settings.worker.compute_slots.is_none() {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        settings.worker.compute_slots = Some(u16::try_from(cores.min(1024)).unwrap_or(1024));
    }
    settings
}

/// The worker fleet `scaler.fleet` asks for, and the local fleet to shut
/// down at the end (EC2 workers are left to the autoscaler's scale-in).
pub async fn make_fleet(settings: &WorkerSettings, scaler: &ScalerArgs) -> anyhow::Result<(Arc<dyn Fleet>, Option<Arc<ProcessFleet>>)> {
    match scaler.fleet {
        FleetKind::Local => {
            let settings = &local_worker_settings(settings);
            let f = Arc::new(
                process_fleet(scaler.worker_program.as_deref(), settings, !scaler.no_worker_template)?.with_niceness(scaler.worker_nice),
            );
            // Workers of an earlier `up` on this data folder that died
            // without stopping them (they also exit by themselves when
            // their parent dies): never more than max after a restart.
            let killed = f.kill_leftovers().await.context("stopping the workers of an earlier stack")?;
            if !killed.is_empty() {
                let list: Vec<String> = killed.iter().map(ToString::to_string).collect();
                tracing::warn!(workers = %list.join(", "), "killed workers left running by an earlier stack on this data folder");
            }
            // Load the model in the template now, not in the first burst.
            if let Err(e) = f.start_template().await {
                tracing::warn!(error = %e, "cannot start the worker template; workers will start as new processes");
            }
            Ok((f.clone(), Some(f)))
        }
        #[cfg(not(feature = "aws"))]
        FleetKind::Ec2 => Err(crate::backend::no_aws()),
        #[cfg(feature = "aws")]
        FleetKind::Ec2 => {
            anyhow::ensure!(settings.backend.backend == crate::settings::BackendKind::Aws, "--fleet ec2 needs --backend aws");
            let clients = facefleet_aws::AwsClients::load(&settings.backend.aws.options()).await;
            let f = facefleet_aws::ec2_fleet(&clients, &settings.backend.prefix, scaler.max_instances, scaler.max_instances);
            Ok((Arc::new(f), None))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Parent {
        #[command(flatten)]
        settings: WorkerSettings,
    }

    #[test]
    fn a_worker_gets_every_setting_with_an_absolute_data_folder() {
        let p = Parent::try_parse_from(["up", "--data-dir", "rel/data", "--prefix", "abc", "--visibility", "20", "--recognizer", "dlib-resnet"]).unwrap();
        let env = worker_env(&p.settings).unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let dir = PathBuf::from(get("FACEFLEET_DATA_DIR").unwrap());
        assert!(dir.is_absolute() && dir.ends_with("rel/data"), "{dir:?}");
        assert_eq!(get("FACEFLEET_PREFIX").as_deref(), Some("abc"));
        assert_eq!(get("FACEFLEET_VISIBILITY").as_deref(), Some("20"));
        assert_eq!(get("FACEFLEET_RECOGNIZER").as_deref(), Some("dlib-resnet"));
        assert_eq!(get("FACEFLEET_MAX_ATTEMPTS").as_deref(), Some("3"));
        assert!(get("RAYON_NUM_THREADS").is_some());
        assert_eq!(get("FACEFLEET_COMPUTE_SLOTS"), None, "no limit unless set");
        let local = worker_env(&local_worker_settings(&p.settings)).unwrap();
        let slots = local.iter().find(|(n, _)| n == "FACEFLEET_COMPUTE_SLOTS").map(|(_, v)| v.parse::<usize>().unwrap());
        assert_eq!(slots, Some(std::thread::available_parallelism().unwrap().get()), "local workers: one slot per core");
        let given = Parent::try_parse_from(["up", "--compute-slots", "0"]).unwrap();
        let env = worker_env(&local_worker_settings(&given.settings)).unwrap();
        assert!(env.iter().any(|(n, v)| n == "FACEFLEET_COMPUTE_SLOTS" && v == "0"), "an explicit value is kept");
        #[cfg(feature = "aws")]
        for var in ["FACEFLEET_AWS_MAX_ATTEMPTS", "FACEFLEET_AWS_RETRY_MODE"] {
            assert!(get(var).is_some(), "{var} is passed on");
        }
    }
}
