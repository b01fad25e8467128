//! What a mutation decided, kept under its request's key so that a retry
//! gets the same. Each trigger renders it its own way (HTTP: a status and a
//! body); the store keeps it as opaque text in the layout written here.

use chrono::NaiveDate;
use ledger_domain::{
    Account, ActionId, Billing, Credits, DomainError, LedgerEntry, MemberRole, MeterId, OrgId, Period, PlanId,
    ResultCharge, ReversalReason, SlotOutcome, Subject, SubjectOutcome, Subscription, SubscriptionStatus, Transition,
    UserId,
};
use serde::{Deserialize, Serialize};

use crate::ServiceError;

/// The subscription an account holds, as a subscribe call reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionState {
    pub org: OrgId,
    pub subscription: Subscription,
    /// A downgrade waiting for the next renewal.
    pub scheduled: Option<Subscription>,
    pub status: SubscriptionStatus,
    pub anchor: NaiveDate,
    pub period: Period,
}

impl SubscriptionState {
    pub fn of(account: &Account) -> Self {
        SubscriptionState {
            org: account.org.clone(),
            subscription: account.subscription.clone(),
            scheduled: account.scheduled.clone(),
            status: account.status,
            anchor: account.anchor,
            period: account.period,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A spend charged (its entry says from which buckets).
    Spent {
        meter: MeterId,
        requested: u64,
        units: u64,
        charged: Credits,
    },
    Purchased,
    /// The account was provisioned.
    Subscribed(SubscriptionState),
    /// The account already had exactly this subscription: nothing written.
    AlreadySubscribed(SubscriptionState),
    /// The subscription was cancelled.
    Cancelled(SubscriptionState),
    /// Upgraded now, or a downgrade scheduled for the next renewal.
    PlanChanged(SubscriptionState),
    /// A bulk spend: what became of each listed subject, and the charge.
    SpentSubjects {
        meter: MeterId,
        requested: u64,
        units: u64,
        charged: Credits,
        subjects: Vec<(Subject, SubjectOutcome)>,
    },
    /// A charge reversed: what went back, and what stayed expired.
    Reversed {
        original: String,
        reason: ReversalReason,
        returned: Credits,
        stayed_expired: Credits,
    },
    /// Units reserved: which contacts, which were reserved already, which
    /// the balance did not cover, and what the meter holds reserved after.
    Reserved {
        meter: MeterId,
        requested: u64,
        reserved: Vec<Subject>,
        already: Vec<Subject>,
        short: Vec<Subject>,
        held: Credits,
    },
    /// Units committed, released or refunded.
    UnitsMoved {
        transition: Transition,
        contacts: Vec<Subject>,
        returned: Credits,
        stayed_expired: Credits,
    },
    /// Contacts uploaded or deleted: what became of each, and the slots
    /// in use after.
    Slots {
        meter: MeterId,
        capacity: u64,
        used: u64,
        contacts: Vec<(Subject, SlotOutcome)>,
    },
    /// A reported result, charged or not.
    Result {
        action: ActionId,
        subject: Subject,
        outcome: String,
        charge: ResultCharge,
    },
    /// Result charging resumed with nothing held.
    ResultsResumed,
    /// Team controls set: a member's limits, or a campaign's budget.
    ControlsSet,
    /// An entry recorded with nothing to report but itself (a campaign's
    /// outcomes).
    Recorded,
    /// A member's spend held for an admin's approval: its credits reserved.
    PendingApproval {
        approval: Subject,
        meter: MeterId,
        amount: Credits,
    },
    /// A member added or given a role (`Some`), or removed (`None`).
    Member {
        user: UserId,
        role: Option<MemberRole>,
    },
    /// A refusal decided on the account's state: kept like a success, so a
    /// retry of its key stays refused (a new key asks afresh).
    Refused(DomainError),
}

/// What a mutation did: its outcome, the entry it wrote, and whether this
/// is a replay of an earlier request under the same key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub outcome: Outcome,
    pub entry: Option<LedgerEntry>,
    pub replayed: bool,
}

/// The stored form. Field names are the stored schema: rename none.
#[derive(Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
enum Stored {
    Spent {
        meter: String,
        requested: u64,
        units: u64,
        charged: i64,
    },
    Purchased,
    Subscribed(StoredState),
    AlreadySubscribed(StoredState),
    Cancelled(StoredState),
    PlanChanged(StoredState),
    Member {
        user: String,
        role: Option<String>,
    },
    ResultsResumed,
    ControlsSet,
    Recorded,
    PendingApproval {
        approval: String,
        meter: String,
        amount: i64,
    },
    Reserved {
        meter: String,
        requested: u64,
        reserved: Vec<String>,
        already: Vec<String>,
        short: Vec<String>,
        held: i64,
    },
    UnitsMoved {
        transition: String,
        contacts: Vec<String>,
        returned: i64,
        stayed_expired: i64,
    },
    Slots {
        meter: String,
        capacity: u64,
        used: u64,
        contacts: Vec<(String, String)>,
    },
    Reversed {
        original: String,
        reason: String,
        returned: i64,
        stayed_expired: i64,
    },
    SpentSubjects {
        meter: String,
        requested: u64,
        units: u64,
        charged: i64,
        /// `[subject, outcome]` pairs in list order.
        subjects: Vec<(String, String)>,
    },
    Result {
        action: String,
        subject: String,
        reported: String,
        charge: String,
        charged: i64,
    },
    InsufficientCredits {
        meter: String,
        needed: i64,
        available: i64,
    },
}

/// A subscription as an outcome records it.
#[derive(Serialize, Deserialize)]
struct StoredState {
    org: String,
    plan: String,
    seats: u32,
    billing: String,
    custom_monthly: Option<i64>,
    status: String,
    anchor: NaiveDate,
    period_start: NaiveDate,
    period_end: NaiveDate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scheduled_plan: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scheduled_seats: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scheduled_billing: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scheduled_custom_monthly: Option<i64>,
}

impl StoredState {
    fn of(s: &SubscriptionState) -> Self {
        StoredState {
            org: s.org.to_string(),
            plan: s.subscription.plan.to_string(),
            seats: s.subscription.seats,
            billing: s.subscription.billing.as_str().into(),
            custom_monthly: s.subscription.custom_monthly.map(Credits::thousandths),
            status: s.status.as_str().into(),
            anchor: s.anchor,
            period_start: s.period.start,
            period_end: s.period.end,
            scheduled_plan: s.scheduled.as_ref().map(|n| n.plan.to_string()),
            scheduled_seats: s.scheduled.as_ref().map(|n| n.seats),
            scheduled_billing: s.scheduled.as_ref().map(|n| n.billing.as_str().to_string()),
            scheduled_custom_monthly: s
                .scheduled
                .as_ref()
                .and_then(|n| n.custom_monthly)
                .map(Credits::thousandths),
        }
    }

    fn state(self) -> Result<SubscriptionState, String> {
        let scheduled = match (&self.scheduled_plan, self.scheduled_seats, &self.scheduled_billing) {
            (Some(plan), Some(seats), Some(billing)) => Some(Subscription {
                plan: PlanId::parse(plan).map_err(|e| e.to_string())?,
                seats,
                billing: Billing::parse(billing).ok_or(billing.clone())?,
                custom_monthly: self.scheduled_custom_monthly.map(Credits::from_thousandths),
            }),
            _ => None,
        };
        Ok(SubscriptionState {
            scheduled,
            org: OrgId::parse(&self.org).map_err(|e| e.to_string())?,
            subscription: Subscription {
                plan: PlanId::parse(&self.plan).map_err(|e| e.to_string())?,
                seats: self.seats,
                billing: Billing::parse(&self.billing).ok_or(self.billing.clone())?,
                custom_monthly: self.custom_monthly.map(Credits::from_thousandths),
            },
            status: SubscriptionStatus::parse(&self.status).ok_or(self.status.clone())?,
            anchor: self.anchor,
            period: Period {
                start: self.period_start,
                end: self.period_end,
            },
        })
    }
}

fn texts(subjects: &[Subject]) -> Vec<String> {
    subjects.iter().map(|s| s.as_str().to_string()).collect()
}

fn subjects(texts: Vec<String>) -> Result<Vec<Subject>, String> {
    texts
        .iter()
        .map(|t| Subject::parse(t).map_err(|e| e.to_string()))
        .collect()
}

impl Outcome {
    /// The outcome as the store keeps it: with the entry it wrote, or kept
    /// alone when it wrote nothing (nothing to change, or insufficient
    /// credits, the only refusal kept).
    pub fn encode(&self) -> String {
        let stored = match self {
            Outcome::Spent {
                meter,
                requested,
                units,
                charged,
            } => Stored::Spent {
                meter: meter.to_string(),
                requested: *requested,
                units: *units,
                charged: charged.thousandths(),
            },
            Outcome::Purchased => Stored::Purchased,
            Outcome::Subscribed(s) => Stored::Subscribed(StoredState::of(s)),
            Outcome::AlreadySubscribed(s) => Stored::AlreadySubscribed(StoredState::of(s)),
            Outcome::Cancelled(s) => Stored::Cancelled(StoredState::of(s)),
            Outcome::PlanChanged(s) => Stored::PlanChanged(StoredState::of(s)),
            Outcome::Member { user, role } => Stored::Member {
                user: user.to_string(),
                role: role.map(|r| r.as_str().to_string()),
            },
            Outcome::ResultsResumed => Stored::ResultsResumed,
            Outcome::ControlsSet => Stored::ControlsSet,
            Outcome::Recorded => Stored::Recorded,
            Outcome::PendingApproval {
                approval,
                meter,
                amount,
            } => Stored::PendingApproval {
                approval: approval.as_str().to_string(),
                meter: meter.to_string(),
                amount: amount.thousandths(),
            },
            Outcome::Reserved {
                meter,
                requested,
                reserved,
                already,
                short,
                held,
            } => Stored::Reserved {
                meter: meter.to_string(),
                requested: *requested,
                reserved: texts(reserved),
                already: texts(already),
                short: texts(short),
                held: held.thousandths(),
            },
            Outcome::UnitsMoved {
                transition,
                contacts,
                returned,
                stayed_expired,
            } => Stored::UnitsMoved {
                transition: transition.as_str().to_string(),
                contacts: texts(contacts),
                returned: returned.thousandths(),
                stayed_expired: stayed_expired.thousandths(),
            },
            Outcome::Slots {
                meter,
                capacity,
                used,
                contacts,
            } => Stored::Slots {
                meter: meter.to_string(),
                capacity: *capacity,
                used: *used,
                contacts: contacts
                    .iter()
                    .map(|(c, o)| (c.as_str().to_string(), o.as_str().to_string()))
                    .collect(),
            },
            Outcome::Reversed {
                original,
                reason,
                returned,
                stayed_expired,
            } => Stored::Reversed {
                original: original.clone(),
                reason: reason.as_str().to_string(),
                returned: returned.thousandths(),
                stayed_expired: stayed_expired.thousandths(),
            },
            Outcome::SpentSubjects {
                meter,
                requested,
                units,
                charged,
                subjects,
            } => Stored::SpentSubjects {
                meter: meter.to_string(),
                requested: *requested,
                units: *units,
                charged: charged.thousandths(),
                subjects: subjects
                    .iter()
                    .map(|(s, o)| (s.as_str().to_string(), o.as_str().to_string()))
                    .collect(),
            },
            Outcome::Result {
                action,
                subject,
                outcome,
                charge,
            } => Stored::Result {
                action: action.to_string(),
                subject: subject.as_str().to_string(),
                reported: outcome.clone(),
                charge: charge.as_str().to_string(),
                charged: match charge {
                    ResultCharge::Charged(c) => c.thousandths(),
                    _ => 0,
                },
            },
            Outcome::Refused(DomainError::InsufficientCredits {
                meter,
                needed,
                available,
            }) => Stored::InsufficientCredits {
                meter: meter.to_string(),
                needed: needed.thousandths(),
                available: available.thousandths(),
            },
            Outcome::Refused(other) => unreachable!("only insufficient credits are kept, not {other:?}"),
        };
        serde_json::to_string(&stored).expect("outcomes serialize")
    }

    pub fn decode(text: &str) -> Result<Outcome, ServiceError> {
        let malformed =
            |why: String| ServiceError::Store(ledger_store::StoreError::Malformed(format!("outcome: {why}")));
        let stored: Stored = serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
        let meter = |m: &str| MeterId::parse(m).map_err(|e| malformed(e.to_string()));
        Ok(match stored {
            Stored::Spent {
                meter: m,
                requested,
                units,
                charged,
            } => Outcome::Spent {
                meter: meter(&m)?,
                requested,
                units,
                charged: Credits::from_thousandths(charged),
            },
            Stored::Purchased => Outcome::Purchased,
            Stored::Subscribed(state) => Outcome::Subscribed(state.state().map_err(malformed)?),
            Stored::AlreadySubscribed(state) => Outcome::AlreadySubscribed(state.state().map_err(malformed)?),
            Stored::Cancelled(state) => Outcome::Cancelled(state.state().map_err(malformed)?),
            Stored::PlanChanged(state) => Outcome::PlanChanged(state.state().map_err(malformed)?),
            Stored::Member { user, role } => Outcome::Member {
                user: UserId::parse(&user).map_err(|e| malformed(e.to_string()))?,
                role: role
                    .map(|r| MemberRole::parse(&r).ok_or_else(|| malformed(format!("role {r:?}"))))
                    .transpose()?,
            },
            Stored::ResultsResumed => Outcome::ResultsResumed,
            Stored::ControlsSet => Outcome::ControlsSet,
            Stored::Recorded => Outcome::Recorded,
            Stored::PendingApproval {
                approval,
                meter: m,
                amount,
            } => Outcome::PendingApproval {
                approval: Subject::parse(&approval).map_err(|e| malformed(e.to_string()))?,
                meter: meter(&m)?,
                amount: Credits::from_thousandths(amount),
            },
            Stored::Reserved {
                meter: m,
                requested,
                reserved,
                already,
                short,
                held,
            } => Outcome::Reserved {
                meter: meter(&m)?,
                requested,
                reserved: subjects(reserved).map_err(malformed)?,
                already: subjects(already).map_err(malformed)?,
                short: subjects(short).map_err(malformed)?,
                held: Credits::from_thousandths(held),
            },
            Stored::UnitsMoved {
                transition,
                contacts,
                returned,
                stayed_expired,
            } => Outcome::UnitsMoved {
                transition: [
                    Transition::Commit,
                    Transition::Release,
                    Transition::Refund,
                    Transition::Expire,
                ]
                .into_iter()
                .find(|t| t.as_str() == transition)
                .ok_or_else(|| malformed(format!("transition {transition:?}")))?,
                contacts: subjects(contacts).map_err(malformed)?,
                returned: Credits::from_thousandths(returned),
                stayed_expired: Credits::from_thousandths(stayed_expired),
            },
            Stored::Slots {
                meter: m,
                capacity,
                used,
                contacts,
            } => Outcome::Slots {
                meter: meter(&m)?,
                capacity,
                used,
                contacts: contacts
                    .into_iter()
                    .map(|(c, o)| {
                        let contact = Subject::parse(&c).map_err(|e| malformed(e.to_string()))?;
                        let outcome = SlotOutcome::parse(&o).ok_or_else(|| malformed(format!("slot outcome {o:?}")))?;
                        Ok((contact, outcome))
                    })
                    .collect::<Result<_, ServiceError>>()?,
            },
            Stored::Reversed {
                original,
                reason,
                returned,
                stayed_expired,
            } => Outcome::Reversed {
                original,
                reason: ReversalReason::parse(&reason).ok_or_else(|| malformed(format!("reason {reason:?}")))?,
                returned: Credits::from_thousandths(returned),
                stayed_expired: Credits::from_thousandths(stayed_expired),
            },
            Stored::SpentSubjects {
                meter: m,
                requested,
                units,
                charged,
                subjects,
            } => Outcome::SpentSubjects {
                meter: meter(&m)?,
                requested,
                units,
                charged: Credits::from_thousandths(charged),
                subjects: subjects
                    .into_iter()
                    .map(|(s, o)| {
                        let subject = Subject::parse(&s).map_err(|e| malformed(e.to_string()))?;
                        let outcome =
                            SubjectOutcome::parse(&o).ok_or_else(|| malformed(format!("subject outcome {o:?}")))?;
                        Ok((subject, outcome))
                    })
                    .collect::<Result<_, ServiceError>>()?,
            },
            Stored::Result {
                action,
                subject,
                reported,
                charge,
                charged,
            } => Outcome::Result {
                action: ActionId::parse(&action).map_err(|e| malformed(e.to_string()))?,
                subject: Subject::parse(&subject).map_err(|e| malformed(e.to_string()))?,
                outcome: reported,
                charge: match charge.as_str() {
                    "charged" => ResultCharge::Charged(Credits::from_thousandths(charged)),
                    "free" => ResultCharge::Free,
                    "already_unlocked" => ResultCharge::AlreadyUnlocked,
                    "held" => ResultCharge::Held,
                    "bounce_not_refunded" => ResultCharge::BounceNotRefunded,
                    other => return Err(malformed(format!("result charge {other:?}"))),
                },
            },
            Stored::InsufficientCredits {
                meter: m,
                needed,
                available,
            } => Outcome::Refused(DomainError::InsufficientCredits {
                meter: meter(&m)?,
                needed: Credits::from_thousandths(needed),
                available: Credits::from_thousandths(available),
            }),
        })
    }

    /// A spend that charged fewer units than asked (`up_to`), or a result
    /// held for want of credits: final only when decided on fresh state.
    pub fn needs_fresh_state(&self) -> bool {
        matches!(self, Outcome::Spent { requested, units, .. } if units < requested)
            || matches!(
                self,
                Outcome::Result {
                    charge: ResultCharge::Held,
                    ..
                }
            )
    }

    /// Refusals decided on the account's state are kept under their key
    /// (a retry of a 402 stays that 402); input errors are not: nothing was
    /// decided.
    pub fn kept_refusal(refusal: &DomainError) -> Option<Outcome> {
        match refusal {
            DomainError::InsufficientCredits { .. } => Some(Outcome::Refused(refusal.clone())),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_outcomes_read_back() {
        let state = SubscriptionState {
            org: OrgId::parse("acme").unwrap(),
            subscription: Subscription {
                plan: PlanId::parse("enterprise").unwrap(),
                seats: 3,
                billing: Billing::Annual,
                custom_monthly: Some(Credits::whole(12_000)),
            },
            scheduled: Some(Subscription {
                plan: PlanId::parse("starter").unwrap(),
                seats: 1,
                billing: Billing::Monthly,
                custom_monthly: None,
            }),
            status: SubscriptionStatus::Active,
            anchor: NaiveDate::from_ymd_opt(2026, 1, 31).unwrap(),
            period: Period::containing(
                NaiveDate::from_ymd_opt(2026, 1, 31).unwrap(),
                NaiveDate::from_ymd_opt(2026, 1, 31).unwrap(),
            ),
        };
        for outcome in [
            Outcome::Spent {
                meter: MeterId::parse("credits").unwrap(),
                requested: 10,
                units: 7,
                charged: Credits::from_thousandths(3_500),
            },
            Outcome::Purchased,
            Outcome::Subscribed(state.clone()),
            Outcome::Cancelled(state.clone()),
            Outcome::PlanChanged(state),
            Outcome::Member {
                user: UserId::parse("auth0|alice").unwrap(),
                role: Some(MemberRole::Admin),
            },
            Outcome::Member {
                user: UserId::parse("bob").unwrap(),
                role: None,
            },
            Outcome::Result {
                action: ActionId::parse("email_finder").unwrap(),
                subject: Subject::parse("x@y.com").unwrap(),
                outcome: "risky".into(),
                charge: ResultCharge::Charged(Credits::whole(5)),
            },
            Outcome::ResultsResumed,
            Outcome::ControlsSet,
            Outcome::Recorded,
            Outcome::PendingApproval {
                approval: Subject::parse("req-7").unwrap(),
                meter: MeterId::parse("credits").unwrap(),
                amount: Credits::whole(150),
            },
            Outcome::Reserved {
                meter: MeterId::parse("credits").unwrap(),
                requested: 3,
                reserved: vec![Subject::parse("a@x.com").unwrap()],
                already: vec![Subject::parse("b@x.com").unwrap()],
                short: vec![Subject::parse("c@x.com").unwrap()],
                held: Credits::whole(1),
            },
            Outcome::UnitsMoved {
                transition: Transition::Release,
                contacts: vec![Subject::parse("a@x.com").unwrap()],
                returned: Credits::whole(1),
                stayed_expired: Credits::ZERO,
            },
            Outcome::Slots {
                meter: MeterId::parse("lead_slots").unwrap(),
                capacity: 400,
                used: 12,
                contacts: vec![(Subject::parse("a@x.com").unwrap(), SlotOutcome::OverCapacity)],
            },
            Outcome::Reversed {
                original: "ent_x".into(),
                reason: ReversalReason::Bounced,
                returned: Credits::whole(1),
                stayed_expired: Credits::ZERO,
            },
            Outcome::SpentSubjects {
                meter: MeterId::parse("credits").unwrap(),
                requested: 3,
                units: 1,
                charged: Credits::whole(1),
                subjects: vec![
                    (Subject::parse("a@x.com").unwrap(), SubjectOutcome::Charged),
                    (Subject::parse("b@x.com").unwrap(), SubjectOutcome::AlreadyUnlocked),
                ],
            },
            Outcome::Result {
                action: ActionId::parse("email_reveal").unwrap(),
                subject: Subject::parse("x@y.com").unwrap(),
                outcome: "found".into(),
                charge: ResultCharge::AlreadyUnlocked,
            },
            Outcome::Refused(DomainError::InsufficientCredits {
                meter: MeterId::parse("credits").unwrap(),
                needed: Credits::whole(5),
                available: Credits::from_thousandths(1_500),
            }),
        ] {
            assert_eq!(Outcome::decode(&outcome.encode()).unwrap(), outcome);
        }
        assert!(Outcome::decode("{\"outcome\":\"gift\"}").is_err());
    }
}
