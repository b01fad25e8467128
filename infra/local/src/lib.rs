//! The local stack: the template's tables and queues on DynamoDB Local and
//! moto, and a local API Gateway serving the real handlers.

pub mod aws_conflicts;
pub mod faults;
pub mod gateway;
pub mod metrics;
pub mod results_queue;
pub mod streams;
pub mod template;
pub mod tokens;

use std::path::PathBuf;

use lambda_http::{Body, Request, Response};
pub use ledger_http::auth::SERVICE_SCOPE;
use ledger_http::DynamoLedger;

/// The HTTP functions the template's `LEDGER_FUNCTION` variables name.
pub async fn invoke(ledger: &DynamoLedger, function: &str, request: Request) -> Response<Body> {
    match function {
        "spend" => spend::handle(ledger, request).await,
        "purchase" => purchase::handle(ledger, request).await,
        "balance" => balance::handle(ledger, request).await,
        "accounts" => accounts::handle(ledger, request).await,
        other => panic!("template.yaml names function {other:?}, which the local stack does not know"),
    }
}

/// The repository root (where `template.yaml` lives).
pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}
