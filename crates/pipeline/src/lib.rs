//! facefleet's elastic pipeline, written against the ports of
//! `facefleet-ports` so the same code runs on every backend:
//!
//! - [`web`]: the web tier (axum): uploads in, names out, JSON API;
//! - [`worker`]: the app tier's loop around the face model;
//! - [`autoscaler`]: sizes the worker fleet from the backlog;
//!
//! It knows no adapter and no model: the composition root
//! (`facefleet-app`) plugs them in.
//!
//! See `docs/ARCHITECTURE.md` for the message flow and failure handling.

pub mod autoscaler;
pub mod backend;
pub mod keys;
mod model_thread;
pub mod protocol;
pub mod stats;
pub mod upload;
pub mod web;
pub mod worker;

pub use backend::Deployment;
