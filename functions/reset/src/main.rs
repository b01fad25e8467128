//! The reset Lambda: build the ledger once per cold start, sweep on every scheduled invocation.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_runtime::{run, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let ledger = ledger_service::config::from_env().await?;
    let ledger = &ledger;
    run(service_fn(|event: LambdaEvent<serde_json::Value>| async move {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
        let time_left = Duration::from_millis(event.context.deadline.saturating_sub(now_ms));
        let report = reset::handle(ledger, time_left).await?;
        Ok::<_, Error>(reset::report_json(&report))
    }))
    .await
}
