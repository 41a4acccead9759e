//! [`ObjectStore`] on Amazon S3.

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use bytes::Bytes;
use facefleet_ports::{validate_key, ListPage, ObjectMeta, ObjectStore, PortError, Result};

use crate::error::{classify, Failure};

/// S3 error codes meaning "no such bucket".
const NO_BUCKET: &[&str] = &["NoSuchBucket"];
/// S3 error codes meaning "no such key".
const NO_KEY: &[&str] = &["NoSuchKey"];
/// S3 error codes meaning "bad argument".
const BAD_ARGUMENT: &[&str] = &[
    "InvalidBucketName",
    "InvalidArgument",
    "KeyTooLongError",
    "InvalidRequest",
    "EntityTooLarge",
    "InvalidLocationConstraint",
];

/// Buckets on S3 (or an S3-compatible emulator).
#[derive(Debug, Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    region: String,
}

impl S3Store {
    /// A store using `client`, creating buckets in `region`.
    pub fn new(client: aws_sdk_s3::Client, region: impl Into<String>) -> Self {
        Self {
            client,
            region: region.into(),
        }
    }

    /// The underlying SDK client.
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    /// Empties `bucket` (every object) and deletes it; a missing bucket is
    /// fine. Used by teardown.
    pub async fn delete_bucket(&self, bucket: &str) -> Result<bool> {
        if !self.bucket_exists(bucket).await? {
            return Ok(false);
        }
        loop {
            let page = self.list(bucket, "", None, 1000).await?;
            if page.objects.is_empty() {
                break;
            }
            for object in page.objects {
                self.client
                    .delete_object()
                    .bucket(bucket)
                    .key(&object.key)
                    .send()
                    .await
                    .map_err(|e| map_bucket(classify(e), bucket, "DeleteObject"))?;
            }
        }
        match self.client.delete_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(true),
            Err(e) => {
                let f = classify(e);
                if f.code_is(NO_BUCKET) {
                    Ok(false)
                } else {
                    Err(map_bucket(f, bucket, "DeleteBucket"))
                }
            }
        }
    }
}

/// Maps a failure of a bucket-level call.
fn map_bucket(f: Failure, bucket: &str, what: &str) -> PortError {
    if f.code_is(NO_BUCKET) {
        PortError::NoSuchBucket(bucket.to_string())
    } else if f.code_is(BAD_ARGUMENT) {
        PortError::InvalidArgument(format!("{what} on bucket `{bucket}`: {}", f.message))
    } else {
        f.into_port(&format!("{what} on bucket `{bucket}`"))
    }
}

/// Maps a failure of an object-level call.
fn map_object(f: Failure, bucket: &str, key: &str, what: &str) -> PortError {
    if f.code_is(NO_KEY) {
        PortError::NoSuchKey {
            bucket: bucket.to_string(),
            key: key.to_string(),
        }
    } else {
        map_bucket(f, bucket, &format!("{what} `{key}`"))
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn create_bucket(&self, bucket: &str) -> Result<()> {
        // An existing bucket needs no CreateBucket permission (instance
        // roles only get what the pipeline uses).
        if self.bucket_exists(bucket).await? {
            return Ok(());
        }
        let mut req = self.client.create_bucket().bucket(bucket);
        // us-east-1 is the one region that takes no location constraint.
        if self.region != "us-east-1" {
            req = req.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(self.region.as_str()))
                    .build(),
            );
        }
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let f = classify(e);
                if f.code_is(&["BucketAlreadyOwnedByYou"]) {
                    Ok(())
                } else if f.code_is(&["BucketAlreadyExists"]) {
                    Err(PortError::AccessDenied(format!(
                        "bucket name `{bucket}` is taken by another AWS account; choose another prefix"
                    )))
                } else {
                    Err(map_bucket(f, bucket, "CreateBucket"))
                }
            }
        }
    }

    async fn bucket_exists(&self, bucket: &str) -> Result<bool> {
        match self.client.head_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(true),
            Err(e) => {
                let f = classify(e);
                if f.status == Some(404) || f.code_is(NO_BUCKET) || f.code_is(&["NotFound"]) {
                    Ok(false)
                } else {
                    Err(map_bucket(f, bucket, "HeadBucket"))
                }
            }
        }
    }

    async fn put(&self, bucket: &str, key: &str, body: Bytes) -> Result<()> {
        validate_key(key)?;
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| map_object(classify(e), bucket, key, "PutObject"))?;
        Ok(())
    }

    async fn put_if_absent(&self, bucket: &str, key: &str, body: Bytes) -> Result<bool> {
        validate_key(key)?;
        // S3 conditional write: `If-None-Match: *` makes the PUT fail with
        // 412 PreconditionFailed when the key exists (atomic on S3 and moto).
        match self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .if_none_match("*")
            .body(ByteStream::from(body))
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => {
                let f = classify(e);
                if f.status == Some(412) || f.code_is(&["PreconditionFailed"]) {
                    Ok(false)
                } else if f.status == Some(409) || f.code_is(&["ConditionalRequestConflict"]) {
                    // A concurrent conditional write of the same key is in
                    // progress; its outcome is unknown: retry later.
                    Err(PortError::Unavailable(format!(
                        "concurrent conditional write of `{key}` in bucket `{bucket}`: {}",
                        f.message
                    )))
                } else {
                    Err(map_object(f, bucket, key, "PutObject (if absent)"))
                }
            }
        }
    }

    async fn get(&self, bucket: &str, key: &str) -> Result<Bytes> {
        validate_key(key)?;
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| map_object(classify(e), bucket, key, "GetObject"))?;
        let data = out.body.collect().await.map_err(|e| {
            PortError::Unavailable(format!(
                "reading object `{key}` of bucket `{bucket}` failed midway: {e}"
            ))
        })?;
        Ok(data.into_bytes())
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>> {
        validate_key(key)?;
        match self.client.head_object().bucket(bucket).key(key).send().await {
            Ok(out) => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: out.content_length().unwrap_or(0).max(0) as u64,
            })),
            Err(e) => {
                let f = classify(e);
                if f.status == Some(404) || f.code_is(&["NotFound", "NoSuchKey", "NoSuchBucket"]) {
                    // A HEAD response has no body, so a missing bucket and a
                    // missing key look alike: tell them apart.
                    if self.bucket_exists(bucket).await? {
                        Ok(None)
                    } else {
                        Err(PortError::NoSuchBucket(bucket.to_string()))
                    }
                } else {
                    Err(map_object(f, bucket, key, "HeadObject"))
                }
            }
        }
    }

    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        token: Option<String>,
        max_keys: usize,
    ) -> Result<ListPage> {
        if !(1..=1000).contains(&max_keys) {
            return Err(PortError::InvalidArgument(format!(
                "max_keys must be within 1..=1000, got {max_keys}"
            )));
        }
        let mut req = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .max_keys(max_keys as i32);
        if !prefix.is_empty() {
            req = req.prefix(prefix);
        }
        if let Some(token) = token {
            req = req.continuation_token(token);
        }
        let out = req
            .send()
            .await
            .map_err(|e| map_bucket(classify(e), bucket, "ListObjectsV2"))?;
        let objects = out
            .contents()
            .iter()
            .filter_map(|o| {
                Some(ObjectMeta {
                    key: o.key()?.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                })
            })
            .collect();
        let next_token = if out.is_truncated().unwrap_or(false) {
            out.next_continuation_token().map(str::to_string)
        } else {
            None
        };
        Ok(ListPage {
            objects,
            next_token,
        })
    }

    /// Streams the file from disk (`ByteStream::from_path`): a large upload
    /// is never held in memory.
    async fn put_file(&self, bucket: &str, key: &str, path: &std::path::Path) -> Result<()> {
        validate_key(key)?;
        // The path stays out of the message (errors may reach HTTP clients).
        let body = ByteStream::from_path(path).await.map_err(|e| {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the file to upload");
            PortError::Other(format!("cannot read the file to upload as `{key}` in bucket `{bucket}`"))
        })?;
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(body)
            .send()
            .await
            .map_err(|e| map_object(classify(e), bucket, key, "PutObject"))?;
        Ok(())
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        validate_key(key)?;
        self.client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| map_object(classify(e), bucket, key, "DeleteObject"))?;
        Ok(())
    }
}
