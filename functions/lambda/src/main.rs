//! The one Lambda binary. Every function in `template.yaml` runs it, and
//! its `LEDGER_FUNCTION` variable says which handler this one serves: one
//! build and one link for all of them, instead of one LTO link each. Each
//! handler builds what it needs once per cold start (the catalog, the SDK
//! clients) and serves every invocation with it.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lambda_events::event::{dynamodb, sqs::SqsEvent};
use lambda_runtime::{service_fn, Error, LambdaEvent};

/// The functions this binary serves, by `LEDGER_FUNCTION`.
const FUNCTIONS: [&str; 8] = [
    "spend", "purchase", "balance", "accounts", "results", "exports", "stream", "reset",
];

/// Kept for an export's last part and checkpoint before the deadline.
const EXPORT_MARGIN: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let function = std::env::var("LEDGER_FUNCTION").unwrap_or_default();
    let ledger = ledger_service::config::from_env().await?;
    let ledger = &ledger;
    match function.as_str() {
        "spend" => http(|req| spend::handle(ledger, req)).await,
        "purchase" => http(|req| purchase::handle(ledger, req)).await,
        "balance" => http(|req| balance::handle(ledger, req)).await,
        "accounts" => http(|req| accounts::handle(ledger, req)).await,
        "results" => {
            lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| async move {
                Ok::<_, Error>(results::handle(ledger, event.payload).await)
            }))
            .await
        }
        "exports" => {
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
        "stream" => {
            let bus = ledger_service::config::bus_from_env().await?;
            let bus = &bus;
            lambda_runtime::run(service_fn(|event: LambdaEvent<dynamodb::Event>| async move {
                Ok::<_, Error>(stream::handle(ledger, bus, event.payload).await)
            }))
            .await
        }
        "reset" => {
            lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| async move {
                let report = reset::handle(ledger, time_left(event.context.deadline)).await?;
                Ok::<_, Error>(reset::report_json(&report))
            }))
            .await
        }
        other => Err(format!("LEDGER_FUNCTION is {other:?}; it names one of {FUNCTIONS:?}").into()),
    }
}

/// An HTTP API function: payload 2.0 in, the handler's response out.
async fn http<F, R>(handler: F) -> Result<(), Error>
where
    F: Fn(lambda_http::Request) -> R,
    R: std::future::Future<Output = lambda_http::Response<lambda_http::Body>> + Send,
{
    lambda_http::run(service_fn(|req| {
        let answer = handler(req);
        async move { Ok::<_, Error>(answer.await) }
    }))
    .await
}

/// Time left before the invocation's deadline (wall-clock milliseconds).
fn time_left(deadline_ms: u64) -> Duration {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    Duration::from_millis(deadline_ms.saturating_sub(now_ms))
}
