//! Bulk spends over a list of subjects (contacts): only what is new is
//! charged. For an action charged once per subject, a subject the
//! organization has unlocked is free, and one listed twice is charged once;
//! for an action charged on its result, only billable outcomes are charged.
//! A list is decided and written as one change (its unlocks in the same
//! transaction), so at most [`MAX_SUBJECTS`] subjects go in one request.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use crate::account::Account;
use crate::catalog::{Action, Charging, DedupWindow};
use crate::entry::{Actor, EntryKind, LedgerEntry};
use crate::results::Unlock;
use crate::spend::{Controls, SpendMode, SpendQuote, SpendRequest};
use crate::{ActionId, CampaignId, Credits, DomainError, Subject};

/// The most subjects one request charges: one transaction holds the
/// account, the entry and one unlock per subject within DynamoDB's 100 items.
pub const MAX_SUBJECTS: usize = 50;

/// One listed subject, with its result for an action charged on success.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedSubject {
    pub subject: Subject,
    pub outcome: Option<String>,
}

/// What became of one listed subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubjectOutcome {
    Charged,
    /// The organization has it unlocked: free.
    AlreadyUnlocked,
    /// Listed earlier in the same request: charged once.
    Duplicate,
    /// A result that is not billable (not found, invalid): free.
    NotBillable,
    /// `up_to`: beyond what the balance covers; not charged, not unlocked.
    NotCovered,
}

impl SubjectOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectOutcome::Charged => "charged",
            SubjectOutcome::AlreadyUnlocked => "already_unlocked",
            SubjectOutcome::Duplicate => "duplicate",
            SubjectOutcome::NotBillable => "not_billable",
            SubjectOutcome::NotCovered => "not_covered",
        }
    }

    pub fn parse(text: &str) -> Option<SubjectOutcome> {
        [
            SubjectOutcome::Charged,
            SubjectOutcome::AlreadyUnlocked,
            SubjectOutcome::Duplicate,
            SubjectOutcome::NotBillable,
            SubjectOutcome::NotCovered,
        ]
        .into_iter()
        .find(|o| o.as_str() == text)
    }
}

/// A bulk spend, parsed and resolved against the catalog.
#[derive(Clone, Debug)]
pub struct BulkSpend<'a> {
    pub action_id: &'a ActionId,
    pub action: &'a Action,
    pub subjects: Vec<ListedSubject>,
    pub mode: SpendMode,
    pub actor: Actor,
    pub campaign: Option<CampaignId>,
}

/// What a bulk spend would do: each subject's outcome, and the charge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BulkQuote {
    pub outcomes: Vec<(Subject, SubjectOutcome)>,
    /// The charge for the subjects to be charged; `None` when none is.
    pub quote: Option<SpendQuote>,
}

impl BulkQuote {
    pub fn charged(&self) -> Credits {
        self.quote.as_ref().map(|q| q.amount).unwrap_or_default()
    }

    pub fn units(&self) -> u64 {
        self.outcomes
            .iter()
            .filter(|(_, o)| *o == SubjectOutcome::Charged)
            .count() as u64
    }
}

impl<'a> BulkSpend<'a> {
    /// Checks the list against the action: its size, and outcomes exactly
    /// where the action is charged on its result.
    pub fn check(&self) -> Result<(), DomainError> {
        if self.subjects.is_empty() || self.subjects.len() > MAX_SUBJECTS {
            return Err(DomainError::InvalidQuantity(format!(
                "a spend lists 1-{MAX_SUBJECTS} subjects; send more as several requests"
            )));
        }
        let on_result = self.action.charging == Charging::OnSuccess;
        for s in &self.subjects {
            match (&s.outcome, on_result) {
                (None, true) => {
                    return Err(DomainError::InvalidRequest(format!(
                        "{} is charged on its result: each subject needs its `outcome`",
                        self.action_id
                    )))
                }
                (Some(_), false) => {
                    return Err(DomainError::InvalidRequest(format!(
                        "{} is charged when requested: subjects carry no `outcome`",
                        self.action_id
                    )))
                }
                (Some(o), true) if !crate::catalog::RESULT_OUTCOMES.contains(&o.as_str()) => {
                    return Err(DomainError::InvalidRequest(format!("unknown outcome {o:?}")))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// When an unlock written now runs out (`None`: never); `None` for an
    /// action not charged once per subject.
    pub fn unlock_until(&self, account: &Account, now: DateTime<Utc>) -> Option<Option<DateTime<Utc>>> {
        self.action.once_per_subject.then(|| match self.action.dedup_window {
            DedupWindow::Forever => None,
            DedupWindow::BillingPeriod => Some(account.renews_at()),
            DedupWindow::Days(days) => Some(now + chrono::Duration::days(i64::from(days))),
        })
    }
}

impl Account {
    /// Which subjects a bulk spend charges and what it costs; changes nothing.
    /// `unlocked` holds the organization's unlocks of the listed subjects.
    pub fn quote_subjects(
        &self,
        req: &BulkSpend<'_>,
        unlocked: &BTreeMap<Subject, Unlock>,
        now: DateTime<Utc>,
    ) -> Result<BulkQuote, DomainError> {
        req.check()?;
        let dedup = req.action.once_per_subject;
        let mut seen = BTreeSet::new();
        let mut outcomes = Vec::with_capacity(req.subjects.len());
        let mut candidates = 0u64;
        for s in &req.subjects {
            let billable = s
                .outcome
                .as_ref()
                .is_none_or(|o| req.action.billable_outcomes.contains(o));
            let outcome = if !billable {
                SubjectOutcome::NotBillable
            } else if dedup && !seen.insert(s.subject.clone()) {
                SubjectOutcome::Duplicate
            } else if dedup && unlocked.get(&s.subject).is_some_and(|u| u.holds_at(now)) {
                SubjectOutcome::AlreadyUnlocked
            } else {
                candidates += 1;
                SubjectOutcome::Charged
            };
            outcomes.push((s.subject.clone(), outcome));
        }
        if candidates == 0 {
            return Ok(BulkQuote { outcomes, quote: None });
        }
        let quote = self.quote(&self.unit_request(req, candidates), now)?;
        // `up_to` charges the subjects the balance covers, in list order.
        let mut covered = quote.units;
        for (_, o) in outcomes.iter_mut().filter(|(_, o)| *o == SubjectOutcome::Charged) {
            if covered == 0 {
                *o = SubjectOutcome::NotCovered;
            } else {
                covered -= 1;
            }
        }
        Ok(BulkQuote {
            outcomes,
            quote: Some(quote),
        })
    }

    /// Charges a bulk spend: the new subjects (all, or those the balance
    /// covers with `up_to`), or refuses it whole. The entry lists the
    /// subjects charged; the caller unlocks them in the same write.
    pub fn spend_subjects(
        &mut self,
        req: &BulkSpend<'_>,
        unlocked: &BTreeMap<Subject, Unlock>,
        now: DateTime<Utc>,
    ) -> Result<(BulkQuote, LedgerEntry), DomainError> {
        let plan = self.quote_subjects(req, unlocked, now)?;
        let charged: Vec<Subject> = plan
            .outcomes
            .iter()
            .filter(|(_, o)| *o == SubjectOutcome::Charged)
            .map(|(s, _)| s.clone())
            .collect();
        let mut entry = match &plan.quote {
            Some(quote) if !quote.sufficient() => return Err(quote.refusal()),
            Some(quote) => {
                self.debit(&self.unit_request(req, quote.units), now, Controls::Apply)?
                    .1
            }
            // Nothing new: recorded, free.
            None => self.record(EntryKind::Spend, req.actor.clone(), now, Vec::new(), |e| {
                e.action = Some(req.action_id.clone());
                e.quantity = Some(0);
                e.campaign = req.campaign.clone();
            }),
        };
        entry.requested = Some(req.subjects.len() as u64);
        entry.subjects = charged;
        Ok((plan, entry))
    }

    fn unit_request<'a>(&self, req: &BulkSpend<'a>, units: u64) -> SpendRequest<'a> {
        SpendRequest {
            action_id: req.action_id,
            action: req.action,
            quantity: units,
            mode: req.mode,
            actor: req.actor.clone(),
            campaign: req.campaign.clone(),
            subject: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::{credits_meter, CallerKind, Catalog, OrgId, Subscription, UserId};

    fn at(d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, d, 10, 0, 0).unwrap()
    }

    fn listed(items: &[(&str, Option<&str>)]) -> Vec<ListedSubject> {
        items
            .iter()
            .map(|(s, o)| ListedSubject {
                subject: Subject::parse(s).unwrap(),
                outcome: o.map(str::to_string),
            })
            .collect()
    }

    #[test]
    fn only_new_billable_subjects_are_charged_and_up_to_takes_the_affordable_prefix() {
        let catalog = Catalog::default_catalog();
        let sub = Subscription::new(&catalog, "starter", None, None, None).unwrap();
        let (mut account, _) =
            Account::provision(OrgId::parse("acme").unwrap(), sub, &catalog, Actor::system(), at(1)).unwrap();
        let (action_id, action) = catalog.action("email_reveal").unwrap();
        let req = |subjects, mode| BulkSpend {
            action_id,
            action,
            subjects,
            mode,
            actor: Actor {
                user: Some(UserId::parse("bob").unwrap()),
                caller: CallerKind::Member,
            },
            campaign: None,
        };
        let unlocked = BTreeMap::from([(
            Subject::parse("old@x.com").unwrap(),
            Unlock {
                until: None,
                entry_id: "e".into(),
            },
        )]);
        let list = listed(&[
            ("a@x.com", Some("found")),
            ("old@x.com", Some("found")),
            ("b@x.com", Some("not_found")),
            ("A@x.com", Some("found")),
            ("c@x.com", Some("found")),
        ]);
        let (plan, entry) = account
            .spend_subjects(&req(list.clone(), SpendMode::All), &unlocked, at(2))
            .unwrap();
        let outcomes: Vec<&str> = plan.outcomes.iter().map(|(_, o)| o.as_str()).collect();
        assert_eq!(
            outcomes,
            vec!["charged", "already_unlocked", "not_billable", "duplicate", "charged"]
        );
        assert_eq!(
            (plan.charged(), entry.quantity, entry.requested),
            (Credits::whole(2), Some(2), Some(5))
        );
        assert_eq!(entry.subjects.len(), 2);
        // Leave one credit: up_to charges the first new subject only.
        let (_, burn) = catalog.action("ai_email_generation").unwrap();
        let burn = SpendRequest {
            action_id: catalog.action("ai_email_generation").unwrap().0,
            action: burn,
            quantity: 497,
            mode: SpendMode::All,
            actor: Actor::system(),
            campaign: None,
            subject: None,
        };
        account.spend(&burn, at(2)).unwrap();
        let list = listed(&[("d@x.com", Some("found")), ("e@x.com", Some("found"))]);
        let err = account
            .spend_subjects(&req(list.clone(), SpendMode::All), &unlocked, at(2))
            .unwrap_err();
        assert!(matches!(err, DomainError::InsufficientCredits { .. }));
        let (plan, _) = account
            .spend_subjects(&req(list, SpendMode::UpTo), &unlocked, at(2))
            .unwrap();
        let outcomes: Vec<&str> = plan.outcomes.iter().map(|(_, o)| o.as_str()).collect();
        assert_eq!(outcomes, vec!["charged", "not_covered"]);
        assert_eq!(account.available(&credits_meter()), Credits::ZERO);
        // Lists are bounded, and outcomes go with result-charged actions only.
        let too_many: Vec<(String, Option<&str>)> =
            (0..=MAX_SUBJECTS).map(|i| (format!("s{i}"), Some("found"))).collect();
        let too_many: Vec<(&str, Option<&str>)> = too_many.iter().map(|(s, o)| (s.as_str(), *o)).collect();
        assert!(account
            .quote_subjects(&req(listed(&too_many), SpendMode::All), &unlocked, at(2))
            .is_err());
        assert!(account
            .quote_subjects(&req(listed(&[("x", None)]), SpendMode::All), &unlocked, at(2))
            .is_err());
    }
}
