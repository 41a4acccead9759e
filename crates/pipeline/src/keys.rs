//! API keys: creation, listing and revocation in the deployment's object
//! store, and the [`KeyRing`] every web tier checks requests against.
//!
//! A key's secret is `ffk_<id>_<64 hex digits>` (256 random bits after the
//! id). Only its SHA-256 is stored, in the gallery bucket under
//! `api-keys/<id>.json` (a [`KeyRecord`]). A fast hash is the right tool for
//! a high-entropy random secret (there is nothing to brute-force, unlike a
//! password), and it keeps the check per request cheap; the comparison is
//! constant-time. Every web tier re-lists `api-keys/` every few seconds
//! ([`KeyRing::refresh`]), so a created or revoked key takes effect on all
//! of them without a restart.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use facefleet_ports::{ObjectStore, PortError};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Key prefix of the key records in the gallery bucket.
pub const KEYS_PREFIX: &str = "api-keys/";

/// Prefix of every secret.
pub const SECRET_PREFIX: &str = "ffk_";

/// What a key may do. Scopes are ordered: `admin` can do everything
/// `enroll` can, and `enroll` everything `recognize` can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// `POST /`, `POST /v1/recognize`, reading video results.
    Recognize,
    /// Also: enrolling people, listing them, uploading videos.
    Enroll,
    /// Everything: keys, deletes, status, metrics.
    Admin,
}

impl Scope {
    /// The scope's name (`recognize`, `enroll`, `admin`).
    pub fn name(self) -> &'static str {
        match self {
            Scope::Recognize => "recognize",
            Scope::Enroll => "enroll",
            Scope::Admin => "admin",
        }
    }
}

/// A key as stored: everything but the secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Public identifier (also inside the secret).
    pub id: String,
    /// A label for people (`ci`, `course-grader`...).
    pub name: String,
    /// What the key may do.
    pub scope: Scope,
    /// Hex SHA-256 of the whole secret.
    pub secret_sha256: String,
    /// Creation time, seconds since the Unix epoch.
    pub created_at: u64,
    /// Sustained requests per second allowed (`None`: no limit).
    #[serde(default)]
    pub rate_per_sec: Option<u32>,
    /// Requests allowed in a burst above the rate (default: the rate).
    #[serde(default)]
    pub burst: Option<u32>,
    /// The gallery collections the key may use (`None`: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collections: Option<Vec<String>>,
}

impl KeyRecord {
    /// An admin key for all collections: one can manage keys over HTTP.
    pub fn is_full_admin(&self) -> bool {
        self.scope == Scope::Admin && self.collections.is_none()
    }
}

/// Settings of a new key.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// Label.
    pub name: String,
    /// Scope.
    pub scope: Scope,
    /// Requests per second (`None`: unlimited).
    pub rate_per_sec: Option<u32>,
    /// Burst.
    pub burst: Option<u32>,
    /// Collections the key may use (`None`: all).
    pub collections: Option<Vec<String>>,
}

/// Errors of key management.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] PortError),
    /// No key has that id.
    #[error("no API key with id `{0}`")]
    NotFound(String),
    /// Bad settings.
    #[error("{0}")]
    Invalid(String),
    /// The system's random source failed.
    #[error("cannot generate a secret: {0}")]
    Random(String),
    /// Revoking this key would leave no admin key for all collections.
    #[error("`{0}` is the last admin key for all collections: create another admin key first, or revoke it on the server with `facefleet keys revoke` (a loopback stack without keys is open to everyone)")]
    LastAdmin(String),
    /// Another revoke kept the revoke lock for the whole wait.
    #[error("another API key is being revoked; try again in a moment")]
    Busy,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn sha256_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn record_key(id: &str) -> String {
    format!("{KEYS_PREFIX}{id}.json")
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The id inside a well-formed secret.
pub fn secret_id(secret: &str) -> Option<&str> {
    let rest = secret.strip_prefix(SECRET_PREFIX)?;
    let (id, tail) = rest.split_once('_')?;
    (is_hex(id, 12) && is_hex(tail, 64)).then_some(id)
}

/// The record of key `id`: `None` when there is none; an unreadable record
/// is logged and counts as none.
async fn read_record(store: &dyn ObjectStore, bucket: &str, id: &str) -> Result<Option<KeyRecord>, PortError> {
    let key = record_key(id);
    let body = match store.get(bucket, &key).await {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    match serde_json::from_slice::<KeyRecord>(&body) {
        Ok(r) if r.id == id => Ok(Some(r)),
        Ok(_) => {
            tracing::warn!(%key, "skipping an API key record whose id does not match its key");
            Ok(None)
        }
        Err(e) => {
            tracing::warn!(%key, error = %e, "skipping an unreadable API key record");
            Ok(None)
        }
    }
}

/// The ids of the stored keys.
async fn stored_ids(store: &dyn ObjectStore, bucket: &str) -> Result<Vec<String>, PortError> {
    Ok(store
        .list_all(bucket, KEYS_PREFIX)
        .await?
        .iter()
        .filter_map(|m| m.key.strip_prefix(KEYS_PREFIX)?.strip_suffix(".json").map(str::to_string))
        .collect())
}

/// Creates a key; returns its record and the secret (shown once, never
/// stored).
pub async fn create(store: &dyn ObjectStore, bucket: &str, new: NewKey) -> Result<(KeyRecord, String), KeyError> {
    if new.name.len() > 100 || new.name.chars().any(char::is_control) {
        return Err(KeyError::Invalid("a key name is at most 100 bytes, without control characters".into()));
    }
    if let Some(why) = facefleet_gallery::names::hidden_characters(&new.name) {
        return Err(KeyError::Invalid(format!("invalid key name: {why}")));
    }
    if new.rate_per_sec == Some(0) || new.burst == Some(0) {
        return Err(KeyError::Invalid("a rate limit and a burst must be at least 1".into()));
    }
    if new.burst.is_some() && new.rate_per_sec.is_none() {
        return Err(KeyError::Invalid("a burst needs a rate limit (`rate_per_sec`)".into()));
    }
    if let Some(list) = &new.collections {
        if list.is_empty() {
            return Err(KeyError::Invalid("a key limited to collections needs at least one".into()));
        }
        for c in list {
            facefleet_gallery::names::validate_collection(c).map_err(|e| KeyError::Invalid(format!("invalid collection name: {e}")))?;
        }
    }
    let mut raw = [0u8; 38];
    getrandom::fill(&mut raw).map_err(|e| KeyError::Random(e.to_string()))?;
    let id = hex::encode(&raw[..6]);
    let secret = format!("{SECRET_PREFIX}{id}_{}", hex::encode(&raw[6..]));
    let record = KeyRecord {
        id: id.clone(),
        name: new.name,
        scope: new.scope,
        secret_sha256: sha256_hex(&secret),
        created_at: now_secs(),
        rate_per_sec: new.rate_per_sec,
        burst: new.burst,
        collections: new.collections,
    };
    let body = serde_json::to_vec(&record).expect("key record serialises");
    store.put(bucket, &record_key(&id), Bytes::from(body)).await?;
    Ok((record, secret))
}

/// Every key, oldest first. Unreadable records are skipped (and logged).
pub async fn list(store: &dyn ObjectStore, bucket: &str) -> Result<Vec<KeyRecord>, KeyError> {
    let mut out = Vec::new();
    for id in stored_ids(store, bucket).await? {
        out.extend(read_record(store, bucket, &id).await?);
    }
    out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    Ok(out)
}

/// Revokes (deletes) a key by id; [`KeyError::NotFound`] if there is none.
pub async fn revoke(store: &dyn ObjectStore, bucket: &str, id: &str) -> Result<KeyRecord, KeyError> {
    let not_found = || KeyError::NotFound(id.to_string());
    if !is_hex(id, 12) {
        return Err(not_found());
    }
    let record = read_record(store, bucket, id).await?.ok_or_else(not_found)?;
    if !store.remove(bucket, &record_key(id)).await? {
        return Err(KeyError::NotFound(id.to_string()));
    }
    Ok(record)
}

/// The object an HTTP revoke holds while it checks and revokes, so that
/// revokes run one at a time across every web tier of the deployment. It
/// lies next to `api-keys/`, not in it; its body is the Unix time (seconds)
/// it was taken.
pub const REVOKE_LOCK: &str = "api-keys.revoking";
/// A revoke lock older than this was left by a web tier that stopped
/// mid-revoke: the next revoke takes it over.
const REVOKE_LOCK_STALE_SECS: u64 = 30;
/// How long a revoke waits for the lock (looking every 50 ms) before
/// [`KeyError::Busy`].
const REVOKE_LOCK_WAIT: Duration = Duration::from_secs(5);

/// Takes [`REVOKE_LOCK`], waiting while another revoke holds it.
async fn take_revoke_lock(store: &dyn ObjectStore, bucket: &str) -> Result<(), KeyError> {
    let started = std::time::Instant::now();
    while started.elapsed() < REVOKE_LOCK_WAIT {
        let now = now_secs();
        if store.put_if_absent(bucket, REVOKE_LOCK, Bytes::from(now.to_string())).await? {
            return Ok(());
        }
        let taken = match store.get(bucket, REVOKE_LOCK).await {
            Ok(body) => std::str::from_utf8(&body).ok().and_then(|t| t.trim().parse::<u64>().ok()),
            Err(PortError::NoSuchKey { .. }) => continue, // released meanwhile
            Err(e) => return Err(e.into()),
        };
        if taken.is_none_or(|t| now.saturating_sub(t) > REVOKE_LOCK_STALE_SECS) {
            tracing::warn!(lock = REVOKE_LOCK, "taking over a stale revoke lock");
            store.put(bucket, REVOKE_LOCK, Bytes::from(now.to_string())).await?;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(KeyError::Busy)
}

/// Revokes key `id` unless it is the last admin key for all collections
/// (what the HTTP API does: a client cannot lock every admin out, nor open
/// a loopback stack by revoking the last key). Revokes hold
/// [`REVOKE_LOCK`] while they check and revoke, so two at once cannot both
/// pass the check.
pub async fn revoke_keeping_an_admin(store: &dyn ObjectStore, bucket: &str, id: &str) -> Result<KeyRecord, KeyError> {
    take_revoke_lock(store, bucket).await?;
    let result = async {
        let all = list(store, bucket).await?;
        if let Some(target) = all.iter().find(|k| k.id == id) {
            if target.is_full_admin() && !all.iter().any(|k| k.id != id && k.is_full_admin()) {
                return Err(KeyError::LastAdmin(id.to_string()));
            }
        }
        revoke(store, bucket, id).await
    }
    .await;
    if let Err(e) = store.delete(bucket, REVOKE_LOCK).await {
        tracing::warn!(error = %e, lock = REVOKE_LOCK, "cannot release the revoke lock; the next revoke takes it over after 30 s");
    }
    result
}

/// Why a presented secret was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No secret was presented (and the stack is not open).
    Missing,
    /// Unknown, malformed or revoked secret.
    Invalid,
    /// The key's scope is below what the route needs.
    Scope {
        /// What the key has.
        has: Scope,
        /// What the route needs.
        needs: Scope,
    },
    /// Over the key's rate limit; retry after this long.
    RateLimited(Duration),
}

/// The web tier's view of the deployment's keys, refreshed from the store.
pub struct KeyRing {
    store: Arc<dyn ObjectStore>,
    bucket: String,
    keys: RwLock<HashMap<String, KeyRecord>>,
    limiters: Mutex<HashMap<String, Arc<DefaultDirectRateLimiter>>>,
    /// Whether one refresh has succeeded.
    loaded: AtomicBool,
}

impl KeyRing {
    /// An empty ring over the keys in `bucket`; call [`KeyRing::refresh`]
    /// before serving.
    pub fn new(store: Arc<dyn ObjectStore>, bucket: &str) -> Arc<Self> {
        Arc::new(Self { store, bucket: bucket.to_string(), keys: RwLock::default(), limiters: Mutex::default(), loaded: AtomicBool::new(false) })
    }

    /// Re-lists the keys: reads records it has not seen, forgets revoked
    /// ones. Costs one listing plus one read per new key.
    pub async fn refresh(&self) -> Result<(), PortError> {
        let ids = stored_ids(self.store.as_ref(), &self.bucket).await?;
        let unseen: Vec<String> = {
            let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
            ids.iter().filter(|id| !keys.contains_key(*id)).cloned().collect()
        };
        let mut fresh = Vec::new();
        for id in unseen {
            fresh.extend(read_record(self.store.as_ref(), &self.bucket, &id).await?);
        }
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        keys.retain(|id, _| ids.contains(id));
        for r in fresh {
            keys.insert(r.id.clone(), r);
        }
        let mut limiters = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        limiters.retain(|id, _| keys.contains_key(id));
        self.loaded.store(true, Ordering::Release);
        Ok(())
    }

    /// Refreshes unless a refresh has already succeeded (the first view
    /// must be complete before serving: until then no key looks present).
    pub async fn ensure_loaded(&self) -> Result<(), PortError> {
        if self.loaded.load(Ordering::Acquire) {
            return Ok(());
        }
        self.refresh().await
    }

    /// Refreshes every `every` until `stop` fires (errors are logged; the
    /// last good view stays in force).
    pub async fn run(self: Arc<Self>, every: Duration, stop: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "refreshing the API keys failed; keeping the last view");
            }
        }
    }

    /// True when at least one key exists.
    pub fn any(&self) -> bool {
        !self.keys.read().unwrap_or_else(|p| p.into_inner()).is_empty()
    }

    /// Checks `secret` for a route that needs `needs`; on success returns
    /// the key's record (its rate limit has been charged one request).
    pub fn check(&self, secret: &str, needs: Scope) -> Result<KeyRecord, Denied> {
        let id = secret_id(secret).ok_or(Denied::Invalid)?;
        let record = self.keys.read().unwrap_or_else(|p| p.into_inner()).get(id).cloned().ok_or(Denied::Invalid)?;
        if !bool::from(sha256_hex(secret).as_bytes().ct_eq(record.secret_sha256.as_bytes())) {
            return Err(Denied::Invalid);
        }
        if record.scope < needs {
            return Err(Denied::Scope { has: record.scope, needs });
        }
        if let Some(limiter) = self.limiter(&record) {
            if let Err(not_until) = limiter.check() {
                let wait = not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
                return Err(Denied::RateLimited(wait));
            }
        }
        Ok(record)
    }

    fn limiter(&self, record: &KeyRecord) -> Option<Arc<DefaultDirectRateLimiter>> {
        let rate = NonZeroU32::new(record.rate_per_sec?)?;
        let burst = record.burst.and_then(NonZeroU32::new).unwrap_or(rate);
        let mut limiters = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        Some(
            limiters
                .entry(record.id.clone())
                .or_insert_with(|| Arc::new(RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))))
                .clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_have_an_id() {
        let s = format!("ffk_0123456789ab_{}", "f".repeat(64));
        assert_eq!(secret_id(&s), Some("0123456789ab"));
        for bad in ["", "ffk_", "ffk_0123456789ab_", "xxx_0123456789ab_00", &format!("ffk_0123456789ab_{}", "g".repeat(64))] {
            assert_eq!(secret_id(bad), None, "{bad}");
        }
    }

    /// A store whose reads answer late: two revokes that read the keys at
    /// once both see the other's key still there, unless they take turns.
    struct SlowReads(facefleet_ports::memory::MemStore);

    #[async_trait::async_trait]
    impl ObjectStore for SlowReads {
        async fn create_bucket(&self, bucket: &str) -> Result<(), PortError> {
            self.0.create_bucket(bucket).await
        }
        async fn bucket_exists(&self, bucket: &str) -> Result<bool, PortError> {
            self.0.bucket_exists(bucket).await
        }
        async fn put(&self, bucket: &str, key: &str, body: Bytes) -> Result<(), PortError> {
            self.0.put(bucket, key, body).await
        }
        async fn put_if_absent(&self, bucket: &str, key: &str, body: Bytes) -> Result<bool, PortError> {
            self.0.put_if_absent(bucket, key, body).await
        }
        async fn get(&self, bucket: &str, key: &str) -> Result<Bytes, PortError> {
            let body = self.0.get(bucket, key).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            body
        }
        async fn head(&self, bucket: &str, key: &str) -> Result<Option<facefleet_ports::ObjectMeta>, PortError> {
            self.0.head(bucket, key).await
        }
        async fn list(&self, bucket: &str, prefix: &str, token: Option<String>, max_keys: usize) -> Result<facefleet_ports::ListPage, PortError> {
            self.0.list(bucket, prefix, token, max_keys).await
        }
        async fn delete(&self, bucket: &str, key: &str) -> Result<(), PortError> {
            self.0.delete(bucket, key).await
        }
    }

    #[tokio::test]
    async fn two_revokes_at_once_leave_an_admin() {
        let store = SlowReads(facefleet_ports::memory::MemStore::new());
        store.create_bucket("b").await.unwrap();
        let admin = |name: &str| NewKey { name: name.into(), scope: Scope::Admin, rate_per_sec: None, burst: None, collections: None };
        let (a, _) = create(&store, "b", admin("a")).await.unwrap();
        let (b, _) = create(&store, "b", admin("b")).await.unwrap();
        let (ra, rb) = tokio::join!(revoke_keeping_an_admin(&store, "b", &a.id), revoke_keeping_an_admin(&store, "b", &b.id));
        assert!(ra.is_ok() != rb.is_ok(), "exactly one revoke passes: {ra:?} / {rb:?}");
        assert!(matches!(ra.err().or(rb.err()), Some(KeyError::LastAdmin(_))));
        assert_eq!(list(&store, "b").await.unwrap().iter().filter(|k| k.is_full_admin()).count(), 1);
        assert!(store.head("b", REVOKE_LOCK).await.unwrap().is_none(), "the lock is released");
        // A lock left by a web tier that died is taken over; a fresh one is waited for.
        let (c, _) = create(&store, "b", admin("c")).await.unwrap();
        store.put("b", REVOKE_LOCK, Bytes::from("0")).await.unwrap();
        revoke_keeping_an_admin(&store, "b", &c.id).await.unwrap();
        store.put("b", REVOKE_LOCK, Bytes::from(now_secs().to_string())).await.unwrap();
        let (d, _) = create(&store, "b", admin("d")).await.unwrap();
        assert!(matches!(revoke_keeping_an_admin(&store, "b", &d.id).await, Err(KeyError::Busy)));
    }

    #[test]
    fn scopes_are_ordered() {
        assert!(Scope::Admin > Scope::Enroll && Scope::Enroll > Scope::Recognize);
        assert_eq!(serde_json::to_string(&Scope::Enroll).unwrap(), "\"enroll\"");
    }
}
