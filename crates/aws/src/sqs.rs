//! The queue port on Amazon SQS (standard or FIFO).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName,
    MessageSystemAttributeNameForSends, MessageSystemAttributeValue, QueueAttributeName,
    SendMessageBatchRequestEntry,
};
use bytes::Bytes;
use hookline_core::message::{attr, OutboundMessage};
use hookline_core::ports::{
    BatchLimits, Delivery, MoveState, MoveStatus, NativeRedrive, PortError, Queue, QueueCounts,
};

use crate::errors::{classify, classify_code};

/// SQS limits on one batch call: 10 entries, and 1 MiB for the whole
/// payload (bodies and attributes; the limit since August 2025, which is also
/// each message's). The coalescer starts a new batch before either is passed.
pub const SQS_BATCH_ENTRIES: usize = 10;
pub const SQS_BATCH_BYTES: usize = 1_048_576;
/// The largest message SQS accepts (body and attributes), and what the
/// stack sets as the queues' `MaximumMessageSize`.
pub const SQS_MAX_MESSAGE_BYTES: usize = 1_048_576;

/// One SQS queue.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
    fifo: bool,
}

impl SqsQueue {
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>) -> Self {
        let url = url.into();
        Self {
            fifo: url.ends_with(".fifo"),
            client,
            url,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Moves every DLQ message to `destination_arn` with SQS's native
    /// redrive (`StartMessageMoveTask`); returns the task handle. The
    /// destination is named: messages the worker dead-lettered itself were
    /// sent, not redriven, so SQS knows no source queue to return them to.
    pub async fn start_message_move(
        &self,
        source_arn: &str,
        destination_arn: &str,
        rate: Option<i32>,
    ) -> Result<String, PortError> {
        let out = self
            .client
            .start_message_move_task()
            .source_arn(source_arn)
            .destination_arn(destination_arn)
            .set_max_number_of_messages_per_second(rate)
            .send()
            .await
            .map_err(|e| classify("StartMessageMoveTask", e))?;
        Ok(out.task_handle.unwrap_or_default())
    }

    /// Status of the most recent native redrive from `source_arn`.
    pub async fn message_move_status(
        &self,
        source_arn: &str,
    ) -> Result<Option<MoveStatus>, PortError> {
        let out = self
            .client
            .list_message_move_tasks()
            .source_arn(source_arn)
            .max_results(1)
            .send()
            .await
            .map_err(|e| classify("ListMessageMoveTasks", e))?;
        Ok(out.results.unwrap_or_default().into_iter().next().map(|t| {
            let state = match t.status.as_deref().unwrap_or_default() {
                "COMPLETED" => MoveState::Completed,
                "FAILED" => MoveState::Failed,
                "CANCELLING" => MoveState::Cancelling,
                "CANCELLED" => MoveState::Cancelled,
                _ => MoveState::Running,
            };
            MoveStatus {
                state,
                moved: u64::try_from(t.approximate_number_of_messages_moved).unwrap_or(0),
                total: t
                    .approximate_number_of_messages_to_move
                    .and_then(|n| u64::try_from(n).ok()),
            }
        }))
    }

    /// The queue's ARN.
    pub async fn arn(&self) -> Result<String, PortError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| classify(&format!("GetQueueAttributes on queue {}", self.url), e))?;
        out.attributes
            .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
            .ok_or_else(|| PortError::permanent("queue has no ARN".to_owned()))
    }
}

/// SQS's native redrive from a dead-letter queue to its main queue.
#[derive(Debug, Clone)]
pub struct SqsRedrive {
    pub dlq: SqsQueue,
    pub queue: SqsQueue,
}

#[async_trait]
impl NativeRedrive for SqsRedrive {
    fn source(&self) -> &str {
        self.dlq.url()
    }

    async fn start(&self, rate: Option<u32>) -> Result<String, PortError> {
        let source = self.dlq.arn().await?;
        // The main queue by name: the worker's own dead-letters were sent,
        // not redriven, so SQS knows no source queue for them.
        let destination = self.queue.arn().await?;
        let rate = rate.and_then(|r| i32::try_from(r).ok());
        self.dlq
            .start_message_move(&source, &destination, rate)
            .await
    }

    async fn status(&self) -> Result<Option<MoveStatus>, PortError> {
        let source = self.dlq.arn().await?;
        self.dlq.message_move_status(&source).await
    }
}

fn string_attr(value: &str) -> Result<MessageAttributeValue, PortError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|e| PortError::permanent(format!("message attribute: {e}")))
}

fn entry(
    i: usize,
    m: &OutboundMessage,
    fifo: bool,
) -> Result<SendMessageBatchRequestEntry, PortError> {
    // Checked here, so that an oversized message fails alone instead of
    // SQS refusing the whole batch with its neighbours.
    if m.wire_size() > SQS_MAX_MESSAGE_BYTES {
        return Err(PortError::permanent(format!(
            "message of {} bytes is over the SQS limit of {SQS_MAX_MESSAGE_BYTES}",
            m.wire_size()
        )));
    }
    let body = std::str::from_utf8(&m.body)
        .map_err(|_| PortError::permanent("SQS message bodies must be UTF-8".to_owned()))?;
    let mut b = SendMessageBatchRequestEntry::builder()
        .id(i.to_string())
        .message_body(body);
    for (k, v) in &m.attributes {
        if k == attr::TRACE_HEADER {
            b = b.message_system_attributes(
                MessageSystemAttributeNameForSends::AwsTraceHeader,
                MessageSystemAttributeValue::builder()
                    .data_type("String")
                    .string_value(v)
                    .build()
                    .map_err(|e| PortError::permanent(format!("trace header: {e}")))?,
            );
        } else {
            b = b.message_attributes(k, string_attr(v)?);
        }
    }
    if fifo {
        b = b
            .message_group_id(&m.group_id)
            .message_deduplication_id(&m.dedup_id);
    }
    b.build()
        .map_err(|e| PortError::permanent(format!("SendMessageBatch entry: {e}")))
}

#[async_trait]
impl Queue for SqsQueue {
    fn system(&self) -> &'static str {
        "aws_sqs"
    }

    fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            max_entries: SQS_BATCH_ENTRIES,
            max_bytes: SQS_BATCH_BYTES,
        }
    }

    async fn send_batch(&self, batch: &[OutboundMessage]) -> Vec<Result<(), PortError>> {
        let mut results: Vec<Result<(), PortError>> = Vec::with_capacity(batch.len());
        // Which results still wait for SQS's answer (the entries sent).
        let mut sent_entries: Vec<usize> = Vec::with_capacity(batch.len());
        let mut entries = Vec::with_capacity(batch.len());
        for (i, m) in batch.iter().enumerate() {
            match entry(i, m, self.fifo) {
                Ok(e) => {
                    entries.push(e);
                    sent_entries.push(i);
                    results.push(Err(PortError::transient(
                        "SQS gave no answer for this entry",
                    )));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if entries.is_empty() {
            return results;
        }
        let sent = self
            .client
            .send_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await;
        match sent {
            Err(e) => {
                let err = classify(&format!("SendMessageBatch on queue {}", self.url), e);
                for i in sent_entries {
                    if let Some(r) = results.get_mut(i) {
                        *r = Err(err.clone());
                    }
                }
            }
            Ok(out) => {
                for ok in out.successful {
                    if let Some(r) = ok.id.parse::<usize>().ok().and_then(|i| results.get_mut(i)) {
                        *r = Ok(());
                    }
                }
                for failed in out.failed {
                    let text = format!(
                        "SendMessageBatch entry {}: {} {}",
                        failed.id,
                        failed.code,
                        failed.message.unwrap_or_default()
                    );
                    let err = if failed.sender_fault {
                        classify_code(&failed.code, text)
                    } else {
                        PortError::transient(text)
                    };
                    if let Some(r) = failed
                        .id
                        .parse::<usize>()
                        .ok()
                        .and_then(|i| results.get_mut(i))
                    {
                        *r = Err(err);
                    }
                }
            }
        }
        results
    }

    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Delivery>, PortError> {
        let wait_secs = i32::try_from(wait.as_secs().min(20)).unwrap_or(20);
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(i32::try_from(max.clamp(1, 10)).unwrap_or(10))
            .wait_time_seconds(wait_secs)
            .visibility_timeout(i32::try_from(visibility.as_secs().min(43_200)).unwrap_or(30))
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .message_system_attribute_names(MessageSystemAttributeName::AwsTraceHeader)
            .customize()
            .config_override(
                aws_sdk_sqs::config::Builder::default().timeout_config(
                    aws_config::timeout::TimeoutConfig::builder()
                        .operation_attempt_timeout(Duration::from_secs(
                            u64::try_from(wait_secs).unwrap_or(20) + 5,
                        ))
                        .operation_timeout(Duration::from_secs(
                            u64::try_from(wait_secs).unwrap_or(20) * 2 + 10,
                        ))
                        .build(),
                ),
            )
            .send()
            .await
            .map_err(|e| classify(&format!("ReceiveMessage on queue {}", self.url), e))?;
        let mut deliveries = Vec::new();
        for m in out.messages.unwrap_or_default() {
            let system = m.attributes.unwrap_or_default();
            let number = |name: MessageSystemAttributeName| -> Option<i64> {
                system.get(&name).and_then(|v| v.parse().ok())
            };
            let mut attributes: BTreeMap<String, String> = m
                .message_attributes
                .unwrap_or_default()
                .into_iter()
                .filter(|(k, _)| k != attr::TRACE_HEADER)
                .filter_map(|(k, v)| v.string_value.map(|s| (k, s)))
                .collect();
            if let Some(trace) = system.get(&MessageSystemAttributeName::AwsTraceHeader) {
                attributes.insert(attr::TRACE_HEADER.to_owned(), trace.clone());
            }
            // A message an erasure's scan put back keeps its first arrival.
            let sent_at_ms = attributes
                .get(attr::SENT_AT)
                .and_then(|v| v.parse().ok())
                .or_else(|| number(MessageSystemAttributeName::SentTimestamp))
                .unwrap_or(0);
            let (Some(receipt), Some(message_id)) = (m.receipt_handle, m.message_id) else {
                continue;
            };
            deliveries.push(Delivery {
                message_id,
                receipt,
                body: Bytes::from(m.body.unwrap_or_default()),
                attributes,
                receive_count: number(MessageSystemAttributeName::ApproximateReceiveCount)
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(1),
                sent_at_ms,
                group_id: system
                    .get(&MessageSystemAttributeName::MessageGroupId)
                    .cloned(),
            });
        }
        Ok(deliveries)
    }

    async fn delete_batch(&self, receipts: &[String]) -> Vec<Result<(), PortError>> {
        // One request: callers batch through the delete coalescer, which
        // keeps to `batch_limits()`.
        if receipts.len() > SQS_BATCH_ENTRIES {
            let err = PortError::permanent(format!(
                "DeleteMessageBatch takes at most {SQS_BATCH_ENTRIES} entries, not {}",
                receipts.len()
            ));
            return vec![Err(err); receipts.len()];
        }
        let mut results: Vec<Result<(), PortError>> = vec![Ok(()); receipts.len()];
        let entries: Result<Vec<_>, _> = receipts
            .iter()
            .enumerate()
            .map(|(i, r)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(r)
                    .build()
            })
            .collect();
        let entries = match entries {
            Ok(entries) if !entries.is_empty() => entries,
            Ok(_) => return results,
            Err(e) => {
                let err = PortError::permanent(format!("DeleteMessageBatch entry: {e}"));
                return vec![Err(err); receipts.len()];
            }
        };
        let out = self
            .client
            .delete_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await;
        match out {
            Err(e) => {
                let err = classify(&format!("DeleteMessageBatch on queue {}", self.url), e);
                results.iter_mut().for_each(|r| *r = Err(err.clone()));
            }
            Ok(out) => {
                for failed in out.failed {
                    let slot = failed
                        .id
                        .parse::<usize>()
                        .ok()
                        .and_then(|i| results.get_mut(i));
                    if let Some(r) = slot {
                        let text = format!(
                            "DeleteMessageBatch entry: {} {}",
                            failed.code,
                            failed.message.unwrap_or_default()
                        );
                        *r = Err(if failed.sender_fault {
                            PortError::permanent(text)
                        } else {
                            PortError::transient(text)
                        });
                    }
                }
            }
        }
        results
    }

    async fn set_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), PortError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(i32::try_from(timeout.as_secs().min(43_200)).unwrap_or(43_200))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(&format!("ChangeMessageVisibility on queue {}", self.url), e))
    }

    async fn counts(&self) -> Result<QueueCounts, PortError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|e| classify(&format!("GetQueueAttributes on queue {}", self.url), e))?;
        let attrs = out.attributes.unwrap_or_default();
        let get = |name: QueueAttributeName| -> u64 {
            attrs.get(&name).and_then(|v| v.parse().ok()).unwrap_or(0)
        };
        Ok(QueueCounts {
            waiting: get(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        })
    }
}
