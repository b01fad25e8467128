//! Ledger entries: every change of a balance, immutable once written.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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
    pub fn system() -> Actor {
        Actor {
            user: None,
            caller: CallerKind::System,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BucketSource {
    /// A user's own monthly budget (per-user license plans).
    License,
    /// The plan's monthly allowance (per-seat plans included).
    Plan,
    Trial,
    Adjustment,
    Purchased,
}

impl BucketSource {
    pub fn as_str(self) -> &'static str {
        match self {
            BucketSource::License => "license",
            BucketSource::Plan => "plan",
            BucketSource::Trial => "trial",
            BucketSource::Adjustment => "adjustment",
            BucketSource::Purchased => "purchased",
        }
    }
}

/// One bucket's share of an entry: negative for a debit or an expiry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryLine {
    pub meter: MeterId,
    pub bucket: String,
    pub source: BucketSource,
    pub amount: Credits,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseRecord {
    pub package: Option<PackageId>,
    pub credits: Credits,
    pub price_cents: u64,
    pub currency: String,
    pub payment_reference: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Position in the organization's ledger: 1, 2, 3, ... with no gaps.
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub kind: EntryKind,
    pub actor: Actor,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<ActionId>,
    /// Units charged (a bulk `up_to` spend may charge fewer than requested).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<CampaignId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Subject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purchase: Option<PurchaseRecord>,
    pub lines: Vec<EntryLine>,
    /// Available balance of each meter right after this entry.
    pub balance_after: BTreeMap<MeterId, Credits>,
}

impl LedgerEntry {
    /// The entry's net change of one meter.
    pub fn net(&self, meter: &MeterId) -> Credits {
        self.lines.iter().filter(|l| &l.meter == meter).map(|l| l.amount).sum()
    }

    /// A stable, opaque id for clients: the organization's sequence number.
    pub fn id(&self) -> String {
        format!("ent_{:012}", self.seq)
    }
}
