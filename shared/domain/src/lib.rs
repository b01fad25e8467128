//! The credit ledger's rules, pure: no AWS, no async, no I/O.
//!
//! The domain decides (how a debit splits over buckets, when a period
//! renews, what an entry records); the store makes the decision atomic.
//! One module per job: [`subscription`] (plans, seats, billing), [`bucket`]
//! (buckets and their spending priority), [`spend`], [`purchase`],
//! [`renewal`], the account that holds them ([`account`]) and its
//! invariants.

pub mod account;
pub mod alerts;
pub mod approval;
pub mod bucket;
pub mod bulk;
pub mod capacity;
pub mod catalog;
pub mod clock;
pub mod controls;
pub mod credits;
pub mod entry;
mod error;
pub mod ids;
mod invariants;
mod lifecycle;
mod overdraft;
pub mod period;
pub mod purchase;
pub mod renewal;
pub mod reservation;
pub mod results;
pub mod reversal;
pub mod spend;
pub mod subscription;
pub mod team;
pub mod usage;

pub use account::{credits_meter, Account};
pub use alerts::{top_up_id, Alert, Channel, Crossing, Threshold, TopUpTrigger, MAX_ALERTS};
pub use approval::{approvals_campaign, is_approval, APPROVAL_DAYS};
pub use bucket::{allocate, Bucket, BucketId, BucketSource, Draw};
pub use bulk::{BulkQuote, BulkSpend, ListedSubject, SubjectOutcome, MAX_SUBJECTS};
pub use capacity::{SlotOutcome, MAX_CONTACTS};
pub use catalog::{Action, Catalog, Charging};
pub use clock::{Clock, FixedClock, SystemClock};
pub use controls::{CampaignBudget, Headroom, LimitKind, MemberGauge, MemberLimits, MemberUsage, MAX_BUDGETS};
pub use credits::Credits;
pub use entry::{Actor, CallerKind, EntryKind, EntryLine, HistoryScope, LedgerEntry, PurchaseRecord};
pub use error::DomainError;
pub use ids::{ActionId, AlertId, CampaignId, IdempotencyKey, MeterId, OrgId, PackageId, PlanId, Subject, UserId};
pub use period::Period;
pub use purchase::PurchaseGrant;
pub use reservation::{ReserveRequest, Reserved, Transition, Unit, UnitState, MAX_UNITS};
pub use results::{ResultCharge, ResultDecision, ResultReport, Unlock};
pub use reversal::{Reversal, ReversalReason};
pub use spend::{SpendMode, SpendQuote, SpendRequest, MAX_QUANTITY};
pub use subscription::{Billing, Resubscription, Subscription, SubscriptionStatus, MAX_SEATS};
pub use team::{LicenseGauge, Member, MemberRole, MAX_MEMBERS};
