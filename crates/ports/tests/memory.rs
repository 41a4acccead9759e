//! The port contracts, run against the in-memory adapters
//! ([`MemStore`], [`MemQueue`]): once case by case (one fresh value each),
//! once all cases in sequence on one shared value (as a long-lived test
//! double is used).

use std::sync::Arc;

use facefleet_ports::memory::{MemQueue, MemStore};
use facefleet_ports::{MessageQueue, ObjectStore};

mod store_cases {
    use super::*;

    facefleet_ports::object_store_contract!(Arc::new(MemStore::new()) as Arc<dyn ObjectStore>);
}

mod queue_cases {
    use super::*;

    facefleet_ports::message_queue_contract!(Arc::new(MemQueue::new()) as Arc<dyn MessageQueue>);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_passes_the_whole_contract_on_one_value() {
    let store = MemStore::new();
    facefleet_ports::contract::store::run_all(&store, &facefleet_ports::contract::unique_namespace("mem-store")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_passes_the_whole_contract_on_one_value() {
    let queue = MemQueue::new();
    facefleet_ports::contract::queue::run_all(&queue, &facefleet_ports::contract::unique_namespace("mem-queue")).await;
}
