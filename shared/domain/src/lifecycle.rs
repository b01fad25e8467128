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
    /// the next renewal. Upgrades grant credits that are paid for: only the
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
        let mut lines = Vec::new();
        match self.subscription.resubscribe(&requested, catalog)? {
            crate::Resubscription::Unchanged => return Err(DomainError::PlanChangeUnsupported),
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
            return Err(DomainError::PlanChangeUnsupported);
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
    use chrono::TimeZone;

    use super::*;
    use crate::{credits_meter, BucketSource, Credits, OrgId, PurchaseGrant};

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
        Actor {
            user: Some(crate::UserId::parse("alice").unwrap()),
            caller: crate::CallerKind::Service,
        }
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
}
