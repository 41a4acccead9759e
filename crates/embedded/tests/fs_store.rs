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

#[tokio::test]
async fn errors_name_bucket_and_key_not_paths() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsObjectStore::new(dir.path()).unwrap();
    store.create_bucket("b").await.unwrap();
    // A valid key whose segment is too long for the filesystem (ENAMETOOLONG).
    let key = "x".repeat(300);
    let data_dir = dir.path().display().to_string();
    let messages = [
        store.get("b", &key).await.unwrap_err().to_string(),
        store.head("b", &key).await.unwrap_err().to_string(),
        store.delete("b", &key).await.unwrap_err().to_string(),
        store.remove("b", &key).await.unwrap_err().to_string(),
        store.put_file("b", "k", &dir.path().join("no-such-upload")).await.unwrap_err().to_string(),
    ];
    for msg in &messages {
        assert!(!msg.contains(&data_dir), "an error names a filesystem path: {msg}");
    }
    assert!(messages[0].starts_with("cannot read object") && messages[0].contains("bucket `b`"), "{}", messages[0]);
}

#[tokio::test]
async fn put_file_copies_atomically_and_never_follows_symlinks() {
    let outer = tempfile::tempdir().unwrap();
    let store = FsObjectStore::new(outer.path().join("data")).unwrap();
    store.create_bucket("b").await.unwrap();
    let upload = outer.path().join("upload.bin");
    std::fs::write(&upload, vec![5u8; 100_000]).unwrap();
    store.put_file("b", "videos/v.mp4", &upload).await.unwrap();
    assert_eq!(std::fs::read(store.buckets_dir().join("b/videos/v.mp4")).unwrap(), vec![5u8; 100_000]);
    assert_eq!(std::fs::read(&upload).unwrap().len(), 100_000, "the uploaded file is left in place");
    assert_eq!(std::fs::read_dir(store.buckets_dir().join(".tmp")).unwrap().count(), 0, "temporary file left");

    std::os::unix::fs::symlink(outer.path(), store.buckets_dir().join("b/dirlink")).unwrap();
    let err = store.put_file("b", "dirlink/new.txt", &upload).await.unwrap_err();
    assert!(matches!(err, PortError::InvalidKey { .. }), "{err:?}");
    assert!(!outer.path().join("new.txt").exists());
    // A folder/object conflict is refused as by `put`.
    let err = store.put_file("b", "videos/v.mp4/x", &upload).await.unwrap_err();
    assert!(matches!(err, PortError::InvalidKey { .. }), "{err:?}");
    assert_eq!(std::fs::read_dir(store.buckets_dir().join(".tmp")).unwrap().count(), 0, "temporary file left");
}

#[tokio::test]
async fn remove_has_exactly_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsObjectStore::new(dir.path()).unwrap();
    store.create_bucket("b").await.unwrap();
    for round in 0..20 {
        let key = format!("r/{round}");
        store.put("b", &key, Bytes::from_static(b"x")).await.unwrap();
        let removes = (0..16).map(|_| {
            let (store, key) = (store.clone(), key.clone());
            tokio::spawn(async move { store.remove("b", &key).await.unwrap() })
        });
        let mut winners = 0;
        for r in removes.collect::<Vec<_>>() {
            winners += usize::from(r.await.unwrap());
        }
        assert_eq!(winners, 1, "round {round}");
    }
}

/// Deleting the last object of a folder removes the folder; a put into it
/// at the same moment must still succeed (it once failed as a "key both an
/// object and a folder" conflict when the folder vanished mid-creation).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn puts_and_deletes_racing_in_one_folder_never_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsObjectStore::new(dir.path()).unwrap();
    store.create_bucket("b").await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..1000 {
                    let key = format!("log/{t}-{i}.json");
                    let put = store.put_if_absent("b", &key, Bytes::from_static(b"{}")).await;
                    assert!(matches!(put, Ok(true)), "put {key}: {put:?}");
                    store.remove("b", &key).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn listing_skips_empty_folders_and_symlinked_prefixes() {
    let outer = tempfile::tempdir().unwrap();
    let store = FsObjectStore::new(outer.path().join("data")).unwrap();
    store.create_bucket("b").await.unwrap();
    let bucket_dir = store.buckets_dir().join("b");
    std::fs::create_dir_all(bucket_dir.join("p/q/r")).unwrap();
    std::fs::create_dir_all(bucket_dir.join("p/empty")).unwrap();
    store.put("b", "p/q/k", Bytes::from_static(b"1")).await.unwrap();
    let keys = |v: Vec<facefleet_ports::ObjectMeta>| v.into_iter().map(|m| m.key).collect::<Vec<_>>();
    assert_eq!(keys(store.list_all("b", "").await.unwrap()), vec!["p/q/k"]);
    assert_eq!(keys(store.list_all("b", "p/q/r/").await.unwrap()), Vec::<String>::new());
    assert_eq!(keys(store.list_all("b", "p/empty/x").await.unwrap()), Vec::<String>::new());
    std::fs::write(outer.path().join("secret.txt"), b"s").unwrap();
    std::os::unix::fs::symlink(outer.path(), bucket_dir.join("dirlink")).unwrap();
    assert!(store.list_all("b", "dirlink/").await.unwrap().is_empty(), "listed through a symlink");
    assert!(store.list_all("b", "dirlink/sec").await.unwrap().is_empty(), "listed through a symlink");
}

/// `count` and `list_all` walk the bucket once (overriding the trait's
/// page-by-page defaults) and agree with paging through `list`, past one
/// page of 1000 keys, for whole, folder and partial prefixes.
#[tokio::test]
async fn count_and_list_all_agree_with_paged_listing_past_one_page() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsObjectStore::new(dir.path()).unwrap();
    store.create_bucket("b").await.unwrap();
    // 1200 folders of one object each (like the web tier's uploads), 30 flat
    // objects, and one deeper folder.
    let mut want: Vec<String> = (0..1200).map(|i| format!("{i:04}/photo.jpg")).collect();
    want.extend((0..30).map(|i| format!("flat-{i}.txt")));
    want.extend(["deep/a/b/c.bin".to_string(), "deep/a/d.bin".to_string()]);
    for (i, key) in want.iter().enumerate() {
        store.put("b", key, Bytes::from(vec![7u8; i % 5])).await.unwrap();
    }
    want.sort();
    for prefix in ["", "0", "01", "0119/", "flat-", "flat-2", "deep/", "deep/a/b", "none", "0119/photo.jpg"] {
        let expected: Vec<&String> = want.iter().filter(|k| k.starts_with(prefix)).collect();
        let mut paged = Vec::new();
        let mut token = None;
        loop {
            let page = store.list("b", prefix, token, 1000).await.unwrap();
            paged.extend(page.objects);
            match page.next_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        let all = store.list_all("b", prefix).await.unwrap();
        assert_eq!(all, paged, "{prefix:?}");
        assert_eq!(all.iter().map(|m| &m.key).collect::<Vec<_>>(), expected, "{prefix:?}");
        assert_eq!(store.count("b", prefix).await.unwrap(), expected.len() as u64, "{prefix:?}");
    }
    assert_eq!(store.count("b", "").await.unwrap(), 1232);
    assert!(matches!(store.count("missing", "").await, Err(PortError::NoSuchBucket(_))));
}
