//! A queue on moto's SQS (the results queue, the exports queue), delivered
//! to its function as Lambda's event source mapping would: up to ten messages a batch as the
//! `SqsEvent` Lambda builds, the ones the function reports failed left on
//! the queue (here visible again at once, so a local drain does not wait out
//! the visibility timeout), the rest deleted. The queue's redrive policy
//! moves a message that keeps failing to the dead-letter queue.

use anyhow::{Context, Result};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use ledger_service::DynamoLedger;

/// Messages per invocation, as the template's event source mapping says.
pub const BATCH_SIZE: i32 = 10;

pub struct QueuePoller {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

/// What a drain delivered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delivered {
    pub batches: usize,
    pub messages: usize,
    pub failed: usize,
}

impl QueuePoller {
    pub fn new(config: &aws_config::SdkConfig, queue_url: impl Into<String>) -> QueuePoller {
        QueuePoller {
            client: aws_sdk_sqs::Client::new(config),
            queue_url: queue_url.into(),
        }
    }

    /// One batch to the results function: received, handed over, settled.
    /// `None` when the queue had nothing.
    pub async fn deliver_batch(&self, ledger: &DynamoLedger) -> Result<Option<(usize, usize)>> {
        self.deliver_batch_to(BATCH_SIZE, |event| results::handle(ledger, event))
            .await
    }

    /// One batch of up to `batch_size` to `function`.
    pub async fn deliver_batch_to<F, R>(&self, batch_size: i32, function: F) -> Result<Option<(usize, usize)>>
    where
        F: Fn(SqsEvent) -> R,
        R: std::future::Future<Output = SqsBatchResponse>,
    {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(batch_size)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .context("receiving results")?;
        let received = out.messages.unwrap_or_default();
        if received.is_empty() {
            return Ok(None);
        }
        let mut event = SqsEvent::default();
        for m in &received {
            let mut message = SqsMessage::default();
            message.message_id = m.message_id.clone();
            message.receipt_handle = m.receipt_handle.clone();
            message.body = m.body.clone();
            message.event_source = Some("aws:sqs".into());
            message.attributes = m
                .attributes
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k.as_str().to_string(), v))
                .collect();
            event.records.push(message);
        }
        let response = function(event).await;
        let failed: Vec<&str> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        let mut done = Vec::new();
        for m in &received {
            let (Some(id), Some(handle)) = (m.message_id.as_deref(), m.receipt_handle.as_deref()) else {
                continue;
            };
            if failed.contains(&id) {
                self.client
                    .change_message_visibility()
                    .queue_url(&self.queue_url)
                    .receipt_handle(handle)
                    .visibility_timeout(0)
                    .send()
                    .await
                    .context("returning a failed result")?;
            } else {
                done.push(
                    DeleteMessageBatchRequestEntry::builder()
                        .id(id)
                        .receipt_handle(handle)
                        .build()
                        .context("delete entry")?,
                );
            }
        }
        if !done.is_empty() {
            self.client
                .delete_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(done))
                .send()
                .await
                .context("deleting charged results")?;
        }
        Ok(Some((received.len(), failed.len())))
    }

    /// Delivers batches until the queue is empty (messages that keep failing
    /// end in the dead-letter queue on the way).
    pub async fn drain(&self, ledger: &DynamoLedger) -> Result<Delivered> {
        self.drain_to(BATCH_SIZE, |event| results::handle(ledger, event)).await
    }

    /// [`QueuePoller::drain`] to any function.
    pub async fn drain_to<F, R>(&self, batch_size: i32, function: F) -> Result<Delivered>
    where
        F: Fn(SqsEvent) -> R,
        R: std::future::Future<Output = SqsBatchResponse>,
    {
        let mut delivered = Delivered::default();
        while let Some((messages, failed)) = self.deliver_batch_to(batch_size, &function).await? {
            delivered.batches += 1;
            delivered.messages += messages;
            delivered.failed += failed;
        }
        Ok(delivered)
    }
}
