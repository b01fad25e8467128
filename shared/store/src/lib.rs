//! The ledger's store: the ports (what the ledger's operations need from
//! storage, one trait per capability), the item layout, and the DynamoDB
//! adapter behind the ports.

pub mod dynamo;
pub mod items;
pub mod port;

pub use dynamo::DynamoLedgerStore;
pub use port::{
    AccountStore, Claim, Commit, CommitError, DuePage, EarlierEntry, EntryKey, HeldResult, HistoryPage, HistoryQuery,
    HistoryStore, KeptRequest, Receipt, RenewalIndex, RequestStore, ResultStore, SideWrite, StoreError, StoredEntry,
};
