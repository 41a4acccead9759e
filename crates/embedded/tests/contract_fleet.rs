//! The fleet contract, run against [`ProcessFleet`] with a shell script as
//! the worker (it runs until SIGTERM).

use std::path::PathBuf;
use std::sync::Arc;

use facefleet_embedded::ProcessFleet;
use facefleet_ports::Fleet;

async fn make_fleet() -> (Arc<dyn Fleet>, tempfile::TempDir) {
    let logs = tempfile::tempdir().expect("temporary folder");
    let fleet = ProcessFleet::new(
        PathBuf::from("/bin/sh"),
        vec!["-c".into(), "trap 'exit 0' TERM; while :; do sleep 0.1; done".into()],
        Vec::new(),
        logs.path(),
    );
    (Arc::new(fleet), logs)
}

facefleet_ports::fleet_contract!(make_fleet().await);
