//! The ledger's operations, one per thing a caller can ask, whatever
//! triggers it: parse at the edge, call one of these, render the result.

use ledger_domain::entry::Placement;
use ledger_domain::{
    Account, Actor, DomainError, OrgId, PurchaseGrant, Resubscription, SpendQuote, SpendRequest, Subscription,
};
use ledger_store::{AccountStore, HistoryPage, HistoryQuery, HistoryStore, RequestStore};

use crate::executor::{Idempotency, Ledger};
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
        self.create(
            request,
            |catalog, now| {
                let (account, entry) = Account::provision(org.clone(), subscription.clone(), catalog, actor, now)?;
                let outcome = Outcome::Subscribed(SubscriptionState::of(&account));
                Ok((account, (entry, outcome)))
            },
            |current| match current.subscription.resubscribe(&subscription)? {
                Resubscription::Unchanged => Ok(Outcome::AlreadySubscribed(SubscriptionState::of(current))),
            },
        )
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
        self.apply(org, request, None, |account, _, now| {
            let (quote, entry) = account.spend(spend, now)?;
            let outcome = Outcome::Spent {
                meter: quote.meter,
                requested: quote.requested,
                units: quote.units,
                charged: quote.amount,
            };
            Ok((entry, outcome))
        })
        .await
    }

    /// What a spend would cost and how much of it the balance covers; writes nothing.
    pub async fn quote(&self, org: &OrgId, spend: &SpendRequest<'_>) -> Result<SpendQuote, ServiceError> {
        Ok(self.current_account(org).await?.quote(spend)?)
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
        limit: u32,
        before_seq: Option<u64>,
    ) -> Result<HistoryPage, ServiceError> {
        let query = HistoryQuery {
            scope: viewer.history_scope(),
            limit,
            before_seq,
        };
        let page = self.history.history(org, &query).await?;
        if let Some(unseen) = page.entries.iter().find(|e| !query.scope.sees(e)) {
            return Err(
                DomainError::InvariantViolated(format!("entry {} outside the viewer's scope", unseen.id)).into(),
            );
        }
        Ok(page)
    }
}

impl<A, R, H: HistoryStore> Ledger<A, R, H> {
    /// The sequencer: records where a committed entry sits in the ledger, as
    /// the account's change read from the table's stream says (its count of
    /// entries and its balances right after). Changes to one account reach
    /// the stream in commit order, so this is the commit order; placing the
    /// same change twice writes the same.
    pub async fn place(&self, org: &OrgId, entry_sk: &str, placement: &Placement) -> Result<(), ServiceError> {
        Ok(self.history.place(org, entry_sk, placement).await?)
    }
}
