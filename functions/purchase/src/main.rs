//! The purchase Lambda: build the state once, serve every invocation with it.

use lambda_http::{run, service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let state = ledger_http::AppState::from_env().await?;
    run(service_fn(|req| async {
        Ok::<_, Error>(purchase::handle(&state, req).await)
    }))
    .await
}
