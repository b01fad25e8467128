//! The DynamoDB adapter: conditional writes, one transaction per change,
//! and the queries the history and the renewal sweep read. The item layout
//! is [`crate::items`].

use std::collections::HashMap;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, Delete, KeysAndAttributes, Put, ReturnValuesOnConditionCheckFailure,
    TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, NaiveDate, Utc};
use ledger_domain::entry::Placement;
use ledger_domain::{
    Account, ActionId, CampaignId, HistoryScope, IdempotencyKey, LedgerEntry, MeterId, OrgId, Subject, Unit, UnitState,
    Unlock,
};

use crate::items::{
    self, account_from_item, account_item, account_update_with, answer_item, claim_from_item, claim_item,
    entry_from_item, entry_item, entry_sk, entry_sk_of_id, held_from_item, held_item, held_sk, instant,
    kept_request_from_item, key, note_from_item, note_item, note_sk, org_pk, placement_attrs, request_sk, rolled_sk,
    rollup_from_item, rollup_sk, slot_sk, unit_from_item, unit_item, unit_of_key, unit_prefix, unit_shard, unit_sk,
    unlock_from_item, unlock_item, unlock_sk, Attrs, Item, ACCOUNT_SK, LEDGER_BY_ACTION_INDEX,
    LEDGER_BY_CAMPAIGN_INDEX, LEDGER_BY_USER_INDEX, LEDGER_INDEX, RENEWALS_INDEX, RENEWAL_SHARDS, RESERVATIONS_INDEX,
};
use crate::port::{
    AccountStore, Commit, CommitError, DayRollup, DuePage, EntryKey, HeldResult, HistoryKey, HistoryPage,
    HistoryPosition, HistoryQuery, HistoryStore, Kept, KeptRequest, Notification, NotificationStore, Receipt,
    RenewalIndex, RequestStore, ResultStore, RollupStore, SideWrite, StoreError,
};

/// Due index entries read to find one organization's overdue units.
const OVERDUE_READ: i32 = 100;

#[derive(Clone, Debug)]
pub struct DynamoLedgerStore {
    pub(crate) client: Client,
    pub(crate) table: String,
}

impl DynamoLedgerStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoLedgerStore {
            client,
            table: table.into(),
        }
    }
}

fn request_error<E: std::fmt::Debug + Transient>(e: E) -> StoreError {
    match e.transient() {
        true => StoreError::Unavailable(format!("{e:?}")),
        false => StoreError::Request(format!("{e:?}")),
    }
}

/// Whether a failed request may succeed later as it is: DynamoDB throttled
/// it past the SDK's own retries, or no answer came. The caller is told to
/// retry (nothing was decided on it), not that something broke.
trait Transient {
    fn transient(&self) -> bool;
}

impl<E: aws_sdk_dynamodb::error::ProvideErrorMetadata, R> Transient for SdkError<E, R> {
    fn transient(&self) -> bool {
        use aws_sdk_dynamodb::error::ProvideErrorMetadata;
        matches!(self, SdkError::TimeoutError(_) | SdkError::DispatchFailure(_)) || throttled(self.code())
    }
}

fn throttled(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "ThrottlingException"
                | "ProvisionedThroughputExceededException"
                | "RequestLimitExceeded"
                | "InternalServerError"
        )
    )
}

/// An operation's error, already taken out of its `SdkError`.
macro_rules! transient_by_code {
    ($($error:ty),*) => {$(
        impl Transient for $error {
            fn transient(&self) -> bool {
                throttled(aws_sdk_dynamodb::error::ProvideErrorMetadata::code(self))
            }
        }
    )*};
}

transient_by_code!(
    TransactWriteItemsError,
    PutItemError,
    aws_sdk_dynamodb::types::error::TransactionCanceledException
);

impl Transient for aws_sdk_dynamodb::error::BuildError {
    fn transient(&self) -> bool {
        false
    }
}

fn conditional_put(
    table: &str,
    item: Item,
    condition: &str,
    values: Option<Item>,
) -> Result<TransactWriteItem, StoreError> {
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression(condition)
        .set_expression_attribute_values(values)
        // A failed condition hands back the item: the fresh account state
        // for the retry, or the original entry for the replay, at no extra read.
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .build()
        .map_err(request_error)?;
    Ok(TransactWriteItem::builder().put(put).build())
}

impl DynamoLedgerStore {
    /// Up to 100 items by key in one BatchGetItem, asking again for keys
    /// it leaves unprocessed under load.
    async fn batch_get(&self, keys: KeysAndAttributes) -> Result<Vec<Item>, StoreError> {
        let mut request = HashMap::from([(self.table.clone(), keys)]);
        let mut items = Vec::new();
        for _ in 0..5 {
            let out = self
                .client
                .batch_get_item()
                .set_request_items(Some(request))
                .send()
                .await
                .map_err(request_error)?;
            items.extend(
                out.responses
                    .unwrap_or_default()
                    .remove(&self.table)
                    .unwrap_or_default(),
            );
            match out.unprocessed_keys {
                Some(left) if !left.is_empty() => request = left,
                _ => return Ok(items),
            }
        }
        Err(StoreError::Request("batch read left keys unprocessed".into()))
    }

    /// The items of several subjects (unlocks, units, slots), named by
    /// `sk`, read consistently 100 keys a call; those that exist, with the
    /// subject each belongs to.
    async fn subject_items(
        &self,
        org: &OrgId,
        subjects: &[Subject],
        sk: impl Fn(&Subject) -> String,
    ) -> Result<Vec<(Subject, Item)>, StoreError> {
        let mut wanted: Vec<&Subject> = subjects.iter().collect();
        wanted.sort();
        wanted.dedup();
        let mut found = Vec::new();
        for chunk in wanted.chunks(100) {
            let mut keys = KeysAndAttributes::builder().consistent_read(true);
            for subject in chunk {
                keys = keys.keys(key(org_pk(org), sk(subject)));
            }
            for item in self.batch_get(keys.build().map_err(request_error)?).await? {
                let item_sk = items::Attrs::of(&item, "subject item").s("sk")?.to_string();
                if let Some(subject) = chunk.iter().find(|s| sk(s) == item_sk) {
                    found.push(((*subject).clone(), item));
                }
            }
        }
        Ok(found)
    }

    /// One item, read strongly consistent.
    async fn consistent_get(&self, pk: String, sk: String) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(request_error)?;
        Ok(out.item)
    }
}

impl AccountStore for DynamoLedgerStore {
    async fn load_account(&self, org: &OrgId) -> Result<Option<Account>, StoreError> {
        self.consistent_get(org_pk(org), ACCOUNT_SK.into())
            .await?
            .as_ref()
            .map(account_from_item)
            .transpose()
    }

    async fn load_account_and_request(
        &self,
        org: &OrgId,
        request_key: &IdempotencyKey,
    ) -> Result<(Option<Account>, Option<KeptRequest>), StoreError> {
        let keys = KeysAndAttributes::builder()
            .keys(key(org_pk(org), ACCOUNT_SK.into()))
            .keys(key(org_pk(org), request_sk(request_key)))
            .consistent_read(true)
            .build()
            .map_err(request_error)?;
        let (mut account, mut kept) = (None, None);
        for item in self.batch_get(keys).await? {
            let is_account = matches!(item.get("sk"), Some(AttributeValue::S(s)) if s == ACCOUNT_SK);
            if is_account {
                account = Some(account_from_item(&item)?);
            } else {
                kept = kept_request_from_item(&item)?;
            }
        }
        Ok((account, kept))
    }

    async fn commit(&self, commit: Commit<'_>) -> Result<(), CommitError> {
        let org = &commit.account.org;
        let mut items = Vec::with_capacity(2 + commit.claims.len());
        let last_entry = entry_sk(&commit.entry.key);
        items.push(match commit.before {
            // The change as an update conditioned only on what it relied on
            // (see `account_update`): concurrent spends commute.
            Some(before) => {
                let earlier: Vec<(String, std::collections::BTreeMap<_, _>)> = commit
                    .earlier
                    .iter()
                    .map(|e| (entry_sk(&e.stored.key), e.later.clone()))
                    .collect();
                let mut change = account_update_with(before, commit.account, &last_entry, &earlier);
                change.decided_at(commit.entry.entry.at);
                let update = Update::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(org_pk(org), ACCOUNT_SK.into())))
                    .update_expression(change.update_expression())
                    .condition_expression(change.condition_expression())
                    .set_expression_attribute_names(Some(change.names))
                    .set_expression_attribute_values(Some(change.values))
                    .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                    .build()
                    .map_err(request_error)?;
                TransactWriteItem::builder().update(update).build()
            }
            None => conditional_put(
                &self.table,
                {
                    let mut item = account_item(commit.account, &last_entry);
                    item.insert("last_at".into(), AttributeValue::S(instant(commit.entry.entry.at)));
                    item
                },
                "attribute_not_exists(pk)",
                None,
            )?,
        });
        let stored = &commit.entry;
        let item = entry_item(org, &stored.key, &stored.entry, stored.receipt.as_ref());
        items.push(conditional_put(&self.table, item, "attribute_not_exists(pk)", None)?);
        for e in &commit.earlier {
            let item = entry_item(org, &e.stored.key, &e.stored.entry, e.stored.receipt.as_ref());
            items.push(conditional_put(&self.table, item, "attribute_not_exists(pk)", None)?);
        }
        for claim in &commit.claims {
            let item = claim_item(&claim.name, org, &claim.claimed_by);
            items.push(conditional_put(&self.table, item, "attribute_not_exists(pk)", None)?);
        }
        for side in &commit.side {
            items.push(match side {
                SideWrite::Unlock {
                    action,
                    subject,
                    until,
                    now,
                } => {
                    let entry_id = commit.entry.key.entry_id();
                    // Unlocked already, unless its window has run out.
                    let values = HashMap::from([(":now".to_string(), AttributeValue::S(items::instant(*now)))]);
                    conditional_put(
                        &self.table,
                        unlock_item(org, action, subject, *until, &entry_id),
                        "attribute_not_exists(pk) OR unlocked_until <= :now",
                        Some(values),
                    )?
                }
                SideWrite::Hold { seq, report } => conditional_put(
                    &self.table,
                    held_item(org, *seq, report),
                    "attribute_not_exists(pk)",
                    None,
                )?,
                SideWrite::TakeSlot {
                    meter,
                    contact,
                    campaign,
                } => {
                    let mut item = key(org_pk(org), slot_sk(meter, contact));
                    item.insert("entry".into(), AttributeValue::S(commit.entry.key.entry_id()));
                    if let Some(c) = campaign {
                        item.insert("campaign".into(), AttributeValue::S(c.clone()));
                    }
                    conditional_put(&self.table, item, "attribute_not_exists(pk)", None)?
                }
                SideWrite::PutUnit { unit, from } => {
                    let state = |s: UnitState| AttributeValue::S(s.as_str().to_string());
                    let (condition, values) = match from {
                        // A new unit: the contact's first in the campaign, or
                        // its next once the last one ended (released or
                        // refunded), as the domain decided on that state.
                        None => (
                            "attribute_not_exists(pk) OR unit_state IN (:released, :refunded)",
                            HashMap::from([
                                (":released".to_string(), state(UnitState::Released)),
                                (":refunded".to_string(), state(UnitState::Refunded)),
                            ]),
                        ),
                        Some(s) => (
                            "unit_state = :state",
                            HashMap::from([(":state".to_string(), state(*s))]),
                        ),
                    };
                    conditional_put(&self.table, unit_item(org, unit), condition, Some(values))?
                }
                SideWrite::FreeSlot { meter, contact } => {
                    let delete = Delete::builder()
                        .table_name(&self.table)
                        .set_key(Some(key(org_pk(org), slot_sk(meter, contact))))
                        .condition_expression("attribute_exists(pk)")
                        .build()
                        .map_err(request_error)?;
                    TransactWriteItem::builder().delete(delete).build()
                }
                SideWrite::Release { seq } => {
                    let delete = Delete::builder()
                        .table_name(&self.table)
                        .set_key(Some(key(org_pk(org), held_sk(*seq))))
                        .condition_expression("attribute_exists(pk)")
                        .build()
                        .map_err(request_error)?;
                    TransactWriteItem::builder().delete(delete).build()
                }
            });
        }

        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) => match e.into_err() {
                TransactWriteItemsError::TransactionCanceledException(cancel) => {
                    Err(interpret_cancellation(cancel.cancellation_reasons(), &commit)?)
                }
                TransactWriteItemsError::TransactionInProgressException(_)
                | TransactWriteItemsError::ProvisionedThroughputExceededException(_)
                | TransactWriteItemsError::ThrottlingException(_)
                | TransactWriteItemsError::RequestLimitExceeded(_) => Err(CommitError::Conflict),
                other => Err(CommitError::Store(request_error(other))),
            },
            Err(other) => Err(CommitError::Store(request_error(other))),
        }
    }

    async fn overdue_units(&self, org: &OrgId, due_by: DateTime<Utc>) -> Result<Vec<Unit>, StoreError> {
        // The organization's shard of the deadline index holds only what is
        // overdue up to `due_by` (the sweep empties it every few minutes),
        // so filtering it by organization reads little.
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(RESERVATIONS_INDEX)
            .key_condition_expression("unit_shard = :shard AND deadline <= :due")
            .filter_expression("pk = :pk")
            .expression_attribute_values(":shard", AttributeValue::S(unit_shard(org)))
            .expression_attribute_values(":due", AttributeValue::S(instant(due_by)))
            .expression_attribute_values(":pk", AttributeValue::S(org_pk(org)))
            .limit(OVERDUE_READ)
            .send()
            .await
            .map_err(request_error)?;
        let mut due = Vec::new();
        for item in out.items.unwrap_or_default() {
            due.push(unit_of_key(&item)?);
        }
        let mut by_campaign: std::collections::BTreeMap<CampaignId, Vec<Subject>> = Default::default();
        for (_, campaign, contact) in due {
            by_campaign.entry(campaign).or_default().push(contact);
        }
        let mut overdue = Vec::new();
        for (campaign, contacts) in by_campaign {
            for chunk in contacts.chunks(ledger_domain::MAX_UNITS) {
                overdue.extend(self.load_units(org, &campaign, chunk).await?);
            }
        }
        // The index lags the table: only units still reserved and due count.
        overdue.retain(|u| u.state == UnitState::Reserved && u.deadline <= due_by);
        Ok(overdue)
    }
}

impl ResultStore for DynamoLedgerStore {
    async fn load_unlock(
        &self,
        org: &OrgId,
        action: &ActionId,
        subject: &Subject,
    ) -> Result<Option<Unlock>, StoreError> {
        let item = self.consistent_get(org_pk(org), unlock_sk(action, subject)).await?;
        item.as_ref().map(unlock_from_item).transpose()
    }

    async fn load_unlocks(
        &self,
        org: &OrgId,
        action: &ActionId,
        subjects: &[Subject],
    ) -> Result<std::collections::BTreeMap<Subject, Unlock>, StoreError> {
        let mut found = std::collections::BTreeMap::new();
        for (subject, item) in self.subject_items(org, subjects, |s| unlock_sk(action, s)).await? {
            found.insert(subject, unlock_from_item(&item)?);
        }
        Ok(found)
    }

    async fn load_units(
        &self,
        org: &OrgId,
        campaign: &CampaignId,
        contacts: &[Subject],
    ) -> Result<Vec<Unit>, StoreError> {
        let mut units = Vec::new();
        for (_, item) in self.subject_items(org, contacts, |c| unit_sk(campaign, c)).await? {
            units.push(unit_from_item(&item)?);
        }
        Ok(units)
    }

    async fn due_units(
        &self,
        due_by: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<(OrgId, CampaignId, Subject)>, StoreError> {
        let mut due = Vec::new();
        for shard in 0..RENEWAL_SHARDS {
            if due.len() >= limit as usize {
                break;
            }
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(RESERVATIONS_INDEX)
                .key_condition_expression("unit_shard = :shard AND deadline <= :due")
                .expression_attribute_values(":shard", AttributeValue::S(format!("UNITS#{shard}")))
                .expression_attribute_values(":due", AttributeValue::S(instant(due_by)))
                .limit((limit as usize - due.len()) as i32)
                .send()
                .await
                .map_err(request_error)?;
            for item in out.items.unwrap_or_default() {
                due.push(unit_of_key(&item)?);
            }
        }
        Ok(due)
    }

    async fn held_slots(
        &self,
        org: &OrgId,
        meter: &MeterId,
        contacts: &[Subject],
    ) -> Result<std::collections::BTreeSet<Subject>, StoreError> {
        let items = self.subject_items(org, contacts, |c| slot_sk(meter, c)).await?;
        let held = items.into_iter().map(|(contact, _)| contact).collect();
        Ok(held)
    }

    async fn load_account_and_keys(
        &self,
        org: &OrgId,
        keys: &[IdempotencyKey],
    ) -> Result<(Option<Account>, usize), StoreError> {
        let mut wanted = KeysAndAttributes::builder()
            .keys(key(org_pk(org), ACCOUNT_SK.into()))
            .consistent_read(true);
        for k in keys {
            wanted = wanted.keys(key(org_pk(org), request_sk(k)));
        }
        let (mut account, mut taken) = (None, 0);
        for item in self.batch_get(wanted.build().map_err(request_error)?).await? {
            match item.get("sk") {
                Some(AttributeValue::S(sk)) if sk == ACCOUNT_SK => account = Some(account_from_item(&item)?),
                _ => taken += 1,
            }
        }
        Ok((account, taken))
    }

    async fn pending_approvals(&self, org: &OrgId) -> Result<Vec<Unit>, StoreError> {
        let prefix = unit_prefix(&ledger_domain::approvals_campaign());
        let items = self
            .partition_query(org, "begins_with(sk, :a)", vec![AttributeValue::S(prefix)])
            .await?;
        let mut pending = Vec::new();
        for item in items {
            let unit = unit_from_item(&item)?;
            if unit.state == UnitState::Reserved {
                pending.push(unit);
            }
        }
        pending.sort_by_key(|u| u.deadline);
        Ok(pending)
    }

    async fn held_results(&self, org: &OrgId, limit: u32) -> Result<Vec<HeldResult>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :held)")
            .expression_attribute_values(":pk", AttributeValue::S(org_pk(org)))
            .expression_attribute_values(":held", AttributeValue::S("HELD#".into()))
            .consistent_read(true)
            .limit(limit as i32)
            .send()
            .await
            .map_err(request_error)?;
        out.items.unwrap_or_default().iter().map(held_from_item).collect()
    }
}

impl DynamoLedgerStore {
    /// A notification and its period's count, in one transaction: the count
    /// never passes the cap, and a redelivered record counts once.
    async fn keep_capped_notification(
        &self,
        org: &OrgId,
        note: &Notification,
        period: NaiveDate,
        cap: u32,
    ) -> Result<Kept, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(note_item(org, note)))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(request_error)?;
        let count = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(org_pk(org), format!("NOTECOUNT#{}#{period}", note.alert))))
            .update_expression("SET n = if_not_exists(n, :zero) + :one")
            .condition_expression("attribute_not_exists(n) OR n < :cap")
            .expression_attribute_values(":zero", AttributeValue::N("0".into()))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":cap", AttributeValue::N(cap.to_string()))
            .build()
            .map_err(request_error)?;
        match self
            .transact_conditions(vec![
                TransactWriteItem::builder().put(put).build(),
                TransactWriteItem::builder().update(count).build(),
            ])
            .await?
        {
            None => Ok(Kept::New),
            Some(0) => match self.consistent_get(org_pk(org), note_sk(&note.id)).await? {
                Some(item) => note_from_item(&item).map(Kept::Existing),
                None => Err(StoreError::Malformed("a kept notification vanished".into())),
            },
            Some(_) => Ok(Kept::CapReached),
        }
    }

    /// A transaction whose items are conditional: `Some(i)` when item `i`
    /// failed its condition (and nothing was written).
    async fn transact_conditions(&self, items: Vec<TransactWriteItem>) -> Result<Option<usize>, StoreError> {
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(None),
            Err(SdkError::ServiceError(e)) => match e.into_err() {
                TransactWriteItemsError::TransactionCanceledException(c) => c
                    .cancellation_reasons()
                    .iter()
                    .position(|r| r.code() == Some("ConditionalCheckFailed"))
                    .map(Some)
                    .ok_or_else(|| request_error(c)),
                other => Err(request_error(other)),
            },
            Err(other) => Err(request_error(other)),
        }
    }
}

impl NotificationStore for DynamoLedgerStore {
    async fn keep_notification(
        &self,
        org: &OrgId,
        note: &Notification,
        cap: Option<(NaiveDate, u32)>,
    ) -> Result<Kept, StoreError> {
        if let Some((period, cap)) = cap {
            return self.keep_capped_notification(org, note, period, cap).await;
        }
        let out = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(note_item(org, note)))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match out {
            Ok(_) => Ok(Kept::New),
            Err(SdkError::ServiceError(e)) => match e.into_err() {
                PutItemError::ConditionalCheckFailedException(kept) => match kept.item() {
                    Some(existing) => note_from_item(existing).map(Kept::Existing),
                    None => Err(StoreError::Malformed("condition failed without the item".into())),
                },
                other => Err(request_error(other)),
            },
            Err(other) => Err(request_error(other)),
        }
    }

    async fn mark_published(&self, org: &OrgId, id: &str) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(org_pk(org)))
            .key("sk", AttributeValue::S(note_sk(id)))
            .update_expression("SET published = :t")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":t", AttributeValue::Bool(true))
            .send()
            .await
            .map_err(request_error)?;
        Ok(())
    }

    async fn notifications(
        &self,
        org: &OrgId,
        limit: u32,
        cursor: Option<String>,
    ) -> Result<(Vec<Notification>, Option<String>), StoreError> {
        // Ids sort by entry number: newest first is the key's reverse order.
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :note)")
            .expression_attribute_values(":pk", AttributeValue::S(org_pk(org)))
            .expression_attribute_values(":note", AttributeValue::S("NOTE#".into()))
            .scan_index_forward(false)
            .limit(limit as i32 + 1);
        if let Some(after) = cursor {
            query = query
                .exclusive_start_key("pk", AttributeValue::S(org_pk(org)))
                .exclusive_start_key("sk", AttributeValue::S(note_sk(&after)));
        }
        let out = query.send().await.map_err(request_error)?;
        let mut notes = out
            .items
            .unwrap_or_default()
            .iter()
            .map(note_from_item)
            .collect::<Result<Vec<_>, _>>()?;
        let next = (notes.len() > limit as usize).then(|| {
            notes.truncate(limit as usize);
            notes.last().map(|n| n.id.clone()).unwrap_or_default()
        });
        Ok((notes, next))
    }

    async fn mark_read(&self, org: &OrgId, id: &str) -> Result<bool, StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(org_pk(org)))
            .key("sk", AttributeValue::S(note_sk(id)))
            .update_expression("SET #read = :t")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#read", "read")
            .expression_attribute_values(":t", AttributeValue::Bool(true))
            .send()
            .await;
        match out {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => Ok(false),
            Err(other) => Err(request_error(other)),
        }
    }
}

impl RollupStore for DynamoLedgerStore {
    async fn roll_up(
        &self,
        org: &OrgId,
        entry_sk: &str,
        day: NaiveDate,
        counters: &[(String, i64)],
        mark_until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        // A mark of its own in the same transaction: the entry adds once.
        // (Not an attribute on the entry: that would rewrite the entry's
        // copy in each history index.) TTL removes it after the stream's
        // 24 hours, when no record can come again.
        let mut mark = key(org_pk(org), rolled_sk(entry_sk));
        mark.insert(
            "expires_at_epoch".into(),
            AttributeValue::N(mark_until.timestamp().to_string()),
        );
        let mark = Put::builder()
            .table_name(&self.table)
            .set_item(Some(mark))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(request_error)?;
        let (mut adds, mut names, mut values) = (Vec::new(), HashMap::new(), Item::new());
        for (i, (name, value)) in counters.iter().enumerate() {
            adds.push(format!("#c{i} :c{i}"));
            names.insert(format!("#c{i}"), name.clone());
            values.insert(format!(":c{i}"), AttributeValue::N(value.to_string()));
        }
        let add = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(org_pk(org), rollup_sk(day))))
            .update_expression(format!("ADD {}", adds.join(", ")))
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .build()
            .map_err(request_error)?;
        let added = self
            .transact_conditions(vec![
                TransactWriteItem::builder().put(mark).build(),
                TransactWriteItem::builder().update(add).build(),
            ])
            .await?;
        Ok(added.is_none())
    }

    async fn rollups(&self, org: &OrgId, from: NaiveDate, to: NaiveDate) -> Result<Vec<DayRollup>, StoreError> {
        let bounds = vec![AttributeValue::S(rollup_sk(from)), AttributeValue::S(rollup_sk(to))];
        let items = self.partition_query(org, "sk BETWEEN :a AND :b", bounds).await?;
        items.iter().map(rollup_from_item).collect()
    }
}

impl DynamoLedgerStore {
    /// Every item of an organization's partition whose sort key meets
    /// `sk_condition` (values `:a`, `:b`, ... in order), all pages, read
    /// consistently.
    async fn partition_query(
        &self,
        org: &OrgId,
        sk_condition: &str,
        values: Vec<AttributeValue>,
    ) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression(format!("pk = :pk AND {sk_condition}"))
                .expression_attribute_values(":pk", AttributeValue::S(org_pk(org)))
                .consistent_read(true)
                .set_exclusive_start_key(start);
            for (name, value) in [":a", ":b"].into_iter().zip(values.iter().cloned()) {
                query = query.expression_attribute_values(name, value);
            }
            let out = query.send().await.map_err(request_error)?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(items),
            }
        }
    }
}

impl RequestStore for DynamoLedgerStore {
    async fn load_request(&self, org: &OrgId, request_key: &IdempotencyKey) -> Result<Option<KeptRequest>, StoreError> {
        let item = self.consistent_get(org_pk(org), request_sk(request_key)).await?;
        Ok(item.as_ref().map(kept_request_from_item).transpose()?.flatten())
    }

    async fn load_claim(&self, name: &str) -> Result<Option<(OrgId, IdempotencyKey)>, StoreError> {
        let item = self.consistent_get(items::claim_pk(name), "CLAIM".into()).await?;
        item.as_ref().map(claim_from_item).transpose()
    }

    async fn keep_answer(
        &self,
        org: &OrgId,
        request_key: &IdempotencyKey,
        receipt: &Receipt,
        expires_at: DateTime<Utc>,
    ) -> Result<Option<KeptRequest>, StoreError> {
        let out = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(answer_item(org, request_key, receipt, expires_at)))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match out {
            Ok(_) => Ok(None),
            Err(SdkError::ServiceError(e)) => match e.into_err() {
                PutItemError::ConditionalCheckFailedException(taken) => match taken.item() {
                    Some(existing) => kept_request_from_item(existing),
                    None => Err(StoreError::Malformed("condition failed without the item".into())),
                },
                other => Err(request_error(other)),
            },
            Err(other) => Err(request_error(other)),
        }
    }
}

impl HistoryStore for DynamoLedgerStore {
    async fn history(&self, org: &OrgId, q: &HistoryQuery) -> Result<HistoryPage, StoreError> {
        // Each filter reads the index keyed for it, so every page is full:
        // no filter runs after DynamoDB's `Limit`. One item more than the
        // page tells whether another page exists.
        let by = match (&q.scope, &q.filter.by) {
            (HistoryScope::User(user), None) => Some(HistoryKey::User(user.clone())),
            (HistoryScope::User(user), Some(HistoryKey::User(u))) if u == user => Some(HistoryKey::User(u.clone())),
            (HistoryScope::User(_), Some(_)) => {
                return Err(StoreError::Malformed("a member's history is their own".into()))
            }
            (HistoryScope::Organization, by) => by.clone(),
        };
        let (index, partition_attr, partition) = match &by {
            None => (LEDGER_INDEX, "ledger_org", org.to_string()),
            Some(HistoryKey::User(user)) => (
                LEDGER_BY_USER_INDEX,
                "ledger_user",
                items::ledger_user(org, user.as_str()),
            ),
            Some(HistoryKey::Action(action)) => (
                LEDGER_BY_ACTION_INDEX,
                "ledger_action",
                items::ledger_action(org, action.as_str()),
            ),
            Some(HistoryKey::Campaign(campaign)) => (
                LEDGER_BY_CAMPAIGN_INDEX,
                "ledger_campaign",
                items::ledger_campaign(org, campaign.as_str()),
            ),
        };
        // [from, to): `placed` is `<instant>#<seq>`, so every key of an
        // instant before `to` sorts below `to` itself.
        let lo = q.filter.from.map(instant).unwrap_or_else(|| "0".into());
        let hi = q.filter.to.map(instant).unwrap_or_else(|| "9".into());
        // An empty range (an export from a future instant, closed when it
        // starts) lists nothing; DynamoDB refuses a BETWEEN that ends first.
        if lo > hi {
            return Ok(HistoryPage {
                entries: Vec::new(),
                next: None,
            });
        }
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(index)
            .key_condition_expression("#p = :p AND placed BETWEEN :lo AND :hi")
            .expression_attribute_names("#p", partition_attr)
            .expression_attribute_values(":p", AttributeValue::S(partition.clone()))
            .expression_attribute_values(":lo", AttributeValue::S(lo))
            .expression_attribute_values(":hi", AttributeValue::S(hi))
            .scan_index_forward(false)
            .limit(q.limit as i32 + 1);
        if let Some(after) = &q.after {
            query = query
                .exclusive_start_key("pk", AttributeValue::S(org_pk(org)))
                .exclusive_start_key("sk", AttributeValue::S(after.sk.clone()))
                .exclusive_start_key(partition_attr, AttributeValue::S(partition))
                .exclusive_start_key("placed", AttributeValue::S(after.placed.clone()));
        }
        let out = query.send().await.map_err(request_error)?;
        let mut items = out.items.unwrap_or_default();
        let more = items.len() > q.limit as usize;
        items.truncate(q.limit as usize);
        let next = match (more, items.last()) {
            (true, Some(last)) => {
                let a = Attrs::of(last, "entry");
                Some(HistoryPosition {
                    placed: a.s("placed")?.to_string(),
                    sk: a.s("sk")?.to_string(),
                })
            }
            _ => None,
        };
        let entries = items.iter().map(entry_from_item).collect::<Result<Vec<_>, _>>()?;
        Ok(HistoryPage { entries, next })
    }

    async fn entry(&self, org: &OrgId, id: &str) -> Result<Option<LedgerEntry>, StoreError> {
        let Some(sk) = entry_sk_of_id(id) else {
            return Ok(None);
        };
        match self.consistent_get(org_pk(org), sk).await? {
            Some(item) if item.contains_key("kind") => entry_from_item(&item).map(Some),
            _ => Ok(None),
        }
    }

    async fn place(
        &self,
        org: &OrgId,
        entry_sk: &str,
        placement: &Placement,
        at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let (mut sets, mut names, mut values) = (Vec::new(), HashMap::new(), Item::new());
        for (i, (attr, value)) in placement_attrs(placement, at).into_iter().enumerate() {
            sets.push(format!("#a{i} = :a{i}"));
            names.insert(format!("#a{i}"), attr);
            values.insert(format!(":a{i}"), value);
        }
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(org_pk(org), entry_sk.to_string())))
            .update_expression(format!("SET {}", sets.join(", ")))
            .condition_expression("attribute_exists(pk)")
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await
            .map_err(request_error)?;
        Ok(())
    }
}

impl RenewalIndex for DynamoLedgerStore {
    async fn due_accounts(
        &self,
        due_by: DateTime<Utc>,
        limit: u32,
        after: Option<&str>,
    ) -> Result<DuePage, StoreError> {
        // The cursor names the shard and the last account read in it.
        let (mut shard, mut start) = match after {
            None => (0, None),
            Some(c) => decode_due_cursor(c)?,
        };
        let mut accounts = Vec::new();
        while shard < RENEWAL_SHARDS && accounts.len() < limit as usize {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(RENEWALS_INDEX)
                .key_condition_expression("renewal_shard = :shard AND renews_at <= :due")
                .expression_attribute_values(":shard", AttributeValue::S(format!("RENEWAL#{shard}")))
                .expression_attribute_values(":due", AttributeValue::S(instant(due_by)))
                .set_exclusive_start_key(start.take())
                .limit((limit as usize - accounts.len()) as i32)
                .send()
                .await
                .map_err(request_error)?;
            for item in out.items.unwrap_or_default() {
                let a = items::Attrs::of(&item, "due account");
                let org = a.s("pk")?.strip_prefix("ORG#").and_then(|o| OrgId::parse(o).ok());
                let at = DateTime::parse_from_rfc3339(a.s("renews_at")?).ok();
                match (org, at) {
                    (Some(org), Some(at)) => accounts.push((org, at.with_timezone(&Utc))),
                    _ => return Err(StoreError::Malformed("due account keys".into())),
                }
            }
            match out.last_evaluated_key {
                Some(last) => start = Some(last),
                None => shard += 1,
            }
        }
        let next = (shard < RENEWAL_SHARDS).then(|| encode_due_cursor(shard, start.as_ref()));
        Ok(DuePage { accounts, next })
    }
}

fn encode_due_cursor(shard: u32, start: Option<&Item>) -> String {
    let s = |name: &str| match start.and_then(|i| i.get(name)) {
        Some(AttributeValue::S(v)) => v.clone(),
        _ => String::new(),
    };
    URL_SAFE_NO_PAD.encode(format!("{shard}\n{}\n{}\n{}", s("pk"), s("sk"), s("renews_at")))
}

fn decode_due_cursor(cursor: &str) -> Result<(u32, Option<Item>), StoreError> {
    let bad = || StoreError::Malformed("renewal cursor".into());
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?).map_err(|_| bad())?;
    let parts: Vec<&str> = text.split('\n').collect();
    let [shard, pk, sk, renews_at] = parts[..] else {
        return Err(bad());
    };
    let shard: u32 = shard.parse().map_err(|_| bad())?;
    if pk.is_empty() {
        return Ok((shard, None));
    }
    let mut start = key(pk.to_string(), sk.to_string());
    start.insert("renewal_shard".into(), AttributeValue::S(format!("RENEWAL#{shard}")));
    start.insert("renews_at".into(), AttributeValue::S(renews_at.to_string()));
    Ok((shard, Some(start)))
}

/// Turns the per-item reasons of a cancelled transaction into what the
/// ledger acts on. Items are in commit order: account, entries, claims.
/// The request's own entry existing wins over a stale account: the request
/// was applied before. A renewal entry existing only means another writer
/// renewed first; the account's condition fails with it and the fresh state
/// decides again.
fn interpret_cancellation(reasons: &[CancellationReason], commit: &Commit<'_>) -> Result<CommitError, StoreError> {
    let code = |i: usize| reasons.get(i).and_then(|r| r.code()).unwrap_or("None");
    let item = |i: usize| {
        reasons
            .get(i)
            .and_then(|r| r.item())
            .cloned()
            .ok_or_else(|| StoreError::Malformed("cancellation without the item".into()))
    };
    let batch = 1 + commit.earlier.len();
    if !commit.earlier.is_empty() && (1..=batch).any(|i| code(i) == "ConditionalCheckFailed") {
        return Ok(CommitError::BatchKeyTaken);
    }
    if code(1) == "ConditionalCheckFailed" && matches!(commit.entry.key, EntryKey::Request(_)) {
        return Ok(CommitError::KeyTaken(kept_request_from_item(&item(1)?)?.map(Box::new)));
    }
    let claims_at = 1 + batch;
    let sides = claims_at + commit.claims.len();
    for (n, side) in commit.side.iter().enumerate() {
        if code(sides + n) == "ConditionalCheckFailed" {
            return Ok(match side {
                SideWrite::Unlock { .. }
                | SideWrite::TakeSlot { .. }
                | SideWrite::FreeSlot { .. }
                | SideWrite::PutUnit { .. } => CommitError::SubjectChanged,
                SideWrite::Release { .. } => CommitError::AlreadySettled,
                // The entry's key guards the hold: not reached.
                SideWrite::Hold { .. } => CommitError::Conflict,
            });
        }
    }
    for (n, claim) in commit.claims.iter().enumerate() {
        if code(claims_at + n) == "ConditionalCheckFailed" {
            let (org, claimed_by) = claim_from_item(&item(claims_at + n)?)?;
            return Ok(CommitError::Claimed {
                name: claim.name.clone(),
                org,
                claimed_by,
            });
        }
    }
    if code(0) == "ConditionalCheckFailed" {
        let fresh = item(0).ok().as_ref().map(account_from_item).transpose()?;
        return Ok(CommitError::Stale(fresh.map(Box::new)));
    }
    if reasons.iter().any(|r| {
        matches!(
            r.code(),
            Some("TransactionConflict" | "ThrottlingError" | "ProvisionedThroughputExceeded")
        )
    }) {
        return Ok(CommitError::Conflict);
    }
    let codes: Vec<&str> = (0..reasons.len()).map(code).collect();
    Err(StoreError::Request(format!("transaction cancelled: {codes:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::{Receipt, StoredEntry};
    use chrono::TimeZone;
    use ledger_domain::{Actor, Catalog, Subscription};

    fn account() -> (Account, LedgerEntry) {
        let catalog = Catalog::default_catalog();
        let sub = Subscription::new(&catalog, "starter", None, None, None).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
        Account::provision(OrgId::parse("acme").unwrap(), sub, &catalog, Actor::system(), now).unwrap()
    }

    fn reason(code: &str, item: Option<Item>) -> CancellationReason {
        CancellationReason::builder().code(code).set_item(item).build()
    }

    fn commit<'a>(account: &'a Account, key: EntryKey, entry: &LedgerEntry) -> Commit<'a> {
        Commit {
            before: Some(account),
            account,
            entry: StoredEntry {
                key,
                entry: entry.clone(),
                receipt: None,
            },
            claims: Vec::new(),
            earlier: Vec::new(),
            side: Vec::new(),
        }
    }

    fn request_key() -> EntryKey {
        EntryKey::Request(IdempotencyKey::parse("k1").unwrap())
    }

    fn receipt() -> Receipt {
        Receipt {
            fingerprint: "f".into(),
            outcome: "{}".into(),
        }
    }

    fn stored_entry(key: &EntryKey, entry: &LedgerEntry) -> Item {
        let mut entry = entry.clone();
        entry.id = key.entry_id();
        let entry = &entry;
        let receipt = receipt();
        let receipt = matches!(key, EntryKey::Request(_)).then_some(&receipt);
        entry_item(&OrgId::parse("acme").unwrap(), key, entry, receipt)
    }

    #[test]
    fn a_transaction_conflict_is_retryable() {
        let (account, entry) = account();
        let reasons = [reason("None", None), reason("TransactionConflict", None)];
        let c = commit(&account, request_key(), &entry);
        assert!(matches!(
            interpret_cancellation(&reasons, &c),
            Ok(CommitError::Conflict)
        ));
    }

    #[test]
    fn the_requests_own_entry_existing_is_a_replay_even_when_the_account_moved() {
        let (account, entry) = account();
        let c = commit(&account, request_key(), &entry);
        let both = [
            reason("ConditionalCheckFailed", Some(account_item(&account, "REQ#k0"))),
            reason("ConditionalCheckFailed", Some(stored_entry(&request_key(), &entry))),
        ];
        match interpret_cancellation(&both, &c) {
            Ok(CommitError::KeyTaken(Some(kept))) => {
                assert_eq!(kept.receipt, receipt());
                assert_eq!(
                    kept.entry.map(|e| (e.id, e.lines)),
                    Some((request_key().entry_id(), entry.lines))
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_renewal_written_by_another_writer_means_stale_not_replay() {
        let (account, entry) = account();
        let renewal = EntryKey::Renewal(account.period.start);
        let c = commit(&account, renewal.clone(), &entry);
        let reasons = [
            reason("ConditionalCheckFailed", Some(account_item(&account, "REQ#k0"))),
            reason("ConditionalCheckFailed", Some(stored_entry(&renewal, &entry))),
        ];
        match interpret_cancellation(&reasons, &c) {
            Ok(CommitError::Stale(Some(fresh))) => assert_eq!(*fresh, account),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn renewal_cursors_read_back() {
        let start = key("ORG#acme".into(), "ACCOUNT".into());
        let mut with_index = start.clone();
        with_index.insert(
            "renews_at".into(),
            AttributeValue::S("2026-02-28T00:00:00.000000Z".into()),
        );
        let (shard, back) = decode_due_cursor(&encode_due_cursor(3, Some(&with_index))).unwrap();
        assert_eq!(shard, 3);
        let back = back.unwrap();
        assert_eq!(back["pk"], start["pk"]);
        assert_eq!(back["renews_at"], with_index["renews_at"]);
        assert_eq!(decode_due_cursor(&encode_due_cursor(5, None)).unwrap(), (5, None));
        assert!(decode_due_cursor("not a cursor").is_err());
    }
}
