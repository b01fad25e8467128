//! The measuring stick for cold starts: a Rust function on the same runtime,
//! built with the same profile, that answers every event with itself and
//! does nothing else, on the same one-thread runtime as the functions.
//! `make coldstart` runs it beside `ledger`.

use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| async move {
        Ok::<_, Error>(event.payload)
    }))
    .await
}
