//! An organization's account: its subscription and the buckets that make up
//! each meter's balance. Every operation is a pure state transition that
//! yields the ledger entries describing it; the store makes it atomic.
//!
//! Invariants (checked after every transition, see [`Account::check_invariants`]):
//! - no bucket's remaining is negative or above what it was granted;
//! - entries are numbered 1, 2, 3, ... with no gap: `seq` is the last one;
//! - a meter's available balance is the sum of its live buckets' remaining.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::{Action, AllowanceBasis, Catalog, Charging, Plan};
use crate::entry::{Actor, BucketSource, EntryKind, EntryLine, LedgerEntry, PurchaseRecord};
use crate::period::Period;
use crate::{ActionId, CampaignId, Credits, DomainError, MeterId, OrgId, PackageId, PlanId, Subject};

pub fn credits_meter() -> MeterId {
    MeterId::parse("credits").expect("valid meter id")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Billing {
    Monthly,
    /// Billed yearly, still granted monthly.
    Annual,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    Active,
    Cancelled,
}

/// What a subscribe call asks for, parsed and checked against the catalog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub plan: PlanId,
    pub seats: u32,
    pub billing: Billing,
    /// The contract's monthly credits on a custom (enterprise) plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_monthly: Option<Credits>,
}

pub const MAX_SEATS: u32 = 100_000;

impl Subscription {
    pub fn new(
        catalog: &Catalog,
        plan: &str,
        seats: Option<u32>,
        billing: Option<Billing>,
        custom_monthly: Option<Credits>,
    ) -> Result<Subscription, DomainError> {
        let (plan_id, plan_def) = catalog.plan(plan)?;
        let seats = seats.unwrap_or(1);
        if seats == 0 || seats > MAX_SEATS {
            return Err(DomainError::InvalidRequest(format!("seats must be 1-{MAX_SEATS}")));
        }
        match (plan_def.custom, custom_monthly) {
            (true, None) => {
                return Err(DomainError::InvalidRequest(
                    "a custom plan needs `monthly_credits`".into(),
                ))
            }
            (false, Some(_)) => {
                return Err(DomainError::InvalidRequest(
                    "`monthly_credits` is only for custom plans".into(),
                ))
            }
            (true, Some(c)) if !c.is_positive() => {
                return Err(DomainError::InvalidRequest("`monthly_credits` must be positive".into()))
            }
            _ => {}
        }
        Ok(Subscription {
            plan: plan_id.clone(),
            seats,
            billing: billing.unwrap_or(Billing::Monthly),
            custom_monthly,
        })
    }

    /// The monthly grants of this subscription, per meter.
    fn monthly_grants(&self, plan: &Plan) -> Result<Vec<(MeterId, Credits)>, DomainError> {
        let mut grants: Vec<(MeterId, Credits)> = Vec::new();
        if let Some(custom) = self.custom_monthly {
            grants.push((credits_meter(), custom));
        }
        for a in &plan.monthly {
            let amount = match a.per {
                AllowanceBasis::Account => a.amount,
                AllowanceBasis::Seat => a
                    .amount
                    .checked_mul(u64::from(self.seats))
                    .ok_or_else(|| DomainError::InvalidRequest("allowance too large".into()))?,
            };
            grants.push((a.meter.clone(), amount));
        }
        Ok(grants)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// Unique within the account, e.g. `plan:credits:2026-11-22`, `purchase:7`.
    pub id: String,
    pub meter: MeterId,
    pub source: BucketSource,
    pub granted: Credits,
    pub remaining: Credits,
    /// `None`: never expires (purchased credits, the trial).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    pub granted_at: DateTime<Utc>,
    /// The ledger entry that granted it.
    pub granted_by: u64,
}

impl Bucket {
    /// Spending priority: credits that expire first are spent first (a
    /// bucket that never expires comes last); among equals, license before
    /// plan before trial before adjustment before purchased, oldest first.
    fn priority(&self) -> (bool, Option<DateTime<Utc>>, BucketSource, u64) {
        (self.expires_at.is_none(), self.expires_at, self.source, self.granted_by)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub org: OrgId,
    /// The last ledger entry written for this account.
    pub seq: u64,
    pub subscription: Subscription,
    pub status: SubscriptionStatus,
    /// The day the organization subscribed: every period starts on it.
    pub anchor: NaiveDate,
    pub period: Period,
    pub buckets: Vec<Bucket>,
    pub used_this_period: BTreeMap<MeterId, Credits>,
    pub created_at: DateTime<Utc>,
}

/// How a spend treats a balance too small for every unit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpendMode {
    /// All units or nothing.
    #[default]
    All,
    /// As many units as the balance covers (at least one).
    UpTo,
}

pub const MAX_QUANTITY: u64 = 100_000;

/// A spend, parsed and resolved against the catalog.
#[derive(Clone, Debug)]
pub struct SpendRequest<'a> {
    pub action_id: &'a ActionId,
    pub action: &'a Action,
    pub quantity: u64,
    pub mode: SpendMode,
    pub actor: Actor,
    pub campaign: Option<CampaignId>,
    pub subject: Option<Subject>,
}

/// What a spend would do: the answer of a dry run, and the plan of a real one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpendQuote {
    pub meter: MeterId,
    pub mode: SpendMode,
    pub unit_cost: Credits,
    pub requested: u64,
    /// Units the balance covers (all of them for a free action).
    pub affordable: u64,
    /// Units this request would charge: none when `all` cannot be covered.
    pub units: u64,
    pub amount: Credits,
    pub available: Credits,
    pub lines: Vec<EntryLine>,
}

impl SpendQuote {
    /// Whether the request can be charged: every unit, or (up_to) at least one.
    pub fn sufficient(&self) -> bool {
        self.units > 0 && self.amount <= self.available
    }

    /// What a refusal says was needed: the whole request, or one unit (up_to).
    pub fn needed(&self) -> Credits {
        match self.mode {
            SpendMode::All => self
                .unit_cost
                .checked_mul(self.requested)
                .unwrap_or(crate::credits::MAX_REQUEST),
            SpendMode::UpTo => self.unit_cost,
        }
    }
}

/// A purchase, priced from the catalog.
#[derive(Clone, Debug)]
pub struct PurchaseGrant {
    pub package: Option<PackageId>,
    pub credits: Credits,
    pub price_cents: u64,
    pub currency: String,
    pub payment_reference: String,
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
            status: SubscriptionStatus::Active,
            anchor,
            period: Period::containing(anchor, anchor),
            buckets: Vec::new(),
            used_this_period: BTreeMap::new(),
            created_at: now,
        };
        let seq = account.seq + 1;
        let mut lines = account.grant_monthly(plan, seq, now)?;
        for t in &plan.trial {
            lines.push(account.add_bucket(
                format!("trial:{}", t.meter),
                t.meter.clone(),
                BucketSource::Trial,
                t.amount,
                None,
                now,
                seq,
            ));
        }
        let plan_id = account.subscription.plan.clone();
        let entry = account.record(EntryKind::Subscription, actor, now, lines, |e| e.plan = Some(plan_id));
        account.check_invariants()?;
        Ok((account, entry))
    }

    /// Renews an account whose period has ended: the ended month's plan
    /// credits expire, the current month's allowance is granted. However many
    /// months were missed, one renewal lands on the current period: no
    /// backlog is granted and nothing is borrowed from the future.
    /// Returns `None` when the account is not due, so renewing twice grants once.
    pub fn renew_if_due(&mut self, catalog: &Catalog, now: DateTime<Utc>) -> Result<Option<LedgerEntry>, DomainError> {
        if now < self.period.renews_at() {
            return Ok(None);
        }
        let seq = self.seq + 1;
        let mut lines = Vec::new();
        // Expire every bucket whose time has come (plan and license credits
        // of the ended month); exhausted buckets simply leave.
        let mut kept = Vec::with_capacity(self.buckets.len());
        for b in std::mem::take(&mut self.buckets) {
            match b.expires_at {
                Some(at) if at <= now => {
                    if b.remaining.is_positive() {
                        lines.push(EntryLine {
                            meter: b.meter.clone(),
                            bucket: b.id.clone(),
                            source: b.source,
                            amount: -b.remaining,
                        });
                    }
                }
                _ => kept.push(b),
            }
        }
        self.buckets = kept;
        self.period = Period::containing(self.anchor, now.date_naive());
        self.used_this_period.clear();
        // A plan the operator removed from the catalog grants nothing more,
        // but must not lock the account out of what it holds.
        if let (SubscriptionStatus::Active, Ok((_, plan))) =
            (self.status, catalog.plan(self.subscription.plan.as_str()))
        {
            lines.extend(self.grant_monthly(plan, seq, now)?);
        }
        let plan_id = self.subscription.plan.clone();
        let entry = self.record(EntryKind::Renewal, Actor::system(), now, lines, |e| {
            e.plan = Some(plan_id)
        });
        self.check_invariants()?;
        Ok(Some(entry))
    }

    /// Available balance of a meter: live buckets only.
    pub fn available(&self, meter: &MeterId) -> Credits {
        self.buckets
            .iter()
            .filter(|b| &b.meter == meter)
            .map(|b| b.remaining)
            .sum()
    }

    /// Buckets of a meter in spending order.
    pub fn buckets_in_priority(&self, meter: &MeterId) -> Vec<&Bucket> {
        let mut bs: Vec<&Bucket> = self.buckets.iter().filter(|b| &b.meter == meter).collect();
        bs.sort_by_key(|b| b.priority());
        bs
    }

    /// What a spend would charge, and from which buckets; changes nothing.
    pub fn quote(&self, req: &SpendRequest<'_>) -> Result<SpendQuote, DomainError> {
        if req.quantity == 0 || req.quantity > MAX_QUANTITY {
            return Err(DomainError::InvalidQuantity(format!("must be 1-{MAX_QUANTITY}")));
        }
        let meter = req.action.meter.clone();
        let unit_cost = if req.action.is_free() {
            Credits::ZERO
        } else {
            req.action.cost
        };
        let available = self.available(&meter);
        let affordable = available.units_covered(unit_cost).min(req.quantity);
        // What this request would charge: all units or none, or as many as covered.
        let units = match req.mode {
            SpendMode::All if affordable < req.quantity => 0,
            SpendMode::All => req.quantity,
            SpendMode::UpTo => affordable,
        };
        let amount = unit_cost
            .checked_mul(units)
            .ok_or_else(|| DomainError::InvalidQuantity("amount too large".into()))?;
        let mut lines = Vec::new();
        let mut left = amount;
        for b in self.buckets_in_priority(&meter) {
            if !left.is_positive() {
                break;
            }
            let take = b.remaining.min(left);
            if take.is_positive() {
                lines.push(EntryLine {
                    meter: meter.clone(),
                    bucket: b.id.clone(),
                    source: b.source,
                    amount: -take,
                });
                left = left.checked_sub(take).expect("take <= left");
            }
        }
        Ok(SpendQuote {
            meter,
            mode: req.mode,
            unit_cost,
            requested: req.quantity,
            affordable,
            units,
            amount,
            available,
            lines,
        })
    }

    /// Debits a spend across buckets in priority order, or refuses it whole.
    pub fn spend(
        &mut self,
        req: &SpendRequest<'_>,
        now: DateTime<Utc>,
    ) -> Result<(SpendQuote, LedgerEntry), DomainError> {
        if req.action.charging == Charging::OnSuccess {
            return Err(DomainError::ChargedOnResult(req.action_id.to_string()));
        }
        let quote = self.quote(req)?;
        if !quote.sufficient() {
            return Err(DomainError::InsufficientCredits {
                meter: quote.meter.clone(),
                needed: quote.needed(),
                available: quote.available,
            });
        }
        for line in &quote.lines {
            let bucket = self
                .buckets
                .iter_mut()
                .find(|b| b.id == line.bucket)
                .expect("quoted bucket exists");
            bucket.remaining = bucket
                .remaining
                .checked_add(line.amount)
                .filter(|r| !r.is_negative())
                .ok_or_else(|| DomainError::InvariantViolated(format!("bucket {} would go negative", bucket.id)))?;
        }
        self.buckets.retain(|b| b.remaining.is_positive());
        let used = self.used_this_period.entry(quote.meter.clone()).or_default();
        *used = used.checked_add(quote.amount).unwrap_or(*used);
        let entry = self.record(EntryKind::Spend, req.actor.clone(), now, quote.lines.clone(), |e| {
            e.action = Some(req.action_id.clone());
            e.quantity = Some(quote.units);
            e.requested = Some(req.quantity);
            e.campaign = req.campaign.clone();
            e.subject = req.subject.clone();
        });
        // A free action still writes an entry: usage is tracked per user.
        if entry.lines.is_empty() {
            debug_assert!(quote.amount.is_zero());
        }
        self.check_invariants()?;
        Ok((quote, entry))
    }

    /// Adds a purchased pack: its own bucket, never expiring.
    pub fn purchase(
        &mut self,
        grant: PurchaseGrant,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<LedgerEntry, DomainError> {
        if !grant.credits.is_positive() {
            return Err(DomainError::InvalidRequest("a purchase adds a positive amount".into()));
        }
        let seq = self.seq + 1;
        let line = self.add_bucket(
            format!("purchase:{seq}"),
            credits_meter(),
            BucketSource::Purchased,
            grant.credits,
            None,
            now,
            seq,
        );
        let entry = self.record(EntryKind::Purchase, actor, now, vec![line], |e| {
            e.purchase = Some(PurchaseRecord {
                package: grant.package,
                credits: grant.credits,
                price_cents: grant.price_cents,
                currency: grant.currency,
                payment_reference: grant.payment_reference,
            });
        });
        self.check_invariants()?;
        Ok(entry)
    }

    pub fn check_invariants(&self) -> Result<(), DomainError> {
        for b in &self.buckets {
            if b.remaining.is_negative() || b.remaining > b.granted {
                return Err(DomainError::InvariantViolated(format!(
                    "bucket {} holds {} of {} granted",
                    b.id, b.remaining, b.granted
                )));
            }
            if b.granted_by > self.seq {
                return Err(DomainError::InvariantViolated(format!(
                    "bucket {} granted by a future entry",
                    b.id
                )));
            }
        }
        let mut ids: Vec<&str> = self.buckets.iter().map(|b| b.id.as_str()).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(DomainError::InvariantViolated("duplicate bucket id".into()));
        }
        Ok(())
    }

    fn grant_monthly(&mut self, plan: &Plan, seq: u64, now: DateTime<Utc>) -> Result<Vec<EntryLine>, DomainError> {
        let expires = Some(self.period.renews_at());
        let start = self.period.start;
        let grants = self.subscription.monthly_grants(plan)?;
        Ok(grants
            .into_iter()
            .map(|(meter, amount)| {
                self.add_bucket(
                    format!("plan:{meter}:{start}"),
                    meter,
                    BucketSource::Plan,
                    amount,
                    expires,
                    now,
                    seq,
                )
            })
            .collect())
    }

    #[allow(clippy::too_many_arguments)]
    fn add_bucket(
        &mut self,
        id: String,
        meter: MeterId,
        source: BucketSource,
        amount: Credits,
        expires_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        seq: u64,
    ) -> EntryLine {
        let line = EntryLine {
            meter: meter.clone(),
            bucket: id.clone(),
            source,
            amount,
        };
        self.buckets.push(Bucket {
            id,
            meter,
            source,
            granted: amount,
            remaining: amount,
            expires_at,
            granted_at: now,
            granted_by: seq,
        });
        line
    }

    /// Numbers the next entry and captures the balances after it.
    fn record(
        &mut self,
        kind: EntryKind,
        actor: Actor,
        now: DateTime<Utc>,
        lines: Vec<EntryLine>,
        fill: impl FnOnce(&mut LedgerEntry),
    ) -> LedgerEntry {
        self.seq += 1;
        let mut meters: Vec<MeterId> = self.buckets.iter().map(|b| b.meter.clone()).collect();
        meters.extend(lines.iter().map(|l| l.meter.clone()));
        meters.push(credits_meter());
        let balance_after = meters
            .into_iter()
            .map(|m| {
                let a = self.available(&m);
                (m, a)
            })
            .collect();
        let mut entry = LedgerEntry {
            seq: self.seq,
            at: now,
            kind,
            actor,
            action: None,
            quantity: None,
            requested: None,
            campaign: None,
            subject: None,
            plan: None,
            purchase: None,
            lines,
            balance_after,
        };
        fill(&mut entry);
        entry
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CallerKind, UserId};
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
        assert_eq!((entry.seq, entry.kind), (1, EntryKind::Subscription));
        assert_eq!(entry.balance_after[&credits_meter()], Credits::whole(500));
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
        assert_eq!(trial.buckets[0].source, BucketSource::Trial);
        assert_eq!(trial.buckets[0].expires_at, None);
    }

    #[test]
    fn plan_credits_are_spent_before_purchased_and_halves_are_exact() {
        let now = at(2026, 5, 2);
        let (catalog, mut account, _) = provisioned("starter", 1, now);
        buy(&mut account, 100, now);
        let (_, e) = spend(&mut account, &catalog, "email_verification", 3, SpendMode::All, now).unwrap();
        assert_eq!(e.net(&credits_meter()), Credits::from_thousandths(-1_500));
        assert_eq!(e.lines[0].source, BucketSource::Plan);
        // Drain the plan bucket and cross into the purchased one in one spend.
        let (_, e) = spend(&mut account, &catalog, "ai_email_generation", 500, SpendMode::All, now).unwrap();
        let by_source: Vec<_> = e.lines.iter().map(|l| (l.source, l.amount)).collect();
        assert_eq!(
            by_source,
            vec![
                (BucketSource::Plan, Credits::from_thousandths(-498_500)),
                (BucketSource::Purchased, Credits::from_thousandths(-1_500)),
            ]
        );
        assert_eq!(e.balance_after[&credits_meter()], Credits::from_thousandths(98_500));
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
        assert_eq!(account.quote(&req).unwrap().amount, Credits::whole(10));
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

    #[derive(Clone, Debug)]
    enum Op {
        Spend(&'static str, u64, bool),
        Buy(i64),
        Advance(i64),
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
        ]
    }

    proptest! {
        /// Conservation: whatever happens, each meter's balance equals the sum
        /// of its ledger entries, every entry's balance_after matches the
        /// running sum, seq has no gaps and no bucket goes negative.
        #[test]
        fn entries_always_sum_to_the_balance(ops in prop::collection::vec(op(), 1..60)) {
            let mut now = at(2026, 1, 31);
            let (catalog, mut account, first) = provisioned("per_seat_1500", 1, now);
            let mut entries = vec![first];
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
                }
                account.check_invariants().unwrap();
            }
            let mut running: BTreeMap<MeterId, Credits> = BTreeMap::new();
            for (i, e) in entries.iter().enumerate() {
                prop_assert_eq!(e.seq, i as u64 + 1);
                for l in &e.lines {
                    let r = running.entry(l.meter.clone()).or_default();
                    *r = r.checked_add(l.amount).unwrap();
                    prop_assert!(!r.is_negative());
                }
                for (m, after) in &e.balance_after {
                    prop_assert_eq!(running.get(m).copied().unwrap_or_default(), *after);
                }
            }
            for (m, total) in running {
                prop_assert_eq!(account.available(&m), total);
            }
            prop_assert_eq!(account.seq, entries.len() as u64);
        }
    }
}
