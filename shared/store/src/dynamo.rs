//! The DynamoDB adapter: item layout, conditional writes, one transaction per change.
//!
//! Layout (one table, everything of an organization under `pk = ORG#<org>`):
//! - `sk = ACCOUNT`: the account's state; `seq` is its optimistic-lock version
//!   and the number of the last ledger entry.
//! - `sk = REQ#<idempotency key>` / `RENEWAL#<period start>`: a ledger entry,
//!   immutable, put with `attribute_not_exists` so it is also the
//!   idempotency record; `ledger_org` + `seq` index it in order (GSI `ledger`).
//! - `pk = GUARD#<name>`, `sk = GUARD`: a name claimed once across all
//!   organizations, e.g. a payment provider's reference.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, KeysAndAttributes, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};
use ledger_domain::{Account, IdempotencyKey, LedgerEntry, OrgId, UserId};
use serde::{Deserialize, Serialize};
use serde_dynamo::aws_sdk_dynamodb_1::{from_attribute_value, from_item, to_item};

use crate::port::{Commit, CommitError, EntryKey, LedgerPage, LedgerStore, RequestRecord, StoreError};

type Item = HashMap<String, AttributeValue>;

pub const LEDGER_INDEX: &str = "ledger";
const ACCOUNT_SK: &str = "ACCOUNT";

#[derive(Clone, Debug)]
pub struct DynamoLedgerStore {
    client: Client,
    table: String,
}

impl DynamoLedgerStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoLedgerStore {
            client,
            table: table.into(),
        }
    }
}

fn org_pk(org: &OrgId) -> String {
    format!("ORG#{org}")
}

fn entry_sk(key: &EntryKey) -> String {
    match key {
        EntryKey::Request(k) => request_sk(k),
        EntryKey::Renewal(d) => format!("RENEWAL#{d}"),
    }
}

fn request_sk(key: &IdempotencyKey) -> String {
    format!("REQ#{}", key.as_str())
}

#[derive(Serialize, Deserialize)]
struct AccountItem {
    pk: String,
    sk: String,
    seq: u64,
    account: Account,
}

#[derive(Serialize, Deserialize)]
struct EntryItem {
    pk: String,
    sk: String,
    ledger_org: String,
    seq: u64,
    /// Top-level copy of the acting user, for filtering the ledger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<UserId>,
    entry: LedgerEntry,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request: Option<RequestRecord>,
}

/// A refusal kept under its request key: not a ledger entry (no seq), and
/// gone after a while (TTL).
#[derive(Serialize, Deserialize)]
struct RefusalItem {
    pk: String,
    sk: String,
    request: RequestRecord,
    expires_at_epoch: i64,
}

#[derive(Serialize, Deserialize)]
struct GuardItem {
    pk: String,
    sk: String,
    org: OrgId,
    claimed_by: IdempotencyKey,
}

fn key(pk: String, sk: String) -> Item {
    HashMap::from([
        ("pk".to_string(), AttributeValue::S(pk)),
        ("sk".to_string(), AttributeValue::S(sk)),
    ])
}

fn serialize<T: Serialize>(value: &T) -> Result<Item, StoreError> {
    to_item(value).map_err(|e| StoreError::Malformed(e.to_string()))
}

fn account_from_item(item: Item) -> Result<Account, StoreError> {
    let record: AccountItem = from_item(item).map_err(|e| StoreError::Malformed(format!("account: {e}")))?;
    Ok(record.account)
}

fn entry_from_item(item: Item) -> Result<LedgerEntry, StoreError> {
    let record: EntryItem = from_item(item).map_err(|e| StoreError::Malformed(format!("entry: {e}")))?;
    Ok(record.entry)
}

/// What a request key's item (an entry or a kept refusal) says the request got.
fn request_from_item(item: &Item) -> Result<Option<RequestRecord>, StoreError> {
    item.get("request")
        .map(|v| from_attribute_value(v.clone()).map_err(|e| StoreError::Malformed(format!("request record: {e}"))))
        .transpose()
}

fn request_error<E: std::fmt::Debug>(e: E) -> StoreError {
    StoreError::Request(format!("{e:?}"))
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
    /// One item of the organization's partition, read strongly consistent.
    async fn consistent_get(&self, org: &OrgId, sk: String) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(org_pk(org), sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(request_error)?;
        Ok(out.item)
    }
}

impl LedgerStore for DynamoLedgerStore {
    async fn load_account(&self, org: &OrgId) -> Result<Option<Account>, StoreError> {
        self.consistent_get(org, ACCOUNT_SK.into())
            .await?
            .map(account_from_item)
            .transpose()
    }

    async fn load_account_and_request(
        &self,
        org: &OrgId,
        request_key: &IdempotencyKey,
    ) -> Result<(Option<Account>, Option<RequestRecord>), StoreError> {
        let keys = KeysAndAttributes::builder()
            .keys(key(org_pk(org), ACCOUNT_SK.into()))
            .keys(key(org_pk(org), request_sk(request_key)))
            .consistent_read(true)
            .build()
            .map_err(request_error)?;
        let mut request = HashMap::from([(self.table.clone(), keys)]);
        let (mut account, mut stored) = (None, None);
        // BatchGetItem may leave keys unprocessed under load; ask again for those.
        for _ in 0..5 {
            let out = self
                .client
                .batch_get_item()
                .set_request_items(Some(request))
                .send()
                .await
                .map_err(request_error)?;
            for item in out
                .responses
                .unwrap_or_default()
                .remove(&self.table)
                .unwrap_or_default()
            {
                let is_account = matches!(item.get("sk"), Some(AttributeValue::S(s)) if s == ACCOUNT_SK);
                if is_account {
                    account = Some(account_from_item(item)?);
                } else {
                    stored = request_from_item(&item)?;
                }
            }
            match out.unprocessed_keys {
                Some(left) if !left.is_empty() => request = left,
                _ => return Ok((account, stored)),
            }
        }
        Err(StoreError::Request("batch read left keys unprocessed".into()))
    }

    async fn load_request(
        &self,
        org: &OrgId,
        request_key: &IdempotencyKey,
    ) -> Result<Option<RequestRecord>, StoreError> {
        let item = self.consistent_get(org, request_sk(request_key)).await?;
        Ok(item.as_ref().map(request_from_item).transpose()?.flatten())
    }

    async fn record_refusal(
        &self,
        org: &OrgId,
        request_key: &IdempotencyKey,
        record: &RequestRecord,
        expires_at: DateTime<Utc>,
    ) -> Result<Option<RequestRecord>, StoreError> {
        let item = serialize(&RefusalItem {
            pk: org_pk(org),
            sk: request_sk(request_key),
            request: record.clone(),
            expires_at_epoch: expires_at.timestamp(),
        })?;
        let out = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match out {
            Ok(_) => Ok(None),
            Err(SdkError::ServiceError(e)) => match e.into_err() {
                PutItemError::ConditionalCheckFailedException(taken) => match taken.item() {
                    Some(existing) => request_from_item(existing),
                    None => Err(StoreError::Malformed("condition failed without the item".into())),
                },
                other => Err(request_error(other)),
            },
            Err(other) => Err(request_error(other)),
        }
    }

    async fn commit(&self, commit: Commit<'_>) -> Result<(), CommitError> {
        let org = &commit.account.org;
        let pk = org_pk(org);
        let mut items = Vec::with_capacity(1 + commit.entries.len() + commit.guards.len());

        let account_item = serialize(&AccountItem {
            pk: pk.clone(),
            sk: ACCOUNT_SK.into(),
            seq: commit.account.seq,
            account: commit.account.clone(),
        })?;
        // Optimistic lock: the state was decided from version `expected_seq`.
        items.push(match commit.expected_seq {
            Some(seq) => conditional_put(
                &self.table,
                account_item,
                "seq = :expected",
                Some(HashMap::from([(
                    ":expected".to_string(),
                    AttributeValue::N(seq.to_string()),
                )])),
            )?,
            None => conditional_put(&self.table, account_item, "attribute_not_exists(pk)", None)?,
        });
        for stored in &commit.entries {
            let item = serialize(&EntryItem {
                pk: pk.clone(),
                sk: entry_sk(&stored.key),
                ledger_org: org.to_string(),
                seq: stored.entry.seq,
                user: stored.entry.actor.user.clone(),
                entry: stored.entry.clone(),
                request: stored.request.clone(),
            })?;
            items.push(conditional_put(&self.table, item, "attribute_not_exists(pk)", None)?);
        }
        for guard in &commit.guards {
            let item = serialize(&GuardItem {
                pk: format!("GUARD#{}", guard.name),
                sk: "GUARD".into(),
                org: org.clone(),
                claimed_by: guard.claimed_by.clone(),
            })?;
            items.push(conditional_put(&self.table, item, "attribute_not_exists(pk)", None)?);
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

    async fn ledger_page(
        &self,
        org: &OrgId,
        limit: u32,
        before_seq: Option<u64>,
        user: Option<&UserId>,
    ) -> Result<LedgerPage, StoreError> {
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(LEDGER_INDEX)
            .expression_attribute_values(":org", AttributeValue::S(org.to_string()))
            .scan_index_forward(false)
            .limit(limit as i32);
        query = match before_seq {
            Some(before) => query
                .key_condition_expression("ledger_org = :org AND seq < :before")
                .expression_attribute_values(":before", AttributeValue::N(before.to_string())),
            None => query.key_condition_expression("ledger_org = :org"),
        };
        if let Some(user) = user {
            // Applied after `limit`: a page may come back short, the cursor still moves on.
            query = query
                .filter_expression("#user = :user")
                .expression_attribute_names("#user", "user")
                .expression_attribute_values(":user", AttributeValue::S(user.to_string()));
        }
        let out = query.send().await.map_err(request_error)?;
        let entries = out
            .items
            .unwrap_or_default()
            .into_iter()
            .map(entry_from_item)
            .collect::<Result<Vec<_>, _>>()?;
        let next_before = match out.last_evaluated_key {
            Some(last) => match last.get("seq") {
                Some(AttributeValue::N(n)) => n.parse().ok(),
                _ => None,
            },
            None => None,
        };
        Ok(LedgerPage { entries, next_before })
    }
}

/// Turns the per-item reasons of a cancelled transaction into what the
/// ledger acts on. Items are in commit order: account, entries, guards.
/// The request's own entry existing wins over a stale account: the request
/// was applied before. A renewal entry existing only means another writer
/// renewed first; the account's condition fails with it and the fresh state
/// decides again.
fn interpret_cancellation(reasons: &[CancellationReason], commit: &Commit<'_>) -> Result<CommitError, StoreError> {
    let code = |i: usize| reasons.get(i).and_then(|r| r.code()).unwrap_or("None");
    let item = |i: usize| reasons.get(i).and_then(|r| r.item()).cloned();
    let entries = 1..1 + commit.entries.len();
    for (i, stored) in entries.clone().zip(&commit.entries) {
        if code(i) == "ConditionalCheckFailed" && matches!(stored.key, EntryKey::Request(_)) {
            let existing = item(i).ok_or_else(|| StoreError::Malformed("cancellation without the item".into()))?;
            return Ok(CommitError::KeyTaken(request_from_item(&existing)?));
        }
    }
    for (n, guard) in commit.guards.iter().enumerate() {
        let i = entries.end + n;
        if code(i) == "ConditionalCheckFailed" {
            let existing = item(i).ok_or_else(|| StoreError::Malformed("cancellation without the item".into()))?;
            let record: GuardItem = from_item(existing).map_err(|e| StoreError::Malformed(format!("guard: {e}")))?;
            return Ok(CommitError::GuardTaken {
                name: guard.name.clone(),
                org: record.org,
                claimed_by: record.claimed_by,
            });
        }
    }
    if code(0) == "ConditionalCheckFailed" {
        let fresh = item(0).map(account_from_item).transpose()?;
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
    use crate::port::StoredEntry;
    use chrono::{TimeZone, Utc};
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

    fn commit<'a>(account: &'a Account, entries: Vec<(EntryKey, &LedgerEntry)>) -> Commit<'a> {
        Commit {
            expected_seq: Some(0),
            account,
            entries: entries
                .into_iter()
                .map(|(key, entry)| StoredEntry {
                    key,
                    entry: entry.clone(),
                    request: None,
                })
                .collect(),
            guards: Vec::new(),
        }
    }

    fn request_key() -> EntryKey {
        EntryKey::Request(IdempotencyKey::parse("k1").unwrap())
    }

    fn account_item(account: &Account) -> Item {
        serialize(&AccountItem {
            pk: "ORG#acme".into(),
            sk: ACCOUNT_SK.into(),
            seq: 1,
            account: account.clone(),
        })
        .unwrap()
    }

    fn request_record() -> RequestRecord {
        RequestRecord {
            fingerprint: "f".into(),
            reply: crate::port::Reply {
                status: 200,
                body: "{}".into(),
            },
        }
    }

    fn entry_item(sk: &str, entry: &LedgerEntry) -> Item {
        serialize(&EntryItem {
            pk: "ORG#acme".into(),
            sk: sk.into(),
            ledger_org: "acme".into(),
            seq: entry.seq,
            user: None,
            entry: entry.clone(),
            request: sk.starts_with("REQ#").then(request_record),
        })
        .unwrap()
    }

    #[test]
    fn a_transaction_conflict_is_retryable() {
        let (account, entry) = account();
        let reasons = [reason("None", None), reason("TransactionConflict", None)];
        let c = commit(&account, vec![(request_key(), &entry)]);
        assert!(matches!(
            interpret_cancellation(&reasons, &c),
            Ok(CommitError::Conflict)
        ));
    }

    #[test]
    fn the_requests_own_entry_existing_is_a_replay_even_when_the_account_moved() {
        let (account, entry) = account();
        let c = commit(&account, vec![(request_key(), &entry)]);
        let both = [
            reason("ConditionalCheckFailed", Some(account_item(&account))),
            reason("ConditionalCheckFailed", Some(entry_item("REQ#k1", &entry))),
        ];
        match interpret_cancellation(&both, &c) {
            Ok(CommitError::KeyTaken(Some(record))) => assert_eq!(record, request_record()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_renewal_written_by_another_writer_means_stale_not_replay() {
        let (account, entry) = account();
        let renewal = EntryKey::Renewal(account.period.start);
        let c = commit(&account, vec![(renewal, &entry), (request_key(), &entry)]);
        let reasons = [
            reason("ConditionalCheckFailed", Some(account_item(&account))),
            reason("ConditionalCheckFailed", Some(entry_item("RENEWAL#2026-03-01", &entry))),
            reason("None", None),
        ];
        match interpret_cancellation(&reasons, &c) {
            Ok(CommitError::Stale(Some(fresh))) => assert_eq!(*fresh, account),
            other => panic!("{other:?}"),
        }
    }
}
