//! Contract test suites that every adapter of the ports runs against itself.
//!
//! Each behaviour is a public `async fn(port, ns)` in [`store`], [`queue`] or
//! [`fleet`]; `ns` is a unique namespace (see [`unique_namespace`]) from
//! which the case derives its bucket and queue names, so cases can run in
//! parallel against one shared backend (e.g. the moto emulator).
//!
//! An adapter crate runs the whole contract, one `#[tokio::test]` per
//! behaviour, with the macros [`object_store_contract!`](crate::object_store_contract),
//! [`message_queue_contract!`](crate::message_queue_contract) and
//! [`fleet_contract!`](crate::fleet_contract). Their argument is an
//! expression, evaluated inside each async test, whose value implements
//! [`Subject`] for the port: an `Arc<dyn Port>`, or a tuple
//! `(Arc<dyn Port>, guard)` whose guard (a temporary directory, a server
//! handle...) lives as long as the test:
//!
//! ```ignore
//! // crates/<adapter>/tests/contract_store.rs
//! use std::sync::Arc;
//! use facefleet_ports::ObjectStore;
//!
//! async fn make_store() -> (Arc<dyn ObjectStore>, tempfile::TempDir) {
//!     let dir = tempfile::tempdir().unwrap();
//!     (Arc::new(MyStore::new(dir.path())), dir)
//! }
//!
//! facefleet_ports::object_store_contract!(make_store().await);
//! ```
//!
//! The adapter crate needs `tokio` (with the `macros` and `rt-multi-thread`
//! features) among its dev-dependencies.
//!
//! Timing: no case asserts that something is fast. Cases that wait for a
//! state (a message reappearing after its visibility timeout, an instance
//! stopping) poll with [`eventually`], whose bound only guards against a
//! hang.

#![warn(missing_docs)]

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub mod fleet;
pub mod queue;
pub mod store;

/// How long [`eventually`] waits by default before declaring a hang.
pub const HANG_GUARD: Duration = Duration::from_secs(60);

/// Gives the port under test out of whatever the adapter's constructor
/// expression returned (see the module documentation).
pub trait Subject<P: ?Sized> {
    /// The port to run a contract case against.
    fn subject(&self) -> &P;
}

impl<P: ?Sized> Subject<P> for Arc<P> {
    fn subject(&self) -> &P {
        self
    }
}

impl<P: ?Sized, G> Subject<P> for (Arc<P>, G) {
    fn subject(&self) -> &P {
        &self.0
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh number, unique within this process and very likely across
/// processes (mixes the process id, the clock and a counter).
pub fn unique_number() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    // splitmix64 of the mixed inputs: spreads them over all 64 bits.
    let mut z = nanos
        ^ (u64::from(std::process::id()) << 40)
        ^ count.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A unique namespace for one contract case, valid as the start of an S3
/// bucket name and an SQS queue name: `ff-<case>-<hex>`, lowercase, at most
/// 46 characters, so `<ns>-<suffix>` fits S3's 63 with suffixes up to 16.
pub fn unique_namespace(case: &str) -> String {
    let mut short: String = case
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .take(24)
        .collect();
    while short.ends_with('-') {
        short.pop();
    }
    format!("ff-{short}-{:016x}", unique_number())
}

/// Polls `probe` (every 50 ms) until it returns `Some`, and returns that
/// value. Panics with `what` if that does not happen within `limit`: the
/// limit guards against a hang, it is not a speed requirement.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if start.elapsed() > limit {
            panic!("gave up after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A bound on a polling loop that keeps state between rounds (where
/// [`eventually`]'s closure cannot): call [`HangGuard::check`] each round.
#[derive(Debug)]
pub struct HangGuard {
    what: String,
    start: tokio::time::Instant,
    limit: Duration,
}

impl HangGuard {
    /// Starts the clock for waiting on `what`, bounded by `limit`.
    pub fn new(what: impl Into<String>, limit: Duration) -> Self {
        Self { what: what.into(), start: tokio::time::Instant::now(), limit }
    }

    /// Panics if the limit has passed: the awaited state never came.
    pub fn check(&self) {
        if self.start.elapsed() > self.limit {
            panic!("gave up after {:?} waiting for: {}", self.limit, self.what);
        }
    }
}

/// Expands to one `#[tokio::test]` per listed case of a suite module.
#[doc(hidden)]
#[macro_export]
macro_rules! __contract_cases {
    ($suite:ident, $port:ty, $make:expr, [$($case:ident),* $(,)?]) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let subject = $make;
                let port: &$port = $crate::contract::Subject::<$port>::subject(&subject);
                let ns = $crate::contract::unique_namespace(::core::stringify!($case));
                $crate::contract::$suite::$case(port, &ns).await;
            }
        )*
    };
}

/// Runs the object-store contract: one `#[tokio::test]` per case of
/// [`contract::store`](crate::contract::store) (see its `CASES`). The
/// argument is evaluated in each test and must implement
/// `Subject<dyn ObjectStore>` (e.g. `Arc<dyn ObjectStore>` or
/// `(Arc<dyn ObjectStore>, guard)`); it may use `.await`.
#[macro_export]
macro_rules! object_store_contract {
    ($make:expr) => {
        $crate::__contract_cases!(store, dyn $crate::ObjectStore, $make, [
            create_bucket_is_idempotent,
            bucket_exists_reports_presence,
            put_then_get_roundtrips,
            put_overwrites,
            head_reports_size_or_none,
            get_missing_key_is_no_such_key,
            missing_bucket_is_no_such_bucket,
            invalid_keys_are_refused,
            list_filters_by_prefix_in_byte_order,
            list_paginates_with_small_max_keys,
            list_of_empty_bucket_is_empty,
            delete_removes_and_tolerates_missing,
            count_and_list_all_see_every_object,
            put_if_absent_creates_once,
            put_if_absent_has_one_winner_under_concurrency,
            concurrent_puts_are_all_stored,
            put_file_stores_the_file,
            remove_says_whether_it_was_there,
            list_tolerates_concurrent_deletes,
        ]);
    };
}

/// Runs the message-queue contract: one `#[tokio::test]` per case of
/// [`contract::queue`](crate::contract::queue). The argument must implement
/// `Subject<dyn MessageQueue>`.
#[macro_export]
macro_rules! message_queue_contract {
    ($make:expr) => {
        $crate::__contract_cases!(queue, dyn $crate::MessageQueue, $make, [
            create_queue_is_idempotent,
            send_then_receive_roundtrips,
            receive_returns_at_most_max,
            receive_rejects_bad_max,
            long_poll_returns_empty_after_wait,
            long_poll_returns_early_when_message_arrives,
            invisible_message_reappears_after_timeout,
            queue_default_visibility_applies,
            delete_acknowledges,
            change_visibility_zero_makes_visible,
            change_visibility_extends_invisibility,
            depth_counts_visible_and_in_flight,
            purge_empties_queue,
            message_size_limit_is_enforced,
            dead_letter_after_max_receives,
            missing_queue_is_no_such_queue,
            stale_receipt_does_not_delete,
            concurrent_traffic_loses_and_duplicates_nothing,
            delete_batch_answers_each_receipt,
        ]);
    };
}

/// Runs the fleet contract: one `#[tokio::test]` per case of
/// [`contract::fleet`](crate::contract::fleet). The argument must implement
/// `Subject<dyn Fleet>`; launched workers must keep running until stopped.
#[macro_export]
macro_rules! fleet_contract {
    ($make:expr) => {
        $crate::__contract_cases!(fleet, dyn $crate::Fleet, $make, [
            launch_lists_named_instance,
            launches_get_distinct_ids,
            stop_makes_instance_inactive,
            stop_unknown_instance_is_no_such_instance,
        ]);
    };
}
