//! The object-store contract, run against [`FsObjectStore`].

use std::sync::Arc;

use facefleet_embedded::FsObjectStore;
use facefleet_ports::ObjectStore;

async fn make_store() -> (Arc<dyn ObjectStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temporary folder");
    let store = FsObjectStore::new(dir.path()).expect("store opens");
    (Arc::new(store), dir)
}

facefleet_ports::object_store_contract!(make_store().await);
