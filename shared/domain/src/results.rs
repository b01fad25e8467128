//! Success-only charging: a producer reports the result of an action it
//! ran (an email found, a phone number not found), and only a billable
//! result is charged. Results arrive at least once; each carries the
//! producer's request id, which makes charging it idempotent.
//!
//! A billable result the balance cannot pay is *held*: kept unpaid, and
//! the organization's result charging is *paused*. It does not resume by
//! itself; after a top-up, an explicit resume charges the held results in
//! the order they arrived (lemlist's rule).

use chrono::{DateTime, Duration, Utc};

use crate::account::Account;
use crate::catalog::{Action, Charging, DedupWindow};
use crate::entry::{Actor, CallerKind, EntryKind, LedgerEntry};
use crate::spend::{Controls, SpendMode, SpendRequest};
use crate::{ActionId, CampaignId, Catalog, Credits, DomainError, Subject, UserId};

/// One result, as its producer reported it (validated).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultReport {
    /// The producer's id for the request: one result per id, ever.
    pub request_id: String,
    pub action: ActionId,
    pub subject: Subject,
    /// `deliverable`, `risky`, `invalid`, `not_found`, `found`.
    pub outcome: String,
    pub user: Option<UserId>,
    pub campaign: Option<CampaignId>,
    pub occurred_at: DateTime<Utc>,
}

impl ResultReport {
    /// The producer's request id: 1-200 printable ASCII characters.
    pub fn check_request_id(id: &str) -> Result<(), DomainError> {
        if !id.is_empty() && id.len() <= 200 && id.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            Ok(())
        } else {
            Err(DomainError::InvalidRequest(
                "request_id must be 1-200 printable ASCII characters".into(),
            ))
        }
    }

    /// The action the result is for, which must be charged on success, and
    /// whether this outcome is billable.
    pub fn resolve<'c>(&self, catalog: &'c Catalog) -> Result<(&'c ActionId, &'c Action, bool), DomainError> {
        let (id, action) = catalog.action(self.action.as_str())?;
        if action.charging != Charging::OnSuccess {
            return Err(DomainError::InvalidRequest(format!(
                "{id} is not charged on its result; spend it instead"
            )));
        }
        if !crate::catalog::RESULT_OUTCOMES.contains(&self.outcome.as_str()) {
            return Err(DomainError::InvalidRequest(format!(
                "unknown outcome {:?} (known: {})",
                self.outcome,
                crate::catalog::RESULT_OUTCOMES.join(", ")
            )));
        }
        let billable = action.billable_outcomes.contains(&self.outcome);
        Ok((id, action, billable))
    }
}

/// A subject unlocked for the organization: charged once, free until `until`
/// (`None`: forever).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unlock {
    pub until: Option<DateTime<Utc>>,
    /// The entry that charged it.
    pub entry_id: String,
}

impl Unlock {
    pub fn holds_at(&self, now: DateTime<Utc>) -> bool {
        self.until.is_none_or(|until| now < until)
    }
}

/// What charging one result decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResultCharge {
    /// Billable and charged.
    Charged(Credits),
    /// Not a billable outcome: recorded, free.
    Free,
    /// Billable, but the organization has it unlocked already: free.
    AlreadyUnlocked,
    /// Billable, not paid: kept unpaid, result charging paused.
    Held,
    /// A bounce that refunds nothing: reported after the action's refund
    /// window, for a subject never charged, or refunded already.
    BounceNotRefunded,
}

impl ResultCharge {
    pub fn as_str(self) -> &'static str {
        match self {
            ResultCharge::Charged(_) => "charged",
            ResultCharge::Free => "free",
            ResultCharge::AlreadyUnlocked => "already_unlocked",
            ResultCharge::Held => "held",
            ResultCharge::BounceNotRefunded => "bounce_not_refunded",
        }
    }
}

/// The decision on one result: what it cost, its entry, and the subject it
/// unlocks (written with the charge, so it is charged once).
#[derive(Clone, Debug)]
pub struct ResultDecision {
    pub charge: ResultCharge,
    pub entry: LedgerEntry,
    pub unlocks_until: Option<Option<DateTime<Utc>>>,
}

impl Account {
    /// Charges one result. `unlocked` is the subject's unlock as stored, if
    /// any; `from_hold` says the result was held and is being charged by a
    /// resume (then a balance too small refuses instead of holding again).
    pub fn charge_result(
        &mut self,
        catalog: &Catalog,
        report: &ResultReport,
        unlocked: Option<&Unlock>,
        from_hold: bool,
        now: DateTime<Utc>,
    ) -> Result<ResultDecision, DomainError> {
        let (action_id, action, billable) = report.resolve(catalog)?;
        let actor = Actor {
            user: report.user.clone(),
            caller: CallerKind::Service,
        };
        let describe = |e: &mut LedgerEntry| {
            e.action = Some(action_id.clone());
            e.subject = Some(report.subject.clone());
            e.campaign = report.campaign.clone();
            e.result = Some(report.outcome.clone());
            e.quantity = Some(1);
        };
        let free = |account: &mut Account, charge: ResultCharge| {
            let mut entry = account.record(EntryKind::Result, actor.clone(), now, Vec::new(), describe);
            entry.quantity = Some(0);
            ResultDecision {
                charge,
                entry,
                unlocks_until: None,
            }
        };
        if !billable {
            let late_bounce = report.outcome == crate::catalog::BOUNCED && action.bounce_refund_days.is_some();
            let charge = if late_bounce {
                // The service refunds a bounce in time as a reversal; one
                // that reaches here came too late, or has nothing to refund.
                ResultCharge::BounceNotRefunded
            } else {
                ResultCharge::Free
            };
            return Ok(free(self, charge));
        }
        if action.once_per_subject && unlocked.is_some_and(|u| u.holds_at(now)) {
            if from_hold {
                self.release_held();
            }
            return Ok(free(self, ResultCharge::AlreadyUnlocked));
        }
        if self.results_paused && !from_hold {
            return Ok(self.hold(actor, now, describe));
        }
        let req = SpendRequest {
            action_id,
            action,
            quantity: 1,
            mode: SpendMode::All,
            actor: actor.clone(),
            campaign: report.campaign.clone(),
            subject: Some(report.subject.clone()),
        };
        let (quote, mut entry) = match self.debit(&req, now, Controls::CountOnly) {
            Ok(done) => done,
            Err(DomainError::InsufficientCredits { .. }) if !from_hold => {
                return Ok(self.hold(actor, now, describe));
            }
            Err(e) => return Err(e),
        };
        entry.kind = EntryKind::Result;
        entry.result = Some(report.outcome.clone());
        if from_hold {
            self.release_held();
        }
        let unlocks_until = action.once_per_subject.then(|| match action.dedup_window {
            DedupWindow::Forever => None,
            DedupWindow::BillingPeriod => Some(self.renews_at()),
            DedupWindow::Days(days) => Some(now + Duration::days(i64::from(days))),
        });
        self.check_invariants()?;
        Ok(ResultDecision {
            charge: ResultCharge::Charged(quote.amount),
            entry,
            unlocks_until,
        })
    }

    fn hold(&mut self, actor: Actor, now: DateTime<Utc>, describe: impl FnOnce(&mut LedgerEntry)) -> ResultDecision {
        self.results_paused = true;
        self.held_results += 1;
        let entry = self.record(EntryKind::ResultHeld, actor, now, Vec::new(), describe);
        ResultDecision {
            charge: ResultCharge::Held,
            entry,
            unlocks_until: None,
        }
    }

    /// A held result is settled (charged, or found unlocked meanwhile); the
    /// last one resumes result charging.
    fn release_held(&mut self) {
        self.held_results = self.held_results.saturating_sub(1);
        if self.held_results == 0 {
            self.results_paused = false;
        }
    }

    /// Resumes result charging when nothing is held (a resume with held
    /// results charges them instead, each in a change of its own).
    pub fn resume_results(&mut self, actor: Actor, now: DateTime<Utc>) -> Result<LedgerEntry, DomainError> {
        if !self.results_paused || self.held_results > 0 {
            return Err(DomainError::InvalidRequest(
                "result charging is not paused with nothing held".into(),
            ));
        }
        self.results_paused = false;
        Ok(self.record(EntryKind::ResultsResumed, actor, now, Vec::new(), |_| {}))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::{credits_meter, OrgId, PurchaseGrant, Subscription};

    fn at(d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, d, 10, 0, 0).unwrap()
    }

    fn report(id: &str, action: &str, subject: &str, outcome: &str) -> ResultReport {
        ResultReport {
            request_id: id.into(),
            action: ActionId::parse(action).unwrap(),
            subject: Subject::parse(subject).unwrap(),
            outcome: outcome.into(),
            user: Some(UserId::parse("u1").unwrap()),
            campaign: None,
            occurred_at: at(1),
        }
    }

    fn account(plan: &str) -> (Catalog, Account) {
        let catalog = Catalog::default_catalog();
        let sub = Subscription::new(&catalog, plan, None, None, None).unwrap();
        let (account, _) =
            Account::provision(OrgId::parse("acme").unwrap(), sub, &catalog, Actor::system(), at(1)).unwrap();
        (catalog, account)
    }

    #[test]
    fn only_billable_outcomes_are_charged() {
        let (catalog, mut account) = account("starter");
        let charge = |account: &mut Account, outcome: &str| {
            let r = report(outcome, "email_finder", "x@y.com", outcome);
            account.charge_result(&catalog, &r, None, false, at(2)).unwrap().charge
        };
        assert_eq!(
            charge(&mut account, "deliverable"),
            ResultCharge::Charged(Credits::whole(5))
        );
        assert_eq!(charge(&mut account, "risky"), ResultCharge::Charged(Credits::whole(5)));
        assert_eq!(charge(&mut account, "invalid"), ResultCharge::Free);
        assert_eq!(charge(&mut account, "not_found"), ResultCharge::Free);
        assert_eq!(account.available(&credits_meter()), Credits::whole(490));
        let bad = report("b", "email_finder", "x@y.com", "maybe");
        assert!(account.charge_result(&catalog, &bad, None, false, at(2)).is_err());
        let immediate = report("c", "ai_email_generation", "x@y.com", "found");
        assert!(account.charge_result(&catalog, &immediate, None, false, at(2)).is_err());
    }

    #[test]
    fn an_unlocked_subject_is_free_until_its_window_ends() {
        let (catalog, mut account) = account("starter");
        let r = report("r1", "email_reveal", "x@y.com", "found");
        let first = account.charge_result(&catalog, &r, None, false, at(2)).unwrap();
        assert_eq!(first.charge, ResultCharge::Charged(Credits::whole(1)));
        assert_eq!(first.unlocks_until, Some(None), "reveals: forever");
        let unlock = Unlock {
            until: Some(at(10)),
            entry_id: "e".into(),
        };
        let again = account
            .charge_result(&catalog, &r, Some(&unlock), false, at(9))
            .unwrap();
        assert_eq!(again.charge, ResultCharge::AlreadyUnlocked);
        let later = account
            .charge_result(&catalog, &r, Some(&unlock), false, at(10))
            .unwrap();
        assert_eq!(later.charge, ResultCharge::Charged(Credits::whole(1)));
    }

    #[test]
    fn a_result_the_balance_cannot_pay_is_held_and_pauses_until_resumed() {
        let (catalog, mut account) = account("starter");
        let mut n = 0;
        let mut charge = |account: &mut Account, from_hold: bool| {
            n += 1;
            let r = report(&format!("r{n}"), "email_finder", &format!("c{n}@y.com"), "deliverable");
            account.charge_result(&catalog, &r, None, from_hold, at(2))
        };
        for _ in 0..100 {
            assert!(matches!(
                charge(&mut account, false).unwrap().charge,
                ResultCharge::Charged(_)
            ));
        }
        assert_eq!(account.available(&credits_meter()), Credits::ZERO);
        assert_eq!(charge(&mut account, false).unwrap().charge, ResultCharge::Held);
        assert!(account.results_paused);
        // Paused: even an affordable result is held, in arrival order.
        let grant = PurchaseGrant::priced(&catalog, None, Some(Credits::whole(7)), "p").unwrap();
        account.purchase(grant, Actor::system(), at(3)).unwrap();
        assert_eq!(charge(&mut account, false).unwrap().charge, ResultCharge::Held);
        assert_eq!(account.held_results, 2);
        // The resume charges the held ones; the last one unpauses.
        assert!(matches!(
            charge(&mut account, true).unwrap().charge,
            ResultCharge::Charged(_)
        ));
        assert!(account.results_paused);
        assert!(matches!(
            charge(&mut account, true),
            Err(DomainError::InsufficientCredits { .. })
        ));
        assert_eq!((account.held_results, account.results_paused), (1, true));
    }
}
