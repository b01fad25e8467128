//! The table's stream on DynamoDB Local, delivered to the stream function as
//! Lambda's event source mapping would: every shard read in order, records
//! handed over as the `dynamodb::Event` Lambda builds, a batch at a time.

use std::collections::BTreeMap;

use anyhow::{anyhow, Context, Result};
use aws_lambda_events::event::dynamodb::{Event, EventRecord, StreamRecord, StreamViewType};
use aws_sdk_dynamodbstreams::types::{Record, ShardIteratorType};
use ledger_service::DynamoLedger;

/// Records per invocation, as the template's event source mapping says.
pub const BATCH_SIZE: usize = 100;

pub struct StreamPoller {
    client: aws_sdk_dynamodbstreams::Client,
    stream_arn: String,
    /// Each shard's next iterator; `None` once a closed shard is read to its end.
    shards: BTreeMap<String, Option<String>>,
}

impl StreamPoller {
    pub async fn for_table(config: &aws_config::SdkConfig, table: &str) -> Result<StreamPoller> {
        let described = aws_sdk_dynamodb::Client::new(config)
            .describe_table()
            .table_name(table)
            .send()
            .await
            .context("describing the table")?;
        let stream_arn = described
            .table
            .and_then(|t| t.latest_stream_arn)
            .ok_or_else(|| anyhow!("table {table} has no stream (StreamSpecification in template.yaml)"))?;
        Ok(StreamPoller {
            client: aws_sdk_dynamodbstreams::Client::new(config),
            stream_arn,
            shards: BTreeMap::new(),
        })
    }

    /// Every record written since the last poll, shard by shard in order.
    pub async fn poll(&mut self) -> Result<Vec<EventRecord>> {
        let description = self
            .client
            .describe_stream()
            .stream_arn(&self.stream_arn)
            .send()
            .await
            .map_err(sdk)?
            .stream_description
            .ok_or_else(|| anyhow!("stream without a description"))?;
        for shard in description.shards.unwrap_or_default() {
            let Some(id) = shard.shard_id else { continue };
            if !self.shards.contains_key(&id) {
                let iterator = self
                    .client
                    .get_shard_iterator()
                    .stream_arn(&self.stream_arn)
                    .shard_id(&id)
                    .shard_iterator_type(ShardIteratorType::TrimHorizon)
                    .send()
                    .await
                    .map_err(sdk)?
                    .shard_iterator;
                self.shards.insert(id, iterator);
            }
        }
        let mut records = Vec::new();
        for next in self.shards.values_mut() {
            while let Some(iterator) = next.take() {
                let out = self
                    .client
                    .get_records()
                    .shard_iterator(iterator)
                    .send()
                    .await
                    .map_err(sdk)?;
                let got = out.records.unwrap_or_default();
                let empty = got.is_empty();
                records.extend(got.into_iter().map(event_record));
                *next = out.next_shard_iterator;
                // An open shard hands back an iterator even when caught up.
                if empty {
                    break;
                }
            }
        }
        Ok(records)
    }

    /// Hands everything the stream holds to the stream function until the
    /// stream is caught up; returns how many records were delivered.
    pub async fn drain<B: ledger_store::EventBus>(&mut self, ledger: &DynamoLedger, bus: &B) -> Result<usize> {
        let mut delivered = 0;
        loop {
            let records = self.poll().await?;
            if records.is_empty() {
                return Ok(delivered);
            }
            for batch in records.chunks(BATCH_SIZE) {
                let mut event = Event::default();
                event.records = batch.to_vec();
                let response = stream::handle(ledger, bus, event).await;
                if !response.batch_item_failures.is_empty() {
                    return Err(anyhow!(
                        "the stream function failed records: {:?}",
                        response.batch_item_failures
                    ));
                }
                delivered += batch.len();
            }
        }
    }
}

fn sdk<E: std::error::Error + Send + Sync + 'static>(e: E) -> anyhow::Error {
    anyhow!("{}", aws_sdk_dynamodbstreams::error::DisplayErrorContext(e))
}

fn item(
    image: Option<std::collections::HashMap<String, aws_sdk_dynamodbstreams::types::AttributeValue>>,
) -> serde_dynamo::Item {
    let map: std::collections::HashMap<String, serde_dynamo::AttributeValue> = image
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, serde_dynamo::AttributeValue::from(v)))
        .collect();
    serde_dynamo::Item::from(map)
}

/// A stream record as Lambda hands it to a function.
fn event_record(record: Record) -> EventRecord {
    let mut change = StreamRecord::default();
    if let Some(d) = record.dynamodb {
        change.keys = item(d.keys);
        change.new_image = item(d.new_image);
        change.old_image = item(d.old_image);
        change.sequence_number = d.sequence_number;
        change.size_bytes = d.size_bytes.unwrap_or_default();
        change.stream_view_type = Some(StreamViewType::NewAndOldImages);
    }
    let mut event = EventRecord::default();
    event.event_id = record.event_id.unwrap_or_default();
    event.event_name = record.event_name.map(|n| n.as_str().to_string()).unwrap_or_default();
    event.aws_region = record.aws_region.unwrap_or_default();
    event.event_source = Some("aws:dynamodb".into());
    event.change = change;
    event
}
