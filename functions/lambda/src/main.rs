//! The Lambda binary of every function but one. Every function in
//! `template.yaml` runs it, and its `LEDGER_FUNCTION` variable says which
//! handler this one serves: one build and one link for all of them,
//! instead of one LTO link each. The exports function has a binary of its
//! own (`ledger-exports`): it alone writes to S3, and the S3 SDK would
//! otherwise be a third of every function's package. Each handler builds
//! what it needs once per cold start (the catalog, the SDK clients) and
//! serves every invocation with it.
//!
//! One thread: Lambda hands an environment one event at a time, and what a
//! handler does at once (a batch's organizations, a sweep's renewals) waits
//! on DynamoDB, not on a CPU; worker threads would only add to the init.

use aws_lambda_events::event::{dynamodb, sqs::SqsEvent};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use ledger_lambda::{http, time_left};

/// The functions this binary serves, by `LEDGER_FUNCTION`.
const FUNCTIONS: [&str; 7] = ["spend", "purchase", "balance", "accounts", "results", "stream", "reset"];

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    ledger_lambda::init_logging();
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
        "exports" => Err("the exports function runs the ledger-exports binary".into()),
        other => Err(format!("LEDGER_FUNCTION is {other:?}; it names one of {FUNCTIONS:?}").into()),
    }
}
