//! The local stack: the template's tables and queues on DynamoDB Local and
//! moto, and a local API Gateway serving the real handlers.

pub mod gateway;
pub mod metrics;
pub mod template;
pub mod tokens;

use std::path::PathBuf;

use lambda_http::{Body, Request, Response};
pub use ledger_http::auth::SERVICE_SCOPE;
use ledger_http::AppState;

/// The functions the template's `BuildProperties.Binary` names, by name.
pub async fn invoke(state: &AppState, function: &str, request: Request) -> Response<Body> {
    match function {
        "spend" => spend::handle(state, request).await,
        "purchase" => purchase::handle(state, request).await,
        "balance" => balance::handle(state, request).await,
        "accounts" => accounts::handle(state, request).await,
        other => panic!("template.yaml names function {other:?}, which the local stack does not know"),
    }
}

/// The repository root (where `template.yaml` lives).
pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}
