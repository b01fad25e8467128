//! Cancelling a subscription, and subscribing again after a cancel.

use chrono::{DateTime, Utc};

use crate::account::Account;
use crate::catalog::Catalog;
use crate::entry::{Actor, EntryKind, LedgerEntry};
use crate::period::Period;
use crate::subscription::{Subscription, SubscriptionStatus};
use crate::DomainError;

impl Account {
    /// Cancels the subscription: no allowance is granted from the next
    /// renewal on. This month's plan credits stay spendable until the renewal
    /// they expire at; purchased credits and the trial never expire.
    pub fn cancel(&mut self, actor: Actor, now: DateTime<Utc>) -> Result<LedgerEntry, DomainError> {
        if self.status == SubscriptionStatus::Cancelled {
            return Err(DomainError::AlreadyCancelled);
        }
        self.status = SubscriptionStatus::Cancelled;
        let plan = self.subscription.plan.clone();
        let entry = self.record(EntryKind::Cancellation, actor, now, Vec::new(), |e| e.plan = Some(plan));
        self.check_invariants()?;
        Ok(entry)
    }

    /// Changes an active subscription. An upgrade applies now: the current
    /// month's plan buckets are raised by what the new plan grants more (its
    /// retry under the same key is a replay, so the difference is granted
    /// once), and any scheduled downgrade is dropped. A downgrade waits for
    /// the next renewal; asking for the current plan drops it. Upgrades grant credits that are paid for: only the
    /// service, after payment, may ask for one.
    pub fn change_plan(
        &mut self,
        requested: Subscription,
        catalog: &Catalog,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<LedgerEntry, DomainError> {
        if self.status == SubscriptionStatus::Cancelled {
            return Err(DomainError::AlreadyCancelled);
        }
        if self.has_subscription(&requested, catalog)? {
            return Err(DomainError::SubscriptionUnchanged);
        }
        let mut lines = Vec::new();
        match self.subscription.resubscribe(&requested, catalog)? {
            // Asking for the plan it has while a downgrade waits keeps the
            // plan: the downgrade is dropped (it costs nothing).
            crate::Resubscription::Unchanged => self.scheduled = None,
            crate::Resubscription::Upgrade => {
                if !actor.grants_paid_credits() {
                    return Err(DomainError::PaidByService);
                }
                let was = std::mem::replace(&mut self.subscription, requested);
                lines = self.grant_upgrade(&was, catalog, now)?;
                self.scheduled = None;
            }
            crate::Resubscription::Downgrade => self.scheduled = Some(requested),
        }
        let plan = self.subscription.plan.clone();
        let entry = self.record(EntryKind::PlanChange, actor, now, lines, |e| e.plan = Some(plan));
        self.check_invariants()?;
        Ok(entry)
    }

    /// Whether the active subscription is `requested` already with nothing
    /// scheduled, or has it scheduled as the downgrade it is: asking for it
    /// again changes nothing.
    pub fn has_subscription(&self, requested: &Subscription, catalog: &Catalog) -> Result<bool, DomainError> {
        if self.status != SubscriptionStatus::Active {
            return Ok(false);
        }
        Ok(match self.subscription.resubscribe(requested, catalog)? {
            crate::Resubscription::Unchanged => self.scheduled.is_none(),
            crate::Resubscription::Downgrade => self.scheduled.as_ref() == Some(requested),
            crate::Resubscription::Upgrade => false,
        })
    }

    /// What an upgrade from `was` grants now: on each meter, what the new
    /// subscription grants more this month (into this month's plan bucket,
    /// or for every month left of a year granted up front), larger licenses
    /// for the members who hold one, and licenses for the seats added.
    fn grant_upgrade(
        &mut self,
        was: &Subscription,
        catalog: &Catalog,
        now: DateTime<Utc>,
    ) -> Result<Vec<crate::EntryLine>, DomainError> {
        let Ok((_, plan)) = catalog.plan(self.subscription.plan.as_str()) else {
            return Ok(Vec::new());
        };
        let before = |grants: fn(&Subscription, &crate::catalog::Plan) -> Vec<(crate::MeterId, crate::Credits)>| {
            catalog
                .plan(was.plan.as_str())
                .map(|(_, p)| grants(was, p))
                .unwrap_or_default()
        };
        let shared_before = before(|s, p| s.shared_grants(p).unwrap_or_default());
        let licenses_before = before(Subscription::license_grants);
        let more = |now: &(crate::MeterId, crate::Credits), before: &[(crate::MeterId, crate::Credits)]| {
            let was: crate::Credits = before.iter().filter(|(m, _)| *m == now.0).map(|(_, a)| *a).sum();
            now.1.checked_sub(was).filter(|d| d.is_positive())
        };
        let mut lines = Vec::new();
        for grant in self.subscription.shared_grants(plan)? {
            let Some(more) = more(&grant, &shared_before) else {
                continue;
            };
            let target = self.plan_grant_target(&grant.0, plan);
            let amount = more
                .checked_mul(u64::from(target.months))
                .ok_or_else(|| DomainError::InvalidRequest("allowance too large".into()))?;
            lines.push(self.grant(target.id, amount, Some(target.expires_at), now));
        }
        for grant in self.subscription.license_grants(plan) {
            if let Some(more) = more(&grant, &licenses_before) {
                lines.extend(self.raise_licenses(&grant.0, more, now));
            }
        }
        lines.extend(self.grant_licenses(plan, now));
        Ok(lines)
    }

    /// Subscribing again after a cancel starts a new billing anchor today:
    /// what is left of the cancelled plan's month expires, and the new
    /// plan's first month is granted. The trial is an organization's once,
    /// ever: it is never granted again.
    pub fn resubscribe_after_cancel(
        &mut self,
        subscription: Subscription,
        catalog: &Catalog,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<LedgerEntry, DomainError> {
        if self.status != SubscriptionStatus::Cancelled {
            return Err(DomainError::InvalidRequest(
                "the subscription is active: change its plan instead".into(),
            ));
        }
        let (_, plan) = catalog.plan(subscription.plan.as_str())?;
        // What is left of the cancelled plan's month expires now.
        let mut lines = self.expire(|b| b.expires_at.is_some());
        let today = now.date_naive();
        self.subscription = subscription;
        self.scheduled = None;
        self.status = SubscriptionStatus::Active;
        self.anchor = today;
        self.period = Period::containing(today, today);
        self.used_this_period.clear();
        lines.extend(self.grant_monthly(plan, now)?);
        let plan_id = self.subscription.plan.clone();
        let entry = self.record(EntryKind::Subscription, actor, now, lines, |e| e.plan = Some(plan_id));
        self.check_invariants()?;
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};
    use proptest::prelude::*;

    use super::*;
    use crate::{
        credits_meter, Billing, BucketSource, Credits, MeterId, OrgId, PurchaseGrant, SpendMode, SpendRequest,
    };

    fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 10, 0, 0).unwrap()
    }

    #[test]
    fn a_cancelled_account_keeps_this_month_and_purchases_and_gets_no_more() {
        let catalog = Catalog::default_catalog();
        let sub = Subscription::new(&catalog, "starter", None, None, None).unwrap();
        let org = OrgId::parse("acme").unwrap();
        let (mut account, _) = Account::provision(org, sub, &catalog, Actor::system(), at(2026, 1, 10)).unwrap();
        let grant = PurchaseGrant::priced(&catalog, None, Some(Credits::whole(40)), "p").unwrap();
        account.purchase(grant, Actor::system(), at(2026, 1, 11)).unwrap();
        let entry = account.cancel(Actor::system(), at(2026, 1, 12)).unwrap();
        assert_eq!((entry.kind, entry.lines.len()), (EntryKind::Cancellation, 0));
        assert_eq!(
            account.available(&credits_meter()),
            Credits::whole(540),
            "this month stays"
        );
        assert_eq!(
            account.cancel(Actor::system(), at(2026, 1, 13)),
            Err(DomainError::AlreadyCancelled)
        );
        let renewal = account.renew_if_due(&catalog, at(2026, 2, 10)).unwrap().expect("due");
        assert_eq!(
            renewal.net(&credits_meter()),
            Credits::whole(-500),
            "expired, nothing granted"
        );
        assert_eq!(
            account.available(&credits_meter()),
            Credits::whole(40),
            "purchased stay"
        );
    }

    fn service() -> Actor {
        Actor::service(Some(crate::UserId::parse("alice").unwrap()))
    }

    #[test]
    fn an_upgrade_grants_the_difference_now_and_a_downgrade_waits_for_the_renewal() {
        let catalog = Catalog::default_catalog();
        let sub = |plan: &str| Subscription::new(&catalog, plan, None, None, None).unwrap();
        let org = OrgId::parse("acme").unwrap();
        let (mut account, _) = Account::provision(org, sub("starter"), &catalog, service(), at(2026, 1, 10)).unwrap();
        // An admin may not grant paid credits; the service may.
        let admin = Actor {
            user: Some(crate::UserId::parse("alice").unwrap()),
            caller: crate::CallerKind::Admin,
        };
        let before = account.clone();
        assert_eq!(
            account.change_plan(sub("professional"), &catalog, admin.clone(), at(2026, 1, 20)),
            Err(DomainError::PaidByService)
        );
        assert_eq!(account, before);
        let up = account
            .change_plan(sub("professional"), &catalog, service(), at(2026, 1, 20))
            .unwrap();
        assert_eq!(
            (up.kind, up.net(&credits_meter())),
            (EntryKind::PlanChange, Credits::whole(1_500))
        );
        assert_eq!(account.available(&credits_meter()), Credits::whole(2_000));
        assert_eq!(account.buckets.len(), 1, "this month's plan bucket, raised");
        // A downgrade by an admin changes nothing now.
        let down = account
            .change_plan(sub("starter"), &catalog, admin, at(2026, 1, 25))
            .unwrap();
        assert_eq!(down.lines.len(), 0);
        assert_eq!(account.scheduled, Some(sub("starter")));
        assert_eq!(account.available(&credits_meter()), Credits::whole(2_000));
        let renewal = account.renew_if_due(&catalog, at(2026, 2, 10)).unwrap().unwrap();
        assert_eq!(
            renewal.net(&credits_meter()),
            Credits::whole(-1_500),
            "2,000 expired, 500 granted"
        );
        assert_eq!(
            (account.subscription.plan.as_str(), account.scheduled.clone()),
            ("starter", None)
        );
    }

    #[test]
    fn subscribing_again_starts_a_new_anchor_and_never_grants_the_trial_twice() {
        let catalog = Catalog::default_catalog();
        let trial = Subscription::new(&catalog, "free_trial", None, None, None).unwrap();
        let org = OrgId::parse("acme").unwrap();
        let (mut account, _) =
            Account::provision(org, trial.clone(), &catalog, Actor::system(), at(2026, 1, 10)).unwrap();
        account.cancel(Actor::system(), at(2026, 1, 20)).unwrap();
        let starter = Subscription::new(&catalog, "starter", None, None, None).unwrap();
        let entry = account
            .resubscribe_after_cancel(starter, &catalog, Actor::system(), at(2026, 3, 5))
            .unwrap();
        assert_eq!(entry.kind, EntryKind::Subscription);
        assert_eq!(account.anchor, at(2026, 3, 5).date_naive());
        assert_eq!(
            account.available(&credits_meter()),
            Credits::whole(1_000),
            "trial 500 kept, starter 500"
        );
        account.cancel(Actor::system(), at(2026, 3, 6)).unwrap();
        account
            .resubscribe_after_cancel(trial, &catalog, Actor::system(), at(2026, 3, 7))
            .unwrap();
        let trials: Vec<_> = account
            .buckets
            .iter()
            .filter(|b| b.source() == BucketSource::Trial)
            .collect();
        assert_eq!(
            (trials.len(), trials[0].granted),
            (1, Credits::whole(500)),
            "the trial once, ever"
        );
        assert_eq!(
            account.available(&credits_meter()),
            Credits::whole(500),
            "starter's month expired"
        );
    }

    #[test]
    fn an_upgrade_to_a_year_up_front_grants_this_months_difference_and_the_year_at_the_renewal() {
        let catalog = Catalog::default_catalog();
        let org = OrgId::parse("acme").unwrap();
        let starter = Subscription::new(&catalog, "starter", None, None, None).unwrap();
        let (mut account, _) = Account::provision(org, starter, &catalog, service(), at(2026, 1, 10)).unwrap();
        let growth = Subscription::new(&catalog, "growth", None, Some(Billing::Annual), None).unwrap();
        let up = account
            .change_plan(growth, &catalog, service(), at(2026, 1, 20))
            .unwrap();
        // 1,000 this month (500 more), not twelve months' difference expiring with it.
        assert_eq!(up.net(&credits_meter()), Credits::whole(500));
        assert_eq!(account.available(&credits_meter()), Credits::whole(1_000));
        // The year starts at the renewal: the eleven months left, up front.
        account.spend(&spend_all(&catalog, 1_000), at(2026, 1, 21)).unwrap();
        account.renew_if_due(&catalog, at(2026, 2, 10)).unwrap().unwrap();
        assert_eq!(account.available(&credits_meter()), Credits::whole(11_000));
    }

    fn spend_all(catalog: &Catalog, credits: u64) -> SpendRequest<'_> {
        let (action_id, action) = catalog.action("ai_email_generation").unwrap();
        SpendRequest {
            action_id,
            action,
            quantity: credits,
            mode: SpendMode::All,
            actor: service(),
            campaign: None,
            subject: None,
        }
    }

    /// Subscriptions to move between: no allowance, larger and smaller
    /// ones, annual granting monthly or the year up front, per seat, a
    /// second meter.
    const SUBSCRIPTIONS: [(&str, u32, Billing); 9] = [
        ("free_trial", 1, Billing::Monthly),
        ("starter", 1, Billing::Monthly),
        ("professional", 1, Billing::Monthly),
        ("business", 1, Billing::Annual),
        ("growth", 1, Billing::Monthly),
        ("growth", 1, Billing::Annual),
        ("per_seat_1000", 1, Billing::Monthly),
        ("per_seat_1000", 3, Billing::Monthly),
        ("per_seat_1500", 2, Billing::Monthly),
    ];

    fn subscription(catalog: &Catalog, which: usize) -> Subscription {
        let (plan, seats, billing) = SUBSCRIPTIONS[which];
        Subscription::new(catalog, plan, Some(seats), Some(billing), None).unwrap()
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// A plan change asked by the service (after payment) or by an admin.
        Change(usize, bool),
        Cancel,
        /// Subscribing again after a cancel.
        Resubscribe(usize),
        /// Days pass; the account renews if due.
        Wait(i64),
        Spend(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..SUBSCRIPTIONS.len(), any::<bool>()).prop_map(|(s, by_service)| Op::Change(s, by_service)),
            1 => Just(Op::Cancel),
            1 => (0..SUBSCRIPTIONS.len()).prop_map(Op::Resubscribe),
            2 => (1i64..45).prop_map(Op::Wait),
            1 => (1u64..3_000).prop_map(Op::Spend),
        ]
    }

    fn follow_plan_changes(first: usize, ops: Vec<Op>) -> Result<(), TestCaseError> {
        let catalog = Catalog::default_catalog();
        let mut now = Utc.with_ymd_and_hms(2026, 1, 31, 16, 0, 0).unwrap();
        let org = OrgId::parse("acme").unwrap();
        let (mut account, _) =
            Account::provision(org, subscription(&catalog, first), &catalog, service(), now).unwrap();
        for op in ops {
            let before = account.clone();
            // Each request twice in a row: `once` is the account after the first.
            let (first, once, again) = match &op {
                Op::Change(which, by_service) => {
                    let actor = if *by_service {
                        service()
                    } else {
                        Actor {
                            user: Some(crate::UserId::parse("alice").unwrap()),
                            caller: crate::CallerKind::Admin,
                        }
                    };
                    let requested = subscription(&catalog, *which);
                    let first = account.change_plan(requested.clone(), &catalog, actor.clone(), now);
                    let once = account.clone();
                    (first, once, account.change_plan(requested, &catalog, actor, now))
                }
                Op::Cancel => {
                    let first = account.cancel(service(), now);
                    let once = account.clone();
                    (first, once, account.cancel(service(), now))
                }
                Op::Resubscribe(which) => {
                    let requested = subscription(&catalog, *which);
                    let first = account.resubscribe_after_cancel(requested.clone(), &catalog, service(), now);
                    let once = account.clone();
                    (
                        first,
                        once,
                        account.resubscribe_after_cancel(requested, &catalog, service(), now),
                    )
                }
                Op::Wait(days) => {
                    now += Duration::days(*days);
                    if account.renew_if_due(&catalog, now).unwrap().is_some() {
                        match (&before.scheduled, &account.scheduled) {
                            // A downgrade applies with the renewal, and then is done.
                            (Some(next), None) => prop_assert_eq!(&account.subscription, next),
                            // It waits for the anniversary of a year granted up front.
                            (Some(next), Some(waiting)) => {
                                prop_assert_eq!(waiting, next);
                                prop_assert_eq!(&account.subscription, &before.subscription);
                            }
                            (None, waiting) => {
                                prop_assert_eq!(waiting, &None);
                                prop_assert_eq!(&account.subscription, &before.subscription);
                            }
                        }
                    }
                    account.check_invariants().unwrap();
                    continue;
                }
                Op::Spend(quantity) => {
                    let (action_id, action) = catalog.action("ai_email_generation").unwrap();
                    let req = SpendRequest {
                        action_id,
                        action,
                        quantity: *quantity,
                        mode: SpendMode::UpTo,
                        actor: service(),
                        campaign: None,
                        subject: None,
                    };
                    // Nothing left to spend is refused; that is fine here.
                    let _ = account.spend(&req, now);
                    continue;
                }
            };

            // The first application does what the request means.
            match (&op, &first) {
                (Op::Change(which, by_service), result) => {
                    let requested = subscription(&catalog, *which);
                    let cancelled = before.status == SubscriptionStatus::Cancelled;
                    let change = before.subscription.resubscribe(&requested, &catalog).unwrap();
                    match (cancelled, change, by_service, result) {
                        (true, _, _, Err(DomainError::AlreadyCancelled))
                        | (false, crate::Resubscription::Upgrade, false, Err(DomainError::PaidByService)) => {
                            prop_assert_eq!(&once, &before, "a refusal changes nothing");
                        }
                        (false, crate::Resubscription::Unchanged, _, Err(DomainError::SubscriptionUnchanged)) => {
                            prop_assert_eq!(&before.scheduled, &None, "nothing waits");
                            prop_assert_eq!(&once, &before, "a refusal changes nothing");
                        }
                        (false, crate::Resubscription::Unchanged, _, Ok(entry)) => {
                            prop_assert!(before.scheduled.is_some(), "only a waiting downgrade is dropped");
                            prop_assert!(entry.lines.is_empty());
                            prop_assert_eq!(
                                &once,
                                &Account {
                                    scheduled: None,
                                    seq: once.seq,
                                    ..before.clone()
                                }
                            );
                        }
                        (false, crate::Resubscription::Upgrade, true, Ok(entry)) => {
                            prop_assert_eq!((&once.subscription, &once.scheduled), (&requested, &None));
                            let more = requested.monthly_difference(&before.subscription, &catalog).unwrap();
                            let meters: std::collections::BTreeSet<&MeterId> =
                                entry.lines.iter().map(|l| l.meter()).collect();
                            prop_assert_eq!(meters.len(), more.len(), "one grant per meter granted more");
                            let plan = catalog.plan(requested.plan.as_str()).unwrap().1;
                            for line in &entry.lines {
                                let (_, monthly) = more.iter().find(|(m, _)| m == line.meter()).unwrap();
                                // The months the granted credits last: from this
                                // period to the renewal they expire at.
                                let bucket = once.buckets.iter().find(|b| b.id == line.bucket).unwrap();
                                let expires = bucket.expires_at.unwrap().date_naive();
                                let months = crate::Period::containing(once.anchor, expires).index(once.anchor)
                                    - once.period.index(once.anchor);
                                if requested.grants_year_up_front(plan) {
                                    prop_assert_eq!(
                                        line.amount,
                                        monthly.checked_mul(u64::from(months)).unwrap(),
                                        "{} for {} month(s) into {}",
                                        line.amount,
                                        months,
                                        line.bucket
                                    );
                                    continue;
                                }
                                prop_assert_eq!(line.amount, *monthly, "{} into {}", line.amount, line.bucket);
                                // In the first month of a year granted up front, this
                                // month's bucket and the year's share their id: leaving
                                // the up-front plan then, the month's difference joins
                                // the year's bucket (a known limit of the ids).
                                let joins_a_year = before
                                    .buckets
                                    .iter()
                                    .any(|b| b.id == line.bucket && b.expires_at > Some(before.renews_at()));
                                prop_assert!(months == 1 || joins_a_year, "{} lasts {} months", line.bucket, months);
                            }
                        }
                        (false, crate::Resubscription::Downgrade, _, Err(DomainError::SubscriptionUnchanged)) => {
                            prop_assert_eq!(&before.scheduled, &Some(requested), "scheduled already");
                            prop_assert_eq!(&once, &before);
                        }
                        (false, crate::Resubscription::Downgrade, _, Ok(entry)) => {
                            prop_assert!(entry.lines.is_empty());
                            prop_assert_eq!(&once.scheduled, &Some(requested));
                            prop_assert_eq!(
                                &once,
                                &Account {
                                    scheduled: once.scheduled.clone(),
                                    seq: once.seq,
                                    ..before.clone()
                                }
                            );
                        }
                        (_, change, _, result) => prop_assert!(false, "{:?} answered {:?}", change, result),
                    }
                }
                (Op::Cancel, Ok(entry)) => {
                    prop_assert_eq!(before.status, SubscriptionStatus::Active);
                    prop_assert!(entry.lines.is_empty());
                    prop_assert_eq!(&once.buckets, &before.buckets, "this month's credits stay");
                }
                (Op::Cancel, Err(e)) => {
                    prop_assert_eq!(
                        (before.status, e),
                        (SubscriptionStatus::Cancelled, &DomainError::AlreadyCancelled)
                    );
                    prop_assert_eq!(&once, &before);
                }
                (Op::Resubscribe(which), Ok(_)) => {
                    prop_assert_eq!(before.status, SubscriptionStatus::Cancelled);
                    prop_assert_eq!(
                        (&once.subscription, once.anchor),
                        (&subscription(&catalog, *which), now.date_naive())
                    );
                    let trial = |a: &Account| -> Vec<Credits> {
                        a.buckets
                            .iter()
                            .filter(|b| b.source() == BucketSource::Trial)
                            .map(|b| b.granted)
                            .collect()
                    };
                    prop_assert_eq!(trial(&once), trial(&before), "the trial once, ever");
                }
                (Op::Resubscribe(_), Err(e)) => {
                    prop_assert_eq!(before.status, SubscriptionStatus::Active);
                    prop_assert!(matches!(e, DomainError::InvalidRequest(_)), "{:?}", e);
                    prop_assert_eq!(&once, &before);
                }
                _ => unreachable!(),
            }

            // The second changes nothing more.
            match again {
                Ok(entry) => prop_assert!(false, "applied twice: {:?}", entry),
                Err(_) => prop_assert_eq!(&account, &once),
            }
            account.check_invariants().unwrap();
        }
        Ok(())
    }

    proptest! {
        /// Arbitrary plan changes, cancels, subscribing again and renewals,
        /// each request applied twice (a retry under a new key): the first
        /// does what the request means; the second is refused and changes
        /// nothing (a downgrade scheduled already is unchanged).
        /// An upgrade grants, on each meter, the monthly difference for each
        /// month its credits last; a downgrade waits for the renewal, which
        /// applies it once.
        #[test]
        fn a_plan_change_or_cancel_applies_once(
            first in 0..SUBSCRIPTIONS.len(),
            ops in prop::collection::vec(op(), 1..25),
        ) {
            follow_plan_changes(first, ops)?;
        }
    }
}
