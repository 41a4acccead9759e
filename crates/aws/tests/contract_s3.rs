//! The object-store contract against S3 on the moto emulator.

mod common;

facefleet_ports::object_store_contract!(common::store().await);
