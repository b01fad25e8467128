//! The store port: what the ledger needs from storage, in domain words.
//! Only the adapter knows DynamoDB's types.

use std::future::Future;

use chrono::{DateTime, NaiveDate, Utc};
use ledger_domain::{Account, IdempotencyKey, LedgerEntry, OrgId, UserId};
use serde::{Deserialize, Serialize};

/// What makes an entry unique, and so idempotent: the client's key, or the
/// period a renewal opens (renewing twice writes once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKey {
    Request(IdempotencyKey),
    Renewal(NaiveDate),
}

/// The response a request got, kept with its entry so a retry replays it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

/// Request fingerprint and original reply: the idempotency record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub fingerprint: String,
    pub reply: Reply,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StoredEntry {
    pub key: EntryKey,
    pub entry: LedgerEntry,
    pub request: Option<RequestRecord>,
}

/// A name that may be claimed once across all organizations (e.g. a payment
/// provider's reference), pointing at the request that claimed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guard {
    pub name: String,
    pub claimed_by: IdempotencyKey,
}

/// One atomic write: the account's new state, the entries that explain it,
/// and any guards. All or nothing.
#[derive(Debug)]
pub struct Commit<'a> {
    /// `None`: the account must not exist yet (provisioning).
    pub expected_seq: Option<u64>,
    pub account: &'a Account,
    pub entries: Vec<StoredEntry>,
    pub guards: Vec<Guard>,
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The account moved on (or exists / is gone); here is its fresh state.
    #[error("the account changed since it was read")]
    Stale(Option<Box<Account>>),
    /// The request's key is taken: the request was applied (or refused)
    /// before; here is what it got.
    #[error("the request's key is taken")]
    KeyTaken(Option<RequestRecord>),
    #[error("guard {name} is claimed by another request")]
    GuardTaken {
        name: String,
        org: OrgId,
        claimed_by: IdempotencyKey,
    },
    /// A competing transaction or throttling: safe to retry after a pause.
    #[error("transient conflict")]
    Conflict,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage request failed: {0}")]
    Request(String),
    #[error("stored item is malformed: {0}")]
    Malformed(String),
}

/// A page of the ledger, newest first.
#[derive(Debug)]
pub struct LedgerPage {
    pub entries: Vec<LedgerEntry>,
    /// The seq to continue below, when there is more.
    pub next_before: Option<u64>,
}

pub trait LedgerStore: Send + Sync {
    /// Strongly consistent read of the account.
    fn load_account(&self, org: &OrgId) -> impl Future<Output = Result<Option<Account>, StoreError>> + Send;

    /// The account and what its request key holds, in one consistent read.
    fn load_account_and_request(
        &self,
        org: &OrgId,
        key: &IdempotencyKey,
    ) -> impl Future<Output = Result<(Option<Account>, Option<RequestRecord>), StoreError>> + Send;

    /// What a request key holds: the original request's fingerprint and reply.
    fn load_request(
        &self,
        org: &OrgId,
        key: &IdempotencyKey,
    ) -> impl Future<Output = Result<Option<RequestRecord>, StoreError>> + Send;

    /// Keeps a refusal under its key, so a retry gets the same answer (until
    /// `expires_at`). Writes nothing and returns the record when the key is
    /// taken already.
    fn record_refusal(
        &self,
        org: &OrgId,
        key: &IdempotencyKey,
        record: &RequestRecord,
        expires_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<RequestRecord>, StoreError>> + Send;

    fn commit(&self, commit: Commit<'_>) -> impl Future<Output = Result<(), CommitError>> + Send;

    fn ledger_page(
        &self,
        org: &OrgId,
        limit: u32,
        before_seq: Option<u64>,
        user: Option<&UserId>,
    ) -> impl Future<Output = Result<LedgerPage, StoreError>> + Send;
}
