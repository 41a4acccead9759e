//! Filesystem-specific behaviour of [`FsObjectStore`]: layout, refusal of
//! escaping keys and bucket names, symlinks, persistence.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use facefleet_embedded::FsObjectStore;
use facefleet_ports::{ObjectStore, PortError};

/// Every file under `root`, relative, sorted.
fn files_under(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let ft = entry.file_type().unwrap();
            if ft.is_dir() {
                walk(&entry.path(), root, out);
            } else {
                out.push(entry.path().strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

#[tokio::test]
async fn objects_live_in_bucket_folders() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsObjectStore::new(dir.path()).unwrap();
    store.create_bucket("in-bucket").await.unwrap();
    store.put("in-bucket", "test_00.jpg", Bytes::from_static(b"jpeg")).await.unwrap();
    store.put("in-bucket", "videos/a/frame1.jpg", Bytes::from_static(b"f")).await.unwrap();
    assert_eq!(
        files_under(dir.path()),
        vec![PathBuf::from("buckets/in-bucket/test_00.jpg"), PathBuf::from("buckets/in-bucket/videos/a/frame1.jpg")]
    );
    assert_eq!(std::fs::read(dir.path().join("buckets/in-bucket/test_00.jpg")).unwrap(), b"jpeg");
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(dir.path().join("buckets/.tmp")).unwrap().count(), 0);
}

#[tokio::test]
async fn escaping_keys_and_bucket_names_write_nothing_outside() {
    let outer = tempfile::tempdir().unwrap();
    let data = outer.path().join("data");
    let store = FsObjectStore::new(&data).unwrap();
    store.create_bucket("b").await.unwrap();
    let body = Bytes::from_static(b"evil");
    for key in ["../x", "../../x", "/abs", "/tmp/x", "a/../../../x", "..", ".", "a\\..\\x"] {
        let err = store.put("b", key, body.clone()).await.unwrap_err();
        assert!(matches!(err, PortError::InvalidKey { .. }), "{key}: {err:?}");
        let err = store.put_if_absent("b", key, body.clone()).await.unwrap_err();
        assert!(matches!(err, PortError::InvalidKey { .. }), "{key}: {err:?}");
    }
    for bucket in ["..", "../b", "b/../../x", "/abs", ".tmp", "", "UPPER", "a/b", "a\\b"] {
        let err = store.create_bucket(bucket).await.unwrap_err();
        assert!(matches!(err, PortError::InvalidArgument(_)), "create {bucket:?}: {err:?}");
        let err = store.put(bucket, "k", body.clone()).await.unwrap_err();
        assert!(matches!(err, PortError::InvalidArgument(_)), "put into {bucket:?}: {err:?}");
        let err = store.get(bucket, "k").await.unwrap_err();
        assert!(matches!(err, PortError::InvalidArgument(_)), "get from {bucket:?}: {err:?}");
    }
    // Only the data folder's skeleton exists, nothing beside it.
    assert_eq!(files_under(outer.path()), Vec::<PathBuf>::new());
    let mut top: Vec<_> = std::fs::read_dir(outer.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    top.sort();
    assert_eq!(top, vec!["data"]);
}

#[tokio::test]
async fn symlinks_are_not_followed() {
    let outer = tempfile::tempdir().unwrap();
    let secret = outer.path().join("secret.txt");
    std::fs::write(&secret, b"do not read").unwrap();
    let store = FsObjectStore::new(outer.path().join("data")).unwrap();
    store.create_bucket("b").await.unwrap();
    let bucket_dir = store.buckets_dir().join("b");
    std::os::unix::fs::symlink(&secret, bucket_dir.join("link")).unwrap();
    std::os::unix::fs::symlink(outer.path(), bucket_dir.join("dirlink")).unwrap();
    assert!(matches!(store.get("b", "link").await, Err(PortError::NoSuchKey { .. })));
    assert_eq!(store.head("b", "link").await.unwrap(), None);
    assert!(store.list_all("b", "").await.unwrap().is_empty(), "symlinks listed");
    for key in ["dirlink/secret.txt", "dirlink/new.txt"] {
        let err = store.put("b", key, Bytes::from_static(b"x")).await.unwrap_err();
        assert!(matches!(err, PortError::InvalidKey { .. }), "put {key}: {err:?}");
        let err = store.get("b", key).await.unwrap_err();
        assert!(matches!(err, PortError::InvalidKey { .. }), "get {key}: {err:?}");
    }
    assert!(!outer.path().join("new.txt").exists());
    // Writing over the link replaces the link, not the file it points to.
    store.put("b", "link", Bytes::from_static(b"new")).await.unwrap();
    assert_eq!(std::fs::read(&secret).unwrap(), b"do not read");
    assert_eq!(store.get("b", "link").await.unwrap(), Bytes::from_static(b"new"));
}

#[tokio::test]
async fn object_and_prefix_folder_conflict_is_refused_then_allowed_after_delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsObjectStore::new(dir.path()).unwrap();
    store.create_bucket("b").await.unwrap();
    store.put("b", "a/b", Bytes::from_static(b"1")).await.unwrap();
    let err = store.put("b", "a", Bytes::from_static(b"2")).await.unwrap_err();
    assert!(matches!(err, PortError::InvalidKey { .. }), "{err:?}");
    let err = store.put("b", "a/b/c", Bytes::from_static(b"3")).await.unwrap_err();
    assert!(matches!(err, PortError::InvalidKey { .. }), "{err:?}");
    store.delete("b", "a/b").await.unwrap();
    assert!(!dir.path().join("buckets/b/a").exists(), "emptied prefix folder left behind");
    store.put("b", "a", Bytes::from_static(b"2")).await.unwrap();
    assert_eq!(store.get("b", "a").await.unwrap(), Bytes::from_static(b"2"));
}

#[tokio::test]
async fn objects_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = FsObjectStore::new(dir.path()).unwrap();
        store.create_bucket("b").await.unwrap();
        store.put("b", "k", Bytes::from_static(b"kept")).await.unwrap();
    }
    let store = FsObjectStore::new(dir.path()).unwrap();
    assert!(store.bucket_exists("b").await.unwrap());
    assert_eq!(store.get("b", "k").await.unwrap(), Bytes::from_static(b"kept"));
}

#[tokio::test]
async fn leftover_temporary_files_are_invisible() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsObjectStore::new(dir.path()).unwrap();
    store.create_bucket("b").await.unwrap();
    // A crash between writing and renaming leaves a temporary file.
    std::fs::write(dir.path().join("buckets/.tmp/crashed.part"), b"partial").unwrap();
    assert!(store.list_all("b", "").await.unwrap().is_empty());
    assert!(!store.bucket_exists(".tmp").await.unwrap_or(false));
}

#[tokio::test]
async fn list_rejects_bad_max_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsObjectStore::new(dir.path()).unwrap();
    store.create_bucket("b").await.unwrap();
    for max in [0, 1001] {
        assert!(matches!(store.list("b", "", None, max).await, Err(PortError::InvalidArgument(_))));
    }
}
