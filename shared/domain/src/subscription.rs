//! What an organization subscribes to: a plan from the catalog, seats,
//! billing, and what each month of it grants.

use serde::{Deserialize, Serialize};

use crate::catalog::{AllowanceBasis, Catalog, Plan};
use crate::{credits_meter, Credits, DomainError, MeterId, PlanId};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Billing {
    Monthly,
    /// Billed yearly; granted monthly unless the plan grants the year up front.
    Annual,
}

impl Billing {
    pub fn as_str(self) -> &'static str {
        match self {
            Billing::Monthly => "monthly",
            Billing::Annual => "annual",
        }
    }

    pub fn parse(text: &str) -> Option<Billing> {
        match text {
            "monthly" => Some(Billing::Monthly),
            "annual" => Some(Billing::Annual),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    Active,
    Cancelled,
}

impl SubscriptionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionStatus::Active => "active",
            SubscriptionStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<SubscriptionStatus> {
        match text {
            "active" => Some(SubscriptionStatus::Active),
            "cancelled" => Some(SubscriptionStatus::Cancelled),
            _ => None,
        }
    }
}

/// What a subscribe call asks for, parsed and checked against the catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    pub plan: PlanId,
    pub seats: u32,
    pub billing: Billing,
    /// The contract's monthly credits on a custom (enterprise) plan.
    pub custom_monthly: Option<Credits>,
}

pub const MAX_SEATS: u32 = 100_000;

/// What a subscribe call means for an account that exists already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resubscription {
    /// The account has exactly this subscription: nothing to do.
    Unchanged,
    /// More allowance on some meter: applies now, the difference granted
    /// for the current month.
    Upgrade,
    /// No more allowance anywhere: takes effect at the next renewal.
    Downgrade,
}

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

    /// Subscribing again: the same subscription is a no-op; one that grants
    /// more on any meter each month is an upgrade; anything else (fewer
    /// credits, fewer seats, other billing) a downgrade.
    pub fn resubscribe(&self, requested: &Subscription, catalog: &Catalog) -> Result<Resubscription, DomainError> {
        if self == requested {
            return Ok(Resubscription::Unchanged);
        }
        let increases = requested
            .monthly_difference(self, catalog)?
            .iter()
            .any(|(_, more)| more.is_positive());
        Ok(if increases {
            Resubscription::Upgrade
        } else {
            Resubscription::Downgrade
        })
    }

    /// Per meter, how much more this subscription grants each month than
    /// `other` (meters it grants less of are left out). A plan the catalog
    /// no longer has grants nothing.
    pub fn monthly_difference(
        &self,
        other: &Subscription,
        catalog: &Catalog,
    ) -> Result<Vec<(MeterId, Credits)>, DomainError> {
        let grants = |s: &Subscription| -> Result<Vec<(MeterId, Credits)>, DomainError> {
            match catalog.plan(s.plan.as_str()) {
                Ok((_, plan)) => s.monthly_grants(plan),
                Err(_) => Ok(Vec::new()),
            }
        };
        let (mine, theirs) = (grants(self)?, grants(other)?);
        Ok(mine
            .into_iter()
            .filter_map(|(meter, amount)| {
                let was: Credits = theirs.iter().filter(|(m, _)| *m == meter).map(|(_, a)| *a).sum();
                let more = amount.checked_sub(was)?;
                more.is_positive().then_some((meter, more))
            })
            .collect())
    }

    /// Everything a month of this subscription grants, per meter, licenses
    /// counted for every seat: what plan changes compare.
    pub fn monthly_grants(&self, plan: &Plan) -> Result<Vec<(MeterId, Credits)>, DomainError> {
        let mut grants = self.shared_grants(plan)?;
        for (meter, each) in self.license_grants(plan) {
            let all = each
                .checked_mul(u64::from(self.seats))
                .ok_or_else(|| DomainError::InvalidRequest("allowance too large".into()))?;
            match grants.iter_mut().find(|(m, _)| *m == meter) {
                Some((_, amount)) => *amount = amount.checked_add(all).expect("credits within range"),
                None => grants.push((meter, all)),
            }
        }
        Ok(grants)
    }

    /// What a month grants the organization as a whole, per meter: the
    /// per-account and per-seat allowances and a contract's custom credits.
    pub fn shared_grants(&self, plan: &Plan) -> Result<Vec<(MeterId, Credits)>, DomainError> {
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
                AllowanceBasis::User => continue,
            };
            grants.push((a.meter.clone(), amount));
        }
        Ok(grants)
    }

    /// Each licensed member's own monthly budget, per meter: granted to the
    /// first `seats` members.
    pub fn license_grants(&self, plan: &Plan) -> Vec<(MeterId, Credits)> {
        plan.monthly
            .iter()
            .filter(|a| a.per == AllowanceBasis::User)
            .map(|a| (a.meter.clone(), a.amount))
            .collect()
    }

    /// Per meter, the most of a month's unused allowance that rolls into
    /// the next month (none for meters whose allowance does not roll over).
    pub fn rollover_caps(&self, plan: &Plan) -> Result<Vec<(MeterId, Credits)>, DomainError> {
        let mut caps = Vec::new();
        for a in plan.monthly.iter().filter(|a| a.per != AllowanceBasis::User) {
            let Some(cap) = a.rollover_cap else { continue };
            let (_, monthly) = self
                .shared_grants(plan)?
                .into_iter()
                .find(|(m, _)| *m == a.meter)
                .expect("a shared allowance is granted");
            let most = monthly
                .times(cap)
                .ok_or_else(|| DomainError::InvalidRequest("rollover too large".into()))?;
            caps.push((a.meter.clone(), most));
        }
        Ok(caps)
    }

    /// Whether this subscription grants a year's allowance up front.
    pub fn grants_year_up_front(&self, plan: &Plan) -> bool {
        self.billing == Billing::Annual && plan.annual_grant == crate::catalog::AnnualGrant::UpFront
    }
}
