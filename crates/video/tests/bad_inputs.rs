//! Bad input, each ending in a recorded failure or a clean result, never a
//! crash or a retry storm, with a good video processed alongside.

mod common;

use std::sync::Arc;

use common::{create_buckets, fs_store, text, wait_result, FakeRecognizer};
use facefleet_ports::{Names, ObjectStore};
use facefleet_video::event::object_created;
use facefleet_video::{spawn_trigger, Outcome, SplitConfig, SplitHandler, TriggerConfig};

#[tokio::test]
async fn bad_videos_are_recorded_and_good_ones_unaffected() {
    let (dir, store) = fs_store();
    let names = Names::new("bad");
    create_buckets(&*store, &names).await;
    let videos = common::videos_dir();
    let good = std::fs::read(videos.join("test_7.mp4")).unwrap();
    let full = std::fs::read(videos.join("test_0.mp4")).unwrap();
    let put = |key: &'static str, body: Vec<u8>| {
        let store = store.clone();
        let bucket = names.video_input.clone();
        async move { store.put(&bucket, key, body.into()).await.unwrap() }
    };
    put("good.mp4", good.clone()).await;
    put("notes.mp4", "just some text, not a video\n".repeat(50).into_bytes()).await;
    put("empty.mp4", Vec::new()).await;
    put("header-cut.mp4", full[..600].to_vec()).await;
    put("third.mp4", full[..full.len() / 3].to_vec()).await;
    put("my video 'x' \"y\" vidéo 日本.mp4", good.clone()).await;
    put("no extension", good.clone()).await;
    // A 2 GB sparse file placed in the bucket folder (the embedded store's
    // layout is `<data-dir>/buckets/<bucket>/<key>`).
    let huge = dir.path().join("buckets").join(&names.video_input).join("huge.mp4");
    std::fs::File::create(&huge).unwrap().set_len(2 * 1024 * 1024 * 1024).unwrap();
    assert_eq!(store.head(&names.video_input, "huge.mp4").await.unwrap().unwrap().size, 2 * 1024 * 1024 * 1024);

    let fake = Arc::new(FakeRecognizer::new());
    let trigger = spawn_trigger(store.clone(), names.clone(), fake.clone(), TriggerConfig::default()).await.unwrap();
    let stats = trigger.stats();
    let expect_error = |stem: &'static str, words: &'static [&'static str]| {
        let store = store.clone();
        let names = names.clone();
        let stats = stats.clone();
        async move {
            let (result, error) = wait_result(&*store, &names, stem, &stats).await;
            let error = error.unwrap_or_else(|| panic!("{stem}: expected an error, got result {result:?}"));
            assert_eq!(result, None, "{stem}");
            for w in words {
                assert!(error.contains(w), "{stem}: {error:?} should mention {w:?}");
            }
            assert_eq!(store.count(&names.video_stage1, &format!("{stem}/")).await.unwrap(), 0, "{stem}: no frames");
        }
    };
    expect_error("notes", &["not a usable video", "Invalid data"]).await;
    expect_error("empty", &["empty file"]).await;
    expect_error("header-cut", &["not a usable video"]).await;
    expect_error("huge", &["too large", "2147483648"]).await;

    // A video cut after a third still has decodable frames: a clean result.
    let (result, error) = wait_result(&*store, &names, "third", &trigger.stats()).await;
    assert_eq!((result.as_deref(), error), (Some("Unknown"), None));

    for stem in ["good", "my video 'x' \"y\" vidéo 日本", "no extension"] {
        let (result, error) = wait_result(&*store, &names, stem, &trigger.stats()).await;
        assert_eq!((result.as_deref(), error), (Some("Unknown"), None), "{stem}");
        assert_eq!(store.count(&names.video_stage1, &format!("{stem}/output-")).await.unwrap(), 10, "{stem}");
    }
    let stats = trigger.stats();
    trigger.shutdown().await;
    // One invocation per video: failures are recorded, not retried.
    assert_eq!(stats.split_invocations(), 8);
}

#[tokio::test]
async fn keys_escaping_with_dot_dot_are_refused_and_recorded_safely() {
    // The embedded store cannot even hold such a key; S3 can, and its event
    // would carry it URL-encoded.
    let (_dir, store) = fs_store();
    let names = Names::new("dots");
    create_buckets(&*store, &names).await;
    let split = SplitHandler::new(store.clone(), names.clone(), common::ffmpeg(), SplitConfig::default());
    for (key, safe) in [("../evil.mp4", "__/evil"), ("a/../../etc/passwd", "a/__/__/etc/passwd"), ("/abs.mp4", "_/abs")] {
        let outcomes = split.handle(&object_created(&names.video_input, key, 10)).await.unwrap();
        let [Outcome::Failed { stem, reason }] = outcomes.as_slice() else { panic!("{key}: {outcomes:?}") };
        assert_eq!(stem, safe);
        assert!(reason.contains("unsafe video key"), "{reason}");
        assert_eq!(text(&*store, &names.video_output, &format!("{safe}.error")).await.as_deref(), Some(reason.as_str()));
    }
    // Nothing was written outside the buckets.
    assert_eq!(store.count(&names.video_stage1, "").await.unwrap(), 0);
}

#[tokio::test]
async fn an_event_for_another_bucket_or_a_deleted_video_is_ignored() {
    let (_dir, store) = fs_store();
    let names = Names::new("ign");
    create_buckets(&*store, &names).await;
    let split = SplitHandler::new(store.clone(), names.clone(), common::ffmpeg(), SplitConfig::default());
    let other = split.handle(&object_created("someone-else", "x.mp4", 1)).await.unwrap();
    assert!(matches!(other.as_slice(), [Outcome::Ignored { .. }]), "{other:?}");
    let gone = split.handle(&object_created(&names.video_input, "gone.mp4", 1)).await.unwrap();
    assert!(matches!(gone.as_slice(), [Outcome::Ignored { .. }]), "{gone:?}");
    assert_eq!(store.count(&names.video_output, "").await.unwrap(), 0);
}

#[tokio::test]
async fn a_faceless_video_gives_unknown() {
    let (_dir, store) = fs_store();
    let names = Names::new("noface");
    create_buckets(&*store, &names).await;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("pattern.mp4");
    common::make_faceless_video(&path).await;
    store.put(&names.video_input, "pattern.mp4", std::fs::read(&path).unwrap().into()).await.unwrap();
    common::enroll_fake(store.clone(), &names, "Paul").await;
    let trigger =
        spawn_trigger(store.clone(), names.clone(), Arc::new(FakeRecognizer::faceless()), TriggerConfig::default())
            .await
            .unwrap();
    let (result, error) = wait_result(&*store, &names, "pattern", &trigger.stats()).await;
    assert_eq!((result.as_deref(), error), (Some("Unknown"), None));
    assert_eq!(text(&*store, &names.video_output, "pattern/output-00.txt").await.as_deref(), Some(""));
    trigger.shutdown().await;
}
