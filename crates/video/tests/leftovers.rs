//! Temporary files left by a crashed process are swept at start.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{create_buckets, fs_store, FakeRecognizer};
use facefleet_ports::Names;
use facefleet_video::http::{router, VideoApi};
use facefleet_video::temp::{sweep, SHARED_MIN_AGE, SPLIT_PREFIX, UPLOAD_PREFIX};
use facefleet_video::{spawn_trigger, SplitConfig, TriggerConfig};

/// A split folder as a killed split leaves it: the input copy and frames.
fn crashed_split(dir: &Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(path.join("frames")).unwrap();
    std::fs::write(path.join("input"), b"a copy of the video").unwrap();
    std::fs::write(path.join("frames/output-00.jpg"), b"jpeg").unwrap();
    path
}

fn set_age(path: &Path, age: Duration) {
    let file = std::fs::File::open(path).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
}

#[tokio::test]
async fn a_starting_trigger_removes_the_split_folders_a_crash_left_in_its_folder() {
    let (_data, store) = fs_store();
    let names = Names::new("sweep1");
    create_buckets(&*store, &names).await;
    let tmp = tempfile::tempdir().unwrap();
    let leftover = crashed_split(tmp.path(), &format!("{SPLIT_PREFIX}k1ll3d"));
    let foreign = crashed_split(tmp.path(), "someone-elses-split");
    let upload = tmp.path().join(format!("{UPLOAD_PREFIX}x"));
    std::fs::write(&upload, b"not a split folder").unwrap();
    let config = TriggerConfig {
        split: SplitConfig { temp_dir: Some(tmp.path().to_path_buf()), ..SplitConfig::default() },
        ..TriggerConfig::default()
    };
    let trigger = spawn_trigger(store.clone(), names, Arc::new(FakeRecognizer::new()), config).await.unwrap();
    trigger.shutdown().await;
    assert!(!leftover.exists(), "the crashed split's folder is still there");
    assert!(foreign.join("input").is_file(), "another program's folder was removed");
    assert!(upload.is_file(), "a file of another prefix was removed");
}

#[tokio::test]
async fn the_video_api_removes_the_spool_files_a_crash_left_in_its_folder() {
    let (_data, store) = fs_store();
    let names = Names::new("sweep2");
    let spool = tempfile::tempdir().unwrap();
    let leftover = spool.path().join(format!("{UPLOAD_PREFIX}Ab12Cd"));
    std::fs::write(&leftover, vec![7u8; 4096]).unwrap();
    let foreign = spool.path().join("notes.txt");
    std::fs::write(&foreign, b"keep me").unwrap();
    let split = crashed_split(spool.path(), &format!("{SPLIT_PREFIX}x"));
    let _app = router(VideoApi::new(store, names).with_spool_dir(spool.path()));
    assert!(!leftover.exists(), "the crashed upload's spool file is still there");
    assert!(foreign.is_file() && split.join("input").is_file(), "files of other names were removed");
}

#[test]
fn in_a_shared_folder_only_old_leftovers_are_removed() {
    // The system temp folder may serve other stacks: their live splits are
    // young, a crashed one's folder gets old.
    let tmp = tempfile::tempdir().unwrap();
    let old = crashed_split(tmp.path(), &format!("{SPLIT_PREFIX}old"));
    set_age(&old, SHARED_MIN_AGE + Duration::from_secs(60));
    let young = crashed_split(tmp.path(), &format!("{SPLIT_PREFIX}young"));
    assert_eq!(sweep(tmp.path(), SPLIT_PREFIX, SHARED_MIN_AGE).unwrap(), 1);
    assert!(!old.exists());
    assert!(young.join("input").is_file());
    assert_eq!(sweep(&tmp.path().join("missing"), SPLIT_PREFIX, SHARED_MIN_AGE).unwrap(), 0);
}
