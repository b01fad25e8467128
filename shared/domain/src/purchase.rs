//! Purchases: packs of credits bought after payment, priced from the
//! catalog, credited to the meter's purchased pool, never expiring.

use chrono::{DateTime, Utc};

use crate::account::{credits_meter, Account};
use crate::bucket::BucketId;
use crate::catalog::Catalog;
use crate::entry::{Actor, EntryKind, LedgerEntry, PurchaseRecord};
use crate::{Credits, DomainError, PackageId};

/// A purchase, priced from the catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PurchaseGrant {
    pub package: Option<PackageId>,
    pub credits: Credits,
    pub price_cents: u64,
    pub currency: String,
    pub payment_reference: String,
}

impl PurchaseGrant {
    /// A catalog package, or a custom number of credits at the catalog's
    /// unit price: exactly one of them.
    pub fn priced(
        catalog: &Catalog,
        package: Option<&str>,
        credits: Option<Credits>,
        payment_reference: &str,
    ) -> Result<PurchaseGrant, DomainError> {
        let payment_reference = parse_payment_reference(payment_reference)?;
        let (package, credits, price_cents) = match (package, credits) {
            (Some(id), None) => {
                let (id, p) = catalog.package(id)?;
                (Some(id.clone()), p.credits, p.price_cents)
            }
            (None, Some(credits)) => (None, credits, catalog.custom_price_cents(credits)?),
            _ => {
                return Err(DomainError::InvalidRequest(
                    "name exactly one of `package` or `credits`".into(),
                ))
            }
        };
        Ok(PurchaseGrant {
            package,
            credits,
            price_cents,
            currency: catalog.currency.clone(),
            payment_reference,
        })
    }

    /// The name a payment reference is claimed under, once across every
    /// organization: a payment buys credits once.
    pub fn payment_claim(&self) -> String {
        format!("payment:{}", self.payment_reference)
    }
}

fn parse_payment_reference(text: &str) -> Result<String, DomainError> {
    if !text.is_empty() && text.len() <= 255 && text.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        Ok(text.to_string())
    } else {
        Err(DomainError::InvalidRequest(
            "payment_reference must be 1-255 printable characters".into(),
        ))
    }
}

impl Account {
    /// Adds a purchased pack to the purchased pool: never expiring, spent
    /// after every expiring credit, oldest pack first. The entry's line says
    /// where the pack starts in the pool, so its credits stay traceable.
    /// What the overdraft owes is repaid out of the pack first.
    pub fn purchase(
        &mut self,
        grant: PurchaseGrant,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<LedgerEntry, DomainError> {
        if !grant.credits.is_positive() {
            return Err(DomainError::InvalidRequest("a purchase adds a positive amount".into()));
        }
        // What the overdraft owes is repaid first; the rest is the pack.
        let meter = credits_meter();
        let (repaid, rest) = self.repay(&meter, grant.credits);
        let mut lines: Vec<_> = repaid.into_iter().collect();
        if rest.is_positive() {
            lines.push(self.grant(BucketId::Purchased { meter }, rest, None, now));
        }
        let entry = self.record(EntryKind::Purchase, actor, now, lines, |e| {
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
}
