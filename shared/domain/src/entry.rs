//! Ledger entries: every change of a balance, immutable once written.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::bucket::{BucketId, BucketSource};
use crate::{ActionId, CampaignId, Credits, MeterId, PackageId, PlanId, Subject, UserId};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// Allowances and the trial granted on subscribing.
    Subscription,
    /// A monthly renewal: last month's plan credits expire, this month's are granted.
    Renewal,
    Spend,
    Purchase,
    /// The subscription was cancelled: no allowance from the next renewal on.
    Cancellation,
    /// An upgrade (the current month's difference granted) or a downgrade
    /// scheduled for the next renewal.
    PlanChange,
    /// A reported result: charged if billable, free otherwise.
    Result,
    /// A billable result the balance could not pay: kept unpaid, result
    /// charging paused.
    ResultHeld,
    /// Result charging resumed by hand with nothing held.
    ResultsResumed,
    /// Units of a campaign reserved, committed, released or refunded
    /// (`result` says which).
    Reservation,
    /// Contacts uploaded: lead slots taken.
    SlotsHeld,
    /// Contacts deleted: lead slots freed.
    SlotsFreed,
    /// A charge reversed: its credits back where they came from.
    Reversal,
    /// A member added, removed or given another role (with the license
    /// granted or expired, if the plan has licenses).
    Membership,
    /// A member's spend held for approval, then approved, denied or
    /// expired (`result` says which).
    Approval,
    /// An outcome a campaign brought (a meeting booked, a reply): what
    /// credit ROI counts against the credits the campaign used.
    Outcome,
    /// Team controls changed: a member's limits and blocked actions
    /// (`result`: limits), or a campaign's budget (budget).
    Controls,
}

/// Who caused a change. Service calls name the user they act for, if any.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub user: Option<UserId>,
    pub caller: CallerKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallerKind {
    Admin,
    Member,
    Service,
    /// The ledger itself: renewals.
    System,
}

impl Actor {
    /// Whether this caller may grant credits that are paid for (a
    /// subscription, an upgrade, a purchase): the product's backend, once
    /// it has the payment, or the ledger itself (renewals); never a user.
    pub fn grants_paid_credits(&self) -> bool {
        matches!(self.caller, CallerKind::Service | CallerKind::System)
    }

    pub fn system() -> Actor {
        Actor {
            user: None,
            caller: CallerKind::System,
        }
    }

    /// The product's backend, acting for `user` when it names one.
    pub fn service(user: Option<crate::UserId>) -> Actor {
        Actor {
            user,
            caller: CallerKind::Service,
        }
    }
}

/// One bucket's share of an entry: negative for a debit or an expiry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryLine {
    pub bucket: BucketId,
    pub amount: Credits,
    /// In the purchased pool, where the line starts in the pool's cumulative
    /// grants: a purchase's line is its pack's range start, a debit's line
    /// the packs it drew from (see [`crate::Bucket::consumed`]).
    pub offset: Option<Credits>,
}

impl EntryLine {
    pub fn meter(&self) -> &MeterId {
        self.bucket.meter()
    }

    pub fn source(&self) -> BucketSource {
        self.bucket.source()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PurchaseRecord {
    pub package: Option<PackageId>,
    pub credits: Credits,
    pub price_cents: u64,
    pub currency: String,
    pub payment_reference: String,
}

/// Where an entry sits in the organization's ledger: its number (1, 2, 3,
/// ... with no gap, in commit order) and every meter's balance right after
/// it. Concurrent changes commit in an order no writer knows when it
/// decides, so the ledger's sequencer places each entry once it committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub seq: u64,
    pub balance_after: BTreeMap<MeterId, Credits>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    /// Opaque and stable, known when the entry is written (it names the
    /// request or renewal that wrote it); empty until then.
    pub id: String,
    /// `None` until the sequencer has placed the entry.
    pub placement: Option<Placement>,
    pub at: DateTime<Utc>,
    pub kind: EntryKind,
    pub actor: Actor,
    pub action: Option<ActionId>,
    /// Units charged (a bulk `up_to` spend may charge fewer than requested).
    pub quantity: Option<u64>,
    pub requested: Option<u64>,
    pub campaign: Option<CampaignId>,
    pub subject: Option<Subject>,
    /// A bulk spend's subjects that it charged.
    pub subjects: Vec<Subject>,
    pub plan: Option<PlanId>,
    /// What a reported result said (`deliverable`, `not_found`, ...).
    pub result: Option<String>,
    /// The entry a reversal reverses.
    pub reverses: Option<String>,
    /// An operator's note (a correction's reason).
    pub note: Option<String>,
    /// The member a membership entry is about.
    pub member: Option<UserId>,
    pub purchase: Option<PurchaseRecord>,
    pub lines: Vec<EntryLine>,
}

impl LedgerEntry {
    /// The entry's net change of one meter.
    pub fn net(&self, meter: &MeterId) -> Credits {
        self.lines.iter().filter(|l| l.meter() == meter).map(|l| l.amount).sum()
    }

    pub fn seq(&self) -> Option<u64> {
        self.placement.as_ref().map(|p| p.seq)
    }
}

/// Which entries a caller may read: members see their own, admins, the
/// service and the ledger itself see the organization's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HistoryScope {
    Organization,
    User(UserId),
}

impl Actor {
    pub fn history_scope(&self) -> HistoryScope {
        match (&self.caller, &self.user) {
            (CallerKind::Member, Some(user)) => HistoryScope::User(user.clone()),
            _ => HistoryScope::Organization,
        }
    }
}

impl HistoryScope {
    pub fn sees(&self, entry: &LedgerEntry) -> bool {
        match self {
            HistoryScope::Organization => true,
            HistoryScope::User(user) => entry.actor.user.as_ref() == Some(user),
        }
    }
}
