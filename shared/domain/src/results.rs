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
use crate::entry::{Actor, EntryKind, LedgerEntry};
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
        let actor = Actor::service(report.user.clone());
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
    use std::collections::{BTreeMap, VecDeque};

    use chrono::TimeZone;
    use proptest::prelude::*;

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

    #[derive(Clone, Debug)]
    enum Op {
        /// A result for (action, subject, outcome); `again`: another
        /// request about the same subject right after.
        Report(&'static str, usize, &'static str, bool),
        Buy(i64),
        /// An admin's resume: the held results in arrival order, until
        /// one cannot be paid.
        Resume,
        Wait(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let report = (
            prop::sample::select(vec!["email_reveal", "phone_lookup", "email_finder"]),
            0..3usize,
            prop::sample::select(crate::catalog::RESULT_OUTCOMES.to_vec()),
            any::<bool>(),
        );
        prop_oneof![
            6 => report.prop_map(|(a, s, o, again)| Op::Report(a, s, o, again)),
            1 => (1i64..12).prop_map(Op::Buy),
            2 => Just(Op::Resume),
            1 => (0i64..40).prop_map(Op::Wait),
        ]
    }

    /// The results' side of the store: unlocks by action and subject, the
    /// held results in arrival order, whether charging is paused, and how
    /// each result ended.
    #[derive(Default)]
    struct Results {
        unlocks: BTreeMap<(ActionId, Subject), Unlock>,
        held: VecDeque<ResultReport>,
        paused: bool,
        ended: BTreeMap<String, Vec<ResultCharge>>,
    }

    impl Results {
        fn unlocked(&self, r: &ResultReport) -> Option<&Unlock> {
            self.unlocks.get(&(r.action.clone(), r.subject.clone()))
        }

        fn settle(&mut self, r: &ResultReport, decision: &ResultDecision) {
            if let Some(until) = decision.unlocks_until {
                let unlock = Unlock {
                    until,
                    entry_id: r.request_id.clone(),
                };
                self.unlocks.insert((r.action.clone(), r.subject.clone()), unlock);
            }
            self.ended
                .entry(r.request_id.clone())
                .or_default()
                .push(decision.charge);
        }
    }

    fn follow_results(left: i64, ops: Vec<Op>) -> Result<(), TestCaseError> {
        let catalog = Catalog::default_catalog();
        let (_, mut account) = account("starter");
        let mut now = at(1);
        let (burn_id, burn) = catalog.action("ai_email_generation").unwrap();
        let req = SpendRequest {
            action_id: burn_id,
            action: burn,
            quantity: u64::try_from(500 - left).unwrap(),
            mode: SpendMode::All,
            actor: Actor::system(),
            campaign: None,
            subject: None,
        };
        account.spend(&req, now).unwrap();
        let meter = credits_meter();
        let mut results = Results::default();
        let mut n = 0;

        for op in ops {
            match op {
                Op::Report(action, subject, outcome, again) => {
                    for _ in 0..if again { 2 } else { 1 } {
                        n += 1;
                        let mut r = report(&format!("r{n}"), action, &format!("s{subject}@x.com"), outcome);
                        r.occurred_at = now;
                        let (_, def, billable) = r.resolve(&catalog).unwrap();
                        let before = account.clone();
                        let unlocked = results.unlocked(&r).is_some_and(|u| u.holds_at(now));
                        let expected =
                            if !billable && outcome == crate::catalog::BOUNCED && def.bounce_refund_days.is_some() {
                                ResultCharge::BounceNotRefunded
                            } else if !billable {
                                ResultCharge::Free
                            } else if def.once_per_subject && unlocked {
                                ResultCharge::AlreadyUnlocked
                            } else if results.paused || before.spendable(&meter, None) < def.cost {
                                ResultCharge::Held
                            } else {
                                ResultCharge::Charged(def.cost)
                            };
                        let decision = account
                            .charge_result(&catalog, &r, results.unlocked(&r), false, now)
                            .unwrap();
                        prop_assert_eq!(decision.charge, expected, "{:?}", r);
                        let cost = match expected {
                            ResultCharge::Charged(cost) => cost,
                            _ => Credits::ZERO,
                        };
                        prop_assert_eq!(decision.entry.net(&meter), -cost);
                        prop_assert_eq!(
                            account.available(&meter),
                            before.available(&meter).checked_sub(cost).unwrap()
                        );
                        prop_assert_eq!(
                            decision.unlocks_until.is_some(),
                            def.once_per_subject && cost.is_positive()
                        );
                        if expected == ResultCharge::Held {
                            results.held.push_back(r);
                            results.paused = true;
                        } else {
                            results.settle(&r, &decision);
                        }
                    }
                }
                Op::Buy(credits) => {
                    let grant = PurchaseGrant::priced(&catalog, None, Some(Credits::whole(credits)), "p").unwrap();
                    account.purchase(grant, Actor::system(), now).unwrap();
                }
                Op::Resume if results.held.is_empty() => {
                    let before = account.clone();
                    match account.resume_results(Actor::system(), now) {
                        Ok(_) => {
                            prop_assert!(results.paused, "resumed what was not paused");
                            results.paused = false;
                        }
                        Err(_) => {
                            prop_assert!(!results.paused, "a pause with nothing held could not be lifted");
                            prop_assert_eq!(&account, &before);
                        }
                    }
                }
                Op::Resume => {
                    while let Some(r) = results.held.front().cloned() {
                        let before = account.clone();
                        let (_, def, _) = r.resolve(&catalog).unwrap();
                        let unlocked = results.unlocked(&r).is_some_and(|u| u.holds_at(now));
                        match account.charge_result(&catalog, &r, results.unlocked(&r), true, now) {
                            Ok(decision) => {
                                let expected = if def.once_per_subject && unlocked {
                                    ResultCharge::AlreadyUnlocked
                                } else {
                                    ResultCharge::Charged(def.cost)
                                };
                                prop_assert_eq!(decision.charge, expected);
                                let cost = match expected {
                                    ResultCharge::Charged(cost) => cost,
                                    _ => Credits::ZERO,
                                };
                                prop_assert_eq!(
                                    account.available(&meter),
                                    before.available(&meter).checked_sub(cost).unwrap()
                                );
                                results.held.pop_front();
                                results.settle(&r, &decision);
                                results.paused = !results.held.is_empty();
                            }
                            Err(DomainError::InsufficientCredits { .. }) => {
                                prop_assert!(before.spendable(&meter, None) < def.cost);
                                prop_assert!(!(def.once_per_subject && unlocked));
                                prop_assert_eq!(&account, &before, "a resume that cannot pay changes nothing");
                                break;
                            }
                            Err(e) => prop_assert!(false, "{}", e),
                        }
                    }
                }
                Op::Wait(days) => {
                    now += Duration::days(days);
                    account.renew_if_due(&catalog, now).unwrap();
                }
            }
            account.check_invariants().unwrap();
            prop_assert_eq!(account.held_results, results.held.len() as u64);
            prop_assert_eq!(account.results_paused, results.paused);
        }

        // A top-up large enough and a resume settle everything held.
        let grant = PurchaseGrant::priced(&catalog, None, Some(Credits::whole(500)), "p").unwrap();
        account.purchase(grant, Actor::system(), now).unwrap();
        while let Some(r) = results.held.pop_front() {
            let decision = account
                .charge_result(&catalog, &r, results.unlocked(&r), true, now)
                .unwrap();
            results.settle(&r, &decision);
        }
        prop_assert_eq!((account.held_results, account.results_paused), (0, false));
        for (id, ended) in &results.ended {
            prop_assert_eq!(ended.len(), 1, "{} ended {:?}", id, ended);
            prop_assert!(ended[0] != ResultCharge::Held);
        }
        prop_assert_eq!(results.ended.len(), n);
        Ok(())
    }

    proptest! {
        /// Arbitrary results, top-ups, resumes and renewals: a result is
        /// charged its cost only when billable, not unlocked for the
        /// organization and payable while charging is not paused; otherwise
        /// it is free, or held (pausing charging) and charged or found
        /// unlocked exactly once by a resume. So a subject charged once per
        /// organization is never charged again while its unlock holds, and
        /// every result ends charged, free, unlocked already or refused a
        /// refund, exactly once.
        #[test]
        fn each_result_is_charged_at_most_once_and_held_ones_settle_once(
            left in 0i64..12,
            ops in prop::collection::vec(op(), 1..40),
        ) {
            follow_results(left, ops)?;
        }
    }
}
