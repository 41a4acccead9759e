//! Buckets and queues.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_s3::types::{PublicAccessBlockConfiguration, Tag, Tagging};
use aws_sdk_sqs::types::QueueAttributeName;
use facefleet_ports::{ObjectStore as _, PortError};

use super::{step_err, Action, ProvisionSpec, Report, StepResult};
use crate::config::AwsClients;
use crate::error::classify;
use crate::s3::S3Store;
use crate::sqs::{attribute_changes, redrive_policy, SqsQueue};

fn s3_tags(spec: &ProvisionSpec) -> Result<Tagging, PortError> {
    let mut tags = Vec::new();
    for (k, v) in spec.tags() {
        tags.push(
            Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(|e| PortError::InvalidArgument(e.to_string()))?,
        );
    }
    Tagging::builder()
        .set_tag_set(Some(tags))
        .build()
        .map_err(|e| PortError::InvalidArgument(e.to_string()))
}

fn block_all() -> PublicAccessBlockConfiguration {
    PublicAccessBlockConfiguration::builder()
        .block_public_acls(true)
        .ignore_public_acls(true)
        .block_public_policy(true)
        .restrict_public_buckets(true)
        .build()
}

/// Current tags of `bucket` (none if it has no tag set).
async fn bucket_tags(s3: &aws_sdk_s3::Client, bucket: &str) -> Result<BTreeMap<String, String>, PortError> {
    match s3.get_bucket_tagging().bucket(bucket).send().await {
        Ok(out) => Ok(out
            .tag_set()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect()),
        Err(e) => {
            let f = classify(e);
            if f.code_is(&["NoSuchTagSet", "NoSuchTagSetError"]) {
                Ok(BTreeMap::new())
            } else {
                Err(f.into_port("GetBucketTagging"))
            }
        }
    }
}

/// True if every public access of `bucket` is blocked.
async fn public_access_blocked(s3: &aws_sdk_s3::Client, bucket: &str) -> Result<bool, PortError> {
    match s3.get_public_access_block().bucket(bucket).send().await {
        Ok(out) => Ok(out.public_access_block_configuration().is_some_and(|c| {
            c.block_public_acls() == Some(true)
                && c.ignore_public_acls() == Some(true)
                && c.block_public_policy() == Some(true)
                && c.restrict_public_buckets() == Some(true)
        })),
        Err(e) => {
            let f = classify(e);
            if f.code_is(&["NoSuchPublicAccessBlockConfiguration"]) {
                Ok(false)
            } else {
                Err(f.into_port("GetPublicAccessBlock"))
            }
        }
    }
}

/// Buckets: created, tagged, all public access blocked.
pub(super) async fn ensure_buckets(
    clients: &AwsClients,
    spec: &ProvisionSpec,
    report: &mut Report,
) -> StepResult<()> {
    let store = S3Store::new(clients.s3.clone(), clients.region());
    let s3 = &clients.s3;
    let wanted: BTreeMap<String, String> = spec.tags().into_iter().collect();
    for bucket in spec.buckets() {
        let err = |e| step_err("bucket", &bucket)(e);
        let existed = store.bucket_exists(&bucket).await.map_err(err)?;
        if !existed {
            store.create_bucket(&bucket).await.map_err(err)?;
        }
        let mut changed = Vec::new();
        let current = bucket_tags(s3, &bucket).await.map_err(err)?;
        if wanted.iter().any(|(k, v)| current.get(k) != Some(v)) {
            let tagging = s3_tags(spec).map_err(err)?;
            // Keep foreign tags the user added.
            let mut all = tagging.tag_set().to_vec();
            for (k, v) in &current {
                if !wanted.contains_key(k) {
                    all.push(Tag::builder().key(k).value(v).build().map_err(|e| {
                        err(PortError::InvalidArgument(e.to_string()))
                    })?);
                }
            }
            let tagging = Tagging::builder()
                .set_tag_set(Some(all))
                .build()
                .map_err(|e| err(PortError::InvalidArgument(e.to_string())))?;
            s3.put_bucket_tagging()
                .bucket(&bucket)
                .tagging(tagging)
                .send()
                .await
                .map_err(|e| err(classify(e).into_port("PutBucketTagging")))?;
            changed.push("tags");
        }
        if !public_access_blocked(s3, &bucket).await.map_err(err)? {
            s3.put_public_access_block()
                .bucket(&bucket)
                .public_access_block_configuration(block_all())
                .send()
                .await
                .map_err(|e| err(classify(e).into_port("PutPublicAccessBlock")))?;
            changed.push("public access block");
        }
        let action = match (existed, changed.is_empty()) {
            (false, _) => Action::Created,
            (true, true) => Action::Unchanged,
            (true, false) => Action::Updated,
        };
        let detail = if existed { changed.join(", ") } else { String::new() };
        report.push("bucket", &bucket, action, detail);
    }
    Ok(())
}

/// One queue: created with `attrs`, or updated to them, and tagged.
async fn ensure_queue(
    sqs: &SqsQueue,
    name: &str,
    attrs: HashMap<QueueAttributeName, String>,
    tags: &[(String, String)],
    report: &mut Report,
) -> StepResult<()> {
    let err = |e| step_err("queue", name)(e);
    let client = sqs.client();
    let mut changed: Vec<String> = Vec::new();
    let (url, existed) = match sqs.try_queue_url(name).await.map_err(err)? {
        Some(url) => {
            let current = sqs.attributes(name).await.map_err(err)?;
            let changes = attribute_changes(&current, &attrs);
            if !changes.is_empty() {
                let mut req = client.set_queue_attributes().queue_url(&url);
                for (k, v) in &changes {
                    changed.push(k.as_str().to_string());
                    req = req.attributes(k.clone(), v.clone());
                }
                req.send()
                    .await
                    .map_err(|e| err(classify(e).into_port("SetQueueAttributes")))?;
            }
            (url, true)
        }
        None => {
            let mut req = client.create_queue().queue_name(name);
            for (k, v) in &attrs {
                req = req.attributes(k.clone(), v.clone());
            }
            for (k, v) in tags {
                req = req.tags(k, v);
            }
            let out = req
                .send()
                .await
                .map_err(|e| err(classify(e).into_port("CreateQueue")))?;
            let url = out.queue_url().unwrap_or_default().to_string();
            (url, false)
        }
    };
    let current_tags = client
        .list_queue_tags()
        .queue_url(&url)
        .send()
        .await
        .map_err(|e| err(classify(e).into_port("ListQueueTags")))?
        .tags()
        .cloned()
        .unwrap_or_default();
    let missing: Vec<&(String, String)> = tags
        .iter()
        .filter(|(k, v)| current_tags.get(k) != Some(v))
        .collect();
    if !missing.is_empty() {
        let mut req = client.tag_queue().queue_url(&url);
        for (k, v) in missing {
            req = req.tags(k, v);
        }
        req.send()
            .await
            .map_err(|e| err(classify(e).into_port("TagQueue")))?;
        changed.push("tags".to_string());
    }
    let action = match (existed, changed.is_empty()) {
        (false, _) => Action::Created,
        (true, true) => Action::Unchanged,
        (true, false) => Action::Updated,
    };
    report.push("queue", name, action, changed.join(", "));
    Ok(())
}

/// The dead-letter queue, the request queue (1 KiB, redrive to the DLQ)
/// and the response queue. Returns the region and account id, read from
/// the dead-letter queue's ARN.
pub(super) async fn ensure_queues(
    clients: &AwsClients,
    spec: &ProvisionSpec,
    report: &mut Report,
) -> StepResult<(String, String)> {
    let sqs = SqsQueue::new(clients.sqs.clone(), clients.attempt_timeout);
    let n = &spec.names;
    let tags = spec.tags();
    let secs = |d: std::time::Duration| d.as_secs().to_string();

    let dlq_attrs = HashMap::from([
        (QueueAttributeName::MessageRetentionPeriod, secs(spec.dead_letter_retention)),
        (QueueAttributeName::VisibilityTimeout, "30".to_string()),
        (QueueAttributeName::MaximumMessageSize, "262144".to_string()),
    ]);
    ensure_queue(&sqs, &n.req_dlq, dlq_attrs, &tags, report).await?;
    let dlq_arn = sqs
        .queue_arn(&n.req_dlq)
        .await
        .map_err(step_err("queue", &n.req_dlq))?;

    let req_attrs = HashMap::from([
        (
            QueueAttributeName::MaximumMessageSize,
            spec.request_max_message_size.to_string(),
        ),
        (QueueAttributeName::VisibilityTimeout, secs(spec.request_visibility)),
        (
            QueueAttributeName::RedrivePolicy,
            redrive_policy(&dlq_arn, spec.max_receives),
        ),
    ]);
    ensure_queue(&sqs, &n.req_queue, req_attrs, &tags, report).await?;

    let resp_attrs = HashMap::from([
        (QueueAttributeName::MaximumMessageSize, "262144".to_string()),
        (QueueAttributeName::VisibilityTimeout, secs(spec.response_visibility)),
    ]);
    ensure_queue(&sqs, &n.resp_queue, resp_attrs, &tags, report).await?;

    // arn:aws:sqs:<region>:<account>:<name>
    let parts: Vec<&str> = dlq_arn.split(':').collect();
    if parts.len() < 6 {
        return Err(step_err("queue", &n.req_dlq)(PortError::Other(format!(
            "unexpected queue ARN `{dlq_arn}`"
        ))));
    }
    Ok((parts[3].to_string(), parts[4].to_string()))
}

/// Deletes the queues and the buckets (with their objects).
pub(super) async fn teardown_storage(
    clients: &AwsClients,
    spec: &ProvisionSpec,
    report: &mut Report,
) -> StepResult<()> {
    let sqs = SqsQueue::new(clients.sqs.clone(), clients.attempt_timeout);
    let n = &spec.names;
    for q in [&n.req_queue, &n.resp_queue, &n.req_dlq] {
        let existed = sqs.delete_queue(q).await.map_err(step_err("queue", q))?;
        report.push("queue", q, if existed { Action::Deleted } else { Action::Absent }, "");
    }
    let store = S3Store::new(clients.s3.clone(), clients.region());
    for b in spec.buckets() {
        let existed = store.delete_bucket(&b).await.map_err(step_err("bucket", &b))?;
        report.push("bucket", &b, if existed { Action::Deleted } else { Action::Absent }, "");
    }
    Ok(())
}

