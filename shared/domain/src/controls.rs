//! Team controls: what admins set to keep a shared pool in check. A member
//! may have a daily and a monthly credit limit inside the pool and actions
//! they may not use; a campaign may have a budget. All of it lives on the
//! account item, so a limit and the debit it allows are one conditional
//! write: no concurrency exceeds them.
//!
//! Limits count credits of the `credits` meter charged to the member (own
//! license included) from when the limit is set; refunds and releases do
//! not lower what was counted. A campaign budget counts the campaign's
//! charges from when it is set, for the campaign's life.

use std::collections::BTreeSet;

use chrono::{DateTime, NaiveDate, Utc};

use crate::account::{credits_meter, Account};
use crate::entry::{Actor, EntryKind, LedgerEntry};
use crate::{ActionId, CampaignId, Credits, DomainError, MeterId, UserId};

/// Campaign budgets an organization may hold: they live on the account item.
pub const MAX_BUDGETS: usize = 50;

/// What an admin set for one member.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberLimits {
    pub daily: Option<Credits>,
    pub monthly: Option<Credits>,
    /// Actions the member may not use (a 403 naming the action).
    pub blocked: BTreeSet<ActionId>,
}

impl MemberLimits {
    fn counts_usage(&self) -> bool {
        self.daily.is_some() || self.monthly.is_some()
    }
}

/// What a limited member spent: today, and this billing period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberUsage {
    pub day: NaiveDate,
    pub today: Credits,
    pub period_start: NaiveDate,
    pub this_period: Credits,
}

/// A campaign's budget and what it has spent since it was set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CampaignBudget {
    pub limit: Credits,
    pub spent: Credits,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitKind {
    Daily,
    Monthly,
    Campaign,
}

impl LimitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Daily => "daily",
            LimitKind::Monthly => "monthly",
            LimitKind::Campaign => "campaign",
        }
    }
}

/// The tightest control on a spend: how much it still allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Headroom {
    pub kind: LimitKind,
    pub limit: Credits,
    pub left: Credits,
}

/// One member's gauge: what they spent under their limits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberGauge {
    pub used_today: Credits,
    pub used_this_period: Credits,
}

impl Account {
    /// Refuses an action the acting member may not use.
    pub fn check_allowed(&self, actor: &Actor, action: &ActionId) -> Result<(), DomainError> {
        let Some(user) = &actor.user else { return Ok(()) };
        match self.members.get(user) {
            Some(m) if m.limits.blocked.contains(action) => Err(DomainError::ActionBlocked {
                action: action.to_string(),
                user: user.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// The tightest of the acting member's limits and the campaign's budget
    /// on a spend of `meter`, if any applies.
    pub fn headroom(
        &self,
        actor: &Actor,
        meter: &MeterId,
        campaign: Option<&CampaignId>,
        now: DateTime<Utc>,
    ) -> Option<Headroom> {
        if *meter != credits_meter() {
            return None;
        }
        let mut tightest: Option<Headroom> = None;
        let mut consider = |kind, limit: Credits, used: Credits| {
            let left = limit.checked_sub(used).unwrap_or_default();
            if tightest.is_none_or(|t| left < t.left) {
                tightest = Some(Headroom { kind, limit, left });
            }
        };
        if let Some(member) = actor.user.as_ref().and_then(|u| self.members.get(u)) {
            let gauge = self.gauge(member.usage.as_ref(), now);
            if let Some(limit) = member.limits.daily {
                consider(LimitKind::Daily, limit, gauge.used_today);
            }
            if let Some(limit) = member.limits.monthly {
                consider(LimitKind::Monthly, limit, gauge.used_this_period);
            }
        }
        if let Some(budget) = campaign.and_then(|c| self.budgets.get(c)) {
            consider(LimitKind::Campaign, budget.limit, budget.spent);
        }
        tightest
    }

    /// What a member's usage counts as of now: a past day or period counts
    /// nothing.
    pub fn gauge(&self, usage: Option<&MemberUsage>, now: DateTime<Utc>) -> MemberGauge {
        let today = now.date_naive();
        MemberGauge {
            used_today: usage.filter(|u| u.day == today).map(|u| u.today).unwrap_or_default(),
            used_this_period: usage
                .filter(|u| u.period_start == self.period.start)
                .map(|u| u.this_period)
                .unwrap_or_default(),
        }
    }

    /// Counts a charge against the member's limits and the campaign's budget.
    pub(crate) fn count_charge(
        &mut self,
        actor: &Actor,
        meter: &MeterId,
        amount: Credits,
        campaign: Option<&CampaignId>,
        now: DateTime<Utc>,
    ) {
        if *meter != credits_meter() || amount == Credits::ZERO {
            return;
        }
        let (today, period_start) = (now.date_naive(), self.period.start);
        if let Some(member) = actor.user.as_ref().and_then(|u| self.members.get_mut(u)) {
            if let Some(usage) = member.usage.as_mut() {
                if usage.day != today {
                    usage.day = today;
                    usage.today = Credits::ZERO;
                }
                if usage.period_start != period_start {
                    usage.period_start = period_start;
                    usage.this_period = Credits::ZERO;
                }
                usage.today = usage.today.checked_add(amount).unwrap_or(usage.today);
                usage.this_period = usage.this_period.checked_add(amount).unwrap_or(usage.this_period);
            }
        }
        if let Some(budget) = campaign.and_then(|c| self.budgets.get_mut(c)) {
            budget.spent = budget.spent.checked_add(amount).unwrap_or(budget.spent);
        }
    }

    /// Sets a member's limits and blocked actions (replacing what was set).
    /// Usage counts from now when a limit is first set.
    pub fn set_limits(
        &mut self,
        user: &UserId,
        limits: MemberLimits,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<LedgerEntry, DomainError> {
        let period_start = self.period.start;
        let member = self
            .members
            .get_mut(user)
            .ok_or_else(|| DomainError::MemberNotFound(user.to_string()))?;
        member.usage = match (limits.counts_usage(), member.usage.take()) {
            (false, _) => None,
            (true, Some(usage)) => Some(usage),
            (true, None) => Some(MemberUsage {
                day: now.date_naive(),
                today: Credits::ZERO,
                period_start,
                this_period: Credits::ZERO,
            }),
        };
        member.limits = limits;
        let entry = self.record(EntryKind::Controls, actor, now, Vec::new(), |e| {
            e.member = Some(user.clone());
            e.result = Some("limits".into());
        });
        self.check_invariants()?;
        Ok(entry)
    }

    /// Records outcomes a campaign brought (`count` of `kind`): an entry of
    /// no credits, which credit ROI counts.
    pub fn record_outcome(
        &mut self,
        campaign: &CampaignId,
        kind: &str,
        count: u64,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<LedgerEntry, DomainError> {
        let valid = !kind.is_empty()
            && kind.len() <= 64
            && kind
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid || count == 0 || count > 10_000 {
            return Err(DomainError::InvalidRequest(
                "an outcome is 1-64 letters, digits, _ or -, with a count of 1-10000".into(),
            ));
        }
        let entry = self.record(EntryKind::Outcome, actor, now, Vec::new(), |e| {
            e.campaign = Some(campaign.clone());
            e.result = Some(kind.to_string());
            e.quantity = Some(count);
        });
        self.check_invariants()?;
        Ok(entry)
    }

    /// Sets a campaign's budget, or removes it (`None`). A new budget counts
    /// from now; changing one keeps what was spent.
    pub fn set_budget(
        &mut self,
        campaign: &CampaignId,
        limit: Option<Credits>,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<LedgerEntry, DomainError> {
        let full = self.budgets.len() >= MAX_BUDGETS;
        match limit {
            None => {
                self.budgets.remove(campaign);
            }
            Some(limit) => match self.budgets.get_mut(campaign) {
                Some(budget) => budget.limit = limit,
                None if full => {
                    return Err(DomainError::TooMany {
                        what: "campaign budgets",
                        max: MAX_BUDGETS,
                    })
                }
                None => {
                    self.budgets.insert(
                        campaign.clone(),
                        CampaignBudget {
                            limit,
                            spent: Credits::ZERO,
                        },
                    );
                }
            },
        }
        let entry = self.record(EntryKind::Controls, actor, now, Vec::new(), |e| {
            e.campaign = Some(campaign.clone());
            e.result = Some("budget".into());
        });
        self.check_invariants()?;
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;
    use crate::{CallerKind, Catalog, Clock, FixedClock, OrgId, SpendMode, SpendRequest, Subscription};

    fn member(id: &str) -> Actor {
        Actor {
            user: Some(UserId::parse(id).unwrap()),
            caller: CallerKind::Member,
        }
    }

    fn account(clock: &FixedClock) -> (Account, Catalog) {
        let catalog = Catalog::default_catalog();
        let admin = Actor {
            user: Some(UserId::parse("ann").unwrap()),
            caller: CallerKind::Admin,
        };
        let sub = Subscription::new(&catalog, "starter", None, None, None).unwrap();
        let (mut account, _) =
            Account::provision(OrgId::parse("acme").unwrap(), sub, &catalog, admin.clone(), clock.now()).unwrap();
        account
            .set_member(
                UserId::parse("bob").unwrap(),
                crate::MemberRole::Member,
                &catalog,
                admin,
                clock.now(),
            )
            .unwrap();
        (account, catalog)
    }

    fn spend(account: &mut Account, catalog: &Catalog, quantity: u64, now: DateTime<Utc>) -> Result<u64, DomainError> {
        let (action_id, action) = catalog.action("ai_email_generation").unwrap();
        let req = SpendRequest {
            action_id,
            action,
            quantity,
            mode: SpendMode::UpTo,
            actor: member("bob"),
            campaign: None,
            subject: None,
        };
        account.spend(&req, now).map(|(q, _)| q.units)
    }

    #[test]
    fn a_daily_limit_resets_each_day_and_the_monthly_one_holds_across_days() {
        let clock = FixedClock::new(Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap());
        let (mut account, catalog) = account(&clock);
        let limits = MemberLimits {
            daily: Some(Credits::whole(10)),
            monthly: Some(Credits::whole(25)),
            blocked: BTreeSet::new(),
        };
        let bob = UserId::parse("bob").unwrap();
        account.set_limits(&bob, limits, member("ann"), clock.now()).unwrap();
        assert_eq!(
            spend(&mut account, &catalog, 50, clock.now()),
            Ok(10),
            "up_to: the day's 10"
        );
        assert!(matches!(
            spend(&mut account, &catalog, 1, clock.now()),
            Err(DomainError::LimitReached { kind: "daily", .. })
        ));
        clock.advance(Duration::days(1));
        assert_eq!(spend(&mut account, &catalog, 50, clock.now()), Ok(10));
        clock.advance(Duration::days(1));
        assert_eq!(
            spend(&mut account, &catalog, 50, clock.now()),
            Ok(5),
            "the month's last 5"
        );
        assert!(matches!(
            spend(&mut account, &catalog, 1, clock.now()),
            Err(DomainError::LimitReached { kind: "monthly", .. })
        ));
    }

    #[test]
    fn a_blocked_action_is_refused_by_name() {
        let clock = FixedClock::new(Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap());
        let (mut account, catalog) = account(&clock);
        let limits = MemberLimits {
            blocked: [ActionId::parse("ai_email_generation").unwrap()].into(),
            ..MemberLimits::default()
        };
        let bob = UserId::parse("bob").unwrap();
        account.set_limits(&bob, limits, member("ann"), clock.now()).unwrap();
        assert_eq!(
            spend(&mut account, &catalog, 1, clock.now()),
            Err(DomainError::ActionBlocked {
                action: "ai_email_generation".into(),
                user: "bob".into()
            })
        );
    }
}
