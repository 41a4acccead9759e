//! facefleet-pipeline (work in progress).
