//! facefleet's elastic pipeline, written against the ports of
//! `facefleet-ports` so the same code runs on every backend:
//!
//! - [`web`]: the web tier (axum): uploads in, names out, JSON API;
//! - [`worker`]: the app tier's loop around the face model;
//! - [`autoscaler`]: sizes the worker fleet from the backlog;
//! - [`up`]: `facefleet up`, the whole stack on the embedded backends;
//! - [`loadgen`] and [`client`]: talk to a running stack.
//!
//! See `docs/ARCHITECTURE.md` for the message flow and failure handling.

pub mod autoscaler;
pub mod backend;
pub mod cli;
pub mod client;
pub mod engine;
pub mod gallery;
pub mod keys;
pub mod loadgen;
pub mod model_engine;
pub mod protocol;
pub mod stats;
pub mod up;
pub mod upload;
pub mod web;
pub mod worker;

pub use backend::Deployment;
