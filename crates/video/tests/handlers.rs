//! The handlers and the local trigger with the embedded store and a test
//! double of the face model (the real model: `real_model.rs`).

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use common::{create_buckets, enroll_fake, fs_store, text, wait_result, FakeRecognizer, SpyStore};
use facefleet_ports::{Names, ObjectStore};
use facefleet_video::event::object_created;
use facefleet_video::{
    spawn_trigger, Manifest, Outcome, RecognizeHandler, SplitConfig, SplitHandler, TriggerConfig,
};

fn splitter(store: Arc<dyn ObjectStore>, names: &Names) -> SplitHandler {
    SplitHandler::new(store, names.clone(), common::ffmpeg(), SplitConfig::default())
}

async fn upload(store: &dyn ObjectStore, names: &Names, key: &str, body: impl Into<Bytes>) {
    store.put(&names.video_input, key, body.into()).await.unwrap();
}

#[tokio::test]
async fn each_course_video_gives_ten_frames_a_manifest_and_a_result() {
    let (_dir, store) = fs_store();
    let names = Names::new("t1");
    create_buckets(&*store, &names).await;
    let split = splitter(store.clone(), &names);
    let recognizer = Arc::new(FakeRecognizer::new());
    let recognize = RecognizeHandler::new(store.clone(), names.clone(), recognizer);
    enroll_fake(store.clone(), &names, "Someone").await;
    for (stem, path, _) in common::course_videos() {
        let key = format!("{stem}.mp4");
        upload(&*store, &names, &key, std::fs::read(&path).unwrap()).await;
        let outcomes = split.handle(&object_created(&names.video_input, &key, 0)).await.unwrap();
        assert_eq!(outcomes, vec![Outcome::Split { stem: stem.clone(), frames: 10 }]);
        let listed: Vec<String> =
            store.list_all(&names.video_stage1, &format!("{stem}/")).await.unwrap().into_iter().map(|m| m.key).collect();
        let mut expected: Vec<String> = (0..10).map(|i| format!("{stem}/output-{i:02}.jpg")).collect();
        expected.insert(0, format!("{stem}/manifest.json"));
        expected.sort();
        assert_eq!(listed, expected);
        let manifest: Manifest =
            serde_json::from_slice(&store.get(&names.video_stage1, &format!("{stem}/manifest.json")).await.unwrap())
                .unwrap();
        assert_eq!(manifest.frames, 10);
        assert_eq!(manifest.video_key, key);

        let mut completed = Vec::new();
        for i in 0..10 {
            let frame = format!("{stem}/output-{i:02}.jpg");
            for o in recognize.handle(&object_created(&names.video_stage1, &frame, 0)).await.unwrap() {
                if let Outcome::Recognized { video_result: Some(r), .. } = o {
                    completed.push((i, r));
                }
            }
            assert_eq!(text(&*store, &names.video_output, &format!("{stem}/output-{i:02}.txt")).await.unwrap(), "Someone");
        }
        assert_eq!(completed, vec![(9, "Someone".to_string())], "{stem}: completed by the last frame only");
        assert_eq!(text(&*store, &names.video_output, &format!("{stem}.txt")).await.unwrap(), "Someone");
    }
}

#[tokio::test]
async fn the_video_result_is_written_exactly_once_when_frames_finish_together() {
    let (_dir, store) = fs_store();
    let names = Names::new("t2");
    create_buckets(&*store, &names).await;
    let split = splitter(store.clone(), &names);
    upload(&*store, &names, "test_7.mp4", std::fs::read(common::videos_dir().join("test_7.mp4")).unwrap()).await;
    split.split_object(&names.video_input, "test_7.mp4").await.unwrap();
    let recognize = Arc::new(RecognizeHandler::new(store.clone(), names.clone(), Arc::new(FakeRecognizer::new())));
    // All ten frames at once, twice (S3 may deliver an event twice).
    let mut tasks = Vec::new();
    for round in 0..2 {
        for i in 0..10 {
            let r = recognize.clone();
            let names = names.clone();
            tasks.push(tokio::spawn(async move {
                let key = format!("test_7/output-{i:02}.jpg");
                let _ = round;
                r.recognize_object(&names.video_stage1, &key).await.unwrap()
            }));
        }
    }
    let mut writers = 0;
    for t in tasks {
        if let Outcome::Recognized { video_result: Some(r), .. } = t.await.unwrap() {
            assert_eq!(r, "Unknown");
            writers += 1;
        }
    }
    assert_eq!(writers, 1, "exactly one invocation writes test_7.txt");
    assert_eq!(text(&*store, &names.video_output, "test_7.txt").await.unwrap(), "Unknown");
}

#[tokio::test]
async fn eight_videos_at_once_through_the_local_trigger_with_five_running_together() {
    let (_dir, store) = fs_store();
    let names = Names::new("t3");
    create_buckets(&*store, &names).await;
    enroll_fake(store.clone(), &names, "Paul").await;
    let videos = common::course_videos();
    for (stem, path, _) in &videos {
        upload(&*store, &names, &format!("{stem}.mp4"), std::fs::read(path).unwrap()).await;
    }
    let trigger =
        spawn_trigger(store.clone(), names.clone(), Arc::new(FakeRecognizer::new()), TriggerConfig::default()).await.unwrap();
    for (stem, _, _) in &videos {
        let (result, error) = wait_result(&*store, &names, stem, &trigger.stats()).await;
        assert_eq!((result.as_deref(), error), (Some("Paul"), None), "{stem}");
        assert_eq!(store.count(&names.video_stage1, &format!("{stem}/output-")).await.unwrap(), 10);
        assert_eq!(store.count(&names.video_output, &format!("{stem}/output-")).await.unwrap(), 10);
    }
    let stats = trigger.stats();
    assert!(stats.split_max_concurrency() >= 5, "at most {} splits ran at once", stats.split_max_concurrency());
    assert!(stats.split_max_concurrency() <= 5, "the bound is 5, saw {}", stats.split_max_concurrency());
    assert!(stats.recognize_max_concurrency() <= 5);
    trigger.shutdown().await;
}

#[tokio::test]
async fn nobody_enrolled_gives_unknown_end_to_end() {
    let (_dir, store) = fs_store();
    let names = Names::new("t4");
    upload_after_buckets(&*store, &names, "test_4.mp4").await;
    let trigger =
        spawn_trigger(store.clone(), names.clone(), Arc::new(FakeRecognizer::new()), TriggerConfig::default()).await.unwrap();
    let (result, error) = wait_result(&*store, &names, "test_4", &trigger.stats()).await;
    assert_eq!((result.as_deref(), error), (Some("Unknown"), None));
    assert_eq!(text(&*store, &names.video_output, "test_4/output-00.txt").await.unwrap(), "Unknown");
    trigger.shutdown().await;
}

async fn upload_after_buckets(store: &dyn ObjectStore, names: &Names, video: &str) {
    create_buckets(store, names).await;
    upload(store, names, video, std::fs::read(common::videos_dir().join(video)).unwrap()).await;
}

#[tokio::test]
async fn a_restarted_trigger_neither_reprocesses_nor_loses_videos() {
    let (dir, store) = fs_store();
    let names = Names::new("t5");
    upload_after_buckets(&*store, &names, "test_7.mp4").await;
    let fake = Arc::new(FakeRecognizer::new());
    let trigger = spawn_trigger(store.clone(), names.clone(), fake.clone(), TriggerConfig::default()).await.unwrap();
    wait_result(&*store, &names, "test_7", &trigger.stats()).await;
    trigger.shutdown().await;
    let calls = fake.calls.load(Ordering::SeqCst);
    assert_eq!(calls, 10);

    // A new trigger over the same data: test_7 is remembered; a video
    // uploaded while it was down is handled.
    let store2: Arc<dyn ObjectStore> = Arc::new(facefleet_embedded::FsObjectStore::new(dir.path()).unwrap());
    upload(&*store2, &names, "test_4.mp4", std::fs::read(common::videos_dir().join("test_4.mp4")).unwrap()).await;
    let trigger = spawn_trigger(store2.clone(), names.clone(), fake.clone(), TriggerConfig::default()).await.unwrap();
    wait_result(&*store2, &names, "test_4", &trigger.stats()).await;
    let stats = trigger.stats();
    trigger.shutdown().await;
    assert_eq!(stats.split_invocations(), 1, "only test_4 was split again");
    assert_eq!(fake.calls.load(Ordering::SeqCst), 20, "only test_4's frames were recognised");

    // Killed in the middle of work: nothing is lost after a restart.
    upload(&*store2, &names, "test_0.mp4", std::fs::read(common::videos_dir().join("test_0.mp4")).unwrap()).await;
    let trigger = spawn_trigger(store2.clone(), names.clone(), fake.clone(), TriggerConfig::default()).await.unwrap();
    while store2.count(&names.video_stage1, "test_0/").await.unwrap() == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    trigger.abort();
    let trigger = spawn_trigger(store2.clone(), names.clone(), fake, TriggerConfig::default()).await.unwrap();
    let (result, _) = wait_result(&*store2, &names, "test_0", &trigger.stats()).await;
    assert_eq!(result.as_deref(), Some("Unknown"));
    trigger.shutdown().await;
}

#[tokio::test]
async fn a_re_uploaded_video_gets_a_fresh_result() {
    let (_dir, store) = fs_store();
    let names = Names::new("t6");
    upload_after_buckets(&*store, &names, "test_7.mp4").await;
    // The enrollment below must reach the frames of the re-upload: check
    // the gallery before every frame.
    let config = TriggerConfig { gallery_refresh: std::time::Duration::ZERO, ..TriggerConfig::default() };
    let trigger = spawn_trigger(store.clone(), names.clone(), Arc::new(FakeRecognizer::new()), config).await.unwrap();
    assert_eq!(wait_result(&*store, &names, "test_7", &trigger.stats()).await.0.as_deref(), Some("Unknown"));
    // Same name, other content (other size), someone enrolled meanwhile.
    enroll_fake(store.clone(), &names, "Ann").await;
    upload(&*store, &names, "test_7.mp4", std::fs::read(common::videos_dir().join("test_4.mp4")).unwrap()).await;
    let stats = trigger.stats();
    loop {
        let now = text(&*store, &names.video_output, "test_7.txt").await;
        if now.as_deref() == Some("Ann") {
            break;
        }
        assert!(stats.idle_scans() < 10, "the trigger went idle with test_7.txt = {now:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    trigger.shutdown().await;
}

#[tokio::test]
async fn sizes_over_the_limit_are_refused_before_download() {
    let (_dir, fs) = fs_store();
    let names = Names::new("t7");
    create_buckets(&*fs, &names).await;
    let spy = Arc::new(SpyStore::new(fs.clone()));
    // A 2 GB upload, as the object store reports it.
    upload(&*fs, &names, "huge.mp4", &b"not really 2 GB"[..]).await;
    spy.fake_sizes.lock().unwrap().insert((names.video_input.clone(), "huge.mp4".into()), 2 * 1024 * 1024 * 1024);
    let split = SplitHandler::new(spy.clone(), names.clone(), common::ffmpeg(), SplitConfig::default());
    let out = split.split_object(&names.video_input, "huge.mp4").await.unwrap();
    let Outcome::Failed { stem, reason } = out else { panic!("{out:?}") };
    assert_eq!(stem, "huge");
    assert!(reason.contains("too large") && reason.contains("2147483648"), "{reason}");
    assert_eq!(spy.gets.load(Ordering::SeqCst), 0, "the video was downloaded");
    assert_eq!(text(&*fs, &names.video_output, "huge.error").await.unwrap(), reason);
}

#[tokio::test]
async fn a_split_whose_ffmpeg_is_killed_is_retried_not_failed() {
    let (_dir, store) = fs_store();
    let names = Names::new("t8");
    upload_after_buckets(&*store, &names, "test_0.mp4").await;
    // The first ffmpeg run dies by SIGKILL (as by the OOM killer); the
    // later ones are the real ffmpeg.
    let bin = tempfile::tempdir().unwrap();
    let real = common::ffmpeg().path().display().to_string();
    let body = format!("if [ ! -e \"$0.killed\" ]; then : > \"$0.killed\"; kill -KILL $$; fi\nexec '{real}' \"$@\"");
    let script = common::fake_ffmpeg(bin.path(), "ffmpeg", &body);
    let config = TriggerConfig {
        ffmpeg: Some(script.clone()),
        retry_backoff: std::time::Duration::from_millis(10),
        ..TriggerConfig::default()
    };
    let trigger = spawn_trigger(store.clone(), names.clone(), Arc::new(FakeRecognizer::new()), config).await.unwrap();
    let (result, error) = wait_result(&*store, &names, "test_0", &trigger.stats()).await;
    trigger.shutdown().await;
    assert!(bin.path().join("ffmpeg.killed").exists(), "the fake ffmpeg never ran");
    assert_eq!(error, None);
    assert_eq!(result.as_deref(), Some("Unknown"));
}
