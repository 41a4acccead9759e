//! facefleet-video (work in progress).
