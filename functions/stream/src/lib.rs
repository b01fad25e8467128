//! The table's stream consumer: derived data comes from here, never from
//! extra writes on the spend path. It is the ledger's sequencer: each
//! account change names the entry it wrote, and its new image says where
//! that entry sits (the account's count of entries) and the balances right
//! after it. With the old image's balances (right before it) it also finds
//! the alerts the entry crossed and notifies them (in-app, and an event on
//! the bus for email). Each new entry is added to its day's usage rollup,
//! once (the entry is marked in the same transaction).
//!
//! Streams deliver each item's changes in order and at least once; placing
//! a change twice writes the same, so redelivery and reordering across
//! batches are harmless. A record that fails is reported (partial batch
//! response): Lambda retries from it, and the batch's earlier records stay
//! done.

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use aws_sdk_dynamodb::types::AttributeValue;
use ledger_service::notify::notify_crossings;
use ledger_service::{DynamoLedger, ServiceError};
use ledger_store::items::{
    account_from_item, change_time, entry_from_item, is_entry_sk, org_of_image, placement_of_account_image, Item,
    ACCOUNT_SK,
};
use ledger_store::EventBus;
use tracing::{error, info_span, Instrument};

pub async fn handle<B: EventBus>(ledger: &DynamoLedger, bus: &B, event: Event) -> DynamoDbEventResponse {
    let mut response = DynamoDbEventResponse::default();
    for record in event.records {
        let id = record.change.sequence_number.clone();
        let span = info_span!("stream record", sequence = id.as_deref().unwrap_or_default());
        // Boxed: the record's future nests the store's, and an unboxed chain
        // overflows the compiler's layout depth on a clean build.
        if let Err(e) = Box::pin(process(ledger, bus, &record).instrument(span)).await {
            error!(error = %e, "stream record failed; the batch resumes from it");
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = id;
            response.batch_item_failures.push(failure);
            // Records of one item must stay in order: stop at the first failure.
            break;
        }
    }
    response
}

fn image(item: &serde_dynamo::Item) -> Item {
    item.clone()
        .into_inner()
        .into_iter()
        .map(|(k, v)| (k, AttributeValue::from(v)))
        .collect()
}

async fn process<B: EventBus>(ledger: &DynamoLedger, bus: &B, record: &EventRecord) -> Result<(), ServiceError> {
    let new = image(&record.change.new_image);
    let sk = match new.get("sk") {
        Some(AttributeValue::S(sk)) => sk.as_str(),
        _ => return Ok(()),
    };
    // A new ledger entry (a kept refusal has no kind): into its day's rollup.
    if record.event_name == "INSERT" && new.contains_key("kind") && is_entry_sk(sk) {
        let org = org_of_image(&new)?;
        ledger.roll_up(&org, sk, &entry_from_item(&new)?).await?;
        return Ok(());
    }
    if sk != ACCOUNT_SK || !matches!(record.event_name.as_str(), "INSERT" | "MODIFY") {
        return Ok(());
    }
    let (org, placements) = placement_of_account_image(&new)?;
    let at = change_time(&new)?;
    let account = account_from_item(&new)?;
    // The balances right before the change (none before the account existed).
    let old = image(&record.change.old_image);
    let mut before = match old.is_empty() {
        true => None,
        false => Some(account_from_item(&old)?.balances()),
    };
    for (entry_sk, placement) in placements {
        ledger.place(&org, &entry_sk, &placement, at).await?;
        if let Some(before) = &before {
            let crossings = account.crossings(before, &placement.balance_after);
            if !crossings.is_empty() {
                let entry = (placement.seq, entry_sk.as_str());
                notify_crossings(ledger.accounts(), bus, &org, entry, crossings, ledger.now()).await?;
            }
        }
        before = Some(placement.balance_after);
    }
    Ok(())
}
