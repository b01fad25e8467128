//! The accounts Lambda: build the ledger once per cold start, serve every invocation with it.

use lambda_http::{run, service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let ledger = ledger_service::config::from_env().await?;
    run(service_fn(|req| async {
        Ok::<_, Error>(accounts::handle(&ledger, req).await)
    }))
    .await
}
