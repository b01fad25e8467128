//! Makes every decision of the domain atomic: guess the account's state
//! (cached from this process's last write: no read on the fast path), let
//! the domain decide, write state + entries in one conditional transaction,
//! and on a lost race decide again from the fresh state the failure handed
//! back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ledger_domain::entry::Placement;
use ledger_domain::{
    Account, Actor, Catalog, Clock, DomainError, IdempotencyKey, LedgerEntry, OrgId, Transition, Unit, UnitState,
};
use ledger_store::{
    AccountStore, Claim, Commit, CommitError, EntryKey, KeptRequest, Receipt, RequestStore, SideWrite, StoreError,
    StoredEntry,
};
use tracing::{debug, warn};

use crate::outcome::{Applied, Outcome};
use crate::results::attempt_key;
use crate::ServiceError;

/// How long a change keeps retrying lost races before the caller gets a
/// retryable contention error (nothing written): at most `max_attempts`
/// commits, within `budget`, well inside the function's timeout.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub budget: Duration,
}

pub const MAX_ATTEMPTS: u32 = 64;
/// How long a kept answer that wrote nothing (a refusal, nothing to
/// change) answers retries of its key (then TTL removes it).
pub const ANSWER_KEPT_DAYS: i64 = 30;
/// Accounts remembered per process for the no-read fast path.
const CACHE_CAPACITY: usize = 4_096;

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: MAX_ATTEMPTS,
            budget: Duration::from_secs(5),
        }
    }
}

/// The request identity a mutation carries: its key and what it asked.
#[derive(Clone, Debug)]
pub struct Idempotency {
    pub key: IdempotencyKey,
    /// Hash of what was asked and by whom (for HTTP: route, caller and
    /// canonical body): a replay must match it.
    pub fingerprint: String,
}

impl Idempotency {
    pub(crate) fn receipt(&self, outcome: &Outcome) -> Receipt {
        Receipt {
            fingerprint: self.fingerprint.clone(),
            outcome: outcome.encode(),
        }
    }
}

/// The ledger's operations over their ports: accounts, request keys and
/// history may live in different stores (a test wraps one to inject faults).
pub struct Ledger<A, R = A, H = A> {
    pub(crate) accounts: A,
    pub(crate) requests: R,
    pub(crate) history: H,
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) clock: Arc<dyn Clock>,
    cache: Mutex<HashMap<OrgId, Account>>,
    retry: RetryPolicy,
    /// Where history exports go, if this function writes or links them.
    pub(crate) exports: Option<ledger_store::ExportFiles>,
}

impl<S: Clone> Ledger<S, S, S> {
    /// A ledger whose ports are all one store.
    pub fn new(store: S, catalog: Arc<Catalog>, clock: Arc<dyn Clock>) -> Self {
        Ledger::over(store.clone(), store.clone(), store, catalog, clock)
    }
}

impl<A, R, H> Ledger<A, R, H> {
    pub fn over(accounts: A, requests: R, history: H, catalog: Arc<Catalog>, clock: Arc<dyn Clock>) -> Self {
        Ledger {
            accounts,
            requests,
            history,
            catalog,
            clock,
            cache: Mutex::new(HashMap::new()),
            retry: RetryPolicy::default(),
            exports: None,
        }
    }

    pub fn with_exports(mut self, exports: ledger_store::ExportFiles) -> Self {
        self.exports = Some(exports);
        self
    }

    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The ledger's clock: what views of gauges count as today.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn accounts(&self) -> &A {
        &self.accounts
    }

    pub(crate) fn cached(&self, org: &OrgId) -> Option<Account> {
        self.cache.lock().expect("cache lock").get(org).cloned()
    }

    pub(crate) fn remember(&self, account: Account) {
        let mut cache = self.cache.lock().expect("cache lock");
        if cache.len() >= CACHE_CAPACITY && !cache.contains_key(&account.org) {
            cache.clear();
        }
        cache.insert(account.org.clone(), account);
    }

    fn forget(&self, org: &OrgId) {
        self.cache.lock().expect("cache lock").remove(org);
    }
}

/// What provisioning found: the request applied (or replayed), or an
/// account that exists already (the request then means a change of it).
/// Short-lived: no point boxing the answer.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Created {
    Applied(Applied),
    Exists,
}

/// Changes an account makes at its next use to return units past their
/// deadline (a campaign's chunk each), before deciding the request.
const LAZY_OVERDUE_CHANGES: u32 = 2;

/// The overdue units of one campaign, at most a transaction's worth: one
/// change returns them.
fn overdue_of_one_campaign(mut units: Vec<Unit>) -> Vec<Unit> {
    if let Some(campaign) = units.first().map(|u| u.campaign.clone()) {
        units.retain(|u| u.campaign == campaign);
        units.truncate(ledger_domain::MAX_UNITS);
    }
    units
}

/// Unit items written as they expire: each conditional on still being reserved.
pub(crate) fn expired_units(units: Vec<Unit>) -> Vec<SideWrite> {
    units
        .into_iter()
        .map(|unit| SideWrite::PutUnit {
            unit,
            from: Some(UnitState::Reserved),
        })
        .collect()
}

/// The domain's decision for one attempt: the entry to write and the outcome to keep with it.
pub type Decision = (LedgerEntry, Outcome);

/// A decision that also writes items beside the account and its entry.
pub type DecisionWithSide = (LedgerEntry, Outcome, Vec<SideWrite>);

/// What a decision does to the account: a change to write, or nothing
/// (the account is as asked already). Either answer is kept under the key.
/// Short-lived, like [`Created`].
#[allow(clippy::large_enum_variant)]
pub(crate) enum Change {
    Write(DecisionWithSide),
    Unchanged(Outcome),
}

impl<A: AccountStore, R: RequestStore, H> Ledger<A, R, H> {
    /// The account as of now: read fresh, renewed in memory if its period
    /// has ended (a late schedule never shows last month's allowance), its
    /// overdue units returned in memory.
    pub async fn current_account(&self, org: &OrgId) -> Result<Account, ServiceError> {
        let mut account = self
            .accounts
            .load_account(org)
            .await?
            .ok_or(DomainError::AccountNotFound)?;
        let now = self.clock.now();
        account.renew_if_due(&self.catalog, now)?;
        // Units past their deadline show as returned, as the next change
        // will return them.
        if account.has_overdue_units(now) {
            let mut overdue = self.accounts.overdue_units(org, now).await?;
            while !overdue.is_empty() {
                let chunk = overdue_of_one_campaign(overdue.clone());
                overdue.retain(|u| !chunk.iter().any(|c| c.campaign == u.campaign && c.contact == u.contact));
                account.settle_units(Transition::Expire, &chunk, Actor::system(), now)?;
            }
        }
        Ok(account)
    }

    /// Applies a change to an existing account, renewing it first if due.
    /// `decide` may run several times (once per attempt); it must be pure.
    /// A refusal decided on the account's state (see
    /// [`Outcome::kept_refusal`]) is kept under the request's key, so a
    /// retry gets the same answer. `claim` names something the change
    /// claims once across every organization.
    pub(crate) async fn apply<F>(
        &self,
        org: &OrgId,
        request: &Idempotency,
        claim: Option<String>,
        mut decide: F,
    ) -> Result<Applied, ServiceError>
    where
        F: FnMut(&mut Account, &Catalog, DateTime<Utc>) -> Result<Decision, DomainError>,
    {
        self.apply_with(org, request, claim, |account, catalog, now| {
            decide(account, catalog, now).map(|(entry, outcome)| (entry, outcome, Vec::new()))
        })
        .await
    }

    /// [`Ledger::apply`] for a decision that writes side items too (an
    /// unlocked subject, a held result). A subject unlocked meanwhile is
    /// [`ServiceError::SubjectChanged`]: the caller reads it and decides again.
    pub(crate) async fn apply_with<F>(
        &self,
        org: &OrgId,
        request: &Idempotency,
        claim: Option<String>,
        decide: F,
    ) -> Result<Applied, ServiceError>
    where
        F: FnMut(&mut Account, &Catalog, DateTime<Utc>) -> Result<DecisionWithSide, DomainError>,
    {
        self.apply_returning_overdue(org, request, claim, true, decide).await
    }

    /// [`Ledger::apply_with`], returning overdue units first or not (the
    /// sweep, returning them itself, does not).
    pub(crate) async fn apply_returning_overdue<F>(
        &self,
        org: &OrgId,
        request: &Idempotency,
        claim: Option<String>,
        return_overdue: bool,
        mut decide: F,
    ) -> Result<Applied, ServiceError>
    where
        F: FnMut(&mut Account, &Catalog, DateTime<Utc>) -> Result<DecisionWithSide, DomainError>,
    {
        self.change(org, request, claim, return_overdue, |account, catalog, now| {
            decide(account, catalog, now).map(Change::Write)
        })
        .await
    }

    /// [`Ledger::apply`] for a change that may find the account as asked
    /// already. That answer is decided on state read with the key, like a
    /// refusal, and kept under it: a retry of a change that was written
    /// replays it, a retry of one that was not gets the same answer.
    pub(crate) async fn apply_unless_unchanged<F>(
        &self,
        org: &OrgId,
        request: &Idempotency,
        decide: F,
    ) -> Result<Applied, ServiceError>
    where
        F: FnMut(&mut Account, &Catalog, DateTime<Utc>) -> Result<Change, DomainError>,
    {
        self.change(org, request, None, true, decide).await
    }

    /// The executor's loop: decide on the state in hand, write it
    /// conditionally, decide again on a lost race.
    async fn change<F>(
        &self,
        org: &OrgId,
        request: &Idempotency,
        claim: Option<String>,
        return_overdue: bool,
        mut decide: F,
    ) -> Result<Applied, ServiceError>
    where
        F: FnMut(&mut Account, &Catalog, DateTime<Utc>) -> Result<Change, DomainError>,
    {
        let entry_key = EntryKey::Request(request.key.clone());
        let mut guess = self.cached(org);
        // Whether the state in hand was read together with the key's entry:
        // only then is a refusal (or a partial charge) final. A cached guess
        // may be stale, and the key may name an earlier success to replay.
        let mut fresh_with_key = false;
        let mut overdue_returns = 0;
        let started = Instant::now();
        let mut backoff = Backoff::default();
        for attempt in 0..self.retry.max_attempts {
            if attempt > 0 && started.elapsed() > self.retry.budget {
                break;
            }
            let before = match guess.take() {
                Some(a) => a,
                None => {
                    let (account, existing) = self.accounts.load_account_and_request(org, &request.key).await?;
                    if existing.is_some() {
                        return replay(existing, request);
                    }
                    fresh_with_key = true;
                    account.ok_or(DomainError::AccountNotFound)?
                }
            };
            let now = self.clock.now();
            let mut next = before.clone();
            // An account past due renews first, in a change of its own:
            // nothing is decided on last month's allowance.
            let renewal = next.renew_if_due(&self.catalog, now);
            // Units past their deadline return next, also in changes of
            // their own (a few, the sweep does the rest).
            let mut overdue = Vec::new();
            if return_overdue
                && matches!(renewal, Ok(None))
                && next.has_overdue_units(now)
                && overdue_returns < LAZY_OVERDUE_CHANGES
            {
                overdue = overdue_of_one_campaign(self.accounts.overdue_units(org, now).await?);
                if overdue.is_empty() {
                    if !fresh_with_key {
                        // The guess may be stale: the sweep got there first.
                        continue;
                    }
                    overdue_returns = LAZY_OVERDUE_CHANGES;
                }
            }
            let expiring = !overdue.is_empty();
            let (entry_key, decided) = match renewal {
                Ok(Some(renewal)) => (EntryKey::Renewal(next.period.start), Ok((renewal, None, Vec::new()))),
                Ok(None) if expiring => {
                    overdue_returns += 1;
                    let key = EntryKey::Request(attempt_key("expire", overdue.len() as u64)?);
                    let settled = next.settle_units(Transition::Expire, &overdue, Actor::system(), now);
                    (
                        key,
                        settled.map(|(moved, _, entry)| (entry, None, expired_units(moved))),
                    )
                }
                Ok(None) => match decide(&mut next, &self.catalog, now) {
                    Ok(Change::Unchanged(outcome)) if fresh_with_key => {
                        return self.keep_answer(org, request, outcome, now).await;
                    }
                    // The guess may be stale, and the key may name the
                    // change written before: read both.
                    Ok(Change::Unchanged(_)) => continue,
                    Ok(Change::Write((e, o, side))) => (entry_key.clone(), Ok((e, Some(o), side))),
                    Err(e) => (entry_key.clone(), Err(e)),
                },
                Err(e) => (entry_key.clone(), Err(e)),
            };
            let (mut entry, outcome, side) = match decided {
                Ok((_, Some(outcome), _)) if outcome.needs_fresh_state() && !fresh_with_key => {
                    debug!(%org, "partial or held on a cached guess; reading fresh state");
                    continue;
                }
                Ok(d) => d,
                Err(refusal) if !fresh_with_key => {
                    debug!(%org, %refusal, "refused on a cached guess; reading fresh state");
                    continue;
                }
                Err(refusal) => {
                    // A name claimed already wins over what the state
                    // decides, as it would at the commit: a void sent again
                    // finds its credits returned and must not return them twice.
                    if let Some(name) = &claim {
                        if let Some((owner, claimed_by)) = self.requests.load_claim(name).await? {
                            return self.claimed(org, name, &owner, &claimed_by, request).await;
                        }
                    }
                    let Some(outcome) = Outcome::kept_refusal(&refusal) else {
                        return Err(refusal.into());
                    };
                    return self.keep_answer(org, request, outcome, now).await;
                }
            };
            entry.id = entry_key.entry_id();
            let claims = match &outcome {
                Some(_) => claim
                    .iter()
                    .map(|name| Claim {
                        name: name.clone(),
                        claimed_by: request.key.clone(),
                    })
                    .collect(),
                None => Vec::new(),
            };
            let commit = Commit {
                before: Some(&before),
                account: &next,
                entry: StoredEntry {
                    key: entry_key,
                    entry: entry.clone(),
                    receipt: outcome.as_ref().map(|o| request.receipt(o)),
                },
                earlier: Vec::new(),
                claims,
                side,
            };
            match self.accounts.commit(commit).await {
                Ok(()) => match outcome {
                    Some(outcome) => {
                        self.remember(next);
                        return Ok(Applied {
                            outcome,
                            entry: Some(entry),
                            replayed: false,
                        });
                    }
                    // Renewed: now decide the request on the new month.
                    None => guess = Some(next),
                },
                Err(CommitError::Stale(Some(fresh))) => {
                    debug!(%org, attempt, "lost a race; deciding again from the fresh state");
                    guess = Some(*fresh);
                    // The same transaction found no entry under the key, so
                    // this state is as good as one read with it.
                    fresh_with_key = true;
                    // The first retry goes at once with the state just handed
                    // back; after that, writers competing for the last
                    // credits spread out.
                    if attempt > 0 {
                        tokio::time::sleep(backoff.next()).await;
                    }
                }
                Err(CommitError::Stale(None)) => {
                    self.forget(org);
                    return Err(DomainError::AccountNotFound.into());
                }
                Err(CommitError::KeyTaken(existing)) => return replay(existing.map(|k| *k), request),
                Err(CommitError::Claimed {
                    name,
                    org: owner,
                    claimed_by,
                }) => return self.claimed(org, &name, &owner, &claimed_by, request).await,
                Err(CommitError::Conflict) => {
                    warn!(%org, attempt, "transaction conflict; backing off");
                    self.forget(org);
                    fresh_with_key = false;
                    tokio::time::sleep(backoff.next()).await;
                }
                // A unit returning by itself moved on meanwhile: read again.
                Err(CommitError::SubjectChanged | CommitError::AlreadySettled) if expiring => {
                    self.forget(org);
                    fresh_with_key = false;
                }
                Err(CommitError::SubjectChanged) => return Err(ServiceError::SubjectChanged),
                Err(CommitError::AlreadySettled) => return Err(ServiceError::AlreadySettled),
                Err(CommitError::BatchKeyTaken) => return Err(ServiceError::Contention),
                Err(CommitError::Store(e)) => return Err(e.into()),
            }
        }
        Err(ServiceError::Contention)
    }

    /// Renews an account if it is due, as a change of its own; `None` when
    /// it is not (anymore). Conditional on the period it renews, so two
    /// sweeps, or a sweep racing a spend that renews lazily, grant once.
    pub(crate) async fn renew(&self, org: &OrgId) -> Result<Option<LedgerEntry>, ServiceError> {
        let started = Instant::now();
        let mut backoff = Backoff::default();
        let mut fresh = None;
        for attempt in 0..self.retry.max_attempts {
            if attempt > 0 && started.elapsed() > self.retry.budget {
                break;
            }
            let before = match fresh.take() {
                Some(account) => account,
                None => self
                    .accounts
                    .load_account(org)
                    .await?
                    .ok_or(DomainError::AccountNotFound)?,
            };
            let mut next = before.clone();
            let Some(mut entry) = next.renew_if_due(&self.catalog, self.clock.now())? else {
                return Ok(None);
            };
            let key = EntryKey::Renewal(next.period.start);
            entry.id = key.entry_id();
            let commit = Commit {
                before: Some(&before),
                account: &next,
                entry: StoredEntry {
                    key,
                    entry: entry.clone(),
                    receipt: None,
                },
                earlier: Vec::new(),
                claims: Vec::new(),
                side: Vec::new(),
            };
            match self.accounts.commit(commit).await {
                Ok(()) => {
                    self.remember(next);
                    return Ok(Some(entry));
                }
                // Another writer changed the account (or renewed it): look again.
                Err(CommitError::Stale(Some(account))) => fresh = Some(*account),
                Err(CommitError::Stale(None)) => return Err(DomainError::AccountNotFound.into()),
                Err(CommitError::Conflict) => tokio::time::sleep(backoff.next()).await,
                Err(
                    CommitError::KeyTaken(_)
                    | CommitError::Claimed { .. }
                    | CommitError::SubjectChanged
                    | CommitError::AlreadySettled
                    | CommitError::BatchKeyTaken,
                ) => return Err(StoreError::Request("unexpected cancellation while renewing".into()).into()),
                Err(CommitError::Store(e)) => return Err(e.into()),
            }
        }
        Err(ServiceError::Contention)
    }

    /// Provisions an account that must not exist yet. When it exists, the
    /// caller decides what the request means for it.
    pub(crate) async fn create<F>(&self, request: &Idempotency, provision: F) -> Result<Created, ServiceError>
    where
        F: FnOnce(&Catalog, DateTime<Utc>) -> Result<(Account, Decision), DomainError>,
    {
        let (account, (mut entry, outcome)) = provision(&self.catalog, self.clock.now())?;
        let key = EntryKey::Request(request.key.clone());
        entry.id = key.entry_id();
        // The account's first entry: its placement is known now.
        entry.placement = Some(Placement {
            seq: account.seq,
            balance_after: account.balances(),
        });
        let commit = Commit {
            before: None,
            account: &account,
            entry: StoredEntry {
                key,
                entry: entry.clone(),
                receipt: Some(request.receipt(&outcome)),
            },
            earlier: Vec::new(),
            claims: Vec::new(),
            side: Vec::new(),
        };
        match self.accounts.commit(commit).await {
            Ok(()) => {
                self.remember(account);
                Ok(Created::Applied(Applied {
                    outcome,
                    entry: Some(entry),
                    replayed: false,
                }))
            }
            Err(CommitError::KeyTaken(existing)) => replay(existing.map(|k| *k), request).map(Created::Applied),
            Err(CommitError::Stale(Some(_))) => Ok(Created::Exists),
            Err(CommitError::Conflict) => Err(ServiceError::Contention),
            Err(
                CommitError::Stale(None)
                | CommitError::Claimed { .. }
                | CommitError::SubjectChanged
                | CommitError::AlreadySettled
                | CommitError::BatchKeyTaken,
            ) => Err(StoreError::Request("unexpected cancellation while provisioning".into()).into()),
            Err(CommitError::Store(e)) => Err(e.into()),
        }
    }

    /// Keeps an answer that wrote nothing (a refusal decided on the
    /// account's state, or nothing to change) under the request's key, so
    /// a retry gets it again.
    async fn keep_answer(
        &self,
        org: &OrgId,
        request: &Idempotency,
        outcome: Outcome,
        now: DateTime<Utc>,
    ) -> Result<Applied, ServiceError> {
        let expires_at = now + chrono::Duration::days(ANSWER_KEPT_DAYS);
        let receipt = request.receipt(&outcome);
        match self
            .requests
            .keep_answer(org, &request.key, &receipt, expires_at)
            .await?
        {
            None => Ok(Applied {
                outcome,
                entry: None,
                replayed: false,
            }),
            // Another request under the key got there first.
            taken => replay(taken, request),
        }
    }

    /// A claimed name (a payment reference): the same request under another
    /// key replays the original; anything else is refused.
    async fn claimed(
        &self,
        org: &OrgId,
        name: &str,
        owner: &OrgId,
        claimed_by: &IdempotencyKey,
        request: &Idempotency,
    ) -> Result<Applied, ServiceError> {
        if owner != org {
            debug!(%org, claim = name, "claimed by another organization");
            return Err(ServiceError::AlreadyClaimed);
        }
        match self.requests.load_request(org, claimed_by).await? {
            Some(kept) if kept.receipt.fingerprint == request.fingerprint => replay(Some(kept), request),
            _ => {
                debug!(%org, claim = name, "claimed by a different request");
                Err(ServiceError::AlreadyClaimed)
            }
        }
    }
}

/// How often an operation decides again when a subject's item (an
/// unlock, a lead slot, a reservation unit) changed under it.
const SUBJECT_RETRIES: usize = 4;

/// Runs `attempt` (which reads the subjects' items afresh and applies the
/// change) again while a subject's item changed under it.
pub(crate) async fn retry_on_subject_change<T, F, Fut>(mut attempt: F) -> Result<T, ServiceError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ServiceError>>,
{
    for _ in 0..SUBJECT_RETRIES {
        match attempt().await {
            Err(ServiceError::SubjectChanged) => continue,
            other => return other,
        }
    }
    Err(ServiceError::Contention)
}

/// What a taken key answers: the original outcome if the request is the
/// same, a refusal if the key was used for something else.
fn replay(existing: Option<KeptRequest>, request: &Idempotency) -> Result<Applied, ServiceError> {
    match existing {
        Some(kept) if kept.receipt.fingerprint == request.fingerprint => Ok(Applied {
            outcome: Outcome::decode(&kept.receipt.outcome)?,
            entry: kept.entry,
            replayed: true,
        }),
        _ => Err(ServiceError::IdempotencyKeyReused),
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
