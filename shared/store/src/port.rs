//! The store's ports: what the ledger's operations need from storage, one
//! trait per capability, in domain words. Only the adapter knows DynamoDB.

use std::future::Future;

use chrono::{DateTime, NaiveDate, Utc};
use ledger_domain::entry::Placement;
use ledger_domain::{
    Account, ActionId, AlertId, CampaignId, Channel, Credits, HistoryScope, IdempotencyKey, LedgerEntry, MeterId,
    OrgId, Subject, Unit, UnitState, Unlock, UserId,
};

/// What makes an entry unique, and so idempotent: the client's key, or the
/// period a renewal opens (renewing twice writes once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKey {
    Request(IdempotencyKey),
    Renewal(NaiveDate),
}

impl EntryKey {
    /// The id clients see for the entry written under this key.
    pub fn entry_id(&self) -> String {
        crate::items::entry_id(&crate::items::entry_sk(self))
    }
}

/// What a request got, kept under its key so that a retry gets it again:
/// the request's fingerprint, and its outcome, opaque to the store (the
/// service layer encodes and reads it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub fingerprint: String,
    pub outcome: String,
}

/// What a request key holds: the receipt, and the entry the request wrote
/// (none for a kept refusal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptRequest {
    pub receipt: Receipt,
    pub entry: Option<LedgerEntry>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StoredEntry {
    pub key: EntryKey,
    pub entry: LedgerEntry,
    /// The receipt of the request that wrote it; none for a renewal.
    pub receipt: Option<Receipt>,
}

/// A name claimed once across every organization (e.g. a payment
/// provider's reference), pointing at the request that claimed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub name: String,
    pub claimed_by: IdempotencyKey,
}

/// An item a change writes besides the account and its entry, in the same
/// transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SideWrite {
    /// Unlocks a subject for the organization until `until` (`None`:
    /// forever), unless it is unlocked already (an unlock that has not run
    /// out at `now`): then the whole change is refused.
    /// The unlock names the change's entry.
    Unlock {
        action: ActionId,
        subject: Subject,
        until: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    },
    /// Takes a lead slot for a contact (refused if the contact holds one).
    TakeSlot {
        meter: MeterId,
        contact: Subject,
        campaign: Option<String>,
    },
    /// Writes a reservation unit in its new state: a new unit only where the
    /// contact has none or a released one, a moved unit only from `from`.
    PutUnit { unit: Unit, from: Option<UnitState> },
    /// Frees a contact's slot (refused if it holds none).
    FreeSlot { meter: MeterId, contact: Subject },
    /// Keeps a billable result unpaid, under the entry number that held it
    /// (so held results list in arrival order).
    Hold { seq: u64, report: String },
    /// A held result is settled: its item goes.
    Release { seq: u64 },
}

/// A held result as stored: its place in arrival order and the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldResult {
    pub seq: u64,
    pub report: String,
}

/// An entry a batched change writes before its last one, with what the
/// entries after it add to each meter (so the sequencer can place it:
/// its balance after is the account's minus `later`).
#[derive(Clone, Debug, PartialEq)]
pub struct EarlierEntry {
    pub stored: StoredEntry,
    pub later: std::collections::BTreeMap<ledger_domain::MeterId, ledger_domain::Credits>,
}

/// One atomic write: the account's change from the state it was decided on,
/// the entry that explains it (after any earlier entries of a batch), any
/// claims and side writes. All or nothing.
#[derive(Debug)]
pub struct Commit<'a> {
    /// The state the change was decided on; `None`: the account must not
    /// exist yet (provisioning).
    pub before: Option<&'a Account>,
    pub account: &'a Account,
    pub entry: StoredEntry,
    /// A batch's entries before `entry`, in order (usually none).
    pub earlier: Vec<EarlierEntry>,
    pub claims: Vec<Claim>,
    pub side: Vec<SideWrite>,
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The account moved on (or exists / is gone); here is its fresh state.
    #[error("the account changed since it was read")]
    Stale(Option<Box<Account>>),
    /// The request's key is taken: the request was applied (or refused)
    /// before; here is what it got.
    #[error("the request's key is taken")]
    KeyTaken(Option<Box<KeptRequest>>),
    #[error("{name} is claimed by another request")]
    Claimed {
        name: String,
        org: OrgId,
        claimed_by: IdempotencyKey,
    },
    /// A subject's item (its unlock, its lead slot) changed meanwhile:
    /// read it again and decide again.
    #[error("a subject's unlock or slot changed meanwhile")]
    SubjectChanged,
    /// One of a batch's keys is taken (a redelivery raced it): apply the
    /// batch's requests one by one instead.
    #[error("a key of the batch is taken")]
    BatchKeyTaken,
    /// A held result the change settles is gone: settled already.
    #[error("the held result was settled already")]
    AlreadySettled,
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
    /// Throttled, or no answer: the same request may succeed later.
    #[error("storage unavailable for now (throttled or unanswered): {0}")]
    Unavailable(String),
    #[error("stored item is malformed: {0}")]
    Malformed(String),
}

/// Which entries a history page reads, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryQuery {
    pub scope: HistoryScope,
    pub filter: HistoryFilter,
    pub limit: u32,
    /// Continue after this entry (a cursor's position).
    pub after: Option<HistoryPosition>,
}

/// Which entries a history page lists: a time range and at most one of a
/// user, an action or a campaign, each served by an index keyed for it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryFilter {
    /// From this instant on.
    pub from: Option<DateTime<Utc>>,
    /// Before this instant.
    pub to: Option<DateTime<Utc>>,
    pub by: Option<HistoryKey>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HistoryKey {
    User(UserId),
    Action(ActionId),
    Campaign(CampaignId),
}

/// Where a page ended: the last entry's history key and table key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryPosition {
    pub placed: String,
    pub sk: String,
}

/// A page of the ledger, newest first: full unless it is the last.
#[derive(Debug)]
pub struct HistoryPage {
    pub entries: Vec<LedgerEntry>,
    /// Where the next page starts, when there is more.
    pub next: Option<HistoryPosition>,
}

/// Accounts due for renewal, oldest due first.
#[derive(Debug)]
pub struct DuePage {
    pub accounts: Vec<(OrgId, DateTime<Utc>)>,
    /// Where the next page starts, when there may be more.
    pub next: Option<String>,
}

/// Accounts: read the state, and write a change of it atomically.
pub trait AccountStore: Send + Sync {
    /// Strongly consistent read of the account.
    fn load_account(&self, org: &OrgId) -> impl Future<Output = Result<Option<Account>, StoreError>> + Send;

    /// The account and what its request key holds, in one consistent read.
    fn load_account_and_request(
        &self,
        org: &OrgId,
        key: &IdempotencyKey,
    ) -> impl Future<Output = Result<(Option<Account>, Option<KeptRequest>), StoreError>> + Send;

    fn commit(&self, commit: Commit<'_>) -> impl Future<Output = Result<(), CommitError>> + Send;

    /// Some of an organization's units still reserved past their deadline
    /// (a bounded read: what an account returns at its next use). A store
    /// that keeps no units has none.
    fn overdue_units(
        &self,
        _org: &OrgId,
        _due_by: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<Unit>, StoreError>> + Send {
        async { Ok(Vec::new()) }
    }
}

/// Request keys: what a key holds, and refusals kept under their key.
pub trait RequestStore: Send + Sync {
    fn load_request(
        &self,
        org: &OrgId,
        key: &IdempotencyKey,
    ) -> impl Future<Output = Result<Option<KeptRequest>, StoreError>> + Send;

    /// Who claimed `name` (a payment reference, a reversed entry), if anyone:
    /// the organization and the request key.
    fn load_claim(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<(OrgId, IdempotencyKey)>, StoreError>> + Send;

    /// Keeps an answer that wrote nothing (a refusal, nothing to change)
    /// under its key, so a retry gets the same answer (until `expires_at`).
    /// Writes nothing and returns what the key holds when it is taken already.
    fn keep_answer(
        &self,
        org: &OrgId,
        key: &IdempotencyKey,
        receipt: &Receipt,
        expires_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<KeptRequest>, StoreError>> + Send;
}

/// The ledger's history.
pub trait HistoryStore: Send + Sync {
    fn history(
        &self,
        org: &OrgId,
        query: &HistoryQuery,
    ) -> impl Future<Output = Result<HistoryPage, StoreError>> + Send;

    /// One entry by its id, placed or not yet.
    fn entry(&self, org: &OrgId, id: &str) -> impl Future<Output = Result<Option<LedgerEntry>, StoreError>> + Send;

    /// Records where a committed entry sits (the sequencer's write); placing
    /// it again writes the same.
    /// `at`, when the change was decided, keys it in the history indexes.
    fn place(
        &self,
        org: &OrgId,
        entry_sk: &str,
        placement: &Placement,
        at: Option<DateTime<Utc>>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Accounts by when they are next due: what the scheduled renewal reads.
pub trait RenewalIndex: Send + Sync {
    /// Accounts whose renewal is due at or before `due_by`, a page at a time.
    fn due_accounts(
        &self,
        due_by: DateTime<Utc>,
        limit: u32,
        after: Option<&str>,
    ) -> impl Future<Output = Result<DuePage, StoreError>> + Send;
}

/// Per-subject unlocks and held results: what success-only charging reads.
pub trait ResultStore: Send + Sync {
    /// A subject's unlock for an action, read strongly consistent.
    fn load_unlock(
        &self,
        org: &OrgId,
        action: &ActionId,
        subject: &Subject,
    ) -> impl Future<Output = Result<Option<Unlock>, StoreError>> + Send;

    /// The unlocks of several subjects of one action (those that have one).
    fn load_unlocks(
        &self,
        org: &OrgId,
        action: &ActionId,
        subjects: &[Subject],
    ) -> impl Future<Output = Result<std::collections::BTreeMap<Subject, Unlock>, StoreError>> + Send;

    /// The account and whether each of several request keys is taken, in
    /// one consistent read (a batch of results decides on it).
    fn load_account_and_keys(
        &self,
        org: &OrgId,
        keys: &[IdempotencyKey],
    ) -> impl Future<Output = Result<(Option<Account>, usize), StoreError>> + Send;

    /// A campaign's units of these contacts (those that have one).
    fn load_units(
        &self,
        org: &OrgId,
        campaign: &CampaignId,
        contacts: &[Subject],
    ) -> impl Future<Output = Result<Vec<Unit>, StoreError>> + Send;

    /// Reserved units whose deadline passed by `due_by`, up to `limit`
    /// (a Query of the deadline index per shard, never a Scan). A unit
    /// leaves the index when it moves on, so reading from the start again
    /// finds what is still due.
    fn due_units(
        &self,
        due_by: DateTime<Utc>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<(OrgId, CampaignId, Subject)>, StoreError>> + Send;

    /// Which of these contacts hold a slot of a capacity meter.
    fn held_slots(
        &self,
        org: &OrgId,
        meter: &MeterId,
        contacts: &[Subject],
    ) -> impl Future<Output = Result<std::collections::BTreeSet<Subject>, StoreError>> + Send;

    /// An organization's approvals still pending (units of the approvals
    /// campaign still reserved).
    fn pending_approvals(&self, org: &OrgId) -> impl Future<Output = Result<Vec<Unit>, StoreError>> + Send;

    /// The oldest held results, in arrival order.
    fn held_results(&self, org: &OrgId, limit: u32)
        -> impl Future<Output = Result<Vec<HeldResult>, StoreError>> + Send;
}

/// An in-app notification, and the email event it stands for: one per
/// alert crossing, keyed by the crossing entry's number and the alert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// `<entry number, 20 digits>.<alert id>`: newest first by key.
    pub id: String,
    pub alert: AlertId,
    pub meter: MeterId,
    pub channel: Channel,
    /// The level in credits the balance fell below, and what was left.
    pub level: Credits,
    pub left: Credits,
    /// The entry that crossed it.
    pub entry_seq: u64,
    pub entry: String,
    pub at: DateTime<Utc>,
    pub read: bool,
    /// Whether its email event is on the bus.
    pub published: bool,
}

impl Notification {
    pub fn id_of(entry_seq: u64, alert: &AlertId) -> String {
        format!("{entry_seq:020}.{alert}")
    }
}

/// What keeping a notification found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kept {
    New,
    /// Kept before (a redelivered record): as it is now.
    Existing(Notification),
    /// The period's cap is reached: nothing kept.
    CapReached,
}

/// Notifications derived from the stream, and read over HTTP.
pub trait NotificationStore: Send + Sync {
    /// Keeps a notification once; if one is kept under its id already,
    /// returns that one (a redelivered stream record). With a cap, it is
    /// kept only while the period (from its start) holds fewer than `cap`.
    fn keep_notification(
        &self,
        org: &OrgId,
        note: &Notification,
        cap: Option<(NaiveDate, u32)>,
    ) -> impl Future<Output = Result<Kept, StoreError>> + Send;

    fn mark_published(&self, org: &OrgId, id: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Newest first, `limit` a page, from after `cursor`.
    fn notifications(
        &self,
        org: &OrgId,
        limit: u32,
        cursor: Option<String>,
    ) -> impl Future<Output = Result<(Vec<Notification>, Option<String>), StoreError>> + Send;

    /// Marks one read; false when there is no such notification.
    fn mark_read(&self, org: &OrgId, id: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// An event for the product (on EventBridge in AWS): `id` lets receivers
/// drop a redelivered one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusEvent {
    pub id: String,
    pub detail_type: String,
    pub detail: String,
}

/// Where derived events go.
pub trait EventBus: Send + Sync {
    fn publish(&self, events: &[BusEvent]) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// One day's usage rollup: its counters by name.
pub type DayRollup = (NaiveDate, std::collections::BTreeMap<String, i64>);

/// Day rollups of usage, built from the stream (see [`ledger_domain::usage`]).
pub trait RollupStore: Send + Sync {
    /// Adds one entry's counters to its day's rollup, once: false when the
    /// entry was added before (a redelivered stream record). The mark that
    /// says so is kept until `mark_until` (past the stream's 24 hours).
    fn roll_up(
        &self,
        org: &OrgId,
        entry_sk: &str,
        day: NaiveDate,
        counters: &[(String, i64)],
        mark_until: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The day rollups from `from` to `to`, both included, in day order.
    fn rollups(
        &self,
        org: &OrgId,
        from: NaiveDate,
        to: NaiveDate,
    ) -> impl Future<Output = Result<Vec<DayRollup>, StoreError>> + Send;
}
