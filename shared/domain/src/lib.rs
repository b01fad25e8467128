//! The credit ledger's rules, pure: no AWS, no async, no I/O.
//!
//! The domain decides (how a debit splits over buckets, when a period
//! renews, what an entry records); the store makes the decision atomic.

pub mod account;
pub mod catalog;
pub mod clock;
pub mod credits;
pub mod entry;
mod error;
pub mod ids;
pub mod period;

pub use account::{
    credits_meter, Account, Billing, Bucket, PurchaseGrant, SpendMode, SpendQuote, SpendRequest, Subscription,
    SubscriptionStatus,
};
pub use catalog::{Action, Catalog, Charging};
pub use clock::{Clock, FixedClock, SystemClock};
pub use credits::Credits;
pub use entry::{Actor, BucketSource, CallerKind, EntryKind, EntryLine, LedgerEntry, PurchaseRecord};
pub use error::DomainError;
pub use ids::{ActionId, CampaignId, IdempotencyKey, MeterId, OrgId, PackageId, PlanId, Subject, UserId};
pub use period::Period;
