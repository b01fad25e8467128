//! Executes ledger commands atomically: guess the account's state (cached
//! from this process's last write: no read on the fast path), let the domain
//! decide, write state + entries in one conditional transaction, and on a
//! lost race decide again from the fresh state the failure handed back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ledger_domain::{Account, Catalog, Clock, DomainError, IdempotencyKey, LedgerEntry, OrgId, UserId};
use tracing::{debug, warn};

use crate::port::{
    Commit, CommitError, EntryKey, Guard, LedgerPage, LedgerStore, Reply, RequestRecord, StoreError, StoredEntry,
};

/// How long a change keeps retrying lost races before the caller gets a
/// retryable 503 (nothing written): at most `max_attempts` commits, within
/// `budget`, well inside the function's timeout.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub budget: Duration,
}

pub const MAX_ATTEMPTS: u32 = 64;
/// How long a kept refusal answers retries of its key (then TTL removes it).
pub const REFUSAL_KEPT_DAYS: i64 = 30;

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: MAX_ATTEMPTS,
            budget: Duration::from_secs(5),
        }
    }
}
/// Accounts remembered per process for the no-read fast path.
const CACHE_CAPACITY: usize = 4_096;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("this Idempotency-Key was used for a different request")]
    IdempotencyKeyReused,
    #[error("this payment reference was recorded by another request")]
    PaymentReferenceReused,
    #[error("too much contention on the account; retry")]
    Contention,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The request identity a mutation carries: its key and what it asked.
#[derive(Clone, Debug)]
pub struct Idempotency {
    pub key: IdempotencyKey,
    /// Hash of route, caller and canonical body: a replay must match it.
    pub fingerprint: String,
}

impl Idempotency {
    /// What this request got, to keep under its key.
    fn record(&self, reply: &Reply) -> RequestRecord {
        RequestRecord {
            fingerprint: self.fingerprint.clone(),
            reply: reply.clone(),
        }
    }
}

/// What the caller gets: the reply, and whether it is a replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub reply: Reply,
    pub replayed: bool,
}

/// The domain's decision for one attempt: the entry and the reply to keep with it.
pub type Decision = (LedgerEntry, Reply);

pub struct Ledger<S> {
    store: S,
    catalog: Arc<Catalog>,
    clock: Arc<dyn Clock>,
    cache: Mutex<HashMap<OrgId, Account>>,
    retry: RetryPolicy,
}

impl<S: LedgerStore> Ledger<S> {
    pub fn new(store: S, catalog: Arc<Catalog>, clock: Arc<dyn Clock>) -> Self {
        Ledger {
            store,
            catalog,
            clock,
            cache: Mutex::new(HashMap::new()),
            retry: RetryPolicy::default(),
        }
    }

    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    fn cached(&self, org: &OrgId) -> Option<Account> {
        self.cache.lock().expect("cache lock").get(org).cloned()
    }

    fn remember(&self, account: Account) {
        let mut cache = self.cache.lock().expect("cache lock");
        if cache.len() >= CACHE_CAPACITY && !cache.contains_key(&account.org) {
            cache.clear();
        }
        cache.insert(account.org.clone(), account);
    }

    fn forget(&self, org: &OrgId) {
        self.cache.lock().expect("cache lock").remove(org);
    }

    /// The account as of now: read fresh, renewed in memory if its period
    /// has ended (a late schedule never shows last month's allowance).
    pub async fn current_account(&self, org: &OrgId) -> Result<Account, LedgerError> {
        let mut account = self
            .store
            .load_account(org)
            .await?
            .ok_or(DomainError::AccountNotFound)?;
        account.renew_if_due(&self.catalog, self.clock.now())?;
        Ok(account)
    }

    pub async fn ledger_page(
        &self,
        org: &OrgId,
        limit: u32,
        before_seq: Option<u64>,
        user: Option<&UserId>,
    ) -> Result<LedgerPage, LedgerError> {
        Ok(self.store.ledger_page(org, limit, before_seq, user).await?)
    }

    /// Applies a change to an existing account, renewing it first if due.
    /// `decide` may run several times (once per attempt); it must be pure.
    /// A final refusal that `keep_refusal` renders (e.g. a 402) is kept under
    /// the request's key, so a retry gets the same answer.
    pub async fn apply<F, K>(
        &self,
        org: &OrgId,
        request: &Idempotency,
        guard: Option<String>,
        mut decide: F,
        keep_refusal: K,
    ) -> Result<Applied, LedgerError>
    where
        F: FnMut(&mut Account, &Catalog, DateTime<Utc>) -> Result<Decision, DomainError>,
        K: Fn(&DomainError) -> Option<Reply>,
    {
        let entry_key = EntryKey::Request(request.key.clone());
        let mut guess = self.cached(org);
        // Whether the state in hand was read together with the key's entry:
        // only then is a refusal final (a cached guess may be stale, and the
        // key may name an earlier success that must be replayed).
        let mut fresh_with_key = false;
        let started = Instant::now();
        let mut backoff = Backoff::default();
        for attempt in 0..self.retry.max_attempts {
            if attempt > 0 && started.elapsed() > self.retry.budget {
                break;
            }
            let account = match guess.take() {
                Some(a) => a,
                None => {
                    let (account, existing) = self.store.load_account_and_request(org, &request.key).await?;
                    if existing.is_some() {
                        return self.replay(existing, request);
                    }
                    fresh_with_key = true;
                    account.ok_or(DomainError::AccountNotFound)?
                }
            };
            let expected_seq = account.seq;
            let mut next = account;
            let now = self.clock.now();
            let mut entries = Vec::with_capacity(2);
            let decided = next.renew_if_due(&self.catalog, now).and_then(|renewal| {
                if let Some(renewal) = renewal {
                    entries.push(StoredEntry {
                        key: EntryKey::Renewal(next.period.start),
                        entry: renewal,
                        request: None,
                    });
                }
                decide(&mut next, &self.catalog, now)
            });
            let (entry, reply) = match decided {
                Ok(d) => d,
                Err(refusal) if !fresh_with_key => {
                    debug!(%org, %refusal, "refused on a cached guess; reading fresh state");
                    continue;
                }
                Err(refusal) => {
                    let Some(reply) = keep_refusal(&refusal) else {
                        return Err(refusal.into());
                    };
                    let record = request.record(&reply);
                    let expires_at = now + chrono::Duration::days(REFUSAL_KEPT_DAYS);
                    return match self
                        .store
                        .record_refusal(org, &request.key, &record, expires_at)
                        .await?
                    {
                        None => Ok(Applied { reply, replayed: false }),
                        // Another request under the key got there first.
                        taken => self.replay(taken, request),
                    };
                }
            };
            entries.push(StoredEntry {
                key: entry_key.clone(),
                entry,
                request: Some(request.record(&reply)),
            });
            let guards = guard
                .iter()
                .map(|name| Guard {
                    name: name.clone(),
                    claimed_by: request.key.clone(),
                })
                .collect();
            let commit = Commit {
                expected_seq: Some(expected_seq),
                account: &next,
                entries,
                guards,
            };
            match self.store.commit(commit).await {
                Ok(()) => {
                    self.remember(next);
                    return Ok(Applied { reply, replayed: false });
                }
                Err(CommitError::Stale(Some(fresh))) => {
                    debug!(%org, attempt, "lost a race; deciding again from the fresh state");
                    guess = Some(*fresh);
                    // The same transaction found no entry under the key, so
                    // this state is as good as one read with it.
                    fresh_with_key = true;
                    // The first retry goes at once with the state just handed
                    // back; after that, many writers on one account spread out.
                    if attempt > 0 {
                        tokio::time::sleep(backoff.next()).await;
                    }
                }
                Err(CommitError::Stale(None)) => {
                    self.forget(org);
                    return Err(DomainError::AccountNotFound.into());
                }
                Err(CommitError::KeyTaken(existing)) => return self.replay(existing, request),
                Err(CommitError::GuardTaken {
                    name,
                    org: owner,
                    claimed_by,
                }) => {
                    if owner != *org {
                        debug!(%org, guard = name, "guard claimed by another organization");
                        return Err(LedgerError::PaymentReferenceReused);
                    }
                    return self.replay_guarded(org, &name, &claimed_by, request).await;
                }
                Err(CommitError::Conflict) => {
                    warn!(%org, attempt, "transaction conflict; backing off");
                    self.forget(org);
                    fresh_with_key = false;
                    tokio::time::sleep(backoff.next()).await;
                }
                Err(CommitError::Store(e)) => return Err(e.into()),
            }
        }
        Err(LedgerError::Contention)
    }

    /// Provisions an account that must not exist yet. When it does, `existing`
    /// answers from its current state (no write).
    pub async fn create<F, E>(&self, request: &Idempotency, provision: F, existing: E) -> Result<Applied, LedgerError>
    where
        F: FnOnce(&Catalog, DateTime<Utc>) -> Result<(Account, Decision), DomainError>,
        E: FnOnce(&Account) -> Result<Reply, DomainError>,
    {
        let entry_key = EntryKey::Request(request.key.clone());
        let (account, (entry, reply)) = provision(&self.catalog, self.clock.now())?;
        let entries = vec![StoredEntry {
            key: entry_key,
            entry,
            request: Some(request.record(&reply)),
        }];
        let commit = Commit {
            expected_seq: None,
            account: &account,
            entries,
            guards: Vec::new(),
        };
        match self.store.commit(commit).await {
            Ok(()) => {
                self.remember(account);
                Ok(Applied { reply, replayed: false })
            }
            Err(CommitError::KeyTaken(existing)) => self.replay(existing, request),
            Err(CommitError::Stale(Some(current))) => {
                let reply = existing(&current)?;
                Ok(Applied { reply, replayed: false })
            }
            Err(CommitError::Conflict) => Err(LedgerError::Contention),
            Err(CommitError::Stale(None)) | Err(CommitError::GuardTaken { .. }) => {
                Err(StoreError::Request("unexpected cancellation while provisioning".into()).into())
            }
            Err(CommitError::Store(e)) => Err(e.into()),
        }
    }

    fn replay(&self, existing: Option<RequestRecord>, request: &Idempotency) -> Result<Applied, LedgerError> {
        match existing {
            Some(record) if record.fingerprint == request.fingerprint => Ok(Applied {
                reply: record.reply,
                replayed: true,
            }),
            _ => Err(LedgerError::IdempotencyKeyReused),
        }
    }

    /// A guard (payment reference) is claimed: the same request under another
    /// key replays the original; anything else is refused.
    async fn replay_guarded(
        &self,
        org: &OrgId,
        name: &str,
        claimed_by: &IdempotencyKey,
        request: &Idempotency,
    ) -> Result<Applied, LedgerError> {
        let original = self.store.load_request(org, claimed_by).await?;
        match original {
            Some(record) if record.fingerprint == request.fingerprint => Ok(Applied {
                reply: record.reply,
                replayed: true,
            }),
            _ => {
                debug!(%org, guard = name, "guard claimed by a different request");
                Err(LedgerError::PaymentReferenceReused)
            }
        }
    }
}

/// Decorrelated-jitter backoff: each pause is random between the base and
/// three times the last one, capped. Writers that keep colliding wait longer,
/// and never in lockstep.
#[derive(Default)]
struct Backoff {
    last_us: u64,
}

impl Backoff {
    const BASE_US: u64 = 1_000;
    const CAP_US: u64 = 250_000;

    fn next(&mut self) -> Duration {
        let high = (self.last_us * 3).clamp(Self::BASE_US + 1, Self::CAP_US);
        self.last_us = fastrand::u64(Self::BASE_US..high);
        Duration::from_micros(self.last_us)
    }
}
