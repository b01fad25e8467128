//! The organization's team: members, their roles, and per-user licenses
//! (plans whose allowance is each member's own monthly budget, not
//! transferable between members).
//!
//! Licenses follow seats: each month the first `seats` members, in the
//! order they joined, hold one. A member who joins mid-month gets one at
//! once if a seat has not been used this month; a license taken from a
//! member who leaves is not given to anyone else until the renewal, so
//! replacing members never mints credits. Members live on the account item,
//! so a license and the spend it pays are one conditional write.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::account::Account;
use crate::bucket::{BucketId, Draw};
use crate::catalog::{Catalog, Plan};
use crate::entry::{Actor, EntryKind, EntryLine, LedgerEntry};
use crate::subscription::SubscriptionStatus;
use crate::{Bucket, Credits, DomainError, MeterId, UserId};

/// The most members an organization has: they live on the account item
/// (about 60 bytes each, a license bucket about 130 more), which must stay
/// far below DynamoDB's 400 KB item limit and cheap to write.
pub const MAX_MEMBERS: usize = 500;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberRole {
    Admin,
    Member,
}

impl MemberRole {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberRole::Admin => "admin",
            MemberRole::Member => "member",
        }
    }

    pub fn parse(text: &str) -> Option<MemberRole> {
        match text {
            "admin" => Some(MemberRole::Admin),
            "member" => Some(MemberRole::Member),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub role: MemberRole,
    pub joined_at: DateTime<Utc>,
    /// The entry that added the member: the order licenses follow.
    pub joined_by: u64,
    /// What an admin set for them (see [`crate::controls`]).
    pub limits: crate::controls::MemberLimits,
    /// Counted while a daily or monthly limit is set.
    pub usage: Option<crate::controls::MemberUsage>,
}

/// One member's license on one meter this month, as balance shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LicenseGauge {
    pub user: UserId,
    pub meter: MeterId,
    pub granted: Credits,
    pub remaining: Credits,
    pub expires_at: Option<DateTime<Utc>>,
}

impl LicenseGauge {
    pub fn used(&self) -> Credits {
        self.granted.checked_sub(self.remaining).unwrap_or_default()
    }
}

impl Account {
    /// Members in the order they joined.
    pub fn members_by_joining(&self) -> Vec<&UserId> {
        let mut members: Vec<(&UserId, &Member)> = self.members.iter().collect();
        members.sort_by_key(|(user, m)| (m.joined_by, *user));
        members.into_iter().map(|(user, _)| user).collect()
    }

    /// Adds a member, or changes a member's role. A new member of a plan
    /// with licenses gets one now if a seat is free this month.
    pub fn set_member(
        &mut self,
        user: UserId,
        role: MemberRole,
        catalog: &Catalog,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<LedgerEntry, DomainError> {
        let mut lines = Vec::new();
        match self.members.get_mut(&user) {
            Some(member) => member.role = role,
            None => {
                if self.members.len() >= MAX_MEMBERS {
                    return Err(DomainError::InvalidRequest(format!(
                        "an organization has at most {MAX_MEMBERS} members"
                    )));
                }
                let member = Member {
                    role,
                    joined_at: now,
                    joined_by: self.seq + 1,
                    limits: Default::default(),
                    usage: None,
                };
                self.members.insert(user.clone(), member);
                if let Ok((_, plan)) = catalog.plan(self.subscription.plan.as_str()) {
                    lines = self.grant_licenses(plan, now);
                }
            }
        }
        let entry = self.record(EntryKind::Membership, actor, now, lines, |e| e.member = Some(user));
        self.check_invariants()?;
        Ok(entry)
    }

    /// Removes a member. What is left of their license this month expires
    /// now; the license is not handed on before the renewal.
    pub fn remove_member(
        &mut self,
        user: &UserId,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<LedgerEntry, DomainError> {
        if self.members.remove(user).is_none() {
            return Err(DomainError::MemberNotFound(user.to_string()));
        }
        let draws: Vec<Draw> = self
            .buckets
            .iter()
            .filter(|b| b.id.licensee() == Some(user) && b.remaining.is_positive())
            .map(|b| Draw {
                bucket: b.id.clone(),
                amount: b.remaining,
                offset: b.consumed(),
            })
            .collect();
        let lines = self.take(&draws)?;
        let entry = self.record(EntryKind::Membership, actor, now, lines, |e| {
            e.member = Some(user.clone())
        });
        self.check_invariants()?;
        Ok(entry)
    }

    /// Grants this month's license to every member among the first `seats`
    /// who has none yet, while seats are left this month.
    pub(crate) fn grant_licenses(&mut self, plan: &Plan, now: DateTime<Utc>) -> Vec<EntryLine> {
        if self.status != SubscriptionStatus::Active {
            return Vec::new();
        }
        let (period, expires) = (self.period.start, Some(self.renews_at()));
        let seats = self.subscription.seats as usize;
        let mut lines = Vec::new();
        for (meter, each) in self.subscription.license_grants(plan) {
            let this_month = |b: &Bucket| matches!(&b.id, BucketId::License { meter: m, period: p, .. } if *m == meter && *p == period);
            let holders: BTreeSet<UserId> = self
                .buckets
                .iter()
                .filter(|b| this_month(b))
                .filter_map(|b| b.id.licensee().cloned())
                .collect();
            let free = seats.saturating_sub(holders.len());
            let newcomers: Vec<UserId> = self
                .members_by_joining()
                .into_iter()
                .take(seats)
                .filter(|u| !holders.contains(*u))
                .take(free)
                .cloned()
                .collect();
            for user in newcomers {
                let id = BucketId::License {
                    meter: meter.clone(),
                    period,
                    user,
                };
                lines.push(self.grant(id, each, expires, now));
            }
        }
        lines
    }

    /// Raises this month's licenses of current members by `more` on `meter`
    /// (an upgrade to a plan whose licenses are larger).
    pub(crate) fn raise_licenses(&mut self, meter: &MeterId, more: Credits, now: DateTime<Utc>) -> Vec<EntryLine> {
        let period = self.period.start;
        let ids: Vec<BucketId> = self
            .buckets
            .iter()
            .filter(|b| matches!(&b.id, BucketId::License { meter: m, period: p, user } if m == meter && *p == period && self.members.contains_key(user)))
            .map(|b| b.id.clone())
            .collect();
        ids.into_iter().map(|id| self.grant(id, more, None, now)).collect()
    }

    /// Licenses this month, every member's, for the admins' view.
    pub fn licenses(&self) -> Vec<LicenseGauge> {
        self.buckets
            .iter()
            .filter_map(|b| {
                let user = b.id.licensee()?;
                Some(LicenseGauge {
                    user: user.clone(),
                    meter: b.meter().clone(),
                    granted: b.granted,
                    remaining: b.remaining,
                    expires_at: b.expires_at,
                })
            })
            .collect()
    }

    /// The buckets of `meter` that `user` may spend, in spending order:
    /// their own license and everything shared, never another's license.
    pub fn spendable_buckets(&self, meter: &MeterId, user: Option<&UserId>) -> Vec<&Bucket> {
        let mut bs: Vec<&Bucket> = self
            .buckets
            .iter()
            .filter(|b| b.meter() == meter && b.id.licensee().is_none_or(|l| Some(l) == user))
            .collect();
        bs.sort_by_key(|b| b.priority());
        bs
    }

    /// What `user` may spend of `meter`: their license and the shared buckets.
    pub fn spendable(&self, meter: &MeterId, user: Option<&UserId>) -> Credits {
        self.spendable_buckets(meter, user).iter().map(|b| b.remaining).sum()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::{credits_meter, CallerKind, OrgId, PurchaseGrant, SpendMode, SpendRequest, Subscription};

    fn at(d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, d, 10, 0, 0).unwrap()
    }

    fn user(id: &str) -> UserId {
        UserId::parse(id).unwrap()
    }

    fn team(seats: u32, members: &[&str]) -> (Catalog, Account) {
        let catalog = Catalog::default_catalog();
        let sub = Subscription::new(&catalog, "team_licenses", Some(seats), None, None).unwrap();
        let (mut account, _) = Account::provision(
            OrgId::parse("acme").unwrap(),
            sub,
            &catalog,
            Actor::service(None),
            at(1),
        )
        .unwrap();
        for m in members {
            account
                .set_member(user(m), MemberRole::Member, &catalog, Actor::service(None), at(1))
                .unwrap();
        }
        (catalog, account)
    }

    fn spend_as(account: &mut Account, catalog: &Catalog, who: &str, credits: u64) -> Result<LedgerEntry, DomainError> {
        let (action_id, action) = catalog.action("ai_email_generation").unwrap();
        let req = SpendRequest {
            action_id,
            action,
            quantity: credits,
            mode: SpendMode::All,
            actor: Actor {
                user: Some(user(who)),
                caller: CallerKind::Member,
            },
            campaign: None,
            subject: None,
        };
        account.spend(&req, at(5)).map(|(_, e)| e)
    }

    fn license_left(account: &Account, who: &str) -> Option<Credits> {
        account
            .licenses()
            .into_iter()
            .find(|l| l.user.as_str() == who)
            .map(|l| l.remaining)
    }

    #[test]
    fn a_member_out_of_license_falls_through_to_purchased_and_another_license_is_untouched() {
        let (catalog, mut account) = team(2, &["alice", "bob", "carol"]);
        // Two seats: the first two members hold a license; carol does not.
        assert_eq!(license_left(&account, "alice"), Some(Credits::whole(200)));
        assert_eq!(license_left(&account, "bob"), Some(Credits::whole(200)));
        assert_eq!(license_left(&account, "carol"), None);
        let grant = PurchaseGrant::priced(&catalog, None, Some(Credits::whole(500)), "p1").unwrap();
        account.purchase(grant, Actor::service(None), at(2)).unwrap();
        let e = spend_as(&mut account, &catalog, "alice", 250).unwrap();
        let paid: Vec<(String, Credits)> = e.lines.iter().map(|l| (l.bucket.to_string(), l.amount)).collect();
        assert_eq!(
            paid,
            vec![
                ("license:credits:2026-03-01:alice".into(), Credits::whole(-200)),
                ("purchased:credits".into(), Credits::whole(-50)),
            ],
            "the entry says which paid"
        );
        assert_eq!(
            license_left(&account, "bob"),
            Some(Credits::whole(200)),
            "not transferable"
        );
        // Carol has no license: she spends the organization's credits only.
        assert_eq!(
            account.spendable(&credits_meter(), Some(&user("carol"))),
            Credits::whole(450)
        );
        assert_eq!(
            account.spendable(&credits_meter(), Some(&user("bob"))),
            Credits::whole(650)
        );
        let err = spend_as(&mut account, &catalog, "carol", 451).unwrap_err();
        assert!(matches!(err, DomainError::InsufficientCredits { available, .. } if available == Credits::whole(450)));
    }

    #[test]
    fn a_license_freed_mid_month_waits_for_the_renewal_and_seats_added_are_granted_whole_at_once() {
        let (catalog, mut account) = team(2, &["alice", "bob"]);
        spend_as(&mut account, &catalog, "bob", 30).unwrap();
        let removed = account
            .remove_member(&user("bob"), Actor::service(None), at(6))
            .unwrap();
        assert_eq!(
            removed.net(&credits_meter()),
            Credits::whole(-170),
            "what bob had left expires"
        );
        account
            .set_member(user("dave"), MemberRole::Member, &catalog, Actor::service(None), at(7))
            .unwrap();
        assert_eq!(license_left(&account, "dave"), None, "bob's seat was used this month");
        // A seat added mid-month (paid, by the service): its whole month at once.
        let three = Subscription::new(&catalog, "team_licenses", Some(3), None, None).unwrap();
        let up = account
            .change_plan(three, &catalog, Actor::service(None), at(8))
            .unwrap();
        assert_eq!(up.net(&credits_meter()), Credits::whole(200));
        assert_eq!(license_left(&account, "dave"), Some(Credits::whole(200)));
        // Seats removed take effect at the renewal: alice and dave, in the
        // order they joined, keep theirs.
        let one = Subscription::new(&catalog, "team_licenses", Some(1), None, None).unwrap();
        let down = account
            .change_plan(
                one,
                &catalog,
                Actor {
                    user: None,
                    caller: CallerKind::Admin,
                },
                at(9),
            )
            .unwrap();
        assert!(down.lines.is_empty());
        account
            .renew_if_due(&catalog, Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap())
            .unwrap()
            .unwrap();
        let holders: Vec<String> = account.licenses().iter().map(|l| l.user.to_string()).collect();
        assert_eq!(holders, vec!["alice".to_string()]);
        assert_eq!(account.members_by_joining(), vec![&user("alice"), &user("dave")]);
    }

    #[test]
    fn removing_and_adding_back_the_same_member_grants_no_second_license() {
        let (catalog, mut account) = team(1, &["alice"]);
        account
            .remove_member(&user("alice"), Actor::service(None), at(3))
            .unwrap();
        let back = account
            .set_member(user("alice"), MemberRole::Admin, &catalog, Actor::service(None), at(4))
            .unwrap();
        assert!(back.lines.is_empty());
        assert_eq!(license_left(&account, "alice"), Some(Credits::ZERO));
        assert_eq!(
            account.remove_member(&user("zed"), Actor::service(None), at(4)),
            Err(DomainError::MemberNotFound("zed".into()))
        );
    }
}
