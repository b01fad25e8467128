//! Capacity meters (`lead_slots`): one slot per unique contact an
//! organization holds, across all its campaigns. Uploading a contact it
//! holds already costs nothing; deleting a contact frees its slot; slots
//! never renew. The capacity comes from the plan, so it follows plan changes.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use crate::account::Account;
use crate::catalog::{Catalog, MeterKind};
use crate::entry::{Actor, EntryKind, LedgerEntry};
use crate::{CampaignId, DomainError, MeterId, Subject};

/// Contacts one upload or removal names: each slot is an item written in
/// the change's transaction.
pub const MAX_CONTACTS: usize = 50;

/// What became of one contact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotOutcome {
    /// A new contact: a slot taken.
    Held,
    /// The organization holds it already: free.
    AlreadyHeld,
    /// Listed earlier in the same request.
    Duplicate,
    /// No slot left: not uploaded.
    OverCapacity,
    /// Deleted: its slot is free again.
    Freed,
    /// Not held: nothing to free.
    NotHeld,
}

impl SlotOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            SlotOutcome::Held => "held",
            SlotOutcome::AlreadyHeld => "already_held",
            SlotOutcome::Duplicate => "duplicate",
            SlotOutcome::OverCapacity => "over_capacity",
            SlotOutcome::Freed => "freed",
            SlotOutcome::NotHeld => "not_held",
        }
    }

    pub fn parse(text: &str) -> Option<SlotOutcome> {
        [
            SlotOutcome::Held,
            SlotOutcome::AlreadyHeld,
            SlotOutcome::Duplicate,
            SlotOutcome::OverCapacity,
            SlotOutcome::Freed,
            SlotOutcome::NotHeld,
        ]
        .into_iter()
        .find(|o| o.as_str() == text)
    }
}

/// The contacts a slot change names, with which of them the organization
/// holds already (read from their slot items).
#[derive(Clone, Copy, Debug)]
pub struct Contacts<'a> {
    pub meter: &'a MeterId,
    pub listed: &'a [Subject],
    pub held: &'a BTreeSet<Subject>,
}

/// What a slot change did, contact by contact.
pub type SlotChange = (Vec<(Subject, SlotOutcome)>, LedgerEntry);

impl Account {
    /// The capacity of a capacity meter: what the plan grants (none on a
    /// plan the catalog no longer has).
    pub fn capacity(&self, catalog: &Catalog, meter: &MeterId) -> u64 {
        catalog
            .plan(self.subscription.plan.as_str())
            .ok()
            .and_then(|(_, plan)| plan.capacity.get(meter).copied())
            .unwrap_or(0)
    }

    /// Slots in use on a capacity meter.
    pub fn slots_used(&self, meter: &MeterId) -> u64 {
        self.slots_used.get(meter).copied().unwrap_or(0)
    }

    /// Uploads contacts: each one the organization does not hold yet takes
    /// a slot while the capacity allows, in list order; the rest are
    /// reported. `held` is which of them the organization holds already.
    pub fn hold_slots(
        &mut self,
        catalog: &Catalog,
        contacts: Contacts<'_>,
        campaign: Option<CampaignId>,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<SlotChange, DomainError> {
        let Contacts { meter, listed, held } = contacts;
        check(catalog, meter, listed)?;
        let capacity = self.capacity(catalog, meter);
        let mut used = self.slots_used(meter);
        let mut seen = BTreeSet::new();
        let mut outcomes = Vec::with_capacity(listed.len());
        for c in listed {
            let outcome = if !seen.insert(c.clone()) {
                SlotOutcome::Duplicate
            } else if held.contains(c) {
                SlotOutcome::AlreadyHeld
            } else if used < capacity {
                used += 1;
                SlotOutcome::Held
            } else {
                SlotOutcome::OverCapacity
            };
            outcomes.push((c.clone(), outcome));
        }
        Ok(self.record_slots(meter, used, outcomes, SlotOutcome::Held, campaign, actor, now))
    }

    /// Deletes contacts: each one held frees its slot.
    pub fn free_slots(
        &mut self,
        catalog: &Catalog,
        contacts: Contacts<'_>,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<SlotChange, DomainError> {
        let Contacts { meter, listed, held } = contacts;
        check(catalog, meter, listed)?;
        let mut used = self.slots_used(meter);
        let mut seen = BTreeSet::new();
        let mut outcomes = Vec::with_capacity(listed.len());
        for c in listed {
            let outcome = if !seen.insert(c.clone()) {
                SlotOutcome::Duplicate
            } else if held.contains(c) {
                used = used
                    .checked_sub(1)
                    .ok_or_else(|| DomainError::InvariantViolated(format!("{meter}: a slot held but none counted")))?;
                SlotOutcome::Freed
            } else {
                SlotOutcome::NotHeld
            };
            outcomes.push((c.clone(), outcome));
        }
        Ok(self.record_slots(meter, used, outcomes, SlotOutcome::Freed, None, actor, now))
    }

    #[allow(clippy::too_many_arguments)]
    fn record_slots(
        &mut self,
        meter: &MeterId,
        used: u64,
        outcomes: Vec<(Subject, SlotOutcome)>,
        changed: SlotOutcome,
        campaign: Option<CampaignId>,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> SlotChange {
        let before = self.slots_used(meter);
        if used == 0 {
            self.slots_used.remove(meter);
        } else {
            self.slots_used.insert(meter.clone(), used);
        }
        let subjects: Vec<Subject> = outcomes
            .iter()
            .filter(|(_, o)| *o == changed)
            .map(|(s, _)| s.clone())
            .collect();
        let kind = match changed {
            SlotOutcome::Held => EntryKind::SlotsHeld,
            _ => EntryKind::SlotsFreed,
        };
        let requested = outcomes.len() as u64;
        let entry = self.record(kind, actor, now, Vec::new(), |e| {
            e.quantity = Some(before.abs_diff(used));
            e.requested = Some(requested);
            e.campaign = campaign;
            e.subjects = subjects;
        });
        (outcomes, entry)
    }
}

fn check(catalog: &Catalog, meter: &MeterId, contacts: &[Subject]) -> Result<(), DomainError> {
    match catalog.meters.get(meter) {
        Some(m) if m.kind == MeterKind::Capacity => {}
        _ => return Err(DomainError::InvalidRequest(format!("{meter} is not a capacity meter"))),
    }
    if contacts.is_empty() || contacts.len() > MAX_CONTACTS {
        return Err(DomainError::InvalidQuantity(format!(
            "a request names 1-{MAX_CONTACTS} contacts; send more as several requests"
        )));
    }
    Ok(())
}
