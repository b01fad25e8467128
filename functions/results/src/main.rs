//! The results Lambda: build the ledger once per cold start, charge every batch with it.

use lambda_runtime::{run, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let ledger = ledger_service::config::from_env().await?;
    run(service_fn(
        |event: LambdaEvent<aws_lambda_events::event::sqs::SqsEvent>| async {
            Ok::<_, Error>(results::handle(&ledger, event.payload).await)
        },
    ))
    .await
}
