//! The message-queue contract, run against [`SqliteQueue`]: once with a
//! fresh database per case, once with every case sharing one database file
//! through separate handles (as separate processes would).

use std::sync::{Arc, OnceLock};

use facefleet_embedded::SqliteQueue;
use facefleet_ports::MessageQueue;

mod fresh_database {
    use super::*;

    async fn make_queue() -> (Arc<dyn MessageQueue>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temporary folder");
        let queue = SqliteQueue::open(dir.path().join("queues.sqlite3")).expect("queue opens");
        (Arc::new(queue), dir)
    }

    facefleet_ports::message_queue_contract!(make_queue().await);
}

mod shared_database {
    use super::*;

    /// One database file for all cases of this module; each case opens its
    /// own handle on it.
    fn shared_path() -> &'static std::path::Path {
        static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
        DIR.get_or_init(|| tempfile::tempdir().expect("temporary folder")).path()
    }

    async fn make_queue() -> Arc<dyn MessageQueue> {
        Arc::new(SqliteQueue::open(shared_path().join("queues.sqlite3")).expect("queue opens"))
    }

    facefleet_ports::message_queue_contract!(make_queue().await);
}
