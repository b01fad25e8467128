//! An organization's account: its subscription, its billing period and the
//! buckets that make up each meter's balance. Operations are pure state
//! transitions, each in the module of its job ([`crate::spend`],
//! [`crate::purchase`], [`crate::renewal`]), each yielding the ledger entry
//! that describes it; the store makes it atomic.
//!
//! The account stays small whatever an organization does: buckets are named
//! by what grants them ([`BucketId`]), so there is one per meter and month,
//! trial or purchased pool.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, Utc};

use crate::bucket::{Bucket, BucketId, BucketSource, Draw};
use crate::catalog::{Catalog, Plan};
use crate::entry::{Actor, EntryKind, EntryLine, LedgerEntry};
use crate::period::Period;
use crate::subscription::{Subscription, SubscriptionStatus};
use crate::team::Member;
use crate::{Credits, DomainError, MeterId, OrgId, UserId};

pub fn credits_meter() -> MeterId {
    MeterId::parse("credits").expect("valid meter id")
}

/// Where a month's plan allowance of one meter is granted.
pub(crate) struct PlanGrantTarget {
    pub id: BucketId,
    /// Months of allowance it holds from now: 1, or what is left of a year
    /// granted up front.
    pub months: u32,
    pub expires_at: DateTime<Utc>,
    /// Granted already: this month's, or a year up front still running.
    pub exists: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub org: OrgId,
    /// The last ledger entry written for this account.
    pub seq: u64,
    pub subscription: Subscription,
    /// A downgrade waiting for the next renewal.
    pub scheduled: Option<Subscription>,
    pub status: SubscriptionStatus,
    /// The day the organization subscribed: every period starts on it.
    pub anchor: NaiveDate,
    pub period: Period,
    pub buckets: Vec<Bucket>,
    pub used_this_period: BTreeMap<MeterId, Credits>,
    /// Credits held by reservations, per meter (out of the buckets, not
    /// yet spent).
    pub reserved: BTreeMap<MeterId, Credits>,
    /// Units still reserved, per meter and deadline day: the balance's
    /// nearest expiry, and how the account knows, without reading its
    /// units, that some are overdue. At most one a day of the reservation
    /// window per meter; a day's count leaves at zero. (Below zero only on
    /// a stale guess, whose write then fails its condition.)
    pub units_due: BTreeMap<(MeterId, NaiveDate), i64>,
    /// Low-balance alerts by id (see [`crate::alerts`]).
    pub alerts: BTreeMap<crate::AlertId, crate::alerts::Alert>,
    /// The "top-up needed" trigger (see [`crate::alerts`]).
    pub top_up: Option<crate::alerts::TopUpTrigger>,
    /// A member's spend costing more waits for an admin (see [`crate::approval`]).
    pub approval_above: Option<Credits>,
    /// Campaign budgets (see [`crate::controls`]).
    pub budgets: BTreeMap<crate::CampaignId, crate::controls::CampaignBudget>,
    /// Slots in use per capacity meter (`lead_slots`): never renewed.
    pub slots_used: BTreeMap<MeterId, u64>,
    /// The team (see [`crate::team`]): licenses follow it.
    pub members: BTreeMap<UserId, Member>,
    /// How many grants have raised a bucket spent before the purchased pool
    /// (a month, a license, an upgrade; not a purchase). A spend decided on a
    /// state that missed one would draw in the wrong order, so the store
    /// conditions spends on it; purchases leave it alone, so they commute
    /// with spends.
    pub grants: u64,
    /// Result charging is paused: a billable result could not be paid.
    pub results_paused: bool,
    /// Billable results kept unpaid, waiting for a resume.
    pub held_results: u64,
    pub created_at: DateTime<Utc>,
}

impl Account {
    /// Provisions an organization's account: today is its anchor; the first
    /// month's allowance and the plan's one-time trial are granted at once.
    pub fn provision(
        org: OrgId,
        subscription: Subscription,
        catalog: &Catalog,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<(Account, LedgerEntry), DomainError> {
        let (_, plan) = catalog.plan(subscription.plan.as_str())?;
        let anchor = now.date_naive();
        let mut account = Account {
            org,
            seq: 0,
            subscription,
            scheduled: None,
            status: SubscriptionStatus::Active,
            anchor,
            period: Period::containing(anchor, anchor),
            buckets: Vec::new(),
            used_this_period: BTreeMap::new(),
            units_due: BTreeMap::new(),
            budgets: BTreeMap::new(),
            approval_above: None,
            top_up: None,
            alerts: BTreeMap::new(),
            slots_used: BTreeMap::new(),
            reserved: BTreeMap::new(),
            members: BTreeMap::new(),
            grants: 0,
            results_paused: false,
            held_results: 0,
            created_at: now,
        };
        let mut lines = account.grant_monthly(plan, now)?;
        for t in &plan.trial {
            lines.push(account.grant(BucketId::Trial { meter: t.meter.clone() }, t.amount, None, now));
        }
        let plan_id = account.subscription.plan.clone();
        let entry = account.record(EntryKind::Subscription, actor, now, lines, |e| e.plan = Some(plan_id));
        account.check_invariants()?;
        Ok((account, entry))
    }

    /// Balance of a meter: what its buckets hold, less what is owed on its
    /// overdraft (below zero while more is owed than held).
    pub fn available(&self, meter: &MeterId) -> Credits {
        self.buckets
            .iter()
            .filter(|b| b.meter() == meter)
            .map(|b| b.balance())
            .sum()
    }

    /// Buckets of a meter in spending order.
    pub fn buckets_in_priority(&self, meter: &MeterId) -> Vec<&Bucket> {
        let mut bs: Vec<&Bucket> = self.buckets.iter().filter(|b| b.meter() == meter).collect();
        bs.sort_by_key(|b| b.priority());
        bs
    }

    /// Every meter the account has something to show for, `credits` always.
    pub fn meters(&self) -> BTreeSet<MeterId> {
        self.buckets
            .iter()
            .map(|b| b.meter().clone())
            .chain(self.used_this_period.keys().cloned())
            .chain(std::iter::once(credits_meter()))
            .collect()
    }

    /// Grants this month's plan allowance, each meter's in its own bucket
    /// that expires at the next renewal (an annual plan granting up front:
    /// every month left of the anchor's year, once, expiring at its
    /// anniversary), and the licenses of the members who hold one.
    pub(crate) fn grant_monthly(&mut self, plan: &Plan, now: DateTime<Utc>) -> Result<Vec<EntryLine>, DomainError> {
        let mut lines = Vec::new();
        for (meter, amount) in self.subscription.shared_grants(plan)? {
            let target = self.plan_grant_target(&meter, plan);
            if target.exists {
                // The year granted up front is still running.
                continue;
            }
            let amount = amount
                .checked_mul(u64::from(target.months))
                .ok_or_else(|| DomainError::InvalidRequest("allowance too large".into()))?;
            lines.push(self.grant(target.id, amount, Some(target.expires_at), now));
        }
        lines.extend(self.grant_licenses(plan, now));
        Ok(lines)
    }

    /// Where the current month's plan allowance of `meter` goes: this
    /// month's bucket, or (a year granted up front) the year's, with the
    /// months it covers from now.
    pub(crate) fn plan_grant_target(&self, meter: &MeterId, plan: &Plan) -> PlanGrantTarget {
        let monthly = PlanGrantTarget {
            id: BucketId::Plan {
                meter: meter.clone(),
                period: self.period.start,
            },
            months: 1,
            expires_at: self.renews_at(),
            exists: false,
        };
        let target = if self.subscription.grants_year_up_front(plan) {
            let index = self.period.index(self.anchor);
            let months = 12 - index % 12;
            let running = self.buckets.iter().find(|b| {
                matches!(&b.id, BucketId::Plan { meter: m, .. } if m == meter)
                    && b.expires_at.is_some_and(|at| at >= self.renews_at())
            });
            match running {
                // This month's own bucket, granted before the subscription
                // granted years (an upgrade from a monthly plan): it ends at
                // this renewal, so it is no year. The year starts at the next
                // renewal; until then the month gets the month's difference.
                Some(month) if month.id == monthly.id && month.expires_at == Some(monthly.expires_at) => monthly,
                Some(year) => PlanGrantTarget {
                    id: year.id.clone(),
                    months,
                    expires_at: year.expires_at.unwrap_or(monthly.expires_at),
                    exists: true,
                },
                None => PlanGrantTarget {
                    months,
                    expires_at: crate::period::start_of_day(crate::period::month_from_anchor(
                        self.anchor,
                        index + months,
                    )),
                    ..monthly
                },
            }
        } else {
            monthly
        };
        PlanGrantTarget {
            exists: target.exists || self.buckets.iter().any(|b| b.id == target.id),
            ..target
        }
    }

    /// Credits `amount` into a bucket: opens it, or (the purchased pool)
    /// adds to it. A pool line records where the new credits start in the
    /// pool's cumulative grants.
    pub(crate) fn grant(
        &mut self,
        id: BucketId,
        amount: Credits,
        expires_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> EntryLine {
        let pooled = id.source() == BucketSource::Purchased;
        if !pooled {
            self.grants += 1;
        }
        let granted_by = self.seq + 1;
        // An existing bucket is raised (the pool by a pack, this month's plan
        // bucket by an upgrade); otherwise one opens.
        let offset = match self.buckets.iter_mut().find(|b| b.id == id) {
            Some(bucket) => {
                let offset = bucket.granted;
                bucket.granted = bucket.granted.checked_add(amount).expect("credits within range");
                bucket.remaining = bucket.remaining.checked_add(amount).expect("credits within range");
                offset
            }
            None => {
                self.buckets.push(Bucket {
                    id: id.clone(),
                    granted: amount,
                    remaining: amount,
                    expires_at,
                    granted_at: now,
                    granted_by,
                    voided: Vec::new(),
                });
                // One canonical order (by grant), whatever stored or read them.
                self.buckets
                    .sort_by(|x, y| (x.granted_by, &x.id).cmp(&(y.granted_by, &y.id)));
                Credits::ZERO
            }
        };
        EntryLine {
            bucket: id,
            amount,
            offset: pooled.then_some(offset),
        }
    }

    /// Takes what an allocation decided from its buckets. Emptied buckets
    /// stay until they expire: a spend only ever lowers a bucket, so
    /// concurrent spends commute.
    pub(crate) fn take(&mut self, draws: &[Draw]) -> Result<Vec<EntryLine>, DomainError> {
        for draw in draws {
            let bucket = self
                .buckets
                .iter_mut()
                .find(|b| b.id == draw.bucket)
                .ok_or_else(|| DomainError::InvariantViolated(format!("no bucket {}", draw.bucket)))?;
            bucket.remaining = bucket
                .remaining
                .checked_sub(draw.amount)
                .filter(|r| !r.is_negative())
                .ok_or_else(|| DomainError::InvariantViolated(format!("bucket {} would go negative", bucket.id)))?;
        }
        Ok(draws.iter().map(Draw::debit_line).collect())
    }

    /// Every meter's available balance, `credits` always: what an entry's
    /// placement records as its balance after.
    pub fn balances(&self) -> BTreeMap<MeterId, Credits> {
        self.buckets
            .iter()
            .map(|b| b.meter())
            .cloned()
            .chain(std::iter::once(credits_meter()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|m| {
                let a = self.available(&m);
                (m, a)
            })
            .collect()
    }

    /// Counts the next entry (the account's `seq` is how many it has) and
    /// describes the change; the sequencer places it once committed.
    pub(crate) fn record(
        &mut self,
        kind: EntryKind,
        actor: Actor,
        now: DateTime<Utc>,
        lines: Vec<EntryLine>,
        fill: impl FnOnce(&mut LedgerEntry),
    ) -> LedgerEntry {
        self.seq += 1;
        let mut entry = LedgerEntry {
            id: String::new(),
            placement: None,
            at: now,
            kind,
            actor,
            action: None,
            quantity: None,
            requested: None,
            campaign: None,
            subject: None,
            subjects: Vec::new(),
            plan: None,
            member: None,
            result: None,
            reverses: None,
            note: None,
            purchase: None,
            lines,
        };
        fill(&mut entry);
        entry
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::purchase::PurchaseGrant;
    use crate::spend::{SpendMode, SpendQuote, SpendRequest};
    use crate::subscription::Billing;
    use crate::{BucketSource, CallerKind, PlanId, UserId};
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 10, 0, 0).unwrap()
    }

    fn user() -> Actor {
        Actor {
            user: Some(UserId::parse("u1").unwrap()),
            caller: CallerKind::Member,
        }
    }

    fn provisioned(plan: &str, seats: u32, now: DateTime<Utc>) -> (Catalog, Account, LedgerEntry) {
        let catalog = Catalog::default_catalog();
        let sub = Subscription::new(&catalog, plan, Some(seats), None, None).unwrap();
        let (account, entry) = Account::provision(OrgId::parse("acme").unwrap(), sub, &catalog, user(), now).unwrap();
        (catalog, account, entry)
    }

    fn spend(
        account: &mut Account,
        catalog: &Catalog,
        action: &str,
        quantity: u64,
        mode: SpendMode,
        now: DateTime<Utc>,
    ) -> Result<(SpendQuote, LedgerEntry), DomainError> {
        let (action_id, action) = catalog.action(action).unwrap();
        let req = SpendRequest {
            action_id,
            action,
            quantity,
            mode,
            actor: user(),
            campaign: None,
            subject: None,
        };
        account.spend(&req, now)
    }

    fn buy(account: &mut Account, credits: i64, now: DateTime<Utc>) -> LedgerEntry {
        let grant = PurchaseGrant {
            package: None,
            credits: Credits::whole(credits),
            price_cents: 0,
            currency: "USD".into(),
            payment_reference: "p".into(),
        };
        account.purchase(grant, user(), now).unwrap()
    }

    #[test]
    fn provisioning_grants_the_first_month_expiring_at_the_next_renewal() {
        let now = at(2026, 1, 31);
        let (_, account, entry) = provisioned("starter", 1, now);
        assert_eq!(account.available(&credits_meter()), Credits::whole(500));
        assert_eq!(account.period.end, NaiveDate::from_ymd_opt(2026, 2, 28).unwrap());
        assert_eq!(
            account.buckets[0].expires_at,
            Some(crate::period::start_of_day(account.period.end))
        );
        assert_eq!((account.seq, entry.kind), (1, EntryKind::Subscription));
        assert_eq!(account.balances()[&credits_meter()], Credits::whole(500));
    }

    #[test]
    fn per_seat_plans_multiply_and_the_trial_never_expires() {
        let (_, account, _) = provisioned("per_seat_1500", 3, at(2026, 3, 1));
        assert_eq!(account.available(&credits_meter()), Credits::whole(4_500));
        assert_eq!(
            account.available(&MeterId::parse("calling_credits").unwrap()),
            Credits::whole(400)
        );
        let (_, trial, _) = provisioned("free_trial", 1, at(2026, 3, 1));
        assert_eq!(trial.available(&credits_meter()), Credits::whole(500));
        assert_eq!(trial.buckets[0].source(), BucketSource::Trial);
        assert_eq!(trial.buckets[0].expires_at, None);
    }

    #[test]
    fn plan_credits_are_spent_before_purchased_and_halves_are_exact() {
        let now = at(2026, 5, 2);
        let (catalog, mut account, _) = provisioned("starter", 1, now);
        buy(&mut account, 100, now);
        let (_, e) = spend(&mut account, &catalog, "email_verification", 3, SpendMode::All, now).unwrap();
        assert_eq!(e.net(&credits_meter()), Credits::from_thousandths(-1_500));
        assert_eq!(e.lines[0].source(), BucketSource::Plan);
        // Drain the plan bucket and cross into the purchased one in one spend.
        let (_, e) = spend(&mut account, &catalog, "ai_email_generation", 500, SpendMode::All, now).unwrap();
        let by_source: Vec<_> = e.lines.iter().map(|l| (l.source(), l.amount)).collect();
        assert_eq!(
            by_source,
            vec![
                (BucketSource::Plan, Credits::from_thousandths(-498_500)),
                (BucketSource::Purchased, Credits::from_thousandths(-1_500)),
            ]
        );
        assert_eq!(account.balances()[&credits_meter()], Credits::from_thousandths(98_500));
    }

    #[test]
    fn insufficient_credits_say_what_was_needed_and_change_nothing() {
        let now = at(2026, 5, 2);
        let (catalog, mut account, _) = provisioned("starter", 1, now);
        spend(&mut account, &catalog, "ai_email_generation", 498, SpendMode::All, now).unwrap();
        let before = account.clone();
        let err = spend(&mut account, &catalog, "ai_variables", 5, SpendMode::All, now).unwrap_err();
        assert_eq!(
            err,
            DomainError::InsufficientCredits {
                meter: credits_meter(),
                needed: Credits::whole(5),
                available: Credits::whole(2)
            }
        );
        assert_eq!(account, before);
    }

    #[test]
    fn up_to_charges_as_many_units_as_the_balance_covers() {
        let now = at(2026, 5, 2);
        let (catalog, mut account, _) = provisioned("starter", 1, now);
        spend(&mut account, &catalog, "ai_email_generation", 493, SpendMode::All, now).unwrap();
        let (q, e) = spend(&mut account, &catalog, "linkedin_enrichment", 10, SpendMode::UpTo, now).unwrap();
        assert_eq!((q.requested, q.units, e.quantity), (10, 7, Some(7)));
        assert_eq!(account.available(&credits_meter()), Credits::ZERO);
        let err = spend(&mut account, &catalog, "linkedin_enrichment", 10, SpendMode::UpTo, now).unwrap_err();
        assert!(matches!(err, DomainError::InsufficientCredits { .. }));
    }

    #[test]
    fn free_actions_work_at_zero_and_are_still_recorded() {
        let now = at(2026, 5, 2);
        let (catalog, mut account, _) = provisioned("starter", 1, now);
        spend(&mut account, &catalog, "ai_email_generation", 500, SpendMode::All, now).unwrap();
        let (q, e) = spend(&mut account, &catalog, "email_send", 40, SpendMode::All, now).unwrap();
        assert_eq!((q.amount, e.quantity, e.lines.len()), (Credits::ZERO, Some(40), 0));
    }

    #[test]
    fn renewal_expires_last_months_plan_credits_and_keeps_purchased() {
        let now = at(2026, 1, 31);
        let (catalog, mut account, _) = provisioned("starter", 1, now);
        buy(&mut account, 100, now);
        spend(&mut account, &catalog, "ai_email_generation", 200, SpendMode::All, now).unwrap();
        assert!(account.renew_if_due(&catalog, at(2026, 2, 27)).unwrap().is_none());
        let renewal = account.renew_if_due(&catalog, at(2026, 2, 28)).unwrap().expect("due");
        assert_eq!(renewal.kind, EntryKind::Renewal);
        let expired: Credits = renewal
            .lines
            .iter()
            .filter(|l| l.amount.is_negative())
            .map(|l| l.amount)
            .sum();
        assert_eq!(expired, Credits::whole(-300));
        assert_eq!(account.available(&credits_meter()), Credits::whole(600));
        assert!(account.used_this_period.is_empty());
        // Renewing twice grants once.
        assert!(account.renew_if_due(&catalog, at(2026, 2, 28)).unwrap().is_none());
        assert_eq!(account.period.end, NaiveDate::from_ymd_opt(2026, 3, 31).unwrap());
    }

    #[test]
    fn annual_billing_still_grants_monthly() {
        let catalog = Catalog::default_catalog();
        let sub = Subscription::new(&catalog, "business", None, Some(Billing::Annual), None).unwrap();
        let org = OrgId::parse("acme").unwrap();
        let (mut account, _) = Account::provision(org, sub, &catalog, user(), at(2026, 1, 15)).unwrap();
        assert_eq!(
            account.available(&credits_meter()),
            Credits::whole(5_000),
            "one month, not twelve"
        );
        assert_eq!(account.period.end, NaiveDate::from_ymd_opt(2026, 2, 15).unwrap());
        let renewal = account
            .renew_if_due(&catalog, at(2026, 2, 15))
            .unwrap()
            .expect("renews monthly");
        assert_eq!(renewal.net(&credits_meter()), Credits::ZERO); // 5,000 expired, 5,000 granted
        assert_eq!(account.available(&credits_meter()), Credits::whole(5_000));
    }

    #[test]
    fn a_late_renewal_grants_the_current_month_once_not_the_backlog() {
        let now = at(2026, 1, 15);
        let (catalog, mut account, _) = provisioned("professional", 1, now);
        let renewal = account.renew_if_due(&catalog, at(2026, 5, 20)).unwrap().expect("due");
        assert_eq!(renewal.net(&credits_meter()), Credits::ZERO); // 2000 expired, 2000 granted
        assert_eq!(account.available(&credits_meter()), Credits::whole(2_000));
        assert_eq!(account.period.start, NaiveDate::from_ymd_opt(2026, 5, 15).unwrap());
    }

    #[test]
    fn actions_charged_on_their_result_are_quoted_but_not_spent() {
        let now = at(2026, 5, 2);
        let (catalog, mut account, _) = provisioned("starter", 1, now);
        let (action_id, action) = catalog.action("email_finder").unwrap();
        let req = SpendRequest {
            action_id,
            action,
            quantity: 2,
            mode: SpendMode::All,
            actor: user(),
            campaign: None,
            subject: None,
        };
        assert_eq!(account.quote(&req, now).unwrap().amount, Credits::whole(10));
        let before = account.clone();
        assert_eq!(
            account.spend(&req, now).unwrap_err(),
            DomainError::ChargedOnResult("email_finder".into())
        );
        assert_eq!(account, before);
    }

    #[test]
    fn a_plan_removed_from_the_catalog_renews_without_a_grant() {
        let now = at(2026, 1, 10);
        let (mut catalog, mut account, _) = provisioned("starter", 1, now);
        buy(&mut account, 50, now);
        catalog.plans.remove(&PlanId::parse("starter").unwrap());
        let renewal = account.renew_if_due(&catalog, at(2026, 2, 10)).unwrap().expect("due");
        assert_eq!(renewal.net(&credits_meter()), Credits::whole(-500));
        assert_eq!(
            account.available(&credits_meter()),
            Credits::whole(50),
            "purchased credits stay usable"
        );
    }

    #[test]
    fn thousands_of_purchases_make_one_pool_spent_oldest_pack_first() {
        let now = at(2026, 5, 2);
        let (catalog, mut account, _) = provisioned("starter", 1, now);
        let packs: Vec<LedgerEntry> = (0..5_000).map(|_| buy(&mut account, 1, now)).collect();
        assert_eq!(account.buckets.len(), 2, "the plan bucket and one purchased pool");
        // Each pack occupies its own range of the pool, in purchase order.
        for (i, pack) in packs.iter().enumerate() {
            assert_eq!(pack.lines[0].offset, Some(Credits::whole(i as i64)));
        }
        // Spending past the plan draws the oldest packs: 503 credits take
        // the plan's 500 and packs 0, 1 and 2.
        let (_, e) = spend(&mut account, &catalog, "ai_email_generation", 503, SpendMode::All, now).unwrap();
        let pool_line = e.lines.iter().find(|l| l.source() == BucketSource::Purchased).unwrap();
        assert_eq!(
            (pool_line.offset, pool_line.amount),
            (Some(Credits::ZERO), Credits::whole(-3))
        );
        let pool = account
            .buckets
            .iter()
            .find(|b| b.source() == BucketSource::Purchased)
            .unwrap()
            .clone();
        assert_eq!(
            (pool.consumed(), pool.remaining),
            (Credits::whole(3), Credits::whole(4_997))
        );
        let (_, e) = spend(&mut account, &catalog, "email_verification", 3, SpendMode::All, now).unwrap();
        assert_eq!(
            e.lines[0].offset,
            Some(Credits::whole(3)),
            "the next spend starts at pack 3"
        );
    }

    #[derive(Clone, Debug)]
    enum Op {
        Spend(&'static str, u64, bool),
        Buy(i64),
        Advance(i64),
        Overdraft(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (
                prop::sample::select(vec![
                    "ai_email_generation",
                    "email_verification",
                    "email_send",
                    "call_minute",
                    "linkedin_enrichment"
                ]),
                1u64..40,
                any::<bool>()
            )
                .prop_map(|(a, q, up_to)| Op::Spend(a, q, up_to)),
            (1i64..300).prop_map(Op::Buy),
            (1i64..40).prop_map(Op::Advance),
            (0i64..200).prop_map(Op::Overdraft),
        ]
    }

    proptest! {
        /// Conservation: whatever happens, each meter's balance equals the sum
        /// of its ledger entries after every one of them (what the sequencer
        /// records as each entry's balance after), one entry per change,
        /// no bucket goes negative and no balance below its overdraft.
        #[test]
        fn entries_always_sum_to_the_balance(ops in prop::collection::vec(op(), 1..60)) {
            let mut now = at(2026, 1, 31);
            let (catalog, mut account, first) = provisioned("per_seat_1500", 1, now);
            let mut entries = vec![first];
            let mut running: BTreeMap<MeterId, Credits> = BTreeMap::new();
            let mut placed = 0;
            for op in ops {
                match op {
                    Op::Spend(a, q, up_to) => {
                        let mode = if up_to { SpendMode::UpTo } else { SpendMode::All };
                        if let Ok((_, e)) = spend(&mut account, &catalog, a, q, mode, now) { entries.push(e) }
                    }
                    Op::Buy(c) => entries.push(buy(&mut account, c, now)),
                    Op::Advance(days) => {
                        now += chrono::Duration::days(days);
                        if let Some(e) = account.renew_if_due(&catalog, now).unwrap() { entries.push(e) }
                    }
                    Op::Overdraft(c) => {
                        let meter = credits_meter();
                        match account.set_overdraft(&meter, Credits::whole(c), Actor::system(), now) {
                            Ok(e) => entries.push(e),
                            Err(DomainError::OverdraftOwed { owed, .. }) => prop_assert!(Credits::whole(c) < owed),
                            Err(e) => prop_assert!(false, "{e}"),
                        }
                    }
                }
                account.check_invariants().unwrap();
                for e in &entries[placed..] {
                    for l in &e.lines {
                        let r = running.entry(l.meter().clone()).or_default();
                        *r = r.checked_add(l.amount).unwrap();
                        let allowed = account.overdraft(l.meter()).map(|b| b.granted).unwrap_or_default();
                        prop_assert!(*r >= -allowed, "{} below its overdraft", l.meter());
                    }
                }
                placed = entries.len();
                for (m, after) in account.balances() {
                    prop_assert_eq!(running.get(&m).copied().unwrap_or_default(), after);
                }
                prop_assert_eq!(account.seq, entries.len() as u64);
            }
        }
    }
}
