//! Renewal: a billing month ends, its plan credits expire, the next month's
//! allowance is granted. Lazy (before any use of an account past due) and,
//! later, scheduled: both go through [`Account::renew_if_due`].

use chrono::{DateTime, Utc};

use crate::account::Account;
use crate::catalog::Catalog;
use crate::entry::{Actor, EntryKind, EntryLine, LedgerEntry};
use crate::period::Period;
use crate::subscription::SubscriptionStatus;
use crate::DomainError;

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
    /// credits expire, the current month's allowance is granted. However many
    /// months were missed, one renewal lands on the current period: no
    /// backlog is granted and nothing is borrowed from the future.
    /// Returns `None` when the account is not due, so renewing twice grants once.
    pub fn renew_if_due(&mut self, catalog: &Catalog, now: DateTime<Utc>) -> Result<Option<LedgerEntry>, DomainError> {
        if now < self.renews_at() {
            return Ok(None);
        }
        // Expire every bucket whose time has come (plan and license credits
        // of the ended month).
        let mut lines = self.expire(|b| !b.is_live(now));
        self.period = Period::containing(self.anchor, now.date_naive());
        self.used_this_period.clear();
        // A downgrade takes effect with the month it was scheduled for.
        if let Some(next) = self.scheduled.take() {
            self.subscription = next;
        }
        // A plan the operator removed from the catalog grants nothing more,
        // but must not lock the account out of what it holds.
        if let (SubscriptionStatus::Active, Ok((_, plan))) =
            (self.status, catalog.plan(self.subscription.plan.as_str()))
        {
            lines.extend(self.grant_monthly(plan, now)?);
        }
        let plan_id = self.subscription.plan.clone();
        let entry = self.record(EntryKind::Renewal, Actor::system(), now, lines, |e| {
            e.plan = Some(plan_id)
        });
        self.check_invariants()?;
        Ok(Some(entry))
    }
}
