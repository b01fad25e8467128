//! Usage: day rollups built from the stream, and reports read from them.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use ledger_domain::usage::{roi, rollup_counters, totals, CampaignRoi, UsageGroup, UsageTotals};
use ledger_domain::{credits_meter, Credits, DomainError, LedgerEntry, MemberGauge, OrgId};
use ledger_store::RollupStore;

use crate::executor::Ledger;
use crate::ServiceError;

/// The longest range one usage report reads (a year of day rollups).
pub const MAX_REPORT_DAYS: i64 = 366;

impl<A: RollupStore, R, H> Ledger<A, R, H> {
    /// Adds a committed entry to its day's rollup, once however often the
    /// stream delivers it. Returns whether it added anything now.
    pub async fn roll_up(&self, org: &OrgId, entry_sk: &str, entry: &LedgerEntry) -> Result<bool, ServiceError> {
        let counters = rollup_counters(entry);
        if counters.is_empty() {
            return Ok(false);
        }
        // Kept past the stream's 24 hours of redelivery.
        let mark_until = self.clock.now() + chrono::Duration::days(2);
        Ok(self
            .accounts
            .roll_up(org, entry_sk, entry.at.date_naive(), &counters, mark_until)
            .await?)
    }

    /// Credit ROI from `from` to `to` (UTC days, both included), by campaign.
    pub async fn roi(
        &self,
        org: &OrgId,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<BTreeMap<String, CampaignRoi>, ServiceError> {
        check_range(from, to)?;
        let days = self.accounts.rollups(org, from, to).await?;
        Ok(roi(days.iter().map(|(_, counters)| counters)))
    }

    /// What each user spent of credits today and since `period_start`
    /// (UTC days), from the day rollups: the gauge of members no limit
    /// counts on the account. A second or so behind, like the stream.
    pub async fn member_spending(
        &self,
        org: &OrgId,
        period_start: NaiveDate,
        today: NaiveDate,
    ) -> Result<BTreeMap<String, MemberGauge>, ServiceError> {
        let from = period_start.min(today);
        check_range(from, today)?;
        let days = self.accounts.rollups(org, from, today).await?;
        let credits =
            |totals: &UsageTotals| Credits::from_thousandths(totals.used.get(&credits_meter()).copied().unwrap_or(0));
        let period = totals(UsageGroup::User, days.iter().map(|(day, counters)| (day, counters)));
        let on_the_day = totals(
            UsageGroup::User,
            days.iter()
                .filter(|(day, _)| *day == today)
                .map(|(day, counters)| (day, counters)),
        );
        Ok(period
            .into_iter()
            .map(|(user, spent)| {
                let gauge = MemberGauge {
                    used_today: on_the_day.get(&user).map(credits).unwrap_or_default(),
                    used_this_period: credits(&spent),
                };
                (user, gauge)
            })
            .collect())
    }

    /// Usage from `from` to `to` (UTC days, both included), by group.
    pub async fn usage(
        &self,
        org: &OrgId,
        from: NaiveDate,
        to: NaiveDate,
        group: UsageGroup,
    ) -> Result<BTreeMap<String, UsageTotals>, ServiceError> {
        check_range(from, to)?;
        let days = self.accounts.rollups(org, from, to).await?;
        Ok(totals(group, days.iter().map(|(day, counters)| (day, counters))))
    }
}

fn check_range(from: NaiveDate, to: NaiveDate) -> Result<(), ServiceError> {
    if to < from || (to - from).num_days() >= MAX_REPORT_DAYS {
        return Err(
            DomainError::InvalidRequest(format!("a report covers 1-{MAX_REPORT_DAYS} days, from <= to")).into(),
        );
    }
    Ok(())
}
