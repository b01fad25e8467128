//! Capacity meters: contacts taking and freeing lead slots.

use ledger_domain::capacity::Contacts;
use ledger_domain::{Actor, CampaignId, MeterId, OrgId, SlotOutcome, Subject};
use ledger_store::{AccountStore, RequestStore, ResultStore, SideWrite};

use crate::executor::{retry_on_subject_change, Idempotency, Ledger};
use crate::outcome::{Applied, Outcome};
use crate::ServiceError;

impl<A: AccountStore + ResultStore, R: RequestStore, H> Ledger<A, R, H> {
    /// Uploads contacts: the new ones take a slot while the plan's capacity
    /// allows, the ones held already cost nothing, the rest are reported.
    pub async fn hold_slots(
        &self,
        org: &OrgId,
        meter: &MeterId,
        contacts: &[Subject],
        campaign: Option<CampaignId>,
        actor: Actor,
        request: &Idempotency,
    ) -> Result<Applied, ServiceError> {
        self.change_slots(org, meter, contacts, request, |account, catalog, held, now| {
            let listed = Contacts {
                meter,
                listed: contacts,
                held,
            };
            account.hold_slots(catalog, listed, campaign.clone(), actor.clone(), now)
        })
        .await
    }

    /// Deletes contacts: each one held frees its slot.
    pub async fn free_slots(
        &self,
        org: &OrgId,
        meter: &MeterId,
        contacts: &[Subject],
        actor: Actor,
        request: &Idempotency,
    ) -> Result<Applied, ServiceError> {
        self.change_slots(org, meter, contacts, request, |account, catalog, held, now| {
            let listed = Contacts {
                meter,
                listed: contacts,
                held,
            };
            account.free_slots(catalog, listed, actor.clone(), now)
        })
        .await
    }

    async fn change_slots<F>(
        &self,
        org: &OrgId,
        meter: &MeterId,
        contacts: &[Subject],
        request: &Idempotency,
        change: F,
    ) -> Result<Applied, ServiceError>
    where
        F: Fn(
            &mut ledger_domain::Account,
            &ledger_domain::Catalog,
            &std::collections::BTreeSet<Subject>,
            chrono::DateTime<chrono::Utc>,
        ) -> Result<ledger_domain::capacity::SlotChange, ledger_domain::DomainError>,
    {
        retry_on_subject_change(|| async {
            let held = self.accounts.held_slots(org, meter, contacts).await?;
            self.apply_with(org, request, None, |account, catalog, now| {
                let (outcomes, entry) = change(account, catalog, &held, now)?;
                let campaign = entry.campaign.as_ref().map(|c| c.to_string());
                let side = outcomes
                    .iter()
                    .filter_map(|(contact, o)| match o {
                        SlotOutcome::Held => Some(SideWrite::TakeSlot {
                            meter: meter.clone(),
                            contact: contact.clone(),
                            campaign: campaign.clone(),
                        }),
                        SlotOutcome::Freed => Some(SideWrite::FreeSlot {
                            meter: meter.clone(),
                            contact: contact.clone(),
                        }),
                        _ => None,
                    })
                    .collect();
                let outcome = Outcome::Slots {
                    meter: meter.clone(),
                    capacity: account.capacity(catalog, meter),
                    used: account.slots_used(meter),
                    contacts: outcomes,
                };
                Ok((entry, outcome, side))
            })
            .await
        })
        .await
    }
}
