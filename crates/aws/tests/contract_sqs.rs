//! The message-queue contract against SQS on the moto emulator.

mod common;

facefleet_ports::message_queue_contract!(common::queue().await);
