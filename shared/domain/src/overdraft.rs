//! The overdraft: how far below zero a meter's balance may go. It is credit
//! extended before payment, so the service sets it, never an admin. It is a
//! bucket like the others (`granted` the allowance, `remaining` what may
//! still be borrowed), so the debit's own condition (`remaining >= amount`)
//! enforces it; it is spent after every other bucket, and what is owed is
//! repaid first by the next purchase. The monthly allowance does not repay
//! it: plan credits expire, a debt does not.

use chrono::{DateTime, Utc};

use crate::account::Account;
use crate::bucket::{Bucket, BucketId, BucketSource};
use crate::entry::{Actor, EntryKind, EntryLine, LedgerEntry};
use crate::{Credits, DomainError, MeterId};

impl Account {
    /// The meter's overdraft, if one was ever allowed.
    pub fn overdraft(&self, meter: &MeterId) -> Option<&Bucket> {
        self.buckets
            .iter()
            .find(|b| b.meter() == meter && b.source() == BucketSource::Overdraft)
    }

    /// What the meter owes on its overdraft.
    pub fn owed(&self, meter: &MeterId) -> Credits {
        self.overdraft(meter).map(Bucket::owed).unwrap_or_default()
    }

    /// Sets how far below zero `meter` may go (zero: not at all). It cannot
    /// go below what is owed: repay first.
    pub fn set_overdraft(
        &mut self,
        meter: &MeterId,
        allowance: Credits,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<LedgerEntry, DomainError> {
        if allowance.is_negative() {
            return Err(DomainError::InvalidRequest(
                "an overdraft allowance is not negative".into(),
            ));
        }
        let owed = self.owed(meter);
        if allowance < owed {
            return Err(DomainError::OverdraftOwed { owed, allowance });
        }
        let id = BucketId::Overdraft { meter: meter.clone() };
        let left = allowance.checked_sub(owed).expect("allowance >= owed");
        match self.buckets.iter().position(|b| b.id == id) {
            Some(i) if allowance == Credits::ZERO => {
                self.buckets.remove(i);
            }
            Some(i) => {
                let b = &mut self.buckets[i];
                b.granted = allowance;
                b.remaining = left;
            }
            None if allowance == Credits::ZERO => {}
            None => {
                self.buckets.push(Bucket {
                    id,
                    granted: allowance,
                    remaining: allowance,
                    expires_at: None,
                    granted_at: now,
                    granted_by: self.seq + 1,
                    voided: Vec::new(),
                });
                self.buckets
                    .sort_by(|x, y| (x.granted_by, &x.id).cmp(&(y.granted_by, &y.id)));
            }
        }
        let entry = self.record(EntryKind::Controls, actor, now, Vec::new(), |e| {
            e.result = Some("overdraft".into());
            e.note = Some(format!("{meter} allowance {allowance}"));
        });
        self.check_invariants()?;
        Ok(entry)
    }

    /// Repays what `meter` owes out of `amount` credits coming in: the
    /// overdraft's line, if it took any, and what is left of `amount`.
    pub(crate) fn repay(&mut self, meter: &MeterId, amount: Credits) -> (Option<EntryLine>, Credits) {
        let Some(b) = self
            .buckets
            .iter_mut()
            .find(|b| b.meter() == meter && b.source() == BucketSource::Overdraft)
        else {
            return (None, amount);
        };
        let repaid = b.owed().min(amount);
        if !repaid.is_positive() {
            return (None, amount);
        }
        b.remaining = b.remaining.checked_add(repaid).expect("credits within range");
        let line = EntryLine {
            bucket: b.id.clone(),
            amount: repaid,
            offset: None,
        };
        (Some(line), amount.checked_sub(repaid).expect("repaid <= amount"))
    }

    /// Gives `amount` back to the bucket it was drawn from (a reversal, a
    /// released reservation): `None` when that bucket expired meanwhile.
    /// An overdraft takes back only what is still owed; what a purchase
    /// repaid meanwhile goes to the purchased pool, so nothing is lost and
    /// no overdraft holds more than its allowance.
    ///
    /// A bucket can expire and be granted anew under its id (subscribing
    /// again the day a cancelled month began): the new one is not the one
    /// that paid. `drawn_at` (when known) tells them apart; without it, a
    /// bucket that cannot take the amount back is the new one.
    pub(crate) fn give_back(
        &mut self,
        id: &BucketId,
        amount: Credits,
        drawn_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Option<Vec<EntryLine>>, DomainError> {
        if id.source() == BucketSource::Overdraft {
            if self.overdraft(id.meter()).is_none() {
                return Ok(None);
            }
            let (repaid, rest) = self.repay(id.meter(), amount);
            let mut lines: Vec<EntryLine> = repaid.into_iter().collect();
            if rest.is_positive() {
                let pool = BucketId::Purchased {
                    meter: id.meter().clone(),
                };
                lines.push(self.grant(pool, rest, None, now));
            }
            return Ok(Some(lines));
        }
        let Some(b) = self.buckets.iter_mut().find(|b| {
            &b.id == id
                && b.is_live(now)
                && match drawn_at {
                    Some(at) => b.granted_at <= at,
                    None => b.remaining.checked_add(amount).is_some_and(|r| r <= b.granted),
                }
        }) else {
            return Ok(None);
        };
        b.remaining = b
            .remaining
            .checked_add(amount)
            .filter(|r| *r <= b.granted)
            .ok_or_else(|| DomainError::InvariantViolated(format!("bucket {} over-returned", b.id)))?;
        let pooled = b.source() == BucketSource::Purchased;
        Ok(Some(vec![EntryLine {
            bucket: b.id.clone(),
            amount,
            offset: pooled.then(|| b.consumed()),
        }]))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::{credits_meter, Catalog, OrgId, PurchaseGrant, ReversalReason, SpendMode, SpendRequest, Subscription};

    fn at(d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, d, 10, 0, 0).unwrap()
    }

    fn whole(n: i64) -> Credits {
        Credits::whole(n)
    }

    /// A starter account (500 plan credits) with 100 of overdraft.
    fn overdrawn_starter() -> (Catalog, Account) {
        let catalog = Catalog::default_catalog();
        let org = OrgId::parse("org_1").unwrap();
        let subscription = Subscription::new(&catalog, "starter", None, None, None).unwrap();
        let (mut account, _) = Account::provision(org, subscription, &catalog, Actor::service(None), at(1)).unwrap();
        account
            .set_overdraft(&credits_meter(), whole(100), Actor::service(None), at(1))
            .unwrap();
        (catalog, account)
    }

    fn spend(
        catalog: &Catalog,
        account: &mut Account,
        credits: u64,
        now: DateTime<Utc>,
    ) -> Result<LedgerEntry, DomainError> {
        // One credit an AI email: `credits` of them.
        let (action_id, action) = catalog.action("ai_email_generation").unwrap();
        let req = SpendRequest {
            action_id,
            action,
            quantity: credits,
            mode: SpendMode::All,
            actor: Actor::service(None),
            campaign: None,
            subject: None,
        };
        account.spend(&req, now).map(|(_, e)| e)
    }

    #[test]
    fn the_overdraft_is_spent_last_and_never_beyond_its_allowance() {
        let (catalog, mut account) = overdrawn_starter();
        let meter = credits_meter();
        assert_eq!(account.available(&meter), whole(500));
        assert_eq!(account.spendable(&meter, None), whole(600));
        let entry = spend(&catalog, &mut account, 550, at(2)).unwrap();
        let sources: Vec<BucketSource> = entry.lines.iter().map(|l| l.source()).collect();
        assert_eq!(sources, vec![BucketSource::Plan, BucketSource::Overdraft]);
        assert_eq!(account.available(&meter), whole(-50));
        assert_eq!(account.owed(&meter), whole(50));
        let refused = spend(&catalog, &mut account, 51, at(2)).unwrap_err();
        assert!(matches!(refused, DomainError::InsufficientCredits { available, .. } if available == whole(50)));
        spend(&catalog, &mut account, 50, at(2)).unwrap();
        assert_eq!(account.available(&meter), whole(-100));
        account.check_invariants().unwrap();
    }

    #[test]
    fn a_purchase_repays_what_is_owed_first() {
        let (catalog, mut account) = overdrawn_starter();
        let meter = credits_meter();
        spend(&catalog, &mut account, 530, at(2)).unwrap();
        let grant = PurchaseGrant::priced(&catalog, Some("credits_500"), None, "pay-1").unwrap();
        let entry = account.purchase(grant, Actor::service(None), at(3)).unwrap();
        let lines: Vec<(BucketSource, Credits)> = entry.lines.iter().map(|l| (l.source(), l.amount)).collect();
        assert_eq!(
            lines,
            vec![
                (BucketSource::Overdraft, whole(30)),
                (BucketSource::Purchased, whole(470))
            ]
        );
        assert_eq!(account.owed(&meter), Credits::ZERO);
        assert_eq!(account.available(&meter), whole(470));
        assert_eq!(account.spendable(&meter, None), whole(570));
    }

    #[test]
    fn a_pack_that_only_repaid_has_nothing_to_void() {
        let (catalog, mut account) = overdrawn_starter();
        account
            .set_overdraft(&credits_meter(), whole(1_000), Actor::service(None), at(1))
            .unwrap();
        spend(&catalog, &mut account, 1_200, at(2)).unwrap();
        let grant = PurchaseGrant::priced(&catalog, Some("credits_500"), None, "pay-1").unwrap();
        let purchase = account.purchase(grant, Actor::service(None), at(3)).unwrap();
        assert_eq!(purchase.lines.len(), 1, "all of it repaid the overdraft");
        let (void, entry) = account
            .reverse(&purchase, ReversalReason::Refunded, None, Actor::service(None), at(4))
            .unwrap();
        assert_eq!(void.returned, Credits::ZERO);
        assert_eq!(void.stayed_expired, whole(500));
        assert!(entry.lines.is_empty());
        account.check_invariants().unwrap();
    }

    #[test]
    fn the_allowance_cannot_go_below_what_is_owed() {
        let (catalog, mut account) = overdrawn_starter();
        let meter = credits_meter();
        spend(&catalog, &mut account, 540, at(2)).unwrap();
        let refused = account
            .set_overdraft(&meter, whole(39), Actor::service(None), at(2))
            .unwrap_err();
        assert_eq!(
            refused,
            DomainError::OverdraftOwed {
                owed: whole(40),
                allowance: whole(39)
            }
        );
        account
            .set_overdraft(&meter, whole(40), Actor::service(None), at(2))
            .unwrap();
        assert_eq!(account.spendable(&meter, None), Credits::ZERO);
        assert_eq!(account.available(&meter), whole(-40));
    }

    #[test]
    fn a_reversal_after_the_debt_was_repaid_returns_to_the_pool() {
        let (catalog, mut account) = overdrawn_starter();
        let meter = credits_meter();
        let charge = spend(&catalog, &mut account, 520, at(2)).unwrap();
        let grant = PurchaseGrant::priced(&catalog, Some("credits_500"), None, "pay-1").unwrap();
        account.purchase(grant, Actor::service(None), at(3)).unwrap();
        assert_eq!(account.available(&meter), whole(480));
        let (reversal, entry) = account
            .reverse(
                &charge,
                ReversalReason::InvalidResult,
                None,
                Actor::service(None),
                at(4),
            )
            .unwrap();
        // The plan's 500 back to the plan, the overdraft's 20 to the pool:
        // nothing is owed, so the overdraft cannot take them.
        assert_eq!(reversal.returned, whole(520));
        assert!(entry.lines.iter().all(|l| l.source() != BucketSource::Overdraft));
        assert_eq!(account.available(&meter), whole(1_000));
        assert_eq!(account.spendable(&meter, None), whole(1_100));
        account.check_invariants().unwrap();
    }
}
