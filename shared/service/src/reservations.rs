//! Reservations: units of a campaign reserved, committed, released, refunded.

use ledger_domain::{Actor, CampaignId, DomainError, OrgId, ReserveRequest, Subject, Transition, Unit, UnitState};
use ledger_store::{AccountStore, RequestStore, ResultStore, SideWrite};

use std::collections::BTreeMap;

use crate::executor::{retry_on_subject_change, Idempotency, Ledger};
use crate::results::attempt_key;

/// Due units read per page of the deadline index.
const DUE_PAGE: u32 = 100;
use crate::outcome::{Applied, Outcome};
use crate::ServiceError;

impl<A: AccountStore + ResultStore, R: RequestStore, H> Ledger<A, R, H> {
    /// Reserves one unit per new contact, as many as the balance covers.
    pub async fn reserve(
        &self,
        org: &OrgId,
        req: &ReserveRequest<'_>,
        request: &Idempotency,
    ) -> Result<Applied, ServiceError> {
        retry_on_subject_change(|| async {
            let existing = self.accounts.load_units(org, req.campaign, req.contacts).await?;
            self.apply_with(org, request, None, |account, _, now| {
                let (reserved, entry) = account.reserve(req, &existing, now)?;
                let side = reserved
                    .units
                    .iter()
                    .map(|u| SideWrite::PutUnit {
                        unit: u.clone(),
                        from: None,
                    })
                    .collect();
                let outcome = reserved_outcome(req, reserved, account);
                Ok((entry, outcome, side))
            })
            .await
        })
        .await
    }

    /// What a reservation would reserve now; writes nothing.
    pub async fn quote_reservation(&self, org: &OrgId, req: &ReserveRequest<'_>) -> Result<Outcome, ServiceError> {
        let existing = self.accounts.load_units(org, req.campaign, req.contacts).await?;
        let mut account = self.current_account(org).await?;
        let (reserved, _) = account.reserve(req, &existing, self.clock.now())?;
        Ok(reserved_outcome(req, reserved, &account))
    }

    /// Returns every reserved unit whose deadline has passed (neither spent
    /// nor released in time), read from the deadline index a page at a
    /// time, as releases by the ledger. A unit that moved on meanwhile is
    /// left as it is: each release is conditional on the unit still being
    /// reserved, so a doubled or cut-off sweep returns nothing twice.
    pub async fn expire_reservations(&self, deadline: Option<std::time::Instant>) -> Result<usize, ServiceError> {
        let mut expired = 0;
        loop {
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                return Ok(expired);
            }
            let due = self.accounts.due_units(self.clock.now(), DUE_PAGE).await?;
            let mut by_campaign: BTreeMap<(OrgId, CampaignId), Vec<Subject>> = BTreeMap::new();
            for (org, campaign, contact) in due {
                by_campaign.entry((org, campaign)).or_default().push(contact);
            }
            let before = expired;
            for ((org, campaign), contacts) in by_campaign {
                for chunk in contacts.chunks(ledger_domain::MAX_UNITS) {
                    match self.expire_units(&org, &campaign, chunk).await {
                        Ok(()) => expired += chunk.len(),
                        // One moved on meanwhile: the rest one by one.
                        Err(ServiceError::Domain(DomainError::UnitState { .. })) => {
                            for contact in chunk {
                                match self.expire_units(&org, &campaign, std::slice::from_ref(contact)).await {
                                    Ok(()) => expired += 1,
                                    Err(ServiceError::Domain(DomainError::UnitState { .. })) => {}
                                    Err(e) => return Err(e),
                                }
                            }
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            if expired == before {
                return Ok(expired);
            }
        }
    }

    async fn expire_units(&self, org: &OrgId, campaign: &CampaignId, contacts: &[Subject]) -> Result<(), ServiceError> {
        let request = Idempotency {
            key: attempt_key("expire", contacts.len() as u64)?,
            fingerprint: "expire".into(),
        };
        self.settle_units(org, Transition::Expire, campaign, contacts, Actor::system(), &request)
            .await
            .map(|_| ())
    }

    /// Commits, releases or refunds units: all of them, each from the state
    /// the transition starts from, or none.
    pub async fn settle_units(
        &self,
        org: &OrgId,
        transition: Transition,
        campaign: &CampaignId,
        contacts: &[Subject],
        actor: Actor,
        request: &Idempotency,
    ) -> Result<Applied, ServiceError> {
        retry_on_subject_change(|| async {
            let units = self.accounts.load_units(org, campaign, contacts).await?;
            if let Some(missing) = contacts.iter().find(|c| !units.iter().any(|u| &u.contact == *c)) {
                return Err(DomainError::UnitState {
                    contact: missing.as_str().to_string(),
                    state: "not reserved",
                    transition: transition.as_str(),
                }
                .into());
            }
            let lazy = transition != Transition::Expire;
            self.apply_returning_overdue(org, request, None, lazy, |account, _, now| {
                let (moved, stayed_expired, entry) = account.settle_units(transition, &units, actor.clone(), now)?;
                let from = units.first().map(|u| u.state).unwrap_or(UnitState::Reserved);
                let side = moved
                    .iter()
                    .map(|u: &Unit| SideWrite::PutUnit {
                        unit: u.clone(),
                        from: Some(from),
                    })
                    .collect();
                let outcome = Outcome::UnitsMoved {
                    transition,
                    contacts: moved.iter().map(|u| u.contact.clone()).collect(),
                    returned: entry.lines.iter().map(|l| l.amount).sum(),
                    stayed_expired,
                };
                Ok((entry, outcome, side))
            })
            .await
        })
        .await
    }
}

impl<A: AccountStore + ResultStore, R: RequestStore, H> Ledger<A, R, H> {
    /// An admin's answer to a spend held for approval: approved (spent for
    /// good) or denied (back to the buckets that paid). Once each: a second
    /// answer, or one after it expired, is a 409 `unit-state`.
    pub async fn answer_approval(
        &self,
        org: &OrgId,
        approval: &Subject,
        approve: bool,
        actor: Actor,
        request: &Idempotency,
    ) -> Result<Applied, ServiceError> {
        let transition = if approve {
            Transition::Commit
        } else {
            Transition::Release
        };
        let campaign = ledger_domain::approvals_campaign();
        self.settle_units(
            org,
            transition,
            &campaign,
            std::slice::from_ref(approval),
            actor,
            request,
        )
        .await
    }

    /// The approvals still pending, oldest first.
    pub async fn pending_approvals(&self, org: &OrgId) -> Result<Vec<Unit>, ServiceError> {
        Ok(self.accounts.pending_approvals(org).await?)
    }
}

/// What a reservation did (or would do), as its outcome.
fn reserved_outcome(
    req: &ReserveRequest<'_>,
    reserved: ledger_domain::Reserved,
    account: &ledger_domain::Account,
) -> Outcome {
    Outcome::Reserved {
        meter: req.action.meter.clone(),
        requested: reserved.requested as u64,
        reserved: reserved.units.iter().map(|u| u.contact.clone()).collect(),
        already: reserved.already,
        short: reserved.short,
        held: account.reserved(&req.action.meter),
    }
}
