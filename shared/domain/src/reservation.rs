//! Reservations: a campaign holds one unit per contact, paid up front and
//! settled later. A unit moves credits from the balance into `reserved`
//! (recorded per bucket, so they can go back where they came from); it is
//! committed when the contact's email is sent (spent for good), released
//! when the contact is removed before anything was sent (back into its
//! buckets, except plan credits of a month that has since renewed, which
//! stay expired), and a committed unit is refunded once if the contact's
//! first email bounces. Every transition is conditional on the unit's
//! state; units are items of their own, so a campaign of any size never
//! grows the account.

use chrono::{DateTime, Duration, NaiveDate, Utc};

use crate::account::Account;
use crate::bucket::{allocate, BucketId};
use crate::catalog::Action;
use crate::entry::{Actor, EntryKind, EntryLine, LedgerEntry};
use crate::{ActionId, CampaignId, Credits, DomainError, MeterId, Subject};

/// Contacts one reservation request names (one unit item each, written in
/// the request's transaction).
pub const MAX_UNITS: usize = 50;
/// How long a unit may stay reserved before it returns by itself.
pub const RESERVATION_DAYS: i64 = 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitState {
    Reserved,
    Committed,
    Released,
    Refunded,
}

impl UnitState {
    pub fn as_str(self) -> &'static str {
        match self {
            UnitState::Reserved => "reserved",
            UnitState::Committed => "committed",
            UnitState::Released => "released",
            UnitState::Refunded => "refunded",
        }
    }

    pub fn parse(text: &str) -> Option<UnitState> {
        [
            UnitState::Reserved,
            UnitState::Committed,
            UnitState::Released,
            UnitState::Refunded,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// One contact's unit of a campaign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    pub campaign: CampaignId,
    pub contact: Subject,
    pub action: ActionId,
    pub meter: MeterId,
    pub state: UnitState,
    /// Which buckets paid, and how much each.
    pub draws: Vec<(BucketId, Credits)>,
    pub deadline: DateTime<Utc>,
}

impl Unit {
    pub fn cost(&self) -> Credits {
        self.draws.iter().map(|(_, c)| *c).sum()
    }
}

/// A transition asked of a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Commit,
    Release,
    Refund,
    /// A release by the ledger: the unit's deadline passed.
    Expire,
}

impl Transition {
    fn from(self) -> UnitState {
        match self {
            Transition::Commit | Transition::Release | Transition::Expire => UnitState::Reserved,
            Transition::Refund => UnitState::Committed,
        }
    }

    fn to(self) -> UnitState {
        match self {
            Transition::Commit => UnitState::Committed,
            Transition::Release | Transition::Expire => UnitState::Released,
            Transition::Refund => UnitState::Refunded,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Commit => "commit",
            Transition::Release => "release",
            Transition::Refund => "refund",
            Transition::Expire => "expire",
        }
    }
}

/// A reservation request: one unit of `action` per contact of a campaign.
#[derive(Clone, Debug)]
pub struct ReserveRequest<'a> {
    pub action_id: &'a ActionId,
    pub action: &'a Action,
    pub campaign: &'a CampaignId,
    pub contacts: &'a [Subject],
    pub actor: Actor,
}

/// What a reservation request did: the units written, and how many of how many.
#[derive(Clone, Debug)]
pub struct Reserved {
    pub units: Vec<Unit>,
    pub requested: usize,
    /// Listed contacts the campaign holds a unit for already.
    pub already: Vec<Subject>,
    /// Contacts the balance did not cover.
    pub short: Vec<Subject>,
}

impl Account {
    /// Reserves one unit per listed contact the campaign has no live unit
    /// for, as many as the balance covers, in list order. `existing` are the
    /// campaign's units of these contacts as stored.
    pub fn reserve(
        &mut self,
        req: &ReserveRequest<'_>,
        existing: &[Unit],
        now: DateTime<Utc>,
    ) -> Result<(Reserved, LedgerEntry), DomainError> {
        let ReserveRequest {
            action_id,
            action,
            campaign,
            contacts,
            ..
        } = *req;
        let actor = req.actor.clone();
        if contacts.is_empty() || contacts.len() > MAX_UNITS {
            return Err(DomainError::InvalidQuantity(format!(
                "a reservation names 1-{MAX_UNITS} contacts; send more as several requests"
            )));
        }
        if action.is_free() {
            return Err(DomainError::InvalidRequest(format!(
                "{action_id} is free: nothing to reserve"
            )));
        }
        self.check_allowed(&actor, action_id)?;
        let meter = action.meter.clone();
        let spender = actor.user.clone();
        // A member's limit or the campaign's budget reserves no further.
        let limit = self.headroom(&actor, &meter, Some(campaign), now);
        let mut allowed = limit.map(|h| h.left);
        let mut reserved = Reserved {
            units: Vec::new(),
            requested: contacts.len(),
            already: Vec::new(),
            short: Vec::new(),
        };
        let mut lines: Vec<EntryLine> = Vec::new();
        let deadline = now + Duration::days(RESERVATION_DAYS);
        for contact in contacts {
            let live = existing
                .iter()
                .any(|u| &u.contact == contact && matches!(u.state, UnitState::Reserved | UnitState::Committed));
            if live || reserved.units.iter().any(|u| &u.contact == contact) {
                reserved.already.push(contact.clone());
                continue;
            }
            let buckets = self.spendable_buckets(&meter, spender.as_ref());
            let within = allowed.is_none_or(|left| action.cost <= left);
            let (true, Ok(draws)) = (within, allocate(&buckets, action.cost)) else {
                reserved.short.push(contact.clone());
                continue;
            };
            allowed = allowed.map(|left| left.checked_sub(action.cost).unwrap_or_default());
            lines.extend(self.take(&draws)?);
            reserved.units.push(Unit {
                campaign: (*campaign).clone(),
                contact: contact.clone(),
                action: (*action_id).clone(),
                meter: meter.clone(),
                state: UnitState::Reserved,
                draws: draws.iter().map(|d| (d.bucket.clone(), d.amount)).collect(),
                deadline,
            });
        }
        if reserved.units.is_empty() && !reserved.short.is_empty() {
            if let Some(h) = limit.filter(|h| h.left < action.cost) {
                return Err(DomainError::LimitReached {
                    kind: h.kind.as_str(),
                    limit: h.limit,
                    left: h.left,
                    needed: action.cost,
                });
            }
            return Err(DomainError::InsufficientCredits {
                meter: meter.clone(),
                needed: action.cost,
                available: self.spendable(&meter, spender.as_ref()),
            });
        }
        let total: Credits = reserved.units.iter().map(Unit::cost).sum();
        self.add_reserved(&meter, total.thousandths());
        self.count_charge(&actor, &meter, total, Some(campaign), now);
        for unit in &reserved.units {
            self.count_due(unit, 1);
        }
        let subjects = reserved.units.iter().map(|u| u.contact.clone()).collect();
        let entry = self.record(EntryKind::Reservation, actor, now, merge(lines), |e| {
            e.action = Some((*action_id).clone());
            e.campaign = Some((*campaign).clone());
            e.quantity = Some(reserved.units.len() as u64);
            e.requested = Some(contacts.len() as u64);
            e.subjects = subjects;
            e.result = Some("reserve".into());
        });
        self.check_invariants()?;
        Ok((reserved, entry))
    }

    /// Moves units on: commit (spent for good), release (back to their
    /// buckets while those are there), refund (a committed unit, once).
    /// Every unit must be in the state the transition starts from, or
    /// nothing changes.
    pub fn settle_units(
        &mut self,
        transition: Transition,
        units: &[Unit],
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<(Vec<Unit>, Credits, LedgerEntry), DomainError> {
        if units.is_empty() || units.len() > MAX_UNITS {
            return Err(DomainError::InvalidQuantity(format!(
                "1-{MAX_UNITS} contacts a request"
            )));
        }
        if let Some(wrong) = units.iter().find(|u| u.state != transition.from()) {
            return Err(DomainError::UnitState {
                contact: wrong.contact.as_str().to_string(),
                state: wrong.state.as_str(),
                transition: transition.as_str(),
            });
        }
        let approval = units.iter().any(crate::approval::is_approval);
        if approval && transition == Transition::Refund {
            return Err(DomainError::UnitState {
                contact: units[0].contact.as_str().to_string(),
                state: "an approval",
                transition: transition.as_str(),
            });
        }
        if transition == Transition::Expire {
            if let Some(early) = units.iter().find(|u| u.deadline > now) {
                return Err(DomainError::UnitState {
                    contact: early.contact.as_str().to_string(),
                    state: "reserved until its deadline",
                    transition: transition.as_str(),
                });
            }
        }
        let mut lines = Vec::new();
        let mut stayed_expired = Credits::ZERO;
        for unit in units {
            let cost = unit.cost();
            if unit.state == UnitState::Reserved {
                self.count_due(unit, -1);
            }
            match transition {
                Transition::Commit => {
                    self.add_reserved(&unit.meter, -cost.thousandths());
                    let used = self.used_this_period.entry(unit.meter.clone()).or_default();
                    *used = used.checked_add(cost).expect("credits within range");
                }
                Transition::Release | Transition::Expire | Transition::Refund => {
                    if transition != Transition::Refund {
                        self.add_reserved(&unit.meter, -cost.thousandths());
                    }
                    for (bucket, amount) in &unit.draws {
                        // A unit does not record when it drew.
                        match self.give_back(bucket, *amount, None, now)? {
                            Some(given) => lines.extend(given),
                            None => stayed_expired = stayed_expired.checked_add(*amount).expect("credits within range"),
                        }
                    }
                }
            }
        }
        let moved: Vec<Unit> = units
            .iter()
            .map(|u| Unit {
                state: transition.to(),
                ..u.clone()
            })
            .collect();
        let first = &units[0];
        let kind = if approval {
            EntryKind::Approval
        } else {
            EntryKind::Reservation
        };
        let entry = self.record(kind, actor, now, merge(lines), |e| {
            e.action = Some(first.action.clone());
            e.quantity = Some(units.len() as u64);
            e.subjects = units.iter().map(|u| u.contact.clone()).collect();
            if approval {
                // An approval's answer: approved (spent), denied, expired.
                e.subject = Some(first.contact.clone());
                e.result = Some(
                    match transition {
                        Transition::Commit => "approved",
                        Transition::Release => "denied",
                        _ => "expired",
                    }
                    .into(),
                );
            } else {
                e.campaign = Some(first.campaign.clone());
                e.result = Some(transition.as_str().into());
            }
        });
        self.check_invariants()?;
        Ok((moved, stayed_expired, entry))
    }

    /// Credits held by reservations on a meter.
    pub fn reserved(&self, meter: &MeterId) -> Credits {
        self.reserved.get(meter).copied().unwrap_or_default()
    }

    /// The day the nearest reserved unit of a meter returns by itself.
    pub fn nearest_unit_deadline(&self, meter: &MeterId) -> Option<NaiveDate> {
        self.units_due
            .iter()
            .find(|((m, _), count)| m == meter && **count > 0)
            .map(|((_, day), _)| *day)
    }

    /// Whether some unit's deadline day has ended while it is still
    /// reserved: the account returns such units at its next use. A unit due
    /// later today waits for the sweep.
    pub fn has_overdue_units(&self, now: DateTime<Utc>) -> bool {
        self.units_due
            .iter()
            .any(|((_, day), count)| *day < now.date_naive() && *count > 0)
    }

    pub(crate) fn count_due(&mut self, unit: &Unit, delta: i64) {
        let key = (unit.meter.clone(), unit.deadline.date_naive());
        let count = self.units_due.get(&key).copied().unwrap_or(0) + delta;
        if count == 0 {
            self.units_due.remove(&key);
        } else {
            self.units_due.insert(key, count);
        }
    }

    pub(crate) fn add_reserved(&mut self, meter: &MeterId, thousandths: i64) {
        let now = self.reserved(meter).thousandths() + thousandths;
        if now == 0 {
            self.reserved.remove(meter);
        } else {
            self.reserved.insert(meter.clone(), Credits::from_thousandths(now));
        }
    }
}

/// One line per bucket (units drawing the same bucket add up).
fn merge(lines: Vec<EntryLine>) -> Vec<EntryLine> {
    let mut merged: Vec<EntryLine> = Vec::new();
    for l in lines {
        match merged.iter_mut().find(|m| m.bucket == l.bucket) {
            Some(m) => {
                m.amount = m.amount.checked_add(l.amount).expect("credits within range");
                // A pool line keeps where its first part started.
            }
            None => merged.push(l),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;
    use crate::{credits_meter, Catalog, OrgId, PurchaseGrant, SpendMode, SpendRequest, Subscription};

    const CONTACTS: usize = 6;

    #[derive(Clone, Debug)]
    enum Op {
        /// Reserve these contacts (repeats allowed).
        Reserve(Vec<usize>),
        /// Move these contacts' units as the store holds them; `twice`: the
        /// same request retried right after it applied.
        Settle(Transition, Vec<usize>, bool),
        /// Hours pass; the account renews if due.
        Wait(i64),
        Buy(i64),
        /// Halves spent, so that units straddle buckets.
        SpendHalves(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let contacts = || prop::collection::vec(0..CONTACTS, 1..4);
        let transition = prop::sample::select(vec![
            Transition::Commit,
            Transition::Release,
            Transition::Refund,
            Transition::Expire,
        ]);
        prop_oneof![
            4 => contacts().prop_map(Op::Reserve),
            5 => (transition, contacts(), any::<bool>()).prop_map(|(t, c, twice)| Op::Settle(t, c, twice)),
            1 => (0i64..24 * 40).prop_map(Op::Wait),
            1 => (1i64..6).prop_map(Op::Buy),
            1 => (1u64..4).prop_map(Op::SpendHalves),
        ]
    }

    /// The only ways a unit may go: reserved, then committed (and perhaps
    /// refunded once), or released (by a release or its expiry).
    fn is_a_path(states: &[UnitState]) -> bool {
        use UnitState::*;
        matches!(
            states,
            [Reserved] | [Reserved, Committed] | [Reserved, Committed, Refunded] | [Reserved, Released]
        )
    }

    fn is_final(states: &[UnitState]) -> bool {
        is_a_path(states) && states.last() != Some(&UnitState::Reserved)
    }

    /// The campaign's units as the store holds them, one per contact (a
    /// contact reserved again after its unit ended gets a new one), each
    /// with every state it has been in; and the units replaced so.
    #[derive(Default)]
    struct Units {
        current: BTreeMap<usize, (Unit, Vec<UnitState>)>,
        replaced: Vec<Vec<UnitState>>,
    }

    impl Units {
        fn live(&self, i: usize) -> bool {
            self.current
                .get(&i)
                .is_some_and(|(u, _)| matches!(u.state, UnitState::Reserved | UnitState::Committed))
        }

        fn reserved(&self) -> impl Iterator<Item = &Unit> {
            self.current
                .values()
                .map(|(u, _)| u)
                .filter(|u| u.state == UnitState::Reserved)
        }
    }

    fn follow_units(halves_left: u64, ops: Vec<Op>) -> Result<(), TestCaseError> {
        let catalog = Catalog::default_catalog();
        let mut now = Utc.with_ymd_and_hms(2026, 1, 20, 9, 0, 0).unwrap();
        let sub = Subscription::new(&catalog, "starter", None, None, None).unwrap();
        let (mut account, _) =
            Account::provision(OrgId::parse("acme").unwrap(), sub, &catalog, Actor::service(None), now).unwrap();
        let halves = |quantity| {
            let (action_id, action) = catalog.action("email_verification").unwrap();
            SpendRequest {
                action_id,
                action,
                quantity,
                mode: SpendMode::UpTo,
                actor: Actor::service(None),
                campaign: None,
                subject: None,
            }
        };
        account.spend(&halves(1_000 - halves_left), now).unwrap();
        let (action_id, action) = catalog.action("ai_email_generation").unwrap();
        let campaign = CampaignId::parse("launch").unwrap();
        let contacts: Vec<Subject> = (0..CONTACTS)
            .map(|i| Subject::parse(&format!("c{i}@x.com")).unwrap())
            .collect();
        let meter = credits_meter();
        let mut units = Units::default();

        for op in ops {
            match op {
                Op::Reserve(listed) => {
                    let before = account.clone();
                    let names: Vec<Subject> = listed.iter().map(|&i| contacts[i].clone()).collect();
                    let existing: Vec<Unit> = units.current.values().map(|(u, _)| u.clone()).collect();
                    let req = ReserveRequest {
                        action_id,
                        action,
                        campaign: &campaign,
                        contacts: &names,
                        actor: Actor::service(None),
                    };
                    match account.reserve(&req, &existing, now) {
                        Ok((reserved, entry)) => {
                            for &i in &listed {
                                if units.live(i) {
                                    prop_assert!(reserved.already.contains(&contacts[i]), "c{} reserved twice", i);
                                }
                            }
                            let taken: Credits = reserved.units.iter().map(Unit::cost).sum();
                            prop_assert_eq!(entry.net(&meter), -taken);
                            prop_assert_eq!(
                                account.available(&meter),
                                before.available(&meter).checked_sub(taken).unwrap()
                            );
                            for unit in reserved.units {
                                let i = contacts.iter().position(|c| *c == unit.contact).unwrap();
                                prop_assert!(!units.live(i));
                                prop_assert_eq!(unit.state, UnitState::Reserved);
                                prop_assert_eq!(unit.cost(), action.cost);
                                prop_assert_eq!(unit.deadline, now + Duration::days(RESERVATION_DAYS));
                                if let Some((_, states)) = units.current.insert(i, (unit, vec![UnitState::Reserved])) {
                                    units.replaced.push(states);
                                }
                            }
                        }
                        Err(DomainError::InsufficientCredits { .. }) => {
                            prop_assert_eq!(&account, &before, "a refusal changes nothing");
                            prop_assert!(before.spendable(&meter, None) < action.cost);
                        }
                        Err(e) => prop_assert!(false, "{}", e),
                    }
                }
                Op::Settle(transition, mut listed, twice) => {
                    // The store reads each contact's unit once, and refuses a
                    // contact with none before the ledger is asked.
                    listed.sort_unstable();
                    listed.dedup();
                    listed.retain(|i| units.current.contains_key(i));
                    if listed.is_empty() {
                        continue;
                    }
                    for attempt in 0..if twice { 2 } else { 1 } {
                        let before = account.clone();
                        let stored: Vec<Unit> = listed.iter().map(|i| units.current[i].0.clone()).collect();
                        let ready = stored.iter().all(|u| u.state == transition.from())
                            && (transition != Transition::Expire || stored.iter().all(|u| u.deadline <= now));
                        // What goes back to buckets that have expired meanwhile stays expired.
                        let gone: Credits = stored
                            .iter()
                            .flat_map(|u| &u.draws)
                            .filter(|(id, _)| !before.buckets.iter().any(|b| &b.id == id && b.is_live(now)))
                            .map(|(_, amount)| *amount)
                            .sum();
                        let cost: Credits = stored.iter().map(Unit::cost).sum();
                        match account.settle_units(transition, &stored, Actor::service(None), now) {
                            Ok((moved, stayed_expired, entry)) => {
                                prop_assert!(ready, "{:?} moved units not ready for it", transition);
                                prop_assert_eq!(attempt, 0, "a retry applied again");
                                let returned = if transition == Transition::Commit {
                                    prop_assert!(entry.lines.is_empty());
                                    Credits::ZERO
                                } else {
                                    prop_assert_eq!(stayed_expired, gone);
                                    cost.checked_sub(gone).unwrap()
                                };
                                prop_assert_eq!(entry.net(&meter), returned);
                                prop_assert_eq!(
                                    account.available(&meter),
                                    before.available(&meter).checked_add(returned).unwrap()
                                );
                                for (i, unit) in listed.iter().zip(moved) {
                                    prop_assert_eq!(unit.state, transition.to());
                                    let (held, states) = units.current.get_mut(i).unwrap();
                                    prop_assert_eq!(&unit.contact, &held.contact);
                                    states.push(unit.state);
                                    *held = unit;
                                }
                            }
                            Err(DomainError::UnitState { .. }) => {
                                prop_assert!(!ready, "{:?} refused units ready for it", transition);
                                prop_assert_eq!(&account, &before, "a refused transition changes nothing");
                            }
                            Err(e) => prop_assert!(false, "{}", e),
                        }
                    }
                }
                Op::Wait(hours) => {
                    now += Duration::hours(hours);
                    account.renew_if_due(&catalog, now).unwrap();
                }
                Op::Buy(credits) => {
                    let grant = PurchaseGrant::priced(&catalog, None, Some(Credits::whole(credits)), "pay-1").unwrap();
                    account.purchase(grant, Actor::service(None), now).unwrap();
                }
                Op::SpendHalves(quantity) => {
                    // Nothing to spend is refused; that is fine here.
                    let _ = account.spend(&halves(quantity), now);
                }
            }
            account.check_invariants().unwrap();
            let held: Credits = units.reserved().map(Unit::cost).sum();
            prop_assert_eq!(
                account.reserved(&meter),
                held,
                "reserved credits are the reserved units'"
            );
            let mut due: BTreeMap<(MeterId, NaiveDate), i64> = BTreeMap::new();
            for u in units.reserved() {
                *due.entry((u.meter.clone(), u.deadline.date_naive())).or_default() += 1;
            }
            prop_assert_eq!(&account.units_due, &due);
            let overdue = units.reserved().any(|u| u.deadline.date_naive() < now.date_naive());
            prop_assert_eq!(account.has_overdue_units(now), overdue);
            for (unit, states) in units.current.values() {
                prop_assert!(is_a_path(states), "{:?}", states);
                prop_assert_eq!(states.last(), Some(&unit.state));
            }
        }

        // The sweep: past every deadline, what is still reserved expires.
        now += Duration::days(RESERVATION_DAYS + 1);
        account.renew_if_due(&catalog, now).unwrap();
        let overdue: Vec<usize> = units
            .current
            .iter()
            .filter(|(_, (u, _))| u.state == UnitState::Reserved)
            .map(|(i, _)| *i)
            .collect();
        if !overdue.is_empty() {
            let stored: Vec<Unit> = overdue.iter().map(|i| units.current[i].0.clone()).collect();
            let (moved, _, _) = account
                .settle_units(Transition::Expire, &stored, Actor::system(), now)
                .unwrap();
            for (i, unit) in overdue.iter().zip(moved) {
                let (held, states) = units.current.get_mut(i).unwrap();
                states.push(unit.state);
                *held = unit;
            }
        }
        prop_assert_eq!(account.reserved(&meter), Credits::ZERO);
        prop_assert!(account.units_due.is_empty());
        for states in units.current.values().map(|(_, s)| s).chain(&units.replaced) {
            prop_assert!(is_final(states), "{:?}", states);
        }
        Ok(())
    }

    proptest! {
        /// Arbitrary reservations, commits, releases, refunds and expiries,
        /// retried or not, across renewals: a transition applies only to
        /// units all in the state it starts from (else nothing changes),
        /// so applying it a second time changes nothing; a release gives
        /// back what the unit took except what a renewal expired meanwhile;
        /// reserving a contact whose unit is live reserves nothing more. The
        /// account's reserved credits and due days always match its reserved
        /// units, and after the sweep every unit ends in exactly one final
        /// state.
        #[test]
        fn every_unit_moves_once_and_ends_in_one_final_state(
            halves_left in 0u64..24,
            ops in prop::collection::vec(op(), 1..40),
        ) {
            follow_units(halves_left, ops)?;
        }
    }
}
