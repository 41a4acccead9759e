//! A worker (and a Lambda function) gets EXACTLY its parent's settings:
//! every field of [`WorkerSettings`] and [`ModelArgs`], set to a value other
//! than its default, survives [`to_env`] and a parse of the worker's own
//! flags from those variables.
//!
//! This file holds one test: it sets process environment variables, which
//! must not race with other tests parsing flags.

use clap::Parser;
use facefleet_app::settings::to_env;
use facefleet_app::{ModelArgs, WorkerSettings};

#[derive(Parser, Debug)]
struct Worker {
    #[command(flatten)]
    settings: WorkerSettings,
}

#[derive(Parser, Debug)]
struct Lambda {
    #[command(flatten)]
    model: ModelArgs,
}

/// Every field named: adding a field without a default makes this fail to
/// deserialise, so a new setting must be added here, with a non-default
/// value.
fn non_default() -> WorkerSettings {
    #[allow(unused_mut)]
    let mut backend = serde_json::json!({
        "backend": "aws",
        "data_dir": "/srv/facefleet data",
        "prefix": "cse546-x",
    });
    #[cfg(feature = "aws")]
    {
        backend["aws"] = serde_json::json!({
            "endpoint": "http://127.0.0.1:5000",
            "region": "eu-west-3",
            "profile": "course",
            "max_attempts": 7,
            "retry_mode": "adaptive",
        });
    }
    #[cfg(not(feature = "aws"))]
    {
        backend["backend"] = "embedded".into();
    }
    serde_json::from_value(serde_json::json!({
        "backend": backend,
        "model": {"recognizer": "dlib-resnet", "threshold": 0.873, "weights_dir": "/opt/weights", "min_face": 32.5},
        "worker": {"visibility": 42.5, "worker_max_attempts": 4, "batch": 3},
    }))
    .expect("the test's settings name every field")
}

fn clear_facefleet_env() {
    for (k, _) in std::env::vars() {
        if k.starts_with("FACEFLEET_") {
            std::env::remove_var(k);
        }
    }
}

#[test]
fn settings_survive_the_trip_through_the_environment() {
    clear_facefleet_env();
    // The defaults differ from the test's values (else the trip proves
    // nothing).
    let defaults = Worker::try_parse_from(["app-tier"]).unwrap().settings;
    let parent = non_default();
    assert_ne!(defaults.backend.prefix, parent.backend.prefix);
    assert_ne!(defaults.model, parent.model);
    assert_ne!(defaults.worker, parent.worker);
    #[cfg(feature = "aws")]
    assert_ne!(defaults.backend.aws, parent.backend.aws);

    // A worker.
    let vars = to_env(&parent).unwrap();
    for (k, v) in &vars {
        std::env::set_var(k, v);
    }
    let child = Worker::try_parse_from(["app-tier"]).unwrap_or_else(|e| panic!("{e}\n{vars:?}")).settings;
    assert_eq!(child, parent, "variables: {vars:?}");
    clear_facefleet_env();

    // The face-recognition Lambda function, from what the deployment sets.
    let vars = to_env(&parent.model).unwrap();
    assert_eq!(vars.len(), 4, "{vars:?}");
    for (k, v) in &vars {
        std::env::set_var(k, v);
    }
    let lambda = Lambda::try_parse_from(["bootstrap"]).unwrap().model;
    assert_eq!(lambda, parent.model);
    assert_eq!(lambda.config().threshold, Some(0.873));
    assert_eq!(lambda.config().detect.min_face_size, 32.5);
    clear_facefleet_env();

    // `None` stays `None` (the variable is left out).
    let mut plain = parent.clone();
    plain.model.threshold = None;
    plain.model.weights_dir = None;
    plain.model.min_face = None;
    let vars = to_env(&plain.model).unwrap();
    assert_eq!(vars, [("FACEFLEET_RECOGNIZER".to_string(), "dlib-resnet".to_string())]);
}
