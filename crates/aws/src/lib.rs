//! facefleet-aws (work in progress).
