//! The exports function's binary (`ledger-exports`): runs history export
//! jobs from the exports queue, writing their files to S3. Apart from the
//! other functions' binary so that only this one links the S3 SDK.

use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use ledger_lambda::time_left;

/// Kept for an export's last part and checkpoint before the deadline.
const EXPORT_MARGIN: Duration = Duration::from_secs(60);

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    ledger_lambda::init_logging();
    let ledger = ledger_service::config::exports_from_env().await?;
    let ledger = &ledger;
    let part_bytes = std::env::var("EXPORT_PART_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(exports::PART_BYTES)
        .max(exports::MIN_PART_BYTES);
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| async move {
        let limits = exports::ExportLimits {
            page: exports::PAGE,
            part_bytes,
            deadline: Instant::now() + time_left(event.context.deadline).saturating_sub(EXPORT_MARGIN),
        };
        Ok::<_, Error>(exports::handle(ledger, event.payload, limits).await)
    }))
    .await
}
