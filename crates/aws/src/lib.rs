//! AWS adapters of facefleet's ports, and provisioning.
//!
//! - [`S3Store`]: [`ObjectStore`] on S3 (path-style when an endpoint is
//!   overridden, conditional writes with `If-None-Match: *`).
//! - [`SqsQueue`]: [`MessageQueue`] on SQS (long polls, batches of 10,
//!   dead-letter redrive, client-side size check).
//! - [`Ec2Fleet`]: [`Fleet`] on EC2 (launch template, pool of stopped
//!   instances, view rebuilt from tags).
//! - [`provision()`] / [`teardown()`]: idempotent creation and removal of
//!   every resource of a deployment, with a [`Report`] of what changed.
//!
//! Credentials and region come from the standard AWS chain; an emulator is
//! reached through `AWS_ENDPOINT_URL` or [`AwsOptions::endpoint`].
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use facefleet_aws::{connect, AwsOptions};
//! let (store, queue) = connect(&AwsOptions::default()).await;
//! # Ok(()) }
//! ```

mod config;
mod ec2;
mod error;
mod provision;
mod s3;
mod sqs;

use std::sync::Arc;

pub use config::{load_sdk_config, AwsClients, AwsOptions, RetryMode};
pub use ec2::{Ec2Fleet, Ec2FleetConfig, FLEET_TAG, PREFIX_TAG};
pub use provision::{
    provision, teardown, Action, ProvisionError, ProvisionSpec, Report, ReportItem,
};
pub use s3::S3Store;
pub use sqs::{attribute_changes, parse_redrive, redrive_policy, SqsQueue, MAX_VISIBILITY, MAX_WAIT};

use facefleet_ports::{MessageQueue, ObjectStore};

/// The object store and message queue of the AWS backend, from the standard
/// configuration chain and `opts`.
pub async fn connect(opts: &AwsOptions) -> (Arc<dyn ObjectStore>, Arc<dyn MessageQueue>) {
    let clients = AwsClients::load(opts).await;
    connect_with(&clients)
}

/// The object store and message queue over already built clients.
pub fn connect_with(clients: &AwsClients) -> (Arc<dyn ObjectStore>, Arc<dyn MessageQueue>) {
    (
        Arc::new(S3Store::new(clients.s3.clone(), clients.region())),
        Arc::new(SqsQueue::new(clients.sqs.clone(), clients.attempt_timeout)),
    )
}

/// The EC2 fleet of app-tier workers of `prefix` (launch template and fleet
/// tag `<prefix>-app-tier`, as [`provision()`] creates them).
pub fn ec2_fleet(clients: &AwsClients, prefix: &str, max_running: usize, pool_size: usize) -> Ec2Fleet {
    let mut config = Ec2FleetConfig::for_prefix(prefix, max_running);
    config.pool_size = pool_size;
    Ec2Fleet::new(clients.ec2.clone(), config)
}
