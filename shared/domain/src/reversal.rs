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
            match self.give_back(&line.bucket, amount, Some(original.at), now)? {
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
        // A pack voided before keeps its voided range, and spending may not
        // have reached it yet: voiding it again (a refund notice delivered
        // twice) must take nothing more, least of all the other packs' credits.
        let voided_before = pool.voided.iter().any(|(offset, _)| start <= *offset && *offset < end);
        let left = if voided_before {
            Credits::ZERO
        } else {
            end.checked_sub(from).filter(|l| l.is_positive()).unwrap_or_default()
        };
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
    use chrono::{Duration, TimeZone};
    use proptest::prelude::*;
    use proptest::sample::Index;

    use super::*;
    use crate::{credits_meter, BucketId, Catalog, OrgId, PurchaseGrant, SpendMode, SpendRequest, Subscription};

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

    #[test]
    fn voiding_a_pack_twice_voids_it_once() {
        let now = Utc.with_ymd_and_hms(2026, 1, 10, 8, 0, 0).unwrap();
        let (catalog, mut account) = starter(now);
        buy(&catalog, &mut account, 100, now);
        let second = buy(&catalog, &mut account, 100, now);
        for _ in 0..2 {
            account
                .reverse(&second, ReversalReason::Refunded, None, Actor::system(), now)
                .unwrap();
        }
        // The plan's 500 and the first pack's 100 stay.
        assert_eq!(account.available(&credits_meter()), Credits::whole(600));
    }

    fn starter(now: DateTime<Utc>) -> (Catalog, Account) {
        let catalog = Catalog::default_catalog();
        let sub = Subscription::new(&catalog, "starter", None, None, None).unwrap();
        let (account, _) =
            Account::provision(OrgId::parse("acme").unwrap(), sub, &catalog, Actor::system(), now).unwrap();
        (catalog, account)
    }

    fn spend(
        catalog: &Catalog,
        account: &mut Account,
        action: &str,
        quantity: u64,
        now: DateTime<Utc>,
    ) -> Result<LedgerEntry, DomainError> {
        let (action_id, action) = catalog.action(action).unwrap();
        let req = SpendRequest {
            action_id,
            action,
            quantity,
            mode: SpendMode::All,
            actor: Actor::system(),
            campaign: None,
            subject: None,
        };
        let (_, mut entry) = account.spend(&req, now)?;
        // The store names every entry when it writes it.
        entry.id = format!("ent_{}", account.seq);
        Ok(entry)
    }

    fn buy(catalog: &Catalog, account: &mut Account, credits: i64, now: DateTime<Utc>) -> LedgerEntry {
        let grant = PurchaseGrant::priced(catalog, None, Some(Credits::whole(credits)), "pay").unwrap();
        let mut entry = account.purchase(grant, Actor::system(), now).unwrap();
        entry.id = format!("ent_{}", account.seq);
        entry
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// A spend; `undo`: reversed right after.
        Spend(&'static str, u64, bool),
        Buy(i64),
        Overdraft(i64),
        /// Days pass; the account renews if due.
        Wait(i64),
        /// One of the charges not reversed yet is reversed (the store
        /// claims each charge once).
        Reverse(Index),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (
                prop::sample::select(vec!["ai_email_generation", "email_verification", "email_send"]),
                prop_oneof![1u64..60, 100u64..700],
                any::<bool>(),
            )
                .prop_map(|(a, q, undo)| Op::Spend(a, q, undo)),
            1 => (1i64..150).prop_map(Op::Buy),
            1 => (0i64..100).prop_map(Op::Overdraft),
            1 => (1i64..20).prop_map(Op::Wait),
            3 => any::<Index>().prop_map(Op::Reverse),
        ]
    }

    /// Whether what `line` took can go back: its bucket is still there
    /// (for an overdraft: the meter still has one).
    fn can_go_back(account: &Account, line: &EntryLine, now: DateTime<Utc>) -> bool {
        match line.source() {
            BucketSource::Overdraft => account.overdraft(line.meter()).is_some(),
            _ => account.buckets.iter().any(|b| b.id == line.bucket && b.is_live(now)),
        }
    }

    fn follow_reversals(ops: Vec<Op>) -> Result<(), TestCaseError> {
        let mut now = Utc.with_ymd_and_hms(2026, 1, 10, 8, 0, 0).unwrap();
        let (catalog, mut account) = starter(now);
        let meter = credits_meter();
        let mut charges: Vec<LedgerEntry> = Vec::new();
        for op in ops {
            match op {
                Op::Spend(action, quantity, undo) => {
                    let before = account.clone();
                    let Ok(charge) = spend(&catalog, &mut account, action, quantity, now) else {
                        continue;
                    };
                    if !undo {
                        charges.push(charge);
                        continue;
                    }
                    let reversed = account.reverse(&charge, ReversalReason::Correction, None, Actor::system(), now);
                    if charge.lines.is_empty() {
                        prop_assert!(matches!(reversed, Err(DomainError::NotReversible(_))));
                        continue;
                    }
                    let (reversal, _) = reversed.unwrap();
                    prop_assert_eq!(
                        (reversal.returned, reversal.stayed_expired),
                        (-charge.net(&meter), Credits::ZERO)
                    );
                    prop_assert_eq!(
                        &account.buckets,
                        &before.buckets,
                        "reversed at once: every bucket as before"
                    );
                    let used = |a: &Account| a.used_this_period.get(&meter).copied().unwrap_or_default();
                    prop_assert_eq!(used(&account), used(&before));
                }
                Op::Buy(credits) => {
                    buy(&catalog, &mut account, credits, now);
                }
                Op::Overdraft(credits) => {
                    // Below what is owed is refused; that is fine here.
                    let _ = account.set_overdraft(&meter, Credits::whole(credits), Actor::system(), now);
                }
                Op::Wait(days) => {
                    now += Duration::days(days);
                    account.renew_if_due(&catalog, now).unwrap();
                }
                Op::Reverse(which) => {
                    if charges.is_empty() {
                        continue;
                    }
                    let charge = charges.remove(which.index(charges.len()));
                    let before = account.clone();
                    let reversed = account.reverse(&charge, ReversalReason::InvalidResult, None, Actor::system(), now);
                    if charge.lines.is_empty() {
                        prop_assert!(matches!(reversed, Err(DomainError::NotReversible(_))));
                        prop_assert_eq!(&account, &before);
                        continue;
                    }
                    let (reversal, entry) = reversed.unwrap();
                    let (mut back, mut gone) = (Credits::ZERO, Credits::ZERO);
                    for line in &charge.lines {
                        let part = if can_go_back(&before, line, now) {
                            &mut back
                        } else {
                            &mut gone
                        };
                        *part = part.checked_sub(line.amount).unwrap();
                    }
                    prop_assert_eq!((reversal.returned, reversal.stayed_expired), (back, gone));
                    prop_assert_eq!(entry.net(&meter), back);
                    prop_assert_eq!(entry.reverses.as_deref(), Some(charge.id.as_str()));
                    prop_assert_eq!(
                        account.available(&meter),
                        before.available(&meter).checked_add(back).unwrap()
                    );
                }
            }
            account.check_invariants().unwrap();
        }
        Ok(())
    }

    proptest! {
        /// Arbitrary spends, purchases, overdrafts and renewals, and charges
        /// reversed at any later time: a reversal gives back exactly what
        /// each bucket paid while that bucket is still there, and says the
        /// rest stayed expired; reversed at once, a charge leaves every
        /// bucket as it was before it; a free spend is not reversible and
        /// its reversal changes nothing.
        #[test]
        fn a_reversal_gives_back_what_the_charge_took_where_its_buckets_remain(
            ops in prop::collection::vec(op(), 1..40),
        ) {
            follow_reversals(ops)?;
        }
    }

    #[derive(Clone, Debug)]
    enum PoolOp {
        Buy(i64),
        Spend(u64),
        /// The payment provider refunds one of the packs bought (perhaps
        /// one refunded already: the notice arrives twice).
        Void(Index),
    }

    /// One pack as the buyer sees it: the purchase, where it starts in the
    /// pool's grants, its size, and what of it is left to spend.
    struct Pack {
        purchase: LedgerEntry,
        start: Credits,
        size: Credits,
        left: Credits,
    }

    fn follow_packs(ops: Vec<PoolOp>) -> Result<(), TestCaseError> {
        let now = Utc.with_ymd_and_hms(2026, 1, 10, 8, 0, 0).unwrap();
        let (catalog, mut account) = starter(now);
        // The plan's 500 spent: every later spend draws on the pool.
        spend(&catalog, &mut account, "ai_email_generation", 500, now).unwrap();
        let meter = credits_meter();
        let pool_id = BucketId::Purchased { meter: meter.clone() };
        let mut packs: Vec<Pack> = Vec::new();
        for op in ops {
            match op {
                PoolOp::Buy(credits) => {
                    let purchase = buy(&catalog, &mut account, credits, now);
                    let start = packs
                        .last()
                        .map(|p| p.start.checked_add(p.size).unwrap())
                        .unwrap_or_default();
                    prop_assert_eq!(purchase.lines[0].offset, Some(start));
                    let size = Credits::whole(credits);
                    packs.push(Pack {
                        purchase,
                        start,
                        size,
                        left: size,
                    });
                }
                PoolOp::Spend(credits) => {
                    let left: Credits = packs.iter().map(|p| p.left).sum();
                    // Where the oldest pack with credits left stands.
                    let cursor = packs
                        .iter()
                        .find(|p| p.left.is_positive())
                        .map(|p| p.start.checked_add(p.size).unwrap().checked_sub(p.left).unwrap());
                    match spend(&catalog, &mut account, "ai_email_generation", credits, now) {
                        Ok(charge) => {
                            let line = &charge.lines[0];
                            prop_assert_eq!(charge.lines.len(), 1);
                            prop_assert_eq!((&line.bucket, line.offset), (&pool_id, cursor));
                            let mut owed = -line.amount;
                            for p in packs.iter_mut() {
                                let take = p.left.min(owed);
                                p.left = p.left.checked_sub(take).unwrap();
                                owed = owed.checked_sub(take).unwrap();
                            }
                            prop_assert_eq!(owed, Credits::ZERO);
                        }
                        Err(DomainError::InsufficientCredits { .. }) => {
                            prop_assert!(left < Credits::whole(i64::try_from(credits).unwrap()));
                        }
                        Err(e) => prop_assert!(false, "{}", e),
                    }
                }
                PoolOp::Void(which) => {
                    if packs.is_empty() {
                        continue;
                    }
                    let which = which.index(packs.len());
                    let pack = &mut packs[which];
                    let (reversal, entry) = account
                        .reverse(&pack.purchase, ReversalReason::Refunded, None, Actor::system(), now)
                        .unwrap();
                    prop_assert_eq!(entry.net(&meter), -pack.left);
                    prop_assert_eq!(reversal.returned, -pack.left);
                    prop_assert_eq!(reversal.stayed_expired, pack.size.checked_sub(pack.left).unwrap());
                    if pack.left.is_positive() {
                        let from = pack
                            .start
                            .checked_add(pack.size)
                            .unwrap()
                            .checked_sub(pack.left)
                            .unwrap();
                        prop_assert_eq!(entry.lines[0].offset, Some(from));
                    }
                    pack.left = Credits::ZERO;
                }
            }
            account.check_invariants().unwrap();
            let left: Credits = packs.iter().map(|p| p.left).sum();
            let pool = account
                .buckets
                .iter()
                .find(|b| b.id == pool_id)
                .map(|b| b.remaining)
                .unwrap_or_default();
            prop_assert_eq!(pool, left, "the pool holds what the packs have left");
            prop_assert_eq!(account.available(&meter), left);
        }
        Ok(())
    }

    proptest! {
        /// The purchased pool against a model of its packs, spent oldest
        /// first: every spend draws from where the oldest pack with credits
        /// left stands; voiding a pack takes exactly what is left of that
        /// pack and nothing of any other; voiding it again takes nothing.
        #[test]
        fn voiding_a_pack_takes_what_is_left_of_it_once_and_nothing_of_the_others(
            ops in prop::collection::vec(
                prop_oneof![
                    2 => (1i64..60).prop_map(PoolOp::Buy),
                    3 => (1u64..80).prop_map(PoolOp::Spend),
                    2 => any::<Index>().prop_map(PoolOp::Void),
                ],
                1..40,
            ),
        ) {
            follow_packs(ops)?;
        }
    }
}
