//! `make sweep`: runs the scheduled renewal once, now, against the local
//! stack `make run` started (the same handler EventBridge Scheduler invokes).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use ledger_domain::SystemClock;
use ledger_service::{catalog_from_env, dynamo_ledger};

#[tokio::main]
async fn main() -> Result<()> {
    if std::env::var("AWS_ENDPOINT_URL_DYNAMODB").is_err() {
        let port = std::env::var("DYNAMODB_PORT").unwrap_or_else(|_| "8000".into());
        std::env::set_var("AWS_ENDPOINT_URL_DYNAMODB", format!("http://127.0.0.1:{port}"));
    }
    for (name, value) in [
        ("AWS_ACCESS_KEY_ID", "local"),
        ("AWS_SECRET_ACCESS_KEY", "local"),
        ("AWS_REGION", "us-east-1"),
    ] {
        if std::env::var(name).is_err() {
            std::env::set_var(name, value);
        }
    }
    let config = ledger_service::config::sdk_config().await;
    let ledger = dynamo_ledger(
        aws_sdk_dynamodb::Client::new(&config),
        "LedgerTable",
        Arc::new(catalog_from_env()?),
        Arc::new(SystemClock),
    );
    let report = reset::handle(&ledger, Duration::from_secs(300)).await?;
    println!("{}", reset::report_json(&report));
    Ok(())
}
