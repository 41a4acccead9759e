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

/// Revokes key `id` unless it is the last admin key for all collections
/// (what the HTTP API does: a client cannot lock every admin out, nor open
/// a loopback stack by revoking the last key). Two such revokes at once
/// can still both pass the check.
pub async fn revoke_keeping_an_admin(store: &dyn ObjectStore, bucket: &str, id: &str) -> Result<KeyRecord, KeyError> {
    let all = list(store, bucket).await?;
    if let Some(target) = all.iter().find(|k| k.id == id) {
        if target.is_full_admin() && !all.iter().any(|k| k.id != id && k.is_full_admin()) {
            return Err(KeyError::LastAdmin(id.to_string()));
        }
    }
    revoke(store, bucket, id).await
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

    #[test]
    fn scopes_are_ordered() {
        assert!(Scope::Admin > Scope::Enroll && Scope::Enroll > Scope::Recognize);
        assert_eq!(serde_json::to_string(&Scope::Enroll).unwrap(), "\"enroll\"");
    }
}
