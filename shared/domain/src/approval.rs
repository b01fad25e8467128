//! Approvals: a member's spend costing more than the organization's
//! approval threshold is not spent but held pending. Its credits leave the
//! balance into `reserved`, recorded per bucket, exactly as a reservation
//! unit holds them (an approval is a unit of its own, under the campaign
//! `approvals`, named by the request's key). An admin approves it (spent
//! for good), denies it (back to the buckets that paid, except plan credits
//! of a month that has since renewed) or nobody answers within
//! [`APPROVAL_DAYS`] and it returns by itself, through the same sweep and
//! lazy return as reservations.

use chrono::{DateTime, Duration, Utc};

use crate::account::Account;
use crate::entry::{CallerKind, EntryKind, LedgerEntry};
use crate::reservation::{Unit, UnitState};
use crate::spend::{SpendQuote, SpendRequest};
use crate::{CampaignId, Credits, DomainError, Subject};

/// How long an approval waits for an answer before it returns by itself.
pub const APPROVAL_DAYS: i64 = 7;

/// The campaign approvals' units live under.
pub fn approvals_campaign() -> CampaignId {
    CampaignId::parse("approvals").expect("valid campaign id")
}

/// Whether a unit is an approval's (rather than a campaign contact's).
pub fn is_approval(unit: &Unit) -> bool {
    unit.campaign == approvals_campaign()
}

impl Account {
    /// Whether a spend must wait for an admin: a member's, costing more
    /// than the threshold. Admins and the service spend at once.
    pub fn needs_approval(&self, req: &SpendRequest<'_>, quote: &SpendQuote) -> bool {
        req.actor.caller == CallerKind::Member && self.approval_above.is_some_and(|limit| quote.amount > limit)
    }

    /// Holds a spend for approval: what it would charge moves into
    /// `reserved`, recorded per bucket on the approval's unit. Refused as
    /// the spend would be (limits, blocked actions, the balance).
    pub fn hold_for_approval(
        &mut self,
        req: &SpendRequest<'_>,
        id: &Subject,
        now: DateTime<Utc>,
    ) -> Result<(SpendQuote, Unit, LedgerEntry), DomainError> {
        let quote = self.quote(req, now)?;
        if !quote.sufficient() {
            return Err(quote.refusal());
        }
        let lines = self.take(&quote.draws)?;
        self.add_reserved(&quote.meter, quote.amount.thousandths());
        self.count_charge(&req.actor, &quote.meter, quote.amount, req.campaign.as_ref(), now);
        let unit = Unit {
            campaign: approvals_campaign(),
            contact: id.clone(),
            action: req.action_id.clone(),
            meter: quote.meter.clone(),
            state: UnitState::Reserved,
            draws: quote.draws.iter().map(|d| (d.bucket.clone(), d.amount)).collect(),
            deadline: now + Duration::days(APPROVAL_DAYS),
        };
        self.count_due(&unit, 1);
        let entry = self.record(EntryKind::Approval, req.actor.clone(), now, lines, |e| {
            e.action = Some(req.action_id.clone());
            e.quantity = Some(quote.units);
            e.requested = Some(req.quantity);
            e.campaign = req.campaign.clone();
            e.subject = Some(id.clone());
            e.result = Some("requested".into());
        });
        self.check_invariants()?;
        Ok((quote, unit, entry))
    }

    /// The organization's approval threshold: a member's spend costing more
    /// waits for an admin (`None`: none waits).
    pub fn set_approval_threshold(
        &mut self,
        above: Option<Credits>,
        actor: crate::Actor,
        now: DateTime<Utc>,
    ) -> Result<LedgerEntry, DomainError> {
        self.approval_above = above;
        let entry = self.record(EntryKind::Controls, actor, now, Vec::new(), |e| {
            e.result = Some("approval_threshold".into());
        });
        self.check_invariants()?;
        Ok(entry)
    }
}
