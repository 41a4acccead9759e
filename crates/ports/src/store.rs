//! The object-store port (S3-like buckets).

use async_trait::async_trait;
use bytes::Bytes;

use crate::{PortError, Result};

/// Metadata of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Object key inside its bucket.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    /// Objects of this page, in lexicographic key order.
    pub objects: Vec<ObjectMeta>,
    /// Token for the next page; `None` on the last page.
    pub next_token: Option<String>,
}

/// Buckets of objects addressed by key. Keys are `/`-separated UTF-8 paths
/// (see [`validate_key`]). Writes are atomic: a reader sees the old object,
/// the new one, or nothing, never a partial body.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// Creates the bucket; succeeds if it already exists.
    async fn create_bucket(&self, bucket: &str) -> Result<()>;
    /// True if the bucket exists.
    async fn bucket_exists(&self, bucket: &str) -> Result<bool>;
    /// Stores `body` under `key`, replacing any previous object.
    async fn put(&self, bucket: &str, key: &str, body: Bytes) -> Result<()>;
    /// Stores `body` under `key` only if no object has that key yet.
    /// Returns `true` if this call created the object, `false` if it existed.
    async fn put_if_absent(&self, bucket: &str, key: &str, body: Bytes) -> Result<bool>;
    /// Reads a whole object. Missing object: [`PortError::NoSuchKey`].
    async fn get(&self, bucket: &str, key: &str) -> Result<Bytes>;
    /// Metadata of an object, or `None` if it does not exist.
    async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>>;
    /// Lists keys starting with `prefix`, at most `max_keys` per page
    /// (1..=1000), continuing from `token`.
    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        token: Option<String>,
        max_keys: usize,
    ) -> Result<ListPage>;
    /// Deletes an object; deleting a missing object succeeds.
    async fn delete(&self, bucket: &str, key: &str) -> Result<()>;

    /// Stores the file at `path` under `key`, replacing any previous object,
    /// without holding the whole file in memory where the backend allows it
    /// (large uploads such as videos are spooled to disk first). The default
    /// reads the file into memory and calls [`ObjectStore::put`].
    async fn put_file(&self, bucket: &str, key: &str, path: &std::path::Path) -> Result<()> {
        let body = tokio::fs::read(path)
            .await
            .map_err(|e| PortError::Other(format!("cannot read the file to upload: {}", e.kind())))?;
        self.put(bucket, key, Bytes::from(body)).await
    }

    /// Deletes an object and says whether it was there. The default checks
    /// with [`ObjectStore::head`] first, so two concurrent calls may both
    /// answer `true`; adapters that can tell exactly (the filesystem) do.
    async fn remove(&self, bucket: &str, key: &str) -> Result<bool> {
        let existed = self.head(bucket, key).await?.is_some();
        self.delete(bucket, key).await?;
        Ok(existed)
    }

    /// Number of objects whose key starts with `prefix` (walks all pages).
    async fn count(&self, bucket: &str, prefix: &str) -> Result<u64> {
        let mut token = None;
        let mut total = 0u64;
        loop {
            let page = self.list(bucket, prefix, token, 1000).await?;
            total += page.objects.len() as u64;
            match page.next_token {
                Some(t) => token = Some(t),
                None => return Ok(total),
            }
        }
    }

    /// All keys starting with `prefix` (walks all pages).
    async fn list_all(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let mut token = None;
        let mut all = Vec::new();
        loop {
            let page = self.list(bucket, prefix, token, 1000).await?;
            all.extend(page.objects);
            match page.next_token {
                Some(t) => token = Some(t),
                None => return Ok(all),
            }
        }
    }
}

/// Longest key accepted (S3's limit).
pub const MAX_KEY_LEN: usize = 1024;

/// Checks that `key` is a safe relative object key: non-empty, at most 1024
/// bytes, no leading `/`, no `.` or `..` or empty path segment, no NUL or
/// control characters, no backslash. Every adapter calls this, so a key that
/// one backend refuses is refused by all.
pub fn validate_key(key: &str) -> Result<()> {
    let bad = |reason: &str| {
        Err(PortError::InvalidKey {
            key: key.to_string(),
            reason: reason.to_string(),
        })
    };
    if key.is_empty() {
        return bad("empty key");
    }
    if key.len() > MAX_KEY_LEN {
        return bad("longer than 1024 bytes");
    }
    if key.starts_with('/') {
        return bad("absolute keys are not allowed");
    }
    if key.contains('\\') {
        return bad("backslashes are not allowed");
    }
    if key.chars().any(|c| c.is_control()) {
        return bad("control characters are not allowed");
    }
    for segment in key.split('/') {
        match segment {
            "" => return bad("empty path segment"),
            "." | ".." => return bad("`.` and `..` segments are not allowed"),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate_key;

    #[test]
    fn accepts_ordinary_keys() {
        for key in ["a.jpg", "test_00.jpg", "dir/sub/file.txt", "été 2024.png", "a..b"] {
            assert!(validate_key(key).is_ok(), "{key}");
        }
    }

    #[test]
    fn refuses_escaping_keys() {
        for key in ["", "/etc/passwd", "../x", "a/../../x", "a//b", "a/", "./a", "a\\b", "a\0b", "a\nb"] {
            assert!(validate_key(key).is_err(), "{key:?}");
        }
        assert!(validate_key(&"k".repeat(1025)).is_err());
    }
}
