//! Reversing one charge later: a refund when a revealed email bounces, a
//! credit-back for an invalid result, an operator's correction. The
//! original entry stays as it is; a reversing entry points at it and
//! returns its credits to the buckets that paid, except where a bucket is
//! gone (plan credits of a month that has since renewed stay expired, and
//! the reversal says so). Each entry is reversed at most once: the store
//! claims the original in the reversal's transaction.

use chrono::{DateTime, Utc};

use crate::account::Account;
use crate::bucket::BucketSource;
use crate::entry::{Actor, EntryKind, EntryLine, LedgerEntry};
use crate::{Credits, DomainError};

/// Why a charge is reversed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReversalReason {
    /// The revealed email bounced within the action's refund window.
    Bounced,
    /// An operator credits back a result that was invalid.
    InvalidResult,
    /// An operator's correction (with a note).
    Correction,
    /// A purchase refunded by the payment provider: the pack is voided.
    /// What is left of it leaves the balance; what was spent of it stays
    /// spent (the reversal says how much it could not take back).
    Refunded,
}

impl ReversalReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ReversalReason::Bounced => "bounced",
            ReversalReason::InvalidResult => "invalid_result",
            ReversalReason::Correction => "correction",
            ReversalReason::Refunded => "refunded",
        }
    }

    pub fn parse(text: &str) -> Option<ReversalReason> {
        [
            ReversalReason::Bounced,
            ReversalReason::InvalidResult,
            ReversalReason::Correction,
            ReversalReason::Refunded,
        ]
        .into_iter()
        .find(|r| r.as_str() == text)
    }
}

/// What a reversal returned, and what it could not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reversal {
    pub returned: Credits,
    /// Credits whose bucket is gone (a renewed month's plan credits): they
    /// stay expired.
    pub stayed_expired: Credits,
}

impl Account {
    /// Reverses `original` (a spend or a charged result of this account):
    /// each debit goes back to the bucket it came from while that bucket
    /// is still there.
    pub fn reverse(
        &mut self,
        original: &LedgerEntry,
        reason: ReversalReason,
        note: Option<String>,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<(Reversal, LedgerEntry), DomainError> {
        if reason == ReversalReason::Refunded {
            return self.void_purchase(original, note, actor, now);
        }
        if !matches!(original.kind, EntryKind::Spend | EntryKind::Result) {
            return Err(DomainError::NotReversible(format!(
                "only charges are reversed, not a {:?} entry",
                original.kind
            )));
        }
        let debits: Vec<&EntryLine> = original.lines.iter().filter(|l| l.amount.is_negative()).collect();
        if debits.is_empty() {
            return Err(DomainError::NotReversible("the entry charged nothing".into()));
        }
        let mut lines = Vec::new();
        let mut reversal = Reversal {
            returned: Credits::ZERO,
            stayed_expired: Credits::ZERO,
        };
        for line in debits {
            let amount = -line.amount;
            match self.give_back(&line.bucket, amount, now)? {
                Some(given) => {
                    lines.extend(given);
                    reversal.returned = reversal.returned.checked_add(amount).expect("credits within range");
                }
                None => {
                    reversal.stayed_expired = reversal
                        .stayed_expired
                        .checked_add(amount)
                        .expect("credits within range");
                }
            }
        }
        // What the reversal gives back is no longer used this period.
        if let (Some(meter), true) = (
            lines.first().map(|l| l.meter().clone()),
            reversal.returned.is_positive(),
        ) {
            if let Some(used) = self.used_this_period.get_mut(&meter) {
                *used = used
                    .checked_sub(reversal.returned)
                    .filter(|u| !u.is_negative())
                    .unwrap_or_default();
            }
        }
        let entry = self.record(EntryKind::Reversal, actor, now, lines, |e| {
            e.action = original.action.clone();
            e.subject = original.subject.clone();
            e.campaign = original.campaign.clone();
            e.reverses = Some(original.id.clone());
            e.result = Some(reason.as_str().to_string());
            e.note = note;
        });
        self.check_invariants()?;
        Ok((reversal, entry))
    }
}

impl Account {
    /// Voids one purchased pack: the part of it not spent yet leaves the
    /// purchased pool (a range spending skips from now on), the part spent
    /// stays spent (`stayed_expired` of the answer: not taken back); other
    /// packs are untouched.
    fn void_purchase(
        &mut self,
        original: &LedgerEntry,
        note: Option<String>,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<(Reversal, LedgerEntry), DomainError> {
        let bought = match (original.kind, &original.purchase) {
            (EntryKind::Purchase, Some(p)) => p.credits,
            _ => {
                return Err(DomainError::NotReversible(
                    "only a purchase is voided as refunded".into(),
                ))
            }
        };
        let Some(pack) = original.lines.iter().find(|l| l.source() == BucketSource::Purchased) else {
            // All of it repaid an overdraft: spent already.
            let reversal = Reversal {
                returned: Credits::ZERO,
                stayed_expired: bought,
            };
            let entry = self.record(EntryKind::Reversal, actor, now, Vec::new(), |e| {
                e.reverses = Some(original.id.clone());
                e.result = Some(ReversalReason::Refunded.as_str().to_string());
                e.note = note;
            });
            return Ok((reversal, entry));
        };
        let start = pack.offset.unwrap_or_default();
        let end = start.checked_add(pack.amount).expect("credits within range");
        let pool = self
            .buckets
            .iter_mut()
            .find(|b| b.id == pack.bucket)
            .ok_or_else(|| DomainError::InvariantViolated("a purchase's pool is gone".into()))?;
        let at = pool.consumed();
        let from = if at > start { at } else { start };
        let left = end.checked_sub(from).filter(|l| l.is_positive()).unwrap_or_default();
        let mut lines = Vec::new();
        if left.is_positive() {
            pool.remaining = pool
                .remaining
                .checked_sub(left)
                .filter(|r| !r.is_negative())
                .ok_or_else(|| DomainError::InvariantViolated("a voided pack exceeds the pool".into()))?;
            pool.voided.push((from, left));
            pool.voided.sort();
            lines.push(EntryLine {
                bucket: pool.id.clone(),
                amount: -left,
                offset: Some(from),
            });
        }
        let reversal = Reversal {
            returned: -left,
            // What repaid an overdraft counts as spent.
            stayed_expired: bought.checked_sub(left).unwrap_or_default(),
        };
        let entry = self.record(EntryKind::Reversal, actor, now, lines, |e| {
            e.reverses = Some(original.id.clone());
            e.result = Some(ReversalReason::Refunded.as_str().to_string());
            e.note = note;
        });
        self.check_invariants()?;
        Ok((reversal, entry))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::{credits_meter, Catalog, OrgId, PurchaseGrant, SpendMode, SpendRequest, Subscription};

    fn at(m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, m, d, 10, 0, 0).unwrap()
    }

    #[test]
    fn a_reversal_returns_to_the_buckets_that_paid_except_a_renewed_months() {
        let catalog = Catalog::default_catalog();
        let sub = Subscription::new(&catalog, "starter", None, None, None).unwrap();
        let (mut account, _) =
            Account::provision(OrgId::parse("acme").unwrap(), sub, &catalog, Actor::system(), at(1, 10)).unwrap();
        let grant = PurchaseGrant::priced(&catalog, None, Some(Credits::whole(100)), "p").unwrap();
        account.purchase(grant, Actor::system(), at(1, 10)).unwrap();
        let (action_id, action) = catalog.action("ai_email_generation").unwrap();
        let req = SpendRequest {
            action_id,
            action,
            quantity: 520,
            mode: SpendMode::All,
            actor: Actor::system(),
            campaign: None,
            subject: None,
        };
        let (_, mut spent) = account.spend(&req, at(1, 12)).unwrap();
        spent.id = "ent_x".into();
        // Same month: all 520 go back, 500 to the plan, 20 to the pool.
        let mut same_month = account.clone();
        let (r, e) = same_month
            .reverse(
                &spent,
                ReversalReason::Correction,
                Some("double click".into()),
                Actor::system(),
                at(1, 13),
            )
            .unwrap();
        assert_eq!((r.returned, r.stayed_expired), (Credits::whole(520), Credits::ZERO));
        assert_eq!((e.kind, e.reverses.as_deref()), (EntryKind::Reversal, Some("ent_x")));
        assert_eq!(same_month.available(&credits_meter()), Credits::whole(600));
        // After the renewal the plan's part stays expired.
        account.renew_if_due(&catalog, at(2, 10)).unwrap().unwrap();
        let (r, _) = account
            .reverse(&spent, ReversalReason::InvalidResult, None, Actor::system(), at(2, 11))
            .unwrap();
        assert_eq!(
            (r.returned, r.stayed_expired),
            (Credits::whole(20), Credits::whole(500))
        );
        assert_eq!(account.available(&credits_meter()), Credits::whole(600));
    }
}
