//! Usage aggregates: what entries add to their day's rollup, so a report
//! by action, user, campaign or day over any range reads one item a day
//! instead of every entry. Built from the table's stream, once per entry.
//!
//! Usage is what spending took from the balance: the credits of spends,
//! charged results, reservations (held, then returned or kept) and
//! reversals (which give back), per meter; and how many such entries.
//! Grants, renewals, expiries and purchases are not usage.

use std::collections::BTreeMap;

use crate::entry::{EntryKind, LedgerEntry};
use crate::MeterId;

/// How a usage report groups its totals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsageGroup {
    Action,
    User,
    Campaign,
    Day,
}

impl UsageGroup {
    pub fn parse(text: &str) -> Option<UsageGroup> {
        match text {
            "action" => Some(UsageGroup::Action),
            "user" => Some(UsageGroup::User),
            "campaign" => Some(UsageGroup::Campaign),
            "day" => Some(UsageGroup::Day),
            _ => None,
        }
    }

    /// The rollup counters' prefix for this group (days group `all`).
    fn prefix(self) -> &'static str {
        match self {
            UsageGroup::Action => "action",
            UsageGroup::User => "user",
            UsageGroup::Campaign => "campaign",
            UsageGroup::Day => "all",
        }
    }
}

/// One group's totals: credits used per meter (thousandths), and entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageTotals {
    pub used: BTreeMap<MeterId, i64>,
    pub entries: i64,
}

/// Whether an entry is usage (see the module's comment).
pub fn is_usage(entry: &LedgerEntry) -> bool {
    matches!(
        entry.kind,
        EntryKind::Spend | EntryKind::Result | EntryKind::Reservation | EntryKind::Reversal | EntryKind::Approval
    )
}

/// What one entry adds to its day's rollup: counters named
/// `<group>/<value>/<meter>` (thousandths used) and
/// `<group>/<value>/entries`; for credit ROI, a campaign's credits by
/// action (`campaign_action/<campaign>#<action>/<meter>`) and its outcomes
/// (`campaign/<campaign>/outcome:<kind>`). Ids never hold a `/` or a `#`.
pub fn rollup_counters(entry: &LedgerEntry) -> Vec<(String, i64)> {
    if entry.kind == EntryKind::Outcome {
        let (Some(campaign), Some(kind)) = (&entry.campaign, &entry.result) else {
            return Vec::new();
        };
        let count = entry.quantity.unwrap_or(1) as i64;
        return vec![
            (format!("campaign/{campaign}/outcome:{kind}"), count),
            (format!("all//outcome:{kind}"), count),
        ];
    }
    if !is_usage(entry) {
        return Vec::new();
    }
    let mut groups = vec![("all", String::new())];
    if let Some(a) = &entry.action {
        groups.push(("action", a.to_string()));
    }
    if let Some(u) = &entry.actor.user {
        groups.push(("user", u.to_string()));
    }
    if let Some(c) = &entry.campaign {
        groups.push(("campaign", c.to_string()));
    }
    let mut used: BTreeMap<&MeterId, i64> = BTreeMap::new();
    for line in &entry.lines {
        *used.entry(line.meter()).or_default() -= line.amount.thousandths();
    }
    let mut counters = Vec::new();
    if let (Some(c), Some(a)) = (&entry.campaign, &entry.action) {
        for (meter, thousandths) in &used {
            counters.push((format!("campaign_action/{c}#{a}/{meter}"), *thousandths));
        }
    }
    for (group, value) in groups {
        counters.push((format!("{group}/{value}/entries"), 1));
        for (meter, thousandths) in &used {
            counters.push((format!("{group}/{value}/{meter}"), *thousandths));
        }
    }
    counters
}

/// A counter's name as its parts: group, value, what it counts.
fn counter_parts(name: &str) -> Option<(&str, &str, &str)> {
    let mut parts = name.splitn(3, '/');
    Some((parts.next()?, parts.next()?, parts.next()?))
}

/// A report's totals by group value, from day rollups' counters. For
/// [`UsageGroup::Day`] the key is the day.
pub fn totals<'a, D: ToString>(
    group: UsageGroup,
    days: impl IntoIterator<Item = (D, &'a BTreeMap<String, i64>)>,
) -> BTreeMap<String, UsageTotals> {
    let mut report: BTreeMap<String, UsageTotals> = BTreeMap::new();
    for (day, counters) in days {
        for (name, value) in counters {
            let Some((prefix, key, what)) = counter_parts(name) else {
                continue;
            };
            if prefix != group.prefix() {
                continue;
            }
            let key = match group {
                UsageGroup::Day => day.to_string(),
                _ => key.to_string(),
            };
            let totals = report.entry(key).or_default();
            match what {
                "entries" => totals.entries += value,
                // Outcomes are ROI's, not usage.
                outcome if outcome.starts_with("outcome:") => {}
                meter => {
                    if let Ok(m) = MeterId::parse(meter) {
                        *totals.used.entry(m).or_default() += value;
                    }
                }
            }
        }
    }
    report
}

/// One campaign's credit ROI: what it used (per meter, by action) and
/// what it brought (outcomes by kind).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CampaignRoi {
    pub used: BTreeMap<MeterId, i64>,
    /// Credits of the `credits` meter by action (thousandths).
    pub by_action: BTreeMap<String, i64>,
    pub outcomes: BTreeMap<String, i64>,
}

/// Credit ROI by campaign, from day rollups' counters.
pub fn roi<'a>(days: impl IntoIterator<Item = &'a BTreeMap<String, i64>>) -> BTreeMap<String, CampaignRoi> {
    let mut report: BTreeMap<String, CampaignRoi> = BTreeMap::new();
    for counters in days {
        for (name, value) in counters {
            let Some((prefix, key, what)) = counter_parts(name) else {
                continue;
            };
            match prefix {
                "campaign" => {
                    let line = report.entry(key.to_string()).or_default();
                    if let Some(kind) = what.strip_prefix("outcome:") {
                        *line.outcomes.entry(kind.to_string()).or_default() += value;
                    } else if what != "entries" {
                        if let Ok(m) = MeterId::parse(what) {
                            *line.used.entry(m).or_default() += value;
                        }
                    }
                }
                "campaign_action" if what == "credits" => {
                    if let Some((campaign, action)) = key.split_once('#') {
                        let line = report.entry(campaign.to_string()).or_default();
                        *line.by_action.entry(action.to_string()).or_default() += value;
                    }
                }
                _ => {}
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::bucket::BucketId;
    use crate::entry::{Actor, CallerKind, EntryLine};
    use crate::{ActionId, CampaignId, Credits, UserId};

    fn spend(user: &str, action: &str, campaign: Option<&str>, credits: i64) -> LedgerEntry {
        LedgerEntry {
            id: String::new(),
            placement: None,
            at: Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap(),
            kind: EntryKind::Spend,
            actor: Actor {
                user: Some(UserId::parse(user).unwrap()),
                caller: CallerKind::Member,
            },
            action: Some(ActionId::parse(action).unwrap()),
            quantity: Some(1),
            requested: Some(1),
            campaign: campaign.map(|c| CampaignId::parse(c).unwrap()),
            subject: None,
            subjects: Vec::new(),
            plan: None,
            result: None,
            reverses: None,
            note: None,
            member: None,
            purchase: None,
            lines: vec![EntryLine {
                bucket: BucketId::parse("plan:credits:2026-03-02").unwrap(),
                amount: Credits::whole(-credits),
                offset: None,
            }],
        }
    }

    #[test]
    fn totals_by_each_group_add_up_to_the_entries() {
        let entries = [
            spend("ann", "email_finder", Some("spring"), 5),
            spend("bob", "email_finder", None, 5),
            spend("bob", "ai_email_generation", Some("spring"), 1),
        ];
        let mut day: BTreeMap<String, i64> = BTreeMap::new();
        for e in &entries {
            for (name, v) in rollup_counters(e) {
                *day.entry(name).or_default() += v;
            }
        }
        let credits = MeterId::parse("credits").unwrap();
        let by_user = totals(UsageGroup::User, [("2026-03-02", &day)]);
        assert_eq!(by_user["bob"].used[&credits], 6_000);
        assert_eq!(by_user["bob"].entries, 2);
        let by_campaign = totals(UsageGroup::Campaign, [("2026-03-02", &day)]);
        assert_eq!(
            by_campaign.len(),
            1,
            "entries without a campaign have no campaign group"
        );
        assert_eq!(by_campaign["spring"].used[&credits], 6_000);
        let by_day = totals(UsageGroup::Day, [("2026-03-02", &day)]);
        assert_eq!(by_day["2026-03-02"].used[&credits], 11_000);
        assert_eq!(by_day["2026-03-02"].entries, 3);
    }
}
