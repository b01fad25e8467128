//! The ledger's store: the port (what the ledger needs from storage), the
//! DynamoDB adapter behind it, and the executor that makes every domain
//! decision atomic.

pub mod dynamo;
pub mod ledger;
pub mod port;

pub use dynamo::DynamoLedgerStore;
pub use ledger::{Applied, Decision, Idempotency, Ledger, LedgerError, RetryPolicy, MAX_ATTEMPTS};
pub use port::{
    Commit, CommitError, EntryKey, Guard, LedgerPage, LedgerStore, Reply, RequestRecord, StoreError, StoredEntry,
};
