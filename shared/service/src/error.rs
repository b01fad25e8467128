use ledger_domain::DomainError;
use ledger_store::StoreError;

/// Every way an operation can fail. Each trigger maps these in one place
/// (HTTP: problem+json).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("this Idempotency-Key was used for a different request")]
    IdempotencyKeyReused,
    #[error("this payment reference was recorded by another request")]
    PaymentReferenceReused,
    /// Something claimed once across every organization is taken (the
    /// operation says what it was, e.g. a payment reference).
    #[error("already claimed by another request")]
    AlreadyClaimed,
    #[error("too much contention on the account: retry with the same Idempotency-Key after Retry-After; for bulk work send one spend with `quantity` or `mode: up_to` instead of many")]
    Contention,
    /// A subject's unlock or slot changed meanwhile (internal: the
    /// operation reads it again and decides again).
    #[error("a subject's unlock or slot changed meanwhile")]
    SubjectChanged,
    /// The entry was reversed already (by another request).
    #[error("this entry was reversed already")]
    AlreadyReversed,
    /// A held result was settled by another resume meanwhile.
    #[error("the held result was settled meanwhile")]
    AlreadySettled,
    #[error("no such notification in this organization")]
    NotificationNotFound,
    #[error("no such export in this organization")]
    ExportNotFound,
    #[error("history exports are not configured for this function (EXPORT_BUCKET, EXPORT_QUEUE_URL)")]
    ExportsUnavailable,
    #[error(transparent)]
    Store(#[from] StoreError),
}
