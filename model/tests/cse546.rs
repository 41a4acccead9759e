//! The CSE546 course contract: a gallery enrolled from `face_images_100`
//! (each distinct person from their images, as `labels_100.csv` names them)
//! recognises all 1000 images of `face_images_1000` as `labels_1000.csv`
//! says, through the local `enroll` / `recognize` flows and their
//! `<stem>:<name>` output. Needs `$FACEFLEET_SHARED_DIR/datasets/cse546`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use facefleet_model::eval::dataset_dir;
use facefleet_model::{local, FaceModel, ModelConfig, RecognizerKind};

/// `(stem, name)` rows of a labels CSV (`Image,Results` header).
fn labels(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    assert_eq!(lines.next().map(str::trim), Some("Image,Results"), "{}", path.display());
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (stem, name) = l.trim().split_once(',').expect("two columns");
            (stem.to_string(), name.to_string())
        })
        .collect()
}

fn check(kind: RecognizerKind) {
    let data = dataset_dir("cse546").expect("cse546 data set is required for this test");
    let model = FaceModel::load(&ModelConfig::with_recognizer(kind)).unwrap();
    let gallery_dir = tempfile::tempdir().unwrap();

    let mut by_person: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for (stem, name) in labels(&data.join("labels_100.csv")) {
        by_person
            .entry(name)
            .or_default()
            .push(data.join("face_images_100").join(format!("{stem}.jpg")));
    }
    assert_eq!(by_person.len(), 8, "labels_100.csv names 8 people");
    for (name, photos) in &by_person {
        let report = local::enroll(gallery_dir.path(), name, photos, &model).unwrap();
        assert!(report.skipped.is_empty(), "{name}: skipped {:?}", report.skipped);
        assert_eq!(report.enrolled.len(), photos.len());
    }

    let expected = labels(&data.join("labels_1000.csv"));
    assert_eq!(expected.len(), 1000);
    let paths: Vec<PathBuf> = expected
        .iter()
        .map(|(stem, _)| data.join("face_images_1000").join(format!("{stem}.jpg")))
        .collect();
    let results = local::recognize(gallery_dir.path(), &paths, &model).unwrap();
    let wrong: Vec<String> = results
        .iter()
        .zip(&expected)
        .filter_map(|((stem, result), (want_stem, want))| {
            let line = local::format_line(stem, result);
            (line != format!("{want_stem}:{want}")).then(|| format!("{line} (expected {want})"))
        })
        .collect();
    assert!(wrong.is_empty(), "{kind}: {} of 1000 wrong: {:?}", wrong.len(), wrong);
}

#[test]
fn mobilefacenet_recognises_all_1000() {
    check(RecognizerKind::MobileFaceNet);
}

#[test]
fn dlib_resnet_recognises_all_1000() {
    check(RecognizerKind::DlibResnet);
}

/// Several enrollments into one gallery folder at once (as several
/// `facefleet enroll --gallery` runs would do) all land.
#[test]
fn concurrent_enrollments_into_one_folder_all_land() {
    let data = dataset_dir("cse546").expect("cse546 data set is required for this test");
    let model = FaceModel::load(&ModelConfig::with_recognizer(RecognizerKind::MobileFaceNet)).unwrap();
    let gallery_dir = tempfile::tempdir().unwrap();
    // A large gallery makes each read-change-write long enough for the
    // enrollments to overlap.
    let mut big = facefleet_model::Gallery::new(RecognizerKind::MobileFaceNet);
    let dim = big.dim();
    let rows: Vec<facefleet_model::Embedding> =
        (0..40_000).map(|i| facefleet_model::Embedding((0..dim).map(|j| if j == i % dim { 1.0 } else { 0.0 }).collect())).collect();
    big.enroll("Crowd", rows).unwrap();
    local::save_gallery(gallery_dir.path(), &big).unwrap();
    let photo = data.join("face_images_100").join("test_00.jpg");
    std::thread::scope(|s| {
        for i in 0..6 {
            let (model, dir, photo) = (&model, gallery_dir.path(), photo.clone());
            s.spawn(move || local::enroll(dir, &format!("P{i}"), &[photo], model).unwrap());
        }
    });
    let gallery = local::load_gallery(gallery_dir.path()).unwrap().expect("a gallery");
    let mut names: Vec<String> = gallery.people().into_iter().map(|(n, _)| n).collect();
    names.sort();
    assert_eq!(names, ["Crowd", "P0", "P1", "P2", "P3", "P4", "P5"]);
}
