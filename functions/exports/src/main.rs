//! The exports Lambda: build the ledger once per cold start, run every job
//! it is sent until the invocation's deadline draws near.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lambda_runtime::{run, service_fn, Error, LambdaEvent};

/// Kept for the last part's upload and checkpoint.
const MARGIN: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let ledger = ledger_service::config::from_env().await?;
    let part_bytes = std::env::var("EXPORT_PART_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(exports::PART_BYTES)
        .max(exports::MIN_PART_BYTES);
    run(service_fn(
        |event: LambdaEvent<aws_lambda_events::event::sqs::SqsEvent>| {
            let ledger = &ledger;
            async move {
                // The context's deadline is wall-clock milliseconds.
                let now_ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis() as u64;
                let left = Duration::from_millis(event.context.deadline.saturating_sub(now_ms));
                let limits = exports::ExportLimits {
                    page: exports::PAGE,
                    part_bytes,
                    deadline: Instant::now() + left.saturating_sub(MARGIN),
                };
                Ok::<_, Error>(exports::handle(ledger, event.payload, limits).await)
            }
        },
    ))
    .await
}
