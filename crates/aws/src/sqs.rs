//! [`MessageQueue`] on Amazon SQS.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName};
use facefleet_ports::{
    Message, MessageQueue, PortError, QueueConfig, QueueDepth, Result, MAX_BATCH,
};

use crate::error::{classify, Failure, FailureKind};

/// Longest long poll SQS allows.
pub const MAX_WAIT: Duration = Duration::from_secs(20);
/// Longest visibility timeout SQS allows (12 hours).
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);
/// SQS's bounds of `MaximumMessageSize` (1 KiB to 1 MiB since 2025; 256 KiB before).
pub const MESSAGE_SIZE_RANGE: std::ops::RangeInclusive<usize> = 1024..=1_048_576;

/// Error codes meaning "no such queue" (JSON and query protocols).
const NO_QUEUE: &[&str] = &[
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
    "NonExistentQueue",
];
/// Error codes meaning "that receipt handle is no good".
const BAD_RECEIPT: &[&str] = &[
    "ReceiptHandleIsInvalid",
    "InvalidReceiptHandle",
    "AWS.SimpleQueueService.MessageNotInflight",
    "MessageNotInflight",
];
/// Error codes meaning "bad argument".
const BAD_ARGUMENT: &[&str] = &[
    "InvalidParameterValue",
    "InvalidParameterValueException",
    "InvalidAttributeValue",
    "InvalidAttributeName",
    "InvalidMessageContents",
    "MissingParameter",
    "InvalidAddress",
];

/// Queues on Amazon SQS (or an SQS-compatible emulator). Queue URLs and
/// maximum message sizes are looked up once and cached; a queue that
/// disappears (deleted, emulator restarted) is looked up again.
#[derive(Debug)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    urls: RwLock<HashMap<String, String>>,
    max_sizes: RwLock<HashMap<String, usize>>,
    attempt_timeout: Duration,
}

impl SqsQueue {
    /// Queues through `client`; `attempt_timeout` is the timeout of one
    /// call, which long polls extend by their wait.
    pub fn new(client: aws_sdk_sqs::Client, attempt_timeout: Duration) -> Self {
        Self {
            client,
            urls: RwLock::new(HashMap::new()),
            max_sizes: RwLock::new(HashMap::new()),
            attempt_timeout,
        }
    }

    /// The underlying SDK client.
    pub fn client(&self) -> &aws_sdk_sqs::Client {
        &self.client
    }

    /// The URL of `queue` (cached).
    pub async fn queue_url(&self, queue: &str) -> Result<String> {
        if let Some(url) = self.urls.read().expect("url cache").get(queue) {
            return Ok(url.clone());
        }
        let out = self
            .client
            .get_queue_url()
            .queue_name(queue)
            .send()
            .await
            .map_err(|e| map_queue(classify(e), queue, "GetQueueUrl"))?;
        let url = out
            .queue_url()
            .ok_or_else(|| PortError::Other(format!("GetQueueUrl of `{queue}` returned no URL")))?
            .to_string();
        self.urls
            .write()
            .expect("url cache")
            .insert(queue.to_string(), url.clone());
        Ok(url)
    }

    /// The URL of `queue`, or `None` if it does not exist.
    pub async fn try_queue_url(&self, queue: &str) -> Result<Option<String>> {
        match self.queue_url(queue).await {
            Ok(url) => Ok(Some(url)),
            Err(PortError::NoSuchQueue(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Attributes of `queue` (all of them).
    pub async fn attributes(&self, queue: &str) -> Result<HashMap<QueueAttributeName, String>> {
        let url = self.queue_url(queue).await?;
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .map_err(|e| self.fail(e, queue, "GetQueueAttributes"))?;
        Ok(out.attributes().cloned().unwrap_or_default())
    }

    /// The ARN of `queue`.
    pub async fn queue_arn(&self, queue: &str) -> Result<String> {
        self.attributes(queue)
            .await?
            .remove(&QueueAttributeName::QueueArn)
            .ok_or_else(|| PortError::Other(format!("queue `{queue}` has no QueueArn attribute")))
    }

    /// Deletes `queue`; a missing queue is fine. Returns whether it existed.
    pub async fn delete_queue(&self, queue: &str) -> Result<bool> {
        let Some(url) = self.try_queue_url(queue).await? else {
            return Ok(false);
        };
        let res = self.client.delete_queue().queue_url(&url).send().await;
        self.forget(queue);
        match res {
            Ok(_) => Ok(true),
            Err(e) => {
                let f = classify(e);
                if f.code_is(NO_QUEUE) {
                    Ok(false)
                } else {
                    Err(map_queue(f, queue, "DeleteQueue"))
                }
            }
        }
    }

    /// Deletes up to [`MAX_BATCH`] messages with one `DeleteMessageBatch`;
    /// one result per receipt, in order.
    async fn delete_chunk(&self, queue: &str, receipts: &[&str]) -> Vec<Result<()>> {
        let mut results: Vec<Result<()>> = receipts
            .iter()
            .map(|r| if r.is_empty() { Err(PortError::InvalidReceipt(queue.to_string())) } else { Ok(()) })
            .collect();
        // An entry's id is its index in `receipts`.
        let entries: std::result::Result<Vec<_>, _> = receipts
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.is_empty())
            .map(|(i, r)| DeleteMessageBatchRequestEntry::builder().id(i.to_string()).receipt_handle(*r).build())
            .collect();
        let sent = match entries {
            Ok(entries) if entries.is_empty() => return results,
            Ok(entries) => match self.queue_url(queue).await {
                Ok(url) => self
                    .client
                    .delete_message_batch()
                    .queue_url(&url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .map_err(|e| self.fail(e, queue, "DeleteMessageBatch")),
                Err(e) => Err(e),
            },
            Err(e) => Err(PortError::InvalidArgument(format!("DeleteMessageBatch on queue `{queue}`: {e}"))),
        };
        match sent {
            Ok(out) => {
                for failed in out.failed() {
                    let Some(slot) = failed.id().parse::<usize>().ok().and_then(|i| results.get_mut(i)) else { continue };
                    let failure = Failure {
                        code: Some(failed.code().to_string()),
                        status: None,
                        message: failed.message().unwrap_or_default().to_string(),
                        kind: if failed.sender_fault() { FailureKind::Service } else { FailureKind::Transient },
                    };
                    *slot = Err(map_queue(failure, queue, "DeleteMessageBatch"));
                }
            }
            Err(e) => {
                for slot in results.iter_mut().filter(|r| r.is_ok()) {
                    *slot = Err(e.clone());
                }
            }
        }
        results
    }

    /// Forgets the cached URL and size of `queue`.
    fn forget(&self, queue: &str) {
        self.urls.write().expect("url cache").remove(queue);
        self.max_sizes.write().expect("size cache").remove(queue);
    }

    /// Maps an SDK error of a call on `queue`, forgetting the cached URL
    /// when the queue turned out not to exist.
    fn fail<E>(
        &self,
        err: aws_smithy_runtime_api::client::result::SdkError<E, aws_smithy_runtime_api::http::Response>,
        queue: &str,
        what: &str,
    ) -> PortError
    where
        E: aws_smithy_types::error::metadata::ProvideErrorMetadata
            + std::error::Error
            + Send
            + Sync
            + 'static,
    {
        let f = classify(err);
        if f.code_is(NO_QUEUE) {
            self.forget(queue);
        }
        map_queue(f, queue, what)
    }

    /// The maximum message size of `queue` (cached).
    async fn max_size(&self, queue: &str) -> Result<usize> {
        if let Some(size) = self.max_sizes.read().expect("size cache").get(queue) {
            return Ok(*size);
        }
        let attrs = self.attributes(queue).await?;
        let size = attrs
            .get(&QueueAttributeName::MaximumMessageSize)
            .and_then(|v| v.parse().ok())
            .unwrap_or(*MESSAGE_SIZE_RANGE.end());
        self.max_sizes
            .write()
            .expect("size cache")
            .insert(queue.to_string(), size);
        Ok(size)
    }

    /// The attributes `config` asks for (the DLQ must exist already).
    async fn config_attributes(
        &self,
        queue: &str,
        config: &QueueConfig,
    ) -> Result<HashMap<QueueAttributeName, String>> {
        if !MESSAGE_SIZE_RANGE.contains(&config.max_message_size) {
            return Err(PortError::InvalidArgument(format!(
                "maximum message size of queue `{queue}` must be within 1024..=1048576 bytes, got {}",
                config.max_message_size
            )));
        }
        if config.visibility_timeout > MAX_VISIBILITY {
            return Err(PortError::InvalidArgument(format!(
                "visibility timeout of queue `{queue}` must be at most 12 hours"
            )));
        }
        let mut attrs = HashMap::new();
        attrs.insert(
            QueueAttributeName::MaximumMessageSize,
            config.max_message_size.to_string(),
        );
        attrs.insert(
            QueueAttributeName::VisibilityTimeout,
            config.visibility_timeout.as_secs().to_string(),
        );
        match &config.dead_letter {
            Some((dlq, max_receives)) => {
                if !(1..=1000).contains(max_receives) {
                    return Err(PortError::InvalidArgument(format!(
                        "dead-letter receive count of queue `{queue}` must be within 1..=1000, got {max_receives}"
                    )));
                }
                let arn = self.queue_arn(dlq).await?;
                attrs.insert(
                    QueueAttributeName::RedrivePolicy,
                    redrive_policy(&arn, *max_receives),
                );
            }
            None => {
                attrs.insert(QueueAttributeName::RedrivePolicy, String::new());
            }
        }
        Ok(attrs)
    }
}

/// The `RedrivePolicy` attribute value sending messages to `dlq_arn` after
/// `max_receives` receives.
pub fn redrive_policy(dlq_arn: &str, max_receives: u32) -> String {
    serde_json::json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": max_receives.to_string(),
    })
    .to_string()
}

/// The attributes of `desired` whose value differs from `current`. A
/// `RedrivePolicy` is compared by meaning (SQS rewrites its JSON); an empty
/// desired `RedrivePolicy` means "none".
pub fn attribute_changes(
    current: &HashMap<QueueAttributeName, String>,
    desired: &HashMap<QueueAttributeName, String>,
) -> Vec<(QueueAttributeName, String)> {
    let mut changes: Vec<(QueueAttributeName, String)> = desired
        .iter()
        .filter(|(k, v)| {
            let now = current.get(*k).map(String::as_str).unwrap_or("");
            if **k == QueueAttributeName::RedrivePolicy {
                parse_redrive(now) != parse_redrive(v)
            } else {
                now != v.as_str()
            }
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    changes.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    changes
}

/// `(dead-letter ARN, max receive count)` of a `RedrivePolicy` value.
pub fn parse_redrive(value: &str) -> Option<(String, u64)> {
    let v: serde_json::Value = serde_json::from_str(value).ok()?;
    let arn = v.get("deadLetterTargetArn")?.as_str()?.to_string();
    let count = match v.get("maxReceiveCount")? {
        serde_json::Value::Number(n) => n.as_u64()?,
        serde_json::Value::String(s) => s.parse().ok()?,
        _ => return None,
    };
    Some((arn, count))
}

/// Maps a failure of a call on `queue`.
fn map_queue(f: Failure, queue: &str, what: &str) -> PortError {
    if f.code_is(NO_QUEUE) {
        PortError::NoSuchQueue(queue.to_string())
    } else if f.code_is(BAD_RECEIPT) {
        PortError::InvalidReceipt(queue.to_string())
    } else if f.code_is(BAD_ARGUMENT) {
        PortError::InvalidArgument(format!("{what} on queue `{queue}`: {}", f.message))
    } else if f.code_is(&["AWS.SimpleQueueService.PurgeQueueInProgress", "PurgeQueueInProgress"]) {
        PortError::Unavailable(format!(
            "{what} on queue `{queue}`: a purge is already in progress (SQS allows one per 60 s)"
        ))
    } else {
        f.into_port(&format!("{what} on queue `{queue}`"))
    }
}

/// Checks that `body` only holds characters SQS accepts (#x9, #xA, #xD,
/// #x20-#xD7FF, #xE000-#xFFFD, #x10000-#x10FFFF) and is not empty.
fn check_body(queue: &str, body: &str) -> Result<()> {
    if body.is_empty() {
        return Err(PortError::InvalidArgument(format!(
            "empty message body for queue `{queue}` (SQS needs at least one character)"
        )));
    }
    if let Some(c) = body.chars().find(|&c| {
        !matches!(c, '\u{9}' | '\u{a}' | '\u{d}' | '\u{20}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..='\u{10ffff}')
    }) {
        return Err(PortError::InvalidArgument(format!(
            "message body for queue `{queue}` holds character U+{:04X}, which SQS refuses",
            c as u32
        )));
    }
    Ok(())
}

/// Whole seconds of `d`, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[async_trait]
impl MessageQueue for SqsQueue {
    async fn create_queue(&self, queue: &str, config: &QueueConfig) -> Result<()> {
        let attrs = self.config_attributes(queue, config).await?;
        match self.try_queue_url(queue).await? {
            Some(url) => {
                // Only change what differs: an up-to-date queue needs no
                // SetQueueAttributes permission.
                let current = self.attributes(queue).await?;
                let changes = attribute_changes(&current, &attrs);
                if !changes.is_empty() {
                    let mut req = self.client.set_queue_attributes().queue_url(&url);
                    for (k, v) in changes {
                        req = req.attributes(k, v);
                    }
                    req.send()
                        .await
                        .map_err(|e| self.fail(e, queue, "SetQueueAttributes"))?;
                }
            }
            None => {
                let mut req = self.client.create_queue().queue_name(queue);
                for (k, v) in &attrs {
                    // An empty RedrivePolicy means "none" to SetQueueAttributes
                    // only; leave it out of CreateQueue.
                    if !v.is_empty() {
                        req = req.attributes(k.clone(), v.clone());
                    }
                }
                let out = req
                    .send()
                    .await
                    .map_err(|e| map_queue(classify(e), queue, "CreateQueue"))?;
                if let Some(url) = out.queue_url() {
                    self.urls
                        .write()
                        .expect("url cache")
                        .insert(queue.to_string(), url.to_string());
                }
            }
        }
        self.max_sizes
            .write()
            .expect("size cache")
            .insert(queue.to_string(), config.max_message_size);
        Ok(())
    }

    async fn send(&self, queue: &str, body: &str) -> Result<String> {
        let limit = self.max_size(queue).await?;
        if body.len() > limit {
            return Err(PortError::MessageTooLarge {
                queue: queue.to_string(),
                size: body.len(),
                limit,
            });
        }
        check_body(queue, body)?;
        let url = self.queue_url(queue).await?;
        let out = self
            .client
            .send_message()
            .queue_url(&url)
            .message_body(body)
            .send()
            .await
            .map_err(|e| self.fail(e, queue, "SendMessage"))?;
        Ok(out.message_id().unwrap_or_default().to_string())
    }

    async fn receive(
        &self,
        queue: &str,
        max: usize,
        wait: Duration,
        visibility: Option<Duration>,
    ) -> Result<Vec<Message>> {
        facefleet_ports::validate_batch(max)?;
        let wait_secs = ceil_secs(wait.min(MAX_WAIT));
        let url = self.queue_url(queue).await?;
        let mut req = self
            .client
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(max as i32)
            .wait_time_seconds(wait_secs as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount);
        if let Some(v) = visibility {
            if v > MAX_VISIBILITY {
                return Err(PortError::InvalidArgument(
                    "visibility timeout must be at most 12 hours".to_string(),
                ));
            }
            req = req.visibility_timeout(ceil_secs(v) as i32);
        }
        // The long poll must not be cut short by the attempt timeout.
        let timeouts = aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
            .operation_attempt_timeout(self.attempt_timeout + Duration::from_secs(wait_secs))
            .build();
        let out = req
            .customize()
            .config_override(aws_sdk_sqs::config::Builder::new().timeout_config(timeouts))
            .send()
            .await
            .map_err(|e| self.fail(e, queue, "ReceiveMessage"))?;
        Ok(out
            .messages()
            .iter()
            .map(|m| Message {
                id: m.message_id().unwrap_or_default().to_string(),
                body: m.body().unwrap_or_default().to_string(),
                receipt: m.receipt_handle().unwrap_or_default().to_string(),
                receive_count: m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1),
            })
            .collect())
    }

    async fn delete(&self, queue: &str, receipt: &str) -> Result<()> {
        if receipt.is_empty() {
            return Err(PortError::InvalidReceipt(queue.to_string()));
        }
        let url = self.queue_url(queue).await?;
        self.client
            .delete_message()
            .queue_url(&url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| self.fail(e, queue, "DeleteMessage"))?;
        Ok(())
    }

    /// One `DeleteMessageBatch` per 10 receipts (IAM: `sqs:DeleteMessage`
    /// allows it; batch actions have no permission of their own).
    async fn delete_batch(&self, queue: &str, receipts: &[&str]) -> Vec<Result<()>> {
        let mut results = Vec::with_capacity(receipts.len());
        for chunk in receipts.chunks(MAX_BATCH) {
            results.extend(self.delete_chunk(queue, chunk).await);
        }
        results
    }

    async fn change_visibility(&self, queue: &str, receipt: &str, timeout: Duration) -> Result<()> {
        if receipt.is_empty() {
            return Err(PortError::InvalidReceipt(queue.to_string()));
        }
        if timeout > MAX_VISIBILITY {
            return Err(PortError::InvalidArgument(
                "visibility timeout must be at most 12 hours".to_string(),
            ));
        }
        let url = self.queue_url(queue).await?;
        self.client
            .change_message_visibility()
            .queue_url(&url)
            .receipt_handle(receipt)
            .visibility_timeout(ceil_secs(timeout) as i32)
            .send()
            .await
            .map_err(|e| self.fail(e, queue, "ChangeMessageVisibility"))?;
        Ok(())
    }

    async fn depth(&self, queue: &str) -> Result<QueueDepth> {
        let url = self.queue_url(queue).await?;
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|e| self.fail(e, queue, "GetQueueAttributes"))?;
        let get = |name: &QueueAttributeName| -> u64 {
            out.attributes()
                .and_then(|a| a.get(name))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok(QueueDepth {
            visible: get(&QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: get(&QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        })
    }

    async fn purge(&self, queue: &str) -> Result<()> {
        let url = self.queue_url(queue).await?;
        self.client
            .purge_queue()
            .queue_url(&url)
            .send()
            .await
            .map_err(|e| self.fail(e, queue, "PurgeQueue"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_sqs_refuses() {
        assert!(check_body("q", "{\"a\":1}\n\té").is_ok());
        assert!(check_body("q", "").is_err());
        assert!(check_body("q", "a\u{0}b").is_err());
        assert!(check_body("q", "a\u{fffe}").is_err());
    }

    #[test]
    fn rounding_and_policy() {
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        let p: serde_json::Value = serde_json::from_str(&redrive_policy("arn:x", 3)).unwrap();
        assert_eq!(p["deadLetterTargetArn"], "arn:x");
        assert_eq!(p["maxReceiveCount"], "3");
    }
}
