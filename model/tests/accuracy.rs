//! Recognition accuracy on lfw-dev (63 people x 6 photos), through the same
//! detect -> largest face -> align -> embed path the service uses.
//! Needs `$FACEFLEET_SHARED_DIR/datasets/lfw-dev` (or `<workspace>/../shared`);
//! fails with a clear message when it is missing.
//!
//! The numbers and the threshold sweep behind the bars: `cargo run -p
//! facefleet-model --example eval_lfw -- --recognizer <kind>` (model/README.md).

use facefleet_model::eval::{dataset_dir, PeopleSet};
use facefleet_model::{default_threshold, FaceModel, ModelConfig, RecognizerKind};

fn evaluate(kind: RecognizerKind) -> PeopleSet {
    let dir = dataset_dir("lfw-dev").expect("lfw-dev data set is required for the accuracy test");
    let model = FaceModel::load(&ModelConfig::with_recognizer(kind)).expect("model loads");
    PeopleSet::embed_folder(&model, &dir).expect("lfw-dev photos decode and embed")
}

/// Asserts closed-set top-1 and open-set rates at the recognizer's default threshold.
fn check(kind: RecognizerKind, top1_min: f64, unknown_min: f64, enrolled_min: f64) {
    let set = evaluate(kind);
    assert_eq!(set.people.len(), 63, "lfw-dev should hold 63 people");
    let closed = set.closed_set();
    let t = default_threshold(kind);
    let open = set.open_set(&[t])[0];
    eprintln!(
        "{kind}: top-1 {:.2} % ({}/{}), threshold {t}: unknown {:.2} %, enrolled {:.2} %",
        closed.top1(),
        closed.correct,
        closed.queries,
        open.unknown_pct(),
        open.enrolled_pct()
    );
    assert!(
        closed.top1() >= top1_min,
        "{kind}: closed-set top-1 {:.2} % is below {top1_min} %; wrong: {:?}",
        closed.top1(),
        set.closed_set_failures()
    );
    assert!(
        open.unknown_pct() >= unknown_min,
        "{kind}: only {:.2} % of unenrolled people's photos answered Unknown at threshold {t} (want >= {unknown_min} %)",
        open.unknown_pct()
    );
    assert!(
        open.enrolled_pct() >= enrolled_min,
        "{kind}: only {:.2} % of enrolled people's photos answered correctly at threshold {t} (want >= {enrolled_min} %)",
        open.enrolled_pct()
    );
}

#[test]
fn mobilefacenet_meets_the_accuracy_bars() {
    check(RecognizerKind::MobileFaceNet, 97.0, 90.0, 95.0);
}

#[test]
fn dlib_resnet_meets_the_accuracy_bars() {
    // Open-set enrolled bar is 94 %, not 95 %: with these weights no
    // threshold reaches 90 % Unknown and 95 % enrolled at once on lfw-dev
    // (see model/README.md, "Thresholds").
    check(RecognizerKind::DlibResnet, 93.0, 90.0, 94.0);
}
