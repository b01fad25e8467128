//! The ledger's store: the ports (what the ledger's operations need from
//! storage, one trait per capability), the item layout, and the DynamoDB
//! adapter behind the ports.

pub mod bus;
pub mod dynamo;
pub mod exports;
pub mod items;
pub mod port;

pub use bus::EventBridgeBus;
pub use dynamo::DynamoLedgerStore;
pub use exports::{ExportFiles, ExportJob, ExportState};
pub use port::{
    AccountStore, BusEvent, Claim, Commit, CommitError, DuePage, EarlierEntry, EntryKey, EventBus, HeldResult,
    HistoryFilter, HistoryKey, HistoryPage, HistoryPosition, HistoryQuery, HistoryStore, Kept, KeptRequest,
    Notification, NotificationStore, Receipt, RenewalIndex, RequestStore, ResultStore, RollupStore, SideWrite,
    StoreError, StoredEntry,
};
