//! The catalog: deployment configuration (data, not code) naming the meters,
//! the priced actions, the plans and the credit packages.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ActionId, Credits, DomainError, MeterId, PackageId, PlanId};

static CREDITS: std::sync::LazyLock<MeterId> = std::sync::LazyLock::new(crate::credits_meter);

// The catalogs under `infra/catalogs/`, compiled in by name (see build.rs).
include!(concat!(env!("OUT_DIR"), "/shipped_catalogs.rs"));

/// The outcomes a result may report.
pub const RESULT_OUTCOMES: [&str; 6] = ["deliverable", "risky", "invalid", "not_found", "found", BOUNCED];
/// A subject charged earlier turned out wrong (an email bounced).
pub const BOUNCED: &str = "bounced";

/// The catalog a deployment runs unless it names another.
pub const DEFAULT_CATALOG: &str = "default";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// ISO currency of every price.
    pub currency: String,
    /// Price of one whole credit bought as a custom amount, in cents.
    pub custom_credit_price_cents: u64,
    pub meters: BTreeMap<MeterId, Meter>,
    pub actions: BTreeMap<ActionId, Action>,
    pub plans: BTreeMap<PlanId, Plan>,
    pub packages: BTreeMap<PackageId, Package>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meter {
    pub description: String,
    /// `balance`: spent and granted; `capacity`: held and freed (lead slots).
    #[serde(default)]
    pub kind: MeterKind,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeterKind {
    #[default]
    Balance,
    Capacity,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    pub meter: MeterId,
    /// Cost of one unit, e.g. `"0.5"` for an email verification.
    #[serde(with = "decimal")]
    pub cost: Credits,
    /// What one unit is: a request, a started minute, a subject.
    #[serde(default = "default_unit")]
    pub unit: String,
    pub charging: Charging,
    /// Outcomes that are charged when `charging` is `on_success`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub billable_outcomes: Vec<String>,
    /// Charged once per organization per subject.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub once_per_subject: bool,
    /// How long a subject charged once stays free (`once_per_subject`):
    /// `"forever"` (the default), `"billing_period"` or `{"days": N}`.
    #[serde(default, skip_serializing_if = "DedupWindow::is_forever")]
    pub dedup_window: DedupWindow,
    /// A subject charged once that bounces (a result `bounced`) within this
    /// many days of its charge is refunded into the buckets that paid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounce_refund_days: Option<u32>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DedupWindow {
    #[default]
    Forever,
    /// Until the account's next renewal.
    BillingPeriod,
    Days(u32),
}

impl DedupWindow {
    fn is_forever(&self) -> bool {
        *self == DedupWindow::Forever
    }
}

fn default_unit() -> String {
    "request".into()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Charging {
    /// Debited when the action is requested.
    Immediate,
    /// Debited only for a billable result (via the results queue).
    OnSuccess,
    /// Never debited, never blocked; tracked for usage.
    Free,
}

impl Action {
    /// Credit-free actions keep working at zero balance.
    pub fn is_free(&self) -> bool {
        self.charging == Charging::Free || self.cost.is_zero()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub name: String,
    /// Allowances granted every billing month.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub monthly: Vec<Allowance>,
    /// One-time grants on the first subscription of an organization.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trial: Vec<Allowance>,
    /// Enterprise: the monthly credits are agreed per contract and given on subscribe.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub custom: bool,
    /// Capacity meters' capacity (`{"lead_slots": 2000}`): slots held at once.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub capacity: BTreeMap<MeterId, u64>,
    /// How annual billing grants: monthly (the default) or the year up front.
    #[serde(default, skip_serializing_if = "AnnualGrant::is_monthly")]
    pub annual_grant: AnnualGrant,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnnualGrant {
    /// Each month's allowance at each monthly renewal.
    #[default]
    Monthly,
    /// The allowance of every month left until the anchor's anniversary,
    /// granted at once, spendable until that anniversary.
    UpFront,
}

impl AnnualGrant {
    fn is_monthly(&self) -> bool {
        *self == AnnualGrant::Monthly
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allowance {
    pub meter: MeterId,
    #[serde(with = "decimal")]
    pub amount: Credits,
    /// `account` (default), `seat` (multiplied by seats) or `user` (a
    /// license: each licensed member's own monthly budget).
    #[serde(default)]
    pub per: AllowanceBasis,
    /// How much of a month's unused allowance carries into the next month,
    /// as a multiple of the monthly allowance (`"2"`: up to two months'
    /// worth). None (the default): unused allowance expires at the renewal.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_decimal")]
    pub rollover_cap: Option<Credits>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllowanceBasis {
    #[default]
    Account,
    Seat,
    /// A per-user license: granted to each of the first `seats` members, in
    /// the order they joined, spendable by that member only.
    User,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    #[serde(with = "decimal")]
    pub credits: Credits,
    pub price_cents: u64,
}

impl Catalog {
    pub fn from_json(json: &str) -> Result<Catalog, DomainError> {
        let catalog: Catalog = serde_json::from_str(json).map_err(|e| DomainError::InvalidCatalog(e.to_string()))?;
        catalog.validate()?;
        Ok(catalog)
    }

    pub fn default_catalog() -> Catalog {
        Catalog::shipped(DEFAULT_CATALOG).expect("the default catalog is valid")
    }

    /// A catalog shipped with the functions, by name.
    pub fn shipped(name: &str) -> Result<Catalog, DomainError> {
        let (_, json) = SHIPPED.iter().find(|(n, _)| *n == name).ok_or_else(|| {
            let names: Vec<&str> = SHIPPED.iter().map(|(n, _)| *n).collect();
            DomainError::InvalidCatalog(format!(
                "no catalog {name:?} is shipped (shipped: {})",
                names.join(", ")
            ))
        })?;
        Catalog::from_json(json).map_err(|e| DomainError::InvalidCatalog(format!("catalog {name:?}: {e}")))
    }

    fn validate(&self) -> Result<(), DomainError> {
        let bad = |m: String| Err(DomainError::InvalidCatalog(m));
        for (id, action) in &self.actions {
            if !self.meters.contains_key(&action.meter) {
                return bad(format!("action {id} names unknown meter {}", action.meter));
            }
            if action.cost.is_negative() {
                return bad(format!("action {id} has a negative cost"));
            }
            if !action.once_per_subject && !action.dedup_window.is_forever() {
                return bad(format!("action {id} has a dedup window but is not once_per_subject"));
            }
            if action.bounce_refund_days.is_some() && !action.once_per_subject {
                return bad(format!(
                    "action {id}: a bounce refund needs once_per_subject (the unlock names the charge)"
                ));
            }
            if action.billable_outcomes.iter().any(|o| o == BOUNCED) {
                return bad(format!("action {id}: `bounced` is never billable"));
            }
            if action.dedup_window == DedupWindow::Days(0) {
                return bad(format!("action {id}: a dedup window of 0 days"));
            }
            if let Some(o) = action
                .billable_outcomes
                .iter()
                .find(|o| !RESULT_OUTCOMES.contains(&o.as_str()))
            {
                return bad(format!(
                    "action {id}: unknown outcome {o:?} (known: {})",
                    RESULT_OUTCOMES.join(", ")
                ));
            }
            if action.charging == Charging::OnSuccess && action.billable_outcomes.is_empty() {
                return bad(format!(
                    "action {id} is charged on success but names no billable outcome"
                ));
            }
        }
        for id in self.meters.keys() {
            // Bucket ids are `<source>:<meter>:...`.
            if id.as_str().contains(':') {
                return bad(format!("meter {id} contains ':'"));
            }
        }
        for (id, plan) in &self.plans {
            if plan.trial.iter().any(|a| a.per == AllowanceBasis::User) {
                return bad(format!("plan {id}: a trial is the organization's, not per user"));
            }
            for m in plan.capacity.keys() {
                if self.meters.get(m).is_none_or(|d| d.kind != MeterKind::Capacity) {
                    return bad(format!("plan {id}: capacity for {m}, which is not a capacity meter"));
                }
            }
            if plan.trial.iter().any(|a| a.rollover_cap.is_some()) {
                return bad(format!("plan {id}: a trial never expires, so never rolls over"));
            }
            for a in &plan.monthly {
                if a.rollover_cap.is_some_and(|c| !c.is_positive()) {
                    return bad(format!(
                        "plan {id}: rollover_cap must be positive (leave it out for none)"
                    ));
                }
                if a.rollover_cap.is_some() && a.per == AllowanceBasis::User {
                    return bad(format!("plan {id}: licenses do not roll over"));
                }
            }
            let mut licenses: Vec<&MeterId> = plan
                .monthly
                .iter()
                .filter(|a| a.per == AllowanceBasis::User)
                .map(|a| &a.meter)
                .collect();
            licenses.sort();
            if licenses.windows(2).any(|w| w[0] == w[1]) {
                return bad(format!("plan {id} licenses one meter twice"));
            }
            let mut monthly_meters: Vec<&MeterId> = plan
                .monthly
                .iter()
                .filter(|a| a.per != AllowanceBasis::User)
                .map(|a| &a.meter)
                .collect();
            if plan.custom {
                // The contract's monthly credits are a `credits` allowance of their own.
                monthly_meters.push(&CREDITS);
            }
            monthly_meters.sort();
            if monthly_meters.windows(2).any(|w| w[0] == w[1]) {
                return bad(format!("plan {id} grants one meter twice a month"));
            }
            for a in plan.monthly.iter().chain(&plan.trial) {
                if !self.meters.contains_key(&a.meter) {
                    return bad(format!("plan {id} names unknown meter {}", a.meter));
                }
                if !a.amount.is_positive() {
                    return bad(format!("plan {id} has a non-positive allowance"));
                }
            }
        }
        for (id, p) in &self.packages {
            if !p.credits.is_positive() {
                return bad(format!("package {id} has no credits"));
            }
        }
        if !self.meters.contains_key(&CREDITS) {
            return bad("the catalog must define the `credits` meter".into());
        }
        Ok(())
    }

    /// The capacity meter a contact upload holds slots of when it names
    /// none: the catalog's only one.
    pub fn capacity_meter(&self) -> Result<&MeterId, DomainError> {
        let mut capacity = self.meters.iter().filter(|(_, m)| m.kind == MeterKind::Capacity);
        match (capacity.next(), capacity.next()) {
            (Some((id, _)), None) => Ok(id),
            (None, _) => Err(DomainError::InvalidRequest("the catalog has no capacity meter".into())),
            (Some(_), Some(_)) => Err(DomainError::InvalidRequest(
                "the catalog has several capacity meters: name one as `meter`".into(),
            )),
        }
    }

    pub fn action(&self, id: &str) -> Result<(&ActionId, &Action), DomainError> {
        self.actions
            .iter()
            .find(|(k, _)| k.as_str() == id)
            .ok_or_else(|| DomainError::UnknownAction(id.chars().take(64).collect()))
    }

    pub fn plan(&self, id: &str) -> Result<(&PlanId, &Plan), DomainError> {
        self.plans
            .iter()
            .find(|(k, _)| k.as_str() == id)
            .ok_or_else(|| DomainError::UnknownPlan(id.chars().take(64).collect()))
    }

    pub fn package(&self, id: &str) -> Result<(&PackageId, &Package), DomainError> {
        self.packages
            .iter()
            .find(|(k, _)| k.as_str() == id)
            .ok_or_else(|| DomainError::UnknownPackage(id.chars().take(64).collect()))
    }

    /// Price in cents of a custom amount of whole credits.
    pub fn custom_price_cents(&self, credits: Credits) -> Result<u64, DomainError> {
        if !credits.is_positive() || !credits.is_whole() {
            return Err(DomainError::InvalidAmount {
                text: credits.to_string(),
                why: "a custom purchase is a positive whole number of credits".into(),
            });
        }
        let whole = u64::try_from(credits.thousandths() / crate::credits::SCALE).unwrap_or(0);
        whole
            .checked_mul(self.custom_credit_price_cents)
            .ok_or_else(|| DomainError::InvalidRequest("custom purchase too large".into()))
    }
}

/// An optional decimal string.
mod opt_decimal {
    use super::Credits;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(c: &Option<Credits>, s: S) -> Result<S::Ok, S::Error> {
        match c {
            Some(c) => s.collect_str(c),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Credits>, D::Error> {
        let text = String::deserialize(d)?;
        Credits::parse_decimal(&text)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

/// Amounts in the catalog file are decimal strings, like everywhere users see them.
mod decimal {
    use super::Credits;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(c: &Credits, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(c)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Credits, D::Error> {
        let text = String::deserialize(d)?;
        Credits::parse_decimal(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_json() -> &'static str {
        SHIPPED.iter().find(|(n, _)| *n == DEFAULT_CATALOG).unwrap().1
    }

    #[test]
    fn default_catalog_has_the_spec_prices() {
        let c = Catalog::default_catalog();
        assert_eq!(
            c.action("email_verification").unwrap().1.cost,
            Credits::from_thousandths(500)
        );
        assert_eq!(c.action("email_finder").unwrap().1.cost, Credits::whole(5));
        assert!(c.action("email_send").unwrap().1.is_free());
        assert_eq!(c.plan("starter").unwrap().1.monthly[0].amount, Credits::whole(500));
        assert_eq!(c.package("credits_2500").unwrap().1.price_cents, 10_000);
        assert_eq!(c.custom_price_cents(Credits::whole(300)).unwrap(), 3_000);
        assert!(c.custom_price_cents(Credits::from_thousandths(500)).is_err());
    }

    #[test]
    fn rejects_a_plan_granting_one_meter_twice() {
        let twice = default_json().replace(
            r#""monthly": [{ "meter": "credits", "amount": "500" }]"#,
            r#""monthly": [{ "meter": "credits", "amount": "500" }, { "meter": "credits", "amount": "5" }]"#,
        );
        assert_ne!(twice, default_json());
        assert!(matches!(
            Catalog::from_json(&twice),
            Err(DomainError::InvalidCatalog(_))
        ));
    }

    #[test]
    fn every_shipped_catalog_is_valid_and_an_unknown_name_is_refused() {
        for (name, _) in SHIPPED {
            Catalog::shipped(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let err = Catalog::shipped("lemlistt").unwrap_err().to_string();
        assert!(
            err.contains("no catalog \"lemlistt\"") && err.contains("default"),
            "{err}"
        );
    }

    #[test]
    fn rejects_a_catalog_naming_an_unknown_meter() {
        let json = default_json().replace("\"meter\": \"calling_credits\"", "\"meter\": \"nope\"");
        assert!(matches!(Catalog::from_json(&json), Err(DomainError::InvalidCatalog(_))));
    }
}
