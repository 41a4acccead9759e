//! Object-store contract cases. Each takes the store and a unique namespace
//! and creates its buckets as `<ns>-<suffix>`.

use bytes::Bytes;
use futures::future::join_all;

use crate::{ObjectStore, PortError};

/// Names of every case, in the order [`run_all`] runs them.
pub const CASES: &[&str] = &[
    "create_bucket_is_idempotent",
    "bucket_exists_reports_presence",
    "put_then_get_roundtrips",
    "put_overwrites",
    "head_reports_size_or_none",
    "get_missing_key_is_no_such_key",
    "missing_bucket_is_no_such_bucket",
    "invalid_keys_are_refused",
    "list_filters_by_prefix_in_byte_order",
    "list_paginates_with_small_max_keys",
    "list_of_empty_bucket_is_empty",
    "delete_removes_and_tolerates_missing",
    "count_and_list_all_see_every_object",
    "put_if_absent_creates_once",
    "put_if_absent_has_one_winner_under_concurrency",
    "concurrent_puts_are_all_stored",
    "put_file_stores_the_file",
    "remove_says_whether_it_was_there",
    "list_tolerates_concurrent_deletes",
];

/// Runs every case in sequence, each in its own namespace derived from `ns`.
pub async fn run_all(store: &dyn ObjectStore, ns: &str) {
    create_bucket_is_idempotent(store, &format!("{ns}-c1")).await;
    bucket_exists_reports_presence(store, &format!("{ns}-c2")).await;
    put_then_get_roundtrips(store, &format!("{ns}-c3")).await;
    put_overwrites(store, &format!("{ns}-c4")).await;
    head_reports_size_or_none(store, &format!("{ns}-c5")).await;
    get_missing_key_is_no_such_key(store, &format!("{ns}-c6")).await;
    missing_bucket_is_no_such_bucket(store, &format!("{ns}-c7")).await;
    invalid_keys_are_refused(store, &format!("{ns}-c8")).await;
    list_filters_by_prefix_in_byte_order(store, &format!("{ns}-c9")).await;
    list_paginates_with_small_max_keys(store, &format!("{ns}-c10")).await;
    list_of_empty_bucket_is_empty(store, &format!("{ns}-c11")).await;
    delete_removes_and_tolerates_missing(store, &format!("{ns}-c12")).await;
    count_and_list_all_see_every_object(store, &format!("{ns}-c13")).await;
    put_if_absent_creates_once(store, &format!("{ns}-c14")).await;
    put_if_absent_has_one_winner_under_concurrency(store, &format!("{ns}-c15")).await;
    concurrent_puts_are_all_stored(store, &format!("{ns}-c16")).await;
    put_file_stores_the_file(store, &format!("{ns}-c17")).await;
    remove_says_whether_it_was_there(store, &format!("{ns}-c18")).await;
    list_tolerates_concurrent_deletes(store, &format!("{ns}-c19")).await;
}

async fn fresh_bucket(store: &dyn ObjectStore, ns: &str) -> String {
    let bucket = format!("{ns}-b");
    store
        .create_bucket(&bucket)
        .await
        .unwrap_or_else(|e| panic!("create_bucket({bucket}) failed: {e}"));
    bucket
}

async fn keys_of(store: &dyn ObjectStore, bucket: &str, prefix: &str) -> Vec<String> {
    store
        .list_all(bucket, prefix)
        .await
        .unwrap_or_else(|e| panic!("list_all({bucket}, {prefix:?}) failed: {e}"))
        .into_iter()
        .map(|m| m.key)
        .collect()
}

/// Creating a bucket twice succeeds and keeps its objects.
pub async fn create_bucket_is_idempotent(store: &dyn ObjectStore, ns: &str) {
    let bucket = fresh_bucket(store, ns).await;
    store.put(&bucket, "kept.txt", Bytes::from_static(b"kept")).await.unwrap();
    store
        .create_bucket(&bucket)
        .await
        .expect("creating an existing bucket must succeed");
    assert_eq!(store.get(&bucket, "kept.txt").await.unwrap(), Bytes::from_static(b"kept"));
}

/// `bucket_exists` is false before creation and true after.
pub async fn bucket_exists_reports_presence(store: &dyn ObjectStore, ns: &str) {
    let bucket = format!("{ns}-b");
    assert!(!store.bucket_exists(&bucket).await.unwrap(), "bucket exists before creation");
    store.create_bucket(&bucket).await.unwrap();
    assert!(store.bucket_exists(&bucket).await.unwrap(), "bucket missing after creation");
}

/// Bodies come back byte for byte: binary, empty, 1 MiB, nested and
/// non-ASCII keys.
pub async fn put_then_get_roundtrips(store: &dyn ObjectStore, ns: &str) {
    let bucket = fresh_bucket(store, ns).await;
    let binary: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let big: Vec<u8> = (0..1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let cases: Vec<(&str, Bytes)> = vec![
        ("test_00.jpg", Bytes::from(binary)),
        ("empty", Bytes::new()),
        ("dir/sub/big.bin", Bytes::from(big)),
        ("été 2024.png", Bytes::from_static("ünïcödé body".as_bytes())),
        ("a..b", Bytes::from_static(b"dots inside a name are fine")),
    ];
    for (key, body) in &cases {
        store
            .put(&bucket, key, body.clone())
            .await
            .unwrap_or_else(|e| panic!("put({key}) failed: {e}"));
    }
    for (key, body) in &cases {
        let got = store.get(&bucket, key).await.unwrap_or_else(|e| panic!("get({key}) failed: {e}"));
        assert_eq!(got.len(), body.len(), "length of {key}");
        assert!(got == *body, "body of {key} differs");
    }
}

/// A second put replaces the object (body and size).
pub async fn put_overwrites(store: &dyn ObjectStore, ns: &str) {
    let bucket = fresh_bucket(store, ns).await;
    store.put(&bucket, "k", Bytes::from_static(b"first, longer body")).await.unwrap();
    store.put(&bucket, "k", Bytes::from_static(b"second")).await.unwrap();
    assert_eq!(store.get(&bucket, "k").await.unwrap(), Bytes::from_static(b"second"));
    let meta = store.head(&bucket, "k").await.unwrap().expect("object exists");
    assert_eq!(meta.size, 6);
    assert_eq!(keys_of(store, &bucket, "").await, vec!["k".to_string()]);
}

/// `head` gives key and size of an object, `None` for a missing one.
pub async fn head_reports_size_or_none(store: &dyn ObjectStore, ns: &str) {
    let bucket = fresh_bucket(store, ns).await;
    store.put(&bucket, "x/y.bin", Bytes::from(vec![7u8; 1234])).await.unwrap();
    let meta = store.head(&bucket, "x/y.bin").await.unwrap().expect("object exists");
    assert_eq!(meta.key, "x/y.bin");
    assert_eq!(meta.size, 1234);
    assert_eq!(store.head(&bucket, "x/nope.bin").await.unwrap(), None);
    assert_eq!(store.head(&bucket, "x").await.unwrap(), None, "a key prefix is not an object");
}

/// Reading a missing object is `NoSuchKey` naming the bucket and key.
pub async fn get_missing_key_is_no_such_key(store: &dyn ObjectStore, ns: &str) {
    let bucket = fresh_bucket(store, ns).await;
    store.put(&bucket, "dir/present", Bytes::from_static(b"1")).await.unwrap();
    for key in ["absent.jpg", "dir", "dir/absent"] {
        match store.get(&bucket, key).await {
            Err(PortError::NoSuchKey { bucket: b, key: k }) => {
                assert_eq!(b, bucket);
                assert_eq!(k, key);
            }
            other => panic!("get of missing key {key}: expected NoSuchKey, got {other:?}"),
        }
    }
}

/// Using a bucket that does not exist is `NoSuchBucket` (put, get, list,
/// put_if_absent); `head` may answer `NoSuchBucket` or `None`, `delete`
/// `NoSuchBucket` or success. Nothing creates the bucket implicitly.
pub async fn missing_bucket_is_no_such_bucket(store: &dyn ObjectStore, ns: &str) {
    let bucket = format!("{ns}-missing");
    let is_nsb = |r: &PortError| matches!(r, PortError::NoSuchBucket(b) if *b == bucket);
    match store.put(&bucket, "k", Bytes::from_static(b"x")).await {
        Err(e) if is_nsb(&e) => {}
        other => panic!("put into a missing bucket: expected NoSuchBucket, got {other:?}"),
    }
    match store.put_if_absent(&bucket, "k", Bytes::from_static(b"x")).await {
        Err(e) if is_nsb(&e) => {}
        other => panic!("put_if_absent into a missing bucket: expected NoSuchBucket, got {other:?}"),
    }
    match store.get(&bucket, "k").await {
        Err(e) if is_nsb(&e) => {}
        other => panic!("get from a missing bucket: expected NoSuchBucket, got {other:?}"),
    }
    match store.list(&bucket, "", None, 10).await {
        Err(e) if is_nsb(&e) => {}
        other => panic!("list of a missing bucket: expected NoSuchBucket, got {other:?}"),
    }
    match store.head(&bucket, "k").await {
        Ok(None) => {}
        Err(e) if is_nsb(&e) => {}
        other => panic!("head in a missing bucket: expected None or NoSuchBucket, got {other:?}"),
    }
    match store.delete(&bucket, "k").await {
        Ok(()) => {}
        Err(e) if is_nsb(&e) => {}
        other => panic!("delete in a missing bucket: expected Ok or NoSuchBucket, got {other:?}"),
    }
    assert!(!store.bucket_exists(&bucket).await.unwrap(), "a failed call created the bucket");
}

/// Keys that could escape the bucket or are malformed are refused with
/// `InvalidKey` by every call, and nothing is stored.
pub async fn invalid_keys_are_refused(store: &dyn ObjectStore, ns: &str) {
    let bucket = fresh_bucket(store, ns).await;
    let bad = ["../x", "/abs", "a/../../x", "a//b", "./a", "a/", "", "a\\b", "a\0b"];
    for key in bad {
        let body = Bytes::from_static(b"evil");
        let is_invalid = |r: &PortError| matches!(r, PortError::InvalidKey { .. });
        match store.put(&bucket, key, body.clone()).await {
            Err(e) if is_invalid(&e) => {}
            other => panic!("put({key:?}): expected InvalidKey, got {other:?}"),
        }
        match store.put_if_absent(&bucket, key, body).await {
            Err(e) if is_invalid(&e) => {}
            other => panic!("put_if_absent({key:?}): expected InvalidKey, got {other:?}"),
        }
        match store.get(&bucket, key).await {
            Err(e) if is_invalid(&e) => {}
            other => panic!("get({key:?}): expected InvalidKey, got {other:?}"),
        }
        match store.head(&bucket, key).await {
            Err(e) if is_invalid(&e) => {}
            other => panic!("head({key:?}): expected InvalidKey, got {other:?}"),
        }
        match store.delete(&bucket, key).await {
            Err(e) if is_invalid(&e) => {}
            other => panic!("delete({key:?}): expected InvalidKey, got {other:?}"),
        }
    }
    let long = "k".repeat(1025);
    assert!(matches!(
        store.put(&bucket, &long, Bytes::new()).await,
        Err(PortError::InvalidKey { .. })
    ));
    assert!(keys_of(store, &bucket, "").await.is_empty(), "a refused key was stored");
}

/// Listing returns exactly the keys starting with the prefix (a prefix is a
/// string prefix, not a path segment), sorted by their UTF-8 bytes.
pub async fn list_filters_by_prefix_in_byte_order(store: &dyn ObjectStore, ns: &str) {
    let bucket = fresh_bucket(store, ns).await;
    // Inserted out of order; `a-c` < `a/b` < `a0` in byte order even though
    // `a/b` lives "inside" a directory-like prefix.
    let keys = ["img/b.jpg", "a0", "img/a/2.jpg", "a/b", "img/a1.jpg", "a-c", "img/a/1.jpg", "imgz", "Z"];
    for key in keys {
        store.put(&bucket, key, Bytes::from(key.as_bytes().to_vec())).await.unwrap();
    }
    let mut sorted: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    sorted.sort();
    assert_eq!(keys_of(store, &bucket, "").await, sorted, "full listing");
    assert_eq!(
        keys_of(store, &bucket, "img/a").await,
        vec!["img/a/1.jpg", "img/a/2.jpg", "img/a1.jpg"],
        "prefix `img/a`"
    );
    assert_eq!(
        keys_of(store, &bucket, "img").await,
        vec!["img/a/1.jpg", "img/a/2.jpg", "img/a1.jpg", "img/b.jpg", "imgz"],
        "prefix `img`"
    );
    assert_eq!(keys_of(store, &bucket, "a").await, vec!["a-c", "a/b", "a0"], "prefix `a`");
    assert!(keys_of(store, &bucket, "nothing").await.is_empty(), "unmatched prefix");
    let page = store.list(&bucket, "img/a/", None, 1000).await.unwrap();
    let sizes: Vec<(String, u64)> = page.objects.into_iter().map(|m| (m.key, m.size)).collect();
    assert_eq!(sizes, vec![("img/a/1.jpg".to_string(), 11), ("img/a/2.jpg".to_string(), 11)]);
    assert_eq!(page.next_token, None);
}

/// With a small `max_keys`, pages hold at most that many keys, continue
/// where the previous stopped, and the last page has no token.
pub async fn list_paginates_with_small_max_keys(store: &dyn ObjectStore, ns: &str) {
    let bucket = fresh_bucket(store, ns).await;
    let mut expected = Vec::new();
    for i in (0..11).rev() {
        let key = format!("p/{i:02}.txt");
        store.put(&bucket, &key, Bytes::from_static(b".")).await.unwrap();
        expected.push(key);
    }
    store.put(&bucket, "q/outside.txt", Bytes::from_static(b".")).await.unwrap();
    expected.sort();
    for max_keys in [1usize, 2, 3, 11, 12] {
        let mut token = None;
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let page = store.list(&bucket, "p/", token.clone(), max_keys).await.unwrap();
            pages += 1;
            assert!(pages <= 12, "max_keys={max_keys}: pagination does not end");
            assert!(page.objects.len() <= max_keys, "page larger than max_keys={max_keys}");
            if page.next_token.is_some() {
                assert!(!page.objects.is_empty(), "empty page with a continuation token");
            }
            seen.extend(page.objects.into_iter().map(|m| m.key));
            match page.next_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        assert_eq!(seen, expected, "max_keys={max_keys}: pages joined");
    }
}

/// A fresh bucket lists nothing and counts zero.
pub async fn list_of_empty_bucket_is_empty(store: &dyn ObjectStore, ns: &str) {
    let bucket = fresh_bucket(store, ns).await;
    let page = store.list(&bucket, "", None, 10).await.unwrap();
    assert!(page.objects.is_empty());
    assert_eq!(page.next_token, None);
    assert_eq!(store.count(&bucket, "").await.unwrap(), 0);
}

/// Deleting removes the object; deleting a missing object succeeds.
pub async fn delete_removes_and_tolerates_missing(store: &dyn ObjectStore, ns: &str) {
    let bucket = fresh_bucket(store, ns).await;
    store.put(&bucket, "d/one", Bytes::from_static(b"1")).await.unwrap();
    store.put(&bucket, "d/two", Bytes::from_static(b"2")).await.unwrap();
    store.delete(&bucket, "d/one").await.unwrap();
    assert!(matches!(store.get(&bucket, "d/one").await, Err(PortError::NoSuchKey { .. })));
    assert_eq!(store.head(&bucket, "d/one").await.unwrap(), None);
    assert_eq!(keys_of(store, &bucket, "").await, vec!["d/two".to_string()]);
    store.delete(&bucket, "d/one").await.expect("deleting again succeeds");
    store.delete(&bucket, "never/was").await.expect("deleting a missing key succeeds");
    store.delete(&bucket, "d/two").await.unwrap();
    assert!(keys_of(store, &bucket, "").await.is_empty());
    // The key can be written again after deletion.
    store.put(&bucket, "d/one", Bytes::from_static(b"again")).await.unwrap();
    assert_eq!(store.get(&bucket, "d/one").await.unwrap(), Bytes::from_static(b"again"));
}

/// `count` and `list_all` agree with what was stored, per prefix.
pub async fn count_and_list_all_see_every_object(store: &dyn ObjectStore, ns: &str) {
    let bucket = fresh_bucket(store, ns).await;
    for i in 0..25 {
        let key = if i % 5 == 0 { format!("five/{i}") } else { format!("rest/{i}") };
        store.put(&bucket, &key, Bytes::from(vec![0u8; i])).await.unwrap();
    }
    assert_eq!(store.count(&bucket, "").await.unwrap(), 25);
    assert_eq!(store.count(&bucket, "five/").await.unwrap(), 5);
    assert_eq!(store.count(&bucket, "rest/").await.unwrap(), 20);
    assert_eq!(store.count(&bucket, "none/").await.unwrap(), 0);
    let all = store.list_all(&bucket, "five/").await.unwrap();
    let total: u64 = all.iter().map(|m| m.size).sum();
    assert_eq!(total, 5 + 10 + 15 + 20);
}

/// `put_if_absent` creates a missing object (true) and leaves an existing
/// one untouched (false).
pub async fn put_if_absent_creates_once(store: &dyn ObjectStore, ns: &str) {
    let bucket = fresh_bucket(store, ns).await;
    assert!(store.put_if_absent(&bucket, "once", Bytes::from_static(b"first")).await.unwrap());
    assert!(!store.put_if_absent(&bucket, "once", Bytes::from_static(b"second")).await.unwrap());
    assert_eq!(store.get(&bucket, "once").await.unwrap(), Bytes::from_static(b"first"));
    store.put(&bucket, "plain", Bytes::from_static(b"p")).await.unwrap();
    assert!(!store.put_if_absent(&bucket, "plain", Bytes::from_static(b"q")).await.unwrap());
    assert_eq!(store.get(&bucket, "plain").await.unwrap(), Bytes::from_static(b"p"));
    assert_eq!(keys_of(store, &bucket, "").await, vec!["once".to_string(), "plain".to_string()]);
}

/// Of many concurrent `put_if_absent` calls on one key exactly one wins and
/// the stored body is the winner's.
pub async fn put_if_absent_has_one_winner_under_concurrency(store: &dyn ObjectStore, ns: &str) {
    let bucket = fresh_bucket(store, ns).await;
    let attempts = (0..16).map(|i| {
        let bucket = bucket.clone();
        async move {
            let body = Bytes::from(format!("writer {i}"));
            (i, store.put_if_absent(&bucket, "race/key", body).await)
        }
    });
    let results = join_all(attempts).await;
    let winners: Vec<usize> = results
        .iter()
        .filter_map(|(i, r)| match r {
            Ok(true) => Some(*i),
            Ok(false) => None,
            Err(e) => panic!("put_if_absent failed: {e}"),
        })
        .collect();
    assert_eq!(winners.len(), 1, "exactly one writer must win, winners: {winners:?}");
    assert_eq!(
        store.get(&bucket, "race/key").await.unwrap(),
        Bytes::from(format!("writer {}", winners[0]))
    );
}

/// Many concurrent puts of distinct keys are all stored intact.
pub async fn concurrent_puts_are_all_stored(store: &dyn ObjectStore, ns: &str) {
    let bucket = fresh_bucket(store, ns).await;
    let puts = (0..40).map(|i| {
        let bucket = bucket.clone();
        async move {
            let key = format!("c/{i:03}");
            store.put(&bucket, &key, Bytes::from(vec![i as u8; 1000 + i])).await.map(|_| key)
        }
    });
    let mut keys: Vec<String> = join_all(puts).await.into_iter().map(|r| r.unwrap()).collect();
    keys.sort();
    assert_eq!(keys_of(store, &bucket, "c/").await, keys);
    for i in [0usize, 17, 39] {
        let got = store.get(&bucket, &format!("c/{i:03}")).await.unwrap();
        assert_eq!(got, Bytes::from(vec![i as u8; 1000 + i]));
    }
}

/// A file written to the system's temporary folder, removed on drop.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(ns: &str, body: &[u8]) -> Self {
        let path = std::env::temp_dir().join(format!("{ns}-{:016x}.upload", super::unique_number()));
        std::fs::write(&path, body).unwrap_or_else(|e| panic!("cannot write a temporary file: {e}"));
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `put_file` stores a file's bytes (a 3 MiB one, an empty one) and
/// replaces an existing object; the file itself is left in place. A bad
/// key or a missing bucket is refused as by `put`.
pub async fn put_file_stores_the_file(store: &dyn ObjectStore, ns: &str) {
    let bucket = fresh_bucket(store, ns).await;
    let big: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let big_file = TempFile::new(ns, &big);
    store
        .put_file(&bucket, "videos/big.mp4", &big_file.0)
        .await
        .unwrap_or_else(|e| panic!("put_file failed: {e}"));
    let got = store.get(&bucket, "videos/big.mp4").await.unwrap();
    assert_eq!(got.len(), big.len(), "length of the stored file");
    assert!(got == big, "body of the stored file differs");
    assert_eq!(std::fs::read(&big_file.0).unwrap().len(), big.len(), "put_file must leave the file");

    let empty = TempFile::new(ns, b"");
    store.put_file(&bucket, "empty", &empty.0).await.unwrap();
    assert_eq!(store.get(&bucket, "empty").await.unwrap(), Bytes::new());

    // Overwrite: a file over a put object, then a put over the file's.
    store.put(&bucket, "k", Bytes::from_static(b"first, longer body")).await.unwrap();
    let second = TempFile::new(ns, b"second");
    store.put_file(&bucket, "k", &second.0).await.unwrap();
    assert_eq!(store.get(&bucket, "k").await.unwrap(), Bytes::from_static(b"second"));
    assert_eq!(store.head(&bucket, "k").await.unwrap().expect("object exists").size, 6);
    store.put(&bucket, "k", Bytes::from_static(b"third")).await.unwrap();
    assert_eq!(store.get(&bucket, "k").await.unwrap(), Bytes::from_static(b"third"));
    assert_eq!(keys_of(store, &bucket, "").await, vec!["empty", "k", "videos/big.mp4"]);

    assert!(matches!(
        store.put_file(&bucket, "../escape", &second.0).await,
        Err(PortError::InvalidKey { .. })
    ));
    match store.put_file(&format!("{ns}-missing"), "k", &second.0).await {
        Err(PortError::NoSuchBucket(_)) => {}
        other => panic!("put_file into a missing bucket: expected NoSuchBucket, got {other:?}"),
    }
}

/// `remove` answers true for an object that was there and false for a
/// missing one. Of 8 concurrent removes of one key at least one answers
/// true (exactly one on adapters that can tell, which the contract does
/// not require), and the object is gone.
pub async fn remove_says_whether_it_was_there(store: &dyn ObjectStore, ns: &str) {
    let bucket = fresh_bucket(store, ns).await;
    store.put(&bucket, "r/one", Bytes::from_static(b"1")).await.unwrap();
    store.put(&bucket, "r/two", Bytes::from_static(b"2")).await.unwrap();
    assert!(store.remove(&bucket, "r/one").await.unwrap(), "removing an existing object");
    assert!(!store.remove(&bucket, "r/one").await.unwrap(), "removing it again");
    assert!(!store.remove(&bucket, "never/was").await.unwrap(), "removing a missing object");
    assert_eq!(store.head(&bucket, "r/one").await.unwrap(), None);
    assert_eq!(keys_of(store, &bucket, "").await, vec!["r/two".to_string()]);
    assert!(matches!(store.remove(&bucket, "../x").await, Err(PortError::InvalidKey { .. })));

    store.put(&bucket, "race/key", Bytes::from_static(b"x")).await.unwrap();
    let removes = (0..8).map(|_| store.remove(&bucket, "race/key"));
    let answers: Vec<bool> = join_all(removes)
        .await
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("concurrent remove failed: {e}")))
        .collect();
    assert!(answers.iter().any(|&a| a), "no concurrent remove saw the object: {answers:?}");
    assert_eq!(store.head(&bucket, "race/key").await.unwrap(), None, "object still there");
    assert!(matches!(store.get(&bucket, "race/key").await, Err(PortError::NoSuchKey { .. })));
}

/// Listing a prefix while another task deletes the objects under it never
/// fails: every list call succeeds, and once the deletes are done the
/// prefix lists nothing.
pub async fn list_tolerates_concurrent_deletes(store: &dyn ObjectStore, ns: &str) {
    let bucket = fresh_bucket(store, ns).await;
    let keys: Vec<String> = (0..200).map(|i| format!("p/{:02}/{i:03}.jpg", i % 20)).collect();
    let puts = keys.iter().map(|key| store.put(&bucket, key, Bytes::from_static(b"frame")));
    for r in join_all(puts).await {
        r.unwrap_or_else(|e| panic!("put failed: {e}"));
    }
    store.put(&bucket, "q/outside", Bytes::from_static(b"kept")).await.unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let deleter = async {
        for key in keys.iter().rev() {
            store.delete(&bucket, key).await.unwrap_or_else(|e| panic!("delete({key}) failed: {e}"));
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
    };
    let lister = async {
        let mut calls = 0u32;
        // At least a few rounds, and until the deletes are over.
        while calls < 3 || !done.load(std::sync::atomic::Ordering::SeqCst) {
            for prefix in ["p/", "p/1", ""] {
                let listed = store
                    .list_all(&bucket, prefix)
                    .await
                    .unwrap_or_else(|e| panic!("listing {prefix:?} during deletes failed: {e}"));
                assert!(listed.len() <= 201, "more objects listed than stored");
                store
                    .list(&bucket, prefix, None, 7)
                    .await
                    .unwrap_or_else(|e| panic!("a page of {prefix:?} during deletes failed: {e}"));
            }
            calls += 1;
        }
    };
    futures::join!(deleter, lister);
    assert!(keys_of(store, &bucket, "p/").await.is_empty(), "deleted objects still listed");
    assert_eq!(keys_of(store, &bucket, "").await, vec!["q/outside".to_string()]);
}
