//! Spending: what a request for an action costs, which buckets pay it, and
//! the refusal when they cannot.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::account::Account;
use crate::bucket::{allocate, Draw};
use crate::catalog::{Action, Charging};
use crate::entry::{Actor, EntryKind, LedgerEntry};
use crate::{ActionId, CampaignId, Credits, DomainError, MeterId, Subject};

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

/// Whether a debit answers to team controls (limits, budgets, blocked
/// actions). A result reports work already done: it is counted against
/// them but never refused by them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Controls {
    Apply,
    CountOnly,
}

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
    /// Which buckets would pay, in spending order.
    pub draws: Vec<Draw>,
    /// A member's limit or the campaign's budget, when it allows less than
    /// the balance (then `available` is what it allows).
    pub limited_by: Option<crate::controls::Headroom>,
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

    /// Why a request this quote does not cover is refused: a member's
    /// limit or the campaign's budget when it is what falls short, or the
    /// balance.
    pub fn refusal(&self) -> DomainError {
        match self.limited_by {
            Some(h) => DomainError::LimitReached {
                kind: h.kind.as_str(),
                limit: h.limit,
                left: h.left,
                needed: self.needed(),
            },
            None => DomainError::InsufficientCredits {
                meter: self.meter.clone(),
                needed: self.needed(),
                available: self.available,
            },
        }
    }

    /// What the request would cost in full, whatever the balance.
    pub fn cost(&self) -> Credits {
        self.unit_cost.checked_mul(self.requested).unwrap_or_default()
    }
}

impl Account {
    /// What a spend would charge, and from which buckets; changes nothing.
    pub fn quote(&self, req: &SpendRequest<'_>, now: DateTime<Utc>) -> Result<SpendQuote, DomainError> {
        self.quote_with(req, now, Controls::Apply)
    }

    fn quote_with(
        &self,
        req: &SpendRequest<'_>,
        now: DateTime<Utc>,
        controls: Controls,
    ) -> Result<SpendQuote, DomainError> {
        if req.quantity == 0 || req.quantity > MAX_QUANTITY {
            return Err(DomainError::InvalidQuantity(format!("must be 1-{MAX_QUANTITY}")));
        }
        if controls == Controls::Apply {
            self.check_allowed(&req.actor, req.action_id)?;
        }
        let meter = req.action.meter.clone();
        let unit_cost = if req.action.is_free() {
            Credits::ZERO
        } else {
            req.action.cost
        };
        // The spender's own license first (it expires soonest), never another's.
        let spender = req.actor.user.as_ref();
        let buckets = self.spendable_buckets(&meter, spender);
        let pool = self.spendable(&meter, spender);
        // A member's limit or the campaign's budget may allow less.
        let limited_by = self
            .headroom(&req.actor, &meter, req.campaign.as_ref(), now)
            .filter(|h| controls == Controls::Apply && h.left < pool && !unit_cost.is_zero());
        let available = limited_by.map_or(pool, |h| h.left);
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
        let draws = allocate(&buckets, amount)
            .map_err(|_| DomainError::InvariantViolated("affordable units exceed the balance".into()))?;
        Ok(SpendQuote {
            meter,
            mode: req.mode,
            unit_cost,
            requested: req.quantity,
            affordable,
            units,
            amount,
            available,
            draws,
            limited_by,
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
        self.debit(req, now, Controls::Apply)
    }

    /// Charges what the request costs, whatever triggered it (a request, or
    /// a billable result): all units, as many as covered, or the refusal.
    pub(crate) fn debit(
        &mut self,
        req: &SpendRequest<'_>,
        now: DateTime<Utc>,
        controls: Controls,
    ) -> Result<(SpendQuote, LedgerEntry), DomainError> {
        let quote = self.quote_with(req, now, controls)?;
        if !quote.sufficient() {
            return Err(quote.refusal());
        }
        let lines = self.take(&quote.draws)?;
        let used = self.used_this_period.entry(quote.meter.clone()).or_default();
        *used = used.checked_add(quote.amount).unwrap_or(*used);
        self.count_charge(&req.actor, &quote.meter, quote.amount, req.campaign.as_ref(), now);
        // A free action still writes an entry (no lines): usage is tracked per user.
        let entry = self.record(EntryKind::Spend, req.actor.clone(), now, lines, |e| {
            e.action = Some(req.action_id.clone());
            e.quantity = Some(quote.units);
            e.requested = Some(req.quantity);
            e.campaign = req.campaign.clone();
            e.subject = req.subject.clone();
        });
        self.check_invariants()?;
        Ok((quote, entry))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;
    use crate::{credits_meter, Catalog, OrgId, PurchaseGrant, Subscription};

    fn request<'c>(catalog: &'c Catalog, action: &str, quantity: u64, mode: SpendMode) -> SpendRequest<'c> {
        let (action_id, action) = catalog.action(action).unwrap();
        SpendRequest {
            action_id,
            action,
            quantity,
            mode,
            actor: Actor::service(None),
            campaign: None,
            subject: None,
        }
    }

    fn follow_a_spend(
        bought: i64,
        overdraft: i64,
        burnt_halves: u64,
        action: &str,
        quantity: u64,
        up_to: bool,
    ) -> Result<(), TestCaseError> {
        let now = Utc.with_ymd_and_hms(2026, 3, 5, 9, 30, 0).unwrap();
        let catalog = Catalog::default_catalog();
        // 1,500 credits and 400 calling credits a month.
        let sub = Subscription::new(&catalog, "per_seat_1500", None, None, None).unwrap();
        let (mut account, _) =
            Account::provision(OrgId::parse("acme").unwrap(), sub, &catalog, Actor::service(None), now).unwrap();
        if bought > 0 {
            let grant = PurchaseGrant::priced(&catalog, None, Some(Credits::whole(bought)), "pay-1").unwrap();
            account.purchase(grant, Actor::service(None), now).unwrap();
        }
        account
            .set_overdraft(&credits_meter(), Credits::whole(overdraft), Actor::service(None), now)
            .unwrap();
        if burnt_halves > 0 {
            let burn = request(&catalog, "email_verification", burnt_halves, SpendMode::UpTo);
            account.spend(&burn, now).unwrap();
        }

        let mode = if up_to { SpendMode::UpTo } else { SpendMode::All };
        let req = request(&catalog, action, quantity, mode);
        let meter = req.action.meter.clone();
        let unit_cost = if req.action.is_free() {
            Credits::ZERO
        } else {
            req.action.cost
        };
        let spendable = account.spendable(&meter, None);
        let available = account.available(&meter);
        let before = account.clone();
        let quoted = account.quote(&req, now);
        prop_assert_eq!(&account, &before, "a dry run changes nothing");
        let spent = account.spend(&req, now);

        if quantity == 0 || quantity > MAX_QUANTITY {
            prop_assert!(matches!(spent, Err(DomainError::InvalidQuantity(_))));
            prop_assert_eq!(&account, &before);
            return Ok(());
        }
        let covered = if unit_cost.is_zero() {
            u64::MAX
        } else {
            u64::try_from(spendable.thousandths() / unit_cost.thousandths()).unwrap()
        };
        let whole_cost = unit_cost.checked_mul(quantity).unwrap();
        let units = match mode {
            SpendMode::All if whole_cost <= spendable => quantity,
            SpendMode::All => 0,
            SpendMode::UpTo => quantity.min(covered),
        };
        if units == 0 {
            let needed = if up_to { unit_cost } else { whole_cost };
            prop_assert_eq!(
                spent.unwrap_err(),
                DomainError::InsufficientCredits {
                    meter,
                    needed,
                    available: spendable
                }
            );
            prop_assert_eq!(&account, &before, "a refusal changes nothing");
            return Ok(());
        }
        let (quote, entry) = spent.unwrap();
        prop_assert_eq!(&quoted.unwrap(), &quote, "the dry run quoted what was charged");
        let amount = unit_cost.checked_mul(units).unwrap();
        prop_assert_eq!(
            (quote.units, quote.amount, entry.quantity),
            (units, amount, Some(units))
        );
        prop_assert_eq!(entry.net(&meter), -amount);
        prop_assert_eq!(account.spendable(&meter, None), spendable.checked_sub(amount).unwrap());
        prop_assert_eq!(account.available(&meter), available.checked_sub(amount).unwrap());
        if units < quantity {
            prop_assert!(account.spendable(&meter, None) < unit_cost, "one more unit was covered");
        }
        Ok(())
    }

    proptest! {
        /// `all` charges every unit or refuses; `up_to` charges as many units
        /// as the spendable balance (overdraft included) covers, and refuses
        /// only when it covers none. The refusal says what was needed and
        /// what is available and changes nothing; a dry run quotes exactly
        /// what the spend then charges.
        #[test]
        fn a_spend_charges_every_unit_or_as_many_as_are_covered(
            bought in prop_oneof![Just(0i64), 1i64..300],
            overdraft in prop_oneof![Just(0i64), 1i64..100],
            burnt_halves in 0u64..3_400,
            action in prop::sample::select(vec![
                "ai_email_generation", "email_verification", "call_minute", "email_send",
            ]),
            quantity in prop_oneof![1u64..1_500, Just(0), Just(MAX_QUANTITY), Just(MAX_QUANTITY + 1)],
            up_to in any::<bool>(),
        ) {
            follow_a_spend(bought, overdraft, burnt_halves, action, quantity, up_to)?;
        }
    }
}
