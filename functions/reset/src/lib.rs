//! The scheduled renewal: EventBridge Scheduler invokes it every few
//! minutes; it renews every account due by now, then returns every
//! reservation whose deadline passed, and stops a margin before
//! the invocation's deadline. What it did not reach is still due, so the
//! next run picks it up; what it renewed is no longer due. Scheduler and
//! async invocations are at-least-once: a doubled run grants nothing twice.

use std::time::{Duration, Instant};

use ledger_service::{DynamoLedger, ServiceError, SweepLimits, SweepReport};
use tracing::info;

/// Renewals in flight at once: each is a read and a transaction.
pub const CONCURRENCY: usize = 16;
/// Stop starting renewals this long before the invocation's deadline.
pub const MARGIN: Duration = Duration::from_secs(10);

pub async fn handle(ledger: &DynamoLedger, time_left: Duration) -> Result<SweepReport, ServiceError> {
    let limits = SweepLimits {
        deadline: Some(Instant::now() + time_left.saturating_sub(MARGIN)),
        max_accounts: usize::MAX,
        concurrency: CONCURRENCY,
    };
    let mut report = ledger.sweep(limits).await?;
    // Then the reservations whose deadline passed, in the time left.
    report.reservations_expired = ledger.expire_reservations(limits.deadline).await?;
    info!(
        renewed = report.renewed,
        already_renewed = report.already_renewed,
        failed = report.failed,
        stopped_early = report.stopped_early,
        reservations_expired = report.reservations_expired,
        "renewal sweep"
    );
    Ok(report)
}

pub fn report_json(report: &SweepReport) -> serde_json::Value {
    serde_json::json!({
        "renewed": report.renewed,
        "already_renewed": report.already_renewed,
        "failed": report.failed,
        "stopped_early": report.stopped_early,
        "reservations_expired": report.reservations_expired,
    })
}
