//! End to end with the real face model: the 8 course videos through the
//! local trigger, with a gallery enrolled from stills and with nobody
//! enrolled, and a video without any face.
//!
//! Enrollment stills: the course's 8 clips show 8 different people and no
//! other photo of them is available, so each person is enrolled from the
//! LAST frame of their own clip, a frame the splitter never samples (even
//! sampling takes frames `ceil(i*N/10)`, i < 10, never frame N-1 for N > 10).

// The video crate's test helpers (buckets, ffmpeg, course videos).
#[path = "../../video/tests/common/mod.rs"]
mod common;

use std::sync::Arc;

use common::{create_buckets, fs_store, text, wait_result};
use facefleet_app::ModelEngine;
use facefleet_gallery::store::{Gallery, NewFace};
use facefleet_gallery::{FaceEngine, DEFAULT_COLLECTION};
use facefleet_model::ModelConfig;
use facefleet_ports::{Names, ObjectStore};
use facefleet_video::{spawn_trigger, TriggerConfig};

fn model() -> Arc<ModelEngine> {
    Arc::new(ModelEngine::load(&ModelConfig::default()).expect("the face model loads"))
}

/// The last frame of `video` as JPEG bytes.
async fn last_frame(video: &std::path::Path) -> Vec<u8> {
    let ff = common::ffmpeg();
    let n = ff.count_frames(video).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("still.jpg");
    let mut args: Vec<std::ffi::OsString> = ["-nostdin", "-loglevel", "error", "-i"].iter().map(Into::into).collect();
    args.push(video.into());
    for a in ["-vf", &format!("select=eq(n\\,{})", n - 1), "-fps_mode", "passthrough", "-frames:v", "1", "-q:v", "2"] {
        args.push(a.into());
    }
    args.push(out.clone().into());
    ff.run(&args).await.unwrap();
    std::fs::read(&out).unwrap()
}

async fn enroll(store: Arc<dyn ObjectStore>, names: &Names, model: &ModelEngine, name: &str, jpeg: &[u8]) {
    let faces = model.analyze(jpeg, 1, true).unwrap();
    assert!(!faces.is_empty(), "no face in the still of {name}");
    let face = NewFace { embedding: faces[0].embedding.clone(), model: model.model_id().to_string(), thumbnail: None };
    Gallery::new(store, &names.gallery_bucket).add_faces(DEFAULT_COLLECTION, name, vec![face]).await.unwrap();
}

#[tokio::test]
async fn each_video_names_its_person_and_nobody_enrolled_gives_unknown() {
    let model = model();
    let videos = common::course_videos();
    for enrolled in [true, false] {
        let (_dir, store) = fs_store();
        let names = Names::new(if enrolled { "real" } else { "nobody" });
        create_buckets(&*store, &names).await;
        if enrolled {
            for (_, path, person) in &videos {
                enroll(store.clone(), &names, &model, person, &last_frame(path).await).await;
            }
        }
        for (stem, path, _) in &videos {
            store.put(&names.video_input, &format!("{stem}.mp4"), std::fs::read(path).unwrap().into()).await.unwrap();
        }
        let trigger = spawn_trigger(store.clone(), names.clone(), model.clone(), TriggerConfig::default()).await.unwrap();
        let mut wrong = Vec::new();
        for (stem, _, person) in &videos {
            let (result, error) = wait_result(&*store, &names, stem, &trigger.stats()).await;
            assert_eq!(error, None, "{stem}");
            let expected = if enrolled { person.as_str() } else { "Unknown" };
            if result.as_deref() != Some(expected) {
                let per_frame: Vec<Option<String>> = futures_frames(&*store, &names, stem).await;
                wrong.push(format!("{stem}: expected {expected}, got {result:?}; frames {per_frame:?}"));
            }
        }
        trigger.shutdown().await;
        assert!(wrong.is_empty(), "enrolled={enrolled}:\n{}", wrong.join("\n"));
    }
}

async fn futures_frames(store: &dyn ObjectStore, names: &Names, stem: &str) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for i in 0..10 {
        out.push(text(store, &names.video_output, &format!("{stem}/output-{i:02}.txt")).await);
    }
    out
}

#[tokio::test]
async fn a_video_without_faces_is_unknown_with_the_real_model() {
    let model = model();
    let (_dir, store) = fs_store();
    let names = Names::new("realnoface");
    create_buckets(&*store, &names).await;
    let (_, path, person) = common::course_videos().remove(0);
    enroll(store.clone(), &names, &model, &person, &last_frame(&path).await).await;
    let tmp = tempfile::tempdir().unwrap();
    let pattern = tmp.path().join("pattern.mp4");
    common::make_faceless_video(&pattern).await;
    store.put(&names.video_input, "pattern.mp4", std::fs::read(&pattern).unwrap().into()).await.unwrap();
    let trigger =
        spawn_trigger(store.clone(), names.clone(), model, TriggerConfig::default())
            .await
            .unwrap();
    let (result, error) = wait_result(&*store, &names, "pattern", &trigger.stats()).await;
    trigger.shutdown().await;
    assert_eq!((result.as_deref(), error), (Some("Unknown"), None));
    for i in 0..10 {
        assert_eq!(text(&*store, &names.video_output, &format!("pattern/output-{i:02}.txt")).await.as_deref(), Some(""));
    }
}
