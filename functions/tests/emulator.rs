//! Against the AWS emulator (moto, started by `scripts/test`): packaging the
//! real handler binaries, deploying twice (the second run changes nothing),
//! and the handlers over S3 driven by the standard sample S3 event (the
//! emulator records notifications but cannot run function code).

use std::path::PathBuf;
use std::sync::Arc;

use aws_lambda_events::event::s3::S3Event;
use facefleet_functions::deploy::{deploy, Change, DeployClients, DeploySpec};
use facefleet_functions::package::package;
use facefleet_ports::{Names, ObjectStore};
use facefleet_gallery::{AnalyzedFace, EngineError, FaceBox, FaceEngine, FaceQuality, Gallery, NewFace, DEFAULT_COLLECTION};
use facefleet_video::{Outcome, RecognizeHandler, SplitConfig, SplitHandler};

fn endpoint() -> String {
    std::env::var("FACEFLEET_TEST_AWS_ENDPOINT").unwrap_or_else(|_| {
        panic!("FACEFLEET_TEST_AWS_ENDPOINT is not set: run the tests through scripts/test, which starts the AWS emulator")
    })
}

fn ffmpeg_path() -> PathBuf {
    facefleet_video::Ffmpeg::locate(None)
        .unwrap_or_else(|e| panic!("{e}: run the tests through scripts/test, which sets FACEFLEET_FFMPEG"))
        .path()
        .to_path_buf()
}

fn video(name: &str) -> Vec<u8> {
    let shared = std::env::var_os("FACEFLEET_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let path = shared.join("datasets/cse546/videos").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("the course videos are missing ({}: {e})", path.display()))
}

fn unique_prefix(tag: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("ff{tag}{}{nanos}", std::process::id())
}

async fn clients() -> DeployClients {
    DeployClients::load(&facefleet_aws::AwsOptions::with_endpoint(endpoint())).await
}

#[tokio::test]
async fn deploy_creates_functions_and_notifications_and_a_second_run_changes_nothing() {
    let c = clients().await;
    let names = Names::new(&unique_prefix("d"));
    let dir = tempfile::tempdir().unwrap();
    let split_zip = package(
        PathBuf::from(env!("CARGO_BIN_EXE_video-splitting")).as_path(),
        Some(&ffmpeg_path()),
        &dir.path().join("video-splitting.zip"),
    )
    .unwrap();
    let recognize_zip = package(
        PathBuf::from(env!("CARGO_BIN_EXE_face-recognition")).as_path(),
        None,
        &dir.path().join("face-recognition.zip"),
    )
    .unwrap();
    let mut spec = DeploySpec::new(names.clone(), &split_zip.path, &recognize_zip.path);
    spec.model.recognizer = facefleet_app::settings::RecognizerKind::DlibResnet;
    spec.model.threshold = Some(0.9);

    let first = deploy(&c, &spec).await.unwrap();
    println!("first run:\n{first}");
    for what in [
        format!("function {}", spec.split_function()),
        format!("function {}", spec.recognize_function()),
        format!("role {}", spec.role_name()),
        format!("bucket {}", names.video_input),
    ] {
        assert!(first.items.contains(&(what.clone(), Change::Created)), "{what} not created:\n{first}");
    }
    let created_notifications = first.items.iter().filter(|(w, c)| w.starts_with("notification") && *c == Change::Created).count();
    assert_eq!(created_notifications, 2, "{first}");

    // What the account now holds.
    let split_conf = c.lambda.get_function().function_name(spec.split_function()).send().await.unwrap();
    let split_conf = split_conf.configuration().unwrap();
    assert_eq!(split_conf.code_sha256(), Some(split_zip.sha256.as_str()));
    assert_eq!(split_conf.handler(), Some("bootstrap"));
    let env = split_conf.environment().unwrap().variables().unwrap();
    assert_eq!(env.get("FACEFLEET_PREFIX"), Some(&names.prefix));
    // face-recognition runs with the deploying command's model settings.
    let recognize_conf = c.lambda.get_function().function_name(spec.recognize_function()).send().await.unwrap();
    let recognize_env = recognize_conf.configuration().unwrap().environment().unwrap().variables().unwrap();
    assert_eq!(recognize_env.get("FACEFLEET_RECOGNIZER").map(String::as_str), Some("dlib-resnet"));
    assert_eq!(recognize_env.get("FACEFLEET_THRESHOLD").map(String::as_str), Some("0.9"));
    let split_arn = split_conf.function_arn().unwrap().to_string();
    let input_notes = c.s3.get_bucket_notification_configuration().bucket(&names.video_input).send().await.unwrap();
    let [input_note] = input_notes.lambda_function_configurations() else { panic!("{input_notes:?}") };
    assert_eq!(input_note.lambda_function_arn(), split_arn);
    assert!(input_note.events().iter().any(|e| e.as_str() == "s3:ObjectCreated:*"));
    let stage_notes = c.s3.get_bucket_notification_configuration().bucket(&names.video_stage1).send().await.unwrap();
    let [stage_note] = stage_notes.lambda_function_configurations() else { panic!("{stage_notes:?}") };
    assert!(stage_note.lambda_function_arn().ends_with(&spec.recognize_function()));
    let rules = stage_note.filter().unwrap().key().unwrap().filter_rules();
    assert_eq!(rules[0].value(), Some(".jpg"));
    let policy = c.lambda.get_policy().function_name(&split_arn).send().await.unwrap();
    assert!(policy.policy().unwrap().contains("s3.amazonaws.com"));

    let second = deploy(&c, &spec).await.unwrap();
    println!("second run:\n{second}");
    assert!(second.is_unchanged(), "the second run changed something:\n{second}");
    let again = c.lambda.get_function().function_name(spec.split_function()).send().await.unwrap();
    assert_eq!(again.configuration().unwrap().last_modified(), split_conf.last_modified());

    // A changed setting is updated, and only that.
    let mut changed = spec.clone();
    changed.timeout_secs = 120;
    let third = deploy(&c, &changed).await.unwrap();
    let updated: Vec<&String> = third.items.iter().filter(|(_, c)| *c != Change::Unchanged).map(|(w, _)| w).collect();
    assert_eq!(
        updated,
        [&format!("configuration of {}", spec.split_function()), &format!("configuration of {}", spec.recognize_function())]
    );
}

/// The sample event of the Lambda console's "s3-put" template, as AWS
/// documents it (bucket `example-bucket`, key `test/key`).
const SAMPLE_S3_PUT: &str = r#"{
  "Records": [
    {
      "eventVersion": "2.0",
      "eventSource": "aws:s3",
      "awsRegion": "us-east-1",
      "eventTime": "1970-01-01T00:00:00.000Z",
      "eventName": "ObjectCreated:Put",
      "userIdentity": {"principalId": "EXAMPLE"},
      "requestParameters": {"sourceIPAddress": "127.0.0.1"},
      "responseElements": {
        "x-amz-request-id": "EXAMPLE123456789",
        "x-amz-id-2": "EXAMPLE123/5678abcdefghijklambdaisawesome/mnopqrstuvwxyzABCDEFGH"
      },
      "s3": {
        "s3SchemaVersion": "1.0",
        "configurationId": "testConfigRule",
        "bucket": {
          "name": "example-bucket",
          "ownerIdentity": {"principalId": "EXAMPLE"},
          "arn": "arn:aws:s3:::example-bucket"
        },
        "object": {
          "key": "test%2Fkey",
          "size": 1024,
          "eTag": "0123456789abcdef0123456789abcdef",
          "sequencer": "0A1B2C3D4E5F678901"
        }
      }
    }
  ]
}"#;

fn sample_event(bucket: &str, encoded_key: &str) -> S3Event {
    let json = SAMPLE_S3_PUT.replace("example-bucket", bucket).replace("test%2Fkey", encoded_key);
    serde_json::from_str(&json).unwrap()
}

/// Every frame shows one face whose embedding is `[1.0]`, the one enrolled
/// (a test double; the real model is tested in facefleet-video's
/// `real_model` tests).
struct OneFace;

impl FaceEngine for OneFace {
    fn model_id(&self) -> &str {
        "fake"
    }
    fn threshold(&self) -> f32 {
        0.5
    }
    fn analyze(&self, frame: &[u8], _max_faces: usize, embed: bool) -> Result<Vec<AnalyzedFace>, EngineError> {
        assert!(frame.starts_with(&[0xFF, 0xD8]));
        Ok(vec![AnalyzedFace {
            bbox: FaceBox { x1: 0.0, y1: 0.0, x2: 10.0, y2: 10.0 },
            landmarks: [[0.0; 2]; 5],
            score: 1.0,
            size: 10.0,
            quality: FaceQuality { sharpness: 1.0, yaw: 0.0, pitch: 0.0 },
            embedding: if embed { vec![1.0] } else { Vec::new() },
        }])
    }
    fn thumbnail(&self, _image: &[u8], _face: &AnalyzedFace) -> Result<Vec<u8>, EngineError> {
        Ok(Vec::new())
    }
}

#[tokio::test]
async fn the_handlers_run_on_s3_from_the_sample_event() {
    let c = clients().await;
    let names = Names::new(&unique_prefix("h"));
    let store: Arc<dyn ObjectStore> = c.store.clone();
    for b in [&names.video_input, &names.video_stage1, &names.video_output, &names.gallery_bucket] {
        store.create_bucket(b).await.unwrap();
    }
    let key = "my clip é.mp4";
    store.put(&names.video_input, key, video("test_7.mp4").into()).await.unwrap();
    Gallery::new(store.clone(), &names.gallery_bucket)
        .add_faces(DEFAULT_COLLECTION, "Freeman", vec![NewFace::new(vec![1.0], "fake")])
        .await
        .unwrap();

    let ffmpeg = facefleet_video::Ffmpeg::at(ffmpeg_path());
    let split = SplitHandler::new(store.clone(), names.clone(), ffmpeg, SplitConfig::default());
    let outcomes = split.handle(&sample_event(&names.video_input, "my+clip+%C3%A9.mp4")).await.unwrap();
    assert_eq!(outcomes, vec![Outcome::Split { stem: "my clip é".into(), frames: 10 }]);

    let recognize = RecognizeHandler::new(store.clone(), names.clone(), Arc::new(OneFace));
    let mut written = Vec::new();
    for i in 0..10 {
        let frame = format!("my+clip+%C3%A9/output-{i:02}.jpg");
        for o in recognize.handle(&sample_event(&names.video_stage1, &frame)).await.unwrap() {
            if let Outcome::Recognized { video_result: Some(r), .. } = o {
                written.push(r);
            }
        }
    }
    assert_eq!(written, ["Freeman"]);
    let result = store.get(&names.video_output, "my clip é.txt").await.unwrap();
    assert_eq!(&result[..], b"Freeman");
    assert_eq!(store.count(&names.video_output, "my clip é/output-").await.unwrap(), 10);
    // The manifest event (not a frame) is ignored.
    let ignored = recognize.handle(&sample_event(&names.video_stage1, "my+clip+%C3%A9/manifest.json")).await.unwrap();
    assert!(matches!(ignored.as_slice(), [Outcome::Ignored { .. }]));
}
