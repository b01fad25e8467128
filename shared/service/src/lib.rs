//! The ledger's service layer: the operations every trigger calls (HTTP
//! handlers; the results consumer, the scheduled renewal and the stream
//! consumer next), their state (stores, catalog, clock) and their errors.
//! No HTTP here: each trigger parses, calls one operation, and renders its
//! [`Outcome`] its own way.

mod capacity;
pub mod config;
mod error;
mod executor;
pub mod exports;
pub mod notify;
mod operations;
mod outcome;
mod reservations;
mod results;
pub mod usage;

pub use config::{catalog_from_env, dynamo_ledger, DynamoLedger};
pub use error::ServiceError;
pub use executor::{Decision, Idempotency, Ledger, RetryPolicy, ANSWER_KEPT_DAYS, MAX_ATTEMPTS};
pub use operations::{SweepLimits, SweepReport};
pub use outcome::{Applied, Outcome, SubscriptionState};
pub use results::ResumeReport;
