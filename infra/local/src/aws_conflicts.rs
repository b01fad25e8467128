//! DynamoDB's transaction rule on AWS, brought to the local stack. AWS
//! refuses a transaction that touches an item another transaction is
//! writing (`TransactionConflict`); DynamoDB Local serialises them and never
//! does. Wrapped around the accounts port, this refuses a commit while
//! another commit on the same account is in flight, so the real executor
//! can be measured against the conflicts AWS would raise (`make bench`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ledger_domain::{Account, IdempotencyKey, OrgId};
use ledger_store::{AccountStore, Commit, CommitError, KeptRequest, StoreError};

/// One per simulated table: clones (one per function instance) share it.
#[derive(Clone)]
pub struct AwsConflicts<S> {
    inner: S,
    table: Arc<Table>,
}

#[derive(Default)]
struct Table {
    in_flight: Mutex<HashMap<OrgId, u32>>,
    conflicts: AtomicU64,
}

impl<S> AwsConflicts<S> {
    pub fn new(inner: S) -> Self {
        AwsConflicts {
            inner,
            table: Arc::default(),
        }
    }

    /// Commits refused so far, across every clone.
    pub fn conflicts(&self) -> u64 {
        self.table.conflicts.load(Ordering::Relaxed)
    }
}

impl<S: AccountStore> AccountStore for AwsConflicts<S> {
    async fn load_account(&self, org: &OrgId) -> Result<Option<Account>, StoreError> {
        self.inner.load_account(org).await
    }

    async fn load_account_and_request(
        &self,
        org: &OrgId,
        key: &IdempotencyKey,
    ) -> Result<(Option<Account>, Option<KeptRequest>), StoreError> {
        self.inner.load_account_and_request(org, key).await
    }

    async fn commit(&self, commit: Commit<'_>) -> Result<(), CommitError> {
        let org = commit.account.org.clone();
        {
            let mut in_flight = self.table.in_flight.lock().expect("in-flight lock");
            let n = in_flight.entry(org.clone()).or_default();
            if *n > 0 {
                self.table.conflicts.fetch_add(1, Ordering::Relaxed);
                return Err(CommitError::Conflict);
            }
            *n += 1;
        }
        let result = self.inner.commit(commit).await;
        self.table.in_flight.lock().expect("in-flight lock").remove(&org);
        result
    }
}
