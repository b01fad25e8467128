//! Renewal: a billing month ends, its plan credits expire, the next month's
//! allowance is granted. Lazy (before any use of an account past due) and,
//! later, scheduled: both go through [`Account::renew_if_due`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::account::Account;
use crate::bucket::{BucketId, BucketSource};
use crate::catalog::{Catalog, Plan};
use crate::entry::{Actor, EntryKind, EntryLine, LedgerEntry};
use crate::period::Period;
use crate::subscription::SubscriptionStatus;
use crate::{Credits, DomainError, MeterId};

impl Account {
    /// Removes the buckets `expiring` picks; what they still held expires,
    /// one line each.
    pub(crate) fn expire(&mut self, expiring: impl Fn(&crate::Bucket) -> bool) -> Vec<EntryLine> {
        let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.buckets).into_iter().partition(expiring);
        self.buckets = kept;
        expired
            .into_iter()
            .filter(|b| b.remaining.is_positive())
            .map(|b| EntryLine {
                amount: -b.remaining,
                bucket: b.id,
                offset: None,
            })
            .collect()
    }

    /// When the account is next due: the end of its current period.
    pub fn renews_at(&self) -> DateTime<Utc> {
        self.period.renews_at()
    }

    /// Renews an account whose period has ended: the ended month's plan
    /// credits expire (what the plan lets roll over is carried into this
    /// month, up to its cap), the current month's allowance is granted.
    /// However many months were missed, one renewal lands on the current
    /// period: no backlog is granted, nothing is borrowed from the future,
    /// and nothing rolls over a gap. Returns `None` when the account is not
    /// due, so renewing twice grants once.
    pub fn renew_if_due(&mut self, catalog: &Catalog, now: DateTime<Utc>) -> Result<Option<LedgerEntry>, DomainError> {
        if now < self.renews_at() {
            return Ok(None);
        }
        let next = Period::containing(self.anchor, now.date_naive());
        // Unspent allowance of the month that ends right where the new one
        // starts: what a rollover may carry.
        let mut unspent: BTreeMap<MeterId, Credits> = BTreeMap::new();
        for b in &self.buckets {
            let ends_now = b.expires_at == Some(next.starts_at());
            if ends_now && matches!(b.source(), BucketSource::Plan | BucketSource::Rollover) {
                let u = unspent.entry(b.meter().clone()).or_default();
                *u = u.checked_add(b.remaining).expect("credits within range");
            }
        }
        // Expire every bucket whose time has come (plan, rollover and
        // license credits of the ended month).
        let mut lines = self.expire(|b| !b.is_live(now));
        self.period = next;
        self.used_this_period.clear();
        // A downgrade takes effect with the month it was scheduled for,
        // unless a year granted up front is still running: then with its
        // anniversary.
        if self.scheduled.is_some() && !self.year_up_front_running(catalog) {
            self.subscription = self.scheduled.take().expect("checked");
        }
        // A plan the operator removed from the catalog grants nothing more,
        // but must not lock the account out of what it holds.
        if let (SubscriptionStatus::Active, Ok((_, plan))) =
            (self.status, catalog.plan(self.subscription.plan.as_str()))
        {
            lines.extend(self.grant_monthly(plan, now)?);
            lines.extend(self.roll_over(plan, &unspent, now)?);
        }
        let plan_id = self.subscription.plan.clone();
        let entry = self.record(EntryKind::Renewal, Actor::system(), now, lines, |e| {
            e.plan = Some(plan_id)
        });
        self.check_invariants()?;
        Ok(Some(entry))
    }

    /// Carries what the ended month left unspent into this month's rollover
    /// bucket, up to each allowance's cap (a multiple of the month's allowance).
    fn roll_over(
        &mut self,
        plan: &Plan,
        unspent: &BTreeMap<MeterId, Credits>,
        now: DateTime<Utc>,
    ) -> Result<Vec<EntryLine>, DomainError> {
        let mut lines = Vec::new();
        for (meter, most) in self.subscription.rollover_caps(plan)? {
            let left = unspent.get(&meter).copied().unwrap_or_default();
            let carried = left.min(most);
            if carried.is_positive() {
                let id = BucketId::Rollover {
                    meter,
                    period: self.period.start,
                };
                let expires = Some(self.renews_at());
                lines.push(self.grant(id, carried, expires, now));
            }
        }
        Ok(lines)
    }

    /// When a scheduled downgrade takes effect: the next renewal, or the
    /// anniversary of a year granted up front.
    pub fn scheduled_change_at(&self, catalog: &Catalog) -> DateTime<Utc> {
        if !self.year_up_front_running(catalog) {
            return self.renews_at();
        }
        self.buckets
            .iter()
            .filter(|b| b.source() == BucketSource::Plan)
            .filter_map(|b| b.expires_at)
            .max()
            .unwrap_or_else(|| self.renews_at())
    }

    /// Whether the account holds a year granted up front that runs to the
    /// end of this month or beyond (a month's own bucket is gone by now).
    fn year_up_front_running(&self, catalog: &Catalog) -> bool {
        let Ok((_, plan)) = catalog.plan(self.subscription.plan.as_str()) else {
            return false;
        };
        self.subscription.grants_year_up_front(plan)
            && self
                .buckets
                .iter()
                .any(|b| b.source() == BucketSource::Plan && b.expires_at.is_some_and(|at| at >= self.renews_at()))
    }

    /// Whether the scheduled sweep still has work on this account: an active
    /// subscription renews every month; a cancelled one only until what it
    /// held expires (afterwards it renews lazily, if ever used again).
    pub fn renews_on_schedule(&self) -> bool {
        self.status == SubscriptionStatus::Active || self.buckets.iter().any(|b| b.expires_at.is_some())
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, NaiveDate, TimeZone};
    use proptest::prelude::*;

    use super::*;
    use crate::period::{month_from_anchor, start_of_day};
    use crate::{credits_meter, Billing, OrgId, Subscription};

    fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 10, 0, 0).unwrap()
    }

    fn account(plan: &str, billing: Billing, now: DateTime<Utc>) -> (Catalog, Account) {
        let catalog = Catalog::default_catalog();
        let sub = Subscription::new(&catalog, plan, None, Some(billing), None).unwrap();
        let (account, _) =
            Account::provision(OrgId::parse("acme").unwrap(), sub, &catalog, Actor::system(), now).unwrap();
        (catalog, account)
    }

    fn spend(account: &mut Account, catalog: &Catalog, credits: u64, now: DateTime<Utc>) {
        let (action_id, action) = catalog.action("ai_email_generation").unwrap();
        let req = crate::SpendRequest {
            action_id,
            action,
            quantity: credits,
            mode: crate::SpendMode::All,
            actor: Actor::system(),
            campaign: None,
            subject: None,
        };
        account.spend(&req, now).unwrap();
    }

    fn line(entry: &LedgerEntry, bucket: &str) -> Credits {
        entry
            .lines
            .iter()
            .filter(|l| l.bucket.to_string() == bucket)
            .map(|l| l.amount)
            .sum()
    }

    #[test]
    fn unused_allowance_rolls_over_up_to_the_cap_and_the_rest_expires() {
        // growth: 1,000 a month, up to one month's worth carried.
        let (catalog, mut account) = account("growth", Billing::Monthly, at(2026, 1, 10));
        spend(&mut account, &catalog, 300, at(2026, 1, 20));
        let feb = account.renew_if_due(&catalog, at(2026, 2, 10)).unwrap().unwrap();
        assert_eq!(line(&feb, "plan:credits:2026-01-10"), Credits::whole(-700));
        assert_eq!(line(&feb, "rollover:credits:2026-02-10"), Credits::whole(700));
        assert_eq!(line(&feb, "plan:credits:2026-02-10"), Credits::whole(1_000));
        assert_eq!(account.available(&credits_meter()), Credits::whole(1_700));
        // Nothing spent in February: 1,700 unspent, 1,000 carried (the
        // cap), 700 expire for good.
        let mar = account.renew_if_due(&catalog, at(2026, 3, 10)).unwrap().unwrap();
        assert_eq!(line(&mar, "plan:credits:2026-02-10"), Credits::whole(-1_000));
        assert_eq!(line(&mar, "rollover:credits:2026-02-10"), Credits::whole(-700));
        assert_eq!(line(&mar, "rollover:credits:2026-03-10"), Credits::whole(1_000));
        assert_eq!(line(&mar, "plan:credits:2026-03-10"), Credits::whole(1_000));
        assert_eq!(account.available(&credits_meter()), Credits::whole(2_000));
        // A skipped month carries nothing over the gap.
        let jun = account.renew_if_due(&catalog, at(2026, 6, 12)).unwrap().unwrap();
        assert_eq!(jun.net(&credits_meter()), Credits::whole(-1_000));
        assert_eq!(account.available(&credits_meter()), Credits::whole(1_000));
        assert!(account.buckets.iter().all(|b| b.source() != BucketSource::Rollover));
    }

    #[test]
    fn plans_without_a_rollover_cap_expire_everything() {
        let (catalog, mut account) = account("starter", Billing::Monthly, at(2026, 1, 10));
        let feb = account.renew_if_due(&catalog, at(2026, 2, 10)).unwrap().unwrap();
        assert_eq!(feb.net(&credits_meter()), Credits::ZERO);
        assert!(account.buckets.iter().all(|b| b.source() == BucketSource::Plan));
    }

    #[test]
    fn an_annual_plan_granting_up_front_grants_the_year_once_and_renews_it_on_the_anniversary() {
        let (catalog, mut account) = account("growth", Billing::Annual, at(2026, 1, 31));
        assert_eq!(account.available(&credits_meter()), Credits::whole(12_000));
        let year = account
            .buckets
            .iter()
            .find(|b| b.meter() == &credits_meter())
            .unwrap()
            .clone();
        assert_eq!(
            year.expires_at,
            Some(crate::period::start_of_day(
                NaiveDate::from_ymd_opt(2027, 1, 31).unwrap()
            ))
        );
        spend(&mut account, &catalog, 2_000, at(2026, 2, 1));
        // Eleven monthly renewals grant nothing and expire nothing of the year.
        for month in 1..12 {
            let due = account.renews_at();
            let renewal = account.renew_if_due(&catalog, due).unwrap().unwrap();
            assert_eq!(renewal.net(&credits_meter()), Credits::ZERO, "month {month}");
        }
        assert_eq!(account.available(&credits_meter()), Credits::whole(10_000));
        // The anniversary: 10,000 unspent; a month's worth (1,000) rolls over.
        let anniversary = account.renew_if_due(&catalog, at(2027, 1, 31)).unwrap().unwrap();
        assert_eq!(line(&anniversary, "plan:credits:2026-01-31"), Credits::whole(-10_000));
        assert_eq!(line(&anniversary, "plan:credits:2027-01-31"), Credits::whole(12_000));
        assert_eq!(line(&anniversary, "rollover:credits:2027-01-31"), Credits::whole(1_000));
    }

    #[test]
    fn a_cancelled_account_leaves_the_schedule_once_nothing_is_left_to_expire() {
        let (catalog, mut account) = account("starter", Billing::Monthly, at(2026, 1, 10));
        assert!(account.renews_on_schedule());
        account.cancel(Actor::system(), at(2026, 1, 12)).unwrap();
        assert!(account.renews_on_schedule(), "this month's credits still expire");
        account.renew_if_due(&catalog, at(2026, 2, 10)).unwrap().unwrap();
        assert!(!account.renews_on_schedule());
    }

    /// Subscriptions whose renewals differ: monthly, annual granting
    /// monthly, monthly with a rollover, annual granting the year up front,
    /// per seat with a second meter; and what each grants a month.
    const SUBSCRIPTIONS: [(&str, Billing, i64); 5] = [
        ("starter", Billing::Monthly, 500),
        ("business", Billing::Annual, 5_000),
        ("growth", Billing::Monthly, 1_000),
        ("growth", Billing::Annual, 1_000),
        ("per_seat_1500", Billing::Monthly, 1_500),
    ];

    fn follow_renewals(
        anchor: NaiveDate,
        time_of_day: i64,
        which: usize,
        steps: Vec<(i64, i64)>,
    ) -> Result<(), TestCaseError> {
        let (plan, billing, monthly) = SUBSCRIPTIONS[which];
        let mut now = start_of_day(anchor) + Duration::seconds(time_of_day);
        let (catalog, mut account) = account(plan, billing, now);
        prop_assert_eq!(account.anchor, anchor);
        prop_assert_eq!(account.renews_at(), start_of_day(month_from_anchor(anchor, 1)));
        let up_front = billing == Billing::Annual && plan == "growth";
        for (days, seconds) in steps {
            now += Duration::days(days) + Duration::seconds(seconds);
            let before = account.clone();
            let renewed = account.renew_if_due(&catalog, now).unwrap();
            if now < before.renews_at() {
                prop_assert!(renewed.is_none(), "renewed before {}", before.renews_at());
                prop_assert_eq!(&account, &before);
                continue;
            }
            prop_assert_eq!(renewed.map(|e| e.kind), Some(EntryKind::Renewal));
            prop_assert_eq!(account.seq, before.seq + 1);
            let p = account.period;
            prop_assert!(
                p.starts_at() <= now && now < p.renews_at(),
                "{:?} does not hold {}",
                p,
                now
            );
            let n = p.index(anchor);
            prop_assert_eq!(
                (p.start, p.end),
                (month_from_anchor(anchor, n), month_from_anchor(anchor, n + 1))
            );
            prop_assert!(p.start >= before.period.end, "back to an earlier month");
            let on_time = now < start_of_day(month_from_anchor(anchor, before.period.index(anchor) + 2));
            if on_time {
                prop_assert_eq!(p.start, before.period.end, "a month skipped");
            }
            prop_assert!(account.buckets.iter().all(|b| b.is_live(now)), "expired credits left");
            let plan_buckets: Vec<&crate::Bucket> = account
                .buckets
                .iter()
                .filter(|b| b.source() == BucketSource::Plan && b.meter() == &credits_meter())
                .collect();
            prop_assert_eq!(plan_buckets.len(), 1, "one allowance bucket");
            let granted = plan_buckets[0];
            if up_front {
                let anniversary = start_of_day(month_from_anchor(anchor, 12 * (n / 12 + 1)));
                prop_assert_eq!(granted.expires_at, Some(anniversary));
            } else {
                prop_assert_eq!(
                    &granted.id,
                    &BucketId::Plan {
                        meter: credits_meter(),
                        period: p.start
                    }
                );
                prop_assert_eq!(
                    (granted.granted, granted.expires_at),
                    (Credits::whole(monthly), Some(p.renews_at()))
                );
            }
            let renewed_once = account.clone();
            prop_assert!(account.renew_if_due(&catalog, now).unwrap().is_none());
            prop_assert!(account
                .renew_if_due(&catalog, p.renews_at() - Duration::seconds(1))
                .unwrap()
                .is_none());
            prop_assert_eq!(&account, &renewed_once, "the same renewal twice grants once");
        }
        Ok(())
    }

    proptest! {
        /// For any anchor (any day of any month of 2000-2100, any time of
        /// day) and renewals at arbitrary later instants: an account renews
        /// only once its period has ended, onto the period holding now (the
        /// very next one when on time), with what has expired gone and this
        /// month's allowance granted once; renewing again at the same
        /// instant, or before the new period ends, grants nothing.
        #[test]
        fn a_renewal_is_due_once_a_period_and_lands_on_the_period_of_now(
            anchor in (2000i32..=2100, 1u32..=12, 1u32..=31)
                .prop_filter_map("a real date", |(y, m, d)| NaiveDate::from_ymd_opt(y, m, d)),
            time_of_day in 0i64..86_400,
            which in 0..SUBSCRIPTIONS.len(),
            steps in prop::collection::vec((0i64..70, 0i64..86_400), 1..25),
        ) {
            follow_renewals(anchor, time_of_day, which, steps)?;
        }
    }
}
