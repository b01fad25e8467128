//! Low-balance alerts: per organization, a threshold on a meter (a percent
//! of this period's allowance left, or an amount) and a channel.
//!
//! An alert fires on the entry whose balance after falls below its level
//! from at or above it. That is decided from the sequencer's placements,
//! which alone know each entry's exact balance before and after: a debit
//! commits conditioned only on the buckets it draws (the hot-account write
//! model), so no debit knows the organization's total after it, and many
//! spends at once cannot agree on which one crossed. In commit order
//! exactly one did. A renewal, a top-up, a release or a refund that lifts
//! the balance back to the level re-arms it: the next fall below fires
//! again. The notification's key is the crossing entry's number, so a
//! redelivered stream record notifies once.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::account::Account;
use crate::bucket::BucketSource;
use crate::entry::{Actor, EntryKind, LedgerEntry};
use crate::{AlertId, Credits, DomainError, MeterId};

/// Alerts an organization may set: they live on the account item.
pub const MAX_ALERTS: usize = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threshold {
    /// Percent of this period's plan allowance left (1-100).
    Percent(u8),
    Amount(Credits),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    Email,
    InApp,
    Both,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::InApp => "in_app",
            Channel::Both => "both",
        }
    }

    pub fn parse(text: &str) -> Option<Channel> {
        [Channel::Email, Channel::InApp, Channel::Both]
            .into_iter()
            .find(|c| c.as_str() == text)
    }

    /// Whether the channel sends an email (an event on the bus).
    pub fn emails(self) -> bool {
        matches!(self, Channel::Email | Channel::Both)
    }

    /// Whether the channel keeps an in-app notification.
    pub fn in_app(self) -> bool {
        matches!(self, Channel::InApp | Channel::Both)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    pub meter: MeterId,
    pub threshold: Threshold,
    pub channel: Channel,
}

/// A "top-up needed" trigger, for the product's payment system: when the
/// meter's balance falls below `below`, an event on the bus, at most
/// `monthly_cap` times a billing period (automatic top-ups stay bounded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopUpTrigger {
    pub meter: MeterId,
    pub below: Credits,
    pub monthly_cap: u32,
}

/// The id a top-up trigger's crossings carry.
pub fn top_up_id() -> AlertId {
    AlertId::parse("top-up").expect("valid alert id")
}

/// One alert that fired on one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crossing {
    pub alert: AlertId,
    /// A top-up trigger's cap: at most this many a period (from its start).
    pub cap: Option<(chrono::NaiveDate, u32)>,
    pub meter: MeterId,
    pub channel: Channel,
    /// The level in credits the balance fell below.
    pub level: Credits,
    pub before: Credits,
    pub after: Credits,
}

impl Account {
    /// The level an alert fires below, in credits: a percent of this
    /// period's plan allowance on its meter (none on a meter without one).
    pub fn alert_level(&self, alert: &Alert) -> Option<Credits> {
        match alert.threshold {
            Threshold::Amount(level) => Some(level),
            Threshold::Percent(percent) => {
                let allowance: Credits = self
                    .buckets
                    .iter()
                    .filter(|b| b.meter() == &alert.meter)
                    .filter(|b| matches!(b.source(), BucketSource::Plan | BucketSource::License))
                    .map(|b| b.granted)
                    .sum();
                let level = Credits::from_thousandths(allowance.thousandths() * i64::from(percent) / 100);
                allowance.is_positive().then_some(level)
            }
        }
    }

    /// The alerts (and the top-up trigger) an entry crossed, given the
    /// balances right before and right after it (the account is as of
    /// right after it).
    pub fn crossings(&self, before: &BTreeMap<MeterId, Credits>, after: &BTreeMap<MeterId, Credits>) -> Vec<Crossing> {
        self.alerts
            .iter()
            .filter_map(|(id, alert)| {
                let level = self.alert_level(alert)?;
                let was = before.get(&alert.meter).copied().unwrap_or_default();
                let now = after.get(&alert.meter).copied().unwrap_or_default();
                (was >= level && now < level).then(|| Crossing {
                    alert: id.clone(),
                    cap: None,
                    meter: alert.meter.clone(),
                    channel: alert.channel,
                    level,
                    before: was,
                    after: now,
                })
            })
            .chain(self.top_up.as_ref().and_then(|t| {
                let was = before.get(&t.meter).copied().unwrap_or_default();
                let now = after.get(&t.meter).copied().unwrap_or_default();
                (was >= t.below && now < t.below).then(|| Crossing {
                    alert: top_up_id(),
                    cap: Some((self.period.start, t.monthly_cap)),
                    meter: t.meter.clone(),
                    channel: Channel::Email,
                    level: t.below,
                    before: was,
                    after: now,
                })
            }))
            .collect()
    }

    /// Sets the top-up trigger, or removes it (`None`).
    pub fn set_top_up(
        &mut self,
        trigger: Option<TopUpTrigger>,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<LedgerEntry, DomainError> {
        if trigger.as_ref().is_some_and(|t| t.monthly_cap == 0) {
            return Err(DomainError::InvalidRequest("monthly_cap must be at least 1".into()));
        }
        self.top_up = trigger;
        let entry = self.record(EntryKind::Controls, actor, now, Vec::new(), |e| {
            e.result = Some("top_up".into());
        });
        self.check_invariants()?;
        Ok(entry)
    }

    /// Sets an alert (replacing one of the same id), or removes it (`None`).
    pub fn set_alert(
        &mut self,
        id: &AlertId,
        alert: Option<Alert>,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<LedgerEntry, DomainError> {
        match alert {
            None => {
                self.alerts
                    .remove(id)
                    .ok_or_else(|| DomainError::AlertNotFound(id.to_string()))?;
            }
            Some(alert) => {
                if let Threshold::Percent(p) = alert.threshold {
                    if !(1..=100).contains(&p) {
                        return Err(DomainError::InvalidRequest("percent must be 1-100".into()));
                    }
                }
                if !self.alerts.contains_key(id) && self.alerts.len() >= MAX_ALERTS {
                    return Err(DomainError::TooMany {
                        what: "alerts",
                        max: MAX_ALERTS,
                    });
                }
                self.alerts.insert(id.clone(), alert);
            }
        }
        let entry = self.record(EntryKind::Controls, actor, now, Vec::new(), |e| {
            e.result = Some("alert".into());
            e.note = Some(id.to_string());
        });
        self.check_invariants()?;
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::{credits_meter, Catalog, OrgId, Subscription};

    fn starter() -> Account {
        let catalog = Catalog::default_catalog();
        let sub = Subscription::new(&catalog, "starter", None, None, None).unwrap();
        let at = Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap();
        Account::provision(OrgId::parse("acme").unwrap(), sub, &catalog, Actor::service(None), at)
            .unwrap()
            .0
    }

    fn at(credits: i64) -> BTreeMap<MeterId, Credits> {
        BTreeMap::from([(credits_meter(), Credits::whole(credits))])
    }

    #[test]
    fn an_alert_fires_only_on_the_entry_that_falls_below_its_level() {
        let mut account = starter();
        let alert = Alert {
            meter: credits_meter(),
            threshold: Threshold::Percent(20),
            channel: Channel::Both,
        };
        let now = Utc.with_ymd_and_hms(2026, 3, 2, 10, 0, 0).unwrap();
        let id = AlertId::parse("low-20").unwrap();
        account.set_alert(&id, Some(alert), Actor::system(), now).unwrap();
        // starter grants 500 a month: 20 % is 100.
        assert_eq!(
            account.crossings(&at(101), &at(100)),
            vec![],
            "at the level is not below"
        );
        let fired = account.crossings(&at(100), &at(99));
        assert_eq!(fired.len(), 1);
        assert_eq!(
            (fired[0].level, fired[0].after),
            (Credits::whole(100), Credits::whole(99))
        );
        assert_eq!(account.crossings(&at(99), &at(50)), vec![], "below already");
        assert_eq!(
            account.crossings(&at(50), &at(300)),
            vec![],
            "a top-up re-arms, not fires"
        );
        assert_eq!(account.crossings(&at(300), &at(0)).len(), 1, "and the next fall fires");
    }
}
