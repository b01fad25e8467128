//! The ledger's operations, one per thing a caller can ask, whatever
//! triggers it: parse at the edge, call one of these, render the result.

use chrono::{DateTime, Utc};
use ledger_domain::entry::Placement;
use ledger_domain::{
    Account, Actor, CampaignId, Credits, DomainError, HistoryScope, MemberLimits, MemberRole, MeterId, OrgId,
    PurchaseGrant, SpendQuote, SpendRequest, Subject, Subscription, SubscriptionStatus, UserId,
};
use ledger_store::{
    AccountStore, HistoryFilter, HistoryKey, HistoryPage, HistoryPosition, HistoryQuery, HistoryStore, RenewalIndex,
    RequestStore, SideWrite,
};

use crate::executor::{Change, Created, Idempotency, Ledger};
use crate::outcome::{Applied, Outcome, SubscriptionState};
use crate::ServiceError;

impl<A: AccountStore, R: RequestStore, H: HistoryStore> Ledger<A, R, H> {
    /// Subscribes an organization. The first call provisions its account
    /// with today as the billing anchor and grants the first month (and the
    /// plan's trial, once); subscribing again to the same is a no-op.
    pub async fn subscribe(
        &self,
        org: &OrgId,
        subscription: Subscription,
        actor: Actor,
        request: &Idempotency,
    ) -> Result<Applied, ServiceError> {
        // A subscription grants credits that are paid for: the product's
        // backend subscribes once it has the payment. An admin may only
        // change what costs nothing (a downgrade; `change_plan` refuses an
        // upgrade from anyone but the service).
        let paid = actor.grants_paid_credits();
        if paid {
            let created = self
                .create(request, |catalog, now| {
                    let (account, entry) =
                        Account::provision(org.clone(), subscription.clone(), catalog, actor.clone(), now)?;
                    let outcome = Outcome::Subscribed(SubscriptionState::of(&account));
                    Ok((account, (entry, outcome)))
                })
                .await?;
            if let Created::Applied(applied) = created {
                return Ok(applied);
            }
        }
        // The account exists: subscribing again after a cancel, the same
        // subscription (nothing to write), or a plan change.
        self.apply_unless_unchanged(org, request, |account, catalog, now| {
            let entry = match account.status {
                SubscriptionStatus::Cancelled if !paid => return Err(DomainError::PaidByService),
                SubscriptionStatus::Cancelled => {
                    account.resubscribe_after_cancel(subscription.clone(), catalog, actor.clone(), now)?
                }
                SubscriptionStatus::Active if account.has_subscription(&subscription, catalog)? => {
                    let state = SubscriptionState::of(account);
                    return Ok(Change::Unchanged(Outcome::AlreadySubscribed(state)));
                }
                SubscriptionStatus::Active => account.change_plan(subscription.clone(), catalog, actor.clone(), now)?,
            };
            let state = SubscriptionState::of(account);
            let outcome = match entry.kind {
                ledger_domain::EntryKind::PlanChange => Outcome::PlanChanged(state),
                _ => Outcome::Subscribed(state),
            };
            Ok(Change::Write((entry, outcome, Vec::new())))
        })
        .await
        .map_err(|e| match e {
            // Only the service provisions: no account, nothing an admin may do.
            ServiceError::Domain(DomainError::AccountNotFound) if !paid => DomainError::PaidByService.into(),
            other => other,
        })
    }

    /// Cancels the subscription: no allowance from the next renewal on;
    /// this month's plan credits and purchased credits stay usable.
    pub async fn cancel(&self, org: &OrgId, actor: Actor, request: &Idempotency) -> Result<Applied, ServiceError> {
        self.apply(org, request, None, |account, _, now| {
            let entry = account.cancel(actor.clone(), now)?;
            Ok((entry, Outcome::Cancelled(SubscriptionState::of(account))))
        })
        .await
    }

    /// Adds a member or gives one another role; a new member of a plan with
    /// licenses gets one if a seat is free this month. The same role again
    /// writes nothing.
    pub async fn set_member(
        &self,
        org: &OrgId,
        user: UserId,
        role: MemberRole,
        actor: Actor,
        request: &Idempotency,
    ) -> Result<Applied, ServiceError> {
        self.apply_unless_unchanged(org, request, |account, catalog, now| {
            let outcome = Outcome::Member {
                user: user.clone(),
                role: Some(role),
            };
            if account.members.get(&user).is_some_and(|m| m.role == role) {
                return Ok(Change::Unchanged(outcome));
            }
            let entry = account.set_member(user.clone(), role, catalog, actor.clone(), now)?;
            Ok(Change::Write((entry, outcome, Vec::new())))
        })
        .await
    }

    /// Removes a member; what is left of their license this month expires.
    pub async fn remove_member(
        &self,
        org: &OrgId,
        user: UserId,
        actor: Actor,
        request: &Idempotency,
    ) -> Result<Applied, ServiceError> {
        self.apply(org, request, None, |account, _, now| {
            let entry = account.remove_member(&user, actor.clone(), now)?;
            Ok((
                entry,
                Outcome::Member {
                    user: user.clone(),
                    role: None,
                },
            ))
        })
        .await
    }

    /// Sets a member's daily and monthly limits and blocked actions
    /// (replacing what was set).
    pub async fn set_limits(
        &self,
        org: &OrgId,
        user: UserId,
        limits: MemberLimits,
        actor: Actor,
        request: &Idempotency,
    ) -> Result<Applied, ServiceError> {
        self.apply(org, request, None, |account, _, now| {
            let entry = account.set_limits(&user, limits.clone(), actor.clone(), now)?;
            Ok((entry, Outcome::ControlsSet))
        })
        .await
    }

    /// Records outcomes a campaign brought, for credit ROI.
    pub async fn record_outcome(
        &self,
        org: &OrgId,
        campaign: CampaignId,
        kind: String,
        count: u64,
        actor: Actor,
        request: &Idempotency,
    ) -> Result<Applied, ServiceError> {
        self.apply(org, request, None, |account, _, now| {
            let entry = account.record_outcome(&campaign, &kind, count, actor.clone(), now)?;
            Ok((entry, Outcome::Recorded))
        })
        .await
    }

    /// Sets the approval threshold, or removes it (`None`).
    pub async fn set_approval_threshold(
        &self,
        org: &OrgId,
        above: Option<Credits>,
        actor: Actor,
        request: &Idempotency,
    ) -> Result<Applied, ServiceError> {
        self.apply(org, request, None, |account, _, now| {
            let entry = account.set_approval_threshold(above, actor.clone(), now)?;
            Ok((entry, Outcome::ControlsSet))
        })
        .await
    }

    /// Sets how far below zero a meter's balance may go (zero: not at all).
    pub async fn set_overdraft(
        &self,
        org: &OrgId,
        meter: MeterId,
        allowance: Credits,
        actor: Actor,
        request: &Idempotency,
    ) -> Result<Applied, ServiceError> {
        self.apply(org, request, None, |account, _, now| {
            let entry = account.set_overdraft(&meter, allowance, actor.clone(), now)?;
            Ok((entry, Outcome::ControlsSet))
        })
        .await
    }

    /// Sets a campaign's budget, or removes it (`None`).
    pub async fn set_budget(
        &self,
        org: &OrgId,
        campaign: CampaignId,
        limit: Option<Credits>,
        actor: Actor,
        request: &Idempotency,
    ) -> Result<Applied, ServiceError> {
        self.apply(org, request, None, |account, _, now| {
            let entry = account.set_budget(&campaign, limit, actor.clone(), now)?;
            Ok((entry, Outcome::ControlsSet))
        })
        .await
    }

    /// Debits an action's cost (all units, or as many as the balance
    /// covers), or keeps the refusal under the request's key.
    pub async fn spend(
        &self,
        org: &OrgId,
        spend: &SpendRequest<'_>,
        request: &Idempotency,
    ) -> Result<Applied, ServiceError> {
        // A member's spend above the approval threshold waits for an admin,
        // named by its request key.
        let approval = Subject::parse(request.key.as_str())?;
        self.apply_with(org, request, None, |account, _, now| {
            let quote = account.quote(spend, now)?;
            if quote.sufficient() && account.needs_approval(spend, &quote) {
                let (quote, unit, entry) = account.hold_for_approval(spend, &approval, now)?;
                let outcome = Outcome::PendingApproval {
                    approval: approval.clone(),
                    meter: quote.meter,
                    amount: quote.amount,
                };
                return Ok((entry, outcome, vec![SideWrite::PutUnit { unit, from: None }]));
            }
            let (quote, entry) = account.spend(spend, now)?;
            let outcome = Outcome::Spent {
                meter: quote.meter,
                requested: quote.requested,
                units: quote.units,
                charged: quote.amount,
            };
            Ok((entry, outcome, Vec::new()))
        })
        .await
    }

    /// What a spend would cost and how much of it the balance covers; writes nothing.
    pub async fn quote(&self, org: &OrgId, spend: &SpendRequest<'_>) -> Result<SpendQuote, ServiceError> {
        Ok(self.current_account(org).await?.quote(spend, self.clock.now())?)
    }

    /// Credits a purchased pack, once per payment reference across every
    /// organization: the same purchase under another key replays it.
    pub async fn purchase(
        &self,
        org: &OrgId,
        grant: PurchaseGrant,
        actor: Actor,
        request: &Idempotency,
    ) -> Result<Applied, ServiceError> {
        // Purchased credits are paid for: the product's backend buys them
        // for an admin once it has the payment.
        if !actor.grants_paid_credits() {
            return Err(DomainError::PaidByService.into());
        }
        let claim = grant.payment_claim();
        self.apply(org, request, Some(claim), |account, _, now| {
            let entry = account.purchase(grant.clone(), actor.clone(), now)?;
            Ok((entry, Outcome::Purchased))
        })
        .await
        .map_err(|e| match e {
            ServiceError::AlreadyClaimed => ServiceError::PaymentReferenceReused,
            other => other,
        })
    }

    /// The account's balance as of now (renewed first if due).
    pub async fn balance(&self, org: &OrgId) -> Result<Account, ServiceError> {
        self.current_account(org).await
    }

    /// A page of the ledger, newest first, as `viewer` may see it: members
    /// their own entries, admins and the service the organization's.
    pub async fn history(
        &self,
        org: &OrgId,
        viewer: &Actor,
        filter: HistoryFilter,
        limit: u32,
        after: Option<HistoryPosition>,
    ) -> Result<HistoryPage, ServiceError> {
        let scope = viewer.history_scope();
        check_history_filter(&scope, &filter)?;
        let query = HistoryQuery {
            scope,
            filter,
            limit,
            after,
        };
        let page = self.history.history(org, &query).await?;
        if let Some(unseen) = page.entries.iter().find(|e| !query.scope.sees(e)) {
            return Err(
                DomainError::InvariantViolated(format!("entry {} outside the viewer's scope", unseen.id)).into(),
            );
        }
        // An organization without an account has no ledger, as it has no
        // balance (404 both); one read, and only when the first page is empty.
        if page.entries.is_empty() && query.after.is_none() && self.accounts.load_account(org).await?.is_none() {
            return Err(DomainError::AccountNotFound.into());
        }
        Ok(page)
    }
}

/// A member's history lists their own entries: only a time filter, or
/// their own user, is theirs to ask (a listing or an export alike).
pub(crate) fn check_history_filter(scope: &HistoryScope, filter: &HistoryFilter) -> Result<(), ServiceError> {
    if let (HistoryScope::User(me), Some(by)) = (scope, &filter.by) {
        if *by != HistoryKey::User(me.clone()) {
            return Err(DomainError::InvalidRequest(
                "a member's history lists their own entries: filter it by time only".into(),
            )
            .into());
        }
    }
    Ok(())
}

impl<A, R, H: HistoryStore> Ledger<A, R, H> {
    /// The sequencer: records where a committed entry sits in the ledger, as
    /// the account's change read from the table's stream says (its count of
    /// entries and its balances right after). Changes to one account reach
    /// the stream in commit order, so this is the commit order; placing the
    /// same change twice writes the same.
    pub async fn place(
        &self,
        org: &OrgId,
        entry_sk: &str,
        placement: &Placement,
        at: Option<DateTime<Utc>>,
    ) -> Result<(), ServiceError> {
        Ok(self.history.place(org, entry_sk, placement, at).await?)
    }
}

/// How much one sweep may do: Lambda stops an invocation at its timeout, so
/// a sweep stops itself first.
#[derive(Clone, Copy, Debug)]
pub struct SweepLimits {
    /// Stop starting renewals after this instant.
    pub deadline: Option<std::time::Instant>,
    /// Stop after this many accounts.
    pub max_accounts: usize,
    /// Renewals in flight at once.
    pub concurrency: usize,
}

/// What a sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub renewed: usize,
    /// Found due but renewed already (by a spend, or another sweep).
    pub already_renewed: usize,
    /// Left due (logged); the next sweep picks them up.
    pub failed: usize,
    /// Stopped at a limit with accounts possibly still due.
    pub stopped_early: bool,
    /// Reserved units whose deadline passed, returned (see
    /// [`Ledger::expire_reservations`]).
    pub reservations_expired: usize,
}

/// Due accounts read per page of the renewal index.
const SWEEP_PAGE: u32 = 100;

impl<A: AccountStore + RenewalIndex, R: RequestStore, H> Ledger<A, R, H> {
    /// Renews one account now if it is due (the operator's "renew now").
    pub async fn renew_now(&self, org: &OrgId) -> Result<Option<ledger_domain::LedgerEntry>, ServiceError> {
        self.renew(org).await
    }

    /// The scheduled renewal: every account due by now, read from the
    /// renewal index a page at a time (a Query, never a Scan), renewed with
    /// bounded concurrency. Renewing moves an account's `renews_at` on, out of
    /// the due range, so a sweep cut off midway loses nothing: what it did
    /// not reach is still due for the next run, and what it did is not.
    /// Each renewal is conditional on its period, so doubled or concurrent
    /// sweeps grant once.
    pub async fn sweep(&self, limits: SweepLimits) -> Result<SweepReport, ServiceError> {
        use futures::stream::{self, StreamExt};
        let due_by = self.clock.now();
        let mut report = SweepReport::default();
        let mut cursor: Option<String> = None;
        let mut seen = 0usize;
        loop {
            let out_of_time = limits.deadline.is_some_and(|d| std::time::Instant::now() >= d);
            if seen >= limits.max_accounts || out_of_time {
                report.stopped_early = true;
                return Ok(report);
            }
            let room = (limits.max_accounts - seen).min(SWEEP_PAGE as usize) as u32;
            let page = self.accounts.due_accounts(due_by, room, cursor.as_deref()).await?;
            seen += page.accounts.len();
            let results: Vec<_> = stream::iter(page.accounts)
                .map(|(org, _)| async move { (self.renew(&org).await, org) })
                .buffer_unordered(limits.concurrency.max(1))
                .collect()
                .await;
            for (result, org) in results {
                match result {
                    Ok(Some(_)) => report.renewed += 1,
                    Ok(None) => report.already_renewed += 1,
                    Err(e) => {
                        tracing::error!(%org, error = %e, "renewal failed; left due for the next sweep");
                        report.failed += 1;
                    }
                }
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok(report),
            }
        }
    }
}
