//! The stream Lambda: build the ledger once per cold start, serve every batch with it.

use lambda_runtime::{run, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let ledger = ledger_service::config::from_env().await?;
    let bus = ledger_service::config::bus_from_env().await?;
    run(service_fn(
        |event: LambdaEvent<aws_lambda_events::event::dynamodb::Event>| async {
            Ok::<_, Error>(stream::handle(&ledger, &bus, event.payload).await)
        },
    ))
    .await
}
