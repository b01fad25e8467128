use crate::{Credits, MeterId};

/// Every way a ledger rule can refuse a request. The HTTP layer maps each
/// variant to one problem type in one place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("invalid amount {text:?}: {why}")]
    InvalidAmount { text: String, why: String },
    #[error("invalid {what}: 1-{max} characters of letters, digits and -_.:@|")]
    InvalidId { what: &'static str, max: usize },
    #[error("the Idempotency-Key must be 1-255 printable ASCII characters")]
    InvalidIdempotencyKey,
    #[error("invalid subject: not blank, no control characters, at most 512 ASCII characters or 128 of any script")]
    InvalidSubject,
    #[error("invalid quantity: {0}")]
    InvalidQuantity(String),
    #[error("unknown action {0:?}")]
    UnknownAction(String),
    #[error("{0} is charged when its result arrives (results queue), not when requested; a dry run quotes it")]
    ChargedOnResult(String),
    #[error("unknown plan {0:?}")]
    UnknownPlan(String),
    #[error("unknown package {0:?}")]
    UnknownPackage(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("insufficient credits on meter {meter}: needed {needed}, available {available}")]
    InsufficientCredits {
        meter: MeterId,
        needed: Credits,
        available: Credits,
    },
    #[error("the account has this subscription already (or has it scheduled): nothing to change")]
    SubscriptionUnchanged,
    #[error("an upgrade grants credits that are paid for: the service asks for it, after payment")]
    PaidByService,
    #[error("the subscription is cancelled already; subscribe to start again")]
    AlreadyCancelled,
    #[error("{user} may not use {action}: an admin blocked it")]
    ActionBlocked { action: String, user: String },
    #[error("the {kind} limit of {limit} credits allows {left} more; this needs {needed}")]
    LimitReached {
        kind: &'static str,
        limit: Credits,
        left: Credits,
        needed: Credits,
    },
    #[error("no member {0:?} in this organization")]
    MemberNotFound(String),
    #[error("no alert {0:?} in this organization")]
    AlertNotFound(String),
    /// A new alert or budget past the organization's limit of them: the
    /// request is valid, the account's state refuses it.
    #[error("an organization has at most {max} {what}")]
    TooMany { what: &'static str, max: usize },
    #[error("cannot {transition} the unit of {contact:?}: it is {state}")]
    UnitState {
        contact: String,
        state: &'static str,
        transition: &'static str,
    },
    #[error("no entry {0:?} in this organization's ledger")]
    EntryNotFound(String),
    #[error("this entry cannot be reversed: {0}")]
    NotReversible(String),
    #[error("the account owes {owed} credits on its overdraft: the allowance cannot go below that ({allowance}) until a purchase repays it")]
    OverdraftOwed { owed: Credits, allowance: Credits },
    #[error("no account for this organization; subscribe first")]
    AccountNotFound,
    #[error("invalid catalog: {0}")]
    InvalidCatalog(String),
    #[error("ledger invariant violated: {0}")]
    InvariantViolated(String),
}
