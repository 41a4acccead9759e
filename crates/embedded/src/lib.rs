//! Embedded adapters of facefleet's ports, for running everything on one
//! machine without cloud services:
//!
//! - [`FsObjectStore`]: buckets as folders under `<data-dir>/buckets`.
//! - [`SqliteQueue`]: durable SQS-like queues in `<data-dir>/queues.sqlite3`,
//!   shared by every process that opens the file.
//! - [`ProcessFleet`]: app-tier workers as local child processes, started
//!   as new processes or forked ready from a template process
//!   ([`worker_template`]).
//!
//! [`EmbeddedBackend::open`] wires the store and the queues for a data
//! folder.

#![warn(missing_docs)]

pub mod fs_store;
pub mod process_fleet;
pub mod sqlite_queue;
pub mod worker_template;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use facefleet_ports::{MessageQueue, ObjectStore, Result};

pub use fs_store::FsObjectStore;
pub use process_fleet::{ProcessFleet, INSTANCE_NAME_ENV};
pub use sqlite_queue::SqliteQueue;

/// File name of the queue database inside the data folder.
pub const QUEUE_DB_FILE: &str = "queues.sqlite3";

/// The embedded backend of one data folder.
#[derive(Debug, Clone)]
pub struct EmbeddedBackend {
    /// The data folder.
    pub data_dir: PathBuf,
    /// Buckets in `<data_dir>/buckets`.
    pub store: FsObjectStore,
    /// Queues in `<data_dir>/queues.sqlite3`.
    pub queue: SqliteQueue,
}

impl EmbeddedBackend {
    /// Opens (creating if needed) the store and queues of `data_dir` and
    /// returns them as ports. Blocks briefly on file I/O.
    pub fn open(data_dir: impl AsRef<Path>) -> Result<(Arc<dyn ObjectStore>, Arc<dyn MessageQueue>)> {
        let backend = Self::open_typed(data_dir)?;
        Ok((Arc::new(backend.store), Arc::new(backend.queue)))
    }

    /// Like [`EmbeddedBackend::open`], keeping the concrete adapter types.
    pub fn open_typed(data_dir: impl AsRef<Path>) -> Result<Self> {
        let data_dir = data_dir.as_ref().to_path_buf();
        let store = FsObjectStore::new(&data_dir)?;
        let queue = SqliteQueue::open(data_dir.join(QUEUE_DB_FILE))?;
        Ok(Self { data_dir, store, queue })
    }
}
