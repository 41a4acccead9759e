//! facefleet-embedded (work in progress).
