//! facefleet's composition root: the one crate that knows every adapter.
//!
//! The pipeline (`facefleet-pipeline`), the gallery (`facefleet-gallery`)
//! and the video path (`facefleet-video`) are written against the ports of
//! `facefleet-ports` and the recognizer seam [`facefleet_gallery::FaceEngine`];
//! this crate plugs the adapters in and holds everything a binary needs:
//!
//! - [`settings`]: the flag groups of every process, validated when parsed,
//!   and [`settings::to_env`], which hands a process's settings to a worker
//!   or a Lambda function without loss;
//! - [`backend`]: the ONE place a backend (embedded, AWS) is chosen;
//! - [`fleet`]: local worker processes or EC2 instances, and
//!   [`compute_slots`], which lets local workers take turns on the cores;
//! - [`model_engine`]: the face model behind [`facefleet_gallery::FaceEngine`];
//! - [`run`]: the worker, web-tier and autoscaler processes;
//! - [`up`]: `facefleet up`, the whole stack, with [`video`] wired in;
//! - [`doctor`], [`commands`], [`client`], [`loadgen`]: the rest of the
//!   `facefleet` command line;
//! - `aws_cli` (feature `aws`): AWS flags, `provision`, `teardown`.
//!
//! The binaries (`facefleet`, `web-tier`, `app-tier`, `autoscaler`, the
//! Lambda functions) parse their flags and call into this crate.

#[cfg(feature = "aws")]
pub mod aws_cli;
pub mod backend;
pub mod client;
pub mod commands;
pub mod compute_slots;
pub mod doctor;
pub mod fleet;
pub mod loadgen;
pub mod model_engine;
pub mod run;
pub mod settings;
pub mod up;
pub mod video;

pub use model_engine::ModelEngine;
pub use settings::{BackendArgs, ModelArgs, ScalerArgs, WebArgs, WorkerArgs, WorkerSettings};
